"""Pooled-class embedding learning (RFS, Tian et al. 2020): train a network
to classify every training class at once, then give each new task a linear
head on the network's L2-normalised embedding."""

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from skorch import NeuralNet
from torch.utils.data import Dataset

from .._episodic import FiniteLossMixin, module_params, seeded, training_params
from .._routing import RoutedParamsMixin
from ..base import AdaptedClassifier, MetaClassifierMixin
from ..nn import MLP
from ..tasks._task import pool_tasks
from ._loss import SoftTargetLoss, SoftTargetLossMixin


class EmbeddingHeadClassifier(AdaptedClassifier):
    """A scikit-learn classifier on a fixed network's L2-normalised embedding.

    ``fit`` embeds the task's examples, scales each embedding to unit length
    and fits a clone of ``head`` on them; prediction embeds the same way.
    This is what :meth:`PooledEmbeddingClassifier.adapt` and
    :meth:`MetaDistiller.adapt` return.

    Parameters
    ----------
    embedding : torch.nn.Module or None, default=None
        Maps a float tensor of shape (n, n_features) to embeddings of shape
        (n, n_embedding); used as given (eval mode, on the CPU). None means
        the identity.
    head : scikit-learn classifier or None, default=None
        Fitted on the embeddings; needs ``predict_proba``. None means
        ``LogisticRegression(max_iter=1000)``, as RFS uses.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    head_ : scikit-learn classifier
        The fitted head (on class indices ``0..n_classes-1``).

    Examples
    --------
    >>> from skmeta.distill import EmbeddingHeadClassifier
    >>> clf = EmbeddingHeadClassifier().fit([[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
    >>> clf.predict([[3.0, 0.5], [0.0, 2.0]]).tolist()
    ['a', 'b']
    """

    def __init__(self, embedding=None, head=None):
        self.embedding = embedding
        self.head = head

    def _embed(self, X):
        if self.embedding is None:
            embedded = X.astype(np.float64)
        else:
            with torch.no_grad():
                embedded = self.embedding(torch.from_numpy(X)).double().numpy()
        norms = np.linalg.norm(embedded, axis=1, keepdims=True)
        return embedded / np.maximum(norms, 1e-12)

    def _fit_encoded(self, X, y):
        head = LogisticRegression(max_iter=1000) if self.head is None else self.head
        self.head_ = clone(head).fit(self._embed(X), y)

    def _predict_proba(self, X):
        return self.head_.predict_proba(self._embed(X))


class PooledNet(FiniteLossMixin, SoftTargetLossMixin, NeuralNet):
    """skorch core of pooled-class training: samples are examples, targets
    are class indices, or ``(class index, teacher logits)`` pairs for
    distillation (criterion :class:`SoftTargetLoss`)."""


class PooledDataset(Dataset):
    """Examples with their class index, and the teacher's logits if given."""

    def __init__(self, X, y, teacher_logits=None):
        self.X, self.y, self.teacher_logits = X, y, teacher_logits

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        if self.teacher_logits is None:
            return self.X[i], self.y[i]
        return self.X[i], (self.y[i], self.teacher_logits[i])


def fit_pooled_net(learner, module, routed, X, y, n_classes, *, lr, seed, role,
                   teacher_logits=None, temperature=4.0, alpha=1.0):
    """Train ``module`` (class or instance) as a classifier over ``n_classes``
    pooled classes with the learner's shared training parameters.

    ``routed`` are ``module__*`` parameters; ``role`` names the module in
    errors ("module", "student module"); ``lr`` is Adam's learning rate.
    """
    data_kwargs = {"in_features": X.shape[1], "out_features": n_classes}
    net = PooledNet(**module_params(module, data_kwargs, routed),
                    **training_params(learner, seed),
                    criterion=SoftTargetLoss, criterion__temperature=temperature,
                    criterion__alpha=alpha, optimizer=torch.optim.Adam,
                    lr=lr, max_epochs=learner.max_epochs,
                    batch_size=learner.batch_size, iterator_train__shuffle=True)
    with seeded(seed, learner.device):
        net.initialize()
        _check_pooled_module(net.module_, X[:2], n_classes, role)
        check_embedding(frozen_embedding(net.module_, remove_head=True), X, role)
        net.partial_fit(PooledDataset(X, y, teacher_logits))
    return net


def _check_pooled_module(module, X, n_classes, role):
    if not isinstance(getattr(module, "head", None), torch.nn.Module):
        raise ValueError(
            f"The {role} ({type(module).__name__}) has no `head` submodule; "
            "pooled training needs a network whose `head` is its classifier "
            "over the pooled classes, removed to give the embedding (as in "
            "skmeta.nn.MLP and ConvNet).")
    shape = _output_shape(module, X)
    if shape != (len(X), n_classes):
        raise ValueError(
            f"The {role} ({type(module).__name__}) gives outputs of shape "
            f"{shape} for {len(X)} examples, but the pooled classifier needs "
            f"one logit per pooled class, ({len(X)}, {n_classes}): give a "
            "module class that takes `out_features` (set from the data), or "
            f"build the instance with out_features={n_classes}.")


def check_embedding(embedding, X, role):
    """The embedding must map rows to 2-D (n, n_embedding) arrays."""
    shape = _output_shape(embedding, X[:2])
    if len(shape) != 2:
        raise ValueError(
            f"The {role}'s embedding gives outputs of shape {shape} for 2 "
            "examples; the head fitted by adapt needs 2-D embeddings (n, "
            "n_embedding). Flatten them in the module (e.g. end the body with "
            "torch.nn.Flatten()).")


def _output_shape(module, X):
    """Output shape for rows ``X``, in eval mode (BatchNorm statistics are
    left alone), without gradients."""
    training = module.training
    module.eval()
    with torch.no_grad():
        shape = tuple(module(torch.as_tensor(X, device=_device(module))).shape)
    module.train(training)
    return shape


def _device(module):
    return next(module.parameters(), torch.empty(0)).device


def frozen_embedding(module, remove_head):
    """A CPU eval copy of a trained network, without its pooled-class head
    when ``remove_head``, for adapted estimators."""
    module = copy.deepcopy(module).cpu().eval().requires_grad_(False)
    if remove_head:
        module.head = torch.nn.Identity()
    return module


class PooledEmbeddingClassifier(MetaClassifierMixin, RoutedParamsMixin,
                                BaseEstimator):
    """An embedding trained on all training classes pooled, with a linear
    head per new task (RFS, Tian et al. 2020).

    ``fit`` pools every task's support and query examples (tasks keep their
    original labels, so the pooled label set is known) and trains the
    network to classify all pooled classes. ``adapt`` fits a scikit-learn
    head (logistic regression by default) on the support set's
    L2-normalised embeddings, the network without its pooled-class head.
    "A good embedding is all you need": a strong few-shot baseline, and the
    default teacher of :class:`MetaDistiller`.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network: an embedding ``body`` and a ``head`` over the pooled
        classes, like :class:`skmeta.nn.MLP` and :class:`skmeta.nn.ConvNet`.
        None means ``MLP``; ``in_features`` and ``out_features`` are set from
        the data. Configure a class with ``module__<name>`` parameters.
    head : scikit-learn classifier or None, default=None
        The per-task head fitted by ``adapt``; None means
        ``LogisticRegression(max_iter=1000)``.
    max_epochs : int, default=10
        Passes over the pooled examples.
    batch_size : int, default=64
        Examples per optimisation step.
    lr : float, default=1e-3
        Adam's learning rate.
    validation_fraction : float or None, default=None
        Fraction of the pooled examples held out to report ``valid_loss``.
    device : str, default="cpu"
        Torch device for training.
    callbacks : list of skorch callbacks or None, default=None
    verbose : int, default=0
        If positive, print an epoch log and a progress bar.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, example order and task splits.
    **kwargs
        ``module__<name>`` parameters, passed to the module's constructor.

    Attributes
    ----------
    classes_ : ndarray of shape (n_pooled_classes,)
        The pooled labels of all training tasks.
    net_ : skorch.NeuralNet
        The trained network; ``net_.module_`` includes the pooled head.
    embedding_ : torch.nn.Module
        CPU copy of the network without its pooled head.
    history_ : skorch.History
        Losses per epoch.
    n_features_in_ : int

    Examples
    --------
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.distill import PooledEmbeddingClassifier
    >>> from skmeta.tasks import EpisodeSampler
    >>> digits = load_digits_tasks()
    >>> train = digits.target < 20
    >>> tasks = EpisodeSampler(digits.data[train], digits.target[train], n_way=5,
    ...                        k_shot=1, n_query=5, n_tasks=64, random_state=0)
    >>> model = PooledEmbeddingClassifier(max_epochs=2, random_state=0).fit(tasks)
    >>> model.classes_.shape
    (20,)
    >>> model.adapt(tasks[0].X_support, tasks[0].y_support).predict(
    ...     tasks[0].X_query).shape
    (25,)
    """

    def __init__(self, module=None, *, head=None, max_epochs=10, batch_size=64,
                 lr=1e-3, validation_fraction=None, device="cpu", callbacks=None,
                 verbose=0, random_state=None, **kwargs):
        self.module = module
        self.head = head
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    @property
    def history_(self):
        """The skorch ``History`` of training."""
        return self.net_.history

    def _fit(self, tasks):
        X, labels = pool_tasks(tasks)
        self.classes_, y = np.unique(labels, return_inverse=True)
        seed = check_random_state(self.random_state).randint(2**31)
        self.net_ = fit_pooled_net(
            self, MLP if self.module is None else self.module,
            self._routed_params("module__"), X, y, len(self.classes_), lr=self.lr,
            seed=seed, role="module")
        self.embedding_ = frozen_embedding(self.net_.module_, remove_head=True)

    def _adapt(self, X_support, y_support):
        return EmbeddingHeadClassifier(self.embedding_, self.head).fit(
            X_support, y_support)

    def pooled_logits(self, X):
        """Logits over the pooled training classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        logits : ndarray of shape (n_samples, n_pooled_classes)
            Columns in the order of ``classes_``.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        return self.net_.forward(X, training=False).cpu().numpy()
