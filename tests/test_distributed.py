"""Data-parallel meta-training over torch.distributed (gloo, localhost). Every
torch learner's equality with single-process training is in test_common.py."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from skmeta import ProtoNetClassifier
from skmeta.distributed import fit_data_parallel


def test_two_gloo_processes_match_single_process_weights(train_tasks):
    tasks = list(train_tasks[:48])
    model = ProtoNetClassifier(module__hidden_sizes=(32,), max_epochs=2,
                               meta_batch_size=8, random_state=0)
    single = ProtoNetClassifier(**model.get_params()).fit(tasks)
    parallel = fit_data_parallel(model, tasks, n_processes=2)
    difference = torch.cat([
        (a - b).abs().ravel() for a, b in zip(
            single.net_.module_.parameters(), parallel.net_.module_.parameters(),
            strict=True)])
    # Summing gradients in another order changes them by float rounding only;
    # Adam normalises each gradient, so where one is near zero that rounding
    # can move a weight by up to meta_lr per step (12 steps here).
    assert difference.median() < 1e-7
    assert difference.max() < 12 * model.meta_lr
    np.testing.assert_allclose(parallel.history_[:, "batches", :, "train_loss"],
                               single.history_[:, "batches", :, "train_loss"],
                               rtol=1e-5)


# (tasks, meta_batch_size, processes): meta-batches whose last share, or every
# share of some process, is empty, which once left processes waiting forever.
UNEVEN = [(5, 4, 2), (2, 2, 3), (21, 10, 2), (3, 1, 2)]


@pytest.mark.parametrize(("n_tasks", "batch", "n_processes"), UNEVEN)
def test_empty_shares_do_not_hang(n_tasks, batch, n_processes, tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, tempfile, os
        from skmeta import ProtoNetClassifier, Task
        from skmeta.distributed import fit_data_parallel
        X = np.random.default_rng(0).normal(size=(6, 8))
        y = np.array([0, 1, 2, 0, 1, 2])
        if __name__ == "__main__":
            tempfile.tempdir = {str(tmp_path)!r}
            model = fit_data_parallel(
                ProtoNetClassifier(max_epochs=2, meta_batch_size={batch}),
                [Task(X, y, X, y)] * {n_tasks}, n_processes={n_processes})
            print(len(model.history_), sorted(os.listdir({str(tmp_path)!r})))
        """)
    (tmp_path / "run.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py")],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "2"
    assert done.stdout.strip().endswith("['run.py']")  # no file left behind
