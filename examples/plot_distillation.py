"""
Distillation: a small student against its large teacher
=======================================================

:class:`~skmeta.MetaDistiller` trains a wide Conv-4 teacher on all training
classes of rotated digits, then a narrow Conv-4 student on the teacher's
soft targets. Both adapt to new 5-way 1-shot tasks with a logistic-regression
head on their embeddings; the plot compares accuracy, size and the time to
adapt and predict one task.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np

from skmeta import MetaDistiller
from skmeta.datasets import load_digits_tasks
from skmeta.metrics import mean_confidence_interval
from skmeta.nn import ConvNet
from skmeta.tasks import EpisodeSampler

SMALL = os.environ.get("CI") == "true"
digits = load_digits_tasks()
train_pool = np.isin(digits.target, digits.train_classes)
train = EpisodeSampler(digits.data[train_pool], digits.target[train_pool],
                       n_way=5, k_shot=5, n_query=5, n_tasks=100 if SMALL else 200,
                       random_state=0)
test = EpisodeSampler(digits.data[~train_pool], digits.target[~train_pool],
                      n_way=5, k_shot=1, n_query=15, n_tasks=50 if SMALL else 300,
                      random_state=1)

model = MetaDistiller(ConvNet, ConvNet, teacher__input_shape=(1, 8, 8),
                      teacher__channels=(64,) * 4, student__input_shape=(1, 8, 8),
                      student__channels=(16,) * 4, max_epochs=2 if SMALL else 10,
                      random_state=0).fit(train)


def evaluate(learner):
    """Accuracies on the test tasks and mean seconds to adapt and predict."""
    scores, start = [], time.perf_counter()
    for task in test:
        clf = learner.adapt(task.X_support, task.y_support)
        scores.append(clf.score(task.X_query, task.y_query))
    return mean_confidence_interval(scores), (time.perf_counter() - start) / len(test)


results = {"teacher": (model.teacher_n_params_, *evaluate(model.teacher_)),
           "student": (model.student_n_params_, *evaluate(model))}
for name, (n_params, (mean, half), seconds) in results.items():
    print(f"{name}: {n_params:,} parameters, accuracy {100 * mean:.1f} ± "
          f"{100 * half:.1f} %, {1000 * seconds:.1f} ms per task")

# %%
# Size, accuracy (with its 95 % interval) and time per new task, side by side.
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
names = list(results)
colors = ["C1", "C0"]
panels = [
    ("size", "parameters", [r[0] for r in results.values()], None),
    ("accuracy", "5-way 1-shot accuracy on\nunseen classes (%)",
     [100 * r[1][0] for r in results.values()],
     [100 * r[1][1] for r in results.values()]),
    ("speed", "adapt + predict one task (ms)",
     [1000 * r[2] for r in results.values()], None)]
for ax, (title, label, values, errors) in zip(axes, panels, strict=True):
    if errors is None:
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, [f"{v:,.0f}" if title == "size" else f"{v:.1f} ms"
                            for v in values], fontsize=8)
        ax.margins(y=0.12)
    else:  # points on a zoomed axis, so the intervals show
        for name, value, error, color in zip(names, values, errors, colors,
                                             strict=True):
            ax.errorbar([name], [value], yerr=[error], fmt="o", color=color,
                        capsize=8, elinewidth=2, markersize=8)
            ax.annotate(f"{value:.1f} ± {error:.1f}", (name, value),
                        xytext=(12, 0), textcoords="offset points", va="center",
                        fontsize=8, color=color)
        ax.set_xlim(-0.6, 1.9)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(label)
axes[0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
axes[1].set_title("accuracy (95 % intervals; chance 20 %)", fontsize=10)
fig.suptitle(f"Teacher (Conv-4, 64 channels) vs distilled student (Conv-4, 16 "
             f"channels), {len(test)} new tasks", fontsize=10)
fig.tight_layout()
