"""MAMLClassifier and MAMLRegressor, and the per-task estimators their
``adapt`` returns."""

import weakref
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._learner import (
    SHARED_CONSTRAINTS,
    TorchLearner,
    shared_params_doc,
    standardize_doc,
)
from .._nets import NetSpec, TaskDataset, frozen_copy
from ..base import (
    AdaptedClassifier,
    AdaptedRegressor,
    MetaClassifierMixin,
    MetaRegressorMixin,
)
from ..nn import MLP
from ._core import (
    ALGORITHMS,
    FunctionalLearner,
    MAMLNet,
    chunk_size,
    group_tasks,
    rows_independent,
)
from ._guard import check_adaptation


class _AdaptedMAML:
    """Shared by the adapted estimators: gradient steps from the
    meta-learned initialisation, and the forward pass under the result."""

    _classification = True

    def _new_learner(self):
        return FunctionalLearner(self.module, self.inner_lr, self.adapted,
                                 self._classification)

    def _learner(self):
        """The functional view of the module the weights were fitted with:
        kept by a successful fit for predicting (outside the estimator, so
        neither pickles nor skmeta.io files carry it)."""
        learner = _LEARNERS.get(self)
        if learner is None:
            learner = _LEARNERS[self] = self._new_learner()
        return learner

    def _scaled_X(self, X):
        if self.scaler is None:
            return X
        return self.scaler.transform_X(X).astype(np.float32)

    def _adapt_weights(self, X, y, n_way):
        # one task: no vmap, no task dimension (equal to the batched path)
        X, y = torch.from_numpy(self._scaled_X(X)), torch.from_numpy(y)
        learner = self._new_learner()
        fast, before, after = learner.adapt_one(X, y, n_way, self.inner_steps)
        check_adaptation({name: w[None] for name, w in fast.items()},
                         (before[None], after[None]), self.inner_steps,
                         self.inner_lr)
        self.weights_, _LEARNERS[self] = fast, learner  # only once it succeeded

    def _outputs(self, X):
        X = torch.from_numpy(self._scaled_X(X))
        with torch.no_grad():
            return self._learner().forward_one(self.weights_, X)


# fitted adapted estimator -> its FunctionalLearner
_LEARNERS = weakref.WeakKeyDictionary()


_ADAPTED_PARAMS = """
    Parameters
    ----------
    module : torch.nn.Module
        The network with its meta-learned initial weights (not changed by
        ``fit``).
    inner_lr : float or dict of tensors, default=0.1
        Inner learning rate, or Meta-SGD's learned rate tensor per adapted
        parameter.
    inner_steps : int, default=1
        Gradient steps taken on the training data by ``fit``.
    adapted : list of str or None, default=None
        Names of the parameters ``fit`` adapts (ANIL: the head's); None
        adapts all.
    scaler : TaskScaler or None, default=None
        The meta-learner's training-task statistics: features (and, for
        regression, targets) are standardised with them, and predictions
        returned in the user's units. None uses the data as given.
"""


class MAMLAdaptedClassifier(_AdaptedMAML, AdaptedClassifier):
    __doc__ = """A network adapted to one classification task by gradient steps.

    ``fit`` runs ``inner_steps`` full-batch gradient-descent steps of the
    cross-entropy on its data from the meta-learned initial weights; the
    class of index ``i`` (in sorted label order) is read from output ``i``.
    This is what :meth:`MAMLClassifier.adapt` returns.
    """ + _ADAPTED_PARAMS + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    weights_ : dict of tensors
        The adapted parameters.

    Examples
    --------
    >>> import torch
    >>> from skmeta.maml import MAMLAdaptedClassifier
    >>> net = torch.nn.Linear(2, 2)
    >>> clf = MAMLAdaptedClassifier(net, inner_lr=1.0, inner_steps=20)
    >>> clf.fit([[0.0, 1.0], [1.0, 0.0]], ["a", "b"]).predict([[0.1, 0.9]]).tolist()
    ['a']
    """

    def __init__(self, module, inner_lr=0.1, inner_steps=1, adapted=None,
                 scaler=None):
        self.module = module
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.adapted = adapted
        self.scaler = scaler

    def _fit_encoded(self, X, y):
        self._adapt_weights(X, y, len(self.classes_))

    def _predict_proba(self, X):
        logits = FunctionalLearner.logits(self._outputs(X), len(self.classes_))
        return torch.softmax(logits.double(), -1).numpy()


class MAMLAdaptedRegressor(_AdaptedMAML, AdaptedRegressor):
    __doc__ = """A network adapted to one regression task by gradient steps.

    ``fit`` runs ``inner_steps`` full-batch gradient-descent steps of the mean
    squared error on its data from the meta-learned initial weights. This is
    what :meth:`MAMLRegressor.adapt` returns.
    """ + _ADAPTED_PARAMS + """
    Attributes
    ----------
    weights_ : dict of tensors
        The adapted parameters.

    Examples
    --------
    >>> import torch
    >>> from skmeta.maml import MAMLAdaptedRegressor
    >>> net = torch.nn.Linear(1, 1)
    >>> reg = MAMLAdaptedRegressor(net, inner_lr=0.3, inner_steps=100)
    >>> reg.fit([[0.0], [1.0]], [1.0, 3.0]).predict([[2.0]]).round(2).tolist()
    [5.0]
    """

    _classification = False

    def __init__(self, module, inner_lr=0.1, inner_steps=1, adapted=None,
                 scaler=None):
        self.module = module
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.adapted = adapted
        self.scaler = scaler

    def _fit_array(self, X, y):
        if self.scaler is not None:
            y = self.scaler.transform_y(y).astype(np.float32)
        self._adapt_weights(X, y, 0)

    def _predict(self, X):
        predicted = self._outputs(X).reshape(len(X)).double().numpy()
        return (predicted if self.scaler is None
                else self.scaler.inverse_transform_y(predicted))


class _MAMLLearner(TorchLearner):
    """What MAMLClassifier and MAMLRegressor share."""

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "algorithm": [StrOptions(set(ALGORITHMS))],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "test_inner_steps": [Interval(Integral, 1, None, closed="left"), None],
        "chunk_size": [StrOptions({"auto"}), Interval(Integral, 1, None,
                                                      closed="left")],
    }

    def __init__(self, module=None, *, algorithm="maml", inner_lr=0.1,
                 inner_steps=1, test_inner_steps=None, standardize=True,
                 max_epochs="auto", meta_batch_size=16, meta_lr=1e-3,
                 chunk_size="auto", shuffle=True, validation_fraction=0.2, device="cpu",
                 callbacks=None, verbose=0, random_state=None, **kwargs):
        self.module = module
        self.algorithm = algorithm
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.standardize = standardize
        self.max_epochs = max_epochs
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.chunk_size = chunk_size
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    @property
    def _classification(self):
        return self._task_type == "classification"

    def _net_spec(self, tasks):
        n_outputs = (max(len(np.unique(t.y_support)) for t in tasks)
                     if self._classification else 1)
        return NetSpec(
            MAMLNet, MLP if self.module is None else self.module,
            TaskDataset(tasks),
            data_kwargs={"in_features": tasks[0].X_support.shape[1],
                         "out_features": n_outputs},
            routed=self._routed_params("module__", strip=True),
            params=dict(algorithm=self.algorithm, inner_lr=self.inner_lr,
                        inner_steps=self.inner_steps, chunk_size=self.chunk_size,
                        classification=self._classification))

    def _fitted_state(self, net, tasks):
        rates = getattr(net, "inner_rates_", None)
        return {"module_": frozen_copy(net.module_), "adapted_": net.adapted_,
                "inner_lr_": self.inner_lr if rates is None else {
                    name: rate.detach().cpu().clone()
                    for name, rate in rates.as_dict().items()}}

    @property
    def _test_steps(self):
        return (self.inner_steps if self.test_inner_steps is None
                else self.test_inner_steps)

    def _adapt(self, X_support, y_support):
        adapted = (MAMLAdaptedClassifier if self._classification
                   else MAMLAdaptedRegressor)
        return adapted(self.module_, inner_lr=self.inner_lr_,
                       inner_steps=self._test_steps, adapted=self.adapted_,
                       scaler=self.scaler_).fit(X_support, y_support)

    def _predict_tasks(self, tasks):
        """All tasks adapted together, batched as in meta-training; equal to
        ``adapt(X_support, y_support).predict(X_query)`` per task."""
        learner = FunctionalLearner(self.module_, self.inner_lr_, self.adapted_,
                                    self._classification)
        tasks = self._scaled(tasks, self.scaler_)
        predictions = [None] * len(tasks)
        for group in group_tasks(tasks, self._classification,
                                 rows_independent(self.module_)):
            size = chunk_size(self.chunk_size, learner, group, self._test_steps)
            for chunk in group.chunks(size):
                with torch.enable_grad():
                    fast, before = learner.adapt(
                        chunk.X_support, chunk.y_support, chunk.n_way,
                        self._test_steps, track=False, initial_loss=True,
                        mask=chunk.support_mask)
                with torch.no_grad():
                    support, outputs = learner.forward_both(
                        fast, chunk.X_support, chunk.X_query)
                    after = learner.losses(support, chunk.y_support, chunk.n_way,
                                           chunk.support_mask)
                check_adaptation(fast, (before, after), self._test_steps,
                                 self.inner_lr_, chunk.index)
                decoded = self._decode(outputs, chunk)
                for i, index in enumerate(chunk.index):
                    predicted = decoded[i, :len(tasks[index].X_query)]  # unpadded
                    predictions[index] = (chunk.classes[i][predicted]
                                          if self._classification else predicted)
        return predictions

    def _decode(self, outputs, chunk):
        """A chunk's query predictions, (tasks, rows): targets in the user's
        units, or class indices."""
        if self._classification:
            return FunctionalLearner.logits(outputs, chunk.n_way).argmax(-1).numpy()
        predicted = outputs.reshape(len(chunk), -1).double().numpy()
        return (predicted if self.scaler_ is None
                else self.scaler_.inverse_transform_y(predicted))


_SHARED = shared_params_doc(max_epochs="auto", meta_batch_size=16,
                            validation_fraction=0.2)

_LEARNER_PARAMS = """
    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network whose initial weights are meta-learned. None means
        :class:`skmeta.nn.MLP`; its ``in_features`` and ``out_features`` are
        set from the data ({outputs}). Configure a class with
        ``module__<name>`` parameters, e.g. ``module__hidden_sizes=(40, 40)``
        or ``module=ConvNet, module__input_shape=(1, 8, 8)``. BatchNorm
        layers use each task's batch statistics, as in MAML.
    algorithm : {{"maml", "fomaml", "metasgd", "anil", "reptile"}}, default="maml"
        "maml": second-order MAML (Finn et al. 2017); "fomaml": its
        first-order approximation; "metasgd": MAML with one learned inner
        learning rate per weight (Li et al. 2017), initialised to
        ``inner_lr``; "anil": the inner loop adapts only the module's last
        child with parameters, its head (Raghu et al. 2020); "reptile": moves
        the initialisation towards the weights adapted on each task's support
        and query rows (Nichol et al. 2018).
    inner_lr : float, default=0.1
        Learning rate of the inner gradient steps.
    inner_steps : int, default=1
        Inner gradient steps per task in meta-training.
    test_inner_steps : int or None, default=None
        Gradient steps taken by ``adapt``, ``predict`` and ``score``; None
        means ``inner_steps``.
{standardize}    chunk_size : int or "auto", default="auto"
        Tasks adapted together in one vectorised pass; a meta-batch is
        processed in chunks whose meta-gradients are summed, so memory does
        not grow with ``meta_batch_size``. "auto" sizes chunks from the
        network's parameter and activation counts.
{shared}
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The meta-trained torch core.
    module_ : torch.nn.Module
        A CPU copy of the meta-learned network, the start of every adaptation.
    inner_lr_ : float or dict of tensors
        The inner learning rate; Meta-SGD's learned rates per parameter.
    adapted_ : list of str or None
        Names of the parameters adaptation changes (None: all).
    scaler_ : TaskScaler or None
        The training tasks' statistics (None if ``standardize=False``).
    history_ : skorch.History
        Losses{acc} per epoch.
    n_features_in_ : int
        Features per example.
"""


class MAMLClassifier(MetaClassifierMixin, _MAMLLearner):
    __doc__ = """Model-agnostic meta-learning for few-shot classification.

    Meta-learns a network's initial weights such that a few gradient steps
    on a new task's support set give a good classifier for that task (Finn
    et al. 2017); variants are chosen with ``algorithm``. Tasks of a
    meta-batch are adapted together (``torch.func.vmap``), with second-order
    meta-gradients, and tasks may differ in their numbers of classes and
    examples (tasks of different sizes are padded to shared sizes with rows
    of zero weight, so they still run together; modules with BatchNorm are
    grouped by exact size instead). ``adapt`` returns a :class:`MAMLAdaptedClassifier`.

    On small data, compare with :class:`skmeta.ProtoNetClassifier` and
    with raw nearest centroid
    (:class:`skmeta.protonet.PrototypeClassifier`): on 5-way 1-shot digits
    episodes those win (see the benchmark in the README); MAML's strength is
    adapting every weight, which pays off when tasks need more than a new
    class layout, and for regression.
    """ + _LEARNER_PARAMS.format(
        outputs="the largest number of classes in a training task",
        acc=" and query accuracies", shared=_SHARED,
        standardize=standardize_doc(
            default=True, what="features", undo="")) + """
    Examples
    --------
    >>> from skmeta import MAMLClassifier
    >>> from skmeta.datasets import load_digits_tasks
    >>> from skmeta.tasks import EpisodeSampler
    >>> digits = load_digits_tasks()
    >>> train = digits.target < 20
    >>> tasks = EpisodeSampler(digits.data[train], digits.target[train], n_way=5,
    ...                        k_shot=1, n_query=5, n_tasks=64, random_state=0)
    >>> model = MAMLClassifier(inner_lr=0.5, max_epochs=1, random_state=0)
    >>> clf = model.fit(tasks).adapt(tasks[0].X_support, tasks[0].y_support)
    >>> clf.predict(tasks[0].X_query).shape
    (25,)
    """

    # MetaLearnerMixin's per-task default comes first in the MRO
    _predict_tasks = _MAMLLearner._predict_tasks


class MAMLRegressor(MetaRegressorMixin, _MAMLLearner):
    __doc__ = """Model-agnostic meta-learning for few-shot regression.

    Meta-learns a network's initial weights such that a few gradient steps
    of the squared error on a new task's support set fit that task (Finn et
    al. 2017; the sinusoid problem is
    :func:`skmeta.datasets.make_sinusoid_tasks`); variants are chosen with
    ``algorithm``. Tasks of a meta-batch are adapted together
    (``torch.func.vmap``), also when each has its own number of points
    (they are padded to shared sizes with rows of zero weight).
    ``adapt`` returns a :class:`MAMLAdaptedRegressor`;
    ``score`` is the mean R² over tasks.
    """ + _LEARNER_PARAMS.format(
        outputs="one output", acc="", shared=_SHARED,
        standardize=standardize_doc(
            default=True, what="features and targets",
            undo=" (predictions are returned in the user's units)")) + """
    Examples
    --------
    >>> from skmeta import MAMLRegressor
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(100, random_state=0)
    >>> model = MAMLRegressor(module__hidden_sizes=(40, 40), inner_lr=0.01,
    ...                       max_epochs=2, random_state=0).fit(tasks)
    >>> model.adapt(tasks[0].X_support, tasks[0].y_support).predict(
    ...     tasks[0].X_query).shape
    (10,)
    """

    # MetaLearnerMixin's per-task default comes first in the MRO
    _predict_tasks = _MAMLLearner._predict_tasks


class _GuardedMAMLNet(MAMLNet):
    """The name MAMLNet had in files and pickles saved before the inner-loop
    guard moved into it; kept so that those load."""
