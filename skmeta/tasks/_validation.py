"""check_tasks: the one validator every meta-learner runs on its input."""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target

from ._task import MappedTasks, Task

_COLLECTION_HINT = (
    "a task collection: a list of skmeta.Task, of (X, y) or of "
    "(X_support, y_support, X_query, y_query) tuples, or an EpisodeSampler")


def check_tasks(tasks, *, task_type="classification", require_y_query=True,
                query_size=0.5, random_state=None):
    """Validate a task collection and return it as a list of clean ``Task``.

    Every meta-learner calls this on its input, so every learner reports bad
    input the same way: a ``ValueError`` or ``TypeError`` whose message
    starts with the index of the offending task and says what is wrong.

    Parameters
    ----------
    tasks : sequence of Task or tuple
        The task collection. 2-tuples ``(X, y)`` are split into support and
        query sets (stratified for classification).
    task_type : {"classification", "regression"}, default="classification"
        Classification tasks need two classes in their support set and query
        labels that the support set has; regression targets must be finite.
    require_y_query : bool, default=True
        Whether each task needs query labels (fit and score need them,
        predict does not).
    query_size : float, default=0.5
        Fraction of a 2-tuple task's examples that goes to its query set.
    random_state : int, RandomState instance or None, default=None
        Seeds the splits of 2-tuple tasks; task ``i`` gets its own seed
        derived from it, so a given collection is split reproducibly.

    Returns
    -------
    list of Task, or MappedTasks
        Tasks with ``X`` arrays as C-contiguous float32 of shape
        (n, n_features) (the caller's arrays themselves when they are so
        already) and ``y`` arrays 1-D with the user's labels (float64 targets
        for regression). Lists and tuples, in memory already, are validated
        and converted once; other collections (an :class:`EpisodeSampler`, a
        :class:`TaskStore`) come back as a lazy :class:`MappedTasks` that
        validates each task as it is read, so millions of episodes are never
        held in memory.

    Examples
    --------
    >>> import numpy as np
    >>> from skmeta.tasks import check_tasks
    >>> X, y = np.arange(16.0).reshape(8, 2), [0, 1] * 4
    >>> [task] = check_tasks([(X, y)], random_state=0)
    >>> task.X_support.shape, task.X_query.shape
    ((4, 2), (4, 2))
    >>> check_tasks([(X, [0] * 8)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Task 0: y has a single class (0); a classification task needs...
    """
    if task_type not in ("classification", "regression"):
        raise ValueError(f"task_type must be 'classification' or 'regression', "
                         f"got {task_type!r}.")
    check_collection(tasks)
    seed = check_random_state(random_state).randint(2**31 - len(tasks))
    first = _TaskChecker(task_type, require_y_query, query_size, seed)(tasks[0], 0)
    checker = _TaskChecker(task_type, require_y_query, query_size, seed,
                           n_features=first.X_support.shape[1])
    if isinstance(tasks, (list, tuple)):  # in memory already: convert once
        return [checker(task, i) for i, task in enumerate(tasks)]
    return MappedTasks(tasks, checker)


def check_collection(tasks):
    """Raise unless ``tasks`` is a non-empty, sized, indexable sequence."""
    if isinstance(tasks, (np.ndarray, str, bytes)) or hasattr(tasks, "iloc"):
        raise TypeError(
            f"Expected {_COLLECTION_HINT}; got a {type(tasks).__name__}. To "
            "meta-train on one labelled dataset, draw tasks from it with "
            "skmeta.tasks.EpisodeSampler(X, y, ...).")
    if isinstance(tasks, Task):
        raise TypeError(f"Expected {_COLLECTION_HINT}; got a single Task. Pass "
                        "a list of tasks, e.g. [task].")
    if isinstance(tasks, Mapping) or not (hasattr(tasks, "__len__")
                                          and hasattr(tasks, "__getitem__")):
        raise TypeError(f"Expected {_COLLECTION_HINT}; got a "
                        f"{type(tasks).__name__}, which is not a sized, "
                        "indexable sequence (wrap it in list(...)).")
    if len(tasks) == 0:
        raise ValueError("Expected a non-empty task collection, got 0 tasks.")


@dataclass(frozen=True)
class _TaskChecker:
    """Validates task ``index`` of a collection (see :func:`check_tasks`)."""

    task_type: str
    require_y_query: bool
    query_size: float
    seed: int
    n_features: int | None = None

    def __call__(self, task, index):
        try:
            checked = self._check(task, index)
        except (TypeError, ValueError) as error:
            raise type(error)(f"Task {index}: {error}") from None
        width = checked.X_support.shape[1]
        if self.n_features is not None and width != self.n_features:
            raise ValueError(
                f"Task {index}: X has {width} features, but task 0 has "
                f"{self.n_features}; all tasks must have the same features.")
        return checked

    def _check(self, task, index):
        if isinstance(task, tuple) and len(task) == 2:
            return _split_task(*task, self.task_type, self.query_size,
                               self.seed + index)
        if isinstance(task, Task):
            parts = (task.X_support, task.y_support, task.X_query, task.y_query)
        elif isinstance(task, tuple) and len(task) == 4:
            parts = task
        else:
            kind = (f"a {len(task)}-tuple" if isinstance(task, tuple)
                    else f"a {type(task).__name__}")
            raise TypeError("expected a skmeta.Task, an (X, y) tuple or an "
                            "(X_support, y_support, X_query, y_query) tuple, "
                            f"got {kind}.")
        return _check_parts(*parts, self.task_type, self.require_y_query)


def _split_task(X, y, task_type, query_size, seed):
    X, y = _check_Xy(X, y, "X", "y", task_type)
    if task_type == "classification":
        classes, counts = np.unique(y, return_counts=True)
        _check_two_classes(classes, "y")
        if counts.min() < 2:
            raise ValueError(
                f"class {classes.tolist()[counts.argmin()]!r} has a single example, so "
                "the (X, y) task cannot be split into support and query sets "
                "that both hold it; give (X_support, y_support, X_query, "
                "y_query) instead.")
    stratify = y if task_type == "classification" else None
    try:
        X_s, X_q, y_s, y_q = train_test_split(
            X, y, test_size=query_size, stratify=stratify, random_state=seed)
    except ValueError as error:
        raise ValueError(f"cannot split (X, y) into support and query sets "
                         f"({error}).") from None
    return Task(X_s, y_s, X_q, y_q)


def _check_parts(X_s, y_s, X_q, y_q, task_type, require_y_query):
    X_s, y_s = _check_Xy(X_s, y_s, "X_support", "y_support", task_type)
    if task_type == "classification":
        classes = np.unique(y_s)
        _check_two_classes(classes, "y_support")
    if X_q is None:
        raise ValueError("X_query is missing; give the task a query set, or "
                         "pass it as an (X, y) tuple to have it split.")
    X_q = _check_X(X_q, "X_query")
    if X_q.shape[1] != X_s.shape[1]:
        raise ValueError(f"X_query has {X_q.shape[1]} features but X_support "
                         f"has {X_s.shape[1]}.")
    if y_q is None:
        if require_y_query:
            raise ValueError("y_query is missing; fitting and scoring need "
                             "query labels.")
        return Task(X_s, y_s, X_q, None)
    y_q = _check_y(y_q, "y_query", task_type)
    _check_lengths(X_q, y_q, "X_query", "y_query")
    if task_type == "classification":
        unseen = _unseen(y_q, classes)
        if len(unseen):
            raise ValueError(
                f"query labels {unseen.tolist()} are not among the support "
                f"set's classes {classes.tolist()}; every query class "
                "needs support examples.")
    return Task(X_s, y_s, X_q, y_q)


def _unseen(labels, classes):
    """The distinct ``labels`` not among ``classes`` (sorted and unique): a
    binary search per label, several times faster than ``np.setdiff1d`` on
    a task's few labels."""
    if labels.dtype != classes.dtype:
        return np.setdiff1d(labels, classes)
    at = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
    return np.unique(labels[classes[at] != labels])


def _check_Xy(X, y, X_name, y_name, task_type):
    X, y = _check_X(X, X_name), _check_y(y, y_name, task_type)
    _check_lengths(X, y, X_name, y_name)
    return X, y


def _check_lengths(X, y, X_name, y_name):
    if len(X) != len(y):
        raise ValueError(f"{X_name} has {len(X)} rows but {y_name} has "
                         f"{len(y)} values.")


def _check_X(X, name):
    if sparse.issparse(X):
        raise TypeError(f"{name} is a scipy.sparse {X.format} matrix; skmeta's "
                        "learners need dense arrays (use X.toarray()).")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise TypeError(f"{name} is complex (dtype {X.dtype}); skmeta's learners "
                        "need real features (give the real and imaginary parts "
                        "as separate columns).")
    if X.dtype.kind not in "biuf":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}.") from None
    if X.ndim != 2:
        hint = " (reshape one feature with X.reshape(-1, 1))" if X.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a "
                         f"{X.ndim}-D array of shape {X.shape}{hint}.")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: the task has no examples.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 features.")
    _check_finite(X, name)
    _check_float32_range(X, name)
    return np.ascontiguousarray(X, dtype=np.float32)


def _check_y(y, name, task_type):
    if sparse.issparse(y):
        raise TypeError(f"{name} is a scipy.sparse matrix; give a 1-D array.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}.")
    if y.dtype.kind == "c":
        raise TypeError(f"{name} is complex (dtype {y.dtype}); labels and targets "
                        "must be real.")
    if task_type == "regression":
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric for regression, got "
                            f"dtype {y.dtype}.")
        _check_finite(y, name)
        _check_float32_range(y, name)
        return y.astype(np.float64)
    if y.dtype.kind == "f":
        _check_finite(y, name)
    elif y.dtype.kind == "O":
        if any(v is None or (isinstance(v, (float, np.floating)) and v != v)
               for v in y):
            raise ValueError(f"{name} contains missing labels (NaN or None); "
                             "remove those examples or label them.")
        kinds = {type(v).__name__ for v in y}
        if len(kinds) > 1:
            raise TypeError(f"{name} mixes label types {sorted(kinds)}; use "
                            "one type (all ints or all strings).")
    _check_discrete(y, name)
    return y


def _check_discrete(y, name):
    """Classification labels must be classes, not continuous values."""
    if y.dtype.kind not in "fO":  # ints, bools, strings: classes already
        return
    numeric = y
    if y.dtype.kind == "O" and all(isinstance(v, (float, np.floating)) for v in y):
        numeric = y.astype(np.float64)
    if type_of_target(numeric) == "continuous":
        example = next(v for v in numeric.tolist() if v != int(v))
        raise ValueError(
            f"{name} holds continuous values (e.g. {example!r}), not class "
            "labels; a classification task needs ints or strings (use a "
            "regressor for continuous targets).")


def _check_finite(a, name):
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        problem = "NaN" if np.isnan(a).any() else "infinity"
        raise ValueError(f"{name} contains {problem}; remove or impute it.")


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32_range(a, name):
    """Values that are finite here but overflow the float32 the learners
    compute in (those beyond about 3.4e38) are refused."""
    if a.dtype.itemsize > 4 and a.dtype.kind == "f" and a.size:
        largest = float(np.abs(a).max())
        if largest > _FLOAT32_MAX:
            raise ValueError(
                f"{name} holds {largest:.3g}, which overflows float32 (largest "
                f"{_FLOAT32_MAX:.3g}), the precision skmeta computes in; rescale "
                "it (e.g. standardise the features).")


def _check_two_classes(classes, name):
    if len(classes) < 2:
        raise ValueError(f"{name} has a single class ({classes.tolist()[0]!r}); a "
                         "classification task needs at least two.")
