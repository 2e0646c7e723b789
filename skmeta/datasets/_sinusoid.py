"""The sinusoid regression tasks of the MAML paper (Finn et al., 2017)."""

import numpy as np
from sklearn.utils import check_random_state

from ..tasks import Task


def make_sinusoid_tasks(n_tasks, k_shot=10, n_query=10, random_state=None, *,
                        return_params=False):
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
        If True, also return each task's amplitude and phase.

    Returns
    -------
    tasks : list of Task
        ``X`` of shape (k_shot, 1) and (n_query, 1), float32 targets.
    amplitudes, phases : ndarray of shape (n_tasks,)
        Only if ``return_params`` is True.

    Examples
    --------
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(3, k_shot=5, random_state=0)
    >>> len(tasks), tasks[0].X_support.shape, tasks[0].y_query.shape
    (3, (5, 1), (10,))
    """
    rng = check_random_state(random_state)
    amplitudes = rng.uniform(0.1, 5.0, n_tasks)
    phases = rng.uniform(0.0, np.pi, n_tasks)
    x = rng.uniform(-5.0, 5.0, (n_tasks, k_shot + n_query, 1)).astype(np.float32)
    y = (amplitudes[:, None] * np.sin(x[..., 0] - phases[:, None])).astype(np.float32)
    tasks = [Task(xi[:k_shot], yi[:k_shot], xi[k_shot:], yi[k_shot:])
             for xi, yi in zip(x, y, strict=True)]
    return (tasks, amplitudes, phases) if return_params else tasks
