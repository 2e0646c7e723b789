"""Per-task heads on a fixed embedding: what an embedding learner's ``adapt``
returns."""

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from ._pooled import predict_rows
from .base import AdaptedClassifier


class EmbeddingHeadClassifier(AdaptedClassifier):
    """A scikit-learn classifier on a fixed network's L2-normalised embedding.

    ``fit`` embeds the task's examples, scales each embedding to unit length
    and fits a clone of ``head`` on them; prediction embeds the same way.
    This is what :meth:`skmeta.distill.PooledEmbeddingClassifier.adapt` and
    :meth:`skmeta.MetaDistiller.adapt` return.

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
        embedded = (X.astype(np.float64) if self.embedding is None
                    else predict_rows(self.embedding, X))
        norms = np.linalg.norm(embedded, axis=1, keepdims=True)
        return embedded / np.maximum(norms, 1e-12)

    def _fit_encoded(self, X, y):
        head = LogisticRegression(max_iter=1000) if self.head is None else self.head
        self.head_ = clone(head).fit(self._embed(X), y)

    def _predict_proba(self, X):
        return self.head_.predict_proba(self._embed(X))
