"""The common battery: every public estimator of skmeta, found by crawling
the package, is covered here.

- Meta-learners: one entry in LEARNERS (a factory for a small, fast
  configuration and what the battery needs to know about it) runs the
  scikit-learn contract, the bad-input, fault, interrupt and persistence
  tests below.
- Estimators that ``adapt`` returns (and the other plain estimators): one
  entry in ADAPTED runs scikit-learn's ``parametrize_with_checks``, with the
  expected failures and their reasons in EXPECTED_FAILURES.

A public estimator with no entry fails ``test_every_public_estimator_is_in_
the_battery``.
"""

import copy
import importlib
import inspect
import os
import pickle
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNet
from skorch.callbacks import Callback, Checkpoint, LoadInitState
from toy_models import EndFeatures, MeanLogits, ScaleShift

import skmeta
from skmeta import (
    MAMLClassifier,
    MAMLRegressor,
    MetaBayesianRidge,
    MetaDistiller,
    MetaFusionClassifier,
    ProtoNetClassifier,
    Task,
)
from skmeta._nets import UntrainedWarning
from skmeta.base import MetaLearnerMixin
from skmeta.bayes import BayesianLinearRegressor
from skmeta.datasets import make_sinusoid_tasks
from skmeta.distill import (
    CentroidHead,
    EmbeddingHeadClassifier,
    PooledEmbeddingClassifier,
)
from skmeta.distributed import fit_data_parallel
from skmeta.fusion import (
    StackedFusionClassifier,
    TorchMLPClassifier,
    WeightedFusionClassifier,
)
from skmeta.maml import MAMLAdaptedClassifier, MAMLAdaptedRegressor
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler


@dataclass
class Learner:
    make: callable  # random_state -> a small, fast, unfitted learner
    skorch_core: bool = True  # its torch core is ``net_``, trained by skorch
    callbacks: bool = True  # its nets take skorch callbacks
    diverging: dict = None  # parameters under which the meta-loss blows up
    regression: bool = False
    resumable: bool = True  # one checkpoint resumes its training
    same_in_parallel: bool = True  # data-parallel training = single-process


LEARNERS = {
    "ProtoNetClassifier": Learner(
        lambda seed=0: ProtoNetClassifier(module__hidden_sizes=(16,), max_epochs=2,
                                          meta_batch_size=4, random_state=seed),
        diverging={"meta_lr": 1e30}),
    "MAMLClassifier": Learner(
        lambda seed=0: MAMLClassifier(module__hidden_sizes=(32,), max_epochs=2,
                                      meta_batch_size=4, inner_lr=0.5,
                                      random_state=seed),
        diverging={"meta_lr": 1e30}),
    "MAMLRegressor": Learner(
        lambda seed=0: MAMLRegressor(module__hidden_sizes=(40, 40), inner_lr=0.01,
                                     test_inner_steps=10, meta_batch_size=25,
                                     max_epochs=2, random_state=seed),
        diverging={"meta_lr": 1e30}, regression=True),
    "MetaFusionClassifier": Learner(
        lambda seed=0: MetaFusionClassifier(
            TorchMLPClassifier(hidden_sizes=(16,), max_epochs=5), "stacking",
            max_local_models=4, random_state=seed),
        skorch_core=False, callbacks=False,
        diverging={"estimator__lr": 1e30}),
    "MetaDistiller": Learner(
        lambda seed=0: MetaDistiller(teacher__hidden_sizes=(32,),
                                     student__hidden_sizes=(16,), max_epochs=2,
                                     random_state=seed),
        # its callbacks reach the teacher's training and the student's, so one
        # checkpoint callback would write both nets' states to the same files
        diverging={"meta_lr": 1e30}, resumable=False),
    "MetaBayesianRidge": Learner(
        lambda seed=0: MetaBayesianRidge(module__hidden_sizes=(16,), max_epochs=2,
                                         random_state=seed),
        # each process draws the support sizes of its own share of a batch
        diverging={"meta_lr": 1e30}, regression=True, same_in_parallel=False),
    "PooledEmbeddingClassifier": Learner(
        lambda seed=0: PooledEmbeddingClassifier(module__hidden_sizes=(32,),
                                                 max_epochs=2, random_state=seed),
        diverging={"lr": 1e30}),
}
NAMES = sorted(LEARNERS)

_MODULE_HASH = (
    "joblib.hash of a torch module changes under deepcopy, as torch pickles "
    "storage identity; the learners' tests check the module's weights instead")
_WEAK_MODULE = (
    "the checks vary the number of features, so the module must accept any; "
    "such a module (MeanLogits sees only the mean feature) cannot fit the "
    "checks' data to their score thresholds; adaptation quality is tested on "
    "real tasks")
_FIXED_MODELS = (
    "fuses prefitted models (here one that knows classes 0, 1, 2 and reads two "
    "features), so it cannot predict other labels nor fit the checks' data to "
    "their score thresholds; its behaviour is tested in test_fusion.py")



class SquashedMeanLogits(MeanLogits):
    """MeanLogits of the squashed mean feature: some checks fit unscaled data
    (features around 100), on which gradient steps on the raw mean diverge
    (rightly refused by the inner-loop guard); squashed, they stay stable, as
    on the standardised features the meta-learners give their modules."""

    def forward(self, X):
        return super().forward(torch.tanh(X))


ADAPTED = [
    PrototypeClassifier(),
    PrototypeClassifier(ScaleShift()),
    MAMLAdaptedClassifier(SquashedMeanLogits(50), inner_lr=1.0, inner_steps=5),
    MAMLAdaptedRegressor(SquashedMeanLogits(1), inner_lr=0.1, inner_steps=5),
    EmbeddingHeadClassifier(),
    EmbeddingHeadClassifier(ScaleShift()),
    CentroidHead(),
    StackedFusionClassifier([("ends", FrozenEstimator(EndFeatures().fit()))]),
    WeightedFusionClassifier([("ends", FrozenEstimator(
        EndFeatures(classes=(0, 1, 2)).fit()))]),
    TorchMLPClassifier(max_epochs=5, random_state=0),
    BayesianLinearRegressor(),
    BayesianLinearRegressor(MeanLogits(2)),
]

EXPECTED_FAILURES = {
    ("PrototypeClassifier", True): {"check_estimators_overwrite_params": _MODULE_HASH},
    ("EmbeddingHeadClassifier", True): {
        "check_estimators_overwrite_params": _MODULE_HASH},
    ("MAMLAdaptedClassifier", True): {
        "check_estimators_overwrite_params": _MODULE_HASH,
        "check_classifiers_train": _WEAK_MODULE},
    ("BayesianLinearRegressor", True): {
        "check_estimators_overwrite_params": _MODULE_HASH},
    ("MAMLAdaptedRegressor", True): {
        "check_estimators_overwrite_params": _MODULE_HASH,
        "check_regressors_train": _WEAK_MODULE},
}
# Estimators that are not checked by parametrize_with_checks, and why.
NOT_ARRAY_ESTIMATORS = {
    "TaskWise": "transforms task lists, not arrays; tested in test_pipeline.py",
}


def expected_failures(estimator):
    module = next((getattr(estimator, name) for name in ("embedding", "module",
                                                         "features")
                   if getattr(estimator, name, None) is not None), None)
    key = (type(estimator).__name__, module is not None)
    failures = dict(EXPECTED_FAILURES.get(key, {}))
    if isinstance(estimator, WeightedFusionClassifier):
        failures.update(dict.fromkeys(
            ["check_classifiers_classes", "check_dtype_object",
             "check_classifiers_train"], _FIXED_MODELS))
    return failures


def public_estimators():
    """Every estimator class of skmeta's public API: those a public module
    exports (``__all__``) or defines, less the torch cores (skorch nets,
    tested through their learners) and the base classes of skmeta.base."""
    found = {}
    for info in pkgutil.walk_packages(skmeta.__path__, "skmeta."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", [])
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseEstimator)
                    and not issubclass(obj, NeuralNet) and not name.startswith("_")
                    and obj.__module__ not in ("skmeta.base", "skmeta._learner")
                    and (name in exported or obj.__module__ == info.name)):
                found[name] = obj
    return found


def test_every_public_estimator_is_in_the_battery():
    covered = ({type(e).__name__ for e in ADAPTED} | set(LEARNERS)
               | set(NOT_ARRAY_ESTIMATORS))
    found = public_estimators()
    missing = sorted(set(found) - covered)
    assert not missing, f"public estimators with no entry in the battery: {missing}"
    assert {n for n, c in found.items() if issubclass(c, MetaLearnerMixin)} == set(
        LEARNERS)


@parametrize_with_checks(ADAPTED, expected_failed_checks=expected_failures)
def test_adapted_estimators_pass_sklearn_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def task_sets(train_tasks, test_tasks):
    """Training and test tasks for classifiers (digits) and regressors
    (sinusoids)."""
    return {False: (list(train_tasks[:40]), test_tasks),
            True: (make_sinusoid_tasks(200, random_state=0),
                   make_sinusoid_tasks(20, random_state=1))}


def learner_name(request):
    return request.node.callspec.params["name"]


@pytest.fixture
def tasks(request, task_sets):
    """The training tasks that suit the learner under test."""
    return task_sets[LEARNERS[learner_name(request)].regression][0]


@pytest.fixture
def new_tasks(request, task_sets):
    """The test tasks that suit the learner under test."""
    return task_sets[LEARNERS[learner_name(request)].regression][1]


@pytest.fixture(scope="module")
def fitted(task_sets):
    return {name: LEARNERS[name].make().fit(task_sets[LEARNERS[name].regression][0])
            for name in NAMES}


def outputs(estimator, X):
    """What an adapted estimator says about X: probabilities or predictions."""
    method = getattr(estimator, "predict_proba", estimator.predict)
    return method(X)


def usable_score(name, score):
    """Above chance (0.2) for a classifier, finite for a regressor."""
    return np.isfinite(score) if LEARNERS[name].regression else score > 0.2


def plain_params(learner):
    """Parameters, nested ones included, less the estimator objects."""
    return {k: v for k, v in learner.get_params().items()
            if not hasattr(v, "get_params")}


def all_weights(learner):
    return [p.detach().clone() for p in learner.net_.module_.parameters()]


# --- the scikit-learn estimator contract ------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_init_stores_params_and_clone_keeps_them(name):
    learner = LEARNERS[name].make(seed=7)
    assert set(vars(learner)) == set(learner.get_params(deep=False))
    twin = clone(learner)
    assert twin is not learner and plain_params(twin) == plain_params(learner)
    assert clone(learner.set_params(random_state=3)).random_state == 3


@pytest.mark.parametrize("name", NAMES)
def test_fits_lists_samplers_and_pairs(name, digits, tasks, new_tasks):
    pool = np.isin(digits.target, digits.train_classes)
    sampler = EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                             k_shot=2, n_query=2, n_tasks=24, random_state=0)
    pairs = [(np.vstack([t.X_support, t.X_query]),
              np.concatenate([t.y_support, t.y_query])) for t in tasks]
    regression = LEARNERS[name].regression
    for collection in (tasks, pairs) if regression else (tasks, sampler, pairs):
        learner = LEARNERS[name].make().fit(collection)
        assert usable_score(name, learner.score(new_tasks[:10]))
    predictions = learner.predict([Task(t.X_support, t.y_support, t.X_query)
                                   for t in new_tasks[:3]])
    assert [p.shape for p in predictions] == [t.y_query.shape for t in new_tasks[:3]]


@pytest.mark.parametrize("name", NAMES)
def test_same_random_state_same_model(name, tasks, fitted, new_tasks):
    again = LEARNERS[name].make().fit(tasks)
    task = new_tasks[0]
    np.testing.assert_array_equal(
        outputs(again.adapt(task.X_support, task.y_support), task.X_query),
        outputs(fitted[name].adapt(task.X_support, task.y_support), task.X_query))


@pytest.mark.parametrize("name", NAMES)
def test_fit_leaves_callers_arrays_alone(name, tasks):
    copies = [Task(*(a.astype(np.float64) for a in (
        t.X_support, t.y_support, t.X_query, t.y_query))) for t in tasks[:12]]
    before = [[a.copy() for a in vars(t).values()] for t in copies]
    LEARNERS[name].make().fit(copies)
    for task, saved in zip(copies, before, strict=True):
        for array, original in zip(vars(task).values(), saved, strict=True):
            np.testing.assert_array_equal(array, original)


@pytest.mark.parametrize("name", NAMES)
def test_clean_arrays_skip_validation_with_the_same_result(name, fitted, new_tasks):
    """Clean NumPy input takes the adapted estimators' fast path; lists go
    through scikit-learn's validation: the same model either way."""
    task = new_tasks[0]
    fast = fitted[name].adapt(task.X_support, task.y_support)
    slow = fitted[name].adapt(task.X_support.tolist(), task.y_support.tolist())
    np.testing.assert_allclose(outputs(fast, task.X_query),
                               outputs(slow, task.X_query.tolist()), rtol=1e-5)


# --- output -----------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_help_shows_no_metadata_request_methods(name):
    """Task lists are samples, not metadata: no set_*_request blocks."""
    learner = LEARNERS[name].make()
    assert [m for m in dir(learner) if re.fullmatch(r"set_\w+_request", m)] == []


@pytest.mark.parametrize("name", NAMES)
def test_adapted_estimators_print_a_short_repr(name, fitted, new_tasks):
    task = new_tasks[0]
    text = repr(fitted[name].adapt(task.X_support, task.y_support))
    assert "\n" not in text and len(text) < 400, text


# --- parameters: declared once, checked when fit starts ----------------------

BAD_PARAMS = [
    ("max_epochs", 0), ("max_epochs", "2"), ("meta_lr", -1), ("meta_lr", 0),
    ("meta_batch_size", "8"), ("meta_batch_size", 0), ("batch_size", "64"),
    ("lr", -1.0), ("verbose", "yes"), ("validation_fraction", 0),
    ("validation_fraction", 1.5), ("shuffle", "no"), ("temperature", "4"),
    ("alpha", 2.0), ("n_jobs", 0), ("algorithm", "mamal"), ("inner_lr", -1.0),
    ("inner_steps", 0), ("chunk_size", "big"), ("fusion", "mean"),
    ("prior_strength", -1.0), ("max_local_models", 0), ("device", 3),
    ("callbacks", "ProgressBar"), ("module", "MLP"), ("random_state", "seed"),
]
PARAM_CASES = [(name, param, value) for name in NAMES for param, value in BAD_PARAMS
               if param in LEARNERS[name].make().get_params(deep=False)]


@pytest.mark.parametrize(("name", "param", "value"), PARAM_CASES,
                         ids=[f"{n}-{p}={v!r}" for n, p, v in PARAM_CASES])
def test_bad_parameter_is_named_when_fit_starts(name, param, value, tasks):
    learner = LEARNERS[name].make().set_params(**{param: value})
    with pytest.raises((ValueError, TypeError), match=re.escape(
            f"The '{param}' parameter of {type(learner).__name__} must be")):
        learner.fit(tasks)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_has_a_constraint(name):
    learner = LEARNERS[name].make()
    declared = {k for k in learner.get_params(deep=False) if "__" not in k}
    assert declared <= set(type(learner)._parameter_constraints)


# --- bad input: a clear error naming the task, never a silent result ---------

X = np.random.default_rng(0).normal(size=(6, 64))
Y = np.array([0, 1, 2, 0, 1, 2])


def good():
    return Task(X, Y, X, Y)


def bad_at(index, task):
    tasks = [good() for _ in range(4)]
    tasks[index] = task
    return tasks


BAD_INPUT = [
    (bad_at(2, Task(X[:, :10], Y, X[:, :10], Y)), "Task 2: X has 10 features"),
    (bad_at(1, Task(np.where(X > 1, np.nan, X), Y, X, Y)),
     "Task 1: X_support contains NaN"),
    (bad_at(1, Task(X, Y, np.where(X > 1, np.inf, X), Y)),
     "Task 1: X_query contains infinity"),
    (bad_at(1, Task(np.where(X > 1, -np.inf, X), Y, X, Y)),
     "Task 1: X_support contains infinity"),
    (bad_at(3, Task(X[:0], Y[:0], X, Y)), "Task 3: X_support is empty"),
    (bad_at(1, Task(X, Y, X[:0], Y[:0])), "Task 1: X_query is empty"),
    (bad_at(1, Task(X, Y, X, Y + 5)), "Task 1: query labels [5, 6, 7] are not"),
    (bad_at(0, Task(X, np.ones(6), X, np.ones(6))),
     "Task 0: y_support has a single class"),
    (bad_at(1, Task(X, Y[:4], X, Y)), "Task 1: X_support has 6 rows but "
     "y_support has 4 values"),
    (bad_at(1, Task(X, Y, X, Y[:3])), "Task 1: X_query has 6 rows but y_query "
     "has 3 values"),
    (bad_at(1, Task(X.astype(str), Y, X, Y)), None),  # numeric strings convert
    (bad_at(1, Task(np.full((6, 64), "x"), Y, X, Y)),
     "Task 1: X_support must be numeric"),
    (bad_at(1, Task(X[:, 0], Y, X, Y)), "Task 1: X_support must be 2-D"),
    (bad_at(1, Task(X[None], Y, X, Y)), "Task 1: X_support must be 2-D"),
    (bad_at(1, Task(X, Y, X[..., None], Y)), "Task 1: X_query must be 2-D"),
    (bad_at(1, Task(X, Y[:, None].repeat(2, 1), X, Y)),
     "Task 1: y_support must be 1-D"),
    (bad_at(1, Task(X, Y)), "Task 1: X_query is missing"),
    (bad_at(1, Task(X, Y, X)), "Task 1: y_query is missing"),
    (bad_at(1, (X, Y, X)), "Task 1: expected a skmeta.Task"),
    (bad_at(1, X), "Task 1: expected a skmeta.Task"),
    (bad_at(1, "task"), "Task 1: expected a skmeta.Task"),
    (bad_at(1, (X, [0, 0, 0, 0, 0, 1])), "Task 1: class 1 has a single example"),
    (bad_at(1, (X, [0] * 6)), "Task 1: y has a single class"),
    (bad_at(1, Task(X, np.array([0, 1, 2, 0, "a", 2], dtype=object), X, Y)),
     "Task 1: y_support mixes label types"),
    (bad_at(1, Task(X, np.array([0, 1, np.nan, 0, 1, 2]), X, Y)),
     "Task 1: y_support contains NaN"),
    (bad_at(1, Task(X[:, :0], Y, X[:, :0], Y)), "Task 1: X_support has 0 features"),
    (bad_at(1, Task(X, Y, X[:, :5], Y)), "Task 1: X_query has 5 features but "
     "X_support has 64"),
    (bad_at(2, Task(np.where(X > 1, 1e39, X), Y, X, Y)),
     "Task 2: X_support holds 1e+39, which overflows float32"),
    (bad_at(1, Task(X, Y, np.where(X > 1, -1e300, X), Y)),
     "Task 1: X_query holds 1e+300, which overflows float32"),
    (bad_at(1, Task(X, Y + 0.5, X, Y + 0.5)),
     "Task 1: y_support holds continuous values (e.g. 0.5), not class labels"),
    (bad_at(1, Task(X, Y, X, np.array([0, 1, 2, 0, 1, 2.5]))),
     "Task 1: y_query holds continuous values (e.g. 2.5), not class labels"),
    (bad_at(1, Task(X, np.array(["a", "b", np.nan, "a", "b", "a"], dtype=object),
                    X, np.array(["a", "b"] * 3, dtype=object))),
     "Task 1: y_support contains missing labels (NaN or None)"),
    (bad_at(1, Task(X, np.array([1.5, 2.0, np.nan, 1.0, 2.0, 1.0], dtype=object),
                    X, Y)), "Task 1: y_support contains missing labels"),
    (bad_at(1, Task(X, np.array(["a", None, "b", "a", "b", "a"], dtype=object),
                    X, Y)), "Task 1: y_support contains missing labels"),
    (bad_at(3, Task(sparse.csr_matrix(X), Y, X, Y)),
     "Task 3: X_support is a scipy.sparse csr matrix; skmeta's learners need "
     "dense arrays (use X.toarray())."),
    (bad_at(1, Task(X, Y, sparse.coo_array(X), Y)),
     "Task 1: X_query is a scipy.sparse coo matrix"),
    (bad_at(1, Task(X + 1j, Y, X, Y)), "Task 1: X_support is complex"),
    (bad_at(1, Task(X, Y, X.astype(np.complex64), Y)), "Task 1: X_query is complex"),
    (bad_at(1, Task(X, Y.astype(complex), X, Y)), "Task 1: y_support is complex"),
    (bad_at(1, Task(X, np.ones(6, dtype=object), X, np.ones(6, dtype=object))),
     "Task 1: y_support has a single class"),
    (X, "Expected a task collection"),
    (pd.DataFrame(X), "Expected a task collection"),
    ("tasks", "Expected a task collection"),
    (iter([good()]), "Expected a task collection"),
    ({"a": good()}, "Expected a task collection"),
    ([], "Expected a non-empty task collection"),
    (good(), "Expected a task collection: a list of skmeta.Task, of (X, y) or "
     "of (X_support, y_support, X_query, y_query) tuples, or an EpisodeSampler; "
     "got a single Task. Pass a list of tasks, e.g. [task]."),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("tasks", "message"), BAD_INPUT,
                         ids=[f"case{i}" for i in range(len(BAD_INPUT))])
def test_bad_input_gets_a_clear_error(name, tasks, message):
    if LEARNERS[name].regression and message and re.search(
            "class|label|Task 1: y_support mixes", message):
        pytest.skip("valid, or another error, for regression targets")
    learner = LEARNERS[name].make()
    if message is None:  # valid after all
        learner.fit(tasks)
        return
    for method in (learner.fit, LEARNERS[name].make().fit(
            [good()] * 4).score):
        with pytest.raises((ValueError, TypeError), match="^" + re.escape(message)):
            method(tasks)


@pytest.mark.parametrize("name", NAMES)
def test_adapt_rejects_bad_support_sets(name, fitted):
    learner = fitted[name]
    width = learner.n_features_in_
    with pytest.raises(ValueError, match="Input X contains NaN"):
        learner.adapt(np.full((4, width), np.nan), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=f"meta-trained on tasks with {width}"):
        learner.adapt(np.ones((4, width + 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="Found input variables with inconsistent"):
        learner.adapt(np.ones((4, width)), [0, 1, 0])


CLASSIFIERS = [n for n in NAMES if not LEARNERS[n].regression]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_adapt_refuses_a_one_class_support_set(name, fitted):
    """One behaviour for every learner: adapt (and the adapted classifier's
    own refit) raises, naming the class."""
    learner = fitted[name]
    X_support = np.random.default_rng(0).normal(size=(5, learner.n_features_in_))
    for labels, shown in (([7] * 5, "7"), (np.array(["x"] * 5, dtype=object), "'x'")):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"y_support has one class only ({shown}); a classifier needs at "
                "least two classes")):
            learner.adapt(X_support, labels)
    adapted = learner.adapt(X_support, [7, 8, 7, 8, 7])
    with pytest.raises(ValueError, match=r"^y_support has one class only \('a'\)"):
        adapted.fit(X_support, ["a"] * 5)


@pytest.mark.filterwarnings(  # numpy's notice as 1e39 is cast, before the error
    "ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_adapt_refuses_sparse_complex_and_float32_overflowing_X(name, fitted):
    learner = fitted[name]
    X_support = np.random.default_rng(0).normal(size=(6, learner.n_features_in_))
    y_support = [0.5, 1.0, 2.0, 0.5, 1.0, 2.0] if LEARNERS[name].regression else [
        0, 1, 2, 0, 1, 2]
    with pytest.raises(TypeError, match="[Ss]parse data was passed"):
        learner.adapt(sparse.csr_matrix(X_support), y_support)
    with pytest.raises(ValueError, match="Complex data not supported"):
        learner.adapt(X_support + 1j, y_support)
    huge = X_support.copy()
    huge[1, 0] = 1e39
    with pytest.raises(ValueError, match=r"too large for dtype\('float(32|64)'\)"
                       "|overflows? float32"):
        learner.adapt(huge, y_support)
    if LEARNERS[name].regression:
        with pytest.raises(ValueError, match="^y holds values that overflow float32"):
            learner.adapt(X_support, [1e39, *y_support[1:]])
    adapted = learner.adapt(X_support, y_support)
    for X_bad, error in [(huge, ValueError), (sparse.csr_matrix(X_support), TypeError),
                         (X_support + 1j, ValueError)]:
        with pytest.raises(error, match="float32|[Ss]parse|Complex"):
            adapted.predict(X_bad)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_adapt_refuses_continuous_and_missing_labels(name, fitted):
    learner = fitted[name]
    X_support = np.random.default_rng(0).normal(size=(4, learner.n_features_in_))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        learner.adapt(X_support, [0.5, 1.5, 0.5, 1.5])
    with pytest.raises(ValueError, match="Input contains NaN"):
        learner.adapt(X_support, np.array(["a", "b", np.nan, "a"], dtype=object))


@pytest.mark.parametrize("name", NAMES)
def test_predict_names_the_task_of_a_bad_query_set(name, fitted, new_tasks):
    """predict (no query labels) validates every task before adapting any."""
    learner = fitted[name]
    tasks = [Task(t.X_support, t.y_support, t.X_query) for t in new_tasks[:3]]
    huge = tasks[2].X_query.astype(np.float64)
    huge[0, 0] = 1e39
    tasks[2] = Task(tasks[2].X_support, tasks[2].y_support, huge)
    with pytest.raises(ValueError, match=r"^Task 2: X_query holds 1e\+39, which "
                       "overflows float32"):
        learner.predict(tasks)
    tasks[2] = Task(tasks[2].X_support, tasks[2].y_support, np.full_like(huge, np.nan))
    with pytest.raises(ValueError, match="^Task 2: X_query contains NaN"):
        learner.predict(tasks)


def random_task(draw, n_features):
    """A task that may break any rule check_tasks enforces."""
    n_support = draw(st.integers(0, 8))
    n_query = draw(st.integers(0, 6))
    width = draw(st.sampled_from([n_features, n_features, n_features, 3]))
    labels = draw(st.sampled_from([[0, 1], [1, 2, 3], ["a", "b"], [2**62, 5],
                                   [7], [0, 1, 2**40]]))
    values = st.sampled_from([0.0, 1.0, -2.5, 1e6, np.nan, np.inf])
    X_s = np.array(draw(st.lists(values, min_size=n_support * width,
                                 max_size=n_support * width))).reshape(n_support, width)
    y_s = np.array(draw(st.lists(st.sampled_from(labels), min_size=n_support,
                                 max_size=n_support)), dtype=object if
                   isinstance(labels[0], str) else None)
    X_q = np.array(draw(st.lists(values, min_size=n_query * width,
                                 max_size=n_query * width))).reshape(n_query, width)
    y_q = np.array(draw(st.lists(st.sampled_from(labels), min_size=n_query,
                                 max_size=n_query)), dtype=y_s.dtype)
    as_frame = draw(st.booleans())
    return Task(pd.DataFrame(X_s) if as_frame else X_s, y_s, X_q, y_q)


@st.composite
def task_lists(draw):
    return [random_task(draw, 4) for _ in range(draw(st.integers(1, 4)))]


# Unscaled features (values of 1e6) may make a gradient-based learner diverge:
# it must say so, in the words of its documented numerical errors.
DIVERGED = (r"The (meta-)?loss became |Task \d+: adaptation diverged |The inner "
            r"loop diverged ")


def unscaled_task(column):
    """One of the examples that make MAMLRegressor diverge (in predict for
    column 1, in fit for column 3), as hypothesis found them."""
    X_support = np.zeros((1, 4))
    X_support[0, column] = 1e6
    return [Task(X_support, np.array([0]), np.zeros((1, 4)), np.array([0]))]


@pytest.mark.parametrize("name", NAMES)
@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(tasks=task_lists())
@example(tasks=unscaled_task(1))
@example(tasks=unscaled_task(3))
def test_random_task_lists_fit_or_fail_clearly(name, tasks):
    learner = LEARNERS[name].make()
    try:
        learner.fit(tasks)
    except (ValueError, TypeError) as error:
        assert re.match(r"Task \d+: ", str(error)), error
        return
    except FloatingPointError as error:
        assert re.match(DIVERGED, str(error)), error
        return
    try:
        predictions = learner.predict(tasks)
    except FloatingPointError as error:
        assert re.match(DIVERGED, str(error)), error
        return
    for task, predicted in zip(tasks, predictions, strict=True):
        assert len(predicted) == len(task.X_query)
        if LEARNERS[name].regression:
            assert np.isfinite(predicted).all()
        else:
            assert set(predicted.tolist()) <= set(task.y_support.tolist())


# --- numerical faults and interruptions --------------------------------------

class InterruptAt(Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_batch_end(self, net, **kwargs):
        if len(net.history[-1, "batches"]) == self.batch:
            raise KeyboardInterrupt


TORCH = [n for n in NAMES if LEARNERS[n].skorch_core]


@pytest.mark.parametrize("name", NAMES)
def test_nan_loss_stops_with_clear_error(name, tasks):
    learner = LEARNERS[name].make().set_params(**LEARNERS[name].diverging)
    with pytest.raises(FloatingPointError, match=r"^The loss became (nan|inf) in "
                       r"epoch \d+, batch \d+; training stopped and the learner "
                       r"is left as it was before fit"):
        learner.fit(tasks)
    with pytest.raises(NotFittedError):
        learner.adapt(tasks[0].X_support, tasks[0].y_support)


class FailAt(Callback):
    def on_batch_end(self, net, **kwargs):
        raise RuntimeError("a user callback failed")


@pytest.mark.parametrize("name", NAMES)
def test_failed_refit_leaves_the_fitted_learner_as_it_was(name, fitted, tasks,
                                                          new_tasks):
    """Neither a diverging loss, a raising callback nor tasks of another width
    change a fitted learner whose refit fails."""
    learner = fitted[name]  # left as it was, or the test fails
    task = new_tasks[0]
    before = outputs(learner.adapt(task.X_support, task.y_support), task.X_query)
    state = set(vars(learner))
    wider = [Task(*(np.hstack([t.X_support, t.X_support]), t.y_support,
                    np.hstack([t.X_query, t.X_query]), t.y_query)) for t in tasks]
    failures = [(LEARNERS[name].diverging, tasks, FloatingPointError)]
    if LEARNERS[name].callbacks:
        failures.append(({"callbacks": [FailAt()]}, wider, RuntimeError))
    for params, data, error in failures:
        saved = learner.get_params()
        with pytest.raises(error):
            learner.set_params(**params).fit(data)
        learner.set_params(**{k: saved[k] for k in params})
        assert set(vars(learner)) == state
        np.testing.assert_array_equal(
            outputs(learner.adapt(task.X_support, task.y_support), task.X_query),
            before)


def test_unfitted_learner_says_not_fitted():
    for name in NAMES:
        learner = LEARNERS[name].make()
        with pytest.raises(NotFittedError):
            learner.adapt(X, Y)
        for method in (learner.predict, learner.score):
            with pytest.raises(NotFittedError):
                method([good()])


@pytest.mark.parametrize("name", [n for n in NAMES if LEARNERS[n].callbacks])
def test_keyboard_interrupt_keeps_a_usable_model(name, tasks, new_tasks):
    """MetaDistiller: the interrupt ends the teacher's and the student's
    training early. MetaFusionClassifier: see test_fusion.py."""
    learner = LEARNERS[name].make().set_params(callbacks=[InterruptAt(3)],
                                               max_epochs=5)
    learner.fit(tasks)
    assert len(learner.history_) == 1
    assert usable_score(name, learner.score(new_tasks[:5]))


class InterruptFirstBatch(Callback):
    def on_batch_begin(self, net, **kwargs):
        raise KeyboardInterrupt


@pytest.mark.parametrize("name", [n for n in NAMES if LEARNERS[n].callbacks])
def test_interrupt_before_the_first_step_warns_untrained(name, tasks, new_tasks):
    """skorch keeps the model of an interrupted fit; one interrupted before
    any optimiser step keeps its initial weights, and says so."""
    learner = LEARNERS[name].make().set_params(callbacks=[InterruptFirstBatch()])
    with pytest.warns(UntrainedWarning, match="interrupted before its first step"):
        learner.fit(tasks)
    task = new_tasks[0]
    assert len(learner.adapt(task.X_support, task.y_support).predict(
        task.X_query)) == len(task.X_query)


INNER_LOOP = [n for n in NAMES if "inner_lr" in LEARNERS[n].make().get_params()]


@pytest.mark.parametrize("name", INNER_LOOP)
def test_exploding_inner_loop_is_refused_naming_inner_lr(name, fitted, tasks,
                                                         new_tasks):
    """inner_lr=1e6 keeps the fast weights finite (huge) for a classifier:
    the support loss after adaptation, far above the loss before it, gives
    it away, in meta-training and in adapt and predict."""
    learner = LEARNERS[name].make().set_params(inner_lr=1e6)
    with pytest.raises(FloatingPointError, match=r"^The inner loop diverged in "
                       r"epoch 1, batch 1 \(.*inner_lr=1000000.0\); training "
                       "stopped and the learner is left as it was before fit"):
        learner.fit(tasks)
    with pytest.raises(NotFittedError):
        learner.adapt(tasks[0].X_support, tasks[0].y_support)
    exploding = copy.deepcopy(fitted[name])
    exploding.inner_lr_ = 1e6  # as if meta-trained with it
    diverged = (r"^Task {}: adaptation diverged \((the support loss rose from "
                r"[\d.e+-]+ before the steps to [\d.e+-]+ after them|non-finite "
                r"weights or support loss)\) within \d+ gradient steps with "
                r"inner_lr=1000000.0; use a smaller inner_lr")
    task = new_tasks[3]
    with pytest.raises(FloatingPointError, match=diverged.format(0)):
        exploding.adapt(task.X_support, task.y_support)
    with pytest.raises(FloatingPointError, match=diverged.format(0)):
        exploding.predict(new_tasks[:4])
    # the guard does not fire on sound adaptation
    fitted[name].predict(new_tasks)


@pytest.mark.parametrize("name", [n for n in TORCH if LEARNERS[n].resumable])
def test_resumed_run_equals_uninterrupted_run(name, tasks, tmp_path):
    whole = LEARNERS[name].make().set_params(max_epochs=4).fit(tasks)
    checkpoint = Checkpoint(dirname=str(tmp_path), monitor=None)
    LEARNERS[name].make().set_params(max_epochs=2, callbacks=[checkpoint]).fit(tasks)
    resumed = LEARNERS[name].make().set_params(
        max_epochs=2, callbacks=[LoadInitState(Checkpoint(dirname=str(tmp_path),
                                                          monitor=None))])
    resumed.fit(tasks)
    assert len(resumed.history_) == 4
    for a, b in zip(all_weights(whole), all_weights(resumed), strict=True):
        assert torch.equal(a, b)


# --- data-parallel training ----------------------------------------------------

@pytest.mark.parametrize("name", TORCH)
def test_data_parallel_training_matches_single_process(name, tasks):
    """Two gloo processes share every batch (meta-batches of tasks, or
    batches of pooled examples) and end where one process does (or, for a
    learner that draws random numbers per share, train as far)."""
    learner = LEARNERS[name].make()
    single = clone(learner).fit(tasks)
    parallel = fit_data_parallel(learner, tasks, n_processes=2)
    losses = [model.history_[:, "batches", :, "train_loss"]
              for model in (parallel, single)]
    if LEARNERS[name].same_in_parallel:
        np.testing.assert_allclose(*losses, rtol=1e-4)
    else:
        assert np.isfinite(losses[0]).all()
        assert np.mean(losses[0][-1]) < np.mean(losses[1][0])


# --- persistence -------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_joblib_round_trips_give_identical_predictions(name, fitted, new_tasks,
                                                      tmp_path):
    task = new_tasks[0]
    learner = fitted[name]
    adapted = learner.adapt(task.X_support, task.y_support)
    joblib.dump((learner, adapted), tmp_path / "models.joblib")
    learner_back, adapted_back = joblib.load(tmp_path / "models.joblib")
    np.testing.assert_array_equal(outputs(adapted_back, task.X_query),
                                  outputs(adapted, task.X_query))
    np.testing.assert_array_equal(
        learner_back.adapt(task.X_support, task.y_support).predict(task.X_query),
        adapted.predict(task.X_query))


@pytest.mark.parametrize("name", TORCH)
def test_model_saved_for_cuda_loads_on_cpu(name, fitted, new_tasks):
    """Simulated: the core claims CUDA when pickled; on a machine without a
    GPU skorch maps it to the CPU on load."""
    learner = fitted[name]
    task = new_tasks[0]
    expected = learner.adapt(task.X_support, task.y_support).predict(task.X_query)
    learner.net_.device = "cuda"
    try:
        payload = pickle.dumps(learner)
    finally:
        learner.net_.device = "cpu"
    if torch.cuda.is_available():
        pytest.skip("simulation needs a machine without CUDA")
    with pytest.warns(match=r"requested device \(cuda\) is not available"):
        loaded = pickle.loads(payload)
    assert str(loaded.net_.device) == "cpu"
    np.testing.assert_array_equal(
        loaded.adapt(task.X_support, task.y_support).predict(task.X_query), expected)


@pytest.mark.parametrize("name", NAMES)
def test_pickle_of_other_format_fails_clearly(name, fitted, new_tasks):
    task = new_tasks[0]
    for obj in (fitted[name], fitted[name].adapt(task.X_support, task.y_support)):
        state = obj.__getstate__()
        state.update(_skmeta_pickle_format=0, _skmeta_version="0.0.1")
        clone_ = object.__new__(type(obj))
        with pytest.raises(ValueError, match=re.escape(
                f"This {type(obj).__name__} was saved by skmeta 0.0.1 (pickle "
                "format 0), but skmeta")):
            clone_.__setstate__(state)


@pytest.mark.parametrize("name", NAMES)
def test_pickle_of_another_class_fails_clearly(name, fitted, new_tasks):
    """A pickle whose class reference was edited (here: the state of one class
    loaded into another) is refused, naming both classes."""
    task = new_tasks[0]
    other = LEARNERS[NAMES[(NAMES.index(name) + 1) % len(NAMES)]].make()
    adapted = fitted[name].adapt(task.X_support, task.y_support)
    other_adapted = (BayesianLinearRegressor if isinstance(adapted, PrototypeClassifier)
                     else PrototypeClassifier)
    for obj, impostor in ((fitted[name], type(other)), (adapted, other_adapted)):
        state = obj.__getstate__()
        with pytest.raises(ValueError, match=re.escape(
                f"This pickle holds a {type(obj).__module__}."
                f"{type(obj).__qualname__}, but it is being loaded as a "
                f"{impostor.__module__}.{impostor.__qualname__}; the file was "
                "altered or mislabelled.")):
            object.__new__(impostor).__setstate__(state)
    state = adapted.__getstate__()  # the class's own pickle still loads
    object.__new__(type(adapted)).__setstate__(state)


# --- memory -------------------------------------------------------------------

HUGE_TASK = """
import resource, sys
import joblib, numpy as np
learner = joblib.load(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.normal(size=(10**6, 4)).astype(np.float32)
y = np.arange(10**6) % 3
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
proba = learner.adapt(X, y).predict_proba(X)
assert proba.shape == (10**6, 3)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""

# Networks whose wide hidden layer (512 floats per row: 2 GB for 10**6 rows)
# must never be held for a whole task; their 8-wide embedding may be (MAML's
# inner steps and predictions go through the rows chunk by chunk).
WIDE = {
    "MAMLClassifier": lambda: MAMLClassifier(
        module__hidden_sizes=(512, 8), max_epochs=1, random_state=0),
    "ProtoNetClassifier": lambda: ProtoNetClassifier(
        module__hidden_sizes=(512, 8), max_epochs=1, random_state=0),
    "MetaDistiller": lambda: MetaDistiller(
        teacher__hidden_sizes=(16,), student__hidden_sizes=(512, 8), max_epochs=1,
        random_state=0),
    "PooledEmbeddingClassifier": lambda: PooledEmbeddingClassifier(
        module__hidden_sizes=(512, 8), max_epochs=1, random_state=0),
}


@pytest.mark.parametrize("name", sorted(WIDE))
def test_one_task_of_a_million_rows_fits_in_memory(name, tmp_path):
    """adapt and predict_proba on 10**6 rows embed them in chunks: their
    peak memory is that of the data, the embeddings and the outputs (about
    100 MB here), not of the network's activations for all rows."""
    rng = np.random.default_rng(0)
    tasks = [Task(rng.normal(size=(9, 4)), np.arange(9) % 3, rng.normal(size=(9, 4)),
                  np.arange(9) % 3) for _ in range(8)]
    joblib.dump(WIDE[name]().fit(tasks), tmp_path / "learner.joblib")
    run = subprocess.run([sys.executable, "-c", HUGE_TASK,
                          str(tmp_path / "learner.joblib")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) < 500, f"{run.stdout.strip()} MB above the data's"
