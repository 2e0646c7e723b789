"""
MAML on sinusoids: the paper's figure, and error against inner steps
====================================================================

The regression benchmark of Finn et al. (2017): each task is a sinusoid of
random amplitude and phase, seen through 10 points. :class:`~skmeta.MAMLRegressor`
learns a starting network from which a few gradient steps fit a new
sinusoid. The baseline is the paper's: one network trained on all training
tasks pooled, then fine-tuned on the new task the same way.

The paper's protocol draws a fresh meta-batch of 25 tasks at each of 70,000
iterations. ``make_sinusoid_tasks(n, lazy=True)`` is such a stream: a
sequence of any length whose task ``i`` is made when it is read, in constant
memory, so one pass (``max_epochs=1``) over ``n`` tasks is ``n / 25`` fresh
meta-batches. Here, at a reduced budget of 4,000 iterations, with the
paper's network (40-40), inner learning rate (0.01) and unscaled targets
(``standardize=False``).
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from skorch import NeuralNetRegressor

from skmeta import MAMLRegressor
from skmeta.datasets import make_sinusoid_tasks
from skmeta.maml import MAMLAdaptedRegressor
from skmeta.nn import MLP

SMALL = os.environ.get("CI") == "true"
train = make_sinusoid_tasks(25_000 if SMALL else 100_000, k_shot=10, random_state=0,
                            lazy=True)
test, amplitudes, phases = make_sinusoid_tasks(100, k_shot=10, random_state=1,
                                               return_params=True)

maml = MAMLRegressor(module__hidden_sizes=(40, 40), inner_lr=0.01, inner_steps=1,
                     test_inner_steps=10, meta_batch_size=25, meta_lr=1e-3,
                     standardize=False, max_epochs=1, random_state=0).fit(train)

pooled_X = np.concatenate([t.X_support for t in train])
pooled_y = np.concatenate([t.y_support for t in train])[:, None]
torch.manual_seed(0)
pretrained = NeuralNetRegressor(MLP, module__in_features=1,
                                module__hidden_sizes=(40, 40), module__out_features=1,
                                optimizer=torch.optim.Adam, lr=1e-3, max_epochs=1,
                                batch_size=250, train_split=None, verbose=0)
pretrained.fit(pooled_X, pooled_y)


def after(module, steps, task):
    """The network fine-tuned on the task's support set for ``steps`` steps."""
    return MAMLAdaptedRegressor(module, inner_lr=0.01, inner_steps=steps).fit(
        task.X_support, task.y_support)


# %%
# Left: one new task, the curve before adaptation, after 1 and after 10 steps.
task, x = test[0], np.linspace(-5, 5, 200, dtype=np.float32)[:, None]
fig, (curve, errors) = plt.subplots(1, 2, figsize=(12, 4.2))
curve.plot(x, amplitudes[0] * np.sin(x - phases[0]), "k", label="truth")
curve.plot(task.X_support, task.y_support, "k^", label="10 support points")
for steps, style, label in [(0, ":", "MAML, before adapting"),
                            (1, "--", "MAML, after 1 step"),
                            (10, "-", "MAML, after 10 steps")]:
    curve.plot(x, after(maml.net_.module_, steps, task).predict(x), "C0" + style,
               label=label)
curve.plot(x, after(pretrained.module_, 10, task).predict(x), "C1-",
           label="pretrained on all tasks,\nafter 10 steps")
curve.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
curve.set_xlabel("x")
curve.set_ylabel("y = amplitude * sin(x - phase)")
curve.set_title("one new sinusoid, fitted from its 10 support points", fontsize=10)

# Right: mean squared error over 100 new tasks against the number of steps.
steps = np.arange(11)
for name, module, color in [("MAML", maml.net_.module_, "C0"),
                            ("pretrained on all tasks", pretrained.module_, "C1")]:
    per_task = np.array([[np.mean((after(module, k, t).predict(t.X_query)
                                   - t.y_query) ** 2) for t in test] for k in steps])
    mse = per_task.mean(1)
    half = 1.96 * per_task.std(1, ddof=1) / np.sqrt(len(test))
    errors.plot(steps, mse, "o-", color=color, label=name)
    errors.fill_between(steps, mse - half, mse + half, color=color, alpha=0.25)
    print(f"{name}: MSE after 1 step {mse[1]:.2f}, after 10 steps {mse[10]:.2f}")
errors.set_xlabel("gradient steps on the new task's 10 support points")
errors.set_ylabel("mean squared error on query points")
errors.set_title(f"error on {len(test)} new sinusoids, band: 95 % interval",
                 fontsize=10)
errors.set_ylim(bottom=0)
errors.legend()
fig.tight_layout()
