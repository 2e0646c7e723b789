"""Task datasets: bundled, synthetic and read from local disk."""

from ._digits import load_digits_tasks
from ._omniglot import load_omniglot
from ._sinusoid import SinusoidTasks, make_sinusoid_tasks

__all__ = ["SinusoidTasks", "load_digits_tasks", "load_omniglot",
           "make_sinusoid_tasks"]
