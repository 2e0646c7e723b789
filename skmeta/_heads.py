"""Per-task heads on a fixed embedding: what an embedding learner's ``adapt``
returns."""

from numbers import Real

import numpy as np
from scipy.special import softmax
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from ._pooled import predict_rows
from .base import AdaptedClassifier

#: ``head`` values: a name for the built-in heads, or a scikit-learn classifier.
HEAD_CONSTRAINT = [StrOptions({"centroid", "logistic"}),
                   HasMethods(["fit", "predict_proba"])]
HEAD_DOC = """head : {"centroid", "logistic"} or classifier, default="centroid"
        The per-task head fitted by ``adapt`` on the support set's
        L2-normalised embeddings. "centroid": nearest class mean (no fitting
        beyond a mean per class, so adapting costs little more than the
        forward pass); "logistic": ``LogisticRegression(max_iter=1000)``, as
        RFS uses (several milliseconds more per task). A classifier (with
        ``predict_proba``) is cloned and fitted."""


class CentroidHead(AdaptedClassifier):
    """Nearest class mean: the head that ``head="centroid"`` fits on
    unit-length embeddings.

    ``fit`` stores each class's mean row; ``predict_proba`` is
    ``softmax(-scale * ||x - c_k||**2)`` over the class means ``c_k``. On
    unit-length rows the squared distances lie in [0, 4]; ``scale`` only sets
    how sharp the probabilities are, never which class is predicted.

    Parameters
    ----------
    scale : float, default=10.0
        Inverse temperature of the probabilities (> 0).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    centroids_ : ndarray of shape (n_classes, n_features)
        Mean row of each class, in the order of ``classes_``.

    Examples
    --------
    >>> from skmeta.distill import CentroidHead
    >>> clf = CentroidHead().fit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], [0, 0, 1])
    >>> clf.centroids_.tolist()
    [[0.8999999761581421, 0.30000001192092896], [0.0, 1.0]]
    >>> clf.predict([[0.6, 0.8]]).tolist()
    [0]
    """

    _parameter_constraints = {"scale": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, scale=10.0):
        self.scale = scale

    def _fit_encoded(self, X, y):
        self.centroids_ = np.stack([X[y == c].mean(axis=0)
                                    for c in range(len(self.classes_))])

    def _predict_proba(self, X):
        distances = (np.square(X).sum(1)[:, None] - 2 * X @ self.centroids_.T
                     + np.square(self.centroids_).sum(1)[None, :])
        return softmax(-self.scale * distances, axis=1)


def make_head(head):
    """An unfitted head for a ``head`` parameter value."""
    if head == "centroid":
        return CentroidHead()
    if head == "logistic":
        return LogisticRegression(max_iter=1000)
    return clone(head)


class EmbeddingHeadClassifier(AdaptedClassifier):
    __doc__ = """A classifier on a fixed network's L2-normalised embedding.

    ``fit`` embeds the task's examples, scales each embedding to unit length
    and fits the head on them; prediction embeds the same way. This is what
    :meth:`skmeta.distill.PooledEmbeddingClassifier.adapt` and
    :meth:`skmeta.MetaDistiller.adapt` return.

    Parameters
    ----------
    embedding : torch.nn.Module or None, default=None
        Maps a float tensor of shape (n, n_features) to embeddings of shape
        (n, n_embedding); used as given (eval mode, on the CPU). None means
        the identity.
    """ + HEAD_DOC + """

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    head_ : scikit-learn classifier
        The fitted head (on class indices ``0..n_classes-1``); for
        ``head="centroid"`` a :class:`CentroidHead` whose ``centroids_`` are
        the class means of the unit-length embeddings.

    Examples
    --------
    >>> from skmeta.distill import EmbeddingHeadClassifier
    >>> clf = EmbeddingHeadClassifier().fit([[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
    >>> clf.predict([[3.0, 0.5], [0.0, 2.0]]).tolist()
    ['a', 'b']
    >>> clf.head_.centroids_.tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """

    _parameter_constraints = {"embedding": [HasMethods(["__call__"]), None],
                              "head": HEAD_CONSTRAINT}

    def __init__(self, embedding=None, head="centroid"):
        self.embedding = embedding
        self.head = head

    def _embed(self, X):
        embedded = (X.astype(np.float64) if self.embedding is None
                    else predict_rows(self.embedding, X))
        norms = np.linalg.norm(embedded, axis=1, keepdims=True)
        return embedded / np.maximum(norms, 1e-12)

    def _fit_encoded(self, X, y):
        head, embedded = make_head(self.head), self._embed(X)
        if isinstance(head, CentroidHead):  # validated already: fit directly
            head._validate_params()
            head.classes_ = np.arange(len(self.classes_))
            head.n_features_in_ = embedded.shape[1]
            head._fit_encoded(embedded, y)
            self.head_ = head
        else:
            self.head_ = head.fit(embedded, y)

    def _predict_proba(self, X):
        if isinstance(self.head_, CentroidHead):
            return self.head_._predict_proba(self._embed(X))
        return self.head_.predict_proba(self._embed(X))
