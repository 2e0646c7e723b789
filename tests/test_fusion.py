import itertools
import re

import joblib
import numpy as np
import pytest
import torch
from joblib.parallel import ThreadingBackend
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from skmeta import MetaFusionClassifier, Task
from skmeta._pooled import PooledNet
from skmeta.fusion import TorchMLPClassifier, WeightedFusionClassifier


def rule_task(direction, n, rng, labels=(0, 1)):
    """A task whose label is the side of a hyperplane through 0 along
    ``direction``: tasks with different directions conflict."""
    X = rng.normal(size=(n, len(direction)))
    y = np.asarray(labels)[(X @ direction > 0).astype(int)]
    half = n // 2
    return Task(X[:half], y[:half], X[half:], y[half:])


@pytest.fixture(scope="module")
def rule_tasks():
    """Six conflicting training tasks, and a new task drawn from task 3's rule."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(6, 5))
    train = [rule_task(d, 80, rng) for d in directions]
    return train, rule_task(directions[3], 400, rng)


@pytest.fixture(scope="module")
def rule_fusion(rule_tasks):
    return MetaFusionClassifier(LogisticRegression(), random_state=0).fit(
        rule_tasks[0])


def test_weight_of_identical_training_task_dominates(rule_fusion, rule_tasks):
    new = rule_tasks[1]
    clf = rule_fusion.adapt(new.X_support[:10], new.y_support[:10])
    assert clf.model_names_.tolist() == ["global"] + [f"task {i}" for i in range(6)]
    assert clf.weights_.min() >= 0 and clf.weights_.sum() == pytest.approx(1)
    assert clf.model_names_[clf.weights_.argmax()] == "task 3"
    assert clf.weights_[4] > 0.6  # task 3 comes after the global model
    fused = clf.score(new.X_query, new.y_query)
    assert fused > 0.9
    assert fused > rule_fusion.estimators_[0][1].score(new.X_query, new.y_query) + 0.2


def test_prior_strength_pulls_weights_toward_uniform(rule_fusion, rule_tasks):
    new = rule_tasks[1]
    two = [np.flatnonzero(new.y_support == c)[0] for c in (0, 1)]

    def entropy(prior_strength):
        w = clone(rule_fusion).set_params(prior_strength=prior_strength).fit(
            rule_tasks[0]).adapt(new.X_support[two], new.y_support[two]).weights_
        return -(w * np.log(w + 1e-300)).sum()

    entropies = [entropy(s) for s in (0.0, 1.0, 100.0)]
    assert entropies[0] < entropies[1] < entropies[2]
    assert entropies[2] > 0.99 * np.log(7)  # 7 models: close to uniform


class Fixed(ClassifierMixin, BaseEstimator):
    """A prefitted classifier with given classes and constant probabilities
    (for any number of features)."""

    def __init__(self, proba):
        self.proba = proba

    def fit(self, X=None, y=None):
        self.classes_ = np.array(sorted(self.proba))
        return self

    def predict_proba(self, X):
        row = [self.proba[c] for c in self.classes_]
        return np.tile(row, (len(X), 1))


def test_classes_a_model_never_saw_get_zero_probability_from_it():
    models = [("ab", FrozenEstimator(Fixed({"a": 0.5, "b": 0.5}).fit())),
              ("abc", FrozenEstimator(Fixed({"a": 0.2, "b": 0.2, "c": 0.6}).fit())),
              ("xy", FrozenEstimator(Fixed({"x": 0.5, "y": 0.5}).fit()))]
    X, y = np.zeros((6, 2)), ["a", "a", "a", "c", "c", "c"]
    clf = WeightedFusionClassifier(models, prior_strength=0).fit(X, y)
    # "ab" knows a only among {a, c}: all its mass goes to a, none to c;
    # "abc" is renormalised over {a, c}; "xy" knows neither.
    np.testing.assert_allclose(clf._task_probas(X[:1])[:, 0],
                               [[1, 0], [0.25, 0.75], [0, 0]])
    # the log-likelihood 3 log(w + 0.25 (1 - w)) + 3 log(0.75 (1 - w)) of
    # w = weight("ab") peaks at w = 1/3
    np.testing.assert_allclose(clf.weights_, [1 / 3, 2 / 3, 0], atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(X[:1]), [[0.5, 0.5]], atol=1e-5)


def test_examples_no_model_gives_mass_keep_weights_finite_and_proba_uniform():
    zero = FrozenEstimator(Fixed({"a": 0.0, "b": 0.0, "z": 1.0}).fit())
    clf = WeightedFusionClassifier([("zero", zero)]).fit(np.zeros((2, 1)),
                                                         ["a", "b"])
    np.testing.assert_array_equal(clf.weights_, [1.0])
    np.testing.assert_array_equal(clf.predict_proba(np.zeros((1, 1))), [[0.5, 0.5]])


def test_weighted_fusion_rejects_classes_no_model_has_seen(rule_fusion, rule_tasks):
    new = rule_tasks[1]
    y = np.where(new.y_support == 1, 7, 0)
    with pytest.raises(ValueError, match=re.escape(
            "Classes [7] of the support set were never seen by any of the 7 models "
            "(they know [0, 1]), so weighting their probabilities cannot predict "
            "them; use fusion='stacking' for tasks with new classes.")):
        rule_fusion.adapt(new.X_support, y)


def test_stacking_learns_classes_never_seen_in_training(digits, train_tasks,
                                                        test_tasks):
    model = MetaFusionClassifier(
        LogisticRegression(max_iter=300), "stacking", max_local_models=5,
        random_state=0).fit(train_tasks[:100])
    assert np.intersect1d(digits.train_classes, digits.test_classes).size == 0
    assert model.score(test_tasks[:30]) > 0.6  # 5-way 1-shot: chance is 0.2
    task = test_tasks[0]
    names = np.array([f"new {c}" for c in task.y_support])
    clf = model.adapt(task.X_support, names)
    assert set(clf.predict(task.X_query)) <= set(names)
    assert clf.predict_proba(task.X_query).shape == (len(task.X_query), 5)


def test_default_torch_base_model_and_tree_ensemble_fuse(rule_tasks):
    train, new = rule_tasks
    for base in [None, RandomForestClassifier(n_estimators=20)]:
        model = MetaFusionClassifier(base, random_state=0).fit(train)
        # 40 examples: a small forest's probabilities are coarse
        clf = model.adapt(new.X_support[:40], new.y_support[:40])
        assert clf.model_names_[clf.weights_.argmax()] == "task 3"
        assert clf.score(new.X_query, new.y_query) > 0.8
    assert isinstance(model.estimators_[1][1], RandomForestClassifier)


def test_torch_mlp_classifier_is_reproducible_and_keeps_user_labels(rule_tasks):
    task = rule_tasks[1]
    y = np.where(task.y_support == 1, "yes", "no")
    first, second, other = (TorchMLPClassifier(random_state=s).fit(task.X_support, y)
                            for s in (0, 0, 1))
    assert first.classes_.tolist() == ["no", "yes"]
    np.testing.assert_array_equal(first.predict_proba(task.X_query),
                                  second.predict_proba(task.X_query))
    assert not np.array_equal(first.predict_proba(task.X_query),
                              other.predict_proba(task.X_query))
    assert first.score(task.X_query, np.where(task.y_query == 1, "yes", "no")) > 0.9
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    TorchMLPClassifier(max_epochs=1, random_state=0).fit(task.X_support, y)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fusion_of_torch_models_trained_on_cuda(rule_tasks, tmp_path):
    train, new = rule_tasks
    model = MetaFusionClassifier(TorchMLPClassifier(device="cuda"),
                                 random_state=0).fit(train)
    clf = model.adapt(new.X_support[:40], new.y_support[:40])
    assert clf.model_names_[clf.weights_.argmax()] == "task 3"
    joblib.dump(clf, tmp_path / "adapted.joblib")
    np.testing.assert_allclose(
        joblib.load(tmp_path / "adapted.joblib").predict_proba(new.X_query),
        clf.predict_proba(new.X_query))


def test_max_local_models_clusters_tasks_by_their_inputs():
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(3, 4))
    tasks = []
    for i in range(12):  # tasks i, i+3, i+6, i+9 share a site shift and rule
        task = rule_task(directions[i % 3], 40, rng)
        shift = 5.0 * (i % 3)
        tasks.append(Task(task.X_support + shift, task.y_support,
                          task.X_query + shift, task.y_query))
    model = MetaFusionClassifier(LogisticRegression(), max_local_models=3,
                                 random_state=0).fit(tasks)
    assert [name for name, _ in model.estimators_] == [
        "global", "cluster 0", "cluster 1", "cluster 2"]
    assert sorted(g.tolist() for g in model.task_groups_) == [
        [0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    alone = MetaFusionClassifier(LogisticRegression(), global_model=False).fit(tasks)
    assert [name for name, _ in alone.estimators_][:2] == ["task 0", "task 1"]
    assert len(alone.estimators_) == 12


class CountingBackend(ThreadingBackend):
    """A joblib backend that counts the tasks it is given."""

    calls = 0

    def submit(self, func, callback=None):
        type(self).calls += len(func)
        return super().submit(func, callback)


def test_task_executors_run_through_the_active_joblib_backend(rule_tasks):
    train, new = rule_tasks
    joblib.register_parallel_backend("counting", CountingBackend)
    sequential = MetaFusionClassifier(LogisticRegression(), n_jobs=1,
                                      random_state=0).fit(train)
    with joblib.parallel_backend("counting", n_jobs=2):
        counted = MetaFusionClassifier(LogisticRegression(), random_state=0).fit(train)
    assert CountingBackend.calls == 7  # 6 local models and the global one
    processes = MetaFusionClassifier(LogisticRegression(), n_jobs=2,
                                     random_state=0).fit(train)
    for model in (counted, processes):
        np.testing.assert_array_equal(
            model.adapt(new.X_support, new.y_support).predict_proba(new.X_query),
            sequential.adapt(new.X_support, new.y_support).predict_proba(new.X_query))


def test_grid_search_over_task_lists(rule_tasks):
    train, _ = rule_tasks
    tasks = train * 2
    grid = GridSearchCV(MetaFusionClassifier(LogisticRegression(), random_state=0),
                        {"estimator__C": [1e-4, 1.0],
                         "fusion": ["weighted", "stacking"]}, cv=3).fit(tasks)
    assert grid.best_params_["estimator__C"] == 1.0
    assert grid.best_score_ > 0.85
    assert len(grid.best_estimator_.estimators_) == len(tasks) + 1


def test_joblib_round_trip_gives_identical_predictions(rule_tasks, tmp_path):
    train, new = rule_tasks
    for fusion in ("weighted", "stacking"):
        model = MetaFusionClassifier(fusion=fusion, random_state=0).fit(train[:3])
        joblib.dump(model, tmp_path / "model.joblib")
        loaded = joblib.load(tmp_path / "model.joblib")
        adapted = model.adapt(new.X_support, new.y_support)
        expected = adapted.predict_proba(new.X_query)
        np.testing.assert_array_equal(
            loaded.adapt(new.X_support, new.y_support).predict_proba(new.X_query),
            expected)
        joblib.dump(adapted, tmp_path / "adapted.joblib")
        np.testing.assert_array_equal(
            joblib.load(tmp_path / "adapted.joblib").predict_proba(new.X_query),
            expected)


def test_adapted_estimator_refits_from_the_meta_trained_models(rule_fusion,
                                                               rule_tasks):
    new = rule_tasks[1]
    clf = rule_fusion.adapt(new.X_support, new.y_support)
    refit = clone(clf).fit(new.X_support, new.y_support)
    np.testing.assert_array_equal(refit.weights_, clf.weights_)
    assert refit.estimators[1][1].estimator is rule_fusion.estimators_[1][1]


def test_inconsistent_feature_counts_and_bad_params_raise_clear_errors(
        rule_fusion, rule_tasks):
    train, new = rule_tasks
    narrow = Task(new.X_support[:, :3], new.y_support, new.X_query[:, :3],
                  new.y_query)
    with pytest.raises(ValueError, match=re.escape(
            "Task 2: X has 3 features, but task 0 has 5; all tasks must have the "
            "same features.")):
        MetaFusionClassifier(LogisticRegression()).fit([*train[:2], narrow])
    with pytest.raises(ValueError, match=re.escape(
            "X_support has 3 features, but MetaFusionClassifier was meta-trained "
            "on tasks with 5.")):
        MetaFusionClassifier(LogisticRegression()).fit(train).adapt(
            narrow.X_support, narrow.y_support)
    with pytest.raises(ValueError, match=re.escape(
            "The 'fusion' parameter of MetaFusionClassifier must be a str among")):
        MetaFusionClassifier(fusion="mean").fit(train)
    with pytest.raises(ValueError, match=re.escape(
            "The 'prior_strength' parameter of WeightedFusionClassifier must be a "
            "float in the range [0.0, inf). Got 'high' instead.")):
        WeightedFusionClassifier(rule_fusion.estimators_, "high").fit(
            new.X_support, new.y_support)


class InterruptedFromFit(ClassifierMixin, BaseEstimator):
    """Logistic regression whose fits raise KeyboardInterrupt from the
    ``after + 1``-th on, counted over all clones since ``reset``."""

    fits = 0

    def __init__(self, after=3, random_state=None):
        self.after = after
        self.random_state = random_state

    @classmethod
    def reset(cls):
        cls.fits = 0

    def fit(self, X, y):
        type(self).fits += 1
        if type(self).fits > self.after:
            raise KeyboardInterrupt
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def test_keyboard_interrupt_keeps_the_models_fitted_so_far(rule_tasks):
    train = rule_tasks[0]
    model = MetaFusionClassifier(InterruptedFromFit(after=3), random_state=0)
    InterruptedFromFit.reset()
    with pytest.warns(UserWarning, match="^Fitting was interrupted; fusing the 3 "
                      "of 7 models fitted so far.$"):
        model.fit(train)
    assert [name for name, _ in model.estimators_] == ["global", "task 0", "task 1"]
    assert [g.tolist() for g in model.task_groups_] == [[0], [1]]
    assert model.score(train[:2]) > 0.8  # the kept local models know their rules
    InterruptedFromFit.reset()
    with pytest.raises(KeyboardInterrupt):  # nothing fitted: nothing to keep
        MetaFusionClassifier(InterruptedFromFit(after=0)).fit(train)


def test_default_base_model_passes_an_interrupt_on(rule_tasks, monkeypatch):
    """skorch would end one model's training early and go on with the next;
    the interrupt stops the whole fit instead."""
    steps = itertools.count()
    train_step = PooledNet.train_step

    def interrupted_at_step_18(net, batch, **kwargs):
        # The global model takes 2 epochs x 8 batches of 64 of the 480 pooled
        # examples; step 18 is task 0's second.
        if next(steps) == 17:
            raise KeyboardInterrupt
        return train_step(net, batch, **kwargs)

    monkeypatch.setattr(PooledNet, "train_step", interrupted_at_step_18)
    model = MetaFusionClassifier(TorchMLPClassifier(max_epochs=2), random_state=0)
    with pytest.warns(UserWarning, match="fusing the 1 of 7 models"):
        model.fit(rule_tasks[0])
    assert [name for name, _ in model.estimators_] == ["global"]
    assert len(model.estimators_[0][1].net_.history) == 2
