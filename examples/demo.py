"""skmeta demo: meta-train on some digit classes, adapt to unseen ones.

Meta-trains a prototypical network with a conv embedding on 28 classes of
rotated digits, then adapts to 5-way tasks over the 12 classes it never saw,
from 1 or 5 labelled examples per class. Prints accuracy over 600 test tasks
beside chance and a raw-pixel nearest-centroid baseline, and saves a plot.

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
    # Two conv blocks keep a 2x2 map of the 8x8 digits; the literature's four
    # pool them down to 1x1 and do no better than raw pixels here.
    model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                               module__channels=(64, 64),
                               max_epochs=3 if quick else 10, meta_batch_size=4,
                               random_state=0)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    print(f"Meta-trained on {len(train)} tasks x {model.max_epochs} epochs over "
          f"{len(digits.train_classes)} classes in {seconds:.0f} s.")

    rows = []
    for k_shot in (1, 5):
        test = episodes(digits, digits.test_classes, 5, k_shot, n_test, 1)
        for name, estimator in [("raw-pixel nearest centroid", PrototypeClassifier()),
                                ("ProtoNet, conv embedding", model)]:
            mean, half = mean_confidence_interval(task_scores(estimator, test))
            rows.append((f"5-way {k_shot}-shot", name, mean, half))
    print(f"\nAccuracy on {n_test} tasks over the {len(digits.test_classes)} unseen "
          "classes (chance 20%):\n")
    print(f"| {'setting':<13}| {'method':<28}| accuracy       |")
    print(f"|{'-' * 14}|{'-' * 29}|----------------|")
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
          f"{task.y_query[:8].tolist()}.")
    plot(rows, digits, task, clf)


def plot(rows, digits, task, clf):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(pip install matplotlib to get demo.png)")
        return
    fig, (bars, grid) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{s}\n{n.split(',')[0]}" for s, n, _, _ in rows]
    bars.bar(labels, [100 * m for *_, m, _ in rows],
             yerr=[100 * h for *_, h in rows], color=["grey", "C0"] * 2)
    bars.axhline(20, color="k", ls=":", label="chance")
    bars.set_ylabel("accuracy on unseen classes (%)")
    bars.legend()
    bars.tick_params(axis="x", labelsize=7)
    predicted = clf.predict(task.X_query[:10])
    images = np.concatenate([x.reshape(8, 8) for x in task.X_query[:10]], axis=1)
    grid.imshow(images, cmap="gray_r")
    grid.set_title("query digits; predicted class (true class)", fontsize=9)
    grid.set_xticks(np.arange(10) * 8 + 3.5, [f"{p}\n({t})" for p, t in zip(
        predicted, task.y_query[:10], strict=True)], fontsize=7)
    grid.set_yticks([])
    fig.tight_layout()
    fig.savefig("demo.png", dpi=120)
    print("Saved demo.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run, for a smoke test")
    main(parser.parse_args().quick)
