"""Rotated handwritten digits as a 40-class few-shot benchmark."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

N_ROTATIONS = 4
# A fixed, seeded split of the 40 classes: 28 to meta-train on, 12 to test on.
_CLASS_ORDER = np.random.RandomState(0).permutation(10 * N_ROTATIONS)
TRAIN_CLASSES = np.sort(_CLASS_ORDER[:28])
TEST_CLASSES = np.sort(_CLASS_ORDER[28:])


def load_digits_tasks(*, return_X_y=False):
    """Load scikit-learn's 8x8 digits as 40 classes: 10 digits x 4 rotations.

    Omniglot in miniature: each digit rotated by 0, 90, 180 and 270 degrees
    is its own class, so there are enough classes to meta-train on some and
    test few-shot learning on others. Class ``c`` is digit ``c % 10`` rotated
    by ``90 * (c // 10)`` degrees. The split into 28 training and 12 test
    classes is fixed, so results are comparable across runs and papers.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``data`` (7188, 64) float32 in [0, 1]; ``images`` (7188, 8, 8);
        ``target`` (7188,) class ids 0..39; ``train_classes`` (28,) and
        ``test_classes`` (12,), disjoint; ``target_names``; ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from skmeta.datasets import load_digits_tasks
    >>> digits = load_digits_tasks()
    >>> digits.data.shape, len(digits.train_classes), len(digits.test_classes)
    ((7188, 64), 28, 12)
    """
    digits = load_digits()
    base = (digits.images / 16.0).astype(np.float32)
    images = np.concatenate([np.rot90(base, k, axes=(1, 2))
                             for k in range(N_ROTATIONS)])
    target = np.concatenate([digits.target + 10 * k for k in range(N_ROTATIONS)])
    data = np.ascontiguousarray(images.reshape(len(images), -1))
    if return_X_y:
        return data, target
    names = [f"digit {c % 10} rotated {90 * (c // 10)}" for c in range(40)]
    return Bunch(data=data, images=np.ascontiguousarray(images), target=target,
                 target_names=np.array(names), train_classes=TRAIN_CLASSES.copy(),
                 test_classes=TEST_CLASSES.copy(), DESCR=load_digits_tasks.__doc__)
