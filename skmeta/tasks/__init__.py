"""Tasks and task collections: the data a meta-learner learns from."""

from ._sampler import EpisodeSampler, train_test_split_classes
from ._store import TaskStore
from ._task import Task
from ._validation import check_tasks

__all__ = [
    "EpisodeSampler", "Task", "TaskStore", "check_tasks", "train_test_split_classes",
]
