"""Model fusion: one model per training task and a global model, combined for
each new task from its support set."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed
from scipy.special import softmax
from sklearn.base import BaseEstimator, clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from ._nets import NetSpec, Training, fit_net
from ._pooled import PooledDataset, PooledNet, predict_rows
from .base import N_JOBS_CONSTRAINT, AdaptedClassifier, MetaClassifierMixin
from .nn import MLP
from .tasks import labelled_examples, pool_tasks

_LOG_FLOOR = np.log(1e-6)


class TorchMLPClassifier(AdaptedClassifier):
    """A small torch MLP classifier managed by skorch: the default base model
    of :class:`MetaFusionClassifier`.

    A skorch net around :class:`skmeta.nn.MLP`, with ``in_features`` and
    ``out_features`` set from the data, trained with Adam on the
    cross-entropy loss (through skmeta's one way of training a net, with its
    finite-loss guard), wrapped so that ``classes_`` holds the user's
    labels and ``random_state`` makes training reproducible. A
    KeyboardInterrupt during ``fit`` is passed on, as scikit-learn's
    estimators do, rather than ending training early as skorch does.

    Parameters
    ----------
    hidden_sizes : tuple of int, default=(64,)
        Width of each hidden layer.
    max_epochs : int, default=20
        Passes over the training data.
    lr : float, default=0.01
        Adam's learning rate.
    batch_size : int, default=64
        Examples per gradient step.
    device : str, default="cpu"
        Torch device for training and prediction ("cuda" for a GPU).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation and batch order (torch's global random
        state is left as it was).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.
    net_ : skorch.NeuralNet
        The trained network (indices ``0..n_classes-1`` as targets).

    Examples
    --------
    >>> from skmeta.fusion import TorchMLPClassifier
    >>> X, y = [[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]], ["a", "a", "b", "b"]
    >>> clf = TorchMLPClassifier(max_epochs=50, random_state=0).fit(X, y)
    >>> clf.predict([[0.0, 0.1], [1.0, 0.9]]).tolist()
    ['a', 'b']
    """

    def __init__(self, hidden_sizes=(64,), max_epochs=20, lr=0.01, batch_size=64,
                 device="cpu", random_state=None):
        self.hidden_sizes = hidden_sizes
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    _parameter_constraints = {
        "hidden_sizes": [tuple, list],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
    }

    def _fit_encoded(self, X, y):
        seed = check_random_state(self.random_state).randint(2**31)
        spec = NetSpec(PooledNet, MLP, PooledDataset(X, y.astype(np.int64)),
                       data_kwargs={"in_features": X.shape[1],
                                    "out_features": len(self.classes_)},
                       routed={"hidden_sizes": self.hidden_sizes},
                       params={"criterion": torch.nn.CrossEntropyLoss})
        self.net_ = fit_net(spec, Training(max_epochs=self.max_epochs,
                                           batch_size=self.batch_size, lr=self.lr,
                                           device=self.device), seed)
        if self.net_.interrupted_:  # passed on, as scikit-learn's models do
            raise KeyboardInterrupt

    def _predict_proba(self, X):
        return softmax(predict_rows(self.net_.module_, X), axis=1)


class _FusedClassifier(AdaptedClassifier):
    """Shared part of the fused classifiers: named, fitted models, combined
    by ``_combine(X, y_encoded)``."""

    def _fit_encoded(self, X, y):
        self.model_names_ = np.array([name for name, _ in self.estimators])
        self._combine(X, y)

    def _model_probas(self, X):
        return [model.predict_proba(X) for _, model in self.estimators]


class WeightedFusionClassifier(_FusedClassifier):
    """Weighted mean of fitted models' probabilities, weights learned on a
    task's labelled examples: f(x) = sum_i w_i f_i(x).

    ``fit`` learns non-negative weights summing to one by minimising the
    log-loss of the fused probabilities on ``X, y`` plus ``prior_strength``
    times the Kullback-Leibler divergence from the uniform weights to the
    learned ones (a small torch problem solved with L-BFGS). The penalty pulls
    the weights toward uniform, so one or two examples cannot put all weight
    on one model; it acts like ``prior_strength`` extra examples.

    Each model's probabilities are restricted to the task's classes and
    renormalised over the ones it knows (its prediction given that the label
    is one of the task's); a class a model never saw gets probability zero
    from it, so a model that misses one of the task's classes loses weight on
    that class's examples, and a model that knows none of them gets weight
    zero. Every class of the task must be known to at least one model.
    This is what :meth:`MetaFusionClassifier.adapt` returns for
    ``fusion="weighted"``.

    Parameters
    ----------
    estimators : list of (str, classifier)
        Named fitted classifiers with ``classes_`` and ``predict_proba``;
        used as they are, never refitted. Wrap them in
        :class:`sklearn.frozen.FrozenEstimator` to keep them through
        :func:`~sklearn.base.clone`.
    prior_strength : float, default=1.0
        Weight of the pull toward uniform weights, in examples.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    weights_ : ndarray of shape (n_models,)
        Learned weights, in the order of ``model_names_``.
    model_names_ : ndarray of shape (n_models,)
        Names of the models.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn.frozen import FrozenEstimator
    >>> from skmeta.fusion import WeightedFusionClassifier
    >>> X, y = [[0.0]] * 4, ["a", "a", "a", "b"]
    >>> mostly_a = FrozenEstimator(DummyClassifier().fit(X, y))
    >>> mostly_b = FrozenEstimator(DummyClassifier().fit(X, ["b", "b", "b", "a"]))
    >>> clf = WeightedFusionClassifier([("A", mostly_a), ("B", mostly_b)])
    >>> clf.fit(X, y).weights_.round(2).tolist()
    [0.73, 0.27]
    """

    def __init__(self, estimators, prior_strength=1.0):
        self.estimators = estimators
        self.prior_strength = prior_strength

    _parameter_constraints = {
        "estimators": [list],
        "prior_strength": [Interval(Real, 0, None, closed="left")],
    }

    def _combine(self, X, y):
        self._check_known_classes()
        probas = self._task_probas(X)
        knows_some = np.array([np.isin(self.classes_, model.classes_).any()
                               for _, model in self.estimators])
        self.weights_ = np.zeros(len(self.estimators))
        self.weights_[knows_some] = _simplex_weights(
            probas[knows_some][:, np.arange(len(y)), y].T,
            probas[knows_some].sum(2).T, self.prior_strength)

    def _predict_proba(self, X):
        fused = np.einsum("m,mnc->nc", self.weights_, self._task_probas(X))
        total = fused.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, fused / total, 1 / len(self.classes_))

    def _check_known_classes(self):
        known = np.unique(np.concatenate([m.classes_ for _, m in self.estimators]))
        unknown = np.setdiff1d(self.classes_, known)
        if len(unknown):
            raise ValueError(
                f"Classes {unknown.tolist()} of the support set were never seen "
                f"by any of the {len(self.estimators)} models (they know "
                f"{known.tolist()}), so weighting their probabilities cannot "
                "predict them; use fusion='stacking' for tasks with new classes.")

    def _task_probas(self, X):
        """Each model's probabilities over the task's classes, (n_models,
        n_samples, n_classes): zero for classes it does not know, rows
        renormalised over the ones it knows (all zero if it knows none)."""
        out = np.zeros((len(self.estimators), len(X), len(self.classes_)))
        for m, ((_, model), proba) in enumerate(zip(self.estimators,
                                                    self._model_probas(X),
                                                    strict=True)):
            columns = {label: j for j, label in enumerate(model.classes_)}
            for c, label in enumerate(self.classes_):
                if label in columns:
                    out[m, :, c] = proba[:, columns[label]]
        total = out.sum(2, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, out / total, 0.0)


def _simplex_weights(true_class, mass, prior_strength):
    """Weights w on the simplex minimising sum_i -log(p_i(w)) + prior_strength
    * KL(uniform || w), where p_i(w) = (true_class[i] @ w) / (mass[i] @ w):
    the fused probability of example i's class."""
    true_class, mass = torch.as_tensor(true_class), torch.as_tensor(mass)
    logits = torch.zeros(mass.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-10,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        log_w = torch.log_softmax(logits, 0)
        w = log_w.exp()
        # clamped: an example no model gives any mass adds a constant
        log_p = ((true_class @ w).clamp_min(1e-12).log()
                 - (mass @ w).clamp_min(1e-12).log())
        loss = -log_p.sum() - prior_strength * log_w.mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.softmax(logits.detach(), 0).numpy()


class StackedFusionClassifier(_FusedClassifier):
    """A combiner trained on fitted models' outputs; works for classes none of
    the models has seen.

    A sample's meta-features are the log-probabilities that every model gives
    every class it knows, floored at log(1e-6). For a class never seen in
    training, what carries information is how the sample relates to all the
    known classes, not the probability of one of them: probabilities saturate
    (a confident model says 1 for one class and ~0 for the rest, whatever the
    rest are), while log-probabilities keep the gaps between the unlikely
    classes. For softmax models (the default torch MLP, logistic regression)
    they are the logits (decision scores) up to a shift per model and sample,
    and every scikit-learn classifier has them, unlike ``decision_function``.
    ``fit`` trains a clone of ``combiner`` on the meta-features of ``X``.
    This is what :meth:`MetaFusionClassifier.adapt` returns for
    ``fusion="stacking"``.

    Parameters
    ----------
    estimators : list of (str, classifier)
        Named fitted classifiers with ``predict_proba``; used as they are,
        never refitted (wrap them in :class:`sklearn.frozen.FrozenEstimator`
        to keep them through :func:`~sklearn.base.clone`).
    combiner : classifier or None, default=None
        Fitted on the meta-features; None means
        ``LogisticRegression(max_iter=1000)``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The task's labels.
    combiner_ : classifier
        The fitted combiner (on class indices ``0..n_classes-1``).
    model_names_ : ndarray of shape (n_models,)
        Names of the models.

    Examples
    --------
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skmeta.fusion import StackedFusionClassifier
    >>> left_right = LogisticRegression().fit([[-1.0], [1.0]], ["left", "right"])
    >>> clf = StackedFusionClassifier([("lr", FrozenEstimator(left_right))])
    >>> clf.fit([[-2.0], [-1.5], [1.5], [2.0]], ["new", "new", "other", "other"])
    StackedFusionClassifier(...)
    >>> clf.predict([[-3.0], [3.0]]).tolist()
    ['new', 'other']
    """

    def __init__(self, estimators, combiner=None):
        self.estimators = estimators
        self.combiner = combiner

    def _combine(self, X, y):
        combiner = (LogisticRegression(max_iter=1000) if self.combiner is None
                    else self.combiner)
        self.combiner_ = clone(combiner).fit(self._meta_features(X), y)

    def _predict_proba(self, X):
        return self.combiner_.predict_proba(self._meta_features(X))

    def _meta_features(self, X):
        with np.errstate(divide="ignore"):
            return np.hstack([np.maximum(np.log(p), _LOG_FLOOR)
                              for p in self._model_probas(X)])


class MetaFusionClassifier(MetaClassifierMixin, BaseEstimator):
    """Model fusion: a model per training task and a global model, combined
    for each new task from its support set.

    ``fit`` trains a clone of ``estimator`` on each training task's
    labelled examples (support and query sets: the task executors, run in
    parallel by joblib) and, if ``global_model``, one more on all the
    training tasks' data pooled. ``adapt`` learns from a new task's support
    set how to combine them:

    - ``fusion="weighted"``: f(x) = sum_i w_i f_i(x), non-negative weights
      summing to one over the models' probabilities, fitted by log-loss on
      the support set with a pull toward uniform weights (see
      :class:`WeightedFusionClassifier`). For tasks whose classes were seen
      in training (e.g. sites or patients sharing a label space); the
      weights show which training tasks the new one resembles.
    - ``fusion="stacking"``: a combiner (logistic regression by default)
      trained on the models' log-probabilities of the support examples (see
      :class:`StackedFusionClassifier`). Works for classes never seen in
      training.

    With thousands of training tasks, ``max_local_models`` bounds the number
    of models that every prediction runs: the tasks are clustered by k-means
    on a description of their inputs (each feature's mean and standard
    deviation over the task's examples, in units of that feature's standard
    deviation over all training data) and one local model is trained per
    cluster, on the cluster's pooled data. Tasks from the same site or domain
    thus share a model, and no data is dropped. Clusters group tasks by their
    inputs only, so a cluster's model may learn the union of its tasks' label
    sets.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Cloned for each model; any scikit-learn classifier with
        ``predict_proba``. None means :class:`TorchMLPClassifier` (a small
        torch MLP managed by skorch; give
        ``TorchMLPClassifier(device="cuda")`` to train on a GPU). Its
        parameters are reachable as ``estimator__<name>``.
    fusion : {"weighted", "stacking"}, default="weighted"
        How ``adapt`` combines the models.
    global_model : bool, default=True
        Whether to also train a model on all training data pooled.
    max_local_models : int or None, default=None
        At most this many local models (clusters of tasks, see above); None
        trains one per task.
    prior_strength : float, default=1.0
        ``fusion="weighted"``: pull toward uniform weights, in examples.
    combiner : classifier or None, default=None
        ``fusion="stacking"``: the classifier trained on the meta-features;
        None means ``LogisticRegression(max_iter=1000)``.
    n_jobs : int or None, default=None
        Models trained in parallel by :class:`joblib.Parallel`; None uses
        the active ``joblib.parallel_backend`` context (one job outside any),
        so a Dask or Ray backend runs the task executors unchanged.
    verbose : int, default=0
        If positive, print a line as each model is fitted.
    random_state : int, RandomState instance or None, default=None
        Seeds the clustering and each model's ``random_state`` parameters.

    Attributes
    ----------
    estimators_ : list of (str, classifier)
        The fitted models: ``"global"`` first (if ``global_model``), then
        ``"task <i>"`` per training task, or ``"cluster <k>"`` per cluster
        of tasks when ``max_local_models`` is smaller than the number of
        tasks. A KeyboardInterrupt during ``fit`` stops it, keeping the
        models fitted until then (with a warning).
    task_groups_ : list of ndarray
        For each local model, the indices of the training tasks it learned.
    n_features_in_ : int
        Features per example.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skmeta import MetaFusionClassifier
    >>> X, y = make_classification(n_samples=500, n_features=4, random_state=0)
    >>> flips = [np.array([1, -1, 1, -1]), np.array([-1, 1, -1, 1])]
    >>> sites = [(X[i::5] * flips[i % 2], y[i::5]) for i in range(4)]
    >>> model = MetaFusionClassifier(LogisticRegression(), random_state=0).fit(sites)
    >>> clf = model.adapt(X[4::5][:10] * flips[1], y[4::5][:10])
    >>> clf.model_names_.tolist()
    ['global', 'task 0', 'task 1', 'task 2', 'task 3']
    >>> clf.weights_.round(2).tolist()  # tasks 1 and 3 share the new task's flip
    [0.09, 0.04, 0.54, 0.04, 0.29]
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "fusion": [StrOptions({"weighted", "stacking"})],
        "global_model": ["boolean"],
        "max_local_models": [Interval(Integral, 1, None, closed="left"), None],
        "prior_strength": [Interval(Real, 0, None, closed="left")],
        "combiner": [HasMethods(["fit", "predict_proba"]), None],
        "n_jobs": N_JOBS_CONSTRAINT,
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator=None, fusion="weighted", *, global_model=True,
                 max_local_models=None, prior_strength=1.0, combiner=None,
                 n_jobs=None, verbose=0, random_state=None):
        self.estimator = estimator
        self.fusion = fusion
        self.global_model = global_model
        self.max_local_models = max_local_models
        self.prior_strength = prior_strength
        self.combiner = combiner
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state

    def _fit(self, tasks):
        rng = check_random_state(self.random_state)
        groups = self._group_tasks(tasks, rng)
        singletons = len(groups) == len(tasks)
        names = [f"task {g[0]}" if singletons else f"cluster {k}"
                 for k, g in enumerate(groups)]
        data = [pool_tasks([tasks[i] for i in g]) for g in groups]
        if self.global_model:
            names.insert(0, "global")
            data.insert(0, pool_tasks(tasks))
        base = TorchMLPClassifier() if self.estimator is None else self.estimator
        seeds = rng.randint(2**31, size=len(data))
        models = _collect_until_interrupted(Parallel(
            n_jobs=self.n_jobs, return_as="generator")(
            delayed(_fit_seeded)(clone(base), X, y, seed)
            for (X, y), seed in zip(data, seeds, strict=True)), names, self.verbose)
        # Fewer models than names after an interrupt: keep the fitted ones.
        return {"estimators_": list(zip(names, models, strict=False)),
                "task_groups_": groups[:len(models) - bool(self.global_model)]}

    def _adapt(self, X_support, y_support):
        estimators = [(name, FrozenEstimator(model))
                      for name, model in self.estimators_]
        if self.fusion == "weighted":
            fused = WeightedFusionClassifier(estimators, self.prior_strength)
        else:
            fused = StackedFusionClassifier(estimators, self.combiner)
        return fused.fit(X_support, y_support)

    def _group_tasks(self, tasks, rng):
        """Task indices per local model: one task each, or k-means clusters
        of the tasks' input moments when there are too many tasks."""
        limit = self.max_local_models
        if limit is None or limit >= len(tasks):
            return [np.array([i]) for i in range(len(tasks))]
        pooled = pool_tasks(tasks)[0]
        center, scale = pooled.mean(0), pooled.std(0) + 1e-12
        moments = np.array([np.concatenate([(X.mean(0) - center) / scale,
                                            X.std(0) / scale])
                            for X, _ in map(labelled_examples, tasks)])
        from sklearn.cluster import KMeans  # lazy: 0.2 s at import

        kmeans = KMeans(limit, n_init=3, random_state=rng.randint(2**31))
        labels = kmeans.fit_predict(moments)
        return [np.flatnonzero(labels == k) for k in np.unique(labels)]


def _collect_until_interrupted(models, names, verbose):
    """The fitted ``models`` as they come (a line each when ``verbose``);
    after a KeyboardInterrupt, the ones fitted so far, with a warning (the
    interrupt itself if none)."""
    fitted = []
    try:
        for model in models:
            fitted.append(model)
            if verbose:
                print(f"fitted model {len(fitted)} of {len(names)} "
                      f"({names[len(fitted) - 1]})", flush=True)
    except KeyboardInterrupt:
        if not fitted:
            raise
        warnings.warn(f"Fitting was interrupted; fusing the {len(fitted)} of "
                      f"{len(names)} models fitted so far.", stacklevel=4)
    return fitted


def _fit_seeded(estimator, X, y, seed):
    """Fit with every ``random_state`` parameter (nested ones included) set to
    ``seed``, as scikit-learn's ensembles seed their members."""
    names = [name for name in estimator.get_params(deep=True)
             if name == "random_state" or name.endswith("__random_state")]
    return estimator.set_params(**dict.fromkeys(names, seed)).fit(X, y)
