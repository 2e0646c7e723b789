"""skmeta: meta-learning as scikit-learn estimators."""

from .distill import MetaDistiller
from .pipeline import TaskWise, adapt
from .protonet import ProtoNetClassifier
from .tasks import Task

__version__ = "0.1.0"
__all__ = ["MetaDistiller", "ProtoNetClassifier", "Task", "TaskWise", "adapt",
           "__version__"]
