"""Data-parallel meta-training with ``torch.distributed``: the parameter server.

Every process holds the same meta-parameters. Each global meta-batch of tasks
is split into one share per process; each process computes the meta-gradient
of its share, the gradients are summed across processes (all-reduce), and
every process takes the same optimiser step, so all stay identical. Use gloo
on CPUs and NCCL on GPUs.

Two ways to launch:

- from Python, :func:`fit_data_parallel` starts the processes on this
  machine and returns the fitted estimator;
- with ``torchrun --nproc-per-node N script.py`` (one machine or many), the
  script calls ``torch.distributed.init_process_group()`` and then plain
  ``estimator.fit(tasks)``: skmeta's learners notice the process group.

The meta-loss of a share must be its tasks' mean loss (every skmeta learner's
is), so that the weighted sum over shares is the global meta-batch's loss.
"""

import os
import sys
import tempfile
from pathlib import Path

import joblib
import torch
import torch.distributed as dist


def is_data_parallel():
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size():
    """This process's rank and the number of processes (0 and 1 alone)."""
    if not is_data_parallel():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def reduce_share(loss, n_tasks, parameters):
    """Turn the meta-gradient (already in ``.grad``) and meta-loss of this
    process's ``n_tasks`` tasks into those of the global meta-batch: each
    share weighted by its number of tasks, summed over processes. A process
    whose share is empty (``n_tasks=0``) takes part with zero gradients, so
    no process waits for another."""
    total = torch.tensor(float(n_tasks), device=loss.device)
    dist.all_reduce(total)
    weight = n_tasks / total
    for p in parameters:  # every process sends every gradient, even an empty share
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight  # one all-reduce
    dist.all_reduce(flat)
    for grad, part in zip(grads, flat.split([g.numel() for g in grads]),
                          strict=True):
        grad.copy_(part.view_as(grad))
    global_loss = loss.detach() * weight
    dist.all_reduce(global_loss)
    return global_loss


def broadcast_seed(seed):
    """The seed of process 0, so that all processes draw the same numbers."""
    if not is_data_parallel():
        return seed
    value = torch.tensor(seed, dtype=torch.int64)
    dist.broadcast(value, src=0)
    return int(value)


def fit_data_parallel(estimator, tasks, n_processes=2, backend="gloo"):
    """Fit ``estimator`` on ``tasks`` with ``n_processes`` data-parallel
    processes on this machine, and return it fitted.

    Parameters
    ----------
    estimator : skmeta torch learner
        E.g. :class:`~skmeta.ProtoNetClassifier`; fitted in every process.
    tasks : sequence of Task or tuple
    n_processes : int, default=2
    backend : {"gloo", "nccl"}, default="gloo"
        "nccl" for GPUs (process ``i`` uses ``cuda:i``).

    Returns
    -------
    estimator : the fitted estimator of process 0 (all processes end with
    the same meta-parameters).

    Examples
    --------
    >>> from skmeta import MAMLRegressor
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> from skmeta.distributed import fit_data_parallel
    >>> tasks = make_sinusoid_tasks(20, random_state=0)
    >>> model = fit_data_parallel(MAMLRegressor(max_epochs=1, meta_batch_size=10,
    ...                                         random_state=0), tasks)
    >>> len(model.history_)
    1
    """
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(
            _fit_process, nprocs=n_processes,
            args=(estimator, tasks, n_processes, backend, Path(folder)))
        return joblib.load(Path(folder) / "estimator.joblib")


def _fit_process(rank, estimator, tasks, world_size, backend, folder):
    # A rendezvous file in the private folder: no port to pick and lose.
    dist.init_process_group(backend, init_method=(folder / "rendezvous").as_uri(),
                            rank=rank, world_size=world_size)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if backend == "nccl":
        estimator.set_params(device=f"cuda:{rank}")
    try:
        estimator.fit(tasks)
        if rank == 0:
            joblib.dump(estimator, folder / "estimator.joblib")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    _exit_skipping_finalization()


def _exit_skipping_finalization():
    """End a worker process, its result saved, without finalizing Python.

    Once torch's optimisers have imported ``torch._dynamo``, the process group
    outlives ``destroy_process_group`` and gloo's worker threads may still be
    releasing a finished collective's tensors, which needs the GIL. If that
    happens while Python finalizes, the thread cannot take the GIL and the
    process aborts ("terminate called without an active exception"; see
    pytorch/pytorch#190489). Skipping finalization avoids it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
