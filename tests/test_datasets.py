import numpy as np
import pytest

from skmeta.datasets import load_digits_tasks, load_omniglot, make_sinusoid_tasks


def test_digits_tasks_are_40_rotated_classes_with_fixed_split(digits):
    assert digits.data.shape == (7188, 64) and digits.data.dtype == np.float32
    assert digits.images.shape == (7188, 8, 8)
    assert 0.0 <= digits.data.min() and digits.data.max() == 1.0
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
    assert 0.1 <= amplitudes.min() and amplitudes.max() <= 5.0
    assert 0.0 <= phases.min() and phases.max() <= np.pi
    x = np.concatenate([t.X_support for t in tasks])
    assert -5 <= x.min() and x.max() <= 5
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
