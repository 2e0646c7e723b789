import os

import numpy as np
import pytest
from hypothesis import settings

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.tasks import EpisodeSampler

# The same examples on every run, so that a test run is repeatable; set
# HYPOTHESIS_PROFILE=explore to search many new ones.
settings.register_profile("repeatable", max_examples=40, derandomize=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def digits():
    return load_digits_tasks()


def _episodes(digits, classes, n_tasks, seed, n_query=5):
    pool = np.isin(digits.target, classes)
    return EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                          k_shot=1, n_query=n_query, n_tasks=n_tasks,
                          random_state=seed)


@pytest.fixture(scope="session")
def train_tasks(digits):
    """5-way 1-shot episodes over the 28 training classes."""
    return _episodes(digits, digits.train_classes, 300, seed=0)


@pytest.fixture(scope="session")
def test_tasks(digits):
    """5-way 1-shot episodes over the 12 unseen test classes."""
    return _episodes(digits, digits.test_classes, 60, seed=1, n_query=10)


@pytest.fixture(scope="session")
def protonet(train_tasks):
    """A small ProtoNet meta-trained on the digits training classes."""
    return ProtoNetClassifier(max_epochs=2, random_state=0).fit(train_tasks)
