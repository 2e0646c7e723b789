"""ProtoNetClassifier on rotated-digit few-shot tasks, beside raw-pixel
nearest centroid.

Meta-trains on the 28 training classes of ``load_digits_tasks`` with an MLP
and with a Conv-4 embedding, then reports 5-way 1-shot and 5-shot accuracy on
600 tasks over the 12 unseen test classes (mean ± 95 % interval).

Run: python benchmarks/protonet.py [--quick]
Writes benchmarks/results/protonet.md and .json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from skmeta import ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.metrics import mean_confidence_interval, task_scores
from skmeta.nn import MLP, ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler

RESULTS = Path(__file__).parent / "results"


def episodes(digits, classes, n_way, k_shot, n_query, n_tasks, seed):
    pool = np.isin(digits.target, classes)
    return EpisodeSampler(digits.data[pool], digits.target[pool], n_way=n_way,
                          k_shot=k_shot, n_query=n_query, n_tasks=n_tasks,
                          random_state=seed)


def learners(quick):
    """Each embedding with the settings that did best among those tried."""
    def protonet(epochs, **params):
        return ProtoNetClassifier(max_epochs=3 if quick else epochs,
                                  meta_batch_size=4, random_state=0, **params)

    conv = dict(module=ConvNet, module__input_shape=(1, 8, 8))
    return {
        "raw-pixel nearest centroid": PrototypeClassifier(),
        "ProtoNet, MLP 64-128-128": protonet(20, module=MLP, meta_lr=3e-4),
        # ProtoNet's and Conv-4's defaults: pooling stops before the map falls
        # below 4x4, so the 8x8 digits pool once (a 1024-wide embedding).
        "ProtoNet, Conv-4 (4 blocks of 64, defaults)": ProtoNetClassifier(
            max_epochs=3 if quick else 10, random_state=0, **conv),
        # Two blocks: pooling once, the same 4x4 map.
        "ProtoNet, Conv (2 blocks of 64)": protonet(
            10, module__channels=(64, 64), **conv),
    }


def main(quick):
    digits = load_digits_tasks()
    n_test = 100 if quick else 600
    train = episodes(digits, digits.train_classes, 10, 1, 5,
                     200 if quick else 1000, 0)
    tests = {k: episodes(digits, digits.test_classes, 5, k, 15, n_test, 1)
             for k in (1, 5)}
    rows = []
    for name, model in learners(quick).items():
        start = time.perf_counter()
        if hasattr(model, "adapt"):
            model.fit(train)
        fit_seconds = time.perf_counter() - start
        for k_shot, test in tests.items():
            mean, half = mean_confidence_interval(task_scores(model, test))
            rows.append(dict(method=name, setting=f"5-way {k_shot}-shot",
                             accuracy=mean, ci95=half, fit_seconds=fit_seconds))
            print(f"{name:32} 5-way {k_shot}-shot {100 * mean:.1f} ± {100 * half:.1f}",
                  flush=True)
    write(rows, n_test, quick)


def write(rows, n_test, quick):
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"protonet{suffix}.json").write_text(json.dumps(rows, indent=2))
    lines = [f"{n_test} test tasks over 12 unseen classes; meta-trained on 10-way "
             "1-shot episodes of the 28 training classes.", "",
             "| method | 5-way 1-shot | 5-way 5-shot |", "| --- | --- | --- |"]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f} %"
                 for r in rows if r["method"] == method]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    (RESULTS / f"protonet{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
