"""The skorch core shared by skmeta's torch learners: episodic training on tasks.

skorch's data handling takes arrays, not task lists, so the core gets a
task-level ``Dataset`` and a collate function that turns a meta-batch of
tasks into tensors; each learner supplies the collate function and the
episode loss. Devices, callbacks, progress bars, histories, checkpoints and
``module__*`` parameters are skorch's own.
"""

import contextlib
import copy
import inspect

import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import PassthroughScoring, ProgressBar
from skorch.dataset import ValidSplit
from torch.utils.data import DataLoader, Dataset

from . import distributed
from ._routing import RoutedParamsMixin
from .nn import MLP


class TaskDataset(Dataset):
    """A task collection as a torch ``Dataset``: item ``i`` is task ``i``."""

    def __init__(self, tasks):
        self.tasks = tasks

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, index):
        return self.tasks[index]


class EpisodicNet(NeuralNet):
    """skorch ``NeuralNet`` whose samples are tasks and whose batches are
    meta-batches.

    Subclasses implement ``episode_loss(batch, training)``, returning the
    meta-loss of a collated meta-batch and its query accuracy (None for
    regression). ``grad_at_eval`` says whether evaluation needs gradients
    (an inner loop does).
    """

    grad_at_eval = False

    def __init__(self, *args, shuffle_seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.shuffle_seed = shuffle_seed

    def get_dataset(self, X, y=None):
        return X if isinstance(X, Dataset) else TaskDataset(X)

    def get_default_callbacks(self):
        return [*super().get_default_callbacks(),
                ("train_acc", PassthroughScoring("train_acc", lower_is_better=False,
                                                 on_train=True)),
                ("valid_acc", PassthroughScoring("valid_acc", lower_is_better=False))]

    def get_iterator(self, dataset, training=False):
        if not training:
            return super().get_iterator(dataset, training)
        sampler = MetaBatchSampler(len(dataset), self.batch_size, self.shuffle_seed,
                                   epoch=lambda: len(self.history))
        return DataLoader(dataset, batch_sampler=sampler,
                          collate_fn=self.iterator_train__collate_fn)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        loss = self._episode_step(batch, "train")
        loss.backward()
        return {"loss": self._synchronise(loss, len(batch)), "y_pred": None}

    def _synchronise(self, loss, n_tasks):
        """Under data-parallel training, turn this process's meta-gradient and
        loss into those of the global meta-batch (a no-op otherwise)."""
        if not distributed.is_data_parallel():
            return loss
        parameters = [p for _, p in self.get_all_learnable_params()]
        return distributed.reduce_share(loss, n_tasks, parameters)

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        with torch.set_grad_enabled(self.grad_at_eval):
            loss = self._episode_step(batch, "valid")
        return {"loss": loss.detach(), "y_pred": None}

    def _episode_step(self, batch, prefix):
        loss, accuracy = self.episode_loss(batch, training=prefix == "train")
        check_finite_loss(self, loss)
        if accuracy is not None:
            self.history.record_batch(f"{prefix}_acc", float(accuracy))
        return loss

    def episode_loss(self, batch, training):
        raise NotImplementedError


def check_finite_loss(net, loss, meta="meta-"):
    """Stop a skorch net's training with a clear error on a non-finite loss,
    before the optimiser step, so the module keeps its last finite weights."""
    if not torch.isfinite(loss):
        epoch, step = len(net.history), len(net.history[-1, "batches"]) + 1
        raise FloatingPointError(
            f"The {meta}loss became {loss.item()} in epoch {epoch}, {meta}batch "
            f"{step}; training stopped and the module keeps the parameters "
            "of the last finite step. A learning rate that is too high "
            "(meta_lr, lr, or inner_lr where there is one) or features on a "
            "large scale (standardise them) is the usual cause.")


class FiniteLossMixin:
    """For skorch nets that are not episodic: :func:`check_finite_loss` on
    every loss."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        check_finite_loss(self, loss, meta="")
        return loss


class MetaBatchSampler:
    """The meta-batches of one training epoch, as lists of task indices.

    The task order of epoch ``e`` is a permutation seeded by ``(seed, e)``, so
    a run resumed from a checkpoint (whose history says which epoch comes
    next) sees the same meta-batches as an uninterrupted run. Under
    data-parallel training each process gets its share of every meta-batch.
    """

    def __init__(self, n_tasks, batch_size, seed, epoch):
        self.n_tasks, self.batch_size, self.seed, self.epoch = (
            n_tasks, batch_size, seed, epoch)
        self.rank, self.world_size = distributed.rank_and_world_size()
        if batch_size < self.world_size:
            raise ValueError(f"meta_batch_size={batch_size} is smaller than the "
                             f"{self.world_size} processes sharing each "
                             "meta-batch.")

    def __len__(self):
        return -(-self.n_tasks // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch())
        order = torch.randperm(self.n_tasks, generator=generator)
        for start in range(0, self.n_tasks, self.batch_size):
            batch = order[start:start + self.batch_size]
            share = batch[self.rank::self.world_size].tolist()
            if share:
                yield share


class EpisodicLearner(RoutedParamsMixin, BaseEstimator):
    """Base of the learners whose torch core is an :class:`EpisodicNet`.

    Subclasses put :class:`~skmeta.base.MetaClassifierMixin` or
    :class:`~skmeta.base.MetaRegressorMixin` on its left and set ``_core``
    (the ``EpisodicNet`` subclass), ``_collate`` (meta-batch of tasks to
    tensors) and ``_criterion``; they may extend ``_module_kwargs`` with
    sizes taken from the data.
    """

    _core = EpisodicNet
    _criterion = torch.nn.CrossEntropyLoss

    @staticmethod
    def _collate(tasks):
        raise NotImplementedError

    @property
    def history_(self):
        """The skorch ``History`` of meta-training: losses and accuracies per
        epoch and meta-batch."""
        return self.net_.history

    def _fit(self, tasks):
        seed = distributed.broadcast_seed(
            check_random_state(self.random_state).randint(2**31))
        self.net_ = self._core(**self._core_params(tasks, seed))
        with seeded(seed, self.device):
            self.net_.fit(TaskDataset(tasks))

    def _core_params(self, tasks, seed):
        module = self.module if self.module is not None else MLP
        return dict(**module_params(module, self._module_kwargs(tasks),
                                    self._routed_params("module__")),
                    **training_params(self, seed),
                    criterion=self._criterion, optimizer=torch.optim.Adam,
                    lr=self.meta_lr, max_epochs=self.max_epochs,
                    batch_size=self.meta_batch_size, shuffle_seed=seed,
                    iterator_train__collate_fn=self._collate,
                    iterator_valid__collate_fn=self._collate)

    def _module_kwargs(self, tasks):
        return {"in_features": self.n_features_in_}

    def _frozen_module(self):
        """A CPU copy of the meta-trained module in eval mode, for adapted
        estimators (standalone, picklable anywhere)."""
        module = copy.deepcopy(self.net_.module_).cpu().eval()
        return module.requires_grad_(False)


def module_params(module, data_kwargs, routed):
    """skorch's ``module`` and ``module__*`` arguments.

    A module instance is deep-copied (fitting must not train the user's); a
    class gets the data-derived ``data_kwargs`` it accepts, then the user's
    ``routed`` ``module__*`` parameters, which win.
    """
    if isinstance(module, torch.nn.Module):
        return {"module": copy.deepcopy(module)}
    params = {f"module__{k}": v for k, v in data_kwargs.items()
              if _accepts(module, k)}
    return {"module": module, **params, **routed}


def training_params(learner, seed):
    """skorch arguments taken from a learner's shared parameters: validation
    split, callbacks (with a progress bar when verbose), verbosity, device."""
    split = (None if learner.validation_fraction is None else
             ValidSplit(learner.validation_fraction, stratified=False,
                        random_state=seed))
    callbacks = list(learner.callbacks or [])
    if learner.verbose and not any(isinstance(_callback(c), ProgressBar)
                                   for c in callbacks):
        callbacks.append(ProgressBar())
    return dict(train_split=split, callbacks=callbacks, verbose=learner.verbose,
                device=learner.device)


def _accepts(module_class, name):
    parameters = inspect.signature(module_class).parameters
    return name in parameters or any(
        p.kind is p.VAR_KEYWORD for p in parameters.values())


def _callback(entry):
    return entry[1] if isinstance(entry, tuple) else entry


@contextlib.contextmanager
def seeded(seed, device):
    """Seed torch for the block and restore the caller's random state after."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
