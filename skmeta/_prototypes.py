"""Prototypes: a meta-batch of classification tasks stacked for an
embedding network, and each task's query logits against its class means.

Shared by the learners that train an embedding episodically (prototypical
networks, and a distilled student under an episodic teacher).
"""

from dataclasses import dataclass, fields

import numpy as np
import torch

from .tasks import encode_labels

#: The prototype distances, as ``distance=`` spells them.
DISTANCES = ("sqeuclidean", "euclidean", "cosine")

# Cosine similarities lie in [-1, 1]: scaled, they are logits a softmax can
# make confident (as in Chen et al. 2019's cosine classifier).
COSINE_SCALE = 10.0


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


def prototype_logits(embed, batch, distance="sqeuclidean"):
    """Each task's query logits against its class prototypes (mean support
    embeddings): see :func:`logits_from_prototypes`.

    Distances are computed task by task, so memory grows with the largest
    task, not with the meta-batch.

    Parameters
    ----------
    embed : callable
        Maps a float tensor of rows to embeddings.
    batch : PrototypeBatch
        On the embedding's device.
    distance : {"sqeuclidean", "euclidean", "cosine"}, default="sqeuclidean"
        See :func:`logits_from_prototypes`.

    Returns
    -------
    list of torch.Tensor
        One ``(n_query, n_classes)`` tensor per task.
    """
    embedded = embed(torch.cat([batch.X_support, batch.X_query]))
    support, query = embedded.split([len(batch.X_support), len(batch.X_query)])
    return [logits_from_prototypes(q, _prototypes(s, y, k), distance)
            for s, y, q, k in zip(
        support.split(batch.support_sizes), batch.y_support.split(batch.support_sizes),
        query.split(batch.query_sizes), batch.n_classes, strict=True)]


def _prototypes(embedded, labels, n_classes):
    sums = torch.zeros(n_classes, embedded.shape[1], device=embedded.device,
                       dtype=embedded.dtype).index_add_(0, labels, embedded)
    return sums / torch.bincount(labels, minlength=n_classes)[:, None]


def logits_from_prototypes(query, prototypes, distance="sqeuclidean"):
    """Logits of query rows against prototypes.

    Parameters
    ----------
    query : torch.Tensor of shape (n_query, n_embedding)
    prototypes : torch.Tensor of shape (n_classes, n_embedding)
    distance : {"sqeuclidean", "euclidean", "cosine"}, default="sqeuclidean"
        "sqeuclidean": negative squared Euclidean distances (Snell et al.
        2017); "euclidean": negative Euclidean distances (as easyfsl's
        ``PrototypicalNetworks``); "cosine": cosine similarities times
        ``COSINE_SCALE`` (10).

    Returns
    -------
    torch.Tensor of shape (n_query, n_classes)

    Examples
    --------
    >>> import torch
    >>> from skmeta._prototypes import logits_from_prototypes
    >>> query, prototypes = torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)
    >>> logits_from_prototypes(query, prototypes, "euclidean").tolist()
    [[-5.0]]
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}.")
    if distance == "cosine":
        return COSINE_SCALE * (torch.nn.functional.normalize(query, dim=1)
                               @ torch.nn.functional.normalize(prototypes, dim=1).T)
    squared = (query.square().sum(1, keepdim=True) - 2 * query @ prototypes.T
               + prototypes.square().sum(1)).clamp_min(0)
    if distance == "sqeuclidean":
        return -squared
    # the square root's gradient is infinite at 0: keep it off 0
    return -squared.clamp_min(1e-12).sqrt()


def mean_over_rows(losses, sizes):
    """The mean over all rows of per-task mean losses, each weighted by its
    number of rows."""
    return sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / sum(
        sizes)
