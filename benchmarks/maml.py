"""MAML speed, memory and accuracy: skmeta against learn2learn and higher.

One command runs every configuration back to back, each in a fresh
subprocess (so peak memory is that run's own), with the same network, the
same initial weights, the same hyperparameters and the same training tasks
(each seen once; skmeta visits them in its own shuffled order)::

    python benchmarks/maml.py            # full run (about 20 minutes)
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


def digits_tasks(n_tasks, classes, seed, n_query=15, sampler=False):
    """Episodes as a list, or (``sampler=True``) the EpisodeSampler itself,
    which draws each episode when it is read."""
    from skmeta.datasets import load_digits_tasks
    from skmeta.tasks import EpisodeSampler
    digits = load_digits_tasks()
    pool = np.isin(digits.target, getattr(digits, classes))
    episodes = EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                              k_shot=1, n_query=n_query, n_tasks=n_tasks,
                              random_state=seed)
    return episodes if sampler else list(episodes)


def sinusoid_tasks(n_tasks, seed, n_query=10):
    from skmeta.datasets import make_sinusoid_tasks
    return make_sinusoid_tasks(n_tasks, k_shot=10, n_query=n_query, random_state=seed)


def ragged_sinusoid_tasks(n_tasks, seed, ragged=True):
    """Sinusoid tasks of 2-4 support and 4-11 query points each, as on real
    data where every subject has its own count (``ragged=False``: the same
    tasks uncut, 4 support and 11 query points each)."""
    from skmeta import Task
    from skmeta.datasets import make_sinusoid_tasks
    tasks = make_sinusoid_tasks(n_tasks, k_shot=4, n_query=11, random_state=seed)
    if not ragged:
        return list(tasks)
    rng = np.random.default_rng(seed)
    return [Task(t.X_support[:k], t.y_support[:k], t.X_query[:q], t.y_query[:q])
            for t, k, q in zip(tasks, rng.integers(2, 5, n_tasks),
                               rng.integers(4, 12, n_tasks), strict=True)]


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
                      validation_fraction=None, random_state=SEED)
    if "standardize" in model.get_params():  # the peers see the raw data
        model.set_params(standardize=False)
    if cfg.get("container") == "sampler":
        tasks = digits_tasks(len(tasks), "train_classes", SEED, sampler=True)
    if cfg.get("container") == "uniform":
        tasks = ragged_sinusoid_tasks(len(tasks), SEED, ragged=False)
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


def train_plain(cfg, net, tasks):
    """A plain torch.func MAML: vmap over the tasks of a meta-batch, one
    backward per meta-batch, labels encoded and arrays stacked per batch."""
    import torch
    from torch.func import functional_call, grad, vmap
    loss = loss_fn(cfg["classification"])
    params = dict(net.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=cfg["meta_lr"])

    def adapted(p, xs, ys, steps):
        for _ in range(steps):
            g = grad(lambda q: loss(functional_call(net, q, (xs,)), ys))(p)
            p = {k: p[k] - cfg["inner_lr"] * g[k] for k in p}
        return p

    def query_loss(p, xs, ys, xq, yq):
        return loss(functional_call(net, adapted(p, xs, ys, cfg["inner_steps"]),
                                    (xq,)), yq)

    batched = vmap(query_loss, in_dims=(None, 0, 0, 0, 0))
    start = time.perf_counter()
    for i in range(0, len(tasks), cfg["meta_batch"]):
        arrays = zip(*(as_arrays(t, cfg["classification"])
                       for t in tasks[i:i + cfg["meta_batch"]]), strict=True)
        optimizer.zero_grad()
        batched(params, *(torch.as_tensor(np.stack(a)) for a in arrays)).mean(
            ).backward()
        optimizer.step()
    elapsed = time.perf_counter() - start

    def evaluate(test, steps):
        raise NotImplementedError("the plain loop is a speed reference only")
    return elapsed, evaluate


def as_arrays(task, classification):
    if classification:
        classes, ys = np.unique(task.y_support, return_inverse=True)
        return (task.X_support, ys, task.X_query,
                np.searchsorted(classes, task.y_query))
    return (task.X_support, task.y_support.astype(np.float32), task.X_query,
            task.y_query.astype(np.float32))


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


LEARNERS = {"skmeta": train_skmeta, "plain vmap loop": train_plain,
            "learn2learn": train_learn2learn, "higher": train_higher}


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
             if cfg["classification"]
             else ragged_sinusoid_tasks(cfg["n_speed"], SEED) if cfg.get("ragged")
             else sinusoid_tasks(cfg["n_speed"], SEED))
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


def latency(cfg):
    """Milliseconds per task of adapting to new tasks and predicting their
    query sets, interleaved rounds in this one process: one task at a time
    (skmeta's adapt + predict, learn2learn's clone + adapt + forward, a plain
    torch.func step), and 600 tasks at once (skmeta's predict(tasks), the
    learn2learn loop, a plain vmap)."""
    import torch
    from torch.func import functional_call, grad, vmap
    torch.set_num_threads(cfg["threads"])
    classification, steps = cfg["classification"], cfg["test_steps"][0]
    tasks = (digits_tasks(cfg["n_test"], "test_classes", SEED + 1)
             if classification else sinusoid_tasks(cfg["n_test"], SEED + 1))
    train = (digits_tasks(2 * cfg["meta_batch"], "train_classes", SEED)
             if classification else sinusoid_tasks(2 * cfg["meta_batch"], SEED))
    _, _ = train_skmeta(cfg, network(cfg), train)  # warm-up
    from skmeta import MAMLClassifier, MAMLRegressor
    model = (MAMLClassifier if classification else MAMLRegressor)(
        network(cfg), inner_lr=cfg["inner_lr"], test_inner_steps=steps,
        max_epochs=1, validation_fraction=None, random_state=SEED)
    if "standardize" in model.get_params():
        model.set_params(standardize=False)
    model.fit(train)
    loss = loss_fn(classification)
    net = network(cfg)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def plain_adapt(p, xs, ys):
        for _ in range(steps):
            g = grad(lambda q: loss(functional_call(net, q, (xs,)), ys))(p)
            p = {k: p[k] - cfg["inner_lr"] * g[k] for k in p}
        return p

    def plain_one(task):
        xs, ys, xq, _ = (torch.as_tensor(a) for a in as_arrays(task, classification))
        with torch.no_grad():
            return functional_call(net, plain_adapt(params, xs, ys), (xq,)).numpy()

    batched = vmap(lambda p, xs, ys, xq: functional_call(
        net, plain_adapt(p, xs, ys), (xq,)), in_dims=(None, 0, 0, 0))

    def plain_all(tasks):
        arrays = list(zip(*(as_arrays(t, classification) for t in tasks),
                          strict=True))[:3]
        with torch.no_grad():
            return batched(params, *(torch.as_tensor(np.stack(a)) for a in arrays))

    one = {"skmeta adapt + predict": lambda t: model.adapt(
        t.X_support, t.y_support).predict(t.X_query),
        "plain torch.func": plain_one}
    other = _learner_without_steps(classification, train)
    one[OTHER_LATENCY] = lambda t: other.adapt(t.X_support, t.y_support).predict(
        t.X_query)
    many = {"skmeta predict(tasks)": model.predict, "plain vmap": plain_all}
    if "learn2learn" in cfg["peers"]:
        import learn2learn as l2l
        maml = l2l.algorithms.MAML(network(cfg), lr=cfg["inner_lr"])

        def l2l_one(task):
            xs, ys, xq, _ = (torch.as_tensor(a)
                             for a in as_arrays(task, classification))
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(loss(learner(xs), ys))
            return learner(xq).detach().numpy()
        one["learn2learn clone + adapt"] = l2l_one
        many["learn2learn loop"] = lambda tasks: [l2l_one(t) for t in tasks]
    n_one = min(200, len(tasks))
    rounds = {label: [] for label in [*one, *many]}
    for _ in range(cfg["rounds"]):
        for label, f in one.items():
            start = time.perf_counter()
            for task in tasks[:n_one]:
                f(task)
            rounds[label].append(1e3 * (time.perf_counter() - start) / n_one)
        for label, f in many.items():
            start = time.perf_counter()
            f(tasks)
            rounds[label].append(1e3 * (time.perf_counter() - start) / len(tasks))
    return {"latency": rounds}


def _learner_without_steps(classification, train):
    """ProtoNetClassifier (classification) or MetaBayesianRidge, fitted
    briefly: their one-task latency stands beside MAML's."""
    from skmeta import MetaBayesianRidge, ProtoNetClassifier
    if classification:
        return ProtoNetClassifier(max_epochs=1, random_state=SEED).fit(train)
    return MetaBayesianRidge(max_epochs=1, validation_fraction=None,
                             random_state=SEED).fit(train)


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
PEERS = ("skmeta", "plain vmap loop", "learn2learn", "higher")
UNIFORM = "skmeta, the same tasks uncut: 4 support, 11 query points each"
OTHER_LATENCY = "skmeta, a learner without inner steps"
ACCURACY_PEERS = ("skmeta", "learn2learn", "higher")


def plan(quick):
    scale = 0.02 if quick else 1.0
    n_test = 30 if quick else 600

    def sized(base, n_train, **extra):
        return {**base, "n_train": max(int(n_train * scale), 2 * base["meta_batch"]),
                "n_test": n_test, "threads": 1, **extra}

    digits, sinusoid = sized(DIGITS, 16000), sized(SINUSOID, 20000)
    memory = sized(DIGITS, 512 * 3, meta_batch=512, inner_steps=5, test_steps=())
    rounds = {"rounds": 2 if quick else 5}
    speeds = [("digits", {**digits, **rounds, "n_speed": 640 if quick else 1280,
                          "extra": {"skmeta, EpisodeSampler read per batch": {
                              "container": "sampler"}}}),
              ("sinusoid", {**sinusoid, **rounds, "n_speed": 500 if quick else 2500}),
              ("sinusoid, ragged tasks (2-4 support, 4-11 query points)", {
                  **sinusoid, **rounds, "n_speed": 500 if quick else 2500,
                  "ragged": True, "peers": ["skmeta", "learn2learn"],
                  "extra": {UNIFORM: {"container": "uniform"}}}),
              ("digits, 2 threads", {**digits, "rounds": 3, "threads": 2,
                                     "n_speed": 320 if quick else 640}),
              ("digits, meta-batch 512, 5 steps", {
                  **memory, "rounds": 3, "n_speed": 1024,
                  "extra": {"skmeta, one chunk (naive vmap)": {"chunk_size": 512}}})]
    runs = []
    for name, cfg in (("digits", digits), ("sinusoid", sinusoid)):
        runs += [(name, peer, {**cfg, "learner": peer}) for peer in ACCURACY_PEERS]
    runs += [("digits, meta-batch 512, 5 steps", peer, {**memory, "learner": peer})
             for peer in ACCURACY_PEERS]
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
        # Conv-4's 1024-wide embedding overshoots at inner_lr=0.5 (58 % after
        # one step, 25 % after three); 0.1 did best of 0.05, 0.1 and 0.5
        ("digits, baselines", "skmeta MAML (ConvNet, 4000 tasks, inner_lr=0.1)",
         {**sized(DIGITS, 4000 if not quick else 3200), "learner": "skmeta",
          "conv": True, "inner_lr": 0.1}),
        ("sinusoid, baselines", "pretrained on all tasks, fine-tuned",
         {**sinusoid, "learner": "pretrained"}),
    ]
    latencies = [(name, {**cfg, "latency": True, "rounds": 2 if quick else 3})
                 for name, cfg in (("digits", digits), ("sinusoid", sinusoid))]
    return speeds, runs, latencies


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
    (speeds, runs, latencies), notices = plan(ARGS.quick), []
    parts = set(ARGS.only.split(","))
    skipped = {peer for peer in ("learn2learn", "higher") if not available(peer)}
    for peer in sorted(skipped):
        notices.append(f"{peer} is not installed: its rows are skipped "
                       "(pip install skmeta[benchmarks], or --peers PATH).")
        print("NOTICE:", notices[-1], flush=True)
    peers = [peer for peer in PEERS if peer not in skipped]
    speed_results, latency_results = [], []
    for setting, cfg in latencies if "latency" in parts else ():
        result = worker({**cfg, "peers": peers}, notices, f"{setting} latency")
        if result:
            latency_results.append({"setting": setting, **result})
            print(json.dumps(latency_results[-1]), flush=True)
    for setting, cfg in speeds if "speed" in parts else ():
        result = worker({**cfg, "peers": [p for p in peers
                                          if p in cfg.get("peers", peers)]},
                        notices, f"{setting} speed")
        if result:
            speed_results.append({"setting": setting, "config": cfg, **result})
            print(json.dumps(speed_results[-1]["rounds"]), flush=True)
    results = []
    for setting, label, cfg in runs if "accuracy" in parts else ():
        if cfg["learner"] in skipped:
            continue
        result = worker(cfg, notices, f"{setting} / {label}")
        if result:
            results.append({"setting": setting, "label": label, "config": cfg,
                            **result})
            print(json.dumps({k: v for k, v in results[-1].items()
                              if k != "config"}), flush=True)
    previous = RESULTS / ("maml_quick.json" if ARGS.quick else "maml.json")
    if previous.exists():  # parts not run keep their last results
        saved = json.loads(previous.read_text())
        speed_results = speed_results or saved.get("speed", [])
        latency_results = latency_results or saved.get("latency", [])
        results = results or saved.get("results", [])
    write(speed_results, results, notices, latency_results)


def write(speed_results, results, notices, latency_results=()):
    import torch
    RESULTS.mkdir(exist_ok=True)
    name = "maml_quick" if ARGS.quick else "maml"
    meta = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "notices": notices}
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"meta": meta, "speed": speed_results, "latency": latency_results,
         "results": results}, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(speed_results, results, meta,
                                                 latency_results))
    print((RESULTS / f"{name}.md").read_text())


def _median(values):
    return float(np.median(values))


def markdown(speed_results, results, meta, latency_results=()):
    lines = [f"MAML benchmark: torch {meta['torch']}, Python {meta['python']}, "
             f"{meta['cpus']} CPUs (load average at the end: "
             f"{meta['load_average'][0]:.1f}). Intervals are 95 %.", ""]
    lines += [f"- {notice}" for notice in meta["notices"]]
    lines += ["", "Meta-training speed, tasks/second: medians over interleaved "
              "rounds in one process; ratio = median of the per-round ratios.", "",
              "| setting | " + " | ".join(PEERS) + " | " + " | ".join(
                  f"skmeta / {p}" for p in PEERS[1:]) + " |",
              "| --- |" + " ---: |" * (2 * len(PEERS) - 1)]
    for r in speed_results:
        rounds = r["rounds"]
        for label in [p for p in rounds if p not in PEERS[1:]]:
            cells = [f"{_median(rounds[p]):.0f}" if p in rounds else "skipped"
                     for p in (label, *PEERS[1:])]
            ratios = [f"{_median(np.divide(rounds[label], rounds[p])):.2f}x"
                      if p in rounds else "" for p in PEERS[1:]]
            name = r["setting"] + ("" if label == "skmeta" else f" ({label})")
            lines.append(f"| {name} | {' | '.join(cells + ratios)} |")
    for r in speed_results:
        if UNIFORM in r["rounds"]:
            ratio = _median(np.divide(r["rounds"]["skmeta"], r["rounds"][UNIFORM]))
            lines += ["", f"Ragged tasks meta-train at {ratio:.2f}x the speed of "
                      "the same tasks uncut (every task of one shape), same run "
                      "(they are padded to a few shared sizes; the plain vmap "
                      "loop cannot stack them)."]
    if latency_results:
        lines += ["", "Adapting to new tasks and predicting their query sets, "
                  "milliseconds per task (medians over interleaved rounds; "
                  "one task at a time over 200 tasks, and 600 tasks at once); "
                  "ratio = the peer's time over skmeta's.", "",
                  "| setting | way | skmeta | plain torch.func | learn2learn | "
                  "learn2learn / skmeta | plain / skmeta |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in latency_results:
            rounds = r["latency"]
            for way, labels in (("one task", ("skmeta adapt + predict",
                                              "plain torch.func",
                                              "learn2learn clone + adapt")),
                                ("600 tasks", ("skmeta predict(tasks)", "plain vmap",
                                               "learn2learn loop"))):
                ours = rounds[labels[0]]
                cells = [f"{_median(rounds[k]):.3f}" if k in rounds else "skipped"
                         for k in labels]
                ratios = [f"{_median(np.divide(rounds[k], ours)):.2f}x"
                          if k in rounds else "" for k in (labels[2], labels[1])]
                lines.append(f"| {r['setting']} | {way} | {' | '.join(cells)} | "
                             f"{' | '.join(ratios)} |")
            peer = rounds.get("learn2learn clone + adapt")
            if OTHER_LATENCY in rounds and peer:
                other = ("ProtoNetClassifier()" if r["setting"] == "digits"
                         else "MetaBayesianRidge()")
                ours = rounds[OTHER_LATENCY]
                lines.append(f"| {r['setting']} | one task, {other} | "
                             f"{_median(ours):.3f} | | {_median(peer):.3f} | "
                             f"{_median(np.divide(peer, ours)):.2f}x | |")
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
    parser.add_argument("--only", default="latency,speed,accuracy",
                        help="comma-separated parts to run: latency, speed, "
                        "accuracy (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.worker:
        config = json.loads(ARGS.worker)
        config["hidden"] = tuple(config["hidden"])
        task = (latency if config.get("latency") else speed if "rounds" in config
                else run)
        print(json.dumps(task(config)))
    else:
        main()
