"""The soft-target distillation loss of Hinton et al. (2015)."""

import torch
from torch.nn import functional as F


def soft_target_loss(student_logits, target, teacher_logits=None, *,
                     temperature=4.0, alpha=0.5):
    """Hinton et al.'s distillation loss.

    ``alpha * CE(student, y) + (1 - alpha) * T**2 * KL(softmax(teacher / T)
    || softmax(student / T))``, the KL divergence averaged over rows. The
    ``T**2`` factor keeps the soft-target gradients on the scale of the
    hard-label ones as ``T`` changes. Logits of ``-inf`` (classes outside a
    row's task) get zero probability and add nothing.

    Parameters
    ----------
    student_logits : torch.Tensor of shape (n, n_classes)
    target : torch.Tensor of shape (n,)
        Class indices.
    teacher_logits : torch.Tensor of shape (n, n_classes) or None
        The teacher's logits (or log-probabilities); not needed when
        ``alpha=1``.
    temperature : float, default=4.0
    alpha : float, default=0.5
        Weight of the hard-label cross-entropy.

    Returns
    -------
    loss : torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> from skmeta.distill import soft_target_loss
    >>> logits = torch.tensor([[2.0, 0.0]])
    >>> loss = soft_target_loss(logits, torch.tensor([0]), logits)
    >>> round(loss.item(), 4)  # the KL term is 0: half the cross-entropy
    0.0635
    """
    loss = F.cross_entropy(student_logits, target)
    if alpha == 1:
        return loss
    if teacher_logits is None:
        raise ValueError("The soft-target loss needs the teacher's logits "
                         f"when alpha < 1 (got alpha={alpha}).")
    kl = _kl_divergence(teacher_logits / temperature, student_logits / temperature)
    return alpha * loss + (1 - alpha) * temperature**2 * kl


def _kl_divergence(teacher_logits, student_logits):
    """Mean over rows of KL(softmax(teacher) || softmax(student))."""
    teacher_proba = F.softmax(teacher_logits, dim=1)
    terms = teacher_proba * (F.log_softmax(teacher_logits, dim=1)
                             - F.log_softmax(student_logits, dim=1))
    return torch.where(teacher_proba > 0, terms, 0.0).sum(1).mean()


class SoftTargetLoss(torch.nn.Module):
    """:func:`soft_target_loss` as a criterion module for skorch.

    Called as ``criterion(logits, target)`` (hard labels only) or
    ``criterion(logits, target, teacher_logits)``.
    """

    def __init__(self, temperature=4.0, alpha=0.5):
        super().__init__()
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_logits, target, teacher_logits=None):
        return soft_target_loss(student_logits, target, teacher_logits,
                                temperature=self.temperature, alpha=self.alpha)
