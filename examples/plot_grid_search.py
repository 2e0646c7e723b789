"""
Grid search over tasks
======================

Tasks are the samples of a meta-learner, so ``GridSearchCV``
splits a task collection into meta-training and meta-validation folds
without any change. Here it tunes the width of a prototypical network's
embedding and its meta-learning rate.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.tasks import EpisodeSampler

SMALL = os.environ.get("CI") == "true"

digits = load_digits_tasks()
pool = np.isin(digits.target, digits.train_classes)
tasks = EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5, k_shot=1,
                       n_query=5, n_tasks=90 if SMALL else 600, random_state=0)

grid = {"module__hidden_sizes": [(16,), (64,), (128, 128)],
        "meta_lr": [3e-4, 1e-3, 3e-3]}
search = GridSearchCV(ProtoNetClassifier(max_epochs=1 if SMALL else 3,
                                         random_state=0), grid, cv=3)
search.fit(tasks)
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

# %%
# Mean meta-validation accuracy over the grid.
scores = search.cv_results_["mean_test_score"].reshape(3, 3)
fig, ax = plt.subplots(figsize=(5, 3.5))
image = ax.imshow(100 * scores, cmap="viridis")
ax.set_xticks(range(3), [str(lr) for lr in grid["meta_lr"]])
ax.set_yticks(range(3), [str(h) for h in grid["module__hidden_sizes"]])
ax.set_xlabel("meta_lr")
ax.set_ylabel("hidden sizes")
for (i, j), value in np.ndenumerate(scores):
    ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color="w")
fig.colorbar(image, label="meta-validation accuracy (%)")
fig.tight_layout()
