"""The functional, task-batched core of the MAML family.

A meta-batch is split into groups of tasks with the same number of classes
and, after padding, the same numbers of rows; within a group, tasks run
together: the inner loop of one task (``torch.func.grad`` of
``functional_call``) is vectorised over them with ``torch.func.vmap``, so
the fast weights carry a leading task dimension, and the meta-gradient
(second order unless asked otherwise) comes from one backward pass through
it. No Python loop over tasks, no module copies. Tasks of different sizes
(the normal case on real data) are padded to a few shared sizes: padded
rows carry zero weight in every loss, so results equal the unpadded ones.
Groups are processed in chunks whose meta-gradients are accumulated, so
memory stays flat as the meta-batch grows.
"""

import math
from dataclasses import dataclass, fields
from operator import itemgetter

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase

from .._nets import SkmetaNet
from .._padding import masked_mean, padded
from ..tasks import encode_labels
from . import _plan as plan
from ._guard import check_training

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile")

# Rows of one task processed at once by the single-task path (adapt).
ROW_CHUNK = 2**15

# Floats one chunk of tasks may hold in parameter copies and activations.
_CHUNK_BUDGET = 2**24


@dataclass
class TaskGroup:
    """Tasks stacked to identical shapes: ``X_*`` (tasks, rows, features),
    ``y_*`` (tasks, rows) with class indices or float targets; ``y_query`` is
    None when query labels are unknown. ``index`` holds the tasks' positions
    in the collection and ``classes`` their labels (classification).
    ``support_mask`` and ``query_mask`` (tasks, rows) weigh real rows 1 and
    padding rows 0; None when no task is padded."""

    X_support: torch.Tensor
    y_support: torch.Tensor
    X_query: torch.Tensor
    y_query: torch.Tensor | None
    n_way: int
    index: list
    classes: list
    support_mask: torch.Tensor | None = None
    query_mask: torch.Tensor | None = None

    def __len__(self):
        return len(self.X_support)

    def _map(self, tensors, lists=None):
        """A group with ``tensors`` applied to its tensors (and ``lists`` to
        its per-task lists)."""
        def apply(value):
            if isinstance(value, torch.Tensor):
                return tensors(value)
            return lists(value) if lists and isinstance(value, list) else value
        return TaskGroup(**{f.name: apply(getattr(self, f.name))
                            for f in fields(self)})

    def to(self, device):
        return self._map(lambda tensor: tensor.to(device))

    def chunks(self, size):
        for start in range(0, len(self), size):
            part = itemgetter(slice(start, start + size))
            yield self._map(part, part)


@dataclass
class MAMLBatch:
    """A meta-batch: its tasks grouped by shape."""

    groups: list

    def __len__(self):
        return sum(len(group) for group in self.groups)


# Padding may at most double the rows a group processes, and at most
# quadruple those of any one task: tasks of a few sizes (the normal case on
# real data) share one vmap, a few large tasks are not padded to by many
# small ones, and a small task does not join a large one.
_MAX_PADDING, _MAX_TASK_PADDING = 2.0, 4.0


def group_tasks(tasks, classification, pad=True):
    """Encode and stack validated tasks into groups (:class:`TaskGroup`):
    one per number of classes and size bucket (``pad``), or per exact shape
    (for modules whose rows are not independent, such as BatchNorm's)."""
    by_way = {}
    for index, task in enumerate(tasks):
        if classification:
            classes, y_support, y_query = encode_labels(task)
        else:
            classes, y_support, y_query = None, task.y_support, task.y_query
        n_way = 0 if classes is None else len(classes)
        by_way.setdefault(n_way, []).append(
            (index, classes, task.X_support, y_support, task.X_query, y_query))
    return [_stack(rows, n_way, classification)
            for n_way, encoded in by_way.items()
            for rows in _buckets(encoded, pad)]


def _buckets(encoded, pad):
    """Split tasks into lists padded to a shared (support, query) size each:
    largest first, a task joins the open bucket while the padding stays
    within the bounds above (without ``pad``: tasks of the same shape
    only)."""
    sizes = [(len(row[2]), len(row[4])) for row in encoded]
    if len(set(sizes)) == 1:  # the usual meta-batch of one shape
        return [encoded]
    max_padding, max_task_padding = ((_MAX_PADDING, _MAX_TASK_PADDING) if pad
                                     else (1.0, 1.0))
    buckets, shape, real = [], None, 0
    for size, row in sorted(zip(sizes, encoded, strict=True),
                            key=lambda item: (sum(item[0]), item[0]), reverse=True):
        rows = sum(size)
        grown = shape and tuple(map(max, shape, size))
        if grown and (sum(grown) <= max_task_padding * rows
                      and sum(grown) * (len(buckets[-1]) + 1)
                      <= max_padding * (real + rows)):
            buckets[-1].append(row)
            shape, real = grown, real + rows
        else:
            buckets.append([row])
            shape, real = size, rows
    return buckets


def _stack(rows, n_way, classification):
    index, classes, X_support, y_support, X_query, y_query = zip(*rows, strict=True)
    dtype = torch.long if classification else torch.float32
    X_support, support_mask = padded(X_support, torch.float32)
    X_query, query_mask = padded(X_query, torch.float32)
    return TaskGroup(X_support, padded(y_support, dtype)[0], X_query,
                     None if y_query[0] is None else padded(y_query, dtype)[0],
                     n_way, list(index), list(classes), support_mask, query_mask)


class FunctionalLearner:
    """Inner-loop adaptation of a module, batched over the tasks of a group.

    Parameters
    ----------
    module : torch.nn.Module
        The network; its parameters are the meta-learned initialisation.
        BatchNorm layers must keep no running statistics (see
        :func:`torch.func.replace_all_batch_norm_modules_`), so they use each
        task's batch statistics.
    inner_lr : float or dict of tensors
        Inner learning rate, or one learned rate tensor per adapted parameter
        (Meta-SGD).
    adapted : sequence of str or None
        Names of the parameters the inner loop adapts (ANIL adapts the head
        only); None adapts all.
    classification : bool
        Cross-entropy on class indices if True, else mean squared error.
    """

    def __init__(self, module, inner_lr, adapted=None, classification=True):
        self.module = module
        self.inner_lr = inner_lr
        params = dict(module.named_parameters())
        names = list(params) if adapted is None else list(adapted)
        self.init = {name: params[name] for name in names}
        self.fixed = {name: p for name, p in params.items() if name not in self.init}
        self.buffers = dict(module.named_buffers())
        self.classification = classification
        self._plan = plan.linear_plan(module)

    def _call(self, weights, rows):
        """The module under ``weights`` (and its own other parameters):
        ``functional_call``, or for a plain stack of ``Linear`` and
        elementwise activations (:class:`skmeta.nn.MLP`) the same operations
        called directly, without reparametrising the module."""
        if self._plan is None:
            return functional_call(self.module, (weights, self.fixed, self.buffers),
                                   (rows,))
        return plan.run(self._plan, {**self.fixed, **weights}, rows)[0]

    def _inner_gradient(self):
        """The function (weights, rows, targets, n_way, mask) -> (gradients,
        loss) of a task's support loss: written out for a linear plan (see
        :mod:`._plan`), else ``torch.func.grad_and_value``."""
        if self._plan is None:
            return torch.func.grad_and_value(self._task_loss)

        def written_out(weights, rows, targets, n_way, mask=None):
            return plan.grad_and_value(
                self._plan, {**self.fixed, **weights}, weights.keys(), rows,
                targets, n_way if self.classification else 0, mask)
        return written_out

    def adapt(self, X, y, n_way, steps, create_graph=False, track=True,
              initial_loss=False, mask=None):
        """Fast weights of every task after ``steps`` gradient steps on (X, y).

        ``create_graph`` keeps the inner gradients differentiable (second
        order); ``track=False`` detaches the initialisation (evaluation);
        ``mask`` (tasks, rows) weighs each row in the loss (0: padding).
        Returns a dict of tensors with a leading task dimension; with
        ``initial_loss=True``, also each task's support loss before the steps
        (detached, of shape (tasks,); it comes free with the first step's
        gradient).
        """
        init = self.init if track else {k: w.detach() for k, w in self.init.items()}
        inner = self._inner_gradient()

        def one_task(weights, rows, targets, weight):
            before = None
            for _ in range(steps):
                grads, loss = inner(weights, rows, targets, n_way, weight)
                before = loss if before is None else before
                weights = {name: self._step(name, w, grads[name] if create_graph
                                            else grads[name].detach())
                           for name, w in weights.items()}
            return weights, before

        mask_dim = None if mask is None else 0
        fast, before = vmap(one_task, in_dims=(None, 0, 0, mask_dim),
                            randomness="different")(init, X, y, mask)
        return (fast, before.detach()) if initial_loss else fast

    def adapt_one(self, X, y, n_way, steps):
        """One task's fast weights after ``steps`` gradient steps on (X, y),
        without ``vmap`` or a task dimension (``adapt``'s single-task fast
        path; the initialisation is detached). A task of more than
        ``ROW_CHUNK`` rows is processed in row chunks whose gradients are
        summed, so memory stays that of one chunk (BatchNorm then uses each
        chunk's statistics).

        Returns the fast weights (a dict of tensors) and the support loss
        before and after the steps (0-d tensors).
        """
        weights = {name: w.detach() for name, w in self.init.items()}
        before = None
        with torch.no_grad():  # torch.func's gradients ignore it
            for _ in range(steps):
                loss, grads = self._loss_and_grads(weights, X, y, n_way)
                before = loss if before is None else before
                weights = {name: self._step(name, w, grads[name])
                           for name, w in weights.items()}
            after = self._loss_and_grads(weights, X, y, n_way, grads=False)[0]
        return weights, (after if before is None else before), after

    def _loss_and_grads(self, weights, X, y, n_way, grads=True):
        """The mean support loss and, if ``grads``, its gradients with
        respect to ``weights`` (a dict), accumulated over row chunks."""
        if len(X) > ROW_CHUNK:  # the row chunks' shares of the mean, summed
            total, summed = 0.0, None
            for start in range(0, len(X), ROW_CHUNK):
                rows = slice(start, start + ROW_CHUNK)
                share = len(X[rows]) / len(X)
                loss, part = self._loss_and_grads(weights, X[rows], y[rows], n_way,
                                                  grads)
                total = total + loss * share
                if grads:
                    summed = {name: g * share + (0 if summed is None else summed[name])
                              for name, g in part.items()}
            return total, summed
        if not grads:
            return self._task_loss(weights, X, y, n_way), None
        part, loss = self._inner_gradient()(weights, X, y, n_way)
        return loss, part

    def forward_one(self, fast, X):
        """The module's outputs for one task's rows under its fast weights
        (no task dimension), row chunk by row chunk."""
        return torch.cat([self._call(fast, X[start:start + ROW_CHUNK])
                          for start in range(0, len(X), ROW_CHUNK)])

    def _task_loss(self, weights, rows, targets, n_way, mask=None):
        outputs = self._call(weights, rows)
        if self.classification:
            logits = self.logits(outputs, n_way)
            if mask is None:
                return F.cross_entropy(logits, targets)
            return masked_mean(F.cross_entropy(logits, targets, reduction="none"), mask)
        return masked_mean((outputs.reshape(targets.shape) - targets).square(), mask)

    def forward(self, fast, X):
        """The module's outputs for each task's rows under its fast weights."""
        return vmap(self._call, randomness="different")(fast, X)

    def forward_both(self, fast, X_support, X_query):
        """The module's outputs for each task's support rows and query rows
        under its fast weights: one pass over both, unless the module's rows
        are not independent (BatchNorm)."""
        if not rows_independent(self.module):
            return self.forward(fast, X_support), self.forward(fast, X_query)
        outputs = self.forward(fast, torch.cat([X_support, X_query], 1))
        n_support = X_support.shape[1]
        return outputs[:, :n_support], outputs[:, n_support:]

    def losses(self, outputs, y, n_way, mask=None):
        """Mean loss per task (over the rows ``mask`` weighs 1): a tensor of
        shape (tasks,)."""
        n_tasks, n_rows = y.shape
        if not self.classification:
            return masked_mean((outputs.reshape(n_tasks, n_rows) - y).square(), mask)
        logits = self.logits(outputs, n_way)
        return masked_mean(F.cross_entropy(logits.reshape(n_tasks * n_rows, n_way),
                                     y.reshape(-1), reduction="none"
                                     ).reshape(n_tasks, n_rows), mask)

    logits = staticmethod(plan.class_logits)

    def _step(self, name, weights, grads):
        if isinstance(self.inner_lr, dict):  # Meta-SGD: learned rate tensors
            return weights - self.inner_lr[name] * grads
        return torch.add(weights, grads, alpha=-self.inner_lr)


def rows_independent(module):
    """Whether the module's output for a row depends on that row only, so
    tasks may be padded with rows of zero weight: False when it normalises
    with batch statistics (BatchNorm)."""
    return not any(isinstance(child, _NormBase) for child in module.modules())


def adapted_names(module, algorithm):
    """Parameters the inner loop adapts: all, or for ANIL those of the last
    child module that has parameters (the head)."""
    if algorithm != "anil":
        return None
    heads = [name for name, child in module.named_children()
             if any(True for _ in child.parameters())]
    if not heads:
        raise ValueError("algorithm='anil' adapts the module's last child module "
                         "with parameters (its head), but the module has none.")
    return [name for name, _ in module.named_parameters()
            if name.startswith(heads[-1] + ".")]


class InnerRates(torch.nn.Module):
    """Meta-SGD's learned inner learning rates, one tensor per adapted
    parameter, initialised to ``inner_lr``."""

    def __init__(self, module, inner_lr, names=None):
        super().__init__()
        params = dict(module.named_parameters())
        self.names = list(params) if names is None else list(names)
        self.rates = torch.nn.ParameterList(
            torch.nn.Parameter(torch.full_like(params[name].detach(), inner_lr))
            for name in self.names)

    def as_dict(self):
        return dict(zip(self.names, self.rates, strict=True))


class MAMLNet(SkmetaNet):
    """skorch core of the MAML family: meta-trains the module's initial
    weights (and Meta-SGD's rates) on meta-batches of tasks.

    Parameters beyond :class:`~skmeta._nets.SkmetaNet`'s: ``algorithm``,
    ``inner_lr``, ``inner_steps``, ``chunk_size`` ("auto" or tasks per chunk)
    and ``classification``.
    """

    backward_in_loss = True  # batch_loss accumulates the meta-gradient by chunk
    grad_at_eval = True

    def __init__(self, *args, algorithm="maml", inner_lr=0.1, inner_steps=1,
                 chunk_size="auto", classification=True, **kwargs):
        self.algorithm = algorithm
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.chunk_size = chunk_size
        self.classification = classification
        super().__init__(*args, **kwargs)

    def initialize_module(self):
        super().initialize_module()
        torch.func.replace_all_batch_norm_modules_(self.module_)
        self.adapted_ = adapted_names(self.module_, self.algorithm)
        if self.algorithm == "metasgd":
            self.inner_rates_ = InnerRates(self.module_, self.inner_lr)
        self._chunk_plans = {}  # work per task, by task shape: probed once
        self._functional = None
        return self

    def functional_learner(self):
        """The functional view of the module (and Meta-SGD's rates), built
        once: the optimiser updates their parameters in place."""
        if vars(self).get("_functional") is None:  # also in nets saved before it
            rates = (self.inner_rates_.as_dict() if self.algorithm == "metasgd"
                     else self.inner_lr)
            self._functional = FunctionalLearner(self.module_, rates, self.adapted_,
                                                 self.classification)
        return self._functional

    def collate(self, tasks):
        return MAMLBatch(group_tasks(tasks, self.classification,
                                     rows_independent(self.module_)))

    def batch_loss(self, batch, training):
        learner, n_tasks = self.functional_learner(), len(batch)
        loss, correct, n_rows = 0.0, 0, 0
        for group in batch.groups:
            group = group.to(self.device)
            for chunk in group.chunks(self.resolve_chunk_size(group, learner)):
                chunk_loss, outputs = self._chunk_loss(
                    learner, chunk, training, weight=len(chunk) / n_tasks)
                loss = loss + chunk_loss * len(chunk) / n_tasks
                if self.classification:
                    hits = (outputs.argmax(-1) == chunk.y_query).float()
                    mask = chunk.query_mask
                    correct += (hits if mask is None else hits * mask).sum().item()
                    n_rows += (hits.numel() if mask is None else mask.sum().item())
        return loss, correct / n_rows if self.classification else None

    def _chunk_loss(self, learner, chunk, training, weight):
        """Mean query loss of a chunk (detached) and its query outputs; in
        training, the chunk's share (``weight``) of the meta-gradient is
        accumulated in the parameters' ``.grad``."""
        if training and self.algorithm == "reptile":
            return self._reptile_chunk(learner, chunk, weight)
        second_order = training and self.algorithm != "fomaml"
        fast, before = learner.adapt(
            chunk.X_support, chunk.y_support, chunk.n_way, self.inner_steps,
            create_graph=second_order, track=training, initial_loss=True,
            mask=chunk.support_mask)
        support, outputs = learner.forward_both(fast, chunk.X_support, chunk.X_query)
        check_training(self, fast, (before, learner.losses(
            support.detach(), chunk.y_support, chunk.n_way, chunk.support_mask)))
        loss = learner.losses(outputs, chunk.y_query, chunk.n_way,
                              chunk.query_mask).mean()
        if training:
            (loss * weight).backward()
        return loss.detach(), _outputs(learner, outputs, chunk)

    def _reptile_chunk(self, learner, chunk, weight):
        """Reptile: adapt on each task's support and query rows, then move
        the initialisation towards the mean of the adapted weights (the
        meta-gradient is initialisation minus that mean)."""
        X = torch.cat([chunk.X_support, chunk.X_query], 1)
        y = torch.cat([chunk.y_support, chunk.y_query], 1)
        mask = _joined_masks(chunk)
        fast, before = learner.adapt(X, y, chunk.n_way, self.inner_steps,
                                     track=False, initial_loss=True, mask=mask)
        with torch.no_grad():
            support, outputs = learner.forward_both(fast, chunk.X_support,
                                                    chunk.X_query)
            after = learner.losses(torch.cat([support, outputs], 1), y,
                                   chunk.n_way, mask)
            check_training(self, fast, (before, after))
            loss = learner.losses(outputs, chunk.y_query, chunk.n_way,
                                  chunk.query_mask).mean()
        for name, param in learner.init.items():
            step = (param.detach() - fast[name].detach().mean(0)) * weight
            param.grad = step if param.grad is None else param.grad + step
        return loss, _outputs(learner, outputs, chunk)

    def resolve_chunk_size(self, group, learner):
        plans = self.__dict__.setdefault("_chunk_plans", {})
        return chunk_size(self.chunk_size, learner, group, self.inner_steps, plans)


def chunk_size(size, learner, group, steps, plans=None):
    """Tasks processed together: ``size``, or with "auto" as many as keep an
    estimate of their parameter copies and activations under a fixed budget
    (so memory does not grow with the meta-batch).

    ``plans``, a dict, caches the estimate per task shape (the module's
    activations are probed with a forward pass once per shape, not once per
    meta-batch)."""
    if size != "auto":
        return size
    key = (group.X_support.shape[1:], group.X_query.shape[1:], group.n_way, steps,
           len(learner.init))
    per_task = None if plans is None else plans.get(key)
    if per_task is None:
        n_adapted = sum(p.numel() for p in learner.init.values())
        # inner steps, then the support rows again (the guard) and the query rows
        rows = (steps + 1) * group.X_support.shape[1] + group.X_query.shape[1]
        per_task = (2 * (steps + 1) * n_adapted
                    + 2 * rows * _activations_per_row(learner.module, group))
        if plans is not None:
            plans[key] = per_task
    return max(1, min(len(group), _CHUNK_BUDGET // per_task))


def _activations_per_row(module, group):
    """Floats the module's layers output per input row, probed on two rows."""
    rows = torch.cat([group.X_support[0], group.X_query[0]])[:2]
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(
        out.numel() if isinstance(out, torch.Tensor) else 0))
        for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(rows)
    finally:
        for hook in hooks:
            hook.remove()
    return math.ceil(sum(sizes) / len(rows))


def _joined_masks(chunk):
    """The mask of a chunk's support rows followed by its query rows."""
    if chunk.support_mask is None and chunk.query_mask is None:
        return None
    return torch.cat([torch.ones(y.shape, device=y.device) if mask is None else mask
                      for mask, y in ((chunk.support_mask, chunk.y_support),
                                      (chunk.query_mask, chunk.y_query))], 1)


def _outputs(learner, outputs, chunk):
    outputs = outputs.detach()
    return learner.logits(outputs, chunk.n_way) if learner.classification else outputs
