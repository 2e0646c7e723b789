"""The inner-loop guard: did adapting a task diverge?

Adaptation diverged when the fast weights or the support loss are not
finite, or when the support loss after the inner steps is more than
``_LOSS_GROWTH`` times, and more than ``_LOSS_MARGIN`` above, the loss before
them: an exploding inner loop may keep finite (if huge) weights that predict
nothing, so finiteness alone does not notice it. (Loose enough that an
untrained network's first, overshooting inner steps on real data are not
mistaken for divergence: 2.5 -> 25 happens there.)
"""

import math

import torch

_LOSS_GROWTH, _LOSS_MARGIN = 1e3, 10.0


def divergence(fast, before, after):
    """The first task of a chunk whose inner loop diverged, as (position,
    what happened), or None; from its fast weights and its support losses
    before and after the steps. Tasks whose loss is not finite before the
    steps are left to the loss guard (their meta-learned weights are to
    blame, not the inner loop)."""
    with torch.no_grad():
        # a finite sum has finite terms, and one sum is ten times cheaper than
        # isfinite on every weight; only a non-finite sum (a non-finite weight
        # or loss, or an overflow) is checked term by term
        weights = [w.detach().flatten(1) for w in fast.values()]
        sums = (torch.cat(weights, 1).sum(1) if len(after) == 1  # fewer calls
                else torch.stack([w.sum(1) for w in weights]).sum(0))  # no copy
        finite = (sums + after).isfinite()
        if not finite.all():
            finite = torch.stack([w.isfinite().all(1) for w in weights]).all(0)
            finite &= after.isfinite()
    for position, (ok, old, new) in enumerate(zip(
            finite.tolist(), before.tolist(), after.tolist(), strict=True)):
        if not math.isfinite(old):
            continue
        if not ok:
            return position, "non-finite weights or support loss"
        if new > _LOSS_GROWTH * old and new > old + _LOSS_MARGIN:
            return position, (f"the support loss rose from {old:.3g} before the "
                              f"steps to {new:.3g} after them")
    return None


def check_adaptation(fast, losses, steps, inner_lr, index=(0,)):
    """Raise FloatingPointError, naming the task and ``inner_lr``, if the
    inner loop diverged in any task: from the fast weights and the support
    losses (before, after) of each task (see :func:`divergence`)."""
    diverged = divergence(fast, *losses)
    if diverged:
        position, what = diverged
        raise FloatingPointError(
            f"Task {index[position]}: adaptation diverged ({what}) within {steps} "
            f"gradient steps with {_rate(inner_lr)}; use a smaller inner_lr, "
            "fewer test_inner_steps, or standardised features.")


def check_training(net, fast, losses):
    """Raise FloatingPointError, naming the epoch and batch of ``net``'s
    training, if the inner loop diverged in any task of a chunk."""
    diverged = divergence(fast, *losses)
    if diverged:
        epoch = len(net.history)
        step = len(net.history[-1, "batches"])  # this one included
        raise FloatingPointError(
            f"The inner loop diverged in epoch {epoch}, batch {step} "
            f"({diverged[1]} in a task after {net.inner_steps} gradient steps "
            f"with inner_lr={net.inner_lr}); training stopped and the learner "
            "is left as it was before fit. Use a smaller inner_lr, fewer "
            "inner_steps, or standardised features.")


def _rate(inner_lr):
    return ("the learned inner rates (Meta-SGD, started at inner_lr)"
            if isinstance(inner_lr, dict) else f"inner_lr={inner_lr}")
