"""skmeta.io: persistence without pickle. Every learner and adapted estimator
round-trips with identical outputs; the format version and the class are
checked; untrusted classes are refused before anything is built."""

import io
import json
import os
import pickle
import re
import subprocess

import joblib
import numpy as np
import pytest
import safetensors.torch
import test_common
import torch
import toy_models
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import EarlyStopping
from test_common import ADAPTED, LEARNERS
from toy_models import ScaleShift

import skmeta.io
from skmeta import (
    MAMLClassifier,
    MAMLRegressor,
    MetaDistiller,
    MetaFusionClassifier,
    ProtoNetClassifier,
)
from skmeta.datasets import make_sinusoid_tasks
from skmeta.fusion import TorchMLPClassifier
from skmeta.maml._core import ALGORITHMS
from skmeta.nn import MLP
from skmeta.protonet import PrototypeClassifier

# the test suite's own modules and estimators, trusted by name
TOY = [f"{module.__name__}.{name}" for module in (toy_models, test_common)
       for name, obj in vars(module).items()
       if isinstance(obj, type) and obj.__module__ == module.__name__]

CONFIGS = {name: (learner.make, learner.regression)
           for name, learner in LEARNERS.items()}
CONFIGS.update({
    f"MAML-{algorithm}-{kind.__name__}": (
        lambda seed=0, a=algorithm, k=kind: k(
            module__hidden_sizes=(16,), algorithm=a, max_epochs=1,
            meta_batch_size=10, inner_lr=0.05, random_state=seed),
        kind is MAMLRegressor)
    for algorithm in ALGORITHMS for kind in (MAMLClassifier, MAMLRegressor)})
CONFIGS.update({
    "Fusion-LogisticRegression": (
        lambda seed=0: MetaFusionClassifier(LogisticRegression(max_iter=200),
                                            "stacking", max_local_models=3,
                                            random_state=seed),
        False),
    "Fusion-default-weighted": (
        lambda seed=0: MetaFusionClassifier(
            TorchMLPClassifier(hidden_sizes=(8,), max_epochs=2),
            max_local_models=2, random_state=seed), False),
    "Distiller-episodic-teacher": (
        lambda seed=0: MetaDistiller(
            ProtoNetClassifier(module__hidden_sizes=(16,), max_epochs=1),
            student__hidden_sizes=(8,), max_epochs=1, random_state=seed),
        False),
})


@pytest.fixture(scope="module")
def task_sets(train_tasks, test_tasks):
    return {False: (list(train_tasks[:20]), list(test_tasks[:3])),
            True: (make_sinusoid_tasks(30, random_state=0),
                   make_sinusoid_tasks(3, random_state=1))}


def round_trip(obj, **kwargs):
    buffer = io.BytesIO()
    skmeta.io.save(obj, buffer)
    buffer.seek(0)
    return skmeta.io.load(buffer, **kwargs)


def outputs(estimator, X):
    """Everything an adapted estimator says about X."""
    if hasattr(estimator, "predict_proba"):
        return [estimator.predict(X), estimator.predict_proba(X)]
    try:
        return list(estimator.predict(X, return_std=True))
    except TypeError:
        return [estimator.predict(X)]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fitted_learner_and_adapted_estimator_round_trip(name, task_sets):
    make, regression = CONFIGS[name]
    tasks, new_tasks = task_sets[regression]
    if "weighted" in name:  # fuses models for tasks of known classes only
        new_tasks = tasks[:3]
    learner = make().fit(tasks)
    loaded = round_trip(learner)
    assert type(loaded) is type(learner)
    assert loaded.get_params().keys() == learner.get_params().keys()
    assert_same(loaded.predict(new_tasks), learner.predict(new_tasks))
    assert loaded.score(new_tasks) == learner.score(new_tasks)
    task = new_tasks[0]
    adapted = learner.adapt(task.X_support, task.y_support)
    assert_same(outputs(loaded.adapt(task.X_support, task.y_support), task.X_query),
                outputs(adapted, task.X_query))
    adapted_back = round_trip(adapted)
    assert type(adapted_back) is type(adapted)
    assert_same(outputs(adapted_back, task.X_query), outputs(adapted, task.X_query))


def test_metasgd_learned_rates_and_history_come_back(task_sets):
    tasks = task_sets[True][0]
    learner = MAMLRegressor(module__hidden_sizes=(8,), algorithm="metasgd",
                            max_epochs=2, random_state=0).fit(tasks)
    loaded = round_trip(learner)
    assert loaded.inner_lr_.keys() == learner.inner_lr_.keys()
    for name, rate in learner.inner_lr_.items():
        assert torch.equal(loaded.inner_lr_[name], rate)
    assert loaded.adapted_ == learner.adapted_
    assert (loaded.history_[:, "train_loss"]
            == learner.history_[:, "train_loss"])
    # a loaded learner pickles again, and is the same model
    again = joblib.load(_joblib_round_trip(loaded))
    assert_same(again.predict(tasks[:2]), learner.predict(tasks[:2]))


def _joblib_round_trip(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    return buffer


def _fit_adapted(estimator):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4))
    if hasattr(estimator, "predict_proba"):
        return clone(estimator).fit(X, np.arange(30) % 3), X
    return clone(estimator).fit(X, X @ [1.0, -1.0, 0.5, 2.0]), X


@pytest.mark.parametrize("estimator", ADAPTED, ids=repr)
def test_adapted_estimators_round_trip(estimator):
    fitted, X = _fit_adapted(estimator)
    loaded = round_trip(fitted, trusted=TOY)
    assert_same(outputs(loaded, X), outputs(fitted, X))
    assert loaded.get_params(deep=False).keys() == fitted.get_params(
        deep=False).keys()


def test_loaded_adapted_estimator_refits():
    fitted, X = _fit_adapted(TorchMLPClassifier(hidden_sizes=(8,), max_epochs=3,
                                                random_state=0))
    loaded = round_trip(fitted)
    y = np.arange(30) % 2
    assert_same(outputs(loaded.fit(X, y), X), outputs(fitted.fit(X, y), X))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_unfitted_learner_round_trips_its_params(name):
    learner = LEARNERS[name].make()
    loaded = round_trip(learner)
    with pytest.raises(NotFittedError):
        check_is_fitted(loaded)
    assert repr(loaded) == repr(learner)
    assert loaded.get_params().keys() == learner.get_params().keys()


def test_params_that_are_classes_modules_devices_and_callbacks():
    learner = ProtoNetClassifier(
        MLP(in_features=64, hidden_sizes=(8,)), device=torch.device("cpu"),
        callbacks=[EarlyStopping(patience=3)], random_state=np.random.RandomState(3),
        max_epochs=1)
    loaded = round_trip(learner)
    assert isinstance(loaded.module, MLP) and loaded.module is not learner.module
    for mine, theirs in zip(loaded.module.parameters(), learner.module.parameters(),
                            strict=True):
        assert torch.equal(mine, theirs)
    assert loaded.device == torch.device("cpu")
    assert loaded.callbacks[0].patience == 3 and loaded.callbacks[0].sink is print
    assert loaded.random_state.randint(1000) == learner.random_state.randint(1000)
    assert round_trip(ProtoNetClassifier(MLP)).module is MLP


def test_shared_objects_stay_shared(task_sets):
    tasks = task_sets[False][0]
    distiller = LEARNERS["MetaDistiller"].make().fit(tasks)
    assert distiller.classes_ is distiller.teacher_.classes_
    loaded = round_trip(distiller)
    assert loaded.classes_ is loaded.teacher_.classes_


# --- what cannot be saved ----------------------------------------------------

def test_unrepresentable_part_is_named_at_save():
    learner = ProtoNetClassifier(callbacks=[lambda net: None])
    with pytest.raises(TypeError, match=re.escape(
            "skmeta.io cannot save estimator.callbacks[0] (a builtins.function)")):
        skmeta.io.save(learner, io.BytesIO())
    with pytest.raises(TypeError, match="takes an estimator"):
        skmeta.io.save([1, 2], io.BytesIO())


# --- format version, class and trust -----------------------------------------

def saved(obj):
    buffer = io.BytesIO()
    skmeta.io.save(obj, buffer)
    return buffer.getvalue()


def metadata(data):
    size = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + size])["__metadata__"]["skmeta"])


def rewritten(data, change):
    """The file with its skmeta metadata changed by ``change(meta)``."""
    meta = metadata(data)
    change(meta)
    return io.BytesIO(safetensors.torch.save(safetensors.torch.load(data),
                                             metadata={"skmeta": json.dumps(meta)}))


@pytest.fixture(scope="module")
def clf_file():
    return saved(PrototypeClassifier().fit([[0.0], [1.0]], ["a", "b"]))


def test_file_records_format_versions_and_class(clf_file):
    meta = metadata(clf_file)
    assert meta["format"] == "skmeta.io"
    assert meta["format_version"] == skmeta.io.FORMAT_VERSION
    assert meta["class"] == "skmeta.protonet.PrototypeClassifier"
    assert meta["versions"]["skmeta"] == skmeta.__version__


def test_other_format_version_fails_clearly(clf_file):
    def newer(meta):
        meta["format_version"] = 99
        meta["versions"]["skmeta"] = "9.0"
    with pytest.raises(ValueError, match=re.escape(
            "saved by skmeta 9.0 in skmeta.io format 99, but skmeta")):
        skmeta.io.load(rewritten(clf_file, newer))


def test_relabelled_class_fails_clearly(clf_file):
    with pytest.raises(ValueError, match="says it holds a skmeta.fusion.Torch"):
        skmeta.io.load(rewritten(clf_file, lambda meta: meta.update(
            {"class": "skmeta.fusion.TorchMLPClassifier"})))


def test_other_files_are_refused_without_unpickling(tmp_path, clf_file):
    joblib.dump(PrototypeClassifier(), tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="not a safetensors file"):
        skmeta.io.load(tmp_path / "model.joblib")
    (tmp_path / "plain.safetensors").write_bytes(
        safetensors.torch.save({"x": torch.zeros(2)}))
    with pytest.raises(ValueError, match="not written by skmeta.io.save"):
        skmeta.io.load(tmp_path / "plain.safetensors")
    (tmp_path / "model.safetensors").write_bytes(clf_file)
    assert skmeta.io.load(tmp_path / "model.safetensors").classes_.tolist() == [
        "a", "b"]


def test_untrusted_class_needs_trusted():
    fitted = PrototypeClassifier(ScaleShift()).fit([[0.0], [1.0]], [0, 1])
    data = saved(fitted)
    assert skmeta.io.get_untrusted_types(io.BytesIO(data)) == [
        "toy_models.ScaleShift"]
    with pytest.raises(skmeta.io.UntrustedTypeError, match=re.escape(
            "trusted=['toy_models.ScaleShift']")):
        skmeta.io.load(io.BytesIO(data))
    for trusted in (["toy_models.ScaleShift"], [ScaleShift], ScaleShift):
        loaded = skmeta.io.load(io.BytesIO(data), trusted=trusted)
        np.testing.assert_array_equal(loaded.predict_proba([[0.3]]),
                                      fitted.predict_proba([[0.3]]))


# --- attacks -------------------------------------------------------------------

@pytest.fixture
def no_code_runs(monkeypatch):
    """Fails the test if a crafted file gets to run a process or unpickle."""
    def called(*args, **kwargs):
        raise AssertionError("code from the file ran")
    for owner, name in [(os, "system"), (subprocess, "Popen"),
                        (pickle, "loads"), (pickle, "load"), (torch, "load")]:
        monkeypatch.setattr(owner, name, called)


def crafted(tree, tensors=None):
    meta = {"format": "skmeta.io", "format_version": skmeta.io.FORMAT_VERSION,
            "class": f"{tree.get('module')}.{tree.get('name')}", "tree": tree}
    return io.BytesIO(safetensors.torch.save(tensors or {},
                                             metadata={"skmeta": json.dumps(meta)}))


def estimator_with(value):
    """A PrototypeClassifier node whose ``embedding`` is ``value``."""
    return {"kind": "object", "module": "skmeta.protonet",
            "name": "PrototypeClassifier", "attributes": {"embedding": value}}


ATTACKS = {
    "os.system as the estimator": {"kind": "object", "module": "os",
                                   "name": "system", "attributes": {}},
    "subprocess.Popen as a module": estimator_with(
        {"kind": "module", "module": "subprocess", "name": "Popen",
         "parameters": {}, "buffers": {}, "modules": {}, "attributes": {}}),
    "builtins.eval as a function": estimator_with(
        {"kind": "function", "module": "builtins", "name": "eval"}),
    "os.system as a class value": estimator_with(
        {"kind": "class", "module": "os", "name": "system"}),
    "builtins.eval hidden in a dict": estimator_with(
        {"kind": "dict", "items": [["x", {"kind": "class", "module": "builtins",
                                          "name": "eval"}]]}),
    "numpy.load through a trusted module": estimator_with(
        {"kind": "class", "module": "skmeta.base", "name": "np.load"}),
    "os.system through a trusted module": estimator_with(
        {"kind": "object", "module": "skmeta.tasks._store", "name": "os.system",
         "attributes": {}}),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_crafted_file_cannot_run_code(attack, no_code_runs):
    with pytest.raises(skmeta.io.UntrustedTypeError, match="refused|not trust"):
        skmeta.io.load(crafted(ATTACKS[attack]))


def test_untrusted_names_are_refused_before_anything_is_imported(no_code_runs):
    tree = estimator_with({"kind": "class", "module": "an_evil_module",
                           "name": "Payload"})
    with pytest.raises(skmeta.io.UntrustedTypeError, match="an_evil_module.Payload"):
        skmeta.io.load(crafted(tree))
    assert "an_evil_module" not in __import__("sys").modules


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


PAYLOAD = pickle.dumps(_Payload())  # unpickling it would run a shell command


def test_pickle_payload_in_a_tensor_is_only_bytes(no_code_runs):
    tensor = torch.frombuffer(bytearray(PAYLOAD), dtype=torch.uint8)
    loaded = skmeta.io.load(crafted(
        estimator_with({"kind": "ndarray", "dtype": "|u1", "tensor": "0"}),
        {"0": tensor}))
    assert loaded.embedding.tobytes() == PAYLOAD


def test_normal_load_never_unpickles(no_code_runs, clf_file):
    assert skmeta.io.load(io.BytesIO(clf_file)).predict([[0.9]]).tolist() == ["b"]


def test_malformed_trees_fail_clearly():
    with pytest.raises(ValueError, match="malformed"):
        skmeta.io.load(crafted(estimator_with({"kind": "nonsense"})))
    with pytest.raises(ValueError, match="tensor '7' is not in the file"):
        skmeta.io.load(crafted(estimator_with(
            {"kind": "tensor", "tensor": "7"})))
    with pytest.raises(ValueError, match="unknown object"):
        skmeta.io.load(crafted(estimator_with({"kind": "ref", "id": 3})))


def test_a_failed_save_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    skmeta.io.save(PrototypeClassifier().fit([[0.0], [1.0]], ["a", "b"]), path)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        skmeta.io.save(PrototypeClassifier().fit([[0.0], [2.0]], ["c", "d"]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
