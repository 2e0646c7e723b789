"""TaskStore: a task collection on disk, memory-mapped and read lazily."""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._task import Task
from ._validation import check_tasks

FORMAT_VERSION = 1


class TaskStore(Sequence):
    """A task collection kept on disk and read lazily, task by task.

    :meth:`write` streams a task collection (a list, an
    :class:`EpisodeSampler`, any sized sequence of tasks) into a folder: all
    rows in one memory-mapped float32 array, labels as integer codes into a
    small label table, and an index of where each task's support and query
    rows start. Opening a store maps those files; reading ``store[i]`` pages
    in that task's rows only, so every learner can meta-train on millions of
    tasks in flat memory.

    Parameters
    ----------
    path : str or path-like
        A folder written by :meth:`TaskStore.write`.

    Attributes
    ----------
    X : numpy.memmap of shape (n_rows, n_features)
        Every task's support rows, then its query rows, task after task.
    y : ndarray of shape (n_rows,)
        Their labels (or regression targets), decoded; see :meth:`pool`.

    Examples
    --------
    >>> import tempfile
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> from skmeta.tasks import TaskStore
    >>> folder = tempfile.mkdtemp()
    >>> store = TaskStore.write(folder, make_sinusoid_tasks(100, random_state=0),
    ...                         task_type="regression")
    >>> len(store), store[3].X_support.shape
    (100, (10, 1))
    """

    def __init__(self, path):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{self.path} is not a TaskStore folder (no "
                                    "meta.json); create one with TaskStore.write.")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.path} holds a TaskStore of format version "
                             f"{meta.get('format_version')}; this skmeta reads "
                             f"version {FORMAT_VERSION}. Write it again.")
        self.task_type = meta["task_type"]
        self.index = np.load(self.path / "index.npy")
        self.X = np.memmap(self.path / "X.f32", dtype=np.float32, mode="r",
                           shape=(meta["n_rows"], meta["n_features"]))
        self._codes = np.memmap(self.path / "y.bin", dtype=meta["y_dtype"],
                                mode="r", shape=(meta["n_rows"],))
        labels = self.path / "labels.npy"
        self._labels = np.load(labels) if labels.is_file() else None

    @classmethod
    def write(cls, path, tasks, *, task_type="classification"):
        """Write a task collection to the folder ``path`` and open it.

        Tasks are validated with :func:`check_tasks` and written one at a
        time, so a lazy collection is never held in memory.

        Parameters
        ----------
        path : str or path-like
            A new or empty folder.
        tasks : sequence of Task or tuple
            Tasks with query labels.
        task_type : {"classification", "regression"}, default="classification"

        Returns
        -------
        store : TaskStore
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise FileExistsError(f"{path} is not empty; TaskStore.write needs a "
                                  "new or empty folder.")
        tasks = check_tasks(tasks, task_type=task_type)
        codes = {} if task_type == "classification" else None
        index = np.empty((len(tasks), 3), dtype=np.int64)
        n_rows = 0
        with open(path / "X.f32", "wb") as X_file, open(path / "y.bin", "wb") as y_file:
            for i, task in enumerate(tasks):
                index[i] = n_rows, task.n_support, task.n_query
                for X, y in ((task.X_support, task.y_support),
                             (task.X_query, task.y_query)):
                    X_file.write(X.tobytes())
                    y_file.write(_encode(y, codes).tobytes())
                    n_rows += len(X)
        np.save(path / "index.npy", index)
        if codes is not None:
            np.save(path / "labels.npy", np.array(list(codes)), allow_pickle=False)
        meta = dict(format_version=FORMAT_VERSION, task_type=task_type,
                    n_rows=n_rows, n_features=tasks[0].X_support.shape[1],
                    y_dtype="int64" if codes is not None else "float64")
        (path / "meta.json").write_text(json.dumps(meta))
        return cls(path)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        start, n_support, n_query = self.index[index]
        middle, end = start + n_support, start + n_support + n_query
        return Task(self.X[start:middle], self._decode(self._codes[start:middle]),
                    self.X[middle:end], self._decode(self._codes[middle:end]))

    @property
    def y(self):
        return self._decode(self._codes)

    def pool(self):
        """All rows and labels of the store, for drawing new episodes from
        them with :class:`EpisodeSampler` (the features stay memory-mapped).

        Returns
        -------
        X : numpy.memmap of shape (n_rows, n_features)
        y : ndarray of shape (n_rows,)
        """
        return self.X, self.y

    def _decode(self, codes):
        return np.asarray(codes) if self._labels is None else self._labels[codes]

    def __repr__(self):
        return f"TaskStore({str(self.path)!r}, {len(self)} tasks)"


def _encode(y, codes):
    if codes is None:
        return y.astype(np.float64)
    return np.array([codes.setdefault(label, len(codes)) for label in y.tolist()],
                    dtype=np.int64)
