"""Prototypes: a meta-batch of classification tasks stacked for an
embedding network, and each task's query logits against its class means.

Shared by the learners that train an embedding episodically (prototypical
networks, and a distilled student under an episodic teacher).
"""

from dataclasses import dataclass, fields

import numpy as np
import torch

from .tasks import encode_labels


@dataclass
class PrototypeBatch:
    """Validated classification tasks stacked: support rows of all tasks,
    then query rows, with labels as indices into each task's sorted classes.

    ``support_sizes``, ``query_sizes`` and ``n_classes`` hold each task's
    counts, so the rows split back into tasks.
    """

    X_support: torch.Tensor
    y_support: torch.Tensor
    X_query: torch.Tensor
    y_query: torch.Tensor
    support_sizes: list
    query_sizes: list
    n_classes: list

    def __len__(self):
        return len(self.n_classes)

    @classmethod
    def collate(cls, tasks):
        """Stack tasks that may differ in their numbers of classes and
        examples."""
        encoded = [encode_labels(task) for task in tasks]
        return cls(
            torch.as_tensor(np.concatenate([t.X_support for t in tasks])),
            torch.as_tensor(np.concatenate([e[1] for e in encoded])),
            torch.as_tensor(np.concatenate([t.X_query for t in tasks])),
            torch.as_tensor(np.concatenate([e[2] for e in encoded])),
            [len(t.X_support) for t in tasks], [len(t.X_query) for t in tasks],
            [len(e[0]) for e in encoded])

    def to(self, device):
        return PrototypeBatch(*(
            value.to(device) if isinstance(value, torch.Tensor) else value
            for value in (getattr(self, f.name) for f in fields(self))))

    def query_labels(self):
        """Each task's query labels, as a list of tensors."""
        return list(self.y_query.split(self.query_sizes))


def prototype_logits(embed, batch):
    """Each task's query logits: negative squared Euclidean distances from
    its query embeddings to its class prototypes (mean support embeddings).

    Distances are computed task by task, so memory grows with the largest
    task, not with the meta-batch.

    Parameters
    ----------
    embed : callable
        Maps a float tensor of rows to embeddings.
    batch : PrototypeBatch
        On the embedding's device.

    Returns
    -------
    list of torch.Tensor
        One ``(n_query, n_classes)`` tensor per task.
    """
    embedded = embed(torch.cat([batch.X_support, batch.X_query]))
    support, query = embedded.split([len(batch.X_support), len(batch.X_query)])
    return [_negative_distances(q, _prototypes(s, y, k)) for s, y, q, k in zip(
        support.split(batch.support_sizes), batch.y_support.split(batch.support_sizes),
        query.split(batch.query_sizes), batch.n_classes, strict=True)]


def _prototypes(embedded, labels, n_classes):
    sums = torch.zeros(n_classes, embedded.shape[1], device=embedded.device,
                       dtype=embedded.dtype).index_add_(0, labels, embedded)
    return sums / torch.bincount(labels, minlength=n_classes)[:, None]


def _negative_distances(query, prototypes):
    distances = (query.square().sum(1, keepdim=True) - 2 * query @ prototypes.T
                 + prototypes.square().sum(1))
    return -distances.clamp_min(0)


def mean_over_rows(losses, sizes):
    """The mean over all rows of per-task mean losses, each weighted by its
    number of rows."""
    return sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / sum(
        sizes)
