"""How the distiller trains its student, one class per kind of teacher.

Each strategy gives the :class:`~skmeta._nets.NetSpec` of the student, the
batch size it trains with, whether the student's ``head`` is removed to
give the embedding, and the fitted attributes it adds.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .._nets import NetSpec, SkmetaNet, TaskDataset
from .._pooled import check_embedding, pooled_spec
from .._prototypes import PrototypeBatch, mean_over_rows, prototype_logits
from ..nn import MLP
from ..tasks import pool_tasks
from ._loss import SoftTargetLoss

DEFAULT_STUDENT = {"hidden_sizes": (64, 64)}


class _Student:
    def __init__(self, distiller, teacher):
        self.distiller, self.teacher = distiller, teacher

    def _module(self):
        """The student's module and its (unprefixed) constructor arguments."""
        routed = self.distiller._routed_params("student__", strip=True)
        if self.distiller.student is None:
            return MLP, {**DEFAULT_STUDENT, **routed}
        return self.distiller.student, routed

    def _loss_params(self):
        return {"temperature": self.distiller.temperature,
                "alpha": self.distiller.alpha}


class PooledStudent(_Student):
    """Under a pooled teacher: the student classifies the pooled classes and
    learns from the teacher's logits on the pooled examples."""

    kind = "pooled"
    remove_head = True

    @property
    def batch_size(self):
        return self.distiller.batch_size

    def spec(self, tasks):
        X, labels = pool_tasks(tasks)
        classes = self.teacher.classes_
        module, routed = self._module()
        return pooled_spec(module, routed, X, _encode(labels, classes), len(classes),
                           "student module",
                           teacher_logits=self.teacher.pooled_logits(X).astype(
                               np.float32),
                           criterion=SoftTargetLoss,
                           criterion_params=self._loss_params())

    def fitted_state(self):
        return {"classes_": self.teacher.classes_}


class EpisodicStudent(_Student):
    """Under an episodic teacher: the student is meta-trained as a
    prototypical network on the teacher's query probabilities."""

    kind = "episodic"
    remove_head = False

    @property
    def batch_size(self):
        return self.distiller.meta_batch_size

    def spec(self, tasks):
        module, routed = self._module()
        items = [(task, self._teacher_proba(task)) for task in tasks]
        return NetSpec(
            SoftTargetProtoNet, module, TaskDataset(items),
            data_kwargs={"in_features": tasks[0].X_support.shape[1]},
            routed=routed,
            params={"criterion": SoftTargetLoss, **{
                f"criterion__{k}": v for k, v in self._loss_params().items()}},
            check=lambda m: check_embedding(m, tasks[0].X_support, "student module"))

    def fitted_state(self):
        return {}

    def _teacher_proba(self, task):
        """The teacher's query probabilities after adapting on the support
        set, columns in sorted class order."""
        adapted = self.teacher.adapt(task.X_support, task.y_support)
        column = {label: j for j, label in enumerate(adapted.classes_)}
        return adapted.predict_proba(task.X_query)[
            :, [column[label] for label in np.unique(task.y_support)]]


@dataclass
class SoftTargetBatch:
    """Tasks with the teacher's query log-probabilities, one tensor per task
    (columns in each task's sorted class order)."""

    tasks: PrototypeBatch
    teacher_logits: list

    def __len__(self):
        return len(self.tasks)


class SoftTargetProtoNet(SkmetaNet):
    """Episodic student core: prototypical logits on each task's query rows,
    trained with the soft-target loss against the teacher's query
    probabilities. Items are ``(task, teacher_proba)`` pairs."""

    def collate(self, items):
        tasks, probas = zip(*items, strict=True)
        with np.errstate(divide="ignore"):
            teacher = [torch.as_tensor(np.log(p), dtype=torch.float32) for p in probas]
        return SoftTargetBatch(PrototypeBatch.collate(list(tasks)), teacher)

    def batch_loss(self, batch, training):
        tasks, teacher = batch.tasks.to(self.device), batch.teacher_logits
        logits = prototype_logits(self.infer, tasks)
        labels = tasks.query_labels()
        losses = [self.criterion_(z, y, t.to(self.device))
                  for z, y, t in zip(logits, labels, teacher, strict=True)]
        correct = sum(int((z.argmax(1) == y).sum())
                      for z, y in zip(logits, labels, strict=True))
        return (mean_over_rows(losses, tasks.query_sizes),
                correct / sum(tasks.query_sizes))


def _encode(labels, classes):
    """Indices of ``labels`` in the pooled teacher's sorted ``classes``."""
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    unknown = classes[index] != labels
    if unknown.any():
        raise ValueError(
            f"Label {labels[unknown].tolist()[0]!r} of the training tasks is "
            "not among the pooled teacher's classes; refit the teacher on these "
            "tasks (refit_teacher=True).")
    return index
