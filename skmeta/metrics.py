"""Per-task scores, their confidence intervals, as few-shot papers report
them, and task-wise scorers for scikit-learn's ``scoring=``."""

from inspect import signature

import numpy as np
from scipy import stats
from sklearn.base import clone, is_regressor
from sklearn.metrics import get_scorer, get_scorer_names, make_scorer
from sklearn.pipeline import Pipeline

from .pipeline import adapt
from .tasks import check_tasks


def task_scores(estimator, tasks):
    """Query score of each task after learning from its support set.

    A meta-learner (or a pipeline ending in one) adapts to each support set;
    any other scikit-learn estimator, such as a baseline, is cloned and
    fitted on it.

    Parameters
    ----------
    estimator : meta-learner, Pipeline, or scikit-learn estimator
    tasks : sequence of Task or tuple
        Tasks with query labels.

    Returns
    -------
    scores : ndarray of shape (n_tasks,)
        Accuracy (classifiers) or R² (regressors) on each query set.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.metrics import mean_confidence_interval, task_scores
    >>> from skmeta.tasks import EpisodeSampler
    >>> X, y = load_digits_tasks(return_X_y=True)
    >>> tasks = EpisodeSampler(X, y, n_way=5, k_shot=5, n_query=5, n_tasks=20,
    ...                        random_state=0)
    >>> mean, half_width = mean_confidence_interval(
    ...     task_scores(LogisticRegression(), tasks))
    >>> 0.5 < mean <= 1.0
    True
    """
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    tasks = check_tasks(tasks, task_type=_task_type(final))
    return np.array([_adapt_to(estimator, final, t).score(t.X_query, t.y_query)
                     for t in tasks])


def mean_confidence_interval(scores, confidence=0.95):
    """Mean of per-task scores and the half-width of its confidence interval.

    Parameters
    ----------
    scores : array-like of shape (n_tasks,)
    confidence : float, default=0.95

    Returns
    -------
    mean : float
    half_width : float
        ``mean ± half_width`` is the Student-t interval of the mean.

    Examples
    --------
    >>> from skmeta.metrics import mean_confidence_interval
    >>> mean, half_width = mean_confidence_interval([0.5, 0.7, 0.6])
    >>> round(mean, 2), round(half_width, 3)
    (0.6, 0.248)
    """
    scores = np.asarray(scores, dtype=float)
    half_width = stats.sem(scores) * stats.t.ppf((1 + confidence) / 2,
                                                 len(scores) - 1)
    return float(scores.mean()), float(half_width)


class TaskScorer:
    """A scorer of meta-learners on task collections, for ``scoring=``.

    Built by :func:`get_task_scorer` or :func:`make_task_scorer`. Called as
    ``scorer(estimator, tasks, y=None)``, as scikit-learn calls scorers, it
    returns ``sign * metric`` averaged over the tasks, each task's metric
    computed on its query set after adapting on its support set.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, y_pred, **kwargs)``.
    sign : {1, -1}
        -1 negates the metric, so that greater is always better.
    kwargs : dict
        Extra arguments of ``score_func``.
    response_method : str or tuple of str
        What the metric compares with the labels: ``"predict"`` (the
        meta-learner's batched ``predict(tasks)``), or ``"predict_proba"``,
        ``"decision_function"`` or a tuple of them in order of preference
        (called on each task's adapted estimator).
    name : str, default=None
        Named in error messages; the function's name if None.
    """

    def __init__(self, score_func, sign, kwargs, response_method, name=None):
        self._score_func, self._sign = score_func, sign
        self._kwargs, self._response_method = dict(kwargs), response_method
        self._name = name or getattr(score_func, "__name__", repr(score_func))

    def __call__(self, estimator, tasks, y=None):
        """Mean of the metric over the tasks' query sets.

        Parameters
        ----------
        estimator : meta-learner, Pipeline ending in one, fitted search of
            them, or scikit-learn estimator (cloned and fitted per task).
        tasks : sequence of Task or tuple
            Tasks with query labels.
        y : None
            Ignored: the labels are the tasks' own.

        Returns
        -------
        score : float
        """
        model = _unwrap_search(estimator)
        final = model[-1] if isinstance(model, Pipeline) else model
        tasks = check_tasks(tasks, task_type=_task_type(final),
                            random_state=getattr(final, "random_state", None))
        if self._response_method == "predict":
            predictions = _predict_tasks(model, final, tasks)
        else:
            predictions = (_adapt_to(model, final, task) for task in tasks)
        pairs = enumerate(zip(tasks, predictions, strict=True))
        return float(np.mean([self._score_task(i, task, prediction)
                              for i, (task, prediction) in pairs]))

    def _score_task(self, index, task, prediction):
        try:
            if self._response_method == "predict":
                return self._sign * self._score_func(task.y_query, prediction,
                                                     **self._kwargs)
            return self._response_scorer(prediction)(
                prediction, task.X_query, task.y_query)
        except (ValueError, TypeError, AttributeError) as error:
            raise type(error)(f"Scorer {self._name!r} cannot score task "
                              f"{index}: {error}") from error

    def _response_scorer(self, adapted):
        """scikit-learn's scorer for one adapted estimator, told its classes."""
        kwargs = dict(self._kwargs)
        if (hasattr(adapted, "classes_") and "labels" not in kwargs
                and "labels" in signature(self._score_func).parameters):
            kwargs["labels"] = adapted.classes_
        return make_scorer(self._score_func, response_method=self._response_method,
                           greater_is_better=self._sign > 0, **kwargs)

    def _accept_sample_weight(self):
        return False

    def __repr__(self):
        sign = "" if self._sign > 0 else ", greater_is_better=False"
        kwargs = "".join(f", {k}={v!r}" for k, v in self._kwargs.items())
        return (f"make_task_scorer({self._name}{sign}, "
                f"response_method={self._response_method!r}{kwargs})")


def make_task_scorer(metric, greater_is_better=True, response_method="predict",
                     **kwargs):
    """Make a task-wise scorer from a metric, like scikit-learn's ``make_scorer``.

    Parameters
    ----------
    metric : callable
        ``metric(y_true, y_pred, **kwargs)``, computed on each task's query
        set.
    greater_is_better : bool, default=True
        If False the scorer negates the metric (a loss), as scikit-learn's
        ``neg_*`` scorers do.
    response_method : str or tuple of str, default="predict"
        ``"predict"``, ``"predict_proba"``, ``"decision_function"``, or a
        tuple of them in order of preference.
    **kwargs
        Extra arguments of ``metric``.

    Returns
    -------
    scorer : TaskScorer
        ``scorer(estimator, tasks, y=None)``: the metric's mean over the
        tasks, each adapted on its support set and scored on its query set.

    Examples
    --------
    >>> from sklearn.metrics import fbeta_score
    >>> from skmeta.metrics import make_task_scorer
    >>> make_task_scorer(fbeta_score, beta=2, average="macro")
    make_task_scorer(fbeta_score, response_method='predict', beta=2, average='macro')
    """
    return TaskScorer(metric, 1 if greater_is_better else -1, kwargs,
                      response_method)


def get_task_scorer(name):
    """The task-wise version of a scikit-learn scorer, for ``scoring=``.

    scikit-learn's own scorers compare ``estimator.predict(X)`` with ``y``;
    a task collection has no ``y``, so they fail on meta-learners. This
    scorer instead averages the metric over the tasks' query sets, after
    adapting on each support set, with the same sign as scikit-learn's
    (``"neg_mean_squared_error"`` is negated).

    Parameters
    ----------
    name : str
        Any name in :func:`sklearn.metrics.get_scorer_names`. Scorers that do
        not apply to a task (``"f1"`` on 5-way tasks, ``"neg_log_loss"`` on
        regression) raise an error naming the scorer and the task when
        called.

    Returns
    -------
    scorer : TaskScorer
        ``scorer(estimator, tasks, y=None)``, accepted by ``GridSearchCV``,
        ``cross_validate`` (alone or in a dict of scorers) and the rest of
        scikit-learn's model selection.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> from skmeta import ProtoNetClassifier
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.metrics import get_task_scorer
    >>> from skmeta.tasks import EpisodeSampler
    >>> X, y = load_digits_tasks(return_X_y=True)
    >>> tasks = EpisodeSampler(X, y, n_way=3, k_shot=2, n_query=2, n_tasks=12,
    ...                        random_state=0)
    >>> clf = ProtoNetClassifier(max_epochs=1, random_state=0)
    >>> scores = cross_val_score(clf, tasks, cv=3,
    ...                          scoring=get_task_scorer("f1_macro"))
    >>> scores.shape, bool(((0 <= scores) & (scores <= 1)).all())
    ((3,), True)
    """
    if not isinstance(name, str) or name not in get_scorer_names():
        raise ValueError(f"{name!r} is not a scikit-learn scorer name; valid "
                         f"names: {', '.join(get_scorer_names())}.")
    scorer = get_scorer(name)
    return TaskScorer(scorer._score_func, scorer._sign, scorer._kwargs,
                      scorer._response_method, name=name)


def _unwrap_search(estimator):
    """The refitted estimator of a (nested) fitted search, else itself."""
    while hasattr(estimator, "best_estimator_"):
        estimator = estimator.best_estimator_
    return estimator


def _task_type(final):
    return "regression" if is_regressor(final) else "classification"


def _adapt_to(model, final, task):
    """``model`` adapted (meta-learner, pipeline) or fitted (baseline) to a
    task's support set."""
    if hasattr(final, "adapt"):
        return adapt(model, task.X_support, task.y_support)
    return clone(model).fit(task.X_support, task.y_support)


def _predict_tasks(model, final, tasks):
    """Query predictions of each task; batched for meta-learners."""
    if hasattr(final, "adapt"):
        return model.predict(tasks)
    return [_adapt_to(model, final, task).predict(task.X_query) for task in tasks]
