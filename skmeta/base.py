"""The meta-estimator contract shared by every skmeta learner.

A meta-learner's samples are tasks: ``fit`` meta-trains on a task collection,
``adapt`` turns one support set into a standalone fitted estimator, and
``predict``/``score`` adapt on each task's support set and evaluate on its
query set. Because tasks are the samples, scikit-learn's model selection
(``GridSearchCV``, ``cross_val_score``) splits task collections unchanged.
"""

import functools
import inspect
import weakref
from numbers import Integral

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import metadata_routing
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._version import __version__
from .tasks import check_tasks

PICKLE_FORMAT = 2

# n_jobs as joblib takes it: a positive count, or -1, -2... (all CPUs, all but one...)
N_JOBS_CONSTRAINT = [Interval(Integral, 1, None, closed="left"),
                     Interval(Integral, None, -1, closed="right"), None]


class VersionedPickleMixin:
    """Refuses, with a clear message, pickles of an incompatible skmeta or of
    another class.

    Pickles record skmeta's version, the format of its fitted state and the
    class that was saved; one of another format or class raises instead of
    loading into a wrong model.
    """

    def __getstate__(self):
        return {**super().__getstate__(), "_skmeta_version": __version__,
                "_skmeta_pickle_format": PICKLE_FORMAT,
                "_skmeta_class": _qualified_name(type(self))}

    def __setstate__(self, state):
        found = state.get("_skmeta_pickle_format")
        saved_by = state.get("_skmeta_version", "an unknown version")
        if found != PICKLE_FORMAT:
            raise ValueError(
                f"This {type(self).__name__} was saved by skmeta {saved_by} "
                f"(pickle format {found}), but skmeta {__version__} reads format "
                f"{PICKLE_FORMAT}. Load it with the skmeta that saved it, or "
                "refit it.")
        saved_class = state.get("_skmeta_class")
        if saved_class != _qualified_name(type(self)):
            raise ValueError(
                f"This pickle holds a {saved_class}, but it is being loaded as "
                f"a {_qualified_name(type(self))}; the file was altered or "
                "mislabelled.")
        super().__setstate__(state)


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


class CheapParamsMixin:
    """scikit-learn's parameter handling, made cheap for calls repeated per
    task (``adapt`` checks the parameters it runs with): constructor
    parameter names are read once per class, and a check of parameters that
    are the very objects last checked is skipped."""

    @classmethod
    def _get_param_names(cls):
        return _param_names(cls)

    def _validate_params(self):
        params = self.get_params(deep=False)
        checked = _CHECKED_PARAMS.get(self)
        if checked is not None and checked.keys() == params.keys() and all(
                params[name] is checked[name] for name in params):
            return
        super()._validate_params()
        _CHECKED_PARAMS[self] = params


@functools.cache
def _param_names(cls):
    return BaseEstimator._get_param_names.__func__(cls)


# estimator -> the parameters it last passed the check with (kept outside the
# estimator, so neither pickles nor skmeta.io files carry it)
_CHECKED_PARAMS = weakref.WeakKeyDictionary()


class MetaLearnerMixin(CheapParamsMixin, VersionedPickleMixin):
    """The contract of skmeta's meta-learners: fit on tasks, adapt to a new one.

    Learners inherit it through :class:`MetaClassifierMixin` or
    :class:`MetaRegressorMixin`, left of ``BaseEstimator``, declare
    ``_parameter_constraints`` (checked when ``fit`` and ``adapt`` start) and
    implement two hooks: ``_fit(tasks)``, which returns the fitted state as a
    dict of ``*_`` attributes (tasks already validated by
    :func:`skmeta.tasks.check_tasks`), and ``_adapt(X, y)``, which returns a
    new fitted estimator. Learners that adapt many tasks at once override
    ``_predict_tasks(tasks)``.
    """

    _task_type = "classification"
    # Task lists are the samples, not metadata: no set_*_request methods.
    __metadata_request__fit = {"tasks": metadata_routing.UNUSED}
    __metadata_request__predict = {"tasks": metadata_routing.UNUSED}
    __metadata_request__score = {"tasks": metadata_routing.UNUSED}

    def fit(self, tasks, y=None):
        """Meta-train on a task collection.

        A fit that raises leaves a previously fitted learner as it was: the
        new fitted state replaces the old one only once training is over.

        Parameters
        ----------
        tasks : sequence of Task or tuple
            Training tasks (see :func:`skmeta.tasks.check_tasks`); each needs
            query labels, or is an ``(X, y)`` pair that is split.
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        self : object
        """
        self._validate_params()
        tasks = self._check_tasks(tasks)
        self._set_fitted(self._fit(tasks), tasks)
        return self

    def _set_fitted(self, fitted, tasks):
        """Replace the fitted state (``*_`` attributes) by ``fitted``."""
        for name in [k for k in vars(self) if k.endswith("_")
                     and not k.startswith("_")]:
            delattr(self, name)
        vars(self).update(fitted, n_features_in_=tasks[0].X_support.shape[1])

    def adapt(self, X_support, y_support):
        """Adapt to a new task from its labelled support set.

        Parameters
        ----------
        X_support : array-like of shape (n_support, n_features)
        y_support : array-like of shape (n_support,)

        Returns
        -------
        estimator : scikit-learn estimator
            A new, fitted, standalone estimator for the task (the meta-learner
            is not changed). Its own ``fit(X, y)`` adapts again from the
            meta-learned starting point.
        """
        check_is_fitted(self)
        self._validate_params()
        n_features = np.shape(X_support)[1] if np.ndim(X_support) == 2 else None
        self._check_n_features(n_features, "X_support has")
        return self._adapt(X_support, y_support)

    def _check_n_features(self, n_features, what):
        if n_features is not None and n_features != self.n_features_in_:
            raise ValueError(
                f"{what} {n_features} features, but {type(self).__name__} "
                f"was meta-trained on tasks with {self.n_features_in_}.")

    def predict(self, tasks):
        """Adapt on each task's support set and predict its query set.

        Parameters
        ----------
        tasks : sequence of Task or tuple
            Tasks with support sets and query features (query labels are not
            needed).

        Returns
        -------
        list of ndarray
            One array of query predictions per task, in the user's labels.
        """
        check_is_fitted(self)
        tasks = self._check_tasks(tasks, require_y_query=False)
        self._check_n_features(tasks[0].X_support.shape[1], "Tasks have")
        return self._predict_tasks(tasks)

    def score(self, tasks, y=None):
        """Query score after adapting on each task's support set.

        Classifiers: accuracy, averaged over tasks. Regressors: R² over the
        query points of all tasks pooled (one minus the total squared error
        over the total squared deviation of each task's query targets from
        their mean), so that on a fixed task list it ranks models as their
        total squared error does; :func:`skmeta.metrics.task_scores` gives
        per-task values.

        Parameters
        ----------
        tasks : sequence of Task or tuple
            Tasks with query labels.
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        tasks = self._check_tasks(tasks)
        self._check_n_features(tasks[0].X_support.shape[1], "Tasks have")
        return self._score_predictions(tasks, self._predict_tasks(tasks))

    def _predict_tasks(self, tasks):
        """Query predictions of validated tasks; learners that adapt many
        tasks at once (batched) override this hook. Here: the task
        executors, ``adapt`` then ``predict`` per task through joblib with
        ``n_jobs`` and whichever backend is active
        (``joblib.parallel_backend("dask")`` or ``"ray"`` included)."""
        parallel = Parallel(n_jobs=getattr(self, "n_jobs", None))
        return parallel(delayed(_predict_task)(self, task) for task in tasks)

    def _check_tasks(self, tasks, require_y_query=True):
        return check_tasks(tasks, task_type=self._task_type,
                           require_y_query=require_y_query,
                           random_state=getattr(self, "random_state", None))


def _predict_task(learner, task):
    return learner._adapt(task.X_support, task.y_support).predict(task.X_query)


class MetaClassifierMixin(MetaLearnerMixin, ClassifierMixin):
    """Mixin of meta-learners for classification tasks (score: accuracy)."""

    @staticmethod
    def _score_predictions(tasks, predictions):
        return float(np.mean([np.mean(task.y_query == predicted) for task, predicted
                              in zip(tasks, predictions, strict=True)]))


class MetaRegressorMixin(MetaLearnerMixin, RegressorMixin):
    """Mixin of meta-learners for regression tasks (score: pooled R²)."""

    _task_type = "regression"

    @staticmethod
    def _score_predictions(tasks, predictions):
        error = sum(np.square(task.y_query - predicted).sum()
                    for task, predicted in zip(tasks, predictions, strict=True))
        spread = sum(np.square(task.y_query - task.y_query.mean()).sum()
                     for task in tasks)
        if spread == 0:
            return 1.0 if error == 0 else 0.0
        return float(1 - error / spread)


def check_float32_range(values, name):
    """Raise if finite ``values`` overflow float32, the precision skmeta's
    networks compute in."""
    if np.abs(np.asarray(values, dtype=np.float64)).max(initial=0) > np.finfo(
            np.float32).max:
        raise ValueError(
            f"{name} holds values that overflow float32 (beyond "
            f"{np.finfo(np.float32).max:.3g}), the precision skmeta computes in; "
            "rescale them.")


class ShortReprMixin:
    """A scikit-learn repr in which torch modules and fitted estimators given
    as parameters show as ``Name(...)``, so that printing an adapted
    estimator does not print a whole network."""

    def __repr__(self, N_CHAR_MAX=700):
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{name}={_short(value)}" for name, value in
                 self.get_params(deep=False).items()
                 if not (name in defaults and _same(value, defaults[name]))]
        return f"{type(self).__name__}({', '.join(shown)})"


def _short(value):
    if isinstance(value, (torch.nn.Module, np.ndarray)) or hasattr(value, "classes_"):
        return f"{type(value).__name__}(...)"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ("," if len(value) == 1
                                                          else "") + ")"
    return repr(value)


def _same(value, default):
    return value is default or (isinstance(value, (str, int, float, bool))
                                and type(value) is type(default) and value == default)


class CleanInputMixin:
    """Adaptation latency: clean NumPy input (a 2-D array of finite floats,
    and 1-D labels or finite float targets) skips scikit-learn's generic
    validation, which can cost more than adapting itself; anything else, and
    so every error, goes through the full validation."""

    _dtype = np.float32  # the precision _fit_* and _predict* receive
    _parameter_constraints = {}  # subclasses declare theirs; fit checks them

    def _clean_X(self, X, fitted=False):
        """``X`` in ``_dtype`` when clean (for the fitted width if
        ``fitted``), else None."""
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f"
                and X.size and not hasattr(self, "feature_names_in_")
                and (not fitted or X.shape[1] == getattr(self, "n_features_in_", -1))):
            return None
        with np.errstate(over="ignore"):  # beyond float32: the full path's error
            as_float32 = X.astype(np.float32, copy=False)
        if not np.isfinite(as_float32).all():
            return None
        return X.astype(self._dtype, copy=False)

    def _validated_X(self, X):
        """Rows to predict, checked against the fitted estimator."""
        check_is_fitted(self)
        clean = self._clean_X(X, fitted=True)
        if clean is not None:
            return clean
        X = validate_data(self, X, dtype=self._dtype, reset=False)
        check_float32_range(X, "X")
        return X

    def _clean_Xy(self, X, y, kinds):
        """``(X, y)`` when both are clean (y of a dtype kind in ``kinds``),
        else None; sets ``n_features_in_`` as validation would."""
        clean = self._clean_X(X)
        if (clean is None or not isinstance(y, np.ndarray) or y.ndim != 1
                or len(y) != len(X) or y.dtype.kind not in kinds):
            return None
        self.n_features_in_ = X.shape[1]
        return clean, y


class AdaptedClassifier(CleanInputMixin, CheapParamsMixin, VersionedPickleMixin,
                        ShortReprMixin, ClassifierMixin, BaseEstimator):
    """Base class of the per-task classifiers that ``adapt`` returns.

    Handles scikit-learn's input validation and the mapping between the
    user's labels (``classes_``) and the indices ``0..n_classes-1`` that
    subclasses work with: they implement ``_fit_encoded(X, y_encoded)`` and
    ``_predict_proba(X)``.
    """

    def fit(self, X, y):
        """Adapt to the task whose labelled examples are ``X``, ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : object
        """
        self._validate_params()
        clean = self._clean_Xy(X, y, "iubUS")
        if clean is not None and len(np.unique(clean[1])) > 1:
            X, y = clean
        else:
            X, y = validate_data(self, X, y, dtype=self._dtype)
            check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y_support has one class only ({self.classes_.tolist()[0]!r}); a "
                "classifier needs at least two classes: give support examples of "
                "two or more.")
        self._fit_encoded(X, y_encoded)
        return self

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self._predict_proba(self._validated_X(X))

    def predict(self, X):
        """Most probable class of each row, in the user's labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class AdaptedRegressor(CleanInputMixin, CheapParamsMixin, VersionedPickleMixin,
                       ShortReprMixin, RegressorMixin, BaseEstimator):
    """Base class of the per-task regressors that ``adapt`` returns.

    Handles parameter and input validation; subclasses implement
    ``_fit_array(X, y)`` and ``_predict(X)`` (arrays in ``_dtype``, float32
    unless they set float64).
    """

    def fit(self, X, y):
        """Adapt to the task whose labelled examples are ``X``, ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : object
        """
        self._validate_params()
        clean = self._clean_Xy(X, y, "f")
        if clean is None or not np.isfinite(clean[1]).all():
            clean = validate_data(self, X, y, dtype=self._dtype, y_numeric=True)
            check_float32_range(clean[0], "X")
        X, y = clean
        check_float32_range(y, "y")
        self._fit_array(X, y.astype(self._dtype))
        return self

    def predict(self, X):
        """Predicted target of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        return self._predict(self._validated_X(X))
