import numpy as np
import pytest

from skmeta import MAMLRegressor
from skmeta.datasets import (
    SinusoidTasks,
    load_digits_tasks,
    load_omniglot,
    make_sinusoid_tasks,
)


def test_digits_tasks_are_40_rotated_classes_with_fixed_split(digits):
    assert digits.data.shape == (7188, 64) and digits.data.dtype == np.float32
    assert digits.images.shape == (7188, 8, 8)
    assert digits.data.min() >= 0.0 and digits.data.max() == 1.0
    assert np.unique(digits.target).tolist() == list(range(40))
    assert len(digits.train_classes) == 28 and len(digits.test_classes) == 12
    assert not set(digits.train_classes) & set(digits.test_classes)
    # class c + 10 is class c rotated by 90 degrees
    first_1, first_11 = digits.images[digits.target == 1][0], digits.images[
        digits.target == 11][0]
    np.testing.assert_array_equal(np.rot90(first_1), first_11)
    np.testing.assert_array_equal(load_digits_tasks().test_classes,
                                  digits.test_classes)
    X, y = load_digits_tasks(return_X_y=True)
    np.testing.assert_array_equal(X, digits.data)


def test_sinusoid_tasks_follow_the_maml_protocol():
    tasks, amplitudes, phases = make_sinusoid_tasks(
        200, k_shot=5, n_query=7, random_state=0, return_params=True)
    assert len(tasks) == 200
    assert tasks[0].X_support.shape == (5, 1) and tasks[0].y_query.shape == (7,)
    assert amplitudes.min() >= 0.1 and amplitudes.max() <= 5.0
    assert phases.min() >= 0.0 and phases.max() <= np.pi
    x = np.concatenate([t.X_support for t in tasks])
    assert x.min() >= -5 and x.max() <= 5
    task, amplitude, phase = tasks[3], amplitudes[3], phases[3]
    np.testing.assert_allclose(
        task.y_query, amplitude * np.sin(task.X_query[:, 0] - phase), atol=1e-5)
    again = make_sinusoid_tasks(200, k_shot=5, n_query=7, random_state=0)
    np.testing.assert_array_equal(again[5].y_support, tasks[5].y_support)


def _write_omniglot(root, subset, alphabets, characters, drawings):
    from PIL import Image

    rng = np.random.default_rng(0)
    for a in range(alphabets):
        for c in range(characters):
            folder = root / subset / f"Alphabet_{a}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            for d in range(drawings):
                pixels = np.where(rng.random((105, 105)) < 0.1, 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).convert("1").save(
                    folder / f"{c:04d}_{d + 1:02d}.png")


def test_load_omniglot_reads_the_standard_layout(tmp_path):
    pytest.importorskip("PIL")
    _write_omniglot(tmp_path, "images_background", 2, 2, 3)
    _write_omniglot(tmp_path, "images_evaluation", 1, 3, 3)
    data = load_omniglot(tmp_path, shape=(14, 14))
    assert data.data.shape == (21, 196) and data.images.shape == (21, 14, 14)
    assert data.train_classes.tolist() == [0, 1, 2, 3]
    assert data.test_classes.tolist() == [4, 5, 6]
    assert data.target_names[0] == "Alphabet_0/character01"
    assert np.bincount(data.target).tolist() == [3] * 7
    # about 10% ink, stored as ones
    assert 0.02 < data.data.mean() < 0.3 and data.data.max() <= 1.0


def test_load_omniglot_never_downloads(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError, match="skmeta never downloads"):
        load_omniglot(tmp_path)


def test_lazy_sinusoid_task_is_a_pure_function_of_seed_and_index():
    stream = make_sinusoid_tasks(1000, k_shot=5, n_query=7, random_state=0,
                                 lazy=True)
    assert isinstance(stream, SinusoidTasks) and len(stream) == 1000
    backwards = [stream[i] for i in (999, 500, 3)]
    fresh = make_sinusoid_tasks(1000, k_shot=5, n_query=7, random_state=0,
                                lazy=True)
    for i, task in zip((999, 500, 3), backwards, strict=True):
        np.testing.assert_array_equal(task.X_support, fresh[i].X_support)
        np.testing.assert_array_equal(task.y_query, fresh[i].y_query)
    assert not np.array_equal(stream[3].y_support, stream[4].y_support)
    other = make_sinusoid_tasks(1000, k_shot=5, n_query=7, random_state=1,
                                lazy=True)
    assert not np.array_equal(stream[3].y_support, other[3].y_support)
    task = stream[3]
    assert task.X_support.shape == (5, 1) and task.y_query.shape == (7,)
    assert task.y_support.dtype == np.float32
    amplitude, phase = stream.params(3)
    assert 0.1 <= amplitude <= 5.0 and 0.0 <= phase <= np.pi
    np.testing.assert_allclose(
        task.y_query, amplitude * np.sin(task.X_query[:, 0] - phase), atol=1e-5)


def test_lazy_sinusoid_indexing_slicing_and_iteration():
    stream = make_sinusoid_tasks(1_750_000, random_state=0, lazy=True)
    assert len(stream) == 1_750_000
    np.testing.assert_array_equal(stream[-1].y_support,
                                  stream[1_749_999].y_support)
    for index in (1_750_000, -1_750_001):
        with pytest.raises(IndexError, match="out of range"):
            stream[index]
    with pytest.raises(TypeError):
        stream[1.5]
    view = stream[10:20:3]
    assert isinstance(view, SinusoidTasks) and len(view) == 4
    np.testing.assert_array_equal(view[-1].y_query, stream[19].y_query)
    tasks = list(view)
    np.testing.assert_array_equal(tasks[1].y_query, stream[13].y_query)
    with pytest.raises(IndexError):
        view[4]


def test_lazy_sinusoid_keeps_the_eager_tasks_and_refuses_return_params():
    eager = make_sinusoid_tasks(3, random_state=0)
    again = make_sinusoid_tasks(3, random_state=0, lazy=False)
    np.testing.assert_array_equal(eager[2].y_query, again[2].y_query)
    with pytest.raises(ValueError, match="lazy=False"):
        make_sinusoid_tasks(3, lazy=True, return_params=True)
    with pytest.raises(ValueError, match="n_tasks"):
        SinusoidTasks(0)


def test_learners_fit_on_a_lazy_sinusoid_stream():
    stream = make_sinusoid_tasks(40, k_shot=5, n_query=5, random_state=0,
                                 lazy=True)
    reg = MAMLRegressor(max_epochs=1, module__hidden_sizes=(16,), random_state=0)
    reg.fit(stream)
    assert np.isfinite(reg.score(stream[:4]))
    assert len(reg.predict(stream[-3:])) == 3
