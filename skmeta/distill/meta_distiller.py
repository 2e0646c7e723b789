"""Knowledge distillation of a large meta-learner into a small student
network that adapts to new tasks."""

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet

from .._episodic import TaskDataset, module_params, seeded, training_params
from .._routing import RoutedParamsMixin
from ..base import MetaClassifierMixin
from ..nn import MLP
from ..protonet import ProtoNetCore, PrototypeBatch
from ..tasks._task import pool_tasks
from ._loss import SoftTargetLoss, SoftTargetLossMixin
from .pooled import (
    EmbeddingHeadClassifier,
    PooledEmbeddingClassifier,
    check_embedding,
    fit_pooled_net,
    frozen_embedding,
)

_DEFAULT_TEACHER = {"hidden_sizes": (256, 256)}
_DEFAULT_STUDENT = {"hidden_sizes": (64, 64)}


@dataclass
class SoftTargetBatch:
    """A meta-batch of tasks with the teacher's query log-probabilities:
    ``teacher_logits[i, j]`` is row ``i``'s log-probability of class ``j``,
    ``-inf`` for classes of other tasks (ids as in :class:`PrototypeBatch`)."""

    tasks: PrototypeBatch
    teacher_logits: torch.Tensor

    def __len__(self):
        return len(self.tasks)

    @classmethod
    def collate(cls, items):
        """Collate ``(task, teacher_proba)`` pairs."""
        tasks, probas = zip(*items, strict=True)
        batch = PrototypeBatch.collate(list(tasks))
        logits = torch.full((sum(len(p) for p in probas),
                             sum(p.shape[1] for p in probas)), -torch.inf)
        row = col = 0
        for proba in probas:
            with np.errstate(divide="ignore"):
                block = torch.as_tensor(np.log(proba), dtype=torch.float32)
            logits[row:row + len(proba), col:col + proba.shape[1]] = block
            row, col = row + len(proba), col + proba.shape[1]
        return cls(batch, logits)


class SoftTargetProtoNet(SoftTargetLossMixin, ProtoNetCore):
    """Episodic student core: prototypical logits on each task's query,
    trained with the soft-target loss against the teacher's query
    probabilities."""

    def episode_loss(self, batch, training):
        logits, y_query = self.prototype_logits(batch.tasks)
        loss = self.get_loss(logits, (y_query, batch.teacher_logits),
                             training=training)
        return loss, (logits.argmax(1) == y_query).float().mean()


class MetaDistiller(MetaClassifierMixin, RoutedParamsMixin, BaseEstimator):
    """Distil a large meta-learner into a small student that adapts fast.

    ``fit`` trains (or takes) a teacher, then trains a small student network
    on the teacher's soft targets with Hinton et al.'s loss ``alpha *
    CE(student, y) + (1 - alpha) * T**2 * KL(softmax(teacher / T) ||
    softmax(student / T))``. ``adapt`` fits a scikit-learn head (logistic
    regression by default) on the student's L2-normalised embeddings of the
    support set, as RFS does (Tian et al. 2020); it never runs the teacher.

    Two kinds of teacher:

    - **pooled** (``teacher`` None, a torch module, or a
      :class:`PooledEmbeddingClassifier`, anything with ``pooled_logits``):
      a network classifying all
      training classes pooled across tasks (tasks keep their original
      labels). The student gets a head over the same classes and learns
      from the teacher's logits on the pooled examples.
    - **episodic** (any other skmeta meta-learner, e.g.
      :class:`~skmeta.ProtoNetClassifier`): for each training task the
      teacher adapts on the support set and its query probabilities are the
      soft targets. The student is meta-trained on them as a prototypical
      network (query logits: negative squared distances to the support
      prototypes).

    Parameters
    ----------
    teacher : None, torch.nn.Module class or instance, or meta-learner, default=None
        None means a pooled :class:`skmeta.nn.MLP` with
        ``hidden_sizes=(256, 256)``. A module (class or instance) is trained
        as a :class:`PooledEmbeddingClassifier` with this estimator's
        ``head``, ``max_epochs``, ``batch_size``, ``meta_lr``, ``device``,
        ``callbacks`` and ``verbose``. ``teacher__<name>`` parameters go to a
        module class's constructor, or to a meta-learner's ``set_params``.
    student : None or torch.nn.Module class or instance, default=None
        The student network. None means :class:`skmeta.nn.MLP` with
        ``hidden_sizes=(64, 64)``. ``in_features`` (and, for a pooled
        teacher, ``out_features``, the number of pooled classes) are set from
        the data; ``student__<name>`` parameters go to the constructor.
        Under a pooled teacher it needs a ``head`` submodule, removed to give
        the embedding; under an episodic teacher the module is the embedding.
    temperature : float, default=4.0
        Softmax temperature ``T`` of the soft targets (> 0).
    alpha : float, default=0.5
        Weight of the hard-label cross-entropy, in [0, 1]; ``alpha=1`` trains
        the student without the teacher's knowledge.
    head : scikit-learn classifier or None, default=None
        The per-task head fitted by ``adapt``; needs ``predict_proba``. None
        means ``LogisticRegression(max_iter=1000)``.
    refit_teacher : bool, default=True
        If False and ``teacher`` is an already fitted meta-learner, it is used
        as it is (a copy) instead of being refitted. ``clone`` (and so
        ``GridSearchCV``) unfits it; wrap it in
        :class:`sklearn.frozen.FrozenEstimator` to keep it fitted there.
    max_epochs : int, default=10
        Passes over the pooled examples (pooled teacher) or the tasks
        (episodic teacher) when training the student.
    batch_size : int, default=64
        Examples per step of pooled training.
    meta_batch_size : int, default=8
        Tasks per step of episodic student training.
    meta_lr : float, default=1e-3
        Adam's learning rate for the student (and a module teacher); named
        as in skmeta's other learners.
    validation_fraction : float or None, default=None
        Fraction of the examples (pooled) or tasks (episodic) held out to
        report ``valid_loss`` each epoch.
    device : str, default="cpu"
        Torch device for training.
    callbacks : list of skorch callbacks or None, default=None
    verbose : int, default=0
        If positive, print epoch logs and progress bars.
    random_state : int, RandomState instance or None, default=None
        Seeds the teacher built from a module, the student's initialisation,
        example and task order.
    **kwargs
        ``teacher__<name>`` and ``student__<name>`` parameters.

    Attributes
    ----------
    teacher_ : meta-learner
        The fitted teacher; ``teacher_.adapt`` gives the teacher's own
        adapted estimator, for comparison.
    teacher_kind_ : {"pooled", "episodic"}
    student_ : skorch.NeuralNet
        The trained student; ``student_.module_`` is its network.
    embedding_ : torch.nn.Module
        CPU copy of the student's embedding, used by ``adapt``.
    classes_ : ndarray
        Pooled labels of the training tasks (pooled teacher only).
    history_ : skorch.History
        The student's training history.
    teacher_n_params_, student_n_params_ : int
        Learnable torch parameters of the teacher and of the student network.
    n_features_in_ : int

    Examples
    --------
    >>> from skmeta import MetaDistiller
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.tasks import EpisodeSampler
    >>> digits = load_digits_tasks()
    >>> train = digits.target < 20
    >>> tasks = EpisodeSampler(digits.data[train], digits.target[train], n_way=5,
    ...                        k_shot=1, n_query=5, n_tasks=64, random_state=0)
    >>> model = MetaDistiller(max_epochs=2, random_state=0).fit(tasks)
    >>> model.student_n_params_ < model.teacher_n_params_ / 4
    True
    >>> model.adapt(tasks[0].X_support, tasks[0].y_support).predict(
    ...     tasks[0].X_query).shape
    (25,)
    """

    _routed_prefixes = ("teacher__", "student__")

    def __init__(self, teacher=None, student=None, *, temperature=4.0, alpha=0.5,
                 head=None, refit_teacher=True, max_epochs=10, batch_size=64,
                 meta_batch_size=8, meta_lr=1e-3, validation_fraction=None,
                 device="cpu", callbacks=None, verbose=0, random_state=None,
                 **kwargs):
        self.teacher = teacher
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.head = head
        self.refit_teacher = refit_teacher
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    @property
    def history_(self):
        """The skorch ``History`` of the student's training."""
        return self.student_.history

    def _fit(self, tasks):
        self._check_loss_params()
        vars(self).pop("classes_", None)  # set again for a pooled teacher
        teacher_seed, student_seed = check_random_state(
            self.random_state).randint(2**31, size=2)
        self.teacher_ = self._fit_teacher(tasks, teacher_seed)
        pooled = hasattr(self.teacher_, "pooled_logits")
        self.teacher_kind_ = "pooled" if pooled else "episodic"
        fit_student = self._fit_pooled_student if pooled else self._fit_episodic_student
        self.student_ = fit_student(tasks, int(student_seed))
        self.embedding_ = frozen_embedding(self.student_.module_, remove_head=pooled)
        self.teacher_n_params_ = n_learnable_params(self.teacher_)
        self.student_n_params_ = n_learnable_params(self.student_)

    def _adapt(self, X_support, y_support):
        return EmbeddingHeadClassifier(self.embedding_, self.head).fit(
            X_support, y_support)

    def _check_loss_params(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")

    def _fit_teacher(self, tasks, seed):
        routed = self._unprefixed("teacher__")
        teacher = self.teacher
        if teacher is None or _is_module(teacher):
            defaults = _DEFAULT_TEACHER if teacher is None else {}
            module_kwargs = {f"module__{k}": v
                             for k, v in {**defaults, **routed}.items()}
            return PooledEmbeddingClassifier(
                MLP if teacher is None else teacher, head=self.head,
                max_epochs=self.max_epochs, batch_size=self.batch_size,
                lr=self.meta_lr,
                validation_fraction=self.validation_fraction, device=self.device,
                callbacks=self.callbacks, verbose=self.verbose, random_state=seed,
                **module_kwargs).fit(tasks)
        if not (hasattr(teacher, "fit") and hasattr(teacher, "adapt")):
            raise TypeError(
                "teacher must be None, a torch module (class or instance) or a "
                "skmeta meta-learner (with fit and adapt), got "
                f"{type(teacher).__name__}.")
        if not self.refit_teacher and _is_fitted(teacher):
            if routed:
                raise ValueError(
                    f"teacher__ parameters {sorted(routed)} cannot change a "
                    "teacher that is not refitted (refit_teacher=False).")
            return copy.deepcopy(teacher)
        teacher = clone(teacher)
        if routed:
            teacher.set_params(**routed)
        return teacher.fit(tasks, y=None)  # FrozenEstimator needs y

    def _student(self):
        """The student's module and its ``module__*`` parameters."""
        module, defaults = ((MLP, _DEFAULT_STUDENT) if self.student is None
                            else (self.student, {}))
        routed = {**defaults, **self._unprefixed("student__")}
        return module, {f"module__{k}": v for k, v in routed.items()}

    def _unprefixed(self, prefix):
        return {key.removeprefix(prefix): value
                for key, value in self._routed_params(prefix).items()}

    def _fit_pooled_student(self, tasks, seed):
        X, labels = pool_tasks(tasks)
        self.classes_ = self.teacher_.classes_
        y = _encode(labels, self.classes_)
        teacher_logits = self.teacher_.pooled_logits(X)
        module, module_kwargs = self._student()
        return fit_pooled_net(
            self, module, module_kwargs, X, y, len(self.classes_),
            lr=self.meta_lr, seed=seed, role="student module",
            teacher_logits=teacher_logits, temperature=self.temperature,
            alpha=self.alpha)

    def _fit_episodic_student(self, tasks, seed):
        items = [(task, self._teacher_proba(task)) for task in tasks]
        module, module_kwargs = self._student()
        net = SoftTargetProtoNet(
            **module_params(module, {"in_features": self.n_features_in_},
                            module_kwargs),
            **training_params(self, seed), criterion=SoftTargetLoss,
            criterion__temperature=self.temperature, criterion__alpha=self.alpha,
            optimizer=torch.optim.Adam, lr=self.meta_lr, max_epochs=self.max_epochs,
            batch_size=self.meta_batch_size, shuffle_seed=seed,
            iterator_train__collate_fn=SoftTargetBatch.collate,
            iterator_valid__collate_fn=SoftTargetBatch.collate)
        with seeded(seed, self.device):
            net.initialize()
            check_embedding(net.module_, tasks[0].X_support, "student module")
            net.partial_fit(TaskDataset(items))
        return net

    def _teacher_proba(self, task):
        """The teacher's query probabilities after adapting on the support
        set, columns in sorted class order."""
        adapted = self.teacher_.adapt(task.X_support, task.y_support)
        column = {label: j for j, label in enumerate(adapted.classes_)}
        return adapted.predict_proba(task.X_query)[
            :, [column[label] for label in np.unique(task.y_support)]]


def _is_module(obj):
    return isinstance(obj, torch.nn.Module) or (
        isinstance(obj, type) and issubclass(obj, torch.nn.Module))


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _encode(labels, classes):
    """Indices of ``labels`` in the pooled teacher's sorted ``classes``."""
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    unknown = classes[index] != labels
    if unknown.any():
        raise ValueError(
            f"Label {labels[unknown].tolist()[0]!r} of the training tasks is "
            "not among the pooled teacher's classes; refit the teacher on these tasks "
            "(refit_teacher=True).")
    return index


def n_learnable_params(obj):
    """Learnable torch parameters reachable from a fitted estimator: skorch
    nets and modules among its fitted (``*_``) attributes, recursively;
    frozen copies (``requires_grad=False``) are not counted."""
    found = {}
    _collect_params(obj, found, depth=0)
    return sum(p.numel() for p in found.values())


def _collect_params(obj, found, depth):
    if isinstance(obj, FrozenEstimator):
        _collect_params(obj.estimator, found, depth)
    elif isinstance(obj, NeuralNet):
        found.update((id(p), p) for _, p in obj.get_all_learnable_params())
    elif isinstance(obj, torch.nn.Module):
        found.update((id(p), p) for p in obj.parameters() if p.requires_grad)
    elif depth < 3 and isinstance(obj, (list, tuple, dict, BaseEstimator)):
        values = (obj.values() if isinstance(obj, dict) else
                  [v for k, v in vars(obj).items() if k.endswith("_")]
                  if isinstance(obj, BaseEstimator) else obj)
        for value in values:
            _collect_params(value, found, depth + 1)
