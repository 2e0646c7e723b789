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

import copy
import math
import textwrap
from dataclasses import replace
from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state, metadata_routing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import EarlyStopping

from . import distributed
from ._nets import Training, fit_net
from ._routing import RoutedParamsMixin
from ._scaling import TaskScaler


def shared_params_doc(max_epochs=10, meta_batch_size=8, meta_lr=1e-3,
                      validation_fraction=None, routed="module"):
    """The docstring entries of the shared parameters, with a learner's
    defaults (``max_epochs=None`` leaves out the training schedule, for
    learners that document their own)."""
    schedule = ("" if max_epochs is None else
                (_AUTO_EPOCHS if max_epochs == "auto" else
                 f"""\
    max_epochs : int or "auto", default={max_epochs}
        Passes over the training task collection; "auto" as described for
        :class:`skmeta.MAMLRegressor`.
""") + f"""\
    meta_batch_size : int, default={meta_batch_size}
        Tasks per meta-update.
    meta_lr : float, default={meta_lr}
        Adam's learning rate for the meta-update.
""")
    held_out = ("" if validation_fraction is None else
                "\n        ``max_epochs=\"auto\"`` stops early on it.")
    kwargs = ("``module__<name>`` parameters, passed to the module's constructor."
              if routed == "module" else routed)
    return schedule + f"""\
    shuffle : bool, default=True
        Whether each epoch visits the training items in a new order (seeded
        by ``random_state``); False keeps the collection's order.
    validation_fraction : float or None, default={validation_fraction}
        Fraction of the training items held out to report ``valid_loss``
        each epoch (use with :class:`skorch.callbacks.EarlyStopping`); a
        collection of fewer than 5 tasks holds none out.{held_out}
    device : str or torch.device, default="cpu"
        Torch device for training ("cuda" for a GPU); adapted estimators run
        on the CPU.
    callbacks : list of skorch callbacks or None, default=None
        E.g. early stopping, checkpoints, learning-rate schedules.
    verbose : int, default=0
        If positive, print an epoch log (and, on a terminal, a progress bar).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, training order and task splits.
    **kwargs
        {kwargs}
"""


_AUTO_EPOCHS = """\
    max_epochs : int or "auto", default="auto"
        Passes over the training task collection. "auto" sizes training in
        meta-updates rather than passes, so that small collections get
        enough of them: up to 2000 meta-updates (small collections repeated
        within an epoch), stopped early, with the best parameters restored,
        once the held-out tasks' loss has not improved for 500 meta-updates
        (when ``validation_fraction`` holds tasks out; collections of fewer
        than 5 tasks hold none out).
"""


def standardize_doc(default, what, undo=""):
    """The docstring entry of a ``standardize`` parameter."""
    text = (f"Standardise {what} with the mean and standard deviation of the "
            f"pooled training tasks, before meta-training and adaptation{undo}, "
            "so that raw, unscaled data works. False uses the data as given.")
    return f"    standardize : bool, default={default}\n" + textwrap.fill(
        text, 76, initial_indent=" " * 8, subsequent_indent=" " * 8) + "\n"


SHARED_CONSTRAINTS = {
    "module": [None, type, torch.nn.Module],
    "max_epochs": [Interval(Integral, 1, None, closed="left"),
                   StrOptions({"auto"})],
    "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
    "meta_lr": [Interval(Real, 0, None, closed="neither")],
    "shuffle": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
    "device": [str, torch.device],
    "callbacks": [list, None],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
    "standardize": ["boolean"],
    # learners that train on pooled examples rather than on tasks
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
}


# max_epochs="auto": at most AUTO_UPDATES meta-updates, in epochs of about
# AUTO_EPOCH_UPDATES, stopped after AUTO_PATIENCE meta-updates without
# improvement on the held-out tasks. Collections of fewer than
# MIN_SPLIT_TASKS tasks hold none out, whatever validation_fraction says.
AUTO_UPDATES = 2000
AUTO_EPOCH_UPDATES = 50
AUTO_PATIENCE = 500
MIN_SPLIT_TASKS = 5


def auto_training(training, n_tasks):
    """``training`` sized for ``max_epochs="auto"`` on ``n_tasks`` tasks."""
    split = training.validation_fraction
    n_train = n_tasks if split is None else math.ceil(n_tasks * (1 - split))
    repeats = max(1, AUTO_EPOCH_UPDATES * training.batch_size // n_train)
    updates_per_epoch = -(-n_train * repeats // training.batch_size)
    callbacks = list(training.callbacks)
    if split is not None:
        patience = max(2, -(-AUTO_PATIENCE // updates_per_epoch))
        callbacks.append(("auto_early_stopping", EarlyStopping(
            patience=patience, threshold=1e-4, threshold_mode="abs",
            load_best=True, sink=_silent)))
    return replace(training, validation_fraction=split, repeats=repeats,
                   max_epochs=-(-AUTO_UPDATES // updates_per_epoch),
                   callbacks=callbacks)


def _silent(*args, **kwargs):
    pass


class TorchLearner(RoutedParamsMixin, BaseEstimator):
    """Base of skmeta's torch-backed meta-learners.

    Subclasses put :class:`~skmeta.base.MetaClassifierMixin` or
    :class:`~skmeta.base.MetaRegressorMixin` on its left, store their
    parameters in ``__init__`` (``module__*`` ones with
    ``self._store_routed(kwargs)``), extend ``_parameter_constraints`` and
    implement the hooks listed in this module's docstring.
    """

    _parameter_constraints = SHARED_CONSTRAINTS
    # Task lists are the samples, not metadata: no set_partial_fit_request.
    __metadata_request__partial_fit = {"tasks": metadata_routing.UNUSED,
                                       "classes": metadata_routing.UNUSED}

    @property
    def history_(self):
        """The skorch ``History`` of training: losses (and accuracies) per
        epoch and batch."""
        return self.net_.history

    def _training(self, tasks):
        """How the net trains: ``max_epochs`` passes in batches of
        ``meta_batch_size`` at ``meta_lr``; or, with ``max_epochs="auto"``, a
        budget of meta-updates in epochs of about ``AUTO_EPOCH_UPDATES``
        (small collections repeated within an epoch), stopped early, with the
        best parameters restored, once the held-out tasks' loss has not
        improved for ``AUTO_PATIENCE`` meta-updates."""
        split = self.validation_fraction if len(tasks) >= MIN_SPLIT_TASKS else None
        training = Training(max_epochs=self.max_epochs,
                            batch_size=self.meta_batch_size, lr=self.meta_lr,
                            device=self.device, callbacks=list(self.callbacks or []),
                            verbose=self.verbose, validation_fraction=split,
                            shuffle=self.shuffle)
        return auto_training(training, len(tasks)) if self.max_epochs == "auto" \
            else training

    def _fit(self, tasks):
        scaler = self._fit_scaler(tasks)
        tasks = self._scaled(tasks, scaler)
        net = fit_net(self._net_spec(tasks), self._training(tasks),
                      self._draw_seed())
        fitted = {"net_": net, **self._fitted_state(net, tasks)}
        if hasattr(self, "standardize"):
            fitted["scaler_"] = scaler
        return fitted

    def _fit_scaler(self, tasks):
        """Training-task statistics, for learners that declare a
        ``standardize`` parameter and set it; None otherwise."""
        if not getattr(self, "standardize", False):
            return None
        return TaskScaler(with_y=self._task_type == "regression").fit(tasks)

    @staticmethod
    def _scaled(tasks, scaler):
        return tasks if scaler is None else scaler.transform_tasks(tasks)

    def _draw_seed(self, size=None):
        """Seed(s) from ``random_state``, the same in every data-parallel
        process."""
        seeds = check_random_state(self.random_state).randint(2**31, size=size)
        if size is None:
            return distributed.broadcast_seed(int(seeds))
        return [distributed.broadcast_seed(int(s)) for s in seeds]

    def partial_fit(self, tasks, y=None, classes=None):
        """One more pass over ``tasks``, continuing from the current state.

        The first call fits from scratch with one epoch; later calls train
        the meta-trained net one more epoch on the given tasks, keeping the
        optimiser's state (skorch's ``partial_fit``; a pass that raises leaves
        the learner as it was), so training can go on
        as new tasks arrive and pruned searches (e.g. optuna's
        ``OptunaSearchCV(enable_pruning=True)``) can stop it early.

        Parameters
        ----------
        tasks : sequence of Task or tuple
            Training tasks with the features the learner was fitted on.
        y : None
            Ignored; present for scikit-learn's API.
        classes : None
            Ignored: every task brings its own classes (scikit-learn's
            searchers pass it to classifiers).

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
        if not hasattr(self.net_, "optimizer_"):
            raise ValueError(
                f"This {type(self).__name__} has no optimiser state to continue "
                "training from (it was loaded with skmeta.io, which keeps what "
                "adapt, predict and score need); continue training from a joblib "
                "file, or fit it again.")
        self._validate_params()
        tasks = self._check_tasks(tasks)
        self._check_n_features(tasks[0].X_support.shape[1], "Tasks have")
        scaler = getattr(self, "scaler_", None)
        tasks = self._scaled(tasks, scaler)
        net = copy.deepcopy(self.net_)  # trained apart: a failure changes nothing
        net.partial_fit(self._net_spec(tasks).dataset, epochs=1)
        fitted = {key: value for key, value in vars(self).items()
                  if key.endswith("_") and not key.startswith("_")}
        self._set_fitted({**fitted, "net_": net, **self._fitted_state(net, tasks)},
                         tasks)
        return self
