"""
Grid search over tasks
======================

Tasks are the samples of a meta-learner, so ``GridSearchCV``
splits a task collection into meta-training and meta-validation folds
without any change. Here it tunes the width of a prototypical network's
embedding and its meta-learning rate, on a small budget (120 tasks, one
epoch per fit: seconds on a laptop CPU). The grid is chosen so that the best
cell lies inside it, not at its edge: a best value at the edge of a grid
means the grid should be extended.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.tasks import EpisodeSampler

digits = load_digits_tasks()
pool = np.isin(digits.target, digits.train_classes)
tasks = EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5, k_shot=1,
                       n_query=5, n_tasks=120, random_state=0)

widths = [(32,), (256,), (2048,)]
rates = [1e-3, 1e-2, 1e-1]
grid = {"module__hidden_sizes": widths, "meta_lr": rates}
search = GridSearchCV(ProtoNetClassifier(max_epochs=1, random_state=0), grid, cv=3)
search.fit(tasks)
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

# %%
# Mean meta-validation accuracy over the grid (rows: embedding width,
# columns: meta-learning rate), with its spread over the 3 folds.
results = search.cv_results_
mean, std = np.zeros((3, 3)), np.zeros((3, 3))
for params, m, s in zip(results["params"], results["mean_test_score"],
                        results["std_test_score"], strict=True):
    i, j = widths.index(params["module__hidden_sizes"]), rates.index(params["meta_lr"])
    mean[i, j], std[i, j] = 100 * m, 100 * s
best = np.unravel_index(mean.argmax(), mean.shape)
fig, ax = plt.subplots(figsize=(6.5, 4.5))
image = ax.imshow(mean, cmap="viridis")
ax.set_xticks(range(3), [f"{lr:g}" for lr in rates])
ax.set_yticks(range(3), [f"{w[0]} units" for w in widths])
ax.set_xlabel("meta-learning rate (meta_lr, Adam step size)")
ax.set_ylabel("embedding width\n(module__hidden_sizes)")
for (i, j), value in np.ndenumerate(mean):
    ax.text(j, i, f"{value:.1f}\n± {std[i, j]:.1f}", ha="center", va="center",
            color="k" if value > mean.min() + 0.7 * np.ptp(mean) else "w",
            fontweight="bold" if (i, j) == best else "normal")
ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False,
                           edgecolor="r", linewidth=2))
ax.set_title("5-way 1-shot meta-validation accuracy (%), 3-fold CV over tasks\n"
             "(mean ± std over folds; red: best cell)", fontsize=10)
fig.colorbar(image, label="mean meta-validation accuracy (%)")
fig.tight_layout()
