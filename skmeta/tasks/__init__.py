"""Tasks and task collections: the data a meta-learner learns from."""

from ._sampler import EpisodeSampler, train_test_split_classes
from ._store import TaskStore
from ._task import MappedTasks, Task, encode_labels, labelled_examples, pool_tasks
from ._validation import check_tasks

__all__ = [
    "EpisodeSampler", "MappedTasks", "Task", "TaskStore", "check_tasks",
    "encode_labels", "labelled_examples", "pool_tasks", "train_test_split_classes",
]
