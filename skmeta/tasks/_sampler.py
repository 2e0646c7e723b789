"""Few-shot episodes drawn from a labelled pool, and class-disjoint splits."""

import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_X_y

from ._task import Task


class EpisodeSampler(Sequence):
    """N-way K-shot episodes drawn from a labelled pool, as a task collection.

    Episode ``i`` is drawn from its own random stream seeded by
    ``(random_state, i)``, so ``sampler[i]`` is the same task however often
    and in whatever order it is read. The sampler is sized and indexable:
    scikit-learn's cross-validation splits it like a list of tasks, and no
    episode is held in memory until it is read. Labels keep their original
    values.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The pool's features.
    y : array-like of shape (n_samples,)
        The pool's class labels.
    n_way : int, default=5
        Classes per episode.
    k_shot : int, default=1
        Support examples per class.
    n_query : int, default=15
        Query examples per class.
    n_tasks : int, default=1000
        Number of episodes (the sampler's length).
    random_state : int, RandomState instance or None, default=None
        Seeds the episodes. With None a seed is drawn once, at construction.

    Examples
    --------
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.tasks import EpisodeSampler
    >>> X, y = load_digits_tasks(return_X_y=True)
    >>> episodes = EpisodeSampler(X, y, n_way=5, k_shot=1, n_query=3,
    ...                           n_tasks=100, random_state=0)
    >>> len(episodes), episodes[7].X_support.shape, episodes[7].X_query.shape
    (100, (5, 64), (15, 64))
    """

    def __init__(self, X, y, n_way=5, k_shot=1, n_query=15, n_tasks=1000,
                 random_state=None):
        self.X, self.y = check_X_y(X, y, dtype=np.float32)
        for name, value in [("n_way", n_way), ("k_shot", k_shot),
                            ("n_query", n_query), ("n_tasks", n_tasks)]:
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.n_way, self.k_shot, self.n_query, self.n_tasks = (
            n_way, k_shot, n_query, n_tasks)
        self.classes_, y_index = np.unique(self.y, return_inverse=True)
        if len(self.classes_) < n_way:
            raise ValueError(
                f"n_way={n_way} but the pool has only {len(self.classes_)} classes.")
        self._members = [np.flatnonzero(y_index == c)
                         for c in range(len(self.classes_))]
        needed = k_shot + n_query
        short = [self.classes_[c].item() for c, m in enumerate(self._members)
                 if len(m) < needed]
        if short:
            raise ValueError(
                f"Classes {short} have fewer than k_shot + n_query = {needed} "
                "examples; lower k_shot or n_query, or drop those classes.")
        self.seed_ = check_random_state(random_state).randint(2**31)

    def __len__(self):
        return self.n_tasks

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n_tasks))]
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"Episode indices must be integers, got {index!r}.")
        if not -self.n_tasks <= index < self.n_tasks:
            raise IndexError(f"Episode {index} out of range for {self.n_tasks}.")
        return self._episode(int(index) % self.n_tasks)

    def _episode(self, index):
        rng = np.random.default_rng([self.seed_, index])
        chosen = rng.choice(len(self.classes_), self.n_way, replace=False)
        picks = np.stack([rng.choice(self._members[c], self.k_shot + self.n_query,
                                     replace=False) for c in chosen])
        support = rng.permutation(picks[:, :self.k_shot].ravel())
        query = rng.permutation(picks[:, self.k_shot:].ravel())
        return Task(self.X[support], self.y[support], self.X[query], self.y[query])

    def __repr__(self):
        return (f"EpisodeSampler(n_way={self.n_way}, k_shot={self.k_shot}, "
                f"n_query={self.n_query}, n_tasks={self.n_tasks}, "
                f"pool={len(self.y)} examples of {len(self.classes_)} classes)")


def train_test_split_classes(X, y, *, test_size=0.25, random_state=None):
    """Split a labelled pool into train and test parts with disjoint classes.

    Few-shot benchmarks meta-train on some classes and test on classes never
    seen in training; this is :func:`sklearn.model_selection.train_test_split`
    over classes instead of examples.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    test_size : float or int, default=0.25
        Fraction (float in (0, 1)) or number (int) of classes for the test part.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X_train, X_test, y_train, y_test : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from skmeta.tasks import train_test_split_classes
    >>> X, y = np.arange(20.0).reshape(10, 2), np.repeat([0, 1, 2, 3, 4], 2)
    >>> X_tr, X_te, y_tr, y_te = train_test_split_classes(
    ...     X, y, test_size=2, random_state=0)
    >>> len(set(y_te)), set(y_tr) & set(y_te)
    (2, set())
    """
    X, y = check_X_y(X, y, dtype=None)
    classes = np.unique(y)
    n_test = (int(round(test_size * len(classes)))
              if isinstance(test_size, numbers.Real) and 0 < test_size < 1
              else test_size)
    if not isinstance(n_test, numbers.Integral) or not 0 < n_test < len(classes):
        raise ValueError(
            f"test_size={test_size!r} leaves no class on one side of the split "
            f"of {len(classes)} classes.")
    test_classes = check_random_state(random_state).permutation(classes)[:n_test]
    test = np.isin(y, test_classes)
    return X[~test], X[test], y[~test], y[test]
