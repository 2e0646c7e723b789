"""Pooled-class embedding learning (RFS, Tian et al. 2020): train a network
to classify every training class at once, then give each new task a linear
head on the network's L2-normalised embedding."""

import numpy as np

from .._heads import HEAD_CONSTRAINT, HEAD_DOC, EmbeddingHeadClassifier
from .._learner import SHARED_CONSTRAINTS, TorchLearner, shared_params_doc
from .._nets import Training, frozen_copy
from .._pooled import pooled_spec, predict_rows, without_head
from ..base import MetaClassifierMixin
from ..nn import MLP
from ..tasks import pool_tasks


class PooledEmbeddingClassifier(MetaClassifierMixin, TorchLearner):
    __doc__ = """An embedding trained on all training classes pooled, with a linear
    head per new task (RFS, Tian et al. 2020).

    ``fit`` pools every task's support and query examples (tasks keep their
    original labels, so the pooled label set is known) and trains the
    network to classify all pooled classes. ``adapt`` fits a head (the
    nearest class mean by default) on the support set's
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
    """ + HEAD_DOC + """
    max_epochs : int, default=10
        Passes over the pooled examples.
    batch_size : int, default=64
        Examples per optimisation step.
    lr : float, default=1e-3
        Adam's learning rate.
""" + shared_params_doc(max_epochs=None) + """
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

    _parameter_constraints = {**SHARED_CONSTRAINTS,
                              "head": HEAD_CONSTRAINT}

    def __init__(self, module=None, *, head="centroid", max_epochs=10, batch_size=64,
                 lr=1e-3, shuffle=True, validation_fraction=None, device="cpu",
                 callbacks=None, verbose=0, random_state=None, **kwargs):
        self.module = module
        self.head = head
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    def _training(self, tasks):
        return Training(max_epochs=self.max_epochs, batch_size=self.batch_size,
                        lr=self.lr, device=self.device, callbacks=self.callbacks,
                        verbose=self.verbose,
                        validation_fraction=self.validation_fraction,
                        shuffle=self.shuffle)

    def _net_spec(self, tasks):
        X, labels = pool_tasks(tasks)
        classes, y = np.unique(labels, return_inverse=True)
        return pooled_spec(MLP if self.module is None else self.module,
                           self._routed_params("module__", strip=True), X, y,
                           len(classes), "module")

    def _fitted_state(self, net, tasks):
        return {"classes_": np.unique(pool_tasks(tasks)[1]),
                "embedding_": without_head(frozen_copy(net.module_))}

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
        return predict_rows(self.net_.module_, np.ascontiguousarray(X, np.float32))
