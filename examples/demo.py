"""skmeta demo: meta-train on some digit classes, adapt to unseen ones.

Meta-trains a prototypical network with a conv embedding on 28 classes of
rotated digits (class = a digit 0-9 turned by 0, 90, 180 or 270 degrees),
then adapts to 5-way tasks over the 12 classes it never saw, from 1 or 5
labelled examples per class. Prints one line per training epoch, then
accuracy over 600 test tasks beside chance and a raw-pixel nearest-centroid
baseline, and saves demo.png.

Run: python examples/demo.py [--quick]
"""

import argparse
import time

import numpy as np

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.metrics import mean_confidence_interval, task_scores
from skmeta.nn import ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler


def episodes(digits, classes, n_way, k_shot, n_tasks, seed):
    pool = np.isin(digits.target, classes)
    return EpisodeSampler(digits.data[pool], digits.target[pool], n_way=n_way,
                          k_shot=k_shot, n_query=15 if n_way == 5 else 5,
                          n_tasks=n_tasks, random_state=seed)


def main(quick):
    digits = load_digits_tasks()
    n_test = 100 if quick else 600
    # Training with more classes per episode than at test time helps
    # (Snell et al., 2017).
    train = episodes(digits, digits.train_classes, 10, 1, 200 if quick else 1000, 0)
    # ConvNet pools only while the map stays at least 4x4, so the 8x8 digits
    # keep a 4x4 map; two blocks (88.0 % 1-shot in benchmarks/protonet.py)
    # are as accurate here as the default four (87.5 %), with half the layers.
    # verbose=1: a progress bar during each epoch and a line after it.
    model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                               module__channels=(64, 64),
                               max_epochs=3 if quick else 10, meta_batch_size=4,
                               verbose=1, random_state=0)
    print(f"Meta-training on {len(train)} 10-way episodes x {model.max_epochs} "
          f"epochs over {len(digits.train_classes)} classes (one line per epoch; "
          f"{'about 15 s' if quick else 'about 3 minutes'} on a 2-core CPU):",
          flush=True)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    print(f"Meta-trained in {seconds:.0f} s. Now testing on {n_test} new tasks "
          "per setting...", flush=True)

    rows = []
    for k_shot in (1, 5):
        test = episodes(digits, digits.test_classes, 5, k_shot, n_test, 1)
        for name, estimator in [("raw-pixel nearest centroid", PrototypeClassifier()),
                                ("ProtoNet, conv embedding", model)]:
            mean, half = mean_confidence_interval(task_scores(estimator, test))
            rows.append((f"5-way {k_shot}-shot", name, mean, half))
    print(f"\nAccuracy on {n_test} tasks over the {len(digits.test_classes)} unseen "
          "classes (mean ± 95 % interval; chance 20%):\n")
    print(f"| {'setting':<13}| {'method':<28}| accuracy      |")
    print(f"|{'-' * 14}|{'-' * 29}|---------------|")
    for setting, name, mean, half in rows:
        print(f"| {setting:<13}| {name:<28}| {100 * mean:5.1f} ± {100 * half:3.1f} % |")
    for setting in ("5-way 1-shot", "5-way 5-shot"):
        (_, _, raw, raw_half), (_, _, ours, ours_half) = [
            row for row in rows if row[0] == setting]
        verdict = ("beats" if ours - ours_half > raw + raw_half
                   else "does not clearly beat")
        print(f"{setting}: the meta-learned embedding {verdict} raw pixels.")

    task = episodes(digits, digits.test_classes, 5, 1, 1, 2)[0]
    clf = model.adapt(task.X_support, task.y_support)
    print(f"\nOne new task: adapted on {len(task.y_support)} examples, "
          f"{100 * clf.score(task.X_query, task.y_query):.0f}% of its "
          f"{len(task.y_query)} queries right; first predictions "
          f"{clf.predict(task.X_query[:8]).tolist()}, truth "
          f"{task.y_query[:8].tolist()} (class c is digit c % 10 turned by "
          "90 * (c // 10) degrees).")
    plot(rows, n_test, task, clf)


def name(c):
    """A class id as a reader sees it: digit and rotation."""
    return f"{c % 10} at {90 * (c // 10)}°"


def plot(rows, n_test, task, clf):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(pip install matplotlib to get demo.png)")
        return
    fig = plt.figure(figsize=(13, 5.8))
    outer = fig.add_gridspec(1, 2, width_ratios=(1, 1.4), wspace=0.2)
    fig.suptitle("skmeta demo: few-shot learning of digit classes never seen in "
                 "meta-training (a class is a digit at one rotation)",
                 fontsize=11)

    # Left: accuracy with 95 % intervals, drawn as points on a zoomed axis so
    # the intervals are visible; chance (20 %) is far below.
    acc = fig.add_subplot(outer[0])
    for offset, (method, color, marker) in zip((-0.1, 0.1), [
            ("raw-pixel nearest centroid", "grey", "s"),
            ("ProtoNet, conv embedding", "C0", "o")], strict=True):
        points = [row for row in rows if row[1] == method]
        x = np.arange(len(points)) + offset
        means = [100 * m for *_, m, _ in points]
        halves = [100 * h for *_, h in points]
        acc.errorbar(x, means, yerr=halves, fmt=marker, color=color, capsize=6,
                     elinewidth=2, markersize=7,
                     label=("ProtoNet (meta-learned conv embedding)"
                            if color == "C0" else method))
        for xi, m, h in zip(x, means, halves, strict=True):
            acc.annotate(f"{m:.1f} ± {h:.1f}", (xi, m), xytext=(8, 0),
                         textcoords="offset points", va="center", fontsize=8,
                         color=color)
    acc.set_xticks([0, 1], ["1 labelled example\nper class (1-shot)",
                            "5 labelled examples\nper class (5-shot)"])
    acc.set_xlim(-0.5, 1.7)
    low = min(100 * (m - h) for *_, m, h in rows)
    acc.set_ylim(max(0, np.floor(low / 5) * 5 - 5), 100)
    acc.set_ylabel("accuracy on 5-way tasks over unseen classes (%)")
    acc.set_title(f"mean accuracy over {n_test} new tasks, bars: 95 % interval\n"
                  "(chance is 20 %, below this axis)", fontsize=9)
    acc.legend(fontsize=8, loc="lower right")
    acc.grid(axis="y", alpha=0.3)

    # Right: one new task, its 5 labelled examples and 10 of its queries.
    panel = outer[1].subgridspec(4, 5, height_ratios=(0.3, 1, 1, 1), hspace=0.7,
                                 wspace=0.15)
    header = fig.add_subplot(panel[0, :])
    header.axis("off")
    header.text(0.5, 0.5, "one new 5-way 1-shot task: the model adapts to the 5 "
                "labelled images (top row)\nand classifies new images of the same "
                "classes (green: right, red: wrong)", ha="center", va="center",
                fontsize=9)
    order = np.argsort(task.y_support)
    for j, i in enumerate(order):
        ax = fig.add_subplot(panel[1, j])
        ax.imshow(task.X_support[i].reshape(8, 8), cmap="gray_r")
        ax.set_title(f"class: {name(task.y_support[i])}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel("labelled\n(support)", fontsize=8)
    predicted = clf.predict(task.X_query[:10])
    for k, (x, p, t) in enumerate(zip(task.X_query[:10], predicted,
                                      task.y_query[:10], strict=True)):
        ax = fig.add_subplot(panel[2 + k // 5, k % 5])
        ax.imshow(x.reshape(8, 8), cmap="gray_r")
        ax.set_title(f"pred: {name(p)}\n" + ("right" if p == t else
                                             f"true: {name(t)}"),
                     fontsize=8, color="green" if p == t else "red")
        ax.set_xticks([])
        ax.set_yticks([])
        if k % 5 == 0:
            ax.set_ylabel("new images\n(queries)", fontsize=8)
    fig.savefig("demo.png", dpi=120, bbox_inches="tight")
    print("Saved demo.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run, for a smoke test")
    main(parser.parse_args().quick)
