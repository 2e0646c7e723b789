"""Task executors: per-task work runs through joblib, on any backend."""

import numpy as np
import pytest
from joblib import parallel_backend


def test_n_jobs_gives_the_sequential_results(protonet, test_tasks):
    tasks = test_tasks[:12]
    sequential = protonet.predict(tasks)
    parallel = protonet.set_params(n_jobs=2).predict(tasks)
    protonet.set_params(n_jobs=None)
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_dask_backend_gives_the_sequential_results(protonet, test_tasks):
    distributed = pytest.importorskip("distributed")
    tasks = test_tasks[:12]
    expected = protonet.score(tasks)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster, \
            distributed.Client(cluster), parallel_backend("dask"):
        assert protonet.score(tasks) == expected


def test_ray_backend_gives_the_sequential_results(protonet, test_tasks):
    ray = pytest.importorskip(
        "ray", reason='the Ray backend needs ray: pip install -e ".[ray]"')
    from ray.util.joblib import register_ray

    tasks = test_tasks[:12]
    expected = protonet.predict(tasks)
    register_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with parallel_backend("ray"):
            result = protonet.predict(tasks)
    finally:
        ray.shutdown()
    for a, b in zip(expected, result, strict=True):
        np.testing.assert_array_equal(a, b)
