"""Standardisation with training-task statistics, for learners that want raw
inputs to just work (scikit-learn's ``normalize_y`` pattern, over tasks)."""

import numpy as np

from .tasks import MappedTasks, Task


class TaskScaler:
    """Mean and standard deviation of the features and targets of pooled tasks.

    Fitted on every labelled row (support and query) of a training task
    collection; learners standardise with it before meta-training and
    adaptation and map predictions back with :meth:`inverse_transform_y`
    (and standard deviations with :meth:`inverse_scale_y`), so users work in
    their own units. Constant columns get a scale of 1.

    Parameters
    ----------
    with_y : bool, default=True
        Also standardise the targets (regression); False leaves them as
        they are (classification labels).

    Attributes
    ----------
    mean_X_, scale_X_ : ndarray of shape (n_features,)
    mean_y_, scale_y_ : float
        0 and 1 when ``with_y`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> from skmeta import Task
    >>> from skmeta._scaling import TaskScaler
    >>> task = Task(np.array([[1.0], [3.0]]), np.array([10.0, 30.0]),
    ...             np.array([[5.0]]), np.array([50.0]))
    >>> scaler = TaskScaler().fit([task])
    >>> scaler.transform_X([[3.0]]).tolist(), scaler.transform_y([30.0]).tolist()
    ([[0.0]], [0.0])
    >>> scaler.inverse_transform_y(scaler.transform_y([50.0])).tolist()
    [50.0]
    """

    def __init__(self, with_y=True):
        self.with_y = with_y

    def fit(self, tasks):
        """Compute the statistics of all labelled rows of ``tasks``.

        Parameters
        ----------
        tasks : sequence of Task
            Validated tasks (see :func:`skmeta.tasks.check_tasks`).

        Returns
        -------
        self : TaskScaler
        """
        n, sum_X, sum_XX, sum_y, sum_yy = 0, 0.0, 0.0, 0.0, 0.0
        shift_X = shift_y = None  # shifted sums: exact for large offsets
        for task in tasks:
            for X, y in ((task.X_support, task.y_support),
                         (task.X_query, task.y_query)):
                if X is None or len(X) == 0:
                    continue
                X = np.asarray(X, dtype=np.float64)
                if shift_X is None:
                    shift_X = X[0].copy()
                    shift_y = (float(np.asarray(y, dtype=np.float64)[0])
                               if self.with_y and y is not None else 0.0)
                X = X - shift_X
                n += len(X)
                sum_X = sum_X + X.sum(0)
                sum_XX = sum_XX + np.square(X).sum(0)
                if self.with_y and y is not None:
                    y = np.asarray(y, dtype=np.float64) - shift_y
                    sum_y += y.sum()
                    sum_yy += np.square(y).sum()
        if n == 0:
            raise ValueError("TaskScaler needs at least one labelled row.")
        mean = sum_X / n
        self.mean_X_ = shift_X + mean
        self.scale_X_ = _safe_scale(np.sqrt(np.maximum(sum_XX / n - mean**2, 0)))
        if self.with_y:
            mean_y = sum_y / n
            self.mean_y_ = shift_y + mean_y
            self.scale_y_ = float(_safe_scale(
                np.sqrt(max(sum_yy / n - mean_y**2, 0.0))))
        else:
            self.mean_y_, self.scale_y_ = 0.0, 1.0
        return self

    def transform_X(self, X):
        """Standardised features, float64."""
        return (np.asarray(X, dtype=np.float64) - self.mean_X_) / self.scale_X_

    def transform_y(self, y):
        """Standardised targets, float64."""
        return (np.asarray(y, dtype=np.float64) - self.mean_y_) / self.scale_y_

    def inverse_transform_y(self, y):
        """Targets (predictions) back in the user's units."""
        return np.asarray(y, dtype=np.float64) * self.scale_y_ + self.mean_y_

    def inverse_scale_y(self, std):
        """Standard deviations of targets back in the user's units."""
        return np.asarray(std, dtype=np.float64) * self.scale_y_

    def transform_task(self, task, dtype=np.float32):
        """A task with standardised features (``dtype``) and targets (float64)."""
        def X(a):
            return None if a is None else self.transform_X(a).astype(dtype)

        def y(a):
            return a if a is None or not self.with_y else self.transform_y(a)

        return Task(X(task.X_support), y(task.y_support), X(task.X_query),
                    y(task.y_query))

    def transform_tasks(self, tasks):
        """``tasks`` with every task standardised: a new list for a list (in
        memory already), a lazy view of any other collection."""
        if isinstance(tasks, list):
            return [self.transform_task(task) for task in tasks]
        return MappedTasks(tasks, self._transform_at)

    def _transform_at(self, task, index):
        return self.transform_task(task)


def _safe_scale(scale):
    scale = np.asarray(scale, dtype=np.float64)
    return np.where(scale > 0, scale, 1.0)
