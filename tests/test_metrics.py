import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    f1_score,
    fbeta_score,
    get_scorer_names,
    log_loss,
    mean_squared_error,
    r2_score,
)
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skmeta import MAMLRegressor, ProtoNetClassifier, TaskWise, adapt
from skmeta.datasets import make_sinusoid_tasks
from skmeta.metrics import (
    get_task_scorer,
    make_task_scorer,
    mean_confidence_interval,
    task_scores,
)
from skmeta.tasks import EpisodeSampler


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


# Task-wise scorers for scikit-learn's ``scoring=``

CLASSIFICATION_SCORERS = ["accuracy", "f1_macro", "neg_log_loss"]


@pytest.fixture(scope="module")
def episodes(digits):
    return EpisodeSampler(digits.data, digits.target, n_way=3, k_shot=2,
                          n_query=3, n_tasks=24, random_state=0)


@pytest.fixture(scope="module")
def sinusoids():
    return make_sinusoid_tasks(24, k_shot=5, n_query=5, random_state=0)


def _protonet():
    return ProtoNetClassifier(max_epochs=1, module__hidden_sizes=(16,),
                              random_state=0)


def _maml():
    return MAMLRegressor(max_epochs=1, module__hidden_sizes=(16,), random_state=0)


@pytest.fixture(scope="module")
def fitted_protonet(episodes):
    return _protonet().fit(episodes)


@pytest.fixture(scope="module")
def fitted_maml(sinusoids):
    return _maml().fit(sinusoids)


def test_cross_val_score_with_a_task_scorer_is_not_nan(episodes):
    # scoring="accuracy" gives NaN: scikit-learn's scorer needs a y
    scores = cross_val_score(_protonet(), episodes, cv=3,
                             scoring=get_task_scorer("accuracy"))
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_task_scorer_is_the_mean_of_the_query_metrics(fitted_protonet, episodes,
                                                      fitted_maml, sinusoids):
    tasks = episodes[:6]
    adapted = [fitted_protonet.adapt(t.X_support, t.y_support) for t in tasks]
    f1 = [f1_score(t.y_query, a.predict(t.X_query), average="macro")
          for t, a in zip(tasks, adapted, strict=True)]
    assert np.isclose(get_task_scorer("f1_macro")(fitted_protonet, tasks),
                      np.mean(f1))
    loss = [log_loss(t.y_query, a.predict_proba(t.X_query), labels=a.classes_)
            for t, a in zip(tasks, adapted, strict=True)]
    assert np.isclose(get_task_scorer("neg_log_loss")(fitted_protonet, tasks),
                      -np.mean(loss))
    tasks = sinusoids[:6]
    predictions = fitted_maml.predict(tasks)
    mse = [mean_squared_error(t.y_query, p)
           for t, p in zip(tasks, predictions, strict=True)]
    assert np.isclose(get_task_scorer("neg_mean_squared_error")(fitted_maml, tasks),
                      -np.mean(mse))
    r2 = [r2_score(t.y_query, p) for t, p in zip(tasks, predictions, strict=True)]
    assert np.isclose(get_task_scorer("r2")(fitted_maml, tasks), np.mean(r2))


def test_make_task_scorer_takes_any_metric(fitted_protonet, episodes):
    tasks = episodes[:4]
    scorer = make_task_scorer(fbeta_score, beta=2, average="macro")
    expected = np.mean([fbeta_score(t.y_query, p, beta=2, average="macro")
                        for t, p in zip(tasks, fitted_protonet.predict(tasks),
                                        strict=True)])
    assert np.isclose(scorer(fitted_protonet, tasks), expected)
    loss = make_task_scorer(log_loss, greater_is_better=False,
                            response_method="predict_proba")
    assert np.isclose(loss(fitted_protonet, tasks),
                      get_task_scorer("neg_log_loss")(fitted_protonet, tasks))


def test_every_scikit_learn_scorer_name_gives_a_task_scorer(
        fitted_protonet, episodes, fitted_maml, sinusoids):
    for name in get_scorer_names():
        scorer = get_task_scorer(name)
        assert name in repr(scorer) or scorer._score_func.__name__ in repr(scorer)
        for learner, tasks in [(fitted_protonet, episodes[:2]),
                               (fitted_maml, sinusoids[:2])]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = scorer(learner, tasks)
            except (ValueError, TypeError, AttributeError) as error:
                assert f"Scorer {name!r}" in str(error)
            else:
                assert isinstance(value, float)


def test_unknown_scorer_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'acuracy' is not.*accuracy, "):
        get_task_scorer("acuracy")


def test_task_scorers_score_pipelines_and_baselines(episodes):
    tasks = episodes[:6]
    pipe = make_pipeline(TaskWise(StandardScaler()), _protonet()).fit(episodes)
    adapted = [adapt(pipe, t.X_support, t.y_support) for t in tasks]
    loss = [log_loss(t.y_query, a.predict_proba(t.X_query), labels=a.classes_)
            for t, a in zip(tasks, adapted, strict=True)]
    assert np.isclose(get_task_scorer("neg_log_loss")(pipe, tasks), -np.mean(loss))
    assert np.isclose(get_task_scorer("accuracy")(pipe, tasks), pipe.score(tasks))
    knn = KNeighborsClassifier(n_neighbors=1)
    assert np.isclose(get_task_scorer("accuracy")(knn, tasks),
                      task_scores(knn, tasks).mean())


def test_cross_validate_with_several_task_scorers(episodes):
    scoring = {name: get_task_scorer(name) for name in CLASSIFICATION_SCORERS}
    result = cross_validate(_protonet(), episodes, cv=2, scoring=scoring)
    for name in CLASSIFICATION_SCORERS:
        assert np.isfinite(result[f"test_{name}"]).all()
    assert (result["test_neg_log_loss"] < 0).all()


def test_grid_search_refits_on_a_task_scorer(episodes):
    scoring = {name: get_task_scorer(name) for name in CLASSIFICATION_SCORERS}
    search = GridSearchCV(_protonet(), {"meta_lr": [1e-3, 1e-2]}, cv=2,
                          scoring=scoring, refit="f1_macro").fit(episodes)
    assert np.isfinite(search.cv_results_["mean_test_neg_log_loss"]).all()
    expected = get_task_scorer("f1_macro")(search.best_estimator_, episodes[:4])
    assert np.isclose(search.score(episodes[:4]), expected)
    # a fitted search is scored through its refitted meta-learner
    assert np.isclose(get_task_scorer("f1_macro")(search, episodes[:4]), expected)


def test_randomized_search_with_a_regression_scorer(sinusoids):
    search = RandomizedSearchCV(
        _maml(), {"inner_lr": [0.01, 0.1]}, n_iter=2, cv=2, random_state=0,
        scoring=get_task_scorer("neg_mean_squared_error")).fit(sinusoids)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores < 0).all()
    assert np.isclose(search.best_score_, scores.max())


@pytest.mark.parametrize("halving", ["grid", "random"])
def test_halving_searches_with_task_scorers(episodes, sinusoids, halving):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

    for learner, tasks, name, grid in [
            (_protonet(), episodes, "accuracy", {"meta_lr": [1e-3, 1e-2]}),
            (_maml(), sinusoids, "r2", {"inner_lr": [0.01, 0.1]})]:
        search = (HalvingGridSearchCV(learner, grid, **{})
                  if halving == "grid" else
                  HalvingRandomSearchCV(learner, grid, n_candidates=2,
                                        random_state=0))
        search.set_params(cv=2, factor=2, min_resources=8,
                          scoring=get_task_scorer(name)).fit(tasks)
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.filterwarnings(  # optuna's own notices, not skmeta's
    "ignore:OptunaSearchCV is experimental",
    "ignore:`optuna.terminator` module has been deprecated:FutureWarning")
def test_optuna_search_with_a_task_scorer(episodes):
    try:
        from optuna_integration import OptunaSearchCV
    except ImportError:
        pytest.importorskip("optuna.integration.sklearn")
        from optuna.integration import OptunaSearchCV
    from optuna.distributions import FloatDistribution

    search = OptunaSearchCV(
        _protonet(), {"meta_lr": FloatDistribution(1e-3, 1e-2, log=True)},
        cv=2, n_trials=2, random_state=0, verbose=0,
        scoring=get_task_scorer("neg_log_loss")).fit(episodes)
    assert np.isfinite(search.best_score_) and search.best_score_ < 0
