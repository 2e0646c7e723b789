"""MetaDistiller on digits with its defaults: teacher, distilled student and
ProtoNet on the same training episodes, beside raw nearest centroid.

The configuration is the documented one, every other parameter at its
default::

    MetaDistiller(teacher=ConvNet, teacher__input_shape=(1, 8, 8),
                  student=ConvNet, student__input_shape=(1, 8, 8),
                  student__channels=(16, 16, 16, 16))

(a pooled Conv-4 teacher of 64 channels, a Conv-4 student of 16) and
``ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8))``, all trained on
the same 200 5-way 5-shot episodes of the 28 training classes. 5-way 1-shot
and 5-shot tasks over the 12 unseen test classes, 300 per setting and seed;
each accuracy has its 95 % interval over tasks and its paired difference
from raw-pixel nearest centroid on the same tasks. Teacher and student are
scored with both heads (``head="centroid"``, the default, and
``"logistic"``, RFS's logistic regression) without refitting. Latency:
adapt + predict one task, teacher and student interleaved on the same tasks,
torch on one thread. Three seeds (training episodes, test episodes, models).

Run ``python benchmarks/distillation.py --seed S`` for S in 0 1 2 (each
about 5 minutes on one free core; they can run side by side), then
``python benchmarks/distillation.py --report`` to write
benchmarks/results/distillation.md and .json. ``--quick`` is a smoke run.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from skmeta import MetaDistiller, ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.distill import EmbeddingHeadClassifier
from skmeta.nn import ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler

RESULTS = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)
SHAPE = (1, 8, 8)
HEADS = ("centroid", "logistic")


class RawBaseline:
    """A plain per-task classifier on raw pixels, with the adapt contract."""

    def __init__(self, make):
        self.make = make

    def adapt(self, X, y):
        return self.make().fit(X, y)


def episodes(digits, classes, k_shot, n_tasks, seed, n_query=15):
    pool = np.isin(digits.target, classes)
    return list(EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                               k_shot=k_shot, n_query=n_query, n_tasks=n_tasks,
                               random_state=seed))


def scores(model, tasks):
    return np.array([model.adapt(t.X_support, t.y_support).score(t.X_query,
                                                                 t.y_query)
                     for t in tasks])


def interval(values):
    return float(values.mean()), float(1.96 * values.std(ddof=1)
                                       / np.sqrt(len(values)))


def latency(teacher, student, tasks):
    """Milliseconds per task to adapt and predict, interleaved."""
    spent = np.zeros(2)
    for task in tasks:
        for i, model in enumerate((teacher, student)):
            start = time.perf_counter()
            model.adapt(task.X_support, task.y_support).predict(task.X_query)
            spent[i] += time.perf_counter() - start
    teacher_ms, student_ms = 1e3 * spent / len(tasks)
    return {"teacher_ms": teacher_ms, "student_ms": student_ms,
            "speedup": teacher_ms / student_ms}


def run_seed(seed, quick):
    torch.set_num_threads(1)
    digits = load_digits_tasks()
    train = episodes(digits, digits.train_classes, 5, 40 if quick else 200, seed,
                     n_query=5)
    start = time.perf_counter()
    distiller = MetaDistiller(
        ConvNet, ConvNet, teacher__input_shape=SHAPE, student__input_shape=SHAPE,
        student__channels=(16,) * 4, random_state=seed,
        **({"max_epochs": 1} if quick else {})).fit(train)
    fit_s = {"distiller (teacher + student)": time.perf_counter() - start}
    start = time.perf_counter()
    protonet = ProtoNetClassifier(ConvNet, module__input_shape=SHAPE,
                                  random_state=seed,
                                  **({"max_epochs": 1} if quick else {})).fit(train)
    fit_s["ProtoNet"] = time.perf_counter() - start
    teacher = distiller.teacher_
    result = {"seed": seed, "fit_seconds": fit_s, "accuracy": {}, "latency": {},
              "n_params": {"teacher": distiller.teacher_n_params_,
                           "student": distiller.student_n_params_,
                           "ProtoNet": sum(p.numel() for p in
                                           protonet.net_.module_.parameters())}}
    for k_shot in (1, 5):
        test = episodes(digits, digits.test_classes, k_shot, 50 if quick else 300,
                        100 + seed)
        raw = scores(RawBaseline(PrototypeClassifier), test)
        rows = {"raw pixels: nearest centroid": raw,
                "raw pixels: logistic regression (L2-normalised)": scores(
                    RawBaseline(lambda: EmbeddingHeadClassifier(head="logistic")),
                    test),
                "ProtoNet (Conv-4 64), same episodes": scores(protonet, test)}
        for head in HEADS:
            for model in (teacher, distiller):
                model.set_params(head=head)
            rows[f"teacher (pooled Conv-4 64), head={head}"] = scores(teacher, test)
            rows[f"student (Conv-4 16), head={head}"] = scores(distiller, test)
            result["latency"][f"{k_shot}-shot, head={head}"] = latency(
                teacher, distiller, test[:20 if quick else 100])
        for name, values in rows.items():
            result["accuracy"].setdefault(name, {})[f"{k_shot}-shot"] = {
                "mean_ci": interval(values), "minus_raw_ci": interval(values - raw)}
            print(f"seed {seed} {k_shot}-shot {name}: {100 * values.mean():.1f} "
                  f"({100 * (values - raw).mean():+.1f} vs raw)", flush=True)
    suffix = "_quick" if quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"distillation_seed{seed}{suffix}.json").write_text(
        json.dumps(result, indent=2))


def report(quick):
    suffix = "_quick" if quick else ""
    runs = [json.loads((RESULTS / f"distillation_seed{s}{suffix}.json").read_text())
            for s in SEEDS]
    cell = lambda m, h: f"{100 * m:.1f} ± {100 * h:.1f}"  # noqa: E731
    lines = ["Accuracy (%) on 300 tasks per setting and seed, 95 % intervals; "
             "\"vs raw\": paired difference from raw-pixel nearest centroid on "
             "the same tasks.", ""]
    for run in runs:
        lines += [f"Seed {run['seed']}:", "",
                  "| model | 5-way 1-shot | vs raw | 5-way 5-shot | vs raw |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, shots in run["accuracy"].items():
            cells = []
            for shot in ("1-shot", "5-shot"):
                cells += [cell(*shots[shot]["mean_ci"]),
                          "" if name.startswith("raw pixels: nearest") else
                          cell(*shots[shot]["minus_raw_ci"])]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append("")
    lines += ["Student against teacher and ProtoNet (head=centroid, the "
              "default):", "",
              "| seed | shots | student / teacher | student - ProtoNet |",
              "| ---: | --- | ---: | ---: |"]
    for run in runs:
        acc = run["accuracy"]
        for shot in ("1-shot", "5-shot"):
            s = acc["student (Conv-4 16), head=centroid"][shot]["mean_ci"][0]
            t = acc["teacher (pooled Conv-4 64), head=centroid"][shot]["mean_ci"][0]
            p = acc["ProtoNet (Conv-4 64), same episodes"][shot]["mean_ci"][0]
            lines.append(f"| {run['seed']} | {shot} | {100 * s / t:.1f} % | "
                         f"{100 * (s - p):+.1f} |")
    lines += ["", "Adapt + predict one task (ms, one thread), teacher against "
              "student:", "",
              "| seed | setting | teacher | student | speed-up |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for run in runs:
        for name, t in run["latency"].items():
            lines.append(f"| {run['seed']} | {name} | {t['teacher_ms']:.1f} | "
                         f"{t['student_ms']:.1f} | {t['speedup']:.2f}x |")
    n = runs[0]["n_params"]
    lines += ["", f"Parameters: teacher {n['teacher']:,}, ProtoNet "
              f"{n['ProtoNet']:,}, student {n['student']:,}."]
    (RESULTS / f"distillation{suffix}.json").write_text(json.dumps(runs, indent=2))
    (RESULTS / f"distillation{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, choices=SEEDS)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    args = parser.parse_args()
    if args.seed is not None:
        run_seed(args.seed, args.quick)
    if args.report:
        report(args.quick)
