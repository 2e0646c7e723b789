"""
Model fusion: which training sites does a new site resemble?
============================================================

Each "site" sees the digits through its own wiring: one of four fixed
permutations of the 64 pixels, with per-pixel gains and offsets. Training
sites teach one local model each, plus a global model on everything.
:class:`~skmeta.MetaFusionClassifier` with ``fusion="weighted"`` learns, from
a new site's 5 labelled examples per class, non-negative weights over those
models. The heatmap shows the weights: new sites put their weight on the
training sites wired like them.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from skmeta import MetaFusionClassifier, Task

rng = np.random.default_rng(0)
X, y = load_digits(return_X_y=True)
X = X / 16
order = rng.permutation(len(y))
train_pool, test_pool = order[:1200], order[1200:]
wirings = [(np.eye(64)[rng.permutation(64)] * (1 + 0.3 * rng.normal(size=64)),
            0.5 * rng.normal(size=64)) for _ in range(4)]


def site(rows, wiring):
    matrix, offset = wirings[wiring]
    return X[rows] @ matrix + offset + 0.05 * rng.normal(size=64)


train_wiring = np.arange(12) % 4
train = [(site(rows, w), y[rows]) for w, rows in zip(
    train_wiring, (rng.choice(train_pool, 150, replace=False) for _ in range(12)),
    strict=True)]
test_wiring = np.arange(8) % 4
test = []
for w in test_wiring:
    support = np.concatenate([rng.choice(test_pool[y[test_pool] == c], 5,
                                         replace=False) for c in range(10)])
    query = rng.choice(np.setdiff1d(test_pool, support), 100, replace=False)
    test.append(Task(site(support, w), y[support], site(query, w), y[query]))

model = MetaFusionClassifier(LogisticRegression(max_iter=1000), fusion="weighted",
                             random_state=0).fit(train)
adapted = [model.adapt(t.X_support, t.y_support) for t in test]
print(f"weighted fusion accuracy on new sites: {model.score(test):.3f}")

# %%
# The weights: one row per new site, one column per model (the global model,
# then the local model of each training site), both grouped by wiring. Each
# row sums to 1.
weights = np.array([clf.weights_ for clf in adapted])
columns = np.concatenate([[0], 1 + np.argsort(train_wiring, kind="stable")])
rows = np.argsort(test_wiring, kind="stable")
letters = "ABCD"
fig, ax = plt.subplots(figsize=(10, 5.2))
image = ax.imshow(weights[rows][:, columns], cmap="magma", vmin=0)
ax.set_xticks(range(13), ["global"] + [f"site {i + 1}" for i in columns[1:] - 1],
              fontsize=8)
ax.set_yticks(range(8), [f"new site {i + 1} (wiring {letters[test_wiring[i]]})"
                         for i in rows], fontsize=9)
for group in range(4):  # wiring groups: separators and a label under each
    ax.axvline(0.5 + 3 * group, color="w", linewidth=1.5)
    ax.axhline(1.5 + 2 * group, color="w", linewidth=1.5)
    ax.text(2 + 3 * group, 1.01, f"training sites, wiring {letters[group]}",
            transform=ax.get_xaxis_transform(), ha="center", va="bottom",
            fontsize=8)
ax.text(0, 1.01, "pooled", transform=ax.get_xaxis_transform(), ha="center",
        va="bottom", fontsize=8)
ax.set_xlabel("model being weighted: the global model (fitted on all training "
              "sites) and each training site's own model")
ax.set_ylabel("new site, 5 labelled\nexamples per digit")
ax.set_title("Fusion weights per new site: its prediction is the sum over models "
             "i of\nw_i x (model i's class probabilities). Each new site puts "
             "its weight on training sites\nwired like it (wiring A-D: four "
             "different pixel permutations, with gains and offsets)",
             fontsize=10, pad=22)
fig.colorbar(image, label="fusion weight w_i (non-negative; each row sums to 1)")
fig.tight_layout()
