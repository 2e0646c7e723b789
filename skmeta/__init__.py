"""skmeta: meta-learning as scikit-learn estimators."""

from .maml import MAMLClassifier, MAMLRegressor
from .pipeline import TaskWise, adapt
from .protonet import ProtoNetClassifier
from .tasks import Task

__version__ = "0.1.0"
__all__ = ["MAMLClassifier", "MAMLRegressor", "ProtoNetClassifier", "Task", "TaskWise",
           "adapt", "__version__"]
