"""The distiller's teacher: built from a module, or a meta-learner refitted
or taken as it is."""

import copy

import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..nn import MLP
from .pooled import PooledEmbeddingClassifier

DEFAULT_TEACHER = {"hidden_sizes": (256, 256)}


def fit_teacher(distiller, tasks, seed):
    """The fitted teacher of ``distiller`` for ``tasks``.

    None or a torch module (class or instance) is trained as a
    :class:`PooledEmbeddingClassifier` with the distiller's training
    parameters; a meta-learner is refitted with the ``teacher__*``
    parameters, or copied as it is when ``refit_teacher`` is False and it is
    fitted already.
    """
    routed = distiller._routed_params("teacher__", strip=True)
    teacher = distiller.teacher
    if teacher is None or is_module(teacher):
        return _pooled_teacher(distiller, teacher, routed, seed).fit(tasks)
    if not distiller.refit_teacher and _is_fitted(teacher):
        if routed:
            raise ValueError(
                f"teacher__ parameters {sorted(routed)} cannot change a "
                "teacher that is not refitted (refit_teacher=False).")
        return copy.deepcopy(teacher)
    teacher = clone(teacher)
    if routed:  # FrozenEstimator.set_params takes no parameter, returns None
        teacher.set_params(**routed)
    return teacher.fit(tasks, y=None)  # FrozenEstimator needs y


def _pooled_teacher(distiller, module, routed, seed):
    defaults = DEFAULT_TEACHER if module is None else {}
    module_kwargs = {f"module__{k}": v for k, v in {**defaults, **routed}.items()}
    return PooledEmbeddingClassifier(
        MLP if module is None else module, head=distiller.head,
        max_epochs=distiller.max_epochs, batch_size=distiller.batch_size,
        lr=distiller.meta_lr, shuffle=distiller.shuffle,
        validation_fraction=distiller.validation_fraction,
        device=distiller.device, callbacks=distiller.callbacks,
        verbose=distiller.verbose, random_state=seed, **module_kwargs)


def is_module(obj):
    """Whether ``obj`` is a torch module class or instance."""
    return isinstance(obj, torch.nn.Module) or (
        isinstance(obj, type) and issubclass(obj, torch.nn.Module))


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True
