"""The task: one small supervised dataset, split into support and query sets."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Task:
    """One few-shot task: a support set to adapt on and a query set to evaluate on.

    Tasks are the samples of a meta-learner: ``fit``, ``predict`` and ``score``
    take lists of them. A 4-tuple ``(X_support, y_support, X_query, y_query)``
    or a 2-tuple ``(X, y)`` (split into support and query by the estimator)
    may be given wherever a ``Task`` is accepted.

    Parameters
    ----------
    X_support : array-like of shape (n_support, n_features)
        Features of the labelled examples the learner adapts on.
    y_support : array-like of shape (n_support,)
        Their labels (any hashable values: ints, strings) or, for
        regression, their targets.
    X_query : array-like of shape (n_query, n_features), default=None
        Features of the examples to predict.
    y_query : array-like of shape (n_query,), default=None
        Their labels; needed to meta-train and to score.

    Examples
    --------
    >>> import numpy as np
    >>> from skmeta import Task
    >>> task = Task(np.eye(2), ["cat", "dog"], np.eye(2), ["cat", "dog"])
    >>> task.n_support, task.n_query
    (2, 2)
    """

    X_support: Any
    y_support: Any
    X_query: Any = None
    y_query: Any = None

    @property
    def n_support(self):
        """Number of support examples."""
        return len(self.y_support)

    @property
    def n_query(self):
        """Number of query examples (0 when the task has no query set)."""
        return 0 if self.X_query is None else len(self.X_query)


class MappedTasks(Sequence):
    """A task collection whose task ``i`` is ``function(tasks[i], i)``,
    computed as it is read, so that a view of millions of tasks takes no
    memory beyond its source's (slices give lists).

    Used for the validated view :func:`check_tasks` returns for collections
    that are not in memory, and for standardised views of training tasks.

    Parameters
    ----------
    tasks : sized, indexable sequence of tasks
    function : callable
        ``function(task, index)`` gives the task seen at ``index``.

    Examples
    --------
    >>> from skmeta.tasks import MappedTasks, Task
    >>> doubled = MappedTasks([Task([[1.0]], [0])] * 3,
    ...                       lambda task, i: Task([[2.0 * i]], task.y_support))
    >>> len(doubled), doubled[-1].X_support
    (3, [[4.0]])
    """

    def __init__(self, tasks, function):
        self.tasks, self.function = tasks, function

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]
        return self.function(self.tasks[index], index)


def encode_labels(task):
    """A classification task's sorted classes and its labels as indices.

    Parameters
    ----------
    task : Task
        A validated classification task.

    Returns
    -------
    classes : ndarray
        The support set's distinct labels, sorted.
    y_support, y_query : ndarray of int
        Indices into ``classes`` (``y_query`` is None without query labels).

    Examples
    --------
    >>> from skmeta.tasks import Task, encode_labels
    >>> classes, y_support, y_query = encode_labels(
    ...     Task([[0.0], [1.0]], ["b", "a"], [[2.0]], ["b"]))
    >>> classes.tolist(), y_support.tolist(), y_query.tolist()
    (['a', 'b'], [1, 0], [1])
    """
    classes, y_support = np.unique(task.y_support, return_inverse=True)
    y_query = None if task.y_query is None else np.searchsorted(classes, task.y_query)
    return classes, y_support, y_query


def labelled_examples(task):
    """All labelled examples of a task: its support and query sets stacked.

    Parameters
    ----------
    task : Task
        A task with query labels.

    Returns
    -------
    X : ndarray of shape (n_support + n_query, n_features)
    y : ndarray of shape (n_support + n_query,)
    """
    return (np.concatenate([task.X_support, task.X_query]),
            np.concatenate([task.y_support, task.y_query]))


def pool_tasks(tasks):
    """All labelled examples of a task collection, stacked.

    Parameters
    ----------
    tasks : sequence of Task
        Validated tasks with query labels.

    Returns
    -------
    X : ndarray of shape (n_examples, n_features)
    y : ndarray of shape (n_examples,)
    """
    X, y = zip(*map(labelled_examples, tasks), strict=True)
    return np.concatenate(X), np.concatenate(y)
