import json
import re

import numpy as np
import pytest

from skmeta import ProtoNetClassifier
from skmeta.datasets import make_sinusoid_tasks
from skmeta.tasks import EpisodeSampler, Task, TaskStore


def test_store_round_trips_tasks_exactly(tmp_path, train_tasks):
    tasks = [Task(t.X_support, np.char.add("c", t.y_support.astype(str)),
                  t.X_query, np.char.add("c", t.y_query.astype(str)))
             for t in train_tasks[:20]]
    store = TaskStore.write(tmp_path / "store", tasks)
    reopened = TaskStore(tmp_path / "store")
    assert len(reopened) == 20
    for original, stored in zip(tasks, reopened, strict=True):
        np.testing.assert_array_equal(stored.X_support, original.X_support)
        np.testing.assert_array_equal(stored.X_query, original.X_query)
        np.testing.assert_array_equal(stored.y_support, original.y_support)
        np.testing.assert_array_equal(stored.y_query, original.y_query)
    assert isinstance(store.X, np.memmap)
    assert (tmp_path / "store" / "X.f32").stat().st_size == store.X.size * 4


def test_regression_store_keeps_float_targets(tmp_path):
    tasks = make_sinusoid_tasks(30, random_state=0)
    store = TaskStore.write(tmp_path, tasks, task_type="regression")
    np.testing.assert_array_equal(store[7].y_query, tasks[7].y_query)
    assert store[7].y_query.dtype == np.float64


def test_learners_fit_on_a_store_and_episodes_come_from_its_pool(tmp_path,
                                                                train_tasks,
                                                                test_tasks):
    store = TaskStore.write(tmp_path, train_tasks)
    from_store = ProtoNetClassifier(max_epochs=1, random_state=0).fit(store)
    in_memory = ProtoNetClassifier(max_epochs=1, random_state=0).fit(
        list(train_tasks))
    assert from_store.score(test_tasks) == in_memory.score(test_tasks)
    X, y = store.pool()
    sampler = EpisodeSampler(X, y, n_way=5, k_shot=1, n_query=5, n_tasks=10,
                             random_state=0)
    assert np.shares_memory(sampler.X, X)  # episodes read the memory map
    assert set(sampler[0].y_support) <= set(np.unique(y))


def test_store_errors_say_what_to_do(tmp_path, train_tasks):
    TaskStore.write(tmp_path / "a", train_tasks[:2])
    with pytest.raises(FileExistsError, match="is not empty"):
        TaskStore.write(tmp_path / "a", train_tasks[:2])
    with pytest.raises(FileNotFoundError, match=re.escape(
            "is not a TaskStore folder (no meta.json)")):
        TaskStore(tmp_path)
    meta = tmp_path / "a" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99; this skmeta reads "
                       "version 1. Write it again."):
        TaskStore(tmp_path / "a")
