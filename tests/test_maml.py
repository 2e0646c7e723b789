import copy
import pickle
import re

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import EarlyStopping

from skmeta import MAMLClassifier, MAMLRegressor, Task, TaskWise, adapt
from skmeta._nets import module_params
from skmeta.datasets import make_sinusoid_tasks
from skmeta.maml import MAMLAdaptedClassifier, MAMLAdaptedRegressor
from skmeta.maml import _core as maml_core
from skmeta.maml._core import FunctionalLearner, MAMLBatch, chunk_size, group_tasks
from skmeta.nn import MLP
from skmeta.protonet import PrototypeClassifier


def tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 1))


def tiny_regression_tasks():
    """Tasks of two support sizes, so a meta-batch holds two shape groups."""
    rng = np.random.default_rng(0)
    return [Task(rng.normal(size=(n, 2)), rng.normal(size=n),
                 rng.normal(size=(5, 2)), rng.normal(size=5)) for n in (3, 4, 3)]


def untrained_net(model, tasks):
    """The learner's core as ``fit`` would build it, initialised, untrained."""
    spec = model._net_spec(tasks)
    return spec.net(**module_params(spec.module, spec.data_kwargs, spec.routed),
                    **spec.params).initialize()


def meta_gradient(algorithm, tasks, model=None, **params):
    """The meta-gradient of the mean query loss over ``tasks``, from the core
    (of ``model``, by default a MAMLRegressor of :func:`tiny_net`)."""
    model = model or MAMLRegressor(tiny_net(), inner_lr=0.3)
    model.set_params(algorithm=algorithm, **params)
    tasks = model._check_tasks(tasks)
    net = untrained_net(model, tasks)
    net.batch_loss(net.collate(tasks), training=True)
    return [p.grad.clone() for p in net.module_.parameters()]


def ragged_tasks(classification, n_tasks=12, seed=0):
    """Tasks of 1-5 support and 2-7 query rows (each class in every support
    set when ``classification``: 3 classes)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_tasks):
        n_support, n_query = rng.integers(1, 6), rng.integers(2, 8)
        if classification:
            y_support = np.arange(3).repeat(n_support)
            y_query = rng.integers(0, 3, n_query)
        else:
            y_support, y_query = rng.normal(size=n_support), rng.normal(size=n_query)
        tasks.append(Task(rng.normal(size=(len(y_support), 2)), y_support,
                          rng.normal(size=(n_query, 2)), y_query))
    return tasks


def reference_meta_gradient(tasks, inner_lr=0.3, second_order=True):
    """One inner step, task by task, with the Hessian-vector product written
    out: d/dθ Lq(θ - α∇Ls(θ)) = gq - α H_s(θ) gq, with gq = ∇Lq at the adapted
    weights; first-order MAML keeps gq alone."""
    net = tiny_net()
    theta = list(net.parameters())
    total = [torch.zeros_like(p) for p in theta]

    def loss(weights, X, y):
        names = [name for name, _ in net.named_parameters()]
        out = torch.func.functional_call(net, dict(zip(names, weights, strict=True)),
                                         (torch.as_tensor(X, dtype=torch.float32),))
        return (out[:, 0] - torch.as_tensor(y, dtype=torch.float32)).square().mean()

    for task in tasks:
        g_support = torch.autograd.grad(loss(theta, task.X_support, task.y_support),
                                        theta, create_graph=True)
        adapted = [(p - inner_lr * g).detach().requires_grad_()
                   for p, g in zip(theta, g_support, strict=True)]
        g_query = torch.autograd.grad(loss(adapted, task.X_query, task.y_query),
                                      adapted)
        hvp = torch.autograd.grad(g_support, theta, grad_outputs=g_query)
        for t, gq, h in zip(total, g_query, hvp, strict=True):
            t += (gq - inner_lr * h * second_order) / len(tasks)
    return total


@pytest.fixture(scope="module")
def maml(train_tasks):
    return MAMLClassifier(inner_lr=0.5, meta_batch_size=16, max_epochs=2,
                          test_inner_steps=3, random_state=0).fit(train_tasks)


def test_second_order_meta_gradient_equals_hand_written_reference():
    tasks = tiny_regression_tasks()
    for ours, ref in zip(meta_gradient("maml", tasks), reference_meta_gradient(tasks),
                         strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_fomaml_is_maml_without_the_second_order_term():
    tasks = tiny_regression_tasks()
    first = meta_gradient("fomaml", tasks)
    for ours, ref in zip(first, reference_meta_gradient(tasks, second_order=False),
                         strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    second = meta_gradient("maml", tasks)
    assert any(not torch.allclose(a, b, atol=1e-4)
               for a, b in zip(first, second, strict=True))


def test_chunked_meta_batch_gives_the_same_meta_gradient():
    tasks = tiny_regression_tasks() * 3
    whole = meta_gradient("maml", tasks, inner_steps=2, chunk_size=100)
    for chunk, full in zip(meta_gradient("maml", tasks, inner_steps=2, chunk_size=2),
                           whole, strict=True):
        torch.testing.assert_close(chunk, full, rtol=1e-5, atol=1e-6)


def test_auto_chunks_bound_the_work_held_at_once(train_tasks):
    learner = FunctionalLearner(MLP(64, (128, 128), 5), 0.5)
    small = group_tasks(train_tasks[:32], classification=True)[0]
    large = group_tasks(train_tasks[:300], classification=True)[0]
    assert chunk_size("auto", learner, small, steps=1) == 32  # one chunk
    per_chunk = chunk_size("auto", learner, large, steps=5)
    assert 1 < per_chunk < 300
    assert chunk_size("auto", learner, large, steps=1) > per_chunk
    assert chunk_size(7, learner, large, steps=5) == 7


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil",
                                       "reptile"])
def test_every_algorithm_learns_unseen_digit_classes(algorithm, train_tasks,
                                                     test_tasks):
    model = MAMLClassifier(algorithm=algorithm, inner_lr=0.5, meta_batch_size=16,
                           max_epochs=2, inner_steps=2 if algorithm == "reptile"
                           else 1, random_state=0).fit(train_tasks)
    assert model.score(test_tasks) > 0.35  # chance is 0.2


def test_meta_sgd_learns_per_weight_rates_that_are_optimised_and_kept(tmp_path):
    tasks = make_sinusoid_tasks(200, random_state=0)
    model = MAMLRegressor(algorithm="metasgd", module__hidden_sizes=(16,),
                          inner_lr=0.01, meta_lr=1e-2, max_epochs=2,
                          random_state=0).fit(tasks)
    rates = model.net_.inner_rates_
    optimised = {id(p) for g in model.net_.optimizer_.param_groups
                 for p in g["params"]}
    assert all(id(rate) in optimised for rate in rates.parameters())
    learned = torch.cat([r.flatten() for r in model.inner_lr_.values()])
    assert learned.std() > 1e-3 and not torch.allclose(learned,
                                                       torch.tensor(0.01))
    adapted = model.adapt(tasks[0].X_support, tasks[0].y_support)
    assert adapted.inner_lr is model.inner_lr_
    joblib.dump(model, tmp_path / "metasgd.joblib")
    loaded = joblib.load(tmp_path / "metasgd.joblib")
    for a, b in zip(loaded.net_.inner_rates_.parameters(), rates.parameters(),
                    strict=True):
        assert torch.equal(a, b)


def test_anil_adapts_the_head_only(maml, train_tasks):
    model = clone(maml).set_params(algorithm="anil", max_epochs=1)
    model.fit(train_tasks[:32])
    assert model.adapted_ == ["head.weight", "head.bias"]
    task = train_tasks[0]
    adapted = model.adapt(task.X_support, task.y_support)
    assert set(adapted.weights_) == {"head.weight", "head.bias"}
    assert not torch.equal(adapted.weights_["head.weight"],
                           model.module_.head.weight)


def test_batchnorm_uses_each_tasks_own_batch_statistics(train_tasks, test_tasks):
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                 torch.nn.ReLU(), torch.nn.Linear(32, 5))
    model = MAMLClassifier(module, inner_lr=0.5, max_epochs=2,
                           random_state=0).fit(train_tasks)
    assert model.score(test_tasks) > 0.35
    assert dict(model.module_.named_buffers()) == {}  # no running statistics
    learner = FunctionalLearner(model.module_, 0.5)
    group = group_tasks(test_tasks[:2], classification=True)[0]
    with torch.enable_grad():
        fast = learner.adapt(group.X_support, group.y_support, 5, 1)
    with torch.no_grad():
        together = learner.forward(fast, group.X_query)
        alone = [learner.forward({k: v[i:i + 1] for k, v in fast.items()},
                                 group.X_query[i:i + 1])[0] for i in range(2)]
        # a constant shift of a task's inputs is removed by its own statistics
        shift = torch.tensor([[[0.0]], [[3.0]]])
        shifted = learner.forward(fast, group.X_query + shift)
    torch.testing.assert_close(together, torch.stack(alone))
    torch.testing.assert_close(shifted[1], together[1], rtol=1e-3, atol=1e-3)


def pretrained_baseline_mse(train, test, steps, inner_lr):
    """The MAML paper's baseline: one network trained on all tasks' data
    pooled, then fine-tuned on each test support set like MAML."""
    torch.manual_seed(0)
    net = MLP(1, (40, 40), 1)
    X = torch.as_tensor(np.concatenate([t.X_support for t in train]))
    y = torch.as_tensor(np.concatenate([t.y_support for t in train]),
                        dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(300):
        batch = torch.randint(len(X), (250,))
        optimizer.zero_grad()
        (net(X[batch])[:, 0] - y[batch]).square().mean().backward()
        optimizer.step()
    adapted = MAMLAdaptedRegressor(net.requires_grad_(False), inner_lr, steps)
    return query_mse(lambda t: adapted.fit(t.X_support, t.y_support), test)


def query_mse(adapt, tasks):
    return np.mean([np.mean((adapt(t).predict(t.X_query) - t.y_query) ** 2)
                    for t in tasks])


def test_maml_regressor_beats_the_pretrained_baseline_on_sinusoids():
    train = make_sinusoid_tasks(3000, random_state=0)
    test = make_sinusoid_tasks(100, random_state=1)
    model = MAMLRegressor(module__hidden_sizes=(40, 40), inner_lr=0.01,
                          meta_batch_size=25, meta_lr=3e-3, max_epochs=2,
                          test_inner_steps=10, standardize=False,
                          validation_fraction=None, random_state=0).fit(train)
    ours = query_mse(lambda t: model.adapt(t.X_support, t.y_support), test)
    baseline = pretrained_baseline_mse(train, test, 10, 0.01)
    print(f"sinusoid MSE after 10 steps: MAML {ours:.3f}, baseline {baseline:.3f}")
    assert ours < 0.6 * baseline
    error = sum(np.square(model.adapt(t.X_support, t.y_support).predict(t.X_query)
                          - t.y_query).sum() for t in test[:5])
    spread = sum(np.square(t.y_query - t.y_query.mean()).sum() for t in test[:5])
    assert model.score(test[:5]) == pytest.approx(1 - error / spread, rel=1e-5)


def test_default_regressor_halves_the_support_mean_error_on_sinusoids():
    """With default parameters (raw targets standardised, "auto" training
    budget), MAMLRegressor reaches at most half the query MSE of predicting
    each new task's support mean."""
    model = MAMLRegressor(random_state=0).fit(make_sinusoid_tasks(1000,
                                                                  random_state=0))
    test = make_sinusoid_tasks(100, random_state=1)
    ours = query_mse(lambda t: model.adapt(t.X_support, t.y_support), test)
    support_mean = np.mean([np.mean((t.y_query - t.y_support.mean()) ** 2)
                            for t in test])
    assert ours < 0.5 * support_mean


def test_raw_targets_give_the_standardised_model_in_user_units():
    """Targets in other units (x 1000, shifted) give the same predictions in
    those units: the learner standardises with the training tasks'
    statistics and maps back."""
    tasks = make_sinusoid_tasks(60, random_state=0)
    scaled = [Task(t.X_support * 100 + 7, t.y_support * 1000 - 5e4,
                   t.X_query * 100 + 7, t.y_query * 1000 - 5e4) for t in tasks]
    params = dict(module__hidden_sizes=(16,), max_epochs=2, random_state=0)
    plain = MAMLRegressor(**params).fit(tasks[:50])
    raw = MAMLRegressor(**params).fit(scaled[:50])
    for task, big in zip(tasks[50:], scaled[50:], strict=True):
        np.testing.assert_allclose(
            raw.adapt(big.X_support, big.y_support).predict(big.X_query),
            plain.adapt(task.X_support, task.y_support).predict(task.X_query)
            * 1000 - 5e4, rtol=1e-3, atol=0.5)


@pytest.mark.parametrize("estimator", [MAMLAdaptedClassifier, MAMLAdaptedRegressor])
def test_row_chunks_of_a_large_task_equal_one_pass(estimator, monkeypatch):
    """adapt's inner steps and predictions on a task of more rows than
    ROW_CHUNK go chunk by chunk (gradients summed): the same result."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = (np.arange(50) % 3 if estimator is MAMLAdaptedClassifier
         else rng.normal(size=50).astype(np.float32))
    torch.manual_seed(0)
    module = MLP(3, (8,), 3 if estimator is MAMLAdaptedClassifier else 1)
    whole = estimator(module, inner_lr=0.3, inner_steps=3).fit(X, y)
    monkeypatch.setattr(maml_core, "ROW_CHUNK", 7)
    chunked = estimator(module, inner_lr=0.3, inner_steps=3).fit(X, y)
    for name, weight in whole.weights_.items():
        torch.testing.assert_close(chunked.weights_[name], weight, rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(chunked.predict(X) if estimator is
                               MAMLAdaptedRegressor else chunked.predict_proba(X),
                               whole.predict(X) if estimator is MAMLAdaptedRegressor
                               else whole.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_batched_predict_and_score_equal_per_task_adapt(maml, test_tasks):
    tasks = [Task(t.X_support, t.y_support, t.X_query) for t in test_tasks[:6]]
    predictions = maml.predict(tasks)
    for task, prediction in zip(tasks, predictions, strict=True):
        np.testing.assert_array_equal(
            prediction, maml.adapt(task.X_support, task.y_support).predict(
                task.X_query))
    expected = np.mean([maml.adapt(t.X_support, t.y_support).score(
        t.X_query, t.y_query) for t in test_tasks[:6]])
    assert maml.score(test_tasks[:6]) == pytest.approx(expected)


def test_tasks_with_different_class_and_support_counts_in_one_meta_batch(digits):
    rng = np.random.default_rng(0)
    tasks = []
    for n_way, k_shot in [(2, 1), (3, 2), (5, 1), (4, 3)] * 10:
        classes = rng.choice(digits.train_classes, n_way, replace=False)
        rows = [rng.choice(np.flatnonzero(digits.target == c), k_shot + 3,
                           replace=False) for c in classes]
        support = np.concatenate([r[:k_shot] for r in rows])
        query = np.concatenate([r[k_shot:] for r in rows])
        label = np.array([f"glyph {c}" for c in digits.target])
        tasks.append(Task(digits.data[support], label[support],
                          digits.data[query], label[query]))
    model = MAMLClassifier(inner_lr=0.5, meta_batch_size=8, max_epochs=3,
                           random_state=0).fit(tasks)
    assert model.module_.head.out_features == 5
    assert model.score(tasks) > 0.5
    assert model.predict(tasks[:1])[0].dtype.kind == "U"
    with pytest.raises(ValueError, match=re.escape(
            "A task has 6 classes, but the module outputs 5 values per example")):
        model.adapt(digits.data[:6], np.arange(6))


def test_adapt_returns_standalone_classifier_and_leaves_model_alone(maml,
                                                                    test_tasks):
    task = test_tasks[0]
    before = [p.clone() for p in maml.module_.parameters()]
    names = np.array([f"c{c}" for c in task.y_support])
    clf = maml.adapt(task.X_support, names)
    assert isinstance(clf, MAMLAdaptedClassifier) and clf.inner_steps == 3
    proba = clf.predict_proba(task.X_query)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    refit = clone(clf).fit(task.X_support, names)
    np.testing.assert_allclose(refit.predict_proba(task.X_query), proba)
    for p, q in zip(maml.module_.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_pipeline_with_task_wise_scaling_fits_scores_and_adapts(train_tasks,
                                                               test_tasks):
    pipeline = make_pipeline(TaskWise(StandardScaler()),
                             MAMLClassifier(inner_lr=0.5, max_epochs=1,
                                            random_state=0)).fit(train_tasks)
    assert pipeline.score(test_tasks) > 0.3
    task = test_tasks[0]
    assert adapt(pipeline, task.X_support, task.y_support).predict(
        task.X_query).shape == (len(task.X_query),)


def test_same_random_state_gives_identical_models(train_tasks):
    def weights(seed):
        model = MAMLClassifier(max_epochs=1, random_state=seed).fit(train_tasks[:32])
        return torch.cat([p.flatten() for p in model.module_.parameters()])
    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_grid_search_over_task_lists(train_tasks):
    grid = GridSearchCV(MAMLClassifier(max_epochs=1, random_state=0),
                        {"inner_lr": [1e-4, 0.5]}, cv=3).fit(list(train_tasks[:90]))
    assert grid.best_params_ == {"inner_lr": 0.5}
    assert grid.best_estimator_.inner_lr_ == 0.5


def test_joblib_round_trip_gives_identical_predictions(maml, test_tasks, tmp_path):
    joblib.dump(maml, tmp_path / "maml.joblib")
    loaded = joblib.load(tmp_path / "maml.joblib")
    for ours, theirs in zip(loaded.predict(test_tasks[:3]),
                            maml.predict(test_tasks[:3]), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    adapted = maml.adapt(test_tasks[0].X_support, test_tasks[0].y_support)
    joblib.dump(adapted, tmp_path / "adapted.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "adapted.joblib").predict_proba(
            test_tasks[0].X_query), adapted.predict_proba(test_tasks[0].X_query))


def test_meta_validation_tasks_feed_early_stopping(train_tasks):
    model = MAMLClassifier(
        inner_lr=0.5, max_epochs=30, validation_fraction=0.25, random_state=0,
        callbacks=[EarlyStopping(patience=1, threshold=0.5)]).fit(train_tasks[:64])
    assert len(model.history_) < 30
    assert {"valid_loss", "valid_acc"} <= set(model.history_[-1])
    assert model.history_[-1, "valid_acc"] > 0.2  # adapted at validation too


def test_diverging_adaptation_raises_instead_of_predicting_nan(maml, test_tasks):
    task = test_tasks[0]
    diverging = maml.adapt(task.X_support, task.y_support).set_params(
        inner_lr=1e30, inner_steps=3)
    with pytest.raises(FloatingPointError, match=re.escape(
            "Task 0: adaptation diverged (non-finite weights or support loss) "
            "within 3 gradient steps with inner_lr=1e+30; use a smaller inner_lr")):
        diverging.fit(task.X_support, task.y_support)
    model = copy.deepcopy(maml)
    model.inner_lr_ = 1e30  # as if meta-training had learned a huge rate
    with pytest.raises(FloatingPointError, match=r"Task \d+: adaptation diverged"):
        model.predict(test_tasks[:3])


def test_maml_on_digits_is_compared_with_raw_centroid(maml, test_tasks):
    """The honest headline (full numbers in benchmarks/): a short MAML run
    learns, but raw-pixel nearest centroid is hard to beat on digits."""
    centroid = np.mean([PrototypeClassifier().fit(t.X_support, t.y_support)
                        .score(t.X_query, t.y_query) for t in test_tasks])
    assert 0.35 < maml.score(test_tasks) < centroid + 0.1


# ---------------------------------------------------------------------------
# speed paths: each equals the general one


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil"])
def test_single_task_fast_path_equals_the_batched_adaptation(algorithm, train_tasks,
                                                              test_tasks):
    model = MAMLClassifier(algorithm=algorithm, inner_lr=0.5, max_epochs=1,
                           test_inner_steps=3, random_state=0).fit(train_tasks[:32])
    task = test_tasks[0]
    clf = model.adapt(task.X_support, task.y_support)
    learner = FunctionalLearner(model.module_, model.inner_lr_, model.adapted_)
    group = group_tasks(model._scaled([task], model.scaler_), True)[0]
    with torch.enable_grad():
        batched = learner.adapt(group.X_support, group.y_support, group.n_way, 3,
                                track=False)
    assert set(clf.weights_) == set(batched)
    for name, weights in clf.weights_.items():
        torch.testing.assert_close(weights, batched[name][0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        outputs = learner.forward(batched, group.X_query)[0]
    expected = torch.softmax(outputs.double(), -1).numpy()
    np.testing.assert_allclose(clf.predict_proba(task.X_query), expected, atol=1e-5)
    # lists take scikit-learn's full validation: the same result
    slow = model.adapt(task.X_support.tolist(), task.y_support.tolist())
    np.testing.assert_allclose(slow.predict_proba(task.X_query.tolist()),
                               clf.predict_proba(task.X_query), atol=1e-6)


def test_fast_validation_leaves_errors_to_the_full_one(maml, test_tasks):
    task = test_tasks[0]
    bad = task.X_support.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        maml.adapt(bad, task.y_support)
    with pytest.raises(ValueError, match="one class"):
        maml.adapt(task.X_support, np.zeros(len(task.y_support), dtype=int))
    clf = maml.adapt(task.X_support, task.y_support)
    with pytest.raises(ValueError, match="features"):
        clf.predict(task.X_query[:, :3])
    regressor = MAMLRegressor(tiny_net(), inner_lr=0.1, max_epochs=1,
                              random_state=0).fit(tiny_regression_tasks())
    X, y = np.ones((3, 2)), np.array([1.0, 2.0, 1e39])
    with pytest.raises(ValueError, match="overflow float32"):
        regressor.adapt(X, y)
    fast = regressor.adapt(X, y[:2].repeat(2)[:3]).predict(X)
    slow = regressor.adapt(X.tolist(), y[:2].repeat(2)[:3].tolist()).predict(X.tolist())
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


def test_linear_plan_equals_functional_call():
    from skmeta.maml._plan import linear_plan
    X = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    for module in (MLP(5, (7, 3), 2), MLP(5, (4,)),
                   torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(),
                                       torch.nn.Linear(3, 2, bias=False))):
        learner = FunctionalLearner(module, 0.1)
        assert learner._plan is not None
        weights = {k: w + 0.01 for k, w in learner.init.items()}
        expected = torch.func.functional_call(module, weights, (X,))
        torch.testing.assert_close(learner._call(weights, X), expected)
    odd = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Dropout(),
                              torch.nn.Linear(3, 2))
    assert linear_plan(odd) is None


def test_predict_adapts_all_tasks_batched_not_one_by_one(maml, test_tasks,
                                                         monkeypatch):
    expected = [maml.adapt(t.X_support, t.y_support).predict(t.X_query)
                for t in test_tasks[:4]]

    def refuse(*args):
        raise AssertionError("predict adapted a task on its own")

    monkeypatch.setattr(maml, "_adapt", refuse)
    for ours, theirs in zip(maml.predict(test_tasks[:4]), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_chunk_plan_is_probed_once_per_task_shape_and_changes_nothing(monkeypatch):
    from skmeta.maml import _core
    probes = []
    probe = _core._activations_per_row
    monkeypatch.setattr(_core, "_activations_per_row",
                        lambda *args: probes.append(1) or probe(*args))
    tasks = tiny_regression_tasks() * 2
    model = MAMLRegressor(tiny_net(), inner_lr=0.3, inner_steps=2)
    tasks = model._check_tasks(tasks)
    net = untrained_net(model, tasks)
    gradients = []
    for _ in range(3):  # three meta-batches of the same two shapes
        net.module_.zero_grad()
        net.batch_loss(net.collate(tasks), training=True)
        gradients.append([p.grad.clone() for p in net.module_.parameters()])
    assert len(probes) == len(net.collate(tasks).groups)  # not one per meta-batch
    net._chunk_plans.clear()
    net.module_.zero_grad()
    net.batch_loss(net.collate(tasks), training=True)
    for cached, fresh in zip(gradients[-1], net.module_.parameters(), strict=True):
        torch.testing.assert_close(cached, fresh.grad)


def test_divergence_check_sees_non_finite_weights_and_overflowing_sums():
    from skmeta.maml._guard import divergence
    ones = torch.ones(3)
    fast = {"w": torch.ones(3, 2, 2), "b": torch.ones(3, 2)}
    fast["b"][2, 1] = float("-inf")
    assert divergence(fast, ones, ones) == (2, "non-finite weights or support loss")
    fast["w"][1, 0, 1] = float("nan")
    assert divergence(fast, ones, ones)[0] == 1
    assert divergence(fast, torch.tensor([1.0, float("nan"), 1.0]), ones)[0] == 2
    huge = {"w": torch.full((2, 4), 3e38)}  # finite weights whose sum overflows
    assert divergence(huge, torch.ones(2), torch.ones(2)) is None
    runaway = divergence(huge, torch.ones(2), torch.tensor([1.0, 2e3]))
    assert runaway == (1, "the support loss rose from 1 before the steps to "
                          "2e+03 after them")


@pytest.mark.parametrize("classification", [False, True])
@pytest.mark.parametrize("algorithm", maml_core.ALGORITHMS)
def test_padded_ragged_tasks_give_the_exact_shape_meta_gradient(
        algorithm, classification, monkeypatch):
    tasks = ragged_tasks(classification)
    model = (MAMLClassifier(tiny_net_classifier(), inner_lr=0.3) if classification
             else None)
    padded = meta_gradient(algorithm, tasks, model, inner_steps=2)
    monkeypatch.setattr(maml_core, "rows_independent", lambda module: False)
    exact = meta_gradient(algorithm, tasks, model, inner_steps=2)  # shape groups
    for ours, theirs in zip(padded, exact, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def tiny_net_classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 3))


@pytest.mark.parametrize("classification", [False, True])
def test_padded_loss_and_accuracy_count_real_rows_only(classification):
    tasks = ragged_tasks(classification)
    model = (MAMLClassifier(tiny_net_classifier()) if classification
             else MAMLRegressor(tiny_net()))
    tasks = model._check_tasks(tasks)
    net = untrained_net(model, tasks)
    padded = net.collate(tasks)
    assert len(padded.groups) < len({(len(t.X_support), len(t.X_query))
                                     for t in tasks})
    exact = MAMLBatch(group_tasks(tasks, classification, pad=False))
    (loss, accuracy), (exact_loss, exact_accuracy) = (
        net.batch_loss(batch, training=False) for batch in (padded, exact))
    assert loss.item() == pytest.approx(exact_loss.item(), rel=1e-5)
    assert accuracy == exact_accuracy  # None for regression


@pytest.mark.parametrize("estimator", [MAMLClassifier, MAMLRegressor])
def test_batched_predict_of_ragged_tasks_equals_per_task_adapt(estimator):
    tasks = ragged_tasks(estimator is MAMLClassifier, n_tasks=20)
    model = estimator(tiny_net_classifier() if estimator is MAMLClassifier
                      else tiny_net(), inner_lr=0.3, test_inner_steps=2,
                      max_epochs=2, random_state=0).fit(tasks)
    for task, prediction in zip(tasks, model.predict(tasks), strict=True):
        expected = model.adapt(task.X_support, task.y_support).predict(task.X_query)
        assert prediction.shape == (len(task.X_query),)
        np.testing.assert_allclose(prediction, expected, rtol=1e-5, atol=1e-6)


def test_size_buckets_bound_the_padding():
    def shapes(sizes, pad=True):
        rows = [(i, None, np.zeros(s), None, np.zeros(q), None)
                for i, (s, q) in enumerate(sizes)]
        return [sorted((len(r[2]), len(r[4])) for r in bucket)
                for bucket in maml_core._buckets(rows, pad)]

    uniform = shapes([(5, 10)] * 4)
    assert uniform == [[(5, 10)] * 4]
    rng = np.random.default_rng(0)
    spread = list(zip(rng.integers(2, 5, 50), rng.integers(4, 12, 50), strict=True))
    assert len(shapes(spread)) == 1  # the usual spread shares one vmap
    lopsided = shapes([(1000, 1000)] + [(5, 5)] * 15)
    assert lopsided == [[(1000, 1000)], [(5, 5)] * 15]  # no 100-fold padding
    for bucket in shapes(spread + [(40, 60)] * 3):
        padded = len(bucket) * (max(s for s, _ in bucket) + max(q for _, q in bucket))
        assert padded <= maml_core._MAX_PADDING * sum(s + q for s, q in bucket)
        assert all(padded <= maml_core._MAX_TASK_PADDING * (s + q) * len(bucket)
                   for s, q in bucket)
    exact = shapes(spread, pad=False)
    assert all(len(set(bucket)) == 1 for bucket in exact)
    assert len(exact) == len(set(spread))


def test_batchnorm_modules_group_tasks_by_exact_shape():
    bn = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4),
                             torch.nn.Linear(4, 1))
    assert not maml_core.rows_independent(bn)
    assert maml_core.rows_independent(tiny_net())
    tasks = ragged_tasks(classification=False)
    model = MAMLRegressor(bn)
    net = untrained_net(model, model._check_tasks(tasks))
    groups = net.collate(model._check_tasks(tasks)).groups
    assert len(groups) == len({(len(t.X_support), len(t.X_query)) for t in tasks})
    assert all(g.support_mask is None and g.query_mask is None for g in groups)


def written_out_cases():
    """(module, adapted names, classification, n_way) for the written-out
    inner gradient: every activation, a bias-free layer, ANIL's head only,
    fewer classes than outputs."""
    torch.manual_seed(0)

    def sequential(outputs):
        return torch.nn.Sequential(
            torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5, bias=False),
            torch.nn.Sigmoid(), torch.nn.Linear(5, outputs))

    return [(MLP(3, (8, 8), 4), None, True, 4),
            (MLP(3, (8, 8), 4), None, True, 2),
            (MLP(3, (8,), 1), None, False, 0),
            (sequential(4), None, True, 3),
            (sequential(4), ["4.weight", "4.bias"], True, 4),
            (sequential(1), ["2.weight", "4.bias"], False, 0)]


@pytest.mark.parametrize("case", range(len(written_out_cases())))
@pytest.mark.parametrize("masked", [False, True])
def test_written_out_inner_gradient_equals_autograd(case, masked):
    module, adapted, classification, n_way = written_out_cases()[case]
    learner = FunctionalLearner(module, 0.1, adapted, classification)
    assert learner._plan is not None
    generator = torch.Generator().manual_seed(case)
    X = torch.randn(7, 3, generator=generator)
    y = (torch.randint(0, max(n_way, 1), (7,), generator=generator)
         if classification else torch.randn(7, generator=generator))
    mask = torch.tensor([1.0, 1, 0, 1, 1, 0, 1]) if masked else None
    weights = {name: w.detach() + 0.05 for name, w in learner.init.items()}
    ours = learner._inner_gradient()(weights, X, y, n_way, mask)
    theirs = torch.func.grad_and_value(learner._task_loss)(weights, X, y, n_way, mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("classification", [False, True])
@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil"])
def test_written_out_path_equals_autograds_meta_gradient(algorithm, classification,
                                                         monkeypatch):
    tasks = ragged_tasks(classification)
    model = (MAMLClassifier(tiny_net_classifier(), inner_lr=0.3) if classification
             else None)
    ours = meta_gradient(algorithm, tasks, model, inner_steps=3)
    monkeypatch.setattr(FunctionalLearner, "_inner_gradient",
                        lambda self: torch.func.grad_and_value(self._task_loss))
    theirs = meta_gradient(algorithm, tasks, model, inner_steps=3)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_net_saved_by_an_earlier_version_loads_and_trains():
    from skmeta.maml._estimators import _GuardedMAMLNet
    tasks = tiny_regression_tasks() * 4
    model = MAMLRegressor(tiny_net(), inner_lr=0.3, max_epochs=1,
                          random_state=0).fit(tasks)
    # as pickled before: the net's former class, no cached functional learner
    model.net_.__class__ = _GuardedMAMLNet
    del vars(model.net_)["_functional"]
    loaded = pickle.loads(pickle.dumps(model))
    assert type(loaded.net_) is _GuardedMAMLNet
    np.testing.assert_array_equal(np.concatenate(loaded.predict(tasks)),
                                  np.concatenate(model.predict(tasks)))
    loaded.partial_fit(tasks)
    assert len(loaded.history_) == 2


def test_a_failed_refit_leaves_the_adapted_estimator_as_it_was():
    X, y = np.random.default_rng(0).normal(size=(2, 6, 2))
    head = ["2.weight", "2.bias"]  # ANIL-like: the body stays the module's
    reg = MAMLAdaptedRegressor(tiny_net(), inner_lr=0.1, adapted=head).fit(X, y[:, 0])
    before = reg.predict(X)
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 1))
    with pytest.raises(FloatingPointError, match="adaptation diverged"):
        reg.set_params(module=other, inner_lr=1e30, inner_steps=3).fit(X, y[:, 0])
    np.testing.assert_array_equal(reg.predict(X), before)
