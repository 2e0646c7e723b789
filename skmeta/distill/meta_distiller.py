"""Knowledge distillation of a large meta-learner into a small student
network that adapts to new tasks."""

from dataclasses import replace
from numbers import Real

import torch
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import HasMethods, Interval
from skorch import NeuralNet

from .._heads import HEAD_CONSTRAINT, HEAD_DOC, EmbeddingHeadClassifier
from .._learner import SHARED_CONSTRAINTS, TorchLearner, shared_params_doc
from .._nets import fit_net, frozen_copy
from .._pooled import without_head
from ..base import MetaClassifierMixin
from ._students import EpisodicStudent, PooledStudent
from ._teacher import fit_teacher


class MetaDistiller(MetaClassifierMixin, TorchLearner):
    __doc__ = """Distil a large meta-learner into a small student that adapts fast.

    ``fit`` trains (or takes) a teacher, then trains a small student network
    on the teacher's soft targets with Hinton et al.'s loss ``alpha *
    CE(student, y) + (1 - alpha) * T**2 * KL(softmax(teacher / T) ||
    softmax(student / T))``. ``adapt`` fits a head (the nearest class mean
    by default, or logistic regression as in RFS, Tian et al. 2020) on the
    student's L2-normalised embeddings of the support set; it never runs
    the teacher.

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
    """ + HEAD_DOC + """
        A pooled teacher's ``adapt`` uses the same head.
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
""" + shared_params_doc(max_epochs=None, routed="``teacher__<name>`` and "
                      "``student__<name>`` parameters.") + """
    Attributes
    ----------
    teacher_ : meta-learner
        The fitted teacher; ``teacher_.adapt`` gives the teacher's own
        adapted estimator, for comparison.
    teacher_kind_ : {"pooled", "episodic"}
    net_ : skorch.NeuralNet
        The trained student; ``net_.module_`` is its network.
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
    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "teacher": [None, type, torch.nn.Module, HasMethods(["fit", "adapt"])],
        "student": [None, type, torch.nn.Module],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "head": HEAD_CONSTRAINT,
        "refit_teacher": ["boolean"],
    }

    def __init__(self, teacher=None, student=None, *, temperature=4.0, alpha=0.5,
                 head="centroid", refit_teacher=True, max_epochs=10, batch_size=64,
                 meta_batch_size=8, meta_lr=1e-3, shuffle=True,
                 validation_fraction=None, device="cpu", callbacks=None, verbose=0,
                 random_state=None, **kwargs):
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
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    def _fit(self, tasks):
        teacher_seed, student_seed = self._draw_seed(size=2)
        teacher = fit_teacher(self, tasks, teacher_seed)
        kind = PooledStudent if hasattr(teacher, "pooled_logits") else EpisodicStudent
        student = kind(self, teacher)
        net = fit_net(student.spec(tasks),
                      replace(self._training(tasks), batch_size=student.batch_size),
                      student_seed)
        embedding = frozen_copy(net.module_)
        return {"teacher_": teacher, "teacher_kind_": student.kind, "net_": net,
                "embedding_": without_head(embedding) if student.remove_head
                else embedding,
                "teacher_n_params_": n_learnable_params(teacher),
                "student_n_params_": n_learnable_params(net),
                **student.fitted_state()}

    def _adapt(self, X_support, y_support):
        return EmbeddingHeadClassifier(self.embedding_, self.head).fit(
            X_support, y_support)


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
