import copy
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from skorch.callbacks import Callback

from skmeta import MetaDistiller, ProtoNetClassifier
from skmeta.distill import (
    CentroidHead,
    EmbeddingHeadClassifier,
    PooledEmbeddingClassifier,
    soft_target_loss,
)
from skmeta.distill._students import EpisodicStudent
from skmeta.nn import MLP, ConvNet

CONV = {"input_shape": (1, 8, 8)}


@pytest.fixture(scope="module")
def distiller(train_tasks):
    """A pooled MLP teacher distilled into the default small MLP student."""
    return MetaDistiller(max_epochs=10, random_state=0).fit(train_tasks[:100])


def _numpy_loss(student, target, teacher, temperature, alpha):
    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    ce = -log_softmax(student)[np.arange(len(target)), target].mean()
    p = np.exp(log_softmax(teacher / temperature))
    kl = (p * (np.log(p) - log_softmax(student / temperature))).sum(1).mean()
    return alpha * ce + (1 - alpha) * temperature**2 * kl


def test_soft_target_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 6, 4)) * 3
    target = rng.integers(0, 4, size=6)
    for temperature, alpha in [(4.0, 0.5), (1.0, 0.0), (2.5, 0.9)]:
        ours = soft_target_loss(torch.tensor(student), torch.tensor(target),
                                torch.tensor(teacher), temperature=temperature,
                                alpha=alpha)
        np.testing.assert_allclose(
            ours.item(), _numpy_loss(student, target, teacher, temperature, alpha),
            rtol=1e-10)
    hard = soft_target_loss(torch.tensor(student), torch.tensor(target), alpha=1.0)
    np.testing.assert_allclose(hard.item(), _numpy_loss(student, target, teacher,
                                                        1.0, 1.0), rtol=1e-10)
    with pytest.raises(ValueError, match=re.escape(
            "The soft-target loss needs the teacher's logits when alpha < 1 "
            "(got alpha=0.5).")):
        soft_target_loss(torch.tensor(student), torch.tensor(target))


def test_soft_target_loss_ignores_classes_outside_the_task():
    """-inf logits (other tasks' classes in a meta-batch) count as absent."""
    student = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.0]], requires_grad=True)
    teacher = torch.tensor([[0.2, 1.5, 0.0], [2.0, -1.0, 0.5]])
    target = torch.tensor([1, 0])
    masked = torch.tensor([[False, False, False], [False, False, True]])
    loss = soft_target_loss(student.masked_fill(masked, -torch.inf), target,
                            teacher.masked_fill(masked, -torch.inf))
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[1, 2] == 0
    expected = (soft_target_loss(student[:1], target[:1], teacher[:1])
                + soft_target_loss(student[1:, :2], target[1:], teacher[1:, :2])) / 2
    torch.testing.assert_close(loss, expected)


def test_pooled_distiller_trains_a_quarter_size_student(distiller, train_tasks,
                                                        test_tasks):
    assert distiller.teacher_kind_ == "pooled"
    assert isinstance(distiller.teacher_, PooledEmbeddingClassifier)
    pooled = np.unique([y for t in train_tasks[:100]
                        for y in np.r_[t.y_support, t.y_query]])
    np.testing.assert_array_equal(distiller.classes_, pooled)
    np.testing.assert_array_equal(distiller.teacher_.classes_, pooled)
    assert distiller.net_.module_.head.out_features == len(pooled)
    assert distiller.student_n_params_ == sum(
        p.numel() for p in distiller.net_.module_.parameters())
    assert distiller.teacher_n_params_ == sum(
        p.numel() for p in distiller.teacher_.net_.module_.parameters())
    assert distiller.student_n_params_ < distiller.teacher_n_params_ / 4
    assert distiller.teacher_.score(test_tasks) > 0.6  # chance is 0.2
    assert distiller.score(test_tasks) > 0.6
    assert len(distiller.history_) == 10


def test_distilled_student_beats_the_undistilled_one(train_tasks, test_tasks):
    """A Conv-4 teacher's soft targets make a tiny Conv-4 student (4
    channels) better on unseen classes than the same student trained on hard
    labels alone (alpha=1), with everything else fixed, on average over two
    seeds (measured: +3.3 and +1.3 points; a 12-channel student, which keeps
    a 4x4 map of the digits, gains nothing on this budget)."""
    gains = []
    for seed in (0, 1):
        teacher = PooledEmbeddingClassifier(ConvNet, module__channels=(32,) * 4,
                                            max_epochs=3, random_state=seed,
                                            module__input_shape=(1, 8, 8))
        teacher.fit(train_tasks[:150])
        scores = {alpha: MetaDistiller(
            teacher, ConvNet, refit_teacher=False, alpha=alpha, max_epochs=3,
            student__input_shape=(1, 8, 8), student__channels=(4,) * 4,
            random_state=seed).fit(train_tasks[:150]).score(test_tasks)
            for alpha in (0.5, 1.0)}
        gains.append(scores[0.5] - scores[1.0])
        assert teacher.score(test_tasks) > scores[0.5]
    assert np.mean(gains) > 0.015


def test_adapt_returns_standalone_classifier_and_never_runs_the_teacher(
        distiller, test_tasks):
    task = test_tasks[0]
    names = np.array([f"digit {c}" for c in task.y_support])
    expected = distiller.adapt(task.X_support, names).predict_proba(task.X_query)
    without_teacher = copy.deepcopy(distiller)
    without_teacher.teacher_ = None
    clf = without_teacher.adapt(task.X_support, names)
    assert isinstance(clf, EmbeddingHeadClassifier)
    np.testing.assert_array_equal(clf.predict_proba(task.X_query), expected)
    assert set(clf.classes_) == set(names)
    assert set(clf.predict(task.X_query)) <= set(names)
    assert clf.score(task.X_query, np.array([f"digit {c}" for c in task.y_query])) > 0.4


def test_head_is_a_parameter(distiller, test_tasks):
    model = copy.deepcopy(distiller)
    model.set_params(head=KNeighborsClassifier(n_neighbors=1))
    task = test_tasks[0]
    clf = model.adapt(task.X_support, task.y_support)
    assert isinstance(clf.head_, KNeighborsClassifier)
    # 1-nearest neighbour on unit-length embeddings of a 1-shot task
    embedded = clf._embed(task.X_query.astype(np.float32))
    support = clf._embed(task.X_support.astype(np.float32))
    nearest = np.argmax(embedded @ support.T, axis=1)
    np.testing.assert_array_equal(clf.predict(task.X_query),
                                  task.y_support[nearest])


def test_episodic_teacher_gives_soft_targets_on_each_task(protonet, train_tasks,
                                                          test_tasks):
    model = MetaDistiller(protonet, refit_teacher=False, student__hidden_sizes=(32,),
                          max_epochs=2, random_state=0).fit(train_tasks[:100])
    assert model.teacher_kind_ == "episodic"
    assert not hasattr(model, "classes_")
    assert model.teacher_ is not protonet  # a copy, not refitted
    for ours, theirs in zip(model.teacher_.net_.module_.parameters(),
                            protonet.net_.module_.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert model.teacher_n_params_ == sum(
        p.numel() for p in protonet.net_.module_.parameters())
    assert model.student_n_params_ == 64 * 32 + 32
    assert model.history_[-1, "train_acc"] > 0.6
    assert model.score(test_tasks) > 0.6


def test_episodic_teacher_is_refitted_with_routed_parameters(train_tasks):
    teacher = ProtoNetClassifier(max_epochs=5, module__hidden_sizes=(32,))
    model = MetaDistiller(teacher, teacher__max_epochs=1,
                          teacher__module__hidden_sizes=(16,), max_epochs=1,
                          random_state=0).fit(train_tasks[:16])
    assert model.teacher_.max_epochs == 1 and len(model.teacher_.history_) == 1
    assert model.teacher_.net_.module_.body[0].out_features == 16
    assert not hasattr(teacher, "net_") and teacher.max_epochs == 5


def test_episodic_soft_targets_follow_each_tasks_label_order(train_tasks):
    """The teacher's columns are matched to the task's classes by label, with
    string labels and tasks of different sizes."""
    tasks = []
    for task in train_tasks[:12]:
        rename = np.vectorize(lambda c: f"class {39 - c:02d}")
        tasks.append((np.r_[task.X_support, task.X_query],
                      rename(np.r_[task.y_support, task.y_query])))
    teacher = ProtoNetClassifier(max_epochs=1, random_state=0).fit(tasks)
    model = MetaDistiller(teacher, refit_teacher=False, max_epochs=1,
                          random_state=0)
    model.fit(tasks)
    task = model._check_tasks(tasks)[3]
    adapted = teacher.adapt(task.X_support, task.y_support)
    np.testing.assert_allclose(EpisodicStudent(model, teacher)._teacher_proba(task),
                               adapted.predict_proba(task.X_query))
    assert model.predict(tasks[:1])[0].dtype.kind == "U"


def test_grid_search_over_temperature_and_alpha_on_task_lists(train_tasks):
    tasks = list(train_tasks[:40])
    model = MetaDistiller(teacher__hidden_sizes=(32,), student__hidden_sizes=(8,),
                          max_epochs=1, random_state=0)
    grid = GridSearchCV(model, {"temperature": [1.0, 4.0], "alpha": [0.0, 0.5]},
                        cv=2).fit(tasks)
    assert len(grid.cv_results_["params"]) == 4
    assert (grid.cv_results_["mean_test_score"] > 0.4).all()
    assert grid.best_estimator_.temperature == grid.best_params_["temperature"]
    assert grid.best_estimator_.net_.criterion_.alpha == grid.best_params_["alpha"]


def test_frozen_teacher_is_fitted_once_in_grid_search(protonet, train_tasks):
    teacher = FrozenEstimator(protonet)
    grid = GridSearchCV(MetaDistiller(teacher, student__hidden_sizes=(8,),
                                      max_epochs=1, random_state=0),
                        {"temperature": [2.0, 4.0]}, cv=2).fit(list(train_tasks[:20]))
    best = grid.best_estimator_
    assert best.teacher_kind_ == "episodic" and best.teacher_.estimator is protonet
    assert best.teacher_n_params_ == sum(p.numel()
                                         for p in protonet.net_.module_.parameters())


def test_validation_fraction_reports_valid_loss_for_both_kinds(protonet,
                                                               train_tasks):
    for teacher in (MLP, FrozenEstimator(protonet)):
        model = MetaDistiller(teacher, max_epochs=1, validation_fraction=0.25,
                              random_state=0).fit(train_tasks[:16])
        assert np.isfinite(model.history_[-1, "valid_loss"])


def test_routed_parameters_are_exposed_and_cloned():
    model = MetaDistiller(ConvNet, ConvNet, teacher__input_shape=(1, 8, 8),
                          student__channels=(8, 8))
    params = model.get_params()
    assert params["teacher__input_shape"] == (1, 8, 8)
    assert params["student__channels"] == (8, 8)
    assert clone(model).student__channels == (8, 8)
    model.set_params(student__channels=(4,), temperature=2.0)
    assert model.student__channels == (4,) and model.temperature == 2.0
    with pytest.raises(TypeError, match=re.escape(
            "MetaDistiller got an unexpected keyword argument 'module__x'; routed "
            "parameters must start with one of teacher__, student__.")):
        MetaDistiller(module__x=1)


def test_conv_teacher_and_student_read_flat_rows(train_tasks, test_tasks):
    model = MetaDistiller(ConvNet, ConvNet, teacher__input_shape=(1, 8, 8),
                          teacher__channels=(16, 16), student__input_shape=(1, 8, 8),
                          student__channels=(4, 4), max_epochs=1,
                          random_state=0).fit(train_tasks[:60])
    assert model.teacher_.net_.module_.head.out_features == len(model.classes_)
    assert model.student_n_params_ < model.teacher_n_params_ / 4
    assert model.score(test_tasks[:20]) > 0.4


def test_same_random_state_gives_identical_students(train_tasks):
    tasks = train_tasks[:30]
    kwargs = dict(teacher__hidden_sizes=(16,), max_epochs=1)
    first = MetaDistiller(random_state=3, **kwargs).fit(tasks)
    second = MetaDistiller(random_state=3, **kwargs).fit(tasks)
    other = MetaDistiller(random_state=4, **kwargs).fit(tasks)
    for a, b, c in zip(first.net_.module_.parameters(),
                       second.net_.module_.parameters(),
                       other.net_.module_.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_fewer_than_two_classes_is_a_clear_error(train_tasks):
    task = train_tasks[0]
    one_class = (task.X_support, np.zeros(len(task.y_support), dtype=int))
    with pytest.raises(ValueError, match=re.escape(
            "Task 1: y has a single class (0); a classification task needs at "
            "least two.")):
        MetaDistiller(max_epochs=1).fit([train_tasks[1], one_class])


def test_student_whose_output_does_not_fit_the_head_is_a_clear_error(train_tasks):
    tasks = train_tasks[:10]
    n_classes = len(np.unique([y for t in tasks for y in t.y_support]))
    with pytest.raises(ValueError, match=re.escape(
            "The student module (MLP) gives outputs of shape (2, 10) for 2 "
            f"examples, but the pooled classifier needs one logit per pooled "
            f"class, (2, {n_classes}): give a module class that takes "
            "`out_features` (set from the data), or build the instance with "
            f"out_features={n_classes}.")):
        MetaDistiller(student=MLP(64, (8,), out_features=10),
                      max_epochs=1).fit(tasks)
    with pytest.raises(ValueError, match=re.escape(
            "The student module (Sequential) has no `head` submodule")):
        MetaDistiller(student=torch.nn.Sequential(torch.nn.Linear(64, 8)),
                      max_epochs=1).fit(tasks)
    unflattened = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)),
                                      torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match=re.escape(
            "The student module's embedding gives outputs of shape (2, 2, 6, 6) "
            "for 2 examples; the head fitted by adapt needs 2-D embeddings")):
        MetaDistiller(ProtoNetClassifier(max_epochs=1), unflattened,
                      max_epochs=1).fit(tasks)


@pytest.mark.parametrize(("params", "error", "message"), [
    ({"temperature": 0.0}, ValueError, "The 'temperature' parameter of "
     "MetaDistiller must be a float in the range (0.0, inf). Got 0.0 instead."),
    ({"alpha": 1.5}, ValueError, "The 'alpha' parameter of MetaDistiller must be "
     "a float in the range [0.0, 1.0]. Got 1.5 instead."),
    ({"teacher": KNeighborsClassifier()}, TypeError,
     "The 'teacher' parameter of MetaDistiller must be None, an instance of "
     "'type', an instance of 'torch.nn.modules.module.Module' or an object "
     "implementing 'fit' and 'adapt'. Got KNeighborsClassifier() instead."),
])
def test_invalid_parameters_are_clear_errors(train_tasks, params, error, message):
    with pytest.raises(error, match=re.escape(message)):
        MetaDistiller(max_epochs=1, **params).fit(train_tasks[:4])


def test_prefit_teacher_cannot_take_routed_parameters(protonet, train_tasks):
    with pytest.raises(ValueError, match=re.escape(
            "teacher__ parameters ['max_epochs'] cannot change a teacher that is "
            "not refitted (refit_teacher=False).")):
        MetaDistiller(protonet, refit_teacher=False, teacher__max_epochs=3,
                      max_epochs=1).fit(train_tasks[:4])


def test_prefit_pooled_teacher_must_know_every_label(distiller, digits, train_tasks):
    known, unseen = distiller.classes_[0], digits.test_classes[0]
    rows = np.r_[np.flatnonzero(digits.target == known)[:4],
                 np.flatnonzero(digits.target == unseen)[:4]]
    task = (digits.data[rows], digits.target[rows])
    with pytest.raises(ValueError, match=re.escape(
            f"Label {unseen} of the training tasks is not among the pooled "
            "teacher's classes; refit the teacher on these tasks "
            "(refit_teacher=True).")):
        MetaDistiller(distiller.teacher_, refit_teacher=False,
                      max_epochs=1).fit([train_tasks[0], task])


class InterruptFirstNet(Callback):
    """Raises KeyboardInterrupt after the second batch of the first net it
    trains in (the teacher's)."""

    first = None

    def on_batch_end(self, net, **kwargs):
        self.first = self.first or net
        if net is self.first and len(net.history[-1, "batches"]) == 2:
            raise KeyboardInterrupt


def test_interrupted_teacher_is_followed_by_the_students_training(train_tasks,
                                                                  test_tasks):
    model = MetaDistiller(teacher__hidden_sizes=(32,), student__hidden_sizes=(16,),
                          max_epochs=2, callbacks=[InterruptFirstNet()],
                          random_state=0).fit(train_tasks[:40])
    assert len(model.teacher_.history_) == 1
    assert len(model.teacher_.history_[-1, "batches"]) == 2
    assert len(model.history_) == 2  # the student's whole run
    assert model.score(test_tasks) > 0.2  # 5-way: chance is 0.2


def test_centroid_head_is_the_nearest_mean_of_unit_embeddings():
    """head="centroid" (the default) equals a hand computation: unit-length
    embeddings, one mean per class, softmax of -10 x squared distances."""
    rng = np.random.default_rng(0)
    embedding = torch.nn.Linear(4, 3)
    X, X_new = rng.normal(size=(2, 9, 4)).astype(np.float32)
    X_new = X_new[:7]
    y = np.array(["b", "a", "c", "a", "b", "c", "a", "b", "c"])
    clf = EmbeddingHeadClassifier(embedding).fit(X, y)
    with torch.no_grad():
        unit = [(z / z.norm(dim=1, keepdim=True)).numpy()
                for z in (embedding(torch.tensor(X)).double(),
                          embedding(torch.tensor(X_new)).double())]
    centroids = np.stack([unit[0][y == c].mean(0) for c in ("a", "b", "c")])
    distances = ((unit[1][:, None, :] - centroids[None]) ** 2).sum(-1)
    expected = np.exp(-10 * distances)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(clf.head_.centroids_, centroids, rtol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(X_new), expected, rtol=1e-4)
    np.testing.assert_array_equal(clf.predict(X_new),
                                  np.array(["a", "b", "c"])[distances.argmin(1)])
    assert isinstance(clf.head_, CentroidHead)
    logistic = EmbeddingHeadClassifier(head="logistic").fit(X, y)
    assert isinstance(logistic.head_, LogisticRegression)
    with pytest.raises(ValueError, match=(  # the set's order varies
            r"The 'head' parameter of EmbeddingHeadClassifier must be a str among "
            r"\{'(centroid|logistic)', '(centroid|logistic)'\} or an object "
            r"implementing 'fit' and 'predict_proba'. Got 'knn' instead.")):
        EmbeddingHeadClassifier(head="knn").fit(X, y)


def test_centroid_head_scale_sharpens_probabilities_only():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    y = [0, 0, 1, 1]
    soft, sharp = (CentroidHead(scale).fit(X, y) for scale in (0.1, 10.0))
    np.testing.assert_array_equal(soft.centroids_, [[0.5, 0.0], [1.5, 2.5]])
    X_new = np.array([[0.4, 0.2], [2.0, 2.0]])
    np.testing.assert_array_equal(soft.predict(X_new), sharp.predict(X_new))
    np.testing.assert_array_equal(sharp.predict(X_new), [0, 1])
    assert sharp.predict_proba(X_new).max() > soft.predict_proba(X_new).max()


def test_distiller_and_pooled_learner_take_the_head_by_name(distiller, test_tasks):
    task = test_tasks[0]
    assert distiller.head == "centroid"
    assert PooledEmbeddingClassifier().head == "centroid"
    assert isinstance(distiller.adapt(task.X_support, task.y_support).head_,
                      CentroidHead)
    assert isinstance(distiller.teacher_.adapt(task.X_support, task.y_support).head_,
                      CentroidHead)
    model = copy.deepcopy(distiller).set_params(head="logistic")
    assert isinstance(model.adapt(task.X_support, task.y_support).head_,
                      LogisticRegression)
