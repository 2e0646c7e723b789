"""ProtoNetClassifier on rotated-digit few-shot tasks: its three distances
beside raw-pixel nearest centroid, and side by side with easyfsl's
PrototypicalNetworks.

Meta-trains on the 28 training classes of ``load_digits_tasks`` (10-way
1-shot episodes) and reports 5-way 1-shot and 5-shot accuracy on 600 tasks
over the 12 unseen test classes (mean ± 95 % interval), in three parts:

1. Accuracy: ProtoNetClassifier with each distance ("sqeuclidean",
   "euclidean", "cosine") for the MLP at ProtoNet's defaults (five training
   seeds) and tuned, the Conv-4 at ProtoNet's defaults, and the two-block
   conv (three seeds), beside raw-pixel nearest centroid. The Euclidean −
   squared difference is also given paired by test task, per seed.
2. Side by side with easyfsl 1.5's ``PrototypicalNetworks`` (Euclidean
   distance, ``-torch.cdist``; its squared variant overrides only
   ``l2_distance_to_prototypes``): ProtoNet's default embedding (MLP
   64-128-128) and training (10 epochs, Adam at 1e-3), on the same episodes
   in the same order and meta-batches (skmeta's per-epoch shuffles),
   starting from the same initial weights. easyfsl is trained with its
   documented episodic loop (one task: ``process_support_set``, forward on
   the query set, cross-entropy, backward, step); at a meta-batch above 1
   the loop averages the tasks' losses before one step, as skmeta does.
3. Meta-training speed, tasks per second, at meta-batch 1 and at
   ProtoNetClassifier's default: skmeta's whole ``fit`` (validation,
   collation from numpy, skorch) against easyfsl's loop on ready-made
   tensors (its data loading not counted), interleaved in one process on
   the same tasks, medians over rounds; ratio skmeta / easyfsl.

easyfsl needs torchvision for its other methods only; where torchvision
does not import (e.g. a CUDA build beside a CPU torch), its
``easyfsl/methods`` files are loaded without the package's ``__init__``:
the same ``PrototypicalNetworks`` code either way.

Run: OMP_NUM_THREADS=1 python benchmarks/protonet.py [--quick]
Writes benchmarks/results/protonet.md and .json (protonet_quick.* with
--quick).
"""

import argparse
import copy
import functools
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.utils import check_random_state

from skmeta import ProtoNetClassifier
from skmeta._nets import BatchSampler
from skmeta.datasets import load_digits_tasks
from skmeta.metrics import mean_confidence_interval, task_scores
from skmeta.nn import MLP, ConvNet
from skmeta.protonet import PrototypeClassifier
from skmeta.tasks import EpisodeSampler, encode_labels

RESULTS = Path(__file__).parent / "results"
DISTANCES = ("sqeuclidean", "euclidean", "cosine")
SEED = 0


def episodes(digits, classes, n_way, k_shot, n_query, n_tasks, seed):
    pool = np.isin(digits.target, classes)
    return EpisodeSampler(digits.data[pool], digits.target[pool], n_way=n_way,
                          k_shot=k_shot, n_query=n_query, n_tasks=n_tasks,
                          random_state=seed)


def learners(quick):
    """``(name, distance, training seed)`` -> model: ProtoNet at its defaults
    (MLP and Conv-4), an earlier tuning of the MLP (meta_lr=3e-4, 20 epochs,
    meta-batch 4; now below the defaults) and the two-block conv, at each
    distance; the cheap MLP at its defaults and the
    two-block conv at more training seeds, since a training run's accuracy
    moves with its seed by more than the test tasks' interval."""
    def protonet(epochs, distance, seed=SEED, **params):
        return ProtoNetClassifier(max_epochs=3 if quick else epochs,
                                  distance=distance, random_state=seed, **params)

    conv = dict(module=ConvNet, module__input_shape=(1, 8, 8))
    models = {("raw-pixel nearest centroid", None, None): PrototypeClassifier()}
    for seed in (SEED, 1) if quick else (SEED, 1, 2, 3, 4):
        for distance in DISTANCES:
            models["ProtoNet, MLP 64-128-128, defaults", distance, seed] = protonet(
                10, distance, seed)
    for distance in DISTANCES:
        models["ProtoNet, MLP 64-128-128", distance, SEED] = protonet(
            20, distance, module=MLP, meta_lr=3e-4, meta_batch_size=4)
    # ProtoNet's and Conv-4's defaults: pooling stops before the map falls
    # below 4x4, so the 8x8 digits pool once (a 1024-wide embedding).
    for distance in ("sqeuclidean", "euclidean"):
        models["ProtoNet, Conv-4 (4 blocks of 64, defaults)", distance, SEED] = (
            protonet(10, distance, **conv))
    # Two blocks: pooling once, the same 4x4 map.
    for seed in (SEED,) if quick else (SEED, 1, 2):
        for distance in DISTANCES if seed == SEED else DISTANCES[:2]:
            models["ProtoNet, Conv (2 blocks of 64)", distance, seed] = protonet(
                10, distance, seed, meta_batch_size=4, module__channels=(64, 64),
                **conv)
    return models


# ---------------------------------------------------------------------------
# easyfsl


def easyfsl_protonets():
    """easyfsl's ``PrototypicalNetworks`` and its squared-distance variant,
    and how easyfsl was imported."""
    import easyfsl
    try:
        from easyfsl.methods import PrototypicalNetworks
        how = "easyfsl.methods"
    except (ImportError, OSError, RuntimeError):  # torchvision unusable
        for name in [m for m in sys.modules if m.startswith("easyfsl.methods")]:
            del sys.modules[name]
        path = Path(easyfsl.__file__).parent / "methods"
        spec = importlib.util.spec_from_file_location(
            "easyfsl.methods", path / "__init__.py",
            submodule_search_locations=[str(path)])
        sys.modules["easyfsl.methods"] = importlib.util.module_from_spec(spec)
        from easyfsl.methods.prototypical_networks import PrototypicalNetworks
        how = ("easyfsl/methods/prototypical_networks.py without the package "
               "__init__ (torchvision does not import here)")

    class SquaredPrototypicalNetworks(PrototypicalNetworks):
        """Scores by negative squared Euclidean distance (Snell et al.)."""

        def l2_distance_to_prototypes(self, samples):
            return -torch.cdist(samples, self.prototypes).square()

    return ({"euclidean": PrototypicalNetworks,
             "sqeuclidean": SquaredPrototypicalNetworks},
            f"easyfsl {easyfsl.__version__} via {how}")


def as_tensors(tasks):
    """Each task as easyfsl takes it: support images and labels, query images
    and labels, labels as indices 0..n_way-1."""
    out = []
    for task in tasks:
        _, y_support, y_query = encode_labels(task)
        out.append((torch.as_tensor(task.X_support), torch.as_tensor(y_support),
                    torch.as_tensor(task.X_query), torch.as_tensor(y_query)))
    return out


def skmeta_order(n_tasks, meta_batch_size, epochs):
    """The meta-batches, in order, that ProtoNetClassifier(random_state=SEED)
    trains on: skmeta's sampler, seeded by the seed fit draws, epoch e
    shuffled with seed + e + 1 (skorch's history already holds the epoch)."""
    seed = int(check_random_state(SEED).randint(2**31))
    return [batch for epoch in range(epochs) for batch, _ in BatchSampler(
        n_tasks, meta_batch_size, seed, epoch=lambda e=epoch: e + 1)]


def train_easyfsl(model, tensors, batches, lr):
    """easyfsl's episodic training loop (its notebooks' ``training_epoch``),
    averaging the losses of a meta-batch's tasks before one Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for batch in batches:
        optimizer.zero_grad()
        loss = 0
        for index in batch:
            support, support_labels, query, query_labels = tensors[index]
            model.process_support_set(support, support_labels)
            loss = loss + criterion(model(query), query_labels)
        (loss / len(batch)).backward()
        optimizer.step()
    return model


def train_easyfsl_from(protonet_class, init, tensors, batches, lr):
    """A fresh easyfsl model from ``init``'s weights, trained."""
    return train_easyfsl(protonet_class(copy.deepcopy(init)), tensors, batches, lr)


def easyfsl_scores(model, tensors):
    """Query accuracy per task, as easyfsl evaluates."""
    model.eval()
    scores = []
    with torch.no_grad():
        for support, support_labels, query, query_labels in tensors:
            model.process_support_set(support, support_labels)
            scores.append(float((model(query).argmax(1) == query_labels)
                                .float().mean()))
    return np.array(scores)


def initial_mlp():
    """The initial weights both libraries start from."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return MLP(in_features=64)


def side_by_side(train, tests, quick):
    """Accuracy of ProtoNetClassifier and easyfsl on identical episodes,
    order, backbone and initial weights, at meta-batch 1 and the default."""
    classes, version = easyfsl_protonets()
    epochs, lr = (2 if quick else 10), 1e-3
    init, tensors = initial_mlp(), as_tensors(train)
    test_tensors = {k: as_tensors(test) for k, test in tests.items()}
    default_batch = ProtoNetClassifier().meta_batch_size
    rows = []
    for meta_batch in dict.fromkeys((1, default_batch)):
        batches = skmeta_order(len(train), meta_batch, epochs)
        for distance in ("euclidean", "sqeuclidean"):
            ours = ProtoNetClassifier(module=init, distance=distance,
                                      max_epochs=epochs, meta_batch_size=meta_batch,
                                      meta_lr=lr, random_state=SEED).fit(train)
            theirs = train_easyfsl(classes[distance](copy.deepcopy(init)), tensors,
                                   batches, lr)
            for k_shot, test in tests.items():
                for library, scores in (
                        ("skmeta", task_scores(ours, test)),
                        ("easyfsl", easyfsl_scores(theirs, test_tensors[k_shot]))):
                    mean, half = mean_confidence_interval(scores)
                    rows.append(dict(library=library, distance=distance,
                                     meta_batch_size=meta_batch,
                                     setting=f"5-way {k_shot}-shot", accuracy=mean,
                                     ci95=half))
                    print(f"{library:8} {distance:12} meta-batch {meta_batch} "
                          f"5-way {k_shot}-shot {100 * mean:.1f} ± {100 * half:.1f}",
                          flush=True)
    return rows, version


def speed(train, quick):
    """Meta-training tasks per second of both libraries, interleaved."""
    classes, _ = easyfsl_protonets()
    backbones = {"MLP 64-128-128": (initial_mlp(), 100 if quick else 500)}
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        backbones["Conv (2 blocks of 64)"] = (
            ConvNet((1, 8, 8), channels=(64, 64)), 20 if quick else 100)
    rounds = 2 if quick else 7
    default_batch = ProtoNetClassifier().meta_batch_size
    rows = []
    for backbone, (init, n_tasks) in backbones.items():
        tasks = list(train[:n_tasks])
        tensors = as_tensors(tasks)
        for meta_batch in dict.fromkeys((1, default_batch)):
            batches = skmeta_order(n_tasks, meta_batch, 1)

            ours = functools.partial(
                ProtoNetClassifier(module=init, max_epochs=1,
                                   meta_batch_size=meta_batch,
                                   random_state=SEED).fit, tasks)
            theirs = functools.partial(train_easyfsl_from, classes["euclidean"],
                                       init, tensors, batches, 1e-3)
            timings = {"skmeta": [], "easyfsl": []}
            ours(), theirs()  # warm-up
            for round_ in range(rounds):
                pair = [("skmeta", ours), ("easyfsl", theirs)]
                for library, run in pair if round_ % 2 == 0 else pair[::-1]:
                    start = time.perf_counter()
                    run()
                    timings[library].append(n_tasks / (time.perf_counter() - start))
            medians = {k: statistics.median(v) for k, v in timings.items()}
            rows.append(dict(backbone=backbone, meta_batch_size=meta_batch,
                             n_tasks=n_tasks, rounds=rounds,
                             skmeta_tasks_per_s=medians["skmeta"],
                             easyfsl_tasks_per_s=medians["easyfsl"],
                             ratio=medians["skmeta"] / medians["easyfsl"]))
            print(f"{backbone:22} meta-batch {meta_batch}: skmeta "
                  f"{medians['skmeta']:.0f} tasks/s, easyfsl "
                  f"{medians['easyfsl']:.0f} tasks/s, ratio "
                  f"{medians['skmeta'] / medians['easyfsl']:.2f}", flush=True)
    return rows


def main(quick):
    torch.set_num_threads(1)
    digits = load_digits_tasks()
    n_test = 100 if quick else 600
    train = episodes(digits, digits.train_classes, 10, 1, 5,
                     200 if quick else 1000, 0)
    tests = {k: episodes(digits, digits.test_classes, 5, k, 15, n_test, 1)
             for k in (1, 5)}
    started = time.perf_counter()
    rows, per_task = [], {}
    for (name, distance, seed), model in learners(quick).items():
        start = time.perf_counter()
        if hasattr(model, "adapt"):
            model.fit(train)
        fit_seconds = time.perf_counter() - start
        for k_shot, test in tests.items():
            scores = task_scores(model, test)
            per_task[name, distance, seed, k_shot] = scores
            mean, half = mean_confidence_interval(scores)
            rows.append(dict(method=name, distance=distance, seed=seed,
                             setting=f"5-way {k_shot}-shot", accuracy=mean,
                             ci95=half, fit_seconds=fit_seconds))
            print(f"{name:44} {distance or '':12} seed {seed} 5-way {k_shot}-shot "
                  f"{100 * mean:.1f} ± {100 * half:.1f}", flush=True)
    paired = []
    for name, seed in dict.fromkeys((n, s) for n, d, s, _ in per_task
                                    if d == "euclidean"):
        for k_shot in tests:
            mean, half = mean_confidence_interval(
                per_task[name, "euclidean", seed, k_shot]
                - per_task[name, "sqeuclidean", seed, k_shot])
            paired.append(dict(method=name, seed=seed, setting=f"5-way {k_shot}-shot",
                               euclidean_minus_sqeuclidean=mean, ci95=half))
    easyfsl_rows, version = side_by_side(train, tests, quick)
    speed_rows = speed(train, quick)
    write(dict(accuracy=rows, euclidean_minus_sqeuclidean=paired,
               easyfsl=easyfsl_rows, speed=speed_rows,
               settings=dict(n_test=n_test, n_train=len(train), quick=quick,
                             easyfsl=version, torch=torch.__version__,
                             threads=torch.get_num_threads(),
                             python=platform.python_version(),
                             total_seconds=time.perf_counter() - started)))


def percent(row):
    return f"{100 * row['accuracy']:.1f} ± {100 * row['ci95']:.1f} %"


def write(results):
    settings = results["settings"]
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if settings["quick"] else ""
    (RESULTS / f"protonet{suffix}.json").write_text(json.dumps(results, indent=2))
    rows = results["accuracy"]
    lines = [f"{settings['n_test']} test tasks over 12 unseen classes; "
             f"meta-trained on {settings['n_train']} 10-way 1-shot episodes of the "
             "28 training classes (training seed 0).", "",
             "| method | distance | 5-way 1-shot | 5-way 5-shot |",
             "| --- | --- | --- | --- |"]
    first = [r for r in rows if r["seed"] in (None, SEED)]
    for method, distance in dict.fromkeys((r["method"], r["distance"])
                                          for r in first):
        cells = [percent(r) for r in first
                 if (r["method"], r["distance"]) == (method, distance)]
        lines.append(f"| {method} | {distance or '–'} | {' | '.join(cells)} |")
    lines += ["", "Training seeds: accuracy (%) of each seed's run, and their mean:",
              "", "| method | distance | seeds | 5-way 1-shot | 5-way 5-shot |",
              "| --- | --- | --- | --- | --- |"]
    for method, distance in dict.fromkeys((r["method"], r["distance"])
                                          for r in rows):
        runs = [r for r in rows if (r["method"], r["distance"]) == (method, distance)]
        seeds = list(dict.fromkeys(r["seed"] for r in runs))
        if len(seeds) < 2:
            continue
        cells = []
        for setting in dict.fromkeys(r["setting"] for r in runs):
            values = [100 * r["accuracy"] for r in runs if r["setting"] == setting]
            cells.append(" / ".join(f"{v:.1f}" for v in values)
                         + f" (mean {np.mean(values):.1f})")
        lines.append(f"| {method} | {distance} | {', '.join(map(str, seeds))} | "
                     f"{' | '.join(cells)} |")
    lines += ["", "Euclidean minus squared Euclidean, paired by test task "
              "(points, ± 95 % interval), per training seed:", "",
              "| method | seed | 5-way 1-shot | 5-way 5-shot |",
              "| --- | --- | --- | --- |"]
    paired = results["euclidean_minus_sqeuclidean"]
    for method, seed in dict.fromkeys((r["method"], r["seed"]) for r in paired):
        cells = [f"{100 * r['euclidean_minus_sqeuclidean']:+.1f} ± "
                 f"{100 * r['ci95']:.1f}" for r in paired
                 if (r["method"], r["seed"]) == (method, seed)]
        lines.append(f"| {method} | {seed} | {' | '.join(cells)} |")
    lines += ["", f"Side by side with {settings['easyfsl']}: the MLP 64-128-128, "
              "10 epochs at Adam 1e-3 (ProtoNet's defaults), identical episodes, "
              "order, meta-batches and initial weights:", "",
              "| library | distance | meta-batch | 5-way 1-shot | 5-way 5-shot |",
              "| --- | --- | --- | --- | --- |"]
    easy = results["easyfsl"]
    for key in dict.fromkeys((r["meta_batch_size"], r["distance"], r["library"])
                             for r in easy):
        cells = [percent(r) for r in easy
                 if (r["meta_batch_size"], r["distance"], r["library"]) == key]
        lines.append(f"| {key[2]} | {key[1]} | {key[0]} | {' | '.join(cells)} |")
    lines += ["", "Meta-training speed, tasks per second on "
              f"{settings['threads']} CPU thread (median of interleaved rounds; "
              "skmeta's whole fit against easyfsl's loop on ready tensors):", "",
              "| embedding | meta-batch | skmeta | easyfsl | skmeta / easyfsl |",
              "| --- | --- | --- | --- | --- |"]
    for r in results["speed"]:
        lines.append(f"| {r['backbone']} | {r['meta_batch_size']} | "
                     f"{r['skmeta_tasks_per_s']:.0f} | {r['easyfsl_tasks_per_s']:.0f} "
                     f"| {r['ratio']:.2f}x |")
    for backbone in dict.fromkeys(r["backbone"] for r in results["speed"]):
        one, *default = [r for r in results["speed"] if r["backbone"] == backbone]
        if default:
            ratio = (default[0]["skmeta_tasks_per_s"]
                     / one["easyfsl_tasks_per_s"])
            lines.append(f"\n{backbone}: skmeta at meta-batch "
                         f"{default[0]['meta_batch_size']} against easyfsl's "
                         f"one-task-per-step loop: {ratio:.2f}x.")
    (RESULTS / f"protonet{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
