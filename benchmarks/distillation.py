"""MetaDistiller on digits: teacher, distilled student, undistilled student.

5-way 1-shot and 5-shot episodes over the 12 unseen test classes of
``load_digits_tasks``, 600 episodes each, 95% intervals. All learners train
on the same task list over the 28 training classes. Two teacher kinds:

- pooled (RFS): a wide Conv-4 trained on all training classes pooled;
- episodic: a Conv-4 ProtoNetClassifier, whose query probabilities on each
  training task are the soft targets.

Each student is a narrow Conv-4, trained once with the soft-target loss
(T=4, alpha=0.5) and once on hard labels alone (alpha=1: the same network
without distillation). Every adapted model is a logistic regression on
L2-normalised embeddings, except ProtoNet's own nearest-prototype rule.
Baselines on raw pixels: nearest centroid and logistic regression.
Latency: adapt + predict one task, and the embedding network's forward pass
alone, teacher and student interleaved on the same tasks in one run
(ratios), with torch on one thread.

Run ``python benchmarks/distillation.py`` (about 5 minutes on one CPU core,
longer on a busy machine) or ``--quick`` for a smoke run.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from skmeta import MetaDistiller, ProtoNetClassifier
from skmeta.datasets import load_digits_tasks
from skmeta.distill import EmbeddingHeadClassifier, PooledEmbeddingClassifier
from skmeta.nn import ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler

RESULTS = Path(__file__).parent / "results"
FULL = dict(n_train_tasks=200, episodes=600, teacher_channels=(128,) * 4,
            proto_channels=(64,) * 4, student_channels=(48,) * 4,
            teacher_epochs=3, student_epochs=10, proto_epochs=20, timed_tasks=100)
QUICK = dict(n_train_tasks=40, episodes=50, teacher_channels=(32,) * 4,
             proto_channels=(16,) * 4, student_channels=(8,) * 4,
             teacher_epochs=1, student_epochs=1, proto_epochs=1, timed_tasks=20)
CONV = {"input_shape": (1, 8, 8)}


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


def accuracy(model, tasks):
    """Mean query accuracy and 95% half-interval over episodes."""
    scores = np.array([model.adapt(t.X_support, t.y_support).score(t.X_query,
                                                                   t.y_query)
                       for t in tasks])
    return scores.mean(), 1.96 * scores.std(ddof=1) / np.sqrt(len(scores))


def latency(teacher, student, tasks):
    """Milliseconds per task of teacher and student, interleaved on the same
    tasks: adapt + predict, and the embedding network's forward pass alone
    (support and query rows)."""
    spent = np.zeros((2, 2))
    for task in tasks:
        rows = torch.from_numpy(np.r_[task.X_support, task.X_query])
        for i, model in enumerate((teacher, student)):
            start = time.perf_counter()
            model.adapt(task.X_support, task.y_support).predict(task.X_query)
            middle = time.perf_counter()
            with torch.no_grad():
                model.embedding_(rows)
            spent[i] += middle - start, time.perf_counter() - middle
    (adapt_t, embed_t), (adapt_s, embed_s) = 1e3 * spent / len(tasks)
    return {"teacher_ms": adapt_t, "student_ms": adapt_s,
            "speedup": adapt_t / adapt_s, "teacher_embedding_ms": embed_t,
            "student_embedding_ms": embed_s, "embedding_speedup": embed_t / embed_s}


def fit_learners(train, cfg, log):
    def timed(name, fit):
        start = time.perf_counter()
        model = fit()
        log(f"fitted {name} in {time.perf_counter() - start:.0f} s")
        return model

    student = dict(student=ConvNet, student__channels=cfg["student_channels"],
                   max_epochs=cfg["student_epochs"], refit_teacher=False,
                   random_state=0, **{f"student__{k}": v for k, v in CONV.items()})
    pooled_teacher = timed("pooled teacher", lambda: PooledEmbeddingClassifier(
        ConvNet, module__channels=cfg["teacher_channels"],
        max_epochs=cfg["teacher_epochs"], random_state=0,
        module__input_shape=CONV["input_shape"]).fit(train))
    protonet = timed("ProtoNet", lambda: ProtoNetClassifier(
        ConvNet, module__channels=cfg["proto_channels"],
        max_epochs=cfg["proto_epochs"], random_state=0,
        module__input_shape=CONV["input_shape"]).fit(train))
    students = {
        (kind, alpha): timed(f"{kind} student alpha={alpha}", lambda t=teacher, a=alpha:
                             MetaDistiller(t, alpha=a, **student).fit(train))
        for kind, teacher in (("pooled", pooled_teacher), ("episodic", protonet))
        for alpha in (0.5, 1.0)}
    return pooled_teacher, protonet, students


def main(quick):
    torch.set_num_threads(1)
    cfg = QUICK if quick else FULL
    log = lambda message: print(message, flush=True)  # noqa: E731
    digits = load_digits_tasks()
    train = episodes(digits, digits.train_classes, 5, cfg["n_train_tasks"], 0,
                     n_query=5)
    pooled_teacher, protonet, students = fit_learners(train, cfg, log)
    pooled, episodic = students["pooled", 0.5], students["episodic", 0.5]
    rows = {
        "pooled teacher (Conv-4 {}, RFS)": (pooled_teacher,
                                            pooled.teacher_n_params_),
        "student distilled from pooled teacher": (pooled, pooled.student_n_params_),
        "student, pooled, no distillation (alpha=1)": (students["pooled", 1.0],
                                                        pooled.student_n_params_),
        "ProtoNetClassifier (Conv-4 {}; episodic teacher)": (
            protonet, episodic.teacher_n_params_),
        "student distilled from ProtoNet": (episodic, episodic.student_n_params_),
        "student, episodic, no distillation (alpha=1)": (
            students["episodic", 1.0], episodic.student_n_params_),
        "raw pixels: nearest centroid": (RawBaseline(PrototypeClassifier), 0),
        "raw pixels: logistic regression (L2-normalised)": (
            RawBaseline(EmbeddingHeadClassifier), 0),
    }
    results = {"config": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in cfg.items()}, "accuracy": {}, "latency": {}}
    for k_shot in (1, 5):
        test = episodes(digits, digits.test_classes, k_shot, cfg["episodes"],
                        100 + k_shot)
        for name, (model, _) in rows.items():
            mean, half = accuracy(model, test)
            results["accuracy"].setdefault(name, {})[f"{k_shot}-shot"] = mean, half
            log(f"{k_shot}-shot {name}: {100 * mean:.1f} ± {100 * half:.1f}")
        timed = test[:cfg["timed_tasks"]]
        for kind, teacher in (("pooled", pooled_teacher), ("episodic", protonet)):
            key = f"{kind} teacher, {k_shot}-shot"
            results["latency"][key] = latency(teacher, students[kind, 0.5], timed)
            log(f"latency {key}: {results['latency'][key]}")
    results["n_params"] = {name: n for name, (_, n) in rows.items()}
    write(results, cfg, quick)


def write(results, cfg, quick):
    suffix = "_quick" if quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"distillation{suffix}.json").write_text(json.dumps(
        results, indent=2, default=float))
    teacher_width = cfg["teacher_channels"][0]
    proto_width = cfg["proto_channels"][0]
    lines = ["| model | parameters | 5-way 1-shot | 5-way 5-shot |",
             "| --- | ---: | ---: | ---: |"]
    for name, scores in results["accuracy"].items():
        shown = name.format(teacher_width if "pooled" in name else proto_width)
        cells = [f"{100 * m:.1f} ± {100 * h:.1f}" for m, h in scores.values()]
        n = results["n_params"][name]
        lines.append(f"| {shown} | {n:,} | {' | '.join(cells)} |" if n else
                     f"| {shown} | - | {' | '.join(cells)} |")
    lines += ["", "| per task (ms) | teacher adapt + predict | student adapt + "
              "predict | speed-up | teacher embedding | student embedding | "
              "speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in results["latency"].items():
        lines.append(
            f"| {name} | {t['teacher_ms']:.1f} | {t['student_ms']:.1f} | "
            f"{t['speedup']:.2f}x | {t['teacher_embedding_ms']:.1f} | "
            f"{t['student_embedding_ms']:.1f} | {t['embedding_speedup']:.2f}x |")
    (RESULTS / f"distillation{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    main(parser.parse_args().quick)
