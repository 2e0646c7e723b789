"""Linear plans: a chain of ``Linear`` layers and elementwise activations
(:class:`skmeta.nn.MLP`) run as plain tensor operations, with the gradient
of the inner loss written out.

The written-out gradient (the backward pass of linear layers, activations
and the loss as matrix products) needs no autograd pass of its own: a
single-task adaptation runs without the autograd engine, and in
meta-training the second-order meta-gradient is one ordinary backward pass
through these operations. It equals autograd's gradient (tested).
"""

import torch
from torch.nn import functional as F


def _relu_slope(out):
    return (out > 0).to(out.dtype)


def _tanh_slope(out):
    return 1 - out.square()


def _sigmoid_slope(out):
    return out * (1 - out)


# activation module -> (function, its derivative from its output)
_ELEMENTWISE = {torch.nn.ReLU: (F.relu, _relu_slope),
                torch.nn.Tanh: (torch.tanh, _tanh_slope),
                torch.nn.Sigmoid: (torch.sigmoid, _sigmoid_slope),
                torch.nn.Identity: None}


def linear_plan(module):
    """For a module that is exactly a chain of ``Linear`` layers and
    parameter-free elementwise activations (``skmeta.nn.MLP``, or a
    ``Sequential`` of them), its forward pass as a list of ``(activation,
    weight name, bias name)`` (activation None: a linear layer, else a pair
    (function, derivative)); None for any other module."""
    from ..nn import MLP
    if type(module) is MLP:
        children = [(f"body.{name}", child)
                    for name, child in module.body.named_children()]
        children.append(("head", module.head))
    elif type(module) is torch.nn.Sequential:
        children = list(module.named_children())
    else:
        return None
    plan = []
    for name, child in children:
        if type(child) is torch.nn.Linear:
            plan.append((None, f"{name}.weight",
                         None if child.bias is None else f"{name}.bias"))
        elif type(child) in _ELEMENTWISE and not list(child.parameters()):
            if _ELEMENTWISE[type(child)] is not None:
                plan.append((_ELEMENTWISE[type(child)], None, None))
        else:
            return None
    return plan


def run(plan, weights, rows):
    """The plan's outputs for ``rows`` under ``weights`` (a dict by name),
    and every intermediate result (the input first)."""
    results = [rows]
    for activation, weight, bias in plan:
        if activation is None:
            rows = F.linear(rows, weights[weight], weights.get(bias))
        else:
            rows = activation[0](rows)
        results.append(rows)
    return rows, results


def grad_and_value(plan, weights, adapted, rows, targets, n_way, mask=None):
    """Gradients of the mean loss (cross-entropy on the first ``n_way``
    outputs if ``n_way``, else squared error; weighted by ``mask`` when
    given) with respect to the ``adapted`` weights, and the loss.

    Returns ``(grads, loss)`` as ``torch.func.grad_and_value`` does.
    """
    outputs, results = run(plan, weights, rows)
    loss, delta = _loss_and_slope(outputs, targets, n_way, mask)
    lowest = min(i for i, (_, weight, bias) in enumerate(plan)
                 if weight in adapted or bias in adapted)
    grads = {}
    for i in range(len(plan) - 1, lowest - 1, -1):
        activation, weight, bias = plan[i]
        if activation is not None:
            delta = delta * activation[1](results[i + 1])
            continue
        if weight in adapted:
            grads[weight] = delta.T @ results[i]
        if bias in adapted:
            grads[bias] = delta.sum(0)
        if i > lowest:
            delta = delta @ weights[weight]
    return grads, loss


def _loss_and_slope(outputs, targets, n_way, mask):
    """The mean loss and its gradient with respect to the outputs."""
    share = 1 / len(targets) if mask is None else mask / mask.sum()
    if not n_way:
        errors = outputs.reshape(targets.shape) - targets
        loss = (errors.square() * share).sum()
        return loss, (2 * errors * share).reshape(outputs.shape)
    share = share if mask is None else share[:, None]
    log_p = F.log_softmax(class_logits(outputs, n_way), -1)
    one_hot = F.one_hot(targets, n_way).to(log_p.dtype)
    loss = -(log_p * one_hot * share).sum()
    slope = (log_p.exp() - one_hot) * share
    if outputs.shape[-1] > n_way:
        slope = F.pad(slope, (0, outputs.shape[-1] - n_way))
    return loss, slope


def class_logits(outputs, n_way):
    """The first ``n_way`` outputs, the logits of a task's classes."""
    if outputs.shape[-1] < n_way:
        raise ValueError(
            f"A task has {n_way} classes, but the module outputs "
            f"{outputs.shape[-1]} values per example; use a module with at "
            "least as many outputs as the largest task has classes.")
    return outputs if outputs.shape[-1] == n_way else outputs[..., :n_way]
