"""Pooled training: a network classifying examples (not tasks) over a fixed
label set, optionally against a teacher's logits.

Shared by the learners whose torch part trains on pooled examples: the
pooled-class embedding learner, the distiller's pooled student and fusion's
torch MLP.
"""

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset

from ._nets import NetSpec, SkmetaNet, frozen_copy


class PooledDataset(Dataset):
    """Examples with their class index, and the teacher's logits if given."""

    def __init__(self, X, y, teacher_logits=None):
        self.X, self.y, self.teacher_logits = X, y, teacher_logits

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        if self.teacher_logits is None:
            return self.X[i], self.y[i]
        return self.X[i], self.y[i], self.teacher_logits[i]


@dataclass
class PooledBatch:
    """Rows of a :class:`PooledDataset`: features, class indices and the
    teacher's logits (None without a teacher)."""

    X: torch.Tensor
    y: torch.Tensor
    teacher_logits: torch.Tensor | None

    def __len__(self):
        return len(self.X)


class PooledNet(SkmetaNet):
    """skorch net classifying pooled examples; the criterion gets the
    teacher's logits as a third argument when the dataset has them (e.g.
    :class:`skmeta.distill.SoftTargetLoss`)."""

    def collate(self, items):
        columns = [torch.as_tensor(np.stack(column))
                   for column in zip(*items, strict=True)]
        return PooledBatch(*columns, *[None] * (3 - len(columns)))

    def batch_loss(self, batch, training):
        logits = self.infer(batch.X.to(self.device))
        y = batch.y.to(self.device)
        extra = () if batch.teacher_logits is None else (
            batch.teacher_logits.to(self.device),)
        loss = self.criterion_(logits, y, *extra)
        return loss, (logits.argmax(1) == y).float().mean()


def predict_rows(module, X, batch_size=1024):
    """A module's outputs for rows ``X`` (numpy), in eval mode, without
    gradients, batch by batch into one preallocated float64 array (so memory
    stays that of the output plus one batch's activations)."""
    device = next(module.parameters(), torch.empty(0)).device
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = None
            for start in range(0, len(X), batch_size):
                rows = module(torch.as_tensor(X[start:start + batch_size],
                                              device=device)).double().cpu()
                if out is None:
                    out = np.empty((len(X), *rows.shape[1:]))
                out[start:start + len(rows)] = rows.numpy()
            return out if out is not None else np.empty((0, 0))
    finally:
        module.train(training)


def check_pooled_module(module, X, n_classes, role):
    """The module must have a ``head`` and give one logit per pooled class."""
    if not isinstance(getattr(module, "head", None), torch.nn.Module):
        raise ValueError(
            f"The {role} ({type(module).__name__}) has no `head` submodule; "
            "pooled training needs a network whose `head` is its classifier "
            "over the pooled classes, removed to give the embedding (as in "
            "skmeta.nn.MLP and ConvNet).")
    shape = predict_rows(module, X[:2]).shape
    if shape != (len(X[:2]), n_classes):
        raise ValueError(
            f"The {role} ({type(module).__name__}) gives outputs of shape "
            f"{shape} for {len(X[:2])} examples, but the pooled classifier needs "
            f"one logit per pooled class, ({len(X[:2])}, {n_classes}): give a "
            "module class that takes `out_features` (set from the data), or "
            f"build the instance with out_features={n_classes}.")


def check_embedding(embedding, X, role):
    """The embedding must map rows to 2-D (n, n_embedding) arrays."""
    shape = predict_rows(embedding, X[:2]).shape
    if len(shape) != 2:
        raise ValueError(
            f"The {role}'s embedding gives outputs of shape {shape} for 2 "
            "examples; the head fitted by adapt needs 2-D embeddings (n, "
            "n_embedding). Flatten them in the module (e.g. end the body with "
            "torch.nn.Flatten()).")


def without_head(module):
    """The module with its pooled-class ``head`` replaced by the identity
    (the module itself is changed and returned)."""
    module.head = torch.nn.Identity()
    return module


def pooled_spec(module, routed, X, y, n_classes, role, *, teacher_logits=None,
                criterion=torch.nn.CrossEntropyLoss, criterion_params=None):
    """The :class:`~skmeta._nets.NetSpec` of a network classifying ``n_classes``
    pooled classes (a ``head`` over a body that is the embedding)."""
    return NetSpec(
        PooledNet, module, PooledDataset(X, y, teacher_logits),
        data_kwargs={"in_features": X.shape[1], "out_features": n_classes},
        routed=routed, params={"criterion": criterion, **{
            f"criterion__{k}": v for k, v in (criterion_params or {}).items()}},
        check=partial(_check_module, X=X, n_classes=n_classes, role=role))


def _check_module(module, X, n_classes, role):
    check_pooled_module(module, X, n_classes, role)
    check_embedding(without_head(frozen_copy(module)), X, role)
