"""Prototypical networks (Snell et al., 2017): classify by the nearest class
mean in a meta-learned embedding."""

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions

from ._learner import SHARED_CONSTRAINTS, TorchLearner, shared_params_doc
from ._nets import NetSpec, SkmetaNet, TaskDataset, frozen_copy
from ._prototypes import (
    DISTANCES,
    PrototypeBatch,
    logits_from_prototypes,
    query_logits,
)
from .base import N_JOBS_CONSTRAINT, AdaptedClassifier, MetaClassifierMixin
from .nn import MLP


class PrototypeClassifier(AdaptedClassifier):
    """Nearest-prototype classifier in a fixed embedding.

    ``fit`` computes each class's prototype, the mean embedding of its
    examples; ``predict_proba`` is the softmax of the negative distances to
    the prototypes (``distance``). This is what
    :meth:`ProtoNetClassifier.adapt` returns; with ``embedding=None`` it is a
    plain nearest-centroid classifier on the raw features.

    Parameters
    ----------
    embedding : torch.nn.Module or None, default=None
        Maps a float tensor of shape (n, n_features) to embeddings; used in
        eval mode, on the CPU, without gradients. None means the identity.
    distance : {"sqeuclidean", "euclidean", "cosine"}, default="sqeuclidean"
        Squared Euclidean distance (Snell et al. 2017), Euclidean distance,
        or cosine similarity (times 10, as logits). Nearest-prototype
        predictions are the same for both Euclidean ones.

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

    def __init__(self, embedding=None, distance="sqeuclidean"):
        self.embedding = embedding
        self.distance = distance

    def _embed(self, X):
        """``(start, embeddings)`` of X's rows, a chunk at a time: a task of
        millions of rows never holds all its embeddings (nor the embedding
        network's activations for all its rows) at once."""
        rows = max(16, min(4096, _CHUNK_VALUES // X.shape[1]))
        try:
            for start in range(0, len(X), rows):
                chunk = X[start:start + rows]
                if self.embedding is None:
                    embedded = chunk.astype(np.float64)
                else:
                    with torch.no_grad():
                        embedded = self.embedding(torch.from_numpy(chunk))
                    embedded = embedded.double().numpy()
                yield start, embedded
        except RuntimeError as error:
            raise ValueError(f"The embedding cannot take X of shape {X.shape}: "
                             f"{error}") from error

    def _fit_encoded(self, X, y):
        sums = None
        for start, embedded in self._embed(X):
            if sums is None:
                sums = np.zeros((len(self.classes_), embedded.shape[1]))
            np.add.at(sums, y[start:start + len(embedded)], embedded)
        counts = np.bincount(y, minlength=len(self.classes_))
        self.prototypes_ = sums / counts[:, None]

    def _predict_proba(self, X):
        proba = np.empty((len(X), len(self.classes_)))
        prototypes = torch.from_numpy(self.prototypes_)
        for start, embedded in self._embed(X):
            logits = logits_from_prototypes(torch.from_numpy(embedded), prototypes,
                                            self.distance)
            proba[start:start + len(embedded)] = torch.softmax(logits, 1).numpy()
        return proba


# Input values PrototypeClassifier embeds at a time (rows times features).
_CHUNK_VALUES = 2**18


class ProtoNetNet(SkmetaNet):
    """skorch core of :class:`ProtoNetClassifier`: the module is the
    embedding; each task's query rows are classified by their distances
    (``distance``) to the task's class prototypes."""

    def __init__(self, *args, distance="sqeuclidean", **kwargs):
        self.distance = distance
        super().__init__(*args, **kwargs)

    def collate(self, tasks):
        return PrototypeBatch.collate(tasks)

    def batch_loss(self, batch, training):
        batch = batch.to(self.device)
        logits = query_logits(self.infer, batch, self.distance)
        # the mean over all query rows: each task weighs by its query rows
        loss = self.get_loss(logits, batch.y_query, training=training)
        correct = int((logits.argmax(1) == batch.y_query).sum())
        return loss, correct / len(batch.y_query)


class ProtoNetClassifier(MetaClassifierMixin, TorchLearner):
    __doc__ = """Prototypical networks: a meta-learned embedding plus nearest class
    mean.

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
    distance : {"sqeuclidean", "euclidean", "cosine"}, default="sqeuclidean"
        How query embeddings are compared with the prototypes, in training
        and in the adapted classifier: negative squared Euclidean distances
        (Snell et al.'s choice), negative Euclidean distances (as easyfsl's
        ``PrototypicalNetworks``), or cosine similarities times 10. On the
        rotated-digits benchmark (5-way tasks of unseen classes) squared
        Euclidean beat Euclidean with the default MLP embedding in each of 5
        training runs, by 1.5 to 3.4 points at 1 shot and 1.3 to 2.6 at 5
        shots (in easyfsl's own training loop too); with the two-block
        :class:`~skmeta.nn.ConvNet` Euclidean was ahead by 0.5 to 2.5 points
        at 1 shot and 0.1 to 0.7 at 5 shots (3 runs), level with the default
        Conv-4; cosine trailed by about 20 points. Hence the default; try
        "euclidean" with a convolutional embedding (see
        ``benchmarks/results/protonet.md``).
    n_jobs : int or None, default=None
        Parallel jobs for the per-task work of ``predict`` and ``score``
        (adapting and evaluating each task), through joblib: None means 1
        unless a ``joblib.parallel_backend`` context (e.g. Dask, Ray) says
        otherwise.
""" + shared_params_doc(max_epochs=10, meta_batch_size=8) + """
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The meta-trained torch core; ``net_.module_`` is the embedding.
    embedding_ : torch.nn.Module
        CPU copy of the meta-learned embedding, used by ``adapt``.
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

    _parameter_constraints = {**SHARED_CONSTRAINTS, "n_jobs": N_JOBS_CONSTRAINT,
                              "distance": [StrOptions(set(DISTANCES))]}

    def __init__(self, module=None, *, distance="sqeuclidean", max_epochs=10,
                 meta_batch_size=8, meta_lr=1e-3, shuffle=True,
                 validation_fraction=None, device="cpu", callbacks=None, n_jobs=None,
                 verbose=0, random_state=None, **kwargs):
        self.module = module
        self.distance = distance
        self.max_epochs = max_epochs
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    def _net_spec(self, tasks):
        return NetSpec(ProtoNetNet, MLP if self.module is None else self.module,
                       TaskDataset(tasks),
                       data_kwargs={"in_features": tasks[0].X_support.shape[1]},
                       routed=self._routed_params("module__", strip=True),
                       params={"criterion": torch.nn.CrossEntropyLoss,
                               "distance": self.distance})

    def _fitted_state(self, net, tasks):
        return {"embedding_": frozen_copy(net.module_)}

    def _adapt(self, X_support, y_support):
        return PrototypeClassifier(embedding=self.embedding_,
                                   distance=self.distance).fit(X_support, y_support)
