"""Prototypical networks (Snell et al., 2017): classify by the nearest class
mean in a meta-learned embedding."""

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax

from ._episodic import EpisodicLearner, EpisodicNet
from .base import AdaptedClassifier, MetaClassifierMixin
from .tasks._task import encode_labels


class PrototypeClassifier(AdaptedClassifier):
    """Nearest-prototype classifier in a fixed embedding.

    ``fit`` computes each class's prototype, the mean embedding of its
    examples; ``predict_proba`` is the softmax of negative squared Euclidean
    distances to the prototypes. This is what
    :meth:`ProtoNetClassifier.adapt` returns; with ``embedding=None`` it is a
    plain nearest-centroid classifier on the raw features.

    Parameters
    ----------
    embedding : torch.nn.Module or None, default=None
        Maps a float tensor of shape (n, n_features) to embeddings; used in
        eval mode, on the CPU, without gradients. None means the identity.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    prototypes_ : ndarray of shape (n_classes, n_embedding)
        Mean embedding per class.

    Examples
    --------
    >>> from skmeta.protonet import PrototypeClassifier
    >>> clf = PrototypeClassifier().fit([[0.0, 0.0], [4.0, 4.0]], ["a", "b"])
    >>> clf.predict([[1.0, 0.5], [3.0, 5.0]]).tolist()
    ['a', 'b']
    """

    def __init__(self, embedding=None):
        self.embedding = embedding

    def _embed(self, X):
        if self.embedding is None:
            return X.astype(np.float64)
        try:
            with torch.no_grad():
                return self.embedding(torch.from_numpy(X)).double().numpy()
        except RuntimeError as error:
            raise ValueError(f"The embedding cannot take X of shape {X.shape}: "
                             f"{error}") from error

    def _fit_encoded(self, X, y):
        embedded = self._embed(X)
        self.prototypes_ = np.stack([embedded[y == c].mean(axis=0)
                                     for c in range(len(self.classes_))])

    def _predict_proba(self, X):
        embedded = self._embed(X)
        distances = (np.square(embedded).sum(1)[:, None]
                     - 2 * embedded @ self.prototypes_.T
                     + np.square(self.prototypes_).sum(1)[None, :])
        return softmax(-distances, axis=1)


@dataclass
class PrototypeBatch:
    """A meta-batch of tasks for prototypical training: all tasks' rows
    stacked, labels offset so that each task's classes get their own ids."""

    X_support: torch.Tensor
    y_support: torch.Tensor
    X_query: torch.Tensor
    y_query: torch.Tensor
    class_task: torch.Tensor
    query_task: torch.Tensor

    def __len__(self):
        return int(self.class_task.max()) + 1

    @classmethod
    def collate(cls, tasks):
        """Stack a list of validated tasks, which may differ in their numbers
        of classes and examples."""
        ys, yq, class_task, query_task, offset = [], [], [], [], 0
        for index, task in enumerate(tasks):
            classes, y_support, y_query = encode_labels(task)
            ys.append(y_support + offset)
            yq.append(y_query + offset)
            class_task.append(np.full(len(classes), index))
            query_task.append(np.full(len(task.y_query), index))
            offset += len(classes)
        return cls(*(torch.as_tensor(np.concatenate(a)) for a in (
            [t.X_support for t in tasks], ys, [t.X_query for t in tasks], yq,
            class_task, query_task)))


class ProtoNetCore(EpisodicNet):
    """skorch core of :class:`ProtoNetClassifier`: the module is the
    embedding; each task's query rows are classified by their squared
    distances to the task's class prototypes."""

    def episode_loss(self, batch, training):
        logits, y_query = self.prototype_logits(batch)
        loss = self.get_loss(logits, y_query, training=training)
        accuracy = (logits.argmax(1) == y_query).float().mean()
        return loss, accuracy

    def prototype_logits(self, batch):
        """Negative squared distances of every query row to its task's
        prototypes (-inf for other tasks' classes), and the query labels,
        both on the core's device."""
        batch = PrototypeBatch(*(t.to(self.device) for t in vars(batch).values()))
        n_support = len(batch.X_support)
        embedded = self.infer(torch.cat([batch.X_support, batch.X_query]))
        support, query = embedded[:n_support], embedded[n_support:]
        n_classes = len(batch.class_task)
        counts = torch.bincount(batch.y_support, minlength=n_classes)
        prototypes = torch.zeros(n_classes, support.shape[1], device=support.device,
                                 dtype=support.dtype).index_add_(0, batch.y_support,
                                                                 support)
        prototypes = prototypes / counts[:, None]
        distances = (query.square().sum(1, keepdim=True) - 2 * query @ prototypes.T
                     + prototypes.square().sum(1)).clamp_min(0)
        other_task = batch.query_task[:, None] != batch.class_task[None, :]
        return (-distances).masked_fill(other_task, -torch.inf), batch.y_query


class ProtoNetClassifier(MetaClassifierMixin, EpisodicLearner):
    """Prototypical networks: a meta-learned embedding plus nearest class mean.

    Meta-training learns an embedding in which each query example is closest
    to the mean embedding (prototype) of its class's support examples
    (Snell et al., 2017). Adapting to a new task only averages the support
    set's embeddings: no gradient steps, so it is fast and hard to overfit.
    The simple strong baseline of few-shot classification.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The embedding network. None means :class:`skmeta.nn.MLP`; its
        ``in_features`` is set from the data. Configure a class with
        ``module__<name>`` parameters, e.g. ``module=ConvNet,
        module__input_shape=(1, 8, 8)``.
    max_epochs : int, default=10
        Passes over the training task collection.
    meta_batch_size : int, default=8
        Tasks per meta-update.
    meta_lr : float, default=1e-3
        Adam's learning rate.
    validation_fraction : float or None, default=None
        Fraction of the training tasks held out to report ``valid_loss`` and
        ``valid_acc`` each epoch (use with
        :class:`skorch.callbacks.EarlyStopping`).
    device : str, default="cpu"
        Torch device for meta-training ("cuda" for a GPU).
    callbacks : list of skorch callbacks or None, default=None
        E.g. early stopping, checkpoints, learning-rate schedules.
    n_jobs : int or None, default=None
        Parallel jobs for the per-task work of ``predict`` and ``score``
        (adapting and evaluating each task), through joblib: None means 1
        unless a ``joblib.parallel_backend`` context (e.g. Dask, Ray) says
        otherwise.
    verbose : int, default=0
        If positive, print an epoch log and a progress bar.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, task order and task splits.
    **kwargs
        ``module__<name>`` parameters, passed to the module's constructor.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The meta-trained torch core; ``net_.module_`` is the embedding.
    history_ : skorch.History
        Losses and accuracies per epoch.
    n_features_in_ : int
        Features per example.

    Examples
    --------
    >>> from skmeta import ProtoNetClassifier
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.tasks import EpisodeSampler
    >>> digits = load_digits_tasks()
    >>> train = digits.target < 20
    >>> tasks = EpisodeSampler(digits.data[train], digits.target[train], n_way=5,
    ...                        k_shot=1, n_query=5, n_tasks=64, random_state=0)
    >>> model = ProtoNetClassifier(max_epochs=1, random_state=0).fit(tasks)
    >>> clf = model.adapt(tasks[0].X_support, tasks[0].y_support)
    >>> clf.predict(tasks[0].X_query).shape
    (25,)
    """

    _core = ProtoNetCore
    _collate = staticmethod(PrototypeBatch.collate)

    def __init__(self, module=None, *, max_epochs=10, meta_batch_size=8,
                 meta_lr=1e-3, validation_fraction=None, device="cpu",
                 callbacks=None, n_jobs=None, verbose=0, random_state=None,
                 **kwargs):
        self.module = module
        self.max_epochs = max_epochs
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    def _fit(self, tasks):
        super()._fit(tasks)
        self.embedding_ = self._frozen_module()

    def _adapt(self, X_support, y_support):
        return PrototypeClassifier(embedding=self.embedding_).fit(X_support, y_support)
