"""Large inputs in bounded memory: a list of 100,000 small tasks, and an
EpisodeSampler over 1,000,000 episodes.

Fits ProtoNetClassifier for one epoch over the list, and streams 100,000
episodes of the million-episode sampler (then stops the run, as a user
interrupting it would), sampling resident memory as it goes.

Run: python benchmarks/large_input.py [--quick]
Writes benchmarks/results/large_input.md and .json.
"""

import argparse
import json
import time

from scaling import RESULTS, MemorySampler, TinyTasks, tiny_learner
from skorch.callbacks import Callback

from skmeta.datasets import load_digits_tasks
from skmeta.tasks import EpisodeSampler


class StopAfter(Callback):
    """Interrupts training after ``n_batches`` meta-batches."""

    def __init__(self, n_batches):
        self.n_batches = n_batches

    def on_batch_end(self, net, **kwargs):
        if len(net.history[-1, "batches"]) >= self.n_batches:
            raise KeyboardInterrupt


def measure(fit):
    with MemorySampler() as memory:
        start = time.perf_counter()
        n_tasks = fit()
        seconds = time.perf_counter() - start
    return dict(n_tasks=n_tasks, seconds=seconds, tasks_per_s=n_tasks / seconds,
                rss_mb_start=memory.samples[0], rss_mb_peak=max(memory.samples),
                rss_mb_end=memory.samples[-1])


def main(quick):
    n_list, n_stream = (10_000, 10_000) if quick else (100_000, 100_000)
    tasks = [TinyTasks(n_list)[i] for i in range(n_list)]

    def fit_list():
        tiny_learner().fit(tasks)
        return n_list

    X, y = load_digits_tasks(return_X_y=True)
    sampler = EpisodeSampler(X, y, n_way=5, k_shot=1, n_query=5,
                             n_tasks=1_000_000, random_state=0)

    def fit_stream():
        learner = tiny_learner().set_params(
            callbacks=[StopAfter(n_stream // 500)])
        learner.fit(sampler)
        return len(learner.history_[-1, "batches"]) * 500

    results = {"list": measure(fit_list), "sampler": measure(fit_stream)}
    results["sampler"]["sampler_len"] = len(sampler)
    print(results)
    suffix = "_quick" if quick else ""
    (RESULTS / f"large_input{suffix}.json").write_text(json.dumps(results, indent=2))
    lines = ["| input | tasks trained on | tasks/s | resident memory: start / peak "
             "/ end |", "| --- | ---: | ---: | --- |"]
    for name, label in [("list", f"list of {n_list:,} tasks"),
                        ("sampler", "EpisodeSampler of 1,000,000 episodes")]:
        r = results[name]
        lines.append(f"| {label} | {r['n_tasks']:,} | {r['tasks_per_s']:,.0f} | "
                     f"{r['rss_mb_start']:.0f} / {r['rss_mb_peak']:.0f} / "
                     f"{r['rss_mb_end']:.0f} MB |")
    (RESULTS / f"large_input{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
