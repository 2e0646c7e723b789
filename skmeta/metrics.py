"""Per-task scores and their confidence intervals, as few-shot papers report
them."""

import numpy as np
from scipy import stats
from sklearn.base import clone, is_regressor
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

    def learner(task):
        if hasattr(final, "adapt"):
            return adapt(estimator, task.X_support, task.y_support)
        return clone(estimator).fit(task.X_support, task.y_support)

    task_type = "regression" if is_regressor(final) else "classification"
    tasks = check_tasks(tasks, task_type=task_type)
    return np.array([learner(t).score(t.X_query, t.y_query) for t in tasks])


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
