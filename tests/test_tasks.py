import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from skmeta.tasks import EpisodeSampler, Task, check_tasks, train_test_split_classes

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3))
Y = np.array([0, 1, 2, 0, 1, 2])


def good():
    return Task(X, Y, X, Y)


def with_task(task, index=1):
    """A task list whose task ``index`` is the bad one."""
    tasks = [good(), good(), good()]
    tasks[index] = task
    return tasks


BAD_TASKS = [
    (with_task(Task(X[:, :2], Y, X[:, :2], Y), 2), ValueError,
     "Task 2: X has 2 features, but task 0 has 3; all tasks must have the same "
     "features."),
    (with_task(Task(np.where(X > 1, np.nan, X), Y, X, Y)), ValueError,
     "Task 1: X_support contains NaN; remove or impute it."),
    (with_task(Task(X, Y, np.full_like(X, np.inf), Y)), ValueError,
     "Task 1: X_query contains infinity; remove or impute it."),
    (with_task(Task(X[:0], Y[:0], X, Y)), ValueError,
     "Task 1: X_support is empty: the task has no examples."),
    (with_task(Task(X, Y, X, [0, 1, 7, 0, 1, 9])), ValueError,
     "Task 1: query labels [7, 9] are not among the support set's classes "
     "[0, 1, 2]; every query class needs support examples."),
    (with_task(Task(X, np.zeros(6), X, np.zeros(6))), ValueError,
     "Task 1: y_support has a single class (0.0); a classification task needs "
     "at least two."),
    (with_task(Task(X, Y, X[:, :2], Y)), ValueError,
     "Task 1: X_query has 2 features but X_support has 3."),
    (with_task(Task(X, Y, X, Y[:4])), ValueError,
     "Task 1: X_query has 6 rows but y_query has 4 values."),
    (with_task(Task(X, Y[:5], X, Y)), ValueError,
     "Task 1: X_support has 6 rows but y_support has 5 values."),
    (with_task(Task(X.astype(str).astype(object) + "x", Y, X, Y)), TypeError,
     "Task 1: X_support must be numeric, got dtype object."),
    (with_task(Task(X[:, 0], Y, X, Y)), ValueError,
     "Task 1: X_support must be 2-D (n_samples, n_features), got a 1-D array "
     "of shape (6,) (reshape one feature with X.reshape(-1, 1))."),
    (with_task(Task(X, Y, X[None], Y)), ValueError,
     "Task 1: X_query must be 2-D (n_samples, n_features), got a 3-D array of "
     "shape (1, 6, 3)."),
    (X, TypeError, "Expected a task collection: a list of skmeta.Task, of (X, y) "
     "or of (X_support, y_support, X_query, y_query) tuples, or an "
     "EpisodeSampler; got a ndarray. To meta-train on one labelled dataset, draw "
     "tasks from it with skmeta.tasks.EpisodeSampler(X, y, ...)."),
    ([], ValueError, "Expected a non-empty task collection, got 0 tasks."),
    (with_task((X, Y, X)), TypeError,
     "Task 1: expected a skmeta.Task, an (X, y) tuple or an (X_support, "
     "y_support, X_query, y_query) tuple, got a 3-tuple."),
    (with_task(Task(X, Y)), ValueError,
     "Task 1: X_query is missing; give the task a query set, or pass it as an "
     "(X, y) tuple to have it split."),
    (with_task(Task(X, Y, X)), ValueError,
     "Task 1: y_query is missing; fitting and scoring need query labels."),
    (with_task(Task(X, np.array([0, 1, "a", 0, 1, 2], dtype=object), X, Y)),
     TypeError, "Task 1: y_support mixes label types ['int', 'str']; use one "
     "type (all ints or all strings)."),
    (with_task((X, [0, 0, 0, 0, 0, 1])), ValueError,
     "Task 1: class 1 has a single example, so the (X, y) task cannot be split "
     "into support and query sets that both hold it; give (X_support, "
     "y_support, X_query, y_query) instead."),
    (iter([good()]), TypeError, "Expected a task collection"),
    (with_task(Task(np.where(X > 1, 1e39, X), Y, X, Y)), ValueError,
     "Task 1: X_support holds 1e+39, which overflows float32 (largest 3.4e+38), "
     "the precision skmeta computes in; rescale it (e.g. standardise the "
     "features)."),
    (with_task((np.where(X > 1, -1e300, X), Y)), ValueError,
     "Task 1: X holds 1e+300, which overflows float32"),
    (with_task(Task(X, Y, np.full((6, 3), 1e39, dtype=object), Y)), ValueError,
     "Task 1: X_query holds 1e+39, which overflows float32"),
    (with_task(Task(X, Y / 4, X, Y / 4)), ValueError,
     "Task 1: y_support holds continuous values (e.g. 0.25), not class labels; a "
     "classification task needs ints or strings (use a regressor for continuous "
     "targets)."),
    (with_task(Task(X, Y, X, [0, 1, 2, 0, 1, 1.5])), ValueError,
     "Task 1: y_query holds continuous values (e.g. 1.5)"),
    (with_task(Task(X, np.array([0.5, 1.0, 2.0] * 2, dtype=object), X, Y)),
     ValueError, "Task 1: y_support holds continuous values (e.g. 0.5)"),
    (with_task(Task(X, np.array([1.0, 2.0, np.nan] * 2, dtype=object), X,
                    np.array([1.0, 2.0] * 3, dtype=object))), ValueError,
     "Task 1: y_support contains missing labels (NaN or None); remove those "
     "examples or label them."),
    (with_task(Task(X, np.array(["a", "b", None] * 2, dtype=object), X, Y)),
     ValueError, "Task 1: y_support contains missing labels"),
    (with_task(Task(X, Y, X, np.array(["a", float("nan")] * 3, dtype=object))),
     ValueError, "Task 1: y_query contains missing labels"),
    (with_task(Task(sparse.csr_matrix(X), Y, X, Y)), TypeError,
     "Task 1: X_support is a scipy.sparse csr matrix; skmeta's learners need "
     "dense arrays (use X.toarray())."),
    (with_task((sparse.csc_array(X), Y)), TypeError,
     "Task 1: X is a scipy.sparse csc matrix"),
    (with_task(Task(X, sparse.csr_matrix(Y[:, None]), X, Y)), TypeError,
     "Task 1: y_support is a scipy.sparse matrix; give a 1-D array."),
    (with_task(Task(X * 1j, Y, X, Y)), TypeError,
     "Task 1: X_support is complex (dtype complex128); skmeta's learners need "
     "real features (give the real and imaginary parts as separate columns)."),
    (with_task(Task(X, Y + 0j, X, Y)), TypeError,
     "Task 1: y_support is complex (dtype complex128); labels and targets must "
     "be real."),
]


@pytest.mark.parametrize(("tasks", "error", "message"), BAD_TASKS)
def test_check_tasks_names_task_and_problem(tasks, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        check_tasks(tasks)


def test_regression_targets_must_be_finite():
    with pytest.raises(ValueError, match="^Task 0: y_query contains NaN"):
        check_tasks([Task(X, Y, X, [0, 1, np.nan, 0, 1, 2])], task_type="regression")


@pytest.mark.parametrize(("y", "message"), [
    ([0.5, 1e39, 2.0, 0.5, 1.0, 2.0], "^Task 0: y_support holds 1e+39, which "
     "overflows float32"),
    ([0.5, 1.0, 2.0, 0.5, 1.0, 2.0j], "^Task 0: y_support is complex"),
])
def test_regression_targets_must_fit_float32_and_be_real(y, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("+", r"\+")):
        check_tasks([Task(X, y, X, Y)], task_type="regression")


def test_values_that_fit_float32_and_whole_float_labels_pass():
    edge = np.where(X > 1, np.finfo(np.float32).max, X)
    [task] = check_tasks([Task(edge, Y.astype(float), X.astype(np.float32),
                               np.array([0.0, 1.0, 2.0] * 2, dtype=object))])
    assert np.isfinite(task.X_support).all() and task.X_support.dtype == np.float32
    [task] = check_tasks([Task(X, [0.5, 1.5, 0.5, 1.5, 0.5, 1.5], X,
                               [0.5] * 6)], task_type="regression")
    assert task.y_support.dtype == np.float64
    [task] = check_tasks([Task(X, [True, False] * 3, X, [True] * 6)])
    assert task.y_support.dtype == bool


def test_query_labels_optional_for_prediction():
    [task] = check_tasks([Task(X, Y, X)], require_y_query=False)
    assert task.y_query is None and task.X_query.dtype == np.float32


def test_tuples_and_dataframes_become_tasks_with_labels_kept():
    labels = np.array(["cat", "dog", "emu"] * 2)
    four, two = check_tasks([(pd.DataFrame(X), labels, X, labels),
                             (np.vstack([X, X]), np.concatenate([labels, labels]))])
    assert isinstance(four, Task)
    assert four.X_support.dtype == np.float32 and four.X_support.flags.c_contiguous
    assert set(two.y_support) == set(two.y_query) == {"cat", "dog", "emu"}


def test_two_tuple_split_is_stratified_and_reproducible():
    Xb = np.arange(40.0).reshape(20, 2)
    yb = np.array([0] * 10 + [1] * 6 + [2] * 4)
    first = check_tasks([(Xb, yb)] * 3, random_state=0)
    again = check_tasks([(Xb, yb)] * 3, random_state=0)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.X_support, b.X_support)
    assert np.bincount(first[0].y_support).tolist() == [5, 3, 2]
    assert not np.array_equal(first[0].X_support, first[1].X_support)


def test_tasks_may_differ_in_number_of_classes():
    tasks = check_tasks([good(), Task(X[:4], Y[:4] % 2, X[:4], Y[:4] % 2)])
    assert [len(np.unique(t.y_support)) for t in tasks] == [3, 2]


def test_caller_arrays_are_not_modified():
    Xc = np.asfortranarray(X.astype(np.float64))
    before = Xc.copy()
    check_tasks([(Xc, Y, Xc, Y)])
    np.testing.assert_array_equal(Xc, before)


def test_episode_sampler_draws_reproducible_n_way_k_shot_episodes(digits):
    sampler = EpisodeSampler(digits.data, digits.target, n_way=5, k_shot=2,
                             n_query=3, n_tasks=50, random_state=0)
    task = sampler[7]
    assert task.X_support.shape == (10, 64) and task.X_query.shape == (15, 64)
    classes = np.unique(task.y_support)
    assert len(classes) == 5 and set(task.y_query) == set(classes)
    assert np.bincount(task.y_support)[classes].tolist() == [2] * 5
    assert not set(map(bytes, task.X_support)) & set(map(bytes, task.X_query))
    again = EpisodeSampler(digits.data, digits.target, n_way=5, k_shot=2,
                           n_query=3, n_tasks=50, random_state=0)
    np.testing.assert_array_equal(again[7].X_query, task.X_query)
    np.testing.assert_array_equal(sampler[-43].y_query, task.y_query)
    assert len(sampler) == 50 and len(sampler[10:20]) == 10
    assert not np.array_equal(sampler[8].y_support, task.y_support)


def test_episode_sampler_keeps_string_labels():
    y = np.repeat(["a", "b", "c"], 4)
    task = EpisodeSampler(np.ones((12, 2)), y, n_way=2, k_shot=1, n_query=2,
                          n_tasks=3, random_state=0)[0]
    assert set(task.y_support) <= {"a", "b", "c"}


def test_episode_sampler_rejects_small_classes():
    y = np.array([0] * 5 + [1] * 2)
    with pytest.raises(ValueError, match=re.escape(
            "Classes [1] have fewer than k_shot + n_query = 3 examples")):
        EpisodeSampler(np.ones((7, 2)), y, n_way=2, k_shot=1, n_query=2)
    with pytest.raises(ValueError, match="n_way=3 but the pool has only 2 classes"):
        EpisodeSampler(np.ones((7, 2)), y, n_way=3, k_shot=1, n_query=1)
    with pytest.raises(IndexError):
        EpisodeSampler(np.ones((7, 2)), y, n_way=2, k_shot=1, n_query=1,
                       n_tasks=4)[4]


def test_train_test_split_classes_is_disjoint_and_complete(digits):
    X_tr, X_te, y_tr, y_te = train_test_split_classes(
        digits.data, digits.target, test_size=0.3, random_state=0)
    assert len(np.unique(y_te)) == 12 and len(np.unique(y_tr)) == 28
    assert not set(y_tr) & set(y_te)
    assert len(X_tr) + len(X_te) == len(digits.data)
    with pytest.raises(ValueError, match="leaves no class on one side"):
        train_test_split_classes(digits.data, digits.target, test_size=40)


class BadAtFive(Sequence):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return Task(X[:, :2], Y, X[:, :2], Y) if index == 5 else good()


def test_lazy_collections_are_validated_as_read(digits):
    sampler = EpisodeSampler(digits.data, digits.target, n_way=5, n_query=2,
                             n_tasks=10**6, random_state=0)
    checked = check_tasks(sampler)
    assert len(checked) == 10**6 and checked[-1].X_query.shape == (10, 64)
    lazy = check_tasks(BadAtFive())
    assert lazy[4].X_support.shape == (6, 3) and len(lazy[2:4]) == 2
    with pytest.raises(ValueError, match="^Task 5: X has 2 features, but task 0 "
                       "has 3"):
        lazy[5]


@pytest.mark.parametrize("labels, classes", [
    ([3, 1, 5, 7, 7, 0], [1, 3, 5]), (["b", "z", "a", "0"], ["a", "b"]),
    ([1.5, 2.0], [2.0]), ([1, 2], [1, 2]), (["x", "y"], [1, 2])])
def test_unseen_query_labels_are_setdiff1d(labels, classes):
    from skmeta.tasks._validation import _unseen
    labels, classes = np.array(labels), np.unique(classes)
    np.testing.assert_array_equal(_unseen(labels, classes),
                                  np.setdiff1d(labels, classes))
