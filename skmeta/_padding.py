"""Tasks of different sizes side by side: arrays stacked zero-padded to the
longest, with a mask of their real rows, and means over the real rows only.
Shared by the learners that batch ragged tasks (MAML, MetaBayesianRidge)."""

import numpy as np
import torch


def padded(arrays, dtype):
    """``arrays`` stacked along a new first axis as a tensor of ``dtype``,
    zero-padded to the longest; and the float mask (arrays, rows) of their
    real rows, or None when none is padded."""
    length = max(len(array) for array in arrays)
    if all(len(array) == length for array in arrays):
        return torch.as_tensor(np.stack(arrays)).to(dtype), None
    first = np.asarray(arrays[0])
    stacked = np.zeros((len(arrays), length, *first.shape[1:]), first.dtype)
    mask = np.zeros((len(arrays), length), np.float32)
    for i, array in enumerate(arrays):
        stacked[i, :len(array)], mask[i, :len(array)] = array, 1.0
    return torch.as_tensor(stacked).to(dtype), torch.as_tensor(mask)


def masked_mean(values, mask=None):
    """Mean over the last (row) axis, of the rows ``mask`` (bool or 0/1)
    marks when given; 0 for a task without such rows."""
    if mask is None:
        return values.mean(-1)
    weight = mask.to(values.dtype)
    return (values * weight).sum(-1) / weight.sum(-1).clamp_min(1)
