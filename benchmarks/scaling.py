"""Scale-out measurements: a TaskStore of a million tasks, and data-parallel
meta-training.

1. Writes 1,000,000 small tasks to a TaskStore, then meta-trains
   ProtoNetClassifier for one epoch over the store, sampling the process's
   resident memory as it goes: it stays flat. Also compares training
   throughput from the store with an in-memory list on the same 100,000
   tasks (ratio from one run).
2. Fits ProtoNetClassifier (Conv-4 on digits) with 1 process and with 2
   data-parallel gloo processes on the same global meta-batches, and reports
   tasks per second of each.

Run: python benchmarks/scaling.py [--quick]
Writes benchmarks/results/scaling.md and .json.
"""

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from skmeta import ProtoNetClassifier, Task
from skmeta.datasets import load_digits_tasks
from skmeta.distributed import fit_data_parallel
from skmeta.nn import ConvNet
from skmeta.tasks import EpisodeSampler, TaskStore

RESULTS = Path(__file__).parent / "results"


class TinyTasks:
    """n 2-way tasks of 2 features, 2 support and 2 query rows, made on read."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        X = rng.normal(size=(4, 2)).astype(np.float32) + [[0, 0], [2, 2]] * 2
        y = np.array([0, 1, 0, 1])
        return Task(X[:2], y[:2], X[2:], y[2:])


class MemorySampler:
    """Samples this process's resident memory every 0.2 s in a thread."""

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        process = psutil.Process()

        def sample():
            while not self._stop.wait(0.2):
                self.samples.append(process.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tiny_learner():
    return ProtoNetClassifier(module__hidden_sizes=(8,), max_epochs=1,
                              meta_batch_size=500, random_state=0)


def store_benchmark(n_tasks, n_compare, folder):
    start = time.perf_counter()
    store = TaskStore.write(folder / "store", TinyTasks(n_tasks))
    write_seconds = time.perf_counter() - start
    with MemorySampler() as memory:
        start = time.perf_counter()
        tiny_learner().fit(store)
        train_seconds = time.perf_counter() - start
    quarter = max(1, len(memory.samples) // 4)
    in_memory = [TinyTasks(n_compare)[i] for i in range(n_compare)]
    subset = TaskStore.write(folder / "subset", in_memory)
    rates = {}
    for name, tasks in [("store", subset), ("list", in_memory)]:
        start = time.perf_counter()
        tiny_learner().fit(tasks)
        rates[name] = n_compare / (time.perf_counter() - start)
    return dict(
        n_tasks=n_tasks, store_mb=sum(f.stat().st_size for f in
                                      (folder / "store").iterdir()) / 2**20,
        write_seconds=write_seconds, train_tasks_per_s=n_tasks / train_seconds,
        rss_mb_first_quarter=float(np.mean(memory.samples[:quarter])),
        rss_mb_last_quarter=float(np.mean(memory.samples[-quarter:])),
        rss_mb_peak=float(max(memory.samples)),
        store_vs_list_throughput=rates["store"] / rates["list"],
        n_compare=n_compare)


def data_parallel_benchmark(n_tasks):
    digits = load_digits_tasks()
    pool = np.isin(digits.target, digits.train_classes)
    tasks = EpisodeSampler(digits.data[pool], digits.target[pool], n_way=10,
                           k_shot=1, n_query=5, n_tasks=n_tasks, random_state=0)
    model = ProtoNetClassifier(ConvNet, module__input_shape=(1, 8, 8),
                               max_epochs=1, meta_batch_size=16, random_state=0)
    start = time.perf_counter()
    ProtoNetClassifier(**model.get_params()).fit(tasks)
    single = n_tasks / (time.perf_counter() - start)
    start = time.perf_counter()
    fit_data_parallel(model, tasks, n_processes=2)
    parallel = n_tasks / (time.perf_counter() - start)
    return dict(n_tasks=n_tasks, torch_threads_single=torch.get_num_threads(),
                single_process_tasks_per_s=single,
                two_processes_tasks_per_s=parallel, speedup=parallel / single)


def main(quick):
    with tempfile.TemporaryDirectory() as folder:
        store = store_benchmark(20_000 if quick else 1_000_000,
                                5_000 if quick else 100_000, Path(folder))
    print(store, flush=True)
    parallel = data_parallel_benchmark(200 if quick else 2000)
    print(parallel, flush=True)
    write({"store": store, "data_parallel": parallel}, quick)


def write(results, quick):
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"scaling{suffix}.json").write_text(json.dumps(results, indent=2))
    s, p = results["store"], results["data_parallel"]
    lines = [
        "| measurement | value |", "| --- | --- |",
        f"| TaskStore of {s['n_tasks']:,} tasks: size on disk | "
        f"{s['store_mb']:.0f} MB |",
        f"| writing it | {s['write_seconds']:.0f} s |",
        f"| one epoch of meta-training over it | {s['train_tasks_per_s']:,.0f} "
        "tasks/s |",
        f"| resident memory, first / last quarter of the epoch | "
        f"{s['rss_mb_first_quarter']:.0f} / {s['rss_mb_last_quarter']:.0f} MB "
        f"(peak {s['rss_mb_peak']:.0f} MB) |",
        f"| throughput from a store / from a list ({s['n_compare']:,} tasks) | "
        f"{s['store_vs_list_throughput']:.2f} |",
        f"| ProtoNet Conv-4, 1 process ({p['torch_threads_single']} threads) | "
        f"{p['single_process_tasks_per_s']:.0f} tasks/s |",
        f"| 2 gloo processes (1 thread each), same meta-batches | "
        f"{p['two_processes_tasks_per_s']:.0f} tasks/s "
        f"({p['speedup']:.2f}x) |"]
    (RESULTS / f"scaling{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
