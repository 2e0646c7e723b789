"""Data-parallel meta-training over torch.distributed (gloo, localhost)."""

import torch

from skmeta import ProtoNetClassifier
from skmeta.distributed import fit_data_parallel


def test_two_gloo_processes_match_single_process_training(train_tasks):
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
    # Adam turns that into at most about meta_lr per step where a gradient is
    # near zero, so: nearly all weights equal to 1e-6, all within 12 steps.
    assert (difference < 1e-6).float().mean() > 0.999
    assert difference.max() < 12 * model.meta_lr
    assert len(parallel.history_) == 2
    assert abs(parallel.history_[-1, "train_loss"]
               - single.history_[-1, "train_loss"]) < 1e-5
