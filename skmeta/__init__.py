"""skmeta: meta-learning as scikit-learn estimators."""

from ._version import __version__
from .bayes import MetaBayesianRidge
from .distill import MetaDistiller
from .fusion import MetaFusionClassifier
from .maml import MAMLClassifier, MAMLRegressor
from .pipeline import TaskWise, adapt
from .protonet import ProtoNetClassifier
from .tasks import Task

__all__ = ["MAMLClassifier", "MAMLRegressor", "MetaBayesianRidge", "MetaDistiller",
           "MetaFusionClassifier", "ProtoNetClassifier", "Task", "TaskWise",
           "adapt", "__version__"]
