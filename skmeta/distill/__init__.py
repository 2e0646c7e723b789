"""Knowledge distillation: a pooled-class embedding learner (RFS) and
:class:`MetaDistiller`, which distils a large meta-learner into a small
student network."""

from .._heads import CentroidHead, EmbeddingHeadClassifier
from ._loss import SoftTargetLoss, soft_target_loss
from .meta_distiller import MetaDistiller
from .pooled import PooledEmbeddingClassifier

__all__ = ["CentroidHead", "EmbeddingHeadClassifier", "MetaDistiller",
           "PooledEmbeddingClassifier", "SoftTargetLoss", "soft_target_loss"]
