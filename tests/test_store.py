import fcntl
import json
import multiprocessing
import os
import queue
import re
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from skmeta import ProtoNetClassifier
from skmeta.datasets import make_sinusoid_tasks
from skmeta.tasks import EpisodeSampler, Task, TaskStore, _store
from skmeta.tasks._store import FORMAT_VERSION


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
                       f"version {FORMAT_VERSION}. Write it again."):
        TaskStore(tmp_path / "a")


# ------------------------------------------------------------------ reliability


def _tasks(n_tasks, labels=(0, 1), seed=0):
    """Small classification tasks with the given two labels (any dtype)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(labels)[:1], np.asarray(labels)[1:2]
    y_support, y_query = np.concatenate([a, b, a, b]), np.concatenate([a, b])
    return [Task(rng.normal(size=(4, 3)), y_support, rng.normal(size=(2, 3)),
                 y_query) for _ in range(n_tasks)]


def _assert_holds(store, tasks):
    assert len(store) == len(tasks)
    for original, stored in zip(tasks, store, strict=True):
        np.testing.assert_array_equal(stored.X_support,
                                      original.X_support.astype(np.float32))
        np.testing.assert_array_equal(stored.X_query,
                                      original.X_query.astype(np.float32))
        np.testing.assert_array_equal(stored.y_support, original.y_support)
        np.testing.assert_array_equal(stored.y_query, original.y_query)


class _Tasks(Sequence):
    """Tasks read one by one, slowly, or failing at task ``fail_at``."""

    def __init__(self, tasks, delay=0.0, fail_at=None, error=RuntimeError):
        self.tasks, self.delay, self.fail_at, self.error = (tasks, delay, fail_at,
                                                            error)

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, index):
        if index == self.fail_at:
            raise self.error("injected failure")
        time.sleep(self.delay)
        return self.tasks[index]


def test_write_leaves_only_the_store(tmp_path):
    TaskStore.write(tmp_path / "store", _tasks(3))
    assert os.listdir(tmp_path) == ["store"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_or_interrupted_write_leaves_nothing(tmp_path, error):
    failing = _Tasks(_tasks(10), fail_at=6, error=error)
    with pytest.raises(error, match="injected failure"):
        TaskStore.write(tmp_path / "store", failing)
    assert os.listdir(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match="injected failure"):
        TaskStore.write(tmp_path / "empty", failing)
    assert os.listdir(tmp_path) == ["empty"]
    assert os.listdir(tmp_path / "empty") == []


def test_failed_overwrite_keeps_the_old_store(tmp_path):
    old = _tasks(5, labels=("a", "b"))
    TaskStore.write(tmp_path / "store", old)
    with pytest.raises(KeyboardInterrupt):
        TaskStore.write(tmp_path / "store", _Tasks(_tasks(9), fail_at=4,
                                                   error=KeyboardInterrupt),
                        overwrite=True)
    _assert_holds(TaskStore(tmp_path / "store", verify=True), old)
    assert os.listdir(tmp_path) == ["store"]


def test_writes_left_by_a_killed_writer_are_cleaned_up(tmp_path):
    stale = tmp_path / ".store.skmeta-tmp-0123456789abcdef"
    stale.mkdir()
    (stale / "X.f32").write_bytes(b"half")
    (tmp_path / ".store.lock").touch()  # its lock died with it
    others = tmp_path / ".other.skmeta-tmp-0123456789abcdef"
    others.mkdir()
    TaskStore.write(tmp_path / "store", _tasks(3))
    assert sorted(os.listdir(tmp_path)) == [others.name, "store"]


def _race(target, tasks, barrier, outcomes, name):
    tasks = _Tasks(tasks, delay=0.005)
    barrier.wait()
    try:
        TaskStore.write(target, tasks)
        outcomes.put((name, None))
    except (BlockingIOError, FileExistsError) as error:
        outcomes.put((name, str(error)))


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_two_racing_writers_one_fails_and_the_store_is_the_others(tmp_path, kind):
    target = tmp_path / "store"
    mine = {"a": _tasks(40, labels=("a0", "a1"), seed=1),
            "b": _tasks(40, labels=("b0", "b1"), seed=2)}
    if kind == "threads":
        Writer, barrier = threading.Thread, threading.Barrier(2)
        outcomes = queue.Queue()
    else:
        fork = multiprocessing.get_context("fork")
        Writer, barrier, outcomes = fork.Process, fork.Barrier(2), fork.Queue()
    writers = [Writer(target=_race, args=(target, tasks, barrier, outcomes, name))
               for name, tasks in mine.items()]
    for writer in writers:
        writer.start()
    outcome = dict(outcomes.get(timeout=60) for _ in writers)
    for writer in writers:
        writer.join(timeout=60)
    [winner] = [name for name, error in outcome.items() if error is None]
    [error] = [error for error in outcome.values() if error is not None]
    assert f"TaskStore at {target}: another process or thread" in error
    _assert_holds(TaskStore(target, verify=True), mine[winner])
    assert os.listdir(tmp_path) == ["store"]


def test_a_second_writer_fails_while_the_first_holds_the_lock(tmp_path):
    with open(tmp_path / ".store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError, match=re.escape(
                f"TaskStore at {tmp_path / 'store'}: another process or thread "
                "is writing this store")):
            TaskStore.write(tmp_path / "store", _tasks(3))
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("exchange", [True, False],
                         ids=["renameat2 exchange", "two renames"])
def test_rewrite_does_not_change_what_an_open_store_reads(tmp_path, monkeypatch,
                                                          exchange):
    if not exchange:
        monkeypatch.setattr(_store, "_exchange", lambda temp, target: False)
    old, new = _tasks(10, labels=("a", "b")), _tasks(12, labels=(5, 6), seed=1)
    reader = TaskStore.write(tmp_path / "store", old)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        TaskStore.write(tmp_path / "store", new)
    X_before = np.array(reader.X)
    TaskStore.write(tmp_path / "store", new, overwrite=True)
    np.testing.assert_array_equal(reader.X, X_before)
    _assert_holds(reader, old)
    _assert_holds(TaskStore(tmp_path / "store"), new)
    assert os.listdir(tmp_path) == ["store"]


def test_write_keeps_the_permissions_of_the_folder_it_fills(tmp_path):
    (tmp_path / "private").mkdir(mode=0o700)
    TaskStore.write(tmp_path / "private", _tasks(3))
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


def test_overwrite_replaces_only_a_store(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a TaskStore"):
        TaskStore.write(tmp_path / "notes", _tasks(3), overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


@pytest.mark.parametrize("labels", [
    np.array([3, 7], dtype=np.int64), np.array([3, 7], dtype=np.int32),
    np.array([3, 7], dtype=np.uint8), np.array([True, False]),
    np.array(["cat", "dog"]), np.array([b"x", b"yy"]), np.array([1.0, 2.0]),
], ids=lambda labels: str(labels.dtype))
def test_labels_read_back_with_their_dtype(tmp_path, labels):
    tasks = _tasks(4, labels=labels)
    store = TaskStore.write(tmp_path / "store", tasks)
    assert store[2].y_support.dtype == labels.dtype
    assert store.y.dtype == labels.dtype
    _assert_holds(TaskStore(tmp_path / "store"), tasks)


def test_string_labels_of_any_length_and_object_arrays(tmp_path):
    tasks = [*_tasks(2, labels=("a", "bb")), *_tasks(2, labels=("ccc", "a"))]
    _assert_holds(TaskStore.write(tmp_path / "str", tasks), tasks)
    objects = _tasks(2, labels=np.array([4, 9], dtype=object))
    assert TaskStore.write(tmp_path / "obj", objects).y.tolist() == [4, 9] * 6


@pytest.mark.parametrize("other, message", [
    (("x", "y"), "Task 3: labels of dtype <U1, but task 0's are int64"),
    (np.array([0, 1], dtype=np.int32),
     "Task 3: labels of dtype int32, but task 0's are int64"),
])
def test_mixed_label_types_are_refused_at_write(tmp_path, other, message):
    tasks = _tasks(5, labels=np.array([0, 1]))
    tasks[3] = _tasks(1, labels=other)[0]
    with pytest.raises(TypeError, match=re.escape(message)):
        TaskStore.write(tmp_path / "store", tasks)
    assert os.listdir(tmp_path) == []


def _edit_meta(**changes):
    def edit(folder):
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(changes)
        for key in [key for key, value in changes.items() if value is _DROP]:
            del meta[key]
        (folder / "meta.json").write_text(json.dumps(meta))
    return edit


def _edit_index(row, column, delta):
    def edit(folder):
        index = np.load(folder / "index.npy")
        index[row, column] += delta
        np.save(folder / "index.npy", index)
    return edit


def _write(name, data):
    def edit(folder):
        (folder / name).write_bytes(data)
    return edit


def _resize(name, n_bytes):
    def edit(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:n_bytes] if n_bytes < 0
                                    else data + bytes(n_bytes))
    return edit


def _save(name, array, **kwargs):
    def edit(folder):
        np.save(folder / name, array, **kwargs)
    return edit


def _symlink(name):
    def edit(folder):
        outside = folder.parent / f"outside-{name}"
        outside.write_bytes((folder / name).read_bytes())
        (folder / name).unlink()
        (folder / name).symlink_to(outside)
    return edit


def _replace_by_folder(folder):
    (folder / "X.f32").unlink()
    (folder / "X.f32").mkdir()


_DROP = object()
_CORRUPTIONS = {
    "meta not json": (_write("meta.json", b"{"), "meta.json is not valid JSON"),
    "meta a list": (_write("meta.json", b"[]"), "meta.json holds a list"),
    "key missing": (_edit_meta(n_rows=_DROP), r"lacks keys \['n_rows'\]"),
    "key unknown": (_edit_meta(extra=1), r"unexpected keys \['extra'\]"),
    "n_rows a string": (_edit_meta(n_rows="30"),
                        "n_rows must be a positive integer, got '30'"),
    "n_features 0": (_edit_meta(n_features=0), "n_features must be a positive"),
    "task_type": (_edit_meta(task_type="ranking"), "task_type must be"),
    "label dtype object": (_edit_meta(label_dtype="|O"), "label_dtype must name"),
    "checksum missing": (_edit_meta(checksums={"X.f32": "0" * 64}),
                         "checksums must map each of"),
    "n_rows too many": (_edit_meta(n_rows=31), r"X.f32 has 360 bytes, meta.json "
                        "implies 372"),
    "X truncated": (_resize("X.f32", -4), "X.f32 has 356 bytes, meta.json implies"),
    "y longer": (_resize("y.bin", 8), "y.bin has 248 bytes, meta.json implies 240"),
    "negative start": (_edit_index(2, 0, -15),
                       "index.npy: task 2 starts at a negative row"),
    "end beyond data": (_edit_index(4, 2, 3),
                        "index.npy: task 4 ends beyond the data's 30 rows"),
    "empty support": (_edit_index(1, 1, -6), "task 1 has a support or query set "
                      "of no rows"),
    "overlapping tasks": (_edit_index(3, 0, -2),
                          "task 3 does not start where the task before it ends"),
    "index float": (_save("index.npy", np.zeros((5, 3))),
                    r"index.npy holds an array of shape \(5, 3\) and dtype "
                    "float64"),
    "index short": (_save("index.npy", np.zeros((4, 3), dtype=np.int64)),
                    r"shape \(4, 3\)"),
    "index junk": (_write("index.npy", b"junk"), "index.npy is not a readable"),
    "labels missing": (lambda folder: (folder / "labels.npy").unlink(),
                       "labels.npy is missing"),
    "labels as codes": (_save("labels.npy", np.arange(2)), "labels.npy holds an "
                        "array of shape \\(2,\\) and dtype int64"),
    "labels pickled": (_save("labels.npy", np.array(["a", 1], dtype=object),
                             allow_pickle=True), "dtype object"),
    "X a symlink": (_symlink("X.f32"), "X.f32 is a symbolic link"),
    "meta a symlink": (_symlink("meta.json"), "meta.json is a symbolic link"),
    "labels a symlink": (_symlink("labels.npy"), "labels.npy is a symbolic link"),
    "X a folder": (_replace_by_folder, "X.f32 is not a regular file"),
}


@pytest.mark.parametrize("name", list(_CORRUPTIONS))
def test_open_names_what_is_wrong(tmp_path, name):
    edit, message = _CORRUPTIONS[name]
    TaskStore.write(tmp_path / "store", _tasks(5, labels=("cat", "dog")))
    edit(tmp_path / "store")
    with pytest.raises(ValueError, match=f"TaskStore at {re.escape(str(tmp_path))}"
                       f"/store: .*{message}"):
        TaskStore(tmp_path / "store")


def test_label_codes_out_of_range_are_caught_when_read(tmp_path):
    TaskStore.write(tmp_path / "store", _tasks(5, labels=("cat", "dog")))
    with open(tmp_path / "store" / "y.bin", "r+b") as codes:
        codes.write(np.int64(-1).tobytes())
    store = TaskStore(tmp_path / "store")
    with pytest.raises(ValueError, match="y.bin holds label codes outside 0..1"):
        store[0]
    assert store[1].y_support.tolist() == ["cat", "dog"] * 2


@pytest.mark.parametrize("name", ["X.f32", "y.bin", "index.npy", "labels.npy"])
def test_verify_catches_a_flipped_byte(tmp_path, name):
    TaskStore.write(tmp_path / "store", _tasks(5, labels=("cat", "dog")))
    TaskStore(tmp_path / "store", verify=True)
    with open(tmp_path / "store" / name, "r+b") as file:
        file.seek(-1, os.SEEK_END)
        byte = file.read(1)[0]
        file.seek(-1, os.SEEK_END)
        file.write(bytes([byte ^ 0x01]))
    if name == "X.f32":
        TaskStore(tmp_path / "store")  # a flipped bit in a float passes the checks
    with pytest.raises(ValueError, match=f"{re.escape(name)} does not match the "
                       "sha256 checksum recorded in meta.json"):
        TaskStore(tmp_path / "store", verify=True)
