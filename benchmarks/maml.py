"""MAML speed, memory and accuracy: skmeta against learn2learn and higher.

One command runs every configuration back to back, each in a fresh
subprocess (so peak memory is that run's own), with the same network, the
same initial weights, the same hyperparameters and the same training tasks
(each seen once; skmeta visits them in its own shuffled order)::

    python benchmarks/maml.py            # full run (about 15 minutes)
    python benchmarks/maml.py --quick    # smoke run

Results go to benchmarks/results/maml.md and maml.json. learn2learn 0.2.0
and higher 0.2.1 are optional peers (``pip install skmeta[benchmarks]``);
learn2learn's Cython part does not build on Python 3.11, so a pure-Python
copy of its ``algorithms`` package can be given with ``--peers PATH`` (a
folder holding ``learn2learn/``; see ``--help``). A missing peer is skipped
with a notice. skmeta itself never imports them.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SEED = 0


# --------------------------------------------------------------------------
# tasks


def digits_tasks(n_tasks, classes, seed, n_query=15):
    from skmeta.datasets import load_digits_tasks
    from skmeta.tasks import EpisodeSampler
    digits = load_digits_tasks()
    pool = np.isin(digits.target, getattr(digits, classes))
    return list(EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                               k_shot=1, n_query=n_query, n_tasks=n_tasks,
                               random_state=seed))


def sinusoid_tasks(n_tasks, seed, n_query=10):
    from skmeta.datasets import make_sinusoid_tasks
    return make_sinusoid_tasks(n_tasks, k_shot=10, n_query=n_query, random_state=seed)


def as_tensors(task, classification):
    import torch
    if classification:
        classes, ys = np.unique(task.y_support, return_inverse=True)
        yq = np.searchsorted(classes, task.y_query)
        return (torch.as_tensor(task.X_support), torch.as_tensor(ys),
                torch.as_tensor(task.X_query), torch.as_tensor(yq))
    return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (
        task.X_support, task.y_support, task.X_query, task.y_query))


def loss_fn(classification):
    import torch.nn.functional as F
    if classification:
        return F.cross_entropy
    return lambda out, y: F.mse_loss(out[:, 0], y)


# --------------------------------------------------------------------------
# learners: each trains on `tasks` and returns an adapt(task, steps) -> outputs


def network(cfg):
    import torch

    from skmeta.nn import MLP, ConvNet
    torch.manual_seed(SEED)
    if cfg.get("conv"):
        return ConvNet((1, 8, 8), out_features=5)
    return MLP(cfg["in"], cfg["hidden"], cfg["out"])


def train_skmeta(cfg, net, tasks):
    from skmeta import MAMLClassifier, MAMLRegressor
    estimator = MAMLClassifier if cfg["classification"] else MAMLRegressor
    model = estimator(net, algorithm=cfg.get("algorithm", "maml"),
                      inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      meta_batch_size=cfg["meta_batch"], meta_lr=cfg["meta_lr"],
                      chunk_size=cfg.get("chunk_size", "auto"), max_epochs=1,
                      random_state=SEED)
    start = time.perf_counter()
    model.fit(tasks)
    elapsed = time.perf_counter() - start

    def evaluate(test, steps):
        predictions = model.set_params(test_inner_steps=steps).predict(test)
        return [score(t, p, cfg["classification"]) for t, p in
                zip(test, predictions, strict=True)]
    return elapsed, evaluate


def train_learn2learn(cfg, net, tasks):
    import learn2learn as l2l
    maml = l2l.algorithms.MAML(net, lr=cfg["inner_lr"], first_order=False)
    batches = [[as_tensors(t, cfg["classification"]) for t in tasks[i:i + cfg[
        "meta_batch"]]] for i in range(0, len(tasks), cfg["meta_batch"])]
    loss = loss_fn(cfg["classification"])

    def adapt(task, steps):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(loss(learner(task[0]), task[1]))
        return learner

    elapsed = _meta_train(maml.parameters(), cfg, batches, lambda task: loss(
        adapt(task, cfg["inner_steps"])(task[2]), task[3]))

    def evaluate(test, steps):
        return [score(t, adapt(as_tensors(t, cfg["classification"]), steps)(
            as_tensors(t, cfg["classification"])[2]).detach().numpy(),
            cfg["classification"], raw=True) for t in test]
    return elapsed, evaluate


def train_higher(cfg, net, tasks):
    import higher
    import torch
    batches = [[as_tensors(t, cfg["classification"]) for t in tasks[i:i + cfg[
        "meta_batch"]]] for i in range(0, len(tasks), cfg["meta_batch"])]
    loss = loss_fn(cfg["classification"])
    inner_optimizer = torch.optim.SGD(net.parameters(), lr=cfg["inner_lr"])

    def query_output(task, steps, track):
        with higher.innerloop_ctx(net, inner_optimizer, copy_initial_weights=False,
                                  track_higher_grads=track) as (fnet, diffopt):
            for _ in range(steps):
                diffopt.step(loss(fnet(task[0]), task[1]))
            return fnet(task[2])

    elapsed = _meta_train(net.parameters(), cfg, batches, lambda task: loss(
        query_output(task, cfg["inner_steps"], True), task[3]))

    def evaluate(test, steps):
        return [score(t, query_output(as_tensors(t, cfg["classification"]), steps,
                                      False).detach().numpy(),
                      cfg["classification"], raw=True) for t in test]
    return elapsed, evaluate


def _meta_train(parameters, cfg, batches, task_loss):
    """The peers' meta-training loop: one backward per task, as their
    documentation does it."""
    import torch
    optimizer = torch.optim.Adam(parameters, lr=cfg["meta_lr"])
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad()
        for task in batch:
            (task_loss(task) / len(batch)).backward()
        optimizer.step()
    return time.perf_counter() - start


def score(task, outputs, classification, raw=False):
    """Query accuracy (classification) or MSE (regression) of one task."""
    if not classification:
        return float(np.mean((np.ravel(outputs) - task.y_query) ** 2))
    if raw:
        classes = np.unique(task.y_support)
        outputs = classes[np.argmax(outputs, axis=1)]
    return float(np.mean(outputs == task.y_query))


LEARNERS = {"skmeta": train_skmeta, "learn2learn": train_learn2learn,
            "higher": train_higher}


# --------------------------------------------------------------------------
# one run, in its own process


def run(cfg):
    import torch
    torch.set_num_threads(cfg["threads"])
    classification = cfg["classification"]
    if classification:
        train = digits_tasks(cfg["n_train"], "train_classes", SEED)
        test = digits_tasks(cfg["n_test"], "test_classes", SEED + 1)
    else:
        train = sinusoid_tasks(cfg["n_train"], SEED)
        test = sinusoid_tasks(cfg["n_test"], SEED + 1, n_query=100)
    rss_before = _peak_rss_mb()
    if cfg["learner"] in ("centroid", "protonet", "pretrained"):
        return {**BASELINES[cfg["learner"]](cfg, train, test),
                "rss_before_mb": rss_before}
    net = network(cfg)
    elapsed, evaluate = LEARNERS[cfg["learner"]](cfg, net, train)
    result = {"tasks_per_s": len(train) / elapsed, "peak_rss_mb": _peak_rss_mb(),
              "rss_before_mb": rss_before}
    for steps in cfg["test_steps"]:
        try:
            result[f"test_{steps}"] = _mean_ci(evaluate(test, steps))
        except FloatingPointError as error:  # skmeta refuses to predict NaN
            result[f"test_{steps}"] = str(error).split(";")[0]
    return result


def speed(cfg):
    """Tasks/second of each peer, measured in interleaved rounds in this one
    process (the machine may be shared: interleaving exposes every peer to
    the same load, and the median over rounds is reported)."""
    import torch
    torch.set_num_threads(cfg["threads"])
    tasks = (digits_tasks(cfg["n_speed"], "train_classes", SEED)
             if cfg["classification"] else sinusoid_tasks(cfg["n_speed"], SEED))
    warm_up = tasks[:2 * cfg["meta_batch"]]
    labels = {peer: (peer, {}) for peer in cfg["peers"]}
    labels.update({label: ("skmeta", extra)
                   for label, extra in cfg.get("extra", {}).items()})
    rounds = {label: [] for label in labels}
    for learner, extra in labels.values():
        LEARNERS[learner]({**cfg, **extra}, network(cfg), warm_up)
    for _ in range(cfg["rounds"]):
        for label, (learner, extra) in labels.items():
            elapsed, _ = LEARNERS[learner]({**cfg, **extra}, network(cfg), tasks)
            rounds[label].append(len(tasks) / elapsed)
    return {"rounds": rounds}


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mean_ci(values):
    values = np.asarray(values, dtype=float)
    return [float(values.mean()), float(1.96 * values.std(ddof=1)
                                        / np.sqrt(len(values)))]


def centroid_baseline(cfg, train, test):
    from skmeta.protonet import PrototypeClassifier
    scores = [PrototypeClassifier().fit(t.X_support, t.y_support).score(
        t.X_query, t.y_query) for t in test]
    return {"test_0": _mean_ci(scores)}


def protonet_baseline(cfg, train, test):
    from skmeta import ProtoNetClassifier
    from skmeta.nn import ConvNet
    params = ({"module": ConvNet, "module__input_shape": (1, 8, 8)}
              if cfg.get("conv") else {})
    model = ProtoNetClassifier(max_epochs=1, meta_batch_size=cfg["meta_batch"],
                               random_state=SEED, **params)
    start = time.perf_counter()
    model.fit(train)
    elapsed = time.perf_counter() - start
    scores = [score(t, p, True) for t, p in zip(test, model.predict(test),
                                                strict=True)]
    return {"tasks_per_s": len(train) / elapsed, "test_0": _mean_ci(scores)}


def pretrained_baseline(cfg, train, test):
    """The MAML paper's sinusoid baseline: one network trained on all
    training tasks pooled, then fine-tuned on each support set."""
    import torch

    from skmeta.maml import MAMLAdaptedRegressor
    net = network(cfg)
    X = torch.as_tensor(np.concatenate([t.X_support for t in train]))
    y = torch.as_tensor(np.concatenate([t.y_support for t in train]),
                        dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), cfg["meta_lr"])
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(len(train) // cfg["meta_batch"]):
        rows = torch.randint(len(X), (cfg["meta_batch"] * 10,), generator=generator)
        optimizer.zero_grad()
        (net(X[rows])[:, 0] - y[rows]).square().mean().backward()
        optimizer.step()
    net.requires_grad_(False)
    result = {}
    for steps in cfg["test_steps"]:
        adapted = MAMLAdaptedRegressor(net, cfg["inner_lr"], steps)
        result[f"test_{steps}"] = _mean_ci([score(t, adapted.fit(
            t.X_support, t.y_support).predict(t.X_query), False) for t in test])
    return result


BASELINES = {"centroid": centroid_baseline, "protonet": protonet_baseline,
             "pretrained": pretrained_baseline}


# --------------------------------------------------------------------------
# the plan


DIGITS = dict(classification=True, **{"in": 64}, hidden=(128, 128), out=5,
              inner_lr=0.5, inner_steps=1, meta_batch=32, meta_lr=1e-3,
              test_steps=(1, 3))
SINUSOID = dict(classification=False, **{"in": 1}, hidden=(40, 40), out=1,
                inner_lr=0.01, inner_steps=1, meta_batch=25, meta_lr=1e-3,
                test_steps=(1, 10))
PEERS = ("skmeta", "learn2learn", "higher")


def plan(quick):
    scale = 0.02 if quick else 1.0
    n_test = 30 if quick else 600

    def sized(base, n_train, **extra):
        return {**base, "n_train": max(int(n_train * scale), 2 * base["meta_batch"]),
                "n_test": n_test, "threads": 1, **extra}

    digits, sinusoid = sized(DIGITS, 16000), sized(SINUSOID, 20000)
    memory = sized(DIGITS, 512 * 3, meta_batch=512, inner_steps=5, test_steps=())
    rounds = {"rounds": 2 if quick else 5}
    speeds = [("digits", {**digits, **rounds, "n_speed": 640 if quick else 1280}),
              ("sinusoid", {**sinusoid, **rounds, "n_speed": 500 if quick else 2500}),
              ("digits, 2 threads", {**digits, "rounds": 3, "threads": 2,
                                     "n_speed": 320 if quick else 640}),
              ("digits, meta-batch 512, 5 steps", {
                  **memory, "rounds": 3, "n_speed": 1024,
                  "extra": {"skmeta, one chunk (naive vmap)": {"chunk_size": 512}}})]
    runs = []
    for name, cfg in (("digits", digits), ("sinusoid", sinusoid)):
        runs += [(name, peer, {**cfg, "learner": peer}) for peer in PEERS]
    runs += [("digits, meta-batch 512, 5 steps", peer, {**memory, "learner": peer})
             for peer in PEERS]
    runs.append(("digits, meta-batch 512, 5 steps", "skmeta, one chunk (naive vmap)",
                 {**memory, "learner": "skmeta", "chunk_size": 512}))
    for algorithm in ("fomaml", "metasgd", "anil", "reptile"):
        extra = {"inner_steps": 5} if algorithm == "reptile" else {}
        runs += [(f"{name}, variants", f"skmeta {algorithm}",
                  {**cfg, "learner": "skmeta", "algorithm": algorithm, **extra})
                 for name, cfg in (("digits", digits), ("sinusoid", sinusoid))]
    runs += [
        ("digits, baselines", "raw nearest centroid",
         {**digits, "learner": "centroid"}),
        ("digits, baselines", "ProtoNetClassifier (MLP)",
         {**digits, "learner": "protonet"}),
        ("digits, baselines", "ProtoNetClassifier (ConvNet, 4000 tasks)",
         {**sized(DIGITS, 4000), "learner": "protonet", "conv": True}),
        ("digits, baselines", "skmeta MAML (ConvNet, 4000 tasks)",
         {**sized(DIGITS, 4000 if not quick else 3200), "learner": "skmeta",
          "conv": True}),
        ("sinusoid, baselines", "pretrained on all tasks, fine-tuned",
         {**sinusoid, "learner": "pretrained"}),
    ]
    return speeds, runs


def available(learner):
    module = {"learn2learn": "learn2learn", "higher": "higher"}.get(learner)
    if module is None:
        return True
    probe = subprocess.run([sys.executable, "-c", f"import {module}"],
                           capture_output=True, env=_env())
    return probe.returncode == 0


def _env(threads=1):
    # passive waiting: spinning OpenMP threads collapse on a loaded machine
    return {**os.environ, "OMP_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",
            "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, [
                str(Path(__file__).parents[1]), ARGS.peers,
                os.environ.get("PYTHONPATH")]))}


def worker(cfg, notices, label):
    """Run one configuration in a fresh process; its JSON result or None."""
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                         capture_output=True, text=True, env=_env(cfg["threads"]))
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        notices.append(f"{label} failed: {out.stderr.strip().splitlines()[-1]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    (speeds, runs), notices = plan(ARGS.quick), []
    skipped = {peer for peer in ("learn2learn", "higher") if not available(peer)}
    for peer in sorted(skipped):
        notices.append(f"{peer} is not installed: its rows are skipped "
                       "(pip install skmeta[benchmarks], or --peers PATH).")
        print("NOTICE:", notices[-1], flush=True)
    peers = [peer for peer in PEERS if peer not in skipped]
    speed_results = []
    for setting, cfg in speeds:
        result = worker({**cfg, "peers": peers}, notices, f"{setting} speed")
        if result:
            speed_results.append({"setting": setting, "config": cfg, **result})
            print(json.dumps(speed_results[-1]["rounds"]), flush=True)
    results = []
    for setting, label, cfg in runs:
        if cfg["learner"] in skipped:
            continue
        result = worker(cfg, notices, f"{setting} / {label}")
        if result:
            results.append({"setting": setting, "label": label, "config": cfg,
                            **result})
            print(json.dumps({k: v for k, v in results[-1].items()
                              if k != "config"}), flush=True)
    write(speed_results, results, notices)


def write(speed_results, results, notices):
    import torch
    RESULTS.mkdir(exist_ok=True)
    name = "maml_quick" if ARGS.quick else "maml"
    meta = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "notices": notices}
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"meta": meta, "speed": speed_results, "results": results}, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(speed_results, results, meta))
    print((RESULTS / f"{name}.md").read_text())


def _median(values):
    return float(np.median(values))


def markdown(speed_results, results, meta):
    lines = [f"MAML benchmark: torch {meta['torch']}, Python {meta['python']}, "
             f"{meta['cpus']} CPUs (load average at the end: "
             f"{meta['load_average'][0]:.1f}). Intervals are 95 %.", ""]
    lines += [f"- {notice}" for notice in meta["notices"]]
    lines += ["", "Meta-training speed, tasks/second: medians over interleaved "
              "rounds in one process; ratio = median of the per-round ratios.", "",
              "| setting | skmeta | learn2learn | higher | skmeta / learn2learn | "
              "skmeta / higher |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in speed_results:
        rounds = r["rounds"]
        for label in [p for p in rounds if p not in PEERS[1:]]:
            cells = [f"{_median(rounds[p]):.0f}" if p in rounds else "skipped"
                     for p in (label, *PEERS[1:])]
            ratios = [f"{_median(np.divide(rounds[label], rounds[p])):.2f}x"
                      if p in rounds else "" for p in PEERS[1:]]
            name = r["setting"] + ("" if label == "skmeta" else f" ({label})")
            lines.append(f"| {name} | {' | '.join(cells + ratios)} |")
    lines += ["", "Accuracy (5-way 1-shot, 600 test episodes on unseen classes) or "
              "query MSE (600 sinusoid tasks), and peak memory (each run in its "
              "own process; resident set before training in brackets; tasks/s "
              "of that single run).", "",
              "| setting | learner | tasks/s | peak RSS MB | test, fewer steps | "
              "test, more steps |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        speed = r.get("tasks_per_s")
        memory = (f"{r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f})"
                  if "peak_rss_mb" in r else "")
        unit = "acc" if r["config"]["classification"] else "MSE"
        cells = [f"{v[0]:.3f} ± {v[1]:.3f} ({unit}, {k.split('_')[1]} st)"
                 if isinstance(v, list) else f"{k.split('_')[1]} st: {v}"
                 for k, v in r.items() if k.startswith("test_")]
        cells += [""] * (2 - len(cells))
        lines.append(f"| {r['setting']} | {r['label']} | "
                     f"{'' if speed is None else f'{speed:.0f}'} | {memory} | "
                     f"{cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--peers", default=os.environ.get("SKMETA_PEERS"),
                        help="folder put on the peers' sys.path, e.g. one holding "
                        "a pure-Python learn2learn/ extracted from its sdist "
                        "(learn2learn/{algorithms,utils,nn,_version.py} and an "
                        "__init__.py importing algorithms and utils only)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.worker:
        config = json.loads(ARGS.worker)
        config["hidden"] = tuple(config["hidden"])
        print(json.dumps((speed if "rounds" in config else run)(config)))
    else:
        main()
