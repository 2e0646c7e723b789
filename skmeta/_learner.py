"""The base of every torch-backed meta-learner.

:class:`TorchLearner` declares the parameters the torch learners share, and
their validation, once; seeds training; builds and trains the skorch net the
learner describes through :func:`skmeta._nets.fit_net` (the one way a net is
built, with the finite-loss guard and data-parallel sync of
:class:`skmeta._nets.SkmetaNet`); and offers ``history_`` and
``partial_fit``. A learner implements hooks only:

- ``_net_spec(tasks)``: the :class:`~skmeta._nets.NetSpec` to train;
- ``_fitted_state(net, tasks)``: what ``adapt`` needs from the trained net,
  as a dict of ``*_`` attributes;
- ``_adapt(X, y)`` and, where tasks adapt batched, ``_predict_tasks(tasks)``
  (see :class:`skmeta.base.MetaLearnerMixin`);
- optionally ``_training(tasks)``, where training is not simply
  ``max_epochs`` passes in batches of ``meta_batch_size`` at ``meta_lr``.
"""

from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from . import distributed
from ._nets import Training, fit_net
from ._routing import RoutedParamsMixin

COMMON_PARAMS = """\
    shuffle : bool, default=True
        Whether each epoch visits the training items in a new order (seeded
        by ``random_state``); False keeps the collection's order.
    validation_fraction : float or None, default=None
        Fraction of the training items held out to report ``valid_loss``
        each epoch (use with :class:`skorch.callbacks.EarlyStopping`).
    device : str or torch.device, default="cpu"
        Torch device for training ("cuda" for a GPU); adapted estimators run
        on the CPU.
    callbacks : list of skorch callbacks or None, default=None
        E.g. early stopping, checkpoints, learning-rate schedules.
    verbose : int, default=0
        If positive, print an epoch log and a progress bar.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, training order and task splits.
    **kwargs
        ``module__<name>`` parameters, passed to the module's constructor.
"""

SHARED_PARAMS = """\
    max_epochs : int, default={max_epochs}
        Passes over the training task collection.
    meta_batch_size : int, default={meta_batch_size}
        Tasks per meta-update.
    meta_lr : float, default={meta_lr}
        Adam's learning rate for the meta-update.
""" + COMMON_PARAMS.replace("{", "{{").replace("}", "}}")

SHARED_CONSTRAINTS = {
    "module": [None, type, torch.nn.Module],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
    "meta_lr": [Interval(Real, 0, None, closed="neither")],
    "shuffle": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
    "device": [str, torch.device],
    "callbacks": [list, None],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
    # learners that train on pooled examples rather than on tasks
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
}


class TorchLearner(RoutedParamsMixin, BaseEstimator):
    """Base of skmeta's torch-backed meta-learners.

    Subclasses put :class:`~skmeta.base.MetaClassifierMixin` or
    :class:`~skmeta.base.MetaRegressorMixin` on its left, store their
    parameters in ``__init__`` (``module__*`` ones with
    ``self._store_routed(kwargs)``), extend ``_parameter_constraints`` and
    implement the hooks listed in this module's docstring.
    """

    _parameter_constraints = SHARED_CONSTRAINTS

    @property
    def history_(self):
        """The skorch ``History`` of training: losses (and accuracies) per
        epoch and batch."""
        return self.net_.history

    def _training(self, tasks):
        """The shared training parameters, as :func:`fit_net` takes them."""
        return Training(max_epochs=self.max_epochs, batch_size=self.meta_batch_size,
                        lr=self.meta_lr, device=self.device, callbacks=self.callbacks,
                        verbose=self.verbose,
                        validation_fraction=self.validation_fraction,
                        shuffle=self.shuffle)

    def _fit(self, tasks):
        net = fit_net(self._net_spec(tasks), self._training(tasks),
                      self._draw_seed())
        return {"net_": net, **self._fitted_state(net, tasks)}

    def _draw_seed(self, size=None):
        """Seed(s) from ``random_state``, the same in every data-parallel
        process."""
        seeds = check_random_state(self.random_state).randint(2**31, size=size)
        if size is None:
            return distributed.broadcast_seed(int(seeds))
        return [distributed.broadcast_seed(int(s)) for s in seeds]

    def partial_fit(self, tasks, y=None):
        """One more pass over ``tasks``, continuing from the current state.

        The first call fits from scratch with one epoch; later calls train
        the meta-trained net one more epoch on the given tasks, keeping the
        optimiser's state (skorch's ``partial_fit``), so training can go on
        as new tasks arrive and pruned searches (e.g. optuna's
        ``OptunaSearchCV(enable_pruning=True)``) can stop it early.

        Parameters
        ----------
        tasks : sequence of Task or tuple
            Training tasks with the features the learner was fitted on.
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        self : object
        """
        try:
            check_is_fitted(self)
        except NotFittedError:  # the first call: one epoch from scratch
            max_epochs = self.max_epochs
            try:
                return self.set_params(max_epochs=1).fit(tasks)
            finally:
                self.max_epochs = max_epochs
        self._validate_params()
        tasks = self._check_tasks(tasks)
        self._check_n_features(tasks[0].X_support.shape[1], "Tasks have")
        net = self.net_
        net.partial_fit(self._net_spec(tasks).dataset, epochs=1)
        self._set_fitted({"net_": net, **self._fitted_state(net, tasks)}, tasks)
        return self
