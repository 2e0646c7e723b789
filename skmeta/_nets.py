"""The one way skmeta builds and trains a skorch net.

Every torch part of skmeta (the meta-learners' cores, the pooled-class
networks, fusion's torch MLP) is a :class:`SkmetaNet`: a skorch
``NeuralNet`` whose samples are items of a torch ``Dataset`` (tasks, or
examples), whose batches come from :class:`BatchSampler` (a process's
:class:`Share` of each, built by the net's own ``collate``), and whose loss
is the net's ``batch_loss``. It
stops on a non-finite loss, shares its batches between data-parallel
processes, and notes an interrupted training. :func:`fit_net` builds and
trains one, seeded, from a :class:`NetSpec`.
"""

import contextlib
import copy
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from skorch import NeuralNet
from skorch.callbacks import PassthroughScoring, PrintLog, ProgressBar
from skorch.dataset import ValidSplit
from torch.utils.data import DataLoader, Dataset

from . import distributed


class TaskDataset(Dataset):
    """A task collection as a torch ``Dataset``: item ``i`` is task ``i``."""

    def __init__(self, tasks):
        self.tasks = tasks

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, index):
        return self.tasks[index]


@dataclass
class Share:
    """This process's share of a batch: the collated ``batch`` of its
    ``n_items`` items (None when it has none), out of the ``n_total`` items
    of the batch all processes share. Its length is ``n_total``, so that
    skorch weighs the batch's (global) loss by the global batch size."""

    batch: Any
    n_items: int
    n_total: int

    def __len__(self):
        return self.n_total


class _Shares(Dataset):
    """Reads a share, ``(indices, n_total)``, of a dataset at once."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, share):
        indices, n_total = share
        return [self.dataset[i] for i in indices], n_total


class BatchSampler:
    """The batches of one epoch, as ``(indices of this process's share,
    size of the whole batch)``.

    In training, the order of epoch ``e`` is a permutation seeded by
    ``(seed, e)`` (or the given order when ``shuffle`` is False), so a run
    resumed from a checkpoint, whose history says which epoch comes next,
    sees the same batches as an uninterrupted run. Under data-parallel
    training each process gets its share of every batch; a share may be
    empty, and the process still takes part in the batch's collectives.
    Outside training (``epoch=None``) batches are in order and unshared.
    """

    def __init__(self, n_items, batch_size, seed=0, epoch=None, shuffle=True):
        self.n_items, self.batch_size, self.seed, self.epoch = (
            n_items, batch_size, seed, epoch)
        self.shuffle = shuffle
        self.rank, self.world_size = (distributed.rank_and_world_size()
                                      if epoch is not None else (0, 1))

    def __len__(self):
        return -(-self.n_items // self.batch_size)

    def __iter__(self):
        if self.shuffle and self.epoch is not None:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(self.n_items, generator=generator)
        else:
            order = torch.arange(self.n_items)
        for start in range(0, self.n_items, self.batch_size):
            batch = order[start:start + self.batch_size]
            yield batch[self.rank::self.world_size].tolist(), len(batch)


class SkmetaNet(NeuralNet):
    """skorch ``NeuralNet`` for skmeta's datasets and batches.

    Subclasses implement ``collate(items)`` (a list of dataset items to a
    batch object with ``len``) and ``batch_loss(batch, training)`` (the mean
    loss of a batch and its accuracy, None where there is none). Two flags:
    ``backward_in_loss`` (``batch_loss`` already accumulated the gradients,
    e.g. chunk by chunk) and ``grad_at_eval`` (evaluation needs gradients,
    e.g. an inner loop).

    Parameters beyond skorch's: ``shuffle_seed`` (seed of the batch order)
    and ``shuffle`` (False keeps the dataset's order).
    """

    backward_in_loss = False
    grad_at_eval = False

    def __init__(self, module, criterion=torch.nn.CrossEntropyLoss, *args,
                 shuffle_seed=0, shuffle=True, **kwargs):
        super().__init__(module, criterion, *args, **kwargs)
        self.shuffle_seed = shuffle_seed
        self.shuffle = shuffle

    def collate(self, items):
        raise NotImplementedError

    def batch_loss(self, batch, training):
        raise NotImplementedError

    def get_dataset(self, X, y=None):
        return X if isinstance(X, Dataset) else TaskDataset(X)

    def get_default_callbacks(self):
        defaults = [(name, PlainPrintLog() if name == "print_log" else callback)
                    for name, callback in super().get_default_callbacks()]
        return [*defaults,
                ("train_acc", PassthroughScoring("train_acc", lower_is_better=False,
                                                 on_train=True)),
                ("valid_acc", PassthroughScoring("valid_acc", lower_is_better=False))]

    def get_iterator(self, dataset, training=False):
        epoch = (lambda: len(self.history)) if training else None
        sampler = BatchSampler(len(dataset), self.batch_size, self.shuffle_seed,
                               epoch=epoch, shuffle=self.shuffle)
        return DataLoader(_Shares(dataset), sampler=sampler, batch_size=None,
                          collate_fn=self._collate)

    def _collate(self, share):
        items, n_total = share
        return Share(self.collate(items) if items else None, len(items), n_total)

    def fit_loop(self, X, y=None, **fit_params):
        """skorch's loop, noting in ``interrupted_`` a KeyboardInterrupt
        (which skorch's ``fit`` swallows, keeping the model trained so far)."""
        self.interrupted_ = False
        try:
            return super().fit_loop(X, y, **fit_params)
        except KeyboardInterrupt:
            self.interrupted_ = True
            raise

    def save_params(self, f_params=None, **kwargs):
        """skorch's ``save_params``; a net's extra modules (a learned prior,
        Meta-SGD's rates) are saved beside the module's parameters, so that a
        :class:`~skorch.callbacks.Checkpoint` keeps the whole trained state."""
        beside = self._extra_module_files(f_params or kwargs.get("f_module"))
        return super().save_params(f_params=f_params, **{**beside, **kwargs})

    def load_params(self, f_params=None, checkpoint=None, **kwargs):
        """skorch's ``load_params``, then the extra modules saved beside the
        module's parameters by :meth:`save_params`."""
        super().load_params(f_params=f_params, checkpoint=checkpoint, **kwargs)
        files = {key: path for key, path in {"f_params": f_params, **kwargs}.items()
                 if path is not None}
        if checkpoint is not None:  # its history is loaded by now
            files = {**checkpoint.get_formatted_files(self), **files}
        source = files.get("f_params") or files.get("f_module")
        beside = {key: path for key, path in self._extra_module_files(source).items()
                  if key not in kwargs and os.path.exists(path)}
        if beside:
            super().load_params(**beside)

    def _extra_module_files(self, f_params):
        if not isinstance(f_params, (str, os.PathLike)):
            return {}
        return {f"f_{name}": f"{os.fspath(f_params)}.{name}"
                for name in self._modules if name != "module"}

    def train_step_single(self, share, **fit_params):
        self._set_training(True)
        if share.batch is None:  # an empty share: a zero contribution
            loss = torch.zeros((), device=self.device)
        else:
            loss = self._checked_loss(share.batch, "train")
            if not self.backward_in_loss:
                loss.backward()
        return {"loss": self._synchronise(loss, share.n_items), "y_pred": None}

    def validation_step(self, share, **fit_params):
        self._set_training(False)
        with torch.set_grad_enabled(self.grad_at_eval):
            loss = self._checked_loss(share.batch, "valid")
        return {"loss": loss.detach(), "y_pred": None}

    def _checked_loss(self, batch, prefix):
        loss, accuracy = self.batch_loss(batch, training=prefix == "train")
        check_finite_loss(self, loss)
        if accuracy is not None:
            self.history.record_batch(f"{prefix}_acc", float(accuracy))
        return loss

    def _synchronise(self, loss, n_items):
        """Under data-parallel training, turn this process's gradient and
        loss into those of the global batch (a no-op otherwise)."""
        if not distributed.is_data_parallel():
            return loss.detach()
        parameters = [p for _, p in self.get_all_learnable_params()]
        return distributed.reduce_share(loss, n_items, parameters)


class PlainPrintLog(PrintLog):
    """skorch's epoch log, without colour codes when the output is not a
    terminal (a log file, a notebook's captured stream)."""

    def format_row(self, row, key, color):
        text = super().format_row(row, key, color)
        if isinstance(text, str) and not _is_terminal():
            return _ANSI.sub("", text)
        return text


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_terminal():
    return getattr(sys.stdout, "isatty", lambda: False)()


def check_finite_loss(net, loss):
    """Stop a skorch net's training with a clear error on a non-finite loss,
    before the optimiser step (the learner that called ``fit`` is then left
    as it was before)."""
    if not torch.isfinite(loss):
        epoch, step = len(net.history), len(net.history[-1, "batches"])
        raise FloatingPointError(
            f"The loss became {loss.item()} in epoch {epoch}, batch {step}; "
            "training stopped and the learner is left as it was before fit. A "
            "learning rate that is too high (meta_lr, lr, or inner_lr where "
            "there is one) or features on a large scale (standardise them) is "
            "the usual cause.")


@dataclass
class NetSpec:
    """What a learner asks :func:`fit_net` to build.

    Attributes
    ----------
    net : type
        The :class:`SkmetaNet` subclass.
    module : torch.nn.Module class or instance
        The network; an instance is deep-copied, never trained in place.
    dataset : torch.utils.data.Dataset
        The training items (tasks or examples).
    data_kwargs : dict
        Module arguments taken from the data (``in_features``...), passed
        where the module class accepts them.
    routed : dict
        The user's ``module__*`` arguments, unprefixed; they win.
    params : dict
        Further arguments of the net (``criterion``, core options...); they
        win over the training parameters.
    check : callable or None
        Called with the initialised module before training, to refuse a
        module that cannot work with a clear error.
    """

    net: type
    module: Any
    dataset: Any
    data_kwargs: dict = field(default_factory=dict)
    routed: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    check: Any = None


@dataclass
class Training:
    """How long and how a net trains: the shared training parameters."""

    max_epochs: int
    batch_size: int
    lr: float
    device: Any = "cpu"
    callbacks: Any = None
    verbose: int = 0
    validation_fraction: float = None
    shuffle: bool = True
    repeats: int = 1  # each epoch visits the training items this many times


def fit_net(spec, training, seed):
    """Build the net that ``spec`` describes and train it, seeded.

    Torch's global random state is left as the caller had it. A
    KeyboardInterrupt ends training early and keeps the net (skorch's
    behaviour; ``net.interrupted_`` says so), with an
    :class:`UntrainedWarning` if no step was taken.

    Parameters
    ----------
    spec : NetSpec
    training : Training
    seed : int
        Seeds the module's initialisation, the batch order and the
        validation split.

    Returns
    -------
    net : SkmetaNet
        Trained.
    """
    net = spec.net(**module_params(spec.module, spec.data_kwargs, spec.routed),
                   **{**_training_params(training, seed), **spec.params})
    with seeded(seed, training.device):
        net.initialize()
        if spec.check is not None:
            spec.check(net.module_)
        net.partial_fit(spec.dataset)
    if net.interrupted_ and not _steps_taken(net):
        warnings.warn("Training was interrupted before its first step: the "
                      "model keeps its initial, untrained weights.",
                      UntrainedWarning, stacklevel=3)
    return net


class UntrainedWarning(UserWarning):
    """Training ended before it changed the model."""


def _steps_taken(net):
    """Batches whose step completed (skorch opens a batch's row before it)."""
    return sum(1 for epoch in net.history for batch in epoch["batches"]
               if "train_loss" in batch)


def _training_params(training, seed):
    split = (None if training.validation_fraction is None else
             ValidSplit(training.validation_fraction, stratified=False,
                        random_state=seed))
    if training.repeats > 1:
        split = RepeatedTrainSplit(split, training.repeats)
    callbacks = list(training.callbacks or [])
    if training.verbose and _is_terminal() and not any(
            isinstance(_callback(c), ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar())  # \r updates belong on a terminal only
    return dict(optimizer=torch.optim.Adam, lr=training.lr,
                max_epochs=training.max_epochs, batch_size=training.batch_size,
                train_split=split, callbacks=callbacks, verbose=training.verbose,
                device=training.device, shuffle_seed=seed, shuffle=training.shuffle)


class RepeatedTrainSplit:
    """skorch ``train_split``: ``split`` (or none), then the training items
    repeated ``repeats`` times, so that an epoch of a small collection holds
    enough steps to be worth its per-epoch overhead."""

    def __init__(self, split, repeats):
        self.split, self.repeats = split, repeats

    def __call__(self, dataset, y=None, **fit_params):
        train, valid = ((dataset, None) if self.split is None
                        else self.split(dataset, y, **fit_params))
        return _Repeated(train, self.repeats), valid


class _Repeated(Dataset):
    """A dataset seen ``repeats`` times in a row."""

    def __init__(self, items, repeats):
        self.items, self.repeats = items, repeats

    def __len__(self):
        return len(self.items) * self.repeats

    def __getitem__(self, index):
        return self.items[index % len(self.items)]


def module_params(module, data_kwargs, routed):
    """skorch's ``module`` and ``module__*`` arguments.

    A module instance is deep-copied (fitting must not train the user's); a
    class gets the data-derived ``data_kwargs`` it accepts, then the user's
    ``routed`` arguments (unprefixed), which win.
    """
    if isinstance(module, torch.nn.Module):
        return {"module": copy.deepcopy(module)}
    kwargs = {k: v for k, v in data_kwargs.items() if _accepts(module, k)}
    kwargs.update(routed)
    return {"module": module, **{f"module__{k}": v for k, v in kwargs.items()}}


def _accepts(module_class, name):
    parameters = inspect.signature(module_class).parameters
    return name in parameters or any(
        p.kind is p.VAR_KEYWORD for p in parameters.values())


def _callback(entry):
    return entry[1] if isinstance(entry, tuple) else entry


def frozen_copy(module):
    """A CPU copy of a trained module in eval mode without gradients, for
    adapted estimators (standalone, picklable anywhere)."""
    return copy.deepcopy(module).cpu().eval().requires_grad_(False)


@contextlib.contextmanager
def seeded(seed, device):
    """Seed torch for the block and restore the caller's random state after."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
