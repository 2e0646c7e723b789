"""TaskStore: a task collection on disk, memory-mapped and read lazily."""

import ctypes
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ._task import Task
from ._validation import check_tasks

FORMAT_VERSION = 2

_META_KEYS = ("format_version", "task_type", "n_tasks", "n_rows", "n_features",
              "label_dtype", "n_labels", "checksums")
_MAX_META_BYTES = 1 << 20
_LABEL_KINDS = "biufUS"  # numpy kinds a label table may hold without pickle
_X_DTYPE, _CODE_DTYPE, _TARGET_DTYPE = np.dtype("<f4"), np.dtype("<i8"), np.dtype("<f8")
_TEMP_INFIX = ".skmeta-tmp-"


class TaskStore(Sequence):
    """A task collection kept on disk and read lazily, task by task.

    :meth:`write` streams a task collection (a list, an
    :class:`EpisodeSampler`, any sized sequence of tasks) into a folder: all
    rows in one memory-mapped float32 array, labels as integer codes into a
    small label table that keeps the labels' dtype, and an index of where
    each task's support and query rows start. Opening a store maps those
    files; reading ``store[i]`` pages in that task's rows only, so every
    learner can meta-train on millions of tasks in flat memory.

    A store is written into a temporary folder beside its path and appears
    there by one atomic rename, under an exclusive lock: readers see a whole
    store or none, and a failed or interrupted write leaves nothing behind.
    Opening checks ``meta.json``, every file's size, the index and the label
    table, refuses symbolic links, and never unpickles.

    Parameters
    ----------
    path : str or path-like
        A folder written by :meth:`TaskStore.write`.
    verify : bool, default=False
        Also check each file against the sha256 checksum recorded when the
        store was written (reads every byte once).

    Attributes
    ----------
    X : numpy.memmap of shape (n_rows, n_features)
        Every task's support rows, then its query rows, task after task.
    y : ndarray of shape (n_rows,)
        Their labels (or regression targets), decoded; see :meth:`pool`.
    index : ndarray of shape (n_tasks, 3)
        Each task's first row, number of support rows and of query rows.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder holding ``meta.json``.
    ValueError
        If the store is corrupt; the message, ``"TaskStore at <path>: ..."``,
        names the file and what is wrong with it.

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
    >>> TaskStore(folder, verify=True)  # doctest: +ELLIPSIS
    TaskStore('...', 100 tasks)
    """

    def __init__(self, path, *, verify=False):
        self.path = Path(path)
        with ExitStack() as stack:
            # Every file is opened through one descriptor of the folder, so
            # all come from the same store even if it is replaced meanwhile.
            folder = _open_folder(self.path)
            stack.callback(os.close, folder)
            meta = _check_meta(self.path, _read_meta(self.path, folder))
            files = {name: stack.enter_context(_open_file(self.path, folder, name))
                     for name in meta["checksums"]}
            self._load(meta, files, verify)

    def _load(self, meta, files, verify):
        if verify:
            _verify_checksums(self.path, files, meta["checksums"])
        n_rows, n_features = meta["n_rows"], meta["n_features"]
        classification = meta["task_type"] == "classification"
        y_dtype = _CODE_DTYPE if classification else _TARGET_DTYPE
        _check_size(self.path, files["X.f32"], "X.f32",
                    n_rows * n_features * _X_DTYPE.itemsize)
        _check_size(self.path, files["y.bin"], "y.bin", n_rows * y_dtype.itemsize)
        self.task_type = meta["task_type"]
        self.index = _read_npy(self.path, files["index.npy"], "index.npy", _CODE_DTYPE,
                               (meta["n_tasks"], 3))
        _check_index(self.path, self.index, n_rows)
        self._labels = None
        if classification:
            self._labels = _read_npy(self.path, files["labels.npy"], "labels.npy",
                                     np.dtype(meta["label_dtype"]),
                                     (meta["n_labels"],))
        self.X = np.memmap(files["X.f32"], dtype=_X_DTYPE, mode="r",
                           shape=(n_rows, n_features))
        self._codes = np.memmap(files["y.bin"], dtype=y_dtype, mode="r",
                                shape=(n_rows,))

    @classmethod
    def write(cls, path, tasks, *, task_type="classification", overwrite=False):
        """Write a task collection to the folder ``path`` and open it.

        Tasks are validated with :func:`check_tasks` and written one at a
        time, so a lazy collection is never held in memory. The files go to
        a temporary folder beside ``path``, which is renamed to ``path`` once
        complete, under a lock that a second concurrent writer of the same
        ``path`` fails on. If the write fails or is interrupted (including by
        ``KeyboardInterrupt``), the temporary folder is removed and ``path``
        is left as it was.

        Parameters
        ----------
        path : str or path-like
            A new or empty folder, or with ``overwrite=True`` an existing
            store.
        tasks : sequence of Task or tuple
            Tasks with query labels. Classification labels must have one
            dtype across tasks (strings of any length, or one numeric dtype);
            they are read back with that dtype.
        task_type : {"classification", "regression"}, default="classification"
        overwrite : bool, default=False
            Replace an existing store at ``path``. The new store replaces the
            old one in a single rename; stores already open keep reading the
            old files, which are never modified.

        Returns
        -------
        store : TaskStore

        Raises
        ------
        FileExistsError
            If ``path`` is not empty and ``overwrite`` is False, or is a
            non-empty folder that is not a store.
        BlockingIOError
            If another process or thread is writing the store at ``path``.
        """
        target = _resolve_target(path)
        with _WriteLock(target):
            replace = _check_target(target, overwrite)
            _remove_stale_temps(target)
            temp = _make_temp(target)
            try:
                _write_files(temp, tasks, task_type)
                _publish(temp, target, replace)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
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
        codes = np.asarray(codes)
        if self._labels is None:
            return codes
        if codes.size and (codes.min() < 0 or codes.max() >= len(self._labels)):
            raise _corrupt(self.path, f"y.bin holds label codes outside 0.."
                           f"{len(self._labels) - 1}, the size of the label table")
        return self._labels[codes]

    def __repr__(self):
        return f"TaskStore({str(self.path)!r}, {len(self)} tasks)"


# --------------------------------------------------------------------- reading


def _error(path, message):
    return ValueError(f"TaskStore at {path}: {message}.")


def _corrupt(path, message):
    return _error(path, f"{message}; the store is corrupt or was changed, write "
                  "it again")


def _not_a_store(path):
    return FileNotFoundError(f"{path} is not a TaskStore folder (no meta.json); "
                             "create one with TaskStore.write.")


def _open_folder(path):
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_a_store(path) from None


def _open_file(path, folder, name):
    """Open ``name`` in the folder (a descriptor), refusing anything but a
    regular file inside it: symbolic links, devices, pipes, folders."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=folder)
    except FileNotFoundError:
        if name == "meta.json":
            raise _not_a_store(path) from None
        raise _corrupt(path, f"{name} is missing") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _error(path, f"{name} is a symbolic link; a store's files must "
                         "be regular files inside its folder") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _error(path, f"{name} is not a regular file")
    return os.fdopen(fd, "rb")


def _read_meta(path, folder):
    with _open_file(path, folder, "meta.json") as file:
        text = file.read(_MAX_META_BYTES + 1)
    if len(text) > _MAX_META_BYTES:
        raise _corrupt(path, f"meta.json is larger than {_MAX_META_BYTES} bytes")
    try:
        return json.loads(text)
    except ValueError as error:
        raise _corrupt(path, f"meta.json is not valid JSON ({error})") from None


def _is_int(value, minimum):
    return type(value) is int and value >= minimum


def _check_meta(path, meta):
    """Check meta.json's schema and return it."""
    if not isinstance(meta, dict):
        raise _corrupt(path, f"meta.json holds a {type(meta).__name__}, not an "
                       "object")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _error(path, f"format version {version}; this skmeta reads version "
                     f"{FORMAT_VERSION}. Write it again")
    missing = [key for key in _META_KEYS if key not in meta]
    extra = sorted(set(meta) - set(_META_KEYS))
    if missing or extra:
        raise _corrupt(path, f"meta.json lacks keys {missing} and has unexpected "
                       f"keys {extra}")
    for key in ("n_tasks", "n_rows", "n_features"):
        if not _is_int(meta[key], 1):
            raise _corrupt(path, f"meta.json's {key} must be a positive integer, "
                           f"got {meta[key]!r}")
    if meta["task_type"] not in ("classification", "regression"):
        raise _corrupt(path, "meta.json's task_type must be 'classification' or "
                       f"'regression', got {meta['task_type']!r}")
    _check_label_meta(path, meta)
    _check_checksums(path, meta)
    return meta


def _check_label_meta(path, meta):
    dtype, n_labels = meta["label_dtype"], meta["n_labels"]
    if meta["task_type"] == "regression":
        if dtype is not None or n_labels is not None:
            raise _corrupt(path, "meta.json gives a label table for a regression "
                           "store")
        return
    if not _is_int(n_labels, 1):
        raise _corrupt(path, "meta.json's n_labels must be a positive integer, "
                       f"got {n_labels!r}")
    try:
        kind = np.dtype(dtype).kind if isinstance(dtype, str) else None
    except TypeError:
        kind = None
    if kind is None or kind not in _LABEL_KINDS:
        raise _corrupt(path, "meta.json's label_dtype must name a numeric, bool or "
                       f"string numpy dtype, got {dtype!r}")


def _store_files(task_type):
    labels = ("labels.npy",) if task_type == "classification" else ()
    return {"index.npy", "X.f32", "y.bin", *labels}


def _check_checksums(path, meta):
    checksums = meta["checksums"]
    expected = _store_files(meta["task_type"])
    if not isinstance(checksums, dict) or set(checksums) != expected:
        raise _corrupt(path, "meta.json's checksums must map each of "
                       f"{sorted(expected)} to its sha256")
    for name, digest in checksums.items():
        if not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
            raise _corrupt(path, f"meta.json's checksum of {name} is not a sha256 "
                           f"hex digest: {digest!r}")


def _verify_checksums(path, files, checksums):
    for name, file in files.items():
        digest = hashlib.sha256()
        file.seek(0)
        while chunk := file.read(1 << 20):
            digest.update(chunk)
        file.seek(0)
        if digest.hexdigest() != checksums[name]:
            raise _corrupt(path, f"{name} does not match the sha256 checksum "
                           "recorded in meta.json")


def _check_size(path, file, name, expected):
    size = os.fstat(file.fileno()).st_size
    if size != expected:
        raise _corrupt(path, f"{name} has {size} bytes, meta.json implies "
                       f"{expected}")


def _read_npy(path, file, name, dtype, shape):
    """Load an .npy file without pickle, after checking its header against
    the dtype and shape meta.json gives, and its size against the header."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        reader = readers[np.lib.format.read_magic(file)]
        found_shape, fortran, found_dtype = reader(file)
    except (KeyError, ValueError) as error:
        raise _corrupt(path, f"{name} is not a readable .npy file ({error})") from None
    if found_dtype != dtype or found_shape != shape or fortran:
        raise _corrupt(path, f"{name} holds an array of shape {found_shape} and "
                       f"dtype {found_dtype}, meta.json implies {shape} and {dtype}")
    _check_size(path, file, name, file.tell() + int(np.prod(shape)) * dtype.itemsize)
    file.seek(0)
    return np.load(file, allow_pickle=False)


def _check_index(path, index, n_rows):
    """Check that the tasks' rows lie in the data and follow one another."""
    starts, sizes = index[:, 0], index[:, 1:]
    _refuse_rows(path, index, starts < 0, "starts at a negative row")
    _refuse_rows(path, index, ((sizes < 1) | (sizes > n_rows)).any(axis=1),
                 "has a support or query set of no rows or more rows than the data")
    ends = starts.clip(max=n_rows) + sizes.sum(axis=1)
    _refuse_rows(path, index, ends > n_rows,
                 f"ends beyond the data's {n_rows} rows")
    follows = np.concatenate([[0], ends[:-1]])
    _refuse_rows(path, index, starts != follows,
                 "does not start where the task before it ends")
    if ends[-1] != n_rows:
        raise _corrupt(path, f"index.npy: the tasks cover {ends[-1]} rows, the "
                       f"data has {n_rows}")


def _refuse_rows(path, index, bad, problem):
    if bad.any():
        task = int(np.argmax(bad))
        raise _corrupt(path, f"index.npy: task {task} {problem} (start, n_support, "
                       f"n_query = {index[task].tolist()})")


# --------------------------------------------------------------------- writing


def _resolve_target(path):
    target = Path(path).resolve()
    if target.parent == target:
        raise ValueError(f"TaskStore.write needs a folder to create, got {path}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class _WriteLock:
    """An exclusive lock on writing ``target``: ``flock`` on a lock file
    beside it (released by the system if the writer dies), removed when the
    write ends. A second writer fails at once instead of waiting."""

    def __init__(self, target):
        self.target = target
        self.file = target.with_name(f".{target.name}.lock")

    def __enter__(self):
        for _ in range(100):
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BlockingIOError(
                    f"TaskStore at {self.target}: another process or thread is "
                    f"writing this store (it holds {self.file}); wait for it to "
                    "finish, or write to another folder.") from None
            if _still_there(fd, self.file):
                self.fd = fd
                return self
            os.close(fd)  # a writer that just finished removed this lock file
        raise BlockingIOError(f"TaskStore at {self.target}: could not lock "
                              f"{self.file}; other writers keep replacing it.")

    def __exit__(self, *exc_info):
        try:
            os.unlink(self.file)  # before releasing: see _still_there
        finally:
            os.close(self.fd)


def _still_there(fd, path):
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _check_target(target, overwrite):
    """Whether ``target`` holds a store to replace; raise if it may not be
    written."""
    if not os.path.lexists(target):
        return False
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; TaskStore."
                              "write needs a new or empty folder.")
    if not any(target.iterdir()):
        return False
    if not overwrite:
        raise FileExistsError(f"{target} is not empty; TaskStore.write needs a new "
                              "or empty folder, or overwrite=True to replace a "
                              "store.")
    if not (target / "meta.json").is_file():
        raise FileExistsError(f"{target} is not empty and not a TaskStore "
                              "(no meta.json); overwrite=True only replaces a "
                              "store.")
    return True


def _temp_pattern(target):
    return re.escape(f".{target.name}{_TEMP_INFIX}") + "[0-9a-f]{16}"


def _remove_stale_temps(target):
    """Remove temporary folders of writers that were killed (the lock is
    held, so no live writer owns one)."""
    pattern = _temp_pattern(target)
    for entry in os.scandir(target.parent):
        if re.fullmatch(pattern, entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _make_temp(target):
    temp = target.with_name(f".{target.name}{_TEMP_INFIX}{secrets.token_hex(8)}")
    temp.mkdir()
    return temp


def _write_files(folder, tasks, task_type):
    """Write the store's files into ``folder``, meta.json last."""
    tasks = check_tasks(tasks, task_type=task_type)
    labels = _LabelTable() if task_type == "classification" else None
    index, checksums = _write_rows(folder, tasks, labels)
    checksums["index.npy"] = _save_npy(folder / "index.npy", index)
    if labels is not None:
        checksums["labels.npy"] = _save_npy(folder / "labels.npy", labels.table())
    meta = dict(format_version=FORMAT_VERSION, task_type=task_type,
                n_tasks=len(tasks), n_rows=int(index[-1, 0] + index[-1, 1:].sum()),
                n_features=tasks[0].X_support.shape[1],
                label_dtype=None if labels is None else labels.dtype.str,
                n_labels=None if labels is None else len(labels.codes),
                checksums=checksums)
    _write_bytes(folder / "meta.json", json.dumps(meta, indent=1).encode())
    _fsync_folder(folder)


def _write_rows(folder, tasks, labels):
    """Append every task's rows to X.f32 and y.bin; return the index and the
    two files' sha256."""
    index = np.empty((len(tasks), 3), dtype=_CODE_DTYPE)
    n_rows = 0
    with open(folder / "X.f32", "xb") as X_file, open(folder / "y.bin", "xb") as y_file:
        X_out, y_out = _HashedWriter(X_file), _HashedWriter(y_file)
        for i, task in enumerate(tasks):
            index[i] = n_rows, task.n_support, task.n_query
            for X, y in ((task.X_support, task.y_support),
                         (task.X_query, task.y_query)):
                X_out.write(X.astype(_X_DTYPE, copy=False))
                y_out.write(y.astype(_TARGET_DTYPE) if labels is None
                            else labels.encode(y, i))
                n_rows += len(X)
        return index, {"X.f32": X_out.sync(), "y.bin": y_out.sync()}


class _HashedWriter:
    """Appends arrays to an open file, keeping the running sha256."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, array):
        data = np.ascontiguousarray(array).tobytes()
        self.digest.update(data)
        self.file.write(data)

    def sync(self):
        """Flush the file to disk and return its sha256 hex digest."""
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.digest.hexdigest()


def _save_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _write_bytes(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _write_bytes(path, data):
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LabelTable:
    """Classification labels as integer codes, in order of appearance; all
    tasks' labels must have one dtype (strings may differ in length)."""

    def __init__(self):
        self.codes, self.dtype, self.first = {}, None, None

    def encode(self, y, task):
        y = _storable_labels(y, task)
        if self.dtype is None:
            self.dtype, self.first = y.dtype, task
        elif y.dtype.kind in "US" and y.dtype.kind == self.dtype.kind:
            self.dtype = np.promote_types(self.dtype, y.dtype)
        elif y.dtype != self.dtype:
            raise TypeError(
                f"Task {task}: labels of dtype {y.dtype}, but task {self.first}'s "
                f"are {self.dtype}; a TaskStore keeps one label dtype, so that "
                "labels read back as written. Convert all labels to one dtype.")
        codes = self.codes
        return np.fromiter((codes.setdefault(label, len(codes))
                            for label in y.tolist()), dtype=_CODE_DTYPE, count=len(y))

    def table(self):
        return np.array(list(self.codes), dtype=self.dtype)


def _storable_labels(y, task):
    """``y`` as an array that can be saved without pickle: an object array of
    ints or strings becomes an int or str array."""
    if y.dtype.kind == "O":
        y = np.array(y.tolist())
    if y.dtype.kind not in _LABEL_KINDS:
        raise TypeError(f"Task {task}: labels of dtype {y.dtype} cannot be stored "
                        "without pickle; use ints, bools, floats or strings.")
    return y


def _publish(temp, target, replace):
    """Move the complete store in ``temp`` to ``target`` in one rename."""
    if target.exists():  # keep the permissions of the folder it replaces
        os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
    if not replace:
        try:
            os.rename(temp, target)  # replaces an empty folder, not a full one
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise FileExistsError(f"{target} was filled by someone else while "
                                  "the store was written; nothing was "
                                  "written.") from None
    elif _exchange(temp, target):
        shutil.rmtree(temp)  # temp now holds the old store
    else:  # two renames; the old store is kept aside until the new one is in
        old = target.with_name(f".{target.name}.skmeta-old-{secrets.token_hex(8)}")
        os.rename(target, old)
        try:
            os.rename(temp, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old)
    _fsync_folder(target.parent)


def _exchange(a, b):
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                 rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))
