"""MetaFusionClassifier benchmarks: accuracy with 95% intervals against plain
baselines, and fit time against n_jobs.

(a) Sites: scikit-learn's digits (10 classes, 64 features) seen through
    site-specific affine maps, with class priors that change per site.
    Training sites and unseen test sites share the label space; a test site
    gives 5 support examples per class. Two regimes:
    "calibration": 4 site types, each a per-feature gain and offset;
    "rewired": 12 site types, each a random feature permutation with gains
    and offsets (2 training sites per type).
    Each site adds its own small offset, and images are split so test sites
    never show an image a training site showed.
(b) Digits rotation (skmeta.datasets.load_digits_tasks): few-shot tasks on 12
    classes never seen in training; stacking against ProtoNetClassifier,
    nearest centroid and logistic regression on the support set.

Usage: python benchmarks/fusion.py [--quick]
Writes benchmarks/results/fusion.md and fusion.json.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from skmeta import MetaFusionClassifier, ProtoNetClassifier, Task  # noqa: E402
from skmeta.datasets import load_digits_tasks  # noqa: E402
from skmeta.nn import ConvNet  # noqa: E402
from skmeta.protonet import PrototypeClassifier  # noqa: E402
from skmeta.tasks import EpisodeSampler  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def interval(values):
    """Mean and 95% normal half-width over tasks."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def cell(values):
    mean, half = interval(values)
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


def support_baselines(task):
    """The plain baselines: fitted on the task's support set alone."""
    return {
        "logistic regression on support": LogisticRegression(max_iter=1000).fit(
            task.X_support, task.y_support).score(task.X_query, task.y_query),
        "nearest centroid on support": PrototypeClassifier().fit(
            task.X_support, task.y_support).score(task.X_query, task.y_query)}


# --- (a) sites -------------------------------------------------------------

def make_sites(regime, n_train_sites, n_test_sites, seed=0):
    rng = np.random.default_rng(seed)
    X, y = load_digits(return_X_y=True)
    X = X / 16
    order = rng.permutation(len(y))
    train_pool, test_pool = order[:1200], order[1200:]
    n_types = {"calibration": 4, "rewired": 12}[regime]
    maps = []
    for _ in range(n_types):
        gain = 1 + 0.3 * rng.normal(size=64)
        mix = np.eye(64)[rng.permutation(64)] if regime == "rewired" else np.eye(64)
        maps.append((mix * gain, 0.5 * rng.normal(size=64)))

    def view(rows, kind):
        A, b = maps[kind]
        return X[rows] @ A + b + 0.05 * rng.normal(size=64)

    def by_prior(pool, n):
        prior = rng.dirichlet(np.ones(10))[y[pool]]
        return rng.choice(pool, n, replace=False, p=prior / prior.sum())

    train, train_kinds = [], np.arange(n_train_sites) % n_types
    for i in range(n_train_sites):
        rows = by_prior(train_pool, 150)
        counts = np.bincount(y[rows], minlength=10)
        rows = rows[counts[y[rows]] >= 2]  # (X, y) tasks are split stratified
        train.append((view(rows, train_kinds[i]), y[rows]))
    test = []
    for i in range(n_test_sites):
        support = np.concatenate([rng.choice(test_pool[y[test_pool] == c], 5,
                                             replace=False) for c in range(10)])
        query = by_prior(np.setdiff1d(test_pool, support), 100)
        X_all = view(np.concatenate([support, query]), i % n_types)
        test.append(Task(X_all[:50], y[support], X_all[50:], y[query]))
    return train, test, train_kinds


def site_accuracies(model, task, same_kind):
    """Query accuracies on one test site, and the share of the weighted
    fusion's local-model weight that goes to sites of the test site's type."""
    weighted = model.set_params(fusion="weighted").adapt(task.X_support,
                                                         task.y_support)
    local_weights = weighted.weights_[1:]  # the global model comes first
    stacked = model.set_params(fusion="stacking").adapt(task.X_support,
                                                        task.y_support)
    models = [m for _, m in model.estimators_]
    local_support = [m.score(task.X_support, task.y_support) for m in models[1:]]
    local_query = [m.score(task.X_query, task.y_query) for m in models[1:]]
    return {
        "weighted fusion": weighted.score(task.X_query, task.y_query),
        "stacking fusion": stacked.score(task.X_query, task.y_query),
        "global model alone": models[0].score(task.X_query, task.y_query),
        "best local model (chosen on support)": local_query[
            int(np.argmax(local_support))],
        "best local model (oracle, chosen on query)": max(local_query),
        **support_baselines(task)}, local_weights[same_kind].sum() / local_weights.sum()


def run_sites(quick):
    n_train, n_test = (12, 8) if quick else (24, 40)
    rows, timing = {}, {}
    for regime in ("calibration", "rewired"):
        train, test, train_kinds = make_sites(regime, n_train, n_test)
        n_types = train_kinds.max() + 1
        for base_name, base in (("torch MLP (default)", None),
                                ("logistic regression",
                                 LogisticRegression(max_iter=1000))):
            model = MetaFusionClassifier(base, n_jobs=1, random_state=0)
            start = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - start
            per_task, shares = zip(*(
                site_accuracies(model, task, train_kinds == i % n_types)
                for i, task in enumerate(test)), strict=True)
            scores = {k: [p[k] for p in per_task] for k in per_task[0]}
            gaps = {f"weighted - {other}": np.subtract(scores["weighted fusion"],
                                                       scores[other]).tolist()
                    for other in ("global model alone",
                                  "best local model (chosen on support)")}
            rows[f"{regime} / {base_name}"] = {
                "scores": scores, "paired_gaps": gaps, "fit_s": fit_s,
                "same_type_weight_share": list(shares),
                "same_type_chance": float(np.mean(train_kinds == 0)),
                "n_test_sites": len(test), "n_models": len(model.estimators_)}
        timing[regime] = fit_times(train)
    return rows, timing


def fit_times(train):
    """Fit time of the default (torch MLP) fusion against n_jobs, side by side
    in one run; the second n_jobs=2 fit reuses joblib's warm worker pool."""
    times = {}
    for label, n_jobs in (("n_jobs=1", 1), ("n_jobs=2 (cold workers)", 2),
                          ("n_jobs=2 (warm workers)", 2)):
        start = time.perf_counter()
        MetaFusionClassifier(n_jobs=n_jobs, random_state=0).fit(train)
        times[label] = time.perf_counter() - start
    return times


# --- (b) digits rotation ----------------------------------------------------

def episodes(digits, classes, n_tasks, k_shot, seed, n_query):
    pool = np.isin(digits.target, classes)
    return list(EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                               k_shot=k_shot, n_query=n_query, n_tasks=n_tasks,
                               random_state=seed))


def run_rotation(quick):
    digits = load_digits_tasks()
    train = episodes(digits, digits.train_classes, 40 if quick else 200, 5, 0, 5)
    learners = {
        "stacking fusion (torch MLP, 20 local models)": MetaFusionClassifier(
            fusion="stacking", max_local_models=20, random_state=0),
        "stacking fusion (logistic regression, 20 local models)":
            MetaFusionClassifier(LogisticRegression(max_iter=1000), "stacking",
                                 max_local_models=20, random_state=0),
        "ProtoNetClassifier (MLP)": ProtoNetClassifier(
            max_epochs=2 if quick else 20, random_state=0),
        "ProtoNetClassifier (Conv-4)": ProtoNetClassifier(
            ConvNet, module__input_shape=(1, 8, 8), max_epochs=2 if quick else 20,
            random_state=0)}
    fit_s = {}
    for name, learner in learners.items():
        start = time.perf_counter()
        learner.fit(train)
        fit_s[name] = time.perf_counter() - start
    rows = {}
    for k_shot in (1, 5):
        test = episodes(digits, digits.test_classes, 20 if quick else 200, k_shot,
                        1, 10)
        scores = {name: [learner.score([t]) for t in test]
                  for name, learner in learners.items()}
        baselines = [support_baselines(t) for t in test]
        scores.update({k: [b[k] for b in baselines] for k in baselines[0]})
        rows[f"5-way {k_shot}-shot"] = scores
    return rows, fit_s


# --- report -----------------------------------------------------------------

def markdown(sites, timing, rotation, rotation_fit, quick):
    lines = ["# MetaFusionClassifier benchmarks", "",
             f"{'QUICK SMOKE RUN, not for citing. ' if quick else ''}"
             f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
             "cores (shared), OMP_NUM_THREADS=1, one seed. Accuracy in % on "
             "the query sets of unseen tasks, mean ± 95% interval over tasks.", "",
             "## (a) Sites sharing a label space (digits, 5 support examples per "
             "class)", ""]
    methods = list(next(iter(sites.values()))["scores"])
    lines += ["| method | " + " | ".join(sites) + " |",
              "| --- |" + " --- |" * len(sites)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(
            cell(row["scores"][method]) for row in sites.values()) + " |")
    for gap in next(iter(sites.values()))["paired_gaps"]:
        lines.append(f"| *{gap} (paired)* | " + " | ".join(
            cell(row["paired_gaps"][gap]) for row in sites.values()) + " |")
    lines.append("| *weighted: share of local weight on sites of the test site's "
                 "type (chance)* | " + " | ".join(
                     f"{cell(row['same_type_weight_share'])} "
                     f"({100 * row['same_type_chance']:.0f})"
                     for row in sites.values()) + " |")
    lines.append("| fit time (s, n_jobs=1) | " + " | ".join(
        f"{row['fit_s']:.1f}" for row in sites.values()) + " |")
    lines += ["", "Fit time of the default fusion (torch MLP base) against "
              "n_jobs, one run on a shared 2-core machine (noisy):", "",
              "| regime | " + " | ".join(next(iter(timing.values()))) +
              " | speed-up (1 / 2 warm) |",
              "| --- |" + " --- |" * (len(next(iter(timing.values()))) + 1)]
    for regime, times in timing.items():
        values = list(times.values())
        lines.append(f"| {regime} | " + " | ".join(f"{t:.1f} s" for t in values)
                     + f" | {values[0] / values[2]:.2f}x |")
    lines += ["", "## (b) Digits rotation: 5-way tasks on 12 classes never seen "
              "in training", "", "| method | " + " | ".join(rotation) +
              " | fit time (s) |", "| --- |" + " --- |" * (len(rotation) + 1)]
    for method in next(iter(rotation.values())):
        fit = f"{rotation_fit[method]:.1f}" if method in rotation_fit else "-"
        lines.append(f"| {method} | " + " | ".join(
            cell(scores[method]) for scores in rotation.values()) + f" | {fit} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run with few tasks")
    quick = parser.parse_args().quick
    torch.set_num_threads(1)
    sites, timing = run_sites(quick)
    rotation, rotation_fit = run_rotation(quick)
    report = markdown(sites, timing, rotation, rotation_fit, quick)
    RESULTS.mkdir(exist_ok=True)
    name = "fusion_quick" if quick else "fusion"
    (RESULTS / f"{name}.md").write_text(report)
    summary = {
        "sites": {k: {"accuracy": {m: interval(v) for m, v in row["scores"].items()},
                      "paired_gaps": {m: interval(v)
                                      for m, v in row["paired_gaps"].items()},
                      "same_type_weight_share": interval(
                          row["same_type_weight_share"]),
                      "same_type_chance": row["same_type_chance"],
                      "fit_s": row["fit_s"], "n_test_sites": row["n_test_sites"],
                      "n_models": row["n_models"]} for k, row in sites.items()},
        "fit_time_vs_n_jobs_s": timing,
        "rotation": {k: {m: interval(v) for m, v in scores.items()}
                     for k, scores in rotation.items()},
        "rotation_fit_s": rotation_fit, "quick": quick}
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2))
    print(report)


if __name__ == "__main__":
    main()
