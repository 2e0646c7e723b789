"""Data-parallel meta-training over torch.distributed (gloo, localhost)."""

import numpy as np
import torch

from skmeta import MAMLRegressor, ProtoNetClassifier
from skmeta.datasets import make_sinusoid_tasks
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
    # Adam normalises each gradient, so where one is near zero that rounding
    # can move a weight by up to meta_lr per step (12 steps here).
    assert difference.median() < 1e-7
    assert difference.max() < 12 * model.meta_lr
    np.testing.assert_allclose(parallel.history_[:, "batches", :, "train_loss"],
                               single.history_[:, "batches", :, "train_loss"],
                               rtol=1e-5)


def test_maml_trains_data_parallel_too():
    tasks = make_sinusoid_tasks(40, random_state=0)
    model = MAMLRegressor(module__hidden_sizes=(16,), max_epochs=1,
                          meta_batch_size=10, random_state=0)
    single = MAMLRegressor(**model.get_params()).fit(tasks)
    parallel = fit_data_parallel(model, tasks, n_processes=2)
    np.testing.assert_allclose(parallel.history_[:, "batches", :, "train_loss"],
                               single.history_[:, "batches", :, "train_loss"],
                               rtol=1e-5)
