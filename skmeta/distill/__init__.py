"""Knowledge distillation: a pooled-class embedding learner (RFS) and
:class:`MetaDistiller`, which distils a large meta-learner into a small
student network."""

from ._loss import soft_target_loss
from .meta_distiller import MetaDistiller
from .pooled import EmbeddingHeadClassifier, PooledEmbeddingClassifier

__all__ = ["EmbeddingHeadClassifier", "MetaDistiller", "PooledEmbeddingClassifier",
           "soft_target_loss"]
