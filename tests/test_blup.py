"""The numpy BLUP of benchmarks/real_grouped.py against statsmodels' own."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("statsmodels")

PATH = Path(__file__).parents[1] / "benchmarks" / "real_grouped.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_grouped", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grouped():
    """30 groups of 6 rows: random intercepts and slopes, raw scale."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 6)
    X = rng.uniform(10, 50, size=(len(groups), 1))
    a = rng.normal(0, 2, 30)[groups]
    b = rng.normal(0, 0.1, 30)[groups]
    y = 5 + a + (0.3 + b) * X[:, 0] + rng.normal(0, 0.5, len(groups))
    return X, y, groups


def test_blup_matches_statsmodels_random_effects(bench, grouped):
    X, y, groups = grouped
    params, result = bench.fit_mixed_model(X, y, groups)
    for group in (0, 7, 29):
        rows = groups == group
        b, _ = bench.blup(params["beta"], params["cov_re"], params["scale"],
                          X[rows], y[rows])
        np.testing.assert_allclose(b, result.random_effects[group].to_numpy(),
                                   rtol=1e-6, atol=1e-8)


def test_blup_equals_the_precision_form(bench, grouped):
    """b = (Z'Z / s2 + G^-1)^-1 Z'(y - Z beta) / s2, and its covariance."""
    X, y, groups = grouped
    params, _ = bench.fit_mixed_model(X, y, groups)
    beta, G, s2 = params["beta"], params["cov_re"], params["scale"]
    Z = np.column_stack([np.ones(3), X[:3]])
    precision = Z.T @ Z / s2 + np.linalg.inv(G)
    b, cov_b = bench.blup(beta, G, s2, X[:3], y[:3])
    np.testing.assert_allclose(
        b, np.linalg.solve(precision, Z.T @ (y[:3] - Z @ beta) / s2), rtol=1e-6)
    np.testing.assert_allclose(cov_b, np.linalg.inv(precision), rtol=1e-6)
    mean, std = bench.blup_predict(params, X[:3], y[:3], X[3:6])
    Zq = np.column_stack([np.ones(3), X[3:6]])
    np.testing.assert_allclose(mean, Zq @ (beta + b))
    np.testing.assert_allclose(
        std ** 2, np.diag(Zq @ cov_b @ Zq.T) + s2, rtol=1e-8)
