"""Task-aware pipelines: per-task preprocessing, and adapting a whole pipeline."""

from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.pipeline import Pipeline

from .tasks import Task
from .tasks._validation import check_collection


class TaskWise(TransformerMixin, BaseEstimator):
    """Apply a scikit-learn transformer to each task separately.

    For every task, a clone of ``transformer`` is fitted on the task's
    support features (on all of ``X`` for an ``(X, y)`` task) and transforms
    its support and query features, the way a new task will be preprocessed
    from its support set alone. This lets stock transformers precede a
    meta-learner in a :class:`~sklearn.pipeline.Pipeline`; use
    :func:`skmeta.adapt` to adapt such a pipeline to a new task.

    Parameters
    ----------
    transformer : scikit-learn transformer
        E.g. ``StandardScaler()``; its parameters are reachable as
        ``transformer__<name>``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skmeta import ProtoNetClassifier, TaskWise
    >>> pipe = make_pipeline(TaskWise(StandardScaler()), ProtoNetClassifier())
    """

    def __init__(self, transformer):
        self.transformer = transformer

    def fit(self, tasks, y=None):
        """Check the task collection; each task is fitted when transformed.

        Parameters
        ----------
        tasks : sequence of Task or tuple
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        check_collection(tasks)
        self.is_fitted_ = True
        return self

    def transform(self, tasks):
        """Transform each task with a transformer fitted on its support set.

        Parameters
        ----------
        tasks : sequence of Task or tuple

        Returns
        -------
        list
            Tasks of the same kinds (``Task``, 4-tuple or 2-tuple), with
            transformed features and unchanged labels.
        """
        check_collection(tasks)
        return [self._transform_task(task) for task in tasks]

    def for_task(self, X_support):
        """A clone of ``transformer`` fitted on one task's support features."""
        return clone(self.transformer).fit(X_support)

    def _transform_task(self, task):
        if isinstance(task, tuple) and len(task) == 2:
            X, y = task
            return self.for_task(X).transform(X), y
        X_s, y_s, X_q, y_q = (
            (task.X_support, task.y_support, task.X_query, task.y_query)
            if isinstance(task, Task) else task)
        fitted = self.for_task(X_s)
        X_q = None if X_q is None else fitted.transform(X_q)
        transformed = (fitted.transform(X_s), y_s, X_q, y_q)
        return Task(*transformed) if isinstance(task, Task) else transformed


def adapt(estimator, X_support, y_support):
    """Adapt a meta-learner, or a pipeline ending in one, to a new task.

    For a meta-learner this is ``estimator.adapt(X_support, y_support)``. For
    a :class:`~sklearn.pipeline.Pipeline` of :class:`TaskWise` steps and a
    final meta-learner, each step is fitted on the support set and the
    meta-learner adapts to the transformed support set.

    Parameters
    ----------
    estimator : meta-learner or Pipeline
    X_support : array-like of shape (n_support, n_features)
    y_support : array-like of shape (n_support,)

    Returns
    -------
    estimator : fitted scikit-learn estimator
        For a pipeline, a new fitted ``Pipeline`` of the fitted transformers
        and the adapted estimator.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skmeta import ProtoNetClassifier, TaskWise, adapt
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.tasks import EpisodeSampler
    >>> X, y = load_digits_tasks(return_X_y=True)
    >>> tasks = EpisodeSampler(X, y, n_way=3, k_shot=2, n_query=2, n_tasks=16,
    ...                        random_state=0)
    >>> pipe = make_pipeline(TaskWise(StandardScaler()),
    ...                      ProtoNetClassifier(max_epochs=1, random_state=0))
    >>> clf = adapt(pipe.fit(tasks), tasks[0].X_support, tasks[0].y_support)
    >>> [name for name, _ in clf.steps]
    ['taskwise', 'protonetclassifier']
    """
    if not isinstance(estimator, Pipeline):
        return estimator.adapt(X_support, y_support)
    steps, X = [], X_support
    for name, step in estimator.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if not isinstance(step, TaskWise):
            raise TypeError(f"Pipeline step {name!r} is a {type(step).__name__}; "
                            "only TaskWise steps can be adapted to a task.")
        fitted = step.for_task(X)
        X = fitted.transform(X)
        steps.append((name, fitted))
    name, learner = estimator.steps[-1]
    return Pipeline([*steps, (name, learner.adapt(X, y_support))])
