"""
Quickstart: few-shot digits with a prototypical network
=======================================================

Meta-train :class:`~skmeta.ProtoNetClassifier` on 28 classes of rotated
digits, adapt to 5-way tasks over the 12 classes it never saw, and compare
with nearest centroid on raw pixels, a strong baseline on these images.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.metrics import mean_confidence_interval, task_scores
from skmeta.nn import ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler

SMALL = os.environ.get("CI") == "true"  # CI builds the docs on small settings

digits = load_digits_tasks()
train_pool = np.isin(digits.target, digits.train_classes)
test_pool = ~train_pool
train = EpisodeSampler(digits.data[train_pool], digits.target[train_pool],
                       n_way=10, k_shot=1, n_query=5,
                       n_tasks=100 if SMALL else 1000, random_state=0)
test = EpisodeSampler(digits.data[test_pool], digits.target[test_pool],
                      n_way=5, k_shot=1, n_query=15,
                      n_tasks=50 if SMALL else 300, random_state=1)

# %%
# Meta-train, then adapt to one new task: ``adapt`` returns an ordinary
# fitted scikit-learn classifier.
model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                           module__channels=(64, 64), max_epochs=2 if SMALL else 10,
                           meta_batch_size=4, random_state=0).fit(train)
task = test[0]
clf = model.adapt(task.X_support, task.y_support)
print("accuracy on this task's queries:", clf.score(task.X_query, task.y_query))

# %%
# Accuracy over many new tasks, beside the raw-pixel baseline.
results = {name: mean_confidence_interval(task_scores(estimator, test))
           for name, estimator in [("nearest centroid\n(raw pixels)",
                                    PrototypeClassifier()),
                                   ("ProtoNet\n(2 conv blocks)", model)]}
fig, ax = plt.subplots(figsize=(5.5, 4))
for name, (mean, half), color in zip(results, results.values(), ["grey", "C0"],
                                     strict=True):
    ax.errorbar([name], [100 * mean], yerr=[100 * half], fmt="o", color=color,
                capsize=8, elinewidth=2, markersize=8)
    ax.annotate(f"{100 * mean:.1f} ± {100 * half:.1f} %", (name, 100 * mean),
                xytext=(12, 0), textcoords="offset points", va="center",
                color=color)
ax.set_xlim(-0.6, 1.8)
ax.set_ylabel("5-way 1-shot accuracy (%)")
ax.set_title(f"{len(test)} new tasks over the {len(digits.test_classes)} unseen "
             "classes\n(mean, bars: 95 % interval; chance is 20 %)", fontsize=10)
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
