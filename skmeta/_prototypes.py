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
    """Each task's query logits against its class prototypes, one
    ``(n_query, n_classes)`` tensor per task: :func:`query_logits` (same
    parameters) split by task."""
    logits = query_logits(embed, batch, distance)
    return [z[:, :k] for z, k in zip(logits.split(batch.query_sizes),
                                      batch.n_classes, strict=True)]


def query_logits(embed, batch, distance="sqeuclidean"):
    """The query logits of a whole meta-batch, in one tensor: row ``i`` is
    ``batch.y_query[i]``'s query row against its own task's prototypes (mean
    support embeddings; see :func:`logits_from_prototypes`).

    All tasks are computed at once, as a stack padded to the largest task
    (no per-task Python loop, no distances between tasks): memory is the
    meta-batch size times the largest task's query-by-classes matrix.
    Columns past a task's classes are ``-inf``: a softmax gives them 0, so
    the mean cross-entropy over the rows is the mean over tasks of each
    task's mean cross-entropy, weighted by its number of query rows.

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
    torch.Tensor of shape (n_query_rows, max(batch.n_classes))
    """
    embedded = embed(torch.cat([batch.X_support, batch.X_query]))
    support, query = embedded.split([len(batch.X_support), len(batch.X_query)])
    n_tasks, width = len(batch), max(batch.n_classes)
    device = embedded.device
    # support row -> its class's slot in a (n_tasks * width) stack of prototypes
    slots = batch.y_support
    if n_tasks > 1:
        slots = slots + torch.arange(0, n_tasks * width, width, device=device
                                     ).repeat_interleave(torch.as_tensor(
                                         batch.support_sizes, device=device))
    sums = support.new_zeros(n_tasks * width, support.shape[1]).index_add_(
        0, slots, support)
    counts = torch.bincount(slots, minlength=n_tasks * width).clamp_min(1)
    prototypes = (sums / counts[:, None]).view(n_tasks, width, -1)
    uniform = len(set(batch.query_sizes)) == 1
    stacked = (query.view(n_tasks, batch.query_sizes[0], -1) if uniform else
               torch.nn.utils.rnn.pad_sequence(query.split(batch.query_sizes),
                                               batch_first=True))
    logits = logits_from_prototypes(stacked, prototypes, distance)
    if len(set(batch.n_classes)) > 1:
        padding = (torch.arange(width, device=device)
                   >= torch.as_tensor(batch.n_classes, device=device)[:, None])
        logits = logits.masked_fill(padding[:, None, :], -torch.inf)
    logits = logits.reshape(-1, width)
    if not uniform:  # the real rows of the padded stack
        rows = torch.cat([torch.arange(size, device=device) + t * stacked.shape[1]
                          for t, size in enumerate(batch.query_sizes)])
        logits = logits[rows]
    return logits


def logits_from_prototypes(query, prototypes, distance="sqeuclidean"):
    """Logits of query rows against prototypes.

    Parameters
    ----------
    query : torch.Tensor of shape (..., n_query, n_embedding)
    prototypes : torch.Tensor of shape (..., n_classes, n_embedding)
        Leading dimensions, if any, stack tasks: each task's query rows
        against its own prototypes.
    distance : {"sqeuclidean", "euclidean", "cosine"}, default="sqeuclidean"
        "sqeuclidean": negative squared Euclidean distances (Snell et al.
        2017); "euclidean": negative Euclidean distances (as easyfsl's
        ``PrototypicalNetworks``); "cosine": cosine similarities times
        ``COSINE_SCALE`` (10).

    Returns
    -------
    torch.Tensor of shape (..., n_query, n_classes)

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
        return COSINE_SCALE * (torch.nn.functional.normalize(query, dim=-1)
                               @ torch.nn.functional.normalize(prototypes, dim=-1).mT)
    squared = (query.square().sum(-1, keepdim=True) - 2 * query @ prototypes.mT
               + prototypes.square().sum(-1)[..., None, :]).clamp_min(0)
    if distance == "sqeuclidean":
        return -squared
    # the square root's gradient is infinite at 0: keep it off 0
    return -squared.clamp_min(1e-12).sqrt()


def mean_over_rows(losses, sizes):
    """The mean over all rows of per-task mean losses, each weighted by its
    number of rows."""
    return sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / sum(
        sizes)
