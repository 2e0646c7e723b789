"""The sinusoid regression tasks of the MAML paper (Finn et al., 2017)."""

import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.utils import check_random_state

from ..tasks import Task


def make_sinusoid_tasks(n_tasks, k_shot=10, n_query=10, random_state=None, *,
                        return_params=False, lazy=False):
    """Make sinusoid regression tasks, following the MAML paper's protocol.

    Task ``i`` is ``y = amplitude_i * sin(x - phase_i)`` with the amplitude
    drawn from U[0.1, 5.0], the phase from U[0, pi] and the inputs from
    U[-5, 5].

    Parameters
    ----------
    n_tasks : int
        Number of tasks.
    k_shot : int, default=10
        Support points per task.
    n_query : int, default=10
        Query points per task.
    random_state : int, RandomState instance or None, default=None
    return_params : bool, default=False
        If True, also return each task's amplitude and phase (only with
        ``lazy=False``; a lazy stream gives them by ``tasks.params(i)``).
    lazy : bool, default=False
        If True, return a :class:`SinusoidTasks` stream that makes each task
        when it is read, in constant memory, so any number of tasks costs
        nothing up front. Its task ``i`` is seeded by ``(random_state, i)``,
        a different scheme from ``lazy=False``: the same ``random_state``
        gives other tasks in the two modes.

    Returns
    -------
    tasks : list of Task, or SinusoidTasks
        ``X`` of shape (k_shot, 1) and (n_query, 1), float32 targets.
    amplitudes, phases : ndarray of shape (n_tasks,)
        Only if ``return_params`` is True.

    Examples
    --------
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(3, k_shot=5, random_state=0)
    >>> len(tasks), tasks[0].X_support.shape, tasks[0].y_query.shape
    (3, (5, 1), (10,))
    >>> stream = make_sinusoid_tasks(1_750_000, random_state=0, lazy=True)
    >>> len(stream), stream[-1].X_support.shape
    (1750000, (10, 1))
    """
    if lazy:
        if return_params:
            raise ValueError("return_params=True needs lazy=False; a lazy "
                             "stream gives task i's parameters by params(i).")
        return SinusoidTasks(n_tasks, k_shot, n_query, random_state)
    rng = check_random_state(random_state)
    amplitudes = rng.uniform(0.1, 5.0, n_tasks)
    phases = rng.uniform(0.0, np.pi, n_tasks)
    x = rng.uniform(-5.0, 5.0, (n_tasks, k_shot + n_query, 1)).astype(np.float32)
    y = (amplitudes[:, None] * np.sin(x[..., 0] - phases[:, None])).astype(np.float32)
    tasks = [Task(xi[:k_shot], yi[:k_shot], xi[k_shot:], yi[k_shot:])
             for xi, yi in zip(x, y, strict=True)]
    return (tasks, amplitudes, phases) if return_params else tasks


class SinusoidTasks(Sequence):
    """A lazy stream of sinusoid regression tasks, made as they are read.

    The MAML paper's protocol, as in :func:`make_sinusoid_tasks`. Task ``i``
    is a pure function of ``(seed_, i)``: it is drawn from its own random
    stream ``numpy.random.default_rng([seed_, i])``, so it is the same task
    whatever order and however often tasks are read, and no task is held in
    memory. The stream is sized and indexable (negative indices too), so
    meta-learners and scikit-learn's cross-validation take it as a task
    collection. A slice is a smaller ``SinusoidTasks`` view over the same
    tasks (``stream[10:20][0]`` is ``stream[10]``), still lazy.

    Parameters
    ----------
    n_tasks : int
        Number of tasks (the stream's length).
    k_shot : int, default=10
        Support points per task.
    n_query : int, default=10
        Query points per task.
    random_state : int, RandomState instance or None, default=None
        Seeds the stream. With None a seed is drawn once, at construction.

    Attributes
    ----------
    seed_ : int
        The seed of the stream.

    Examples
    --------
    >>> from skmeta.datasets import SinusoidTasks
    >>> stream = SinusoidTasks(1_000_000, k_shot=5, random_state=0)
    >>> task = stream[123_456]
    >>> task.X_support.shape, task.y_query.shape
    ((5, 1), (10,))
    >>> bool((stream[10:20][3].y_support == stream[13].y_support).all())
    True
    """

    def __init__(self, n_tasks, k_shot=10, n_query=10, random_state=None):
        for name, value in [("n_tasks", n_tasks), ("k_shot", k_shot),
                            ("n_query", n_query)]:
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.n_tasks, self.k_shot, self.n_query = n_tasks, k_shot, n_query
        self.seed_ = int(check_random_state(random_state).randint(2**31))
        self._indices = range(n_tasks)

    def __len__(self):
        return len(self._indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            view = object.__new__(type(self))
            view.__dict__.update(self.__dict__, _indices=self._indices[index])
            view.n_tasks = len(view._indices)
            return view
        return self._task(self._position(index))

    def __iter__(self):
        return (self._task(i) for i in self._indices)

    def params(self, index):
        """Amplitude and phase of task ``index``.

        Parameters
        ----------
        index : int

        Returns
        -------
        amplitude, phase : float
        """
        amplitude, phase, _ = self._draw(self._position(index))
        return amplitude, phase

    def _position(self, index):
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"Task indices must be integers or slices, got {index!r}.")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Task {index} out of range for {len(self)} tasks.")
        return self._indices[int(index)]

    def _draw(self, position):
        rng = np.random.default_rng([self.seed_, position])
        amplitude = rng.uniform(0.1, 5.0)
        phase = rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, (self.k_shot + self.n_query, 1))
        return amplitude, phase, x.astype(np.float32)

    def _task(self, position):
        amplitude, phase, x = self._draw(position)
        y = (amplitude * np.sin(x[:, 0] - phase)).astype(np.float32)
        k = self.k_shot
        return Task(x[:k], y[:k], x[k:], y[k:])

    def __repr__(self):
        return (f"SinusoidTasks(n_tasks={len(self)}, k_shot={self.k_shot}, "
                f"n_query={self.n_query}, seed_={self.seed_})")
