"""MAML on a GPU: meta-training throughput of skmeta with ``device="cuda"``.

The digits protocol of benchmarks/maml.py (5-way 1-shot, MLP 64-128-128-5,
second-order MAML, inner_lr 0.5, one inner step, Adam 1e-3) at larger
meta-batches, plus Conv-4, reporting tasks/second and peak GPU memory::

    python benchmarks/maml_cuda.py            # about 2 minutes on one GPU
    python benchmarks/maml_cuda.py --quick

Writes benchmarks/results/maml_cuda.json and .md. Exits with a notice when
no GPU is present (CI never needs one).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from skmeta import MAMLClassifier  # noqa: E402
from skmeta.datasets import load_digits_tasks  # noqa: E402
from skmeta.nn import MLP, ConvNet  # noqa: E402
from skmeta.tasks import EpisodeSampler  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def episodes(digits, classes, n_tasks, seed):
    pool = np.isin(digits.target, classes)
    return list(EpisodeSampler(digits.data[pool], digits.target[pool], n_way=5,
                               k_shot=1, n_query=15, n_tasks=n_tasks,
                               random_state=seed))


def measure(module, meta_batch, train, test, **params):
    model = MAMLClassifier(module, inner_lr=0.5, meta_batch_size=meta_batch,
                           meta_lr=1e-3, max_epochs=1, device="cuda",
                           random_state=0, **params)
    model.fit(train[:2 * meta_batch])  # warm-up: CUDA context, kernels
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model.fit(train)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    accuracy = model.set_params(test_inner_steps=3).score(test)
    return {"tasks_per_s": len(train) / elapsed,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20,
            "test_accuracy_3_steps": accuracy}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("NOTICE: no CUDA device; nothing measured.")
        return
    digits = load_digits_tasks()
    n_train = 2048 if args.quick else 32768
    train = episodes(digits, digits.train_classes, n_train, 0)
    test = episodes(digits, digits.test_classes, 100 if args.quick else 600, 1)
    mlp = MLP(64, (128, 128), 5)
    conv = ConvNet((1, 8, 8), out_features=5)
    runs = [("MLP", mlp, batch, {}) for batch in (32, 256, 1024)]
    runs += [("MLP, 5 inner steps", mlp, 512, {"inner_steps": 5}),
             ("ConvNet", conv, 256, {})]
    results = []
    for name, module, batch, params in runs:
        result = {"network": name, "meta_batch": batch, **params,
                  **measure(module, batch, train, test, **params)}
        results.append(result)
        print(json.dumps(result), flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    (RESULTS / "maml_cuda.json").write_text(json.dumps(
        {"meta": meta, "results": results}, indent=1))
    lines = [f"MAML on {meta['device']} (torch {meta['torch']}), digits 5-way "
             "1-shot.", "", "| network | meta-batch | tasks/s | peak CUDA MB | "
             "test acc (3 steps) |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['network']} | {r['meta_batch']} | {r['tasks_per_s']:.0f} | "
              f"{r['peak_cuda_mb']:.0f} | {r['test_accuracy_3_steps']:.3f} |"
              for r in results]
    (RESULTS / "maml_cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
