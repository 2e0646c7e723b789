import numpy as np
from scipy import stats
from sklearn.neighbors import KNeighborsClassifier

from skmeta.metrics import mean_confidence_interval, task_scores


def test_task_scores_adapt_meta_learners_and_fit_baselines(protonet, test_tasks):
    tasks = test_tasks[:10]
    scores = task_scores(protonet, tasks)
    assert scores.shape == (10,)
    assert np.isclose(scores.mean(), protonet.score(tasks))
    knn = task_scores(KNeighborsClassifier(n_neighbors=1), tasks)
    expected = [KNeighborsClassifier(n_neighbors=1).fit(t.X_support, t.y_support)
                .score(t.X_query, t.y_query) for t in tasks]
    np.testing.assert_allclose(knn, expected)


def test_confidence_interval_is_student_t():
    scores = np.random.default_rng(0).uniform(size=50)
    mean, half = mean_confidence_interval(scores)
    low, high = stats.t.interval(0.95, 49, loc=scores.mean(), scale=stats.sem(scores))
    assert np.isclose(mean, scores.mean()) and np.isclose(half, (high - low) / 2)
