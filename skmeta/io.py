"""Safe persistence without pickle: :func:`save`, :func:`load` and
:func:`get_untrusted_types`.

A file written by :func:`save` is one `safetensors
<https://huggingface.co/docs/safetensors>`_ file: every numeric NumPy array
and torch tensor of the estimator is a tensor of the file, and its header's
metadata holds, under the key ``"skmeta"``, a JSON document with the file
format (``"format": "skmeta.io"``, ``"format_version"``), the versions of
skmeta, scikit-learn, torch and NumPy that saved it, the estimator's class
and the estimator's state as a tree. Neither part is read with pickle, so
loading a file cannot run code that the file brings:

- objects are rebuilt without calling their constructors: for an allowed
  class, ``cls.__new__(cls)`` and then its attributes (torch modules:
  ``torch.nn.Module.__init__`` and then their parameters, buffers,
  submodules and plain attributes);
- the classes a file names are checked, by name, before anything is imported
  or built: those of skmeta, ``torch.nn``, scikit-learn, skorch's
  callbacks, NumPy's scalar types and a few builtins are trusted; any other
  must be named in ``load(..., trusted=[...])``;
- the only function a file may name is ``print`` (skorch callbacks' sink);
- values are None, bools, numbers, strings, lists, tuples, dicts, sets,
  NumPy arrays (numeric ones as tensors, string and object ones in the
  JSON), NumPy scalars, torch tensors and parameters, classes, torch
  devices and dtypes, NumPy dtypes and ``RandomState`` objects.

A skorch net (the ``net_`` of a torch learner, a :class:`TorchMLPClassifier
<skmeta.fusion.TorchMLPClassifier>`'s network) is saved without its
optimizer and callbacks: its trained ``module_`` and its ``history``. A
loaded learner adapts, predicts and scores as the saved one did (identical
outputs) and has its ``history_``; ``partial_fit`` and continued training
need the optimizer's state, which only a joblib file keeps.
"""

import importlib
import json
import os
import re
import tempfile
import warnings
from collections import OrderedDict
from os import PathLike
from pathlib import Path

import numpy as np
import safetensors.torch
import sklearn
import torch
from skorch import NeuralNet
from skorch.history import History

from ._version import __version__

__all__ = ["FORMAT_VERSION", "UntrustedTypeError", "get_untrusted_types", "load",
           "save"]

FORMAT_VERSION = 1
_FORMAT = "skmeta.io"
_METADATA_KEY = "skmeta"

# Classes trusted by default, by the module they are defined in.
_TRUSTED_MODULES = ("skmeta", "torch.nn", "sklearn", "skorch.callbacks")
_TRUSTED_NAMES = {f"builtins.{name}" for name in (
    "bool", "int", "float", "complex", "str", "bytes", "list", "tuple", "dict",
    "set", "frozenset", "object")}
_FUNCTIONS = {"builtins.print": print}
_UNSAFE_PARTS = {"tests", "conftest", "__main__"}
_JSON_SCALARS = (bool, int, float, str)
_TEXT_KINDS = "UO"  # NumPy array kinds kept in the JSON (strings, objects)

_fresh = torch.nn.Module()
# Attributes that torch.nn.Module.__init__ sets; the rest of a module's
# __dict__ is its own (sizes, options).
_MODULE_INIT_KEYS = frozenset(vars(_fresh))
_MODULE_HOOKS = frozenset(k for k, v in vars(_fresh).items() if isinstance(v, dict)
                          and k not in ("_parameters", "_buffers", "_modules"))


class UntrustedTypeError(ValueError):
    """A file names classes (or functions) that :func:`load` does not trust."""


# --- saving --------------------------------------------------------------------

def save(estimator, path):
    """Save an estimator to a file that can be loaded without pickle.

    Parameters
    ----------
    estimator : object
        A skmeta meta-learner or adapted estimator, fitted or not (or any
        scikit-learn estimator made of the values listed in
        :mod:`skmeta.io`).
    path : str, path-like or binary file object
        Where to write; ``.safetensors`` is a fitting extension.

    Raises
    ------
    TypeError
        If a part of the estimator cannot be represented (a function, an
        object without ``__dict__``...); the message names its attribute
        path. Save such estimators with joblib.

    See Also
    --------
    load : Load the estimator back.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import skmeta.io
    >>> from skmeta.protonet import PrototypeClassifier
    >>> clf = PrototypeClassifier().fit([[0.0, 0.0], [4.0, 4.0]], ["a", "b"])
    >>> path = Path(tempfile.mkdtemp()) / "clf.safetensors"
    >>> skmeta.io.save(clf, path)
    >>> skmeta.io.load(path).predict([[1.0, 0.5], [3.0, 5.0]]).tolist()
    ['a', 'b']
    """
    encoder = _Encoder()
    tree = encoder.encode(estimator, "estimator")
    if not isinstance(tree, dict) or "module" not in tree:
        raise TypeError(f"skmeta.io.save takes an estimator, not a "
                        f"{type(estimator).__name__}.")
    meta = {"format": _FORMAT, "format_version": FORMAT_VERSION,
            "class": _class_name(type(estimator)),
            "versions": {"skmeta": __version__, "scikit-learn": sklearn.__version__,
                         "torch": torch.__version__, "numpy": np.__version__},
            "tree": tree}
    data = safetensors.torch.save(encoder.tensors,
                                  metadata={_METADATA_KEY: json.dumps(meta)})
    if hasattr(path, "write"):
        path.write(data)
    else:
        _write_atomically(Path(path), data)


def _write_atomically(path, data):
    """Write ``data`` to a temporary file beside ``path`` and rename it over
    ``path``: an interrupted or failed save leaves any earlier file whole."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class _Encoder:
    """Turns an object graph into a JSON tree, collecting tensors."""

    def __init__(self):
        self.tensors = {}
        self.memo = {}  # id -> (object, its node id); objects kept alive
        self.active = set()  # ids of the objects being encoded (cycles)

    def encode(self, value, path):
        if value is None or type(value) in _JSON_SCALARS:
            return value
        for kinds, method in self._DISPATCH:
            if isinstance(value, kinds):
                return method(self, value, path)
        return self._shared(value, path, self._object)

    def _shared(self, value, path, build):
        """A node for ``value``, or a reference to its first node."""
        if id(value) in self.memo:
            return {"kind": "ref", "id": self.memo[id(value)][1]}
        if id(value) in self.active:
            _cannot(path, value, "it contains itself (a reference cycle)")
        self.active.add(id(value))
        try:
            node = build(value, path)
        finally:
            self.active.discard(id(value))
        node["id"] = len(self.memo)
        self.memo[id(value)] = (value, node["id"])
        return node

    def _sequence(self, value, path):
        if type(value) not in (list, tuple, set, frozenset):
            _cannot(path, value, "subclasses of built-in containers are not "
                    "supported")
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return {"kind": type(value).__name__,
                "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(items)]}

    def _dict(self, value, path):
        if type(value) not in (dict, OrderedDict):
            _cannot(path, value, "subclasses of dict are not supported")
        return {"kind": "dict", "ordered": type(value) is OrderedDict,
                "items": [[self.encode(k, f"{path} key {k!r}"),
                           self.encode(v, f"{path}[{k!r}]")]
                          for k, v in value.items()]}

    def _array(self, value, path):
        return self._shared(value, path, self._array_node)

    def _array_node(self, array, path):
        if type(array) is not np.ndarray:
            _cannot(path, array, "only plain numpy.ndarray arrays are supported")
        if array.dtype.kind in _TEXT_KINDS:
            items = [self.encode(v, f"{path}[{i}]")
                     for i, v in enumerate(array.ravel().tolist()
                                           if array.dtype.kind == "U"
                                           else array.ravel())]
            return {"kind": "ndarray", "dtype": array.dtype.str,
                    "shape": list(array.shape), "items": items}
        native = array.astype(array.dtype.newbyteorder("="), copy=False)
        fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(native))
        except TypeError as error:
            _cannot(path, array, f"torch cannot hold dtype {array.dtype}: {error}")
        return {"kind": "ndarray", "dtype": native.dtype.str, "fortran": fortran,
                "tensor": self._add_tensor(tensor)}

    def _tensor(self, value, path):
        return self._shared(value, path, self._tensor_node)

    def _tensor_node(self, tensor, path):
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            _cannot(path, tensor, "tensor subclasses are not supported")
        return {"kind": "tensor", "parameter": isinstance(tensor, torch.nn.Parameter),
                "requires_grad": tensor.requires_grad,
                "tensor": self._add_tensor(tensor)}

    def _add_tensor(self, tensor):
        key = str(len(self.tensors))
        self.tensors[key] = tensor.detach().cpu().clone().contiguous()
        return key

    def _scalar(self, value, path):
        if value.dtype.kind not in "biufU":
            _cannot(path, value, "only boolean, numeric and string NumPy scalars "
                    "are supported")
        return {"kind": "npscalar", "dtype": value.dtype.str, "value": value.item()}

    def _class(self, value, path):
        return {"kind": "class", **_class_ref(value, path)}

    def _function(self, value, path):
        name = f"{getattr(value, '__module__', None)}.{value.__qualname__}"
        if _FUNCTIONS.get(name) is not value:
            _cannot(path, value, "functions cannot be saved (only print, a "
                    "callbacks' sink)")
        module, _, qualname = name.rpartition(".")
        return {"kind": "function", "module": module, "name": qualname}

    def _random_state(self, value, path):
        name, keys, pos, has_gauss, cached = value.get_state(legacy=True)
        return {"kind": "random_state", "state": [
            name, self.encode(keys, f"{path}.state"), int(pos), int(has_gauss),
            float(cached)]}

    def _module(self, module, path):
        return self._shared(module, path, self._module_node)

    def _module_node(self, module, path):
        state = vars(module)
        hooks = sorted(k for k in _MODULE_HOOKS if state.get(k))
        if hooks:
            _cannot(path, module, f"it has hooks ({', '.join(hooks)})")
        return {"kind": "module", **_class_ref(type(module), path),
                "parameters": self._named(module._parameters, path),
                "buffers": self._named(module._buffers, path),
                "non_persistent": sorted(module._non_persistent_buffers_set),
                "modules": self._named(module._modules, path),
                "training": bool(module.training),
                "attributes": self._attributes(state, path, _MODULE_INIT_KEYS)}

    def _named(self, values, path):
        return {name: self.encode(value, f"{path}.{name}")
                for name, value in values.items()}

    def _attributes(self, state, path, skip=()):
        for name in state:
            if not isinstance(name, str) or _is_dunder(name):
                _cannot(path, state, f"attribute name {name!r} is not supported")
        return {name: self.encode(value, f"{path}.{name}")
                for name, value in state.items() if name not in skip}

    def _net(self, net, path):
        return self._shared(net, path, self._net_node)

    def _net_node(self, net, path):
        """A skorch net: its class, trained module and history (see the
        module docstring)."""
        module = getattr(net, "module_", None)
        return {"kind": "net", **_class_ref(type(net), path),
                "module_": None if module is None else self.encode(
                    module, f"{path}.module_"),
                "history": self._history(net, path)}

    def _history(self, net, path):
        history = vars(net).get("history_")
        if history is None:
            return None
        saved = dict(self.memo), dict(self.tensors)
        try:
            return self.encode(list(history), f"{path}.history")
        except TypeError as error:
            self.memo, self.tensors = saved
            warnings.warn(f"The training history of {path} is not saved: "
                          f"{error}", UserWarning, stacklevel=5)
            return None

    def _object(self, value, path):
        cls = type(value)
        if not (hasattr(value, "__dict__") and cls.__module__ != "builtins"
                and _plain_state(cls)):
            _cannot(path, value, "only estimators and objects whose state is "
                    "their __dict__ are supported")
        return {"kind": "object", **_class_ref(cls, path),
                "attributes": self._attributes(vars(value), path)}

    _DISPATCH = [
        ((list, tuple, set, frozenset), _sequence),
        (dict, _dict),
        (np.ndarray, _array),
        (np.generic, _scalar),
        (torch.Tensor, _tensor),
        (type, _class),
        (torch.device, lambda self, v, p: {"kind": "device", "value": str(v)}),
        (torch.dtype, lambda self, v, p: {"kind": "torch_dtype",
                                          "value": str(v).removeprefix("torch.")}),
        (np.dtype, lambda self, v, p: {"kind": "np_dtype", "value": v.str}),
        (np.random.RandomState, _random_state),
        (NeuralNet, _net),
        (torch.nn.Module, _module),
        (type(print), _function),
        (type(lambda: None), _function),
    ]


def _cannot(path, value, reason):
    raise TypeError(f"skmeta.io cannot save {path} (a {_class_name(type(value))}): "
                    f"{reason}. Save this estimator with joblib instead.")


def _plain_state(cls):
    """Whether pickle would save instances of ``cls`` as their __dict__ (no
    custom reduction, no slots)."""
    return (cls.__reduce_ex__ is object.__reduce_ex__
            and cls.__reduce__ is object.__reduce__
            and not any("__slots__" in vars(k) for k in cls.__mro__[:-1]))


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__")


def _class_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_ref(cls, path):
    """The module and qualified name of a class that can be imported by them."""
    if "<locals>" in cls.__qualname__ or _resolve(cls.__module__,
                                                  cls.__qualname__) is not cls:
        _cannot(path, cls, f"the class {_class_name(cls)} cannot be imported by "
                "its name")
    return {"module": cls.__module__, "name": cls.__qualname__}


def _resolve(module, qualname):
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


# --- loading -------------------------------------------------------------------

def load(path, trusted=None):
    """Load an estimator saved by :func:`save`, without pickle.

    The file's format version and the classes it names are checked before
    anything is built: classes of skmeta, ``torch.nn``, scikit-learn and
    skorch's callbacks are trusted; others (e.g. your own torch module) must
    be listed in ``trusted``. No constructor is called and nothing is
    unpickled, so a file from an untrusted source cannot run code.

    Parameters
    ----------
    path : str, path-like or binary file object
        A file written by :func:`save`.
    trusted : list of str or class, default=None
        Further classes to trust, as ``"module.QualName"`` names (as
        :func:`get_untrusted_types` and the error message list them) or as
        the classes themselves. Only trust classes from sources you trust.

    Returns
    -------
    estimator : object
        The saved estimator, with its tensors on the CPU.

    Raises
    ------
    ValueError
        If the file is not a skmeta.io file, has another format version, or
        is malformed.
    UntrustedTypeError
        If the file names classes that are not trusted; nothing is imported
        or built then.

    See Also
    --------
    save : Save an estimator.
    get_untrusted_types : The classes of a file that need ``trusted``.

    Examples
    --------
    >>> import io
    >>> import skmeta.io
    >>> from skmeta.bayes import BayesianLinearRegressor
    >>> reg = BayesianLinearRegressor(noise_var=1e-4).fit([[1.0], [2.0]], [3.0, 5.0])
    >>> buffer = io.BytesIO()
    >>> skmeta.io.save(reg, buffer)
    >>> _ = buffer.seek(0)
    >>> skmeta.io.load(buffer).predict([[3.0]]).round(2).tolist()
    [7.0]
    """
    data = _read(path)
    meta = _metadata(data)
    trusted = _trusted_names(trusted)
    untrusted = _untrusted(meta["tree"], trusted)
    if untrusted:
        raise UntrustedTypeError(
            f"The file names {len(untrusted)} type(s) that skmeta.io does not "
            f"trust: {untrusted}. Nothing was loaded. If you trust the file's "
            f"source, pass them to load(..., trusted={untrusted!r}).")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors' own error types vary
        raise ValueError(f"The file's tensors cannot be read: {error}") from error
    return _Decoder(tensors, trusted).decode(meta["tree"], "estimator")


def get_untrusted_types(path):
    """The classes a file names that :func:`load` does not trust by default.

    Parameters
    ----------
    path : str, path-like or binary file object
        A file written by :func:`save`.

    Returns
    -------
    names : list of str
        ``"module.QualName"`` names to check, and to pass as ``trusted`` to
        :func:`load` if you trust them; empty if the file needs none.

    Examples
    --------
    >>> import io
    >>> import skmeta.io
    >>> from skmeta.protonet import PrototypeClassifier
    >>> buffer = io.BytesIO()
    >>> skmeta.io.save(PrototypeClassifier(), buffer)
    >>> _ = buffer.seek(0)
    >>> skmeta.io.get_untrusted_types(buffer)
    []
    """
    return _untrusted(_metadata(_read(path))["tree"], set())


def _read(path):
    if hasattr(path, "read"):
        return path.read()
    if not isinstance(path, str | PathLike):
        raise TypeError(f"path must be a str, path-like or file object, got "
                        f"{type(path).__name__}.")
    with open(path, "rb") as file:
        return file.read()


def _metadata(data):
    """The skmeta document of a safetensors file, its format checked."""
    header = _safetensors_header(data)
    document = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if not isinstance(document, str):
        raise ValueError("This safetensors file was not written by "
                         "skmeta.io.save (its header has no 'skmeta' metadata).")
    meta = _json(document, "its 'skmeta' metadata")
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError("The file's 'skmeta' metadata is not in the skmeta.io "
                         "format.")
    _check_version(meta)
    _check_class(meta)
    return meta


def _safetensors_header(data):
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < size <= len(data) - 8:
        raise ValueError("This is not a file written by skmeta.io.save (not a "
                         "safetensors file); files written by joblib or pickle "
                         "load with joblib.load, from trusted sources only.")
    header = _json(data[8:8 + size], "its header")
    if not isinstance(header, dict):
        raise ValueError("The file's safetensors header is malformed.")
    return header


def _json(text, what):
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"This is not a skmeta.io file: {what} is not valid "
                         f"JSON ({error}).") from error


def _check_version(meta):
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        saved_by = (meta.get("versions") or {}).get("skmeta", "an unknown version")
        raise ValueError(
            f"This file was saved by skmeta {saved_by} in skmeta.io format "
            f"{found!r}, but skmeta {__version__} reads format {FORMAT_VERSION}. "
            "Load it with the skmeta that saved it, or refit the model.")


def _check_class(meta):
    tree = meta.get("tree")
    if not isinstance(tree, dict) or not isinstance(meta.get("class"), str):
        raise ValueError("The file's 'skmeta' metadata has no estimator.")
    found = f"{tree.get('module')}.{tree.get('name')}"
    if found != meta["class"]:
        raise ValueError(f"The file says it holds a {meta['class']}, but its "
                         f"state is that of a {found}; the file was altered.")


def _trusted_names(trusted):
    if trusted is None:
        return set()
    if isinstance(trusted, str | type):
        trusted = [trusted]
    return {t if isinstance(t, str) else _class_name(t) for t in trusted}


def _untrusted(tree, trusted):
    """Names of the classes and functions in ``tree`` that are not trusted."""
    return sorted({f"{node.get('module')}.{node.get('name')}"
                   for node in _walk(tree) if node.get("kind") in _CLASS_KINDS
                   and not _is_trusted(node, trusted)})


_CLASS_KINDS = {"class", "function", "module", "net", "object"}
_NODE_LISTS = ("items", "state")  # fields holding nodes (or pairs of nodes)
_NODE_MAPS = ("attributes", "parameters", "buffers", "modules")
_NODE_FIELDS = ("module_", "history")


def _walk(tree):
    """Every node of a tree that :class:`_Decoder` may decode."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        for field in _NODE_LISTS:
            for item in _as(list, node.get(field)):
                stack.extend(item if isinstance(item, list) else [item])
        for field in _NODE_MAPS:
            stack.extend(_as(dict, node.get(field)).values())
        stack.extend(node.get(field) for field in _NODE_FIELDS)


def _as(kind, value):
    return value if isinstance(value, kind) else kind()


def _is_trusted(node, trusted):
    module, name = node.get("module"), node.get("name")
    if not isinstance(module, str) or not isinstance(name, str):
        return False
    if node.get("kind") == "function":
        return f"{module}.{name}" in _FUNCTIONS
    return f"{module}.{name}" in trusted or _trusted_by_default(module, name)


def _trusted_by_default(module, name):
    if module == "numpy":  # scalar types as values, e.g. dtype=np.float64
        return isinstance(getattr(np, name, None), type) and issubclass(
            getattr(np, name), np.generic)
    parts = module.split(".")
    return (f"{module}.{name}" in _TRUSTED_NAMES
            or (not _UNSAFE_PARTS & set(parts) and any(
                module == m or module.startswith(m + ".") for m in _TRUSTED_MODULES)))


class _Decoder:
    """Rebuilds an object graph from a JSON tree whose classes were checked."""

    def __init__(self, tensors, trusted):
        self.tensors = tensors
        self.trusted = trusted
        self.objects = {}

    def decode(self, node, path):
        if node is None or type(node) in _JSON_SCALARS:
            return node
        if not isinstance(node, dict) or node.get("kind") not in self._KINDS:
            _malformed(path, f"unknown node {str(node)[:80]!r}")
        if node["kind"] == "ref":
            return self._ref(node, path)
        value = self._KINDS[node["kind"]](self, node, path)
        if "id" in node:
            self.objects[node["id"]] = value
        return value

    def _ref(self, node, path):
        if node.get("id") not in self.objects:
            _malformed(path, "a reference to an unknown object")
        return self.objects[node["id"]]

    def _items(self, node, path):
        items = node.get("items")
        if not isinstance(items, list):
            _malformed(path, "items are missing")
        return [self.decode(v, f"{path}[{i}]") for i, v in enumerate(items)]

    def _dict(self, node, path):
        pairs = node.get("items")
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in pairs):
            _malformed(path, "dict items must be pairs")
        return (OrderedDict if node.get("ordered") else dict)(
            (self.decode(k, f"{path} key"), self.decode(v, f"{path}[{k!r}]"))
            for k, v in pairs)

    def _tensor_data(self, node, path):
        key = node.get("tensor")
        if key not in self.tensors:
            _malformed(path, f"tensor {key!r} is not in the file")
        return self.tensors[key]

    def _array(self, node, path):
        dtype = _dtype(node.get("dtype"), path)
        if "tensor" not in node:
            return self._text_array(node, dtype, path)
        tensor = self._tensor_data(node, path)
        array = tensor.numpy()
        if array.dtype != dtype:
            _malformed(path, f"tensor of dtype {array.dtype}, expected {dtype}")
        return np.asfortranarray(array) if node.get("fortran") else array

    def _text_array(self, node, dtype, path):
        shape = node.get("shape")
        if dtype.kind not in _TEXT_KINDS or not isinstance(shape, list):
            _malformed(path, "an array without its tensor")
        items = self._items(node, path)
        if dtype.kind == "U" and not all(isinstance(v, str) for v in items):
            _malformed(path, "a string array holds other values")
        array = np.empty(len(items), dtype=dtype)
        for i, value in enumerate(items):
            array[i] = value
        try:
            return array.reshape(shape)
        except (TypeError, ValueError) as error:
            _malformed(path, str(error))

    def _tensor(self, node, path):
        tensor = self._tensor_data(node, path)
        requires_grad = bool(node.get("requires_grad"))
        if node.get("parameter"):
            return torch.nn.Parameter(tensor, requires_grad=requires_grad)
        return tensor.requires_grad_(requires_grad)

    def _scalar(self, node, path):
        dtype = _dtype(node.get("dtype"), path)
        if dtype.kind not in "biufU":
            _malformed(path, f"NumPy scalar of dtype {dtype}")
        return dtype.type(node.get("value"))

    def _class(self, node, path):
        return self._checked_class(node, path)

    def _function(self, node, path):
        if not _is_trusted(node, set()):
            _untrusted_node(node, path)
        return _FUNCTIONS[f"{node['module']}.{node['name']}"]

    def _device(self, node, path):
        return torch.device(str(node.get("value")))

    def _torch_dtype(self, node, path):
        dtype = getattr(torch, str(node.get("value")), None)
        if not isinstance(dtype, torch.dtype):
            _malformed(path, f"unknown torch dtype {node.get('value')!r}")
        return dtype

    def _random_state(self, node, path):
        state = node.get("state")
        if not isinstance(state, list) or len(state) != 5:
            _malformed(path, "a RandomState needs a state of five values")
        random_state = np.random.RandomState()
        random_state.set_state((str(state[0]), self.decode(state[1], path),
                                *state[2:]))
        return random_state

    def _module(self, node, path):
        cls = self._checked_class(node, path, torch.nn.Module)
        module = cls.__new__(cls)
        torch.nn.Module.__init__(module)
        module._parameters.update(self._typed(node, "parameters", path,
                                              torch.nn.Parameter))
        module._buffers.update(self._typed(node, "buffers", path, torch.Tensor))
        module._modules.update(self._typed(node, "modules", path, torch.nn.Module))
        module._non_persistent_buffers_set = {
            str(n) for n in node.get("non_persistent") or []}
        module.training = bool(node.get("training"))
        vars(module).update(self._attributes(node, path))
        return module

    def _typed(self, node, field, path, kind):
        values = self._attributes(node, path, field)
        for name, value in values.items():
            if value is not None and not isinstance(value, kind):
                _malformed(f"{path}.{name}", f"expected a {kind.__name__}")
        return values

    def _attributes(self, node, path, field="attributes"):
        attributes = node.get(field)
        if not isinstance(attributes, dict) or any(map(_is_dunder, attributes)):
            _malformed(path, f"bad or missing {field}")
        return {name: self.decode(value, f"{path}.{name}")
                for name, value in attributes.items()}

    def _net(self, node, path):
        cls = self._checked_class(node, path, NeuralNet)
        net = cls.__new__(cls)
        module = self.decode(node.get("module_"), f"{path}.module_")
        history = self.decode(node.get("history"), f"{path}.history")
        if not isinstance(module, torch.nn.Module | None) or not isinstance(
                history, list | None):
            _malformed(path, "a net needs a module and a history list")
        vars(net).update(initialized_=module is not None, device="cpu",
                         cuda_dependent_attributes_=["module_"],
                         history_=History(history or []))
        if module is not None:
            vars(net)["module_"] = module
        return net

    def _object(self, node, path):
        cls = self._checked_class(node, path)
        if (issubclass(cls, torch.nn.Module | NeuralNet) or cls.__module__ == "builtins"
                or not _plain_state(cls)):
            _malformed(path, f"{_class_name(cls)} cannot be an 'object' node")
        obj = cls.__new__(cls)
        vars(obj).update(self._attributes(node, path))
        return obj

    def _checked_class(self, node, path, base=object):
        """The class a node names: trusted, importable by that name, and a
        subclass of ``base``."""
        if not _is_trusted(node, self.trusted):
            _untrusted_node(node, path)
        module, name = node["module"], node["name"]
        cls = _resolve(module, name)
        if not isinstance(cls, type) or _class_name(cls) != f"{module}.{name}":
            raise UntrustedTypeError(f"{module}.{name} (at {path}) is not a class "
                                     "that can be imported by that name; refused.")
        if not issubclass(cls, base):
            _malformed(path, f"{module}.{name} is not a {base.__name__}")
        return cls

    _KINDS = {
        "list": lambda self, n, p: self._items(n, p),
        "tuple": lambda self, n, p: tuple(self._items(n, p)),
        "set": lambda self, n, p: set(self._items(n, p)),
        "frozenset": lambda self, n, p: frozenset(self._items(n, p)),
        "dict": _dict, "ndarray": _array, "tensor": _tensor, "npscalar": _scalar,
        "class": _class, "function": _function, "device": _device,
        "torch_dtype": _torch_dtype,
        "np_dtype": lambda self, n, p: _dtype(n.get("value"), p),
        "random_state": _random_state, "module": _module, "net": _net,
        "object": _object, "ref": _ref,
    }


def _malformed(path, reason):
    raise ValueError(f"The file is malformed at {path}: {reason}.")


_DTYPE = re.compile(r"[<>|=]?[biufcUO]\d*")


def _dtype(text, path):
    if not isinstance(text, str) or not _DTYPE.fullmatch(text):
        _malformed(path, f"unsupported dtype {text!r}")
    return np.dtype(text)


def _untrusted_node(node, path):
    raise UntrustedTypeError(f"{node.get('module')}.{node.get('name')} (at {path}) "
                             "is not trusted; refused.")
