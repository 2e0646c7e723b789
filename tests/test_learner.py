"""The torch learners' base directly: the batch sampler, shares, parameter
routing, partial_fit, shuffle and the regressors' pooled score."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback

from skmeta import MAMLRegressor, MetaFusionClassifier, ProtoNetClassifier
from skmeta._nets import BatchSampler, Share, module_params
from skmeta.base import MetaRegressorMixin
from skmeta.datasets import make_sinusoid_tasks
from skmeta.nn import MLP
from skmeta.protonet import ProtoNetNet
from skmeta.tasks import Task


def batches(sampler, rank, world_size):
    sampler.rank, sampler.world_size = rank, world_size
    return list(sampler)


@pytest.mark.parametrize(("n_items", "batch_size", "world_size"),
                         [(10, 4, 1), (10, 4, 2), (5, 4, 2), (2, 2, 3), (7, 1, 2)])
def test_shares_of_every_batch_partition_it(n_items, batch_size, world_size):
    sampler = BatchSampler(n_items, batch_size, seed=3, epoch=lambda: 1)
    per_rank = [batches(sampler, r, world_size) for r in range(world_size)]
    assert {len(b) for b in per_rank} == {len(sampler)}  # same number of batches
    for step in range(len(sampler)):
        shares = [per_rank[r][step] for r in range(world_size)]
        totals = {total for _, total in shares}
        assert len(totals) == 1  # every process knows the whole batch's size
        items = sorted(i for indices, _ in shares for i in indices)
        assert len(items) == totals.pop() and len(set(items)) == len(items)
    every = sorted(i for indices, _ in batches(sampler, 0, 1) for i in indices)
    assert every == list(range(n_items))


def test_order_is_seeded_by_seed_and_epoch_or_kept():
    def order(seed, epoch, shuffle=True):
        sampler = BatchSampler(8, 3, seed=seed, epoch=lambda: epoch, shuffle=shuffle)
        return [i for indices, _ in sampler for i in indices]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    assert order(0, 1, shuffle=False) == list(range(8))
    evaluation = BatchSampler(8, 3, epoch=None)
    assert [i for indices, _ in evaluation for i in indices] == list(range(8))


def test_a_share_weighs_as_its_whole_batch():
    assert len(Share(batch=None, n_items=0, n_total=4)) == 4


def test_module_params_route_and_copy():
    params = module_params(MLP, {"in_features": 3, "not_an_argument": 1},
                           {"hidden_sizes": (4,)})
    assert params == {"module": MLP, "module__in_features": 3,
                      "module__hidden_sizes": (4,)}
    instance = MLP(3, (4,))
    copied = module_params(instance, {"in_features": 5}, {})["module"]
    assert copied is not instance
    assert all(torch.equal(a, b) for a, b in zip(copied.parameters(),
                                                 instance.parameters(), strict=True))


def test_routed_parameters_behave_like_parameters():
    model = ProtoNetClassifier(module__hidden_sizes=(8,))
    assert model.get_params()["module__hidden_sizes"] == (8,)
    assert clone(model).module__hidden_sizes == (8,)
    assert model.set_params(module__hidden_sizes=(4,)).module__hidden_sizes == (4,)
    with pytest.raises(TypeError, match="routed parameters must start with one of "
                       "module__"):
        ProtoNetClassifier(hidden_sizes=(8,))


def test_partial_fit_trains_one_more_pass_keeping_the_optimiser(train_tasks):
    tasks = list(train_tasks[:16])
    model = ProtoNetClassifier(module__hidden_sizes=(8,), meta_batch_size=4,
                               max_epochs=5, random_state=0)
    model.partial_fit(tasks)
    assert len(model.history_) == 1 and model.max_epochs == 5
    steps = float(model.net_.optimizer_.state_dict()["state"][0]["step"])
    model.partial_fit(tasks, classes=None)  # as OptunaSearchCV calls it
    assert len(model.history_) == 2
    assert model.net_.optimizer_.state_dict()["state"][0]["step"] == steps + 4
    again = ProtoNetClassifier(**model.get_params()).set_params(max_epochs=2).fit(tasks)
    assert np.allclose(again.history_[:, "train_loss"], model.history_[:, "train_loss"])


def test_failed_partial_fit_leaves_the_learner_as_it_was(train_tasks):
    class Fail(Callback):
        def on_batch_end(self, net, **kwargs):
            raise RuntimeError("a user callback failed")

    model = ProtoNetClassifier(module__hidden_sizes=(8,), meta_batch_size=4,
                               random_state=0).partial_fit(list(train_tasks[:16]))
    weights = [p.clone() for p in model.net_.module_.parameters()]
    model.net_.callbacks_.append(("fail", Fail().initialize()))
    with pytest.raises(RuntimeError, match="a user callback failed"):
        model.partial_fit(list(train_tasks[:16]))
    assert len(model.history_) == 1
    assert all(torch.equal(a, b) for a, b in zip(
        weights, model.net_.module_.parameters(), strict=True))


def test_partial_fit_refuses_other_features(train_tasks):
    model = ProtoNetClassifier(module__hidden_sizes=(8,), random_state=0)
    model.partial_fit(list(train_tasks[:8]))
    narrow = [Task(t.X_support[:, :5], t.y_support, t.X_query[:, :5], t.y_query)
              for t in train_tasks[:8]]
    with pytest.raises(ValueError, match="Tasks have 5 features, but "
                       "ProtoNetClassifier was meta-trained on tasks with 64"):
        model.partial_fit(narrow)


def test_shuffle_false_keeps_the_given_order(train_tasks, monkeypatch):
    seen, collate = [], ProtoNetNet.collate
    monkeypatch.setattr(ProtoNetNet, "collate", lambda net, items: seen.append(
        items[0]) or collate(net, items))
    ProtoNetClassifier(module__hidden_sizes=(8,), meta_batch_size=1, max_epochs=1,
                       shuffle=False, random_state=0).fit(list(train_tasks[:6]))
    assert [t.X_support.tobytes() for t in seen] == [
        t.X_support.astype(np.float32).tobytes() for t in train_tasks[:6]]


def test_pooled_r2_ranks_models_as_their_total_squared_error():
    rng = np.random.default_rng(0)
    tasks = [Task(None, None, None, rng.normal(size=n) * rng.uniform(0.1, 10))
             for n in rng.integers(2, 6, size=8)]
    predictions = [[t.y_query + rng.normal(size=len(t.y_query)) * scale
                    for t in tasks] for scale in rng.uniform(0.1, 5, size=30)]
    scores = [MetaRegressorMixin._score_predictions(tasks, p) for p in predictions]
    errors = [sum(np.square(t.y_query - q).sum() for t, q in zip(tasks, p,
                                                                 strict=True))
              for p in predictions]
    assert np.array_equal(np.argsort(scores), np.argsort(errors)[::-1])


def test_regressor_score_is_pooled_r2():
    tasks = make_sinusoid_tasks(30, random_state=0)
    model = MAMLRegressor(module__hidden_sizes=(8,), max_epochs=1,
                          random_state=0).fit(tasks[:20])
    test = model._check_tasks(tasks[20:])
    predictions = model.predict(test)
    error = sum(np.square(t.y_query - p).sum() for t, p in zip(test, predictions,
                                                               strict=True))
    spread = sum(np.square(t.y_query - t.y_query.mean()).sum() for t in test)
    assert model.score(test) == pytest.approx(1 - error / spread)


def test_fusion_verbose_reports_each_local_fit(capsys, train_tasks):
    from sklearn.linear_model import LogisticRegression
    MetaFusionClassifier(LogisticRegression(), verbose=1).fit(list(train_tasks[:3]))
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["fitted model 1 of 4 (global)", "fitted model 2 of 4 (task 0)",
                     "fitted model 3 of 4 (task 1)", "fitted model 4 of 4 (task 2)"]


@pytest.mark.filterwarnings(  # optuna's own notices, not skmeta's
    "ignore:OptunaSearchCV is experimental",
    "ignore:`optuna.terminator` module has been deprecated:FutureWarning")
def test_pruned_optuna_search_uses_partial_fit(train_tasks):
    optuna = pytest.importorskip("optuna")
    integration = pytest.importorskip("optuna_integration")
    from skmeta.metrics import get_task_scorer
    search = integration.OptunaSearchCV(
        ProtoNetClassifier(module__hidden_sizes=(8,), meta_batch_size=4,
                           random_state=0),
        {"meta_lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
        cv=2, n_trials=2, max_iter=2, enable_pruning=True, random_state=0,
        scoring=get_task_scorer("accuracy"), refit=False, verbose=0)
    search.fit(list(train_tasks[:16]))
    assert len(search.trials_) == 2
    assert all(np.isfinite(t.value) for t in search.trials_)
