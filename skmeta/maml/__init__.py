"""The MAML family: gradient-based meta-learning, batched over tasks."""

from ._estimators import (
                          MAMLAdaptedClassifier,
                          MAMLAdaptedRegressor,
                          MAMLClassifier,
                          MAMLRegressor,
)

__all__ = ["MAMLAdaptedClassifier", "MAMLAdaptedRegressor", "MAMLClassifier",
           "MAMLRegressor"]
