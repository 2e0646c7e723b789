"""MetaBayesianRidge: the closed-form posterior against the mixed model's
BLUP, ragged batching, accuracy against the statistician's baselines,
standardisation, and the scikit-learn contract."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.utils.estimator_checks import check_estimator

from skmeta import MetaBayesianRidge, Task
from skmeta._scaling import TaskScaler
from skmeta.bayes import (
    BayesianLinearRegressor,
    RaggedBatch,
    posterior,
    predictive,
    random_split,
)


def quadratic_groups(n_groups, seed, noise=0.3):
    """Groups of 6 to 19 rows (ragged): y = a_g + b_g x + 0.8 x^2 + noise,
    half of each group's rows as support."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_groups):
        n = rng.integers(6, 20)
        x = rng.uniform(-2, 2, (n, 1))
        a, b = rng.normal(0, 1), rng.normal(0, 0.5)
        y = a + b * x[:, 0] + 0.8 * x[:, 0] ** 2 + noise * rng.normal(size=n)
        tasks.append(Task(x[:n // 2], y[:n // 2], x[n // 2:], y[n // 2:]))
    return tasks


def design(X):
    return np.column_stack([np.ones(len(X)), X])


def fit_mixed_model(tasks, n_iter=200):
    """Maximum-likelihood linear mixed model with random intercepts and
    slopes (EM): fixed effects beta, random-effects covariance G, noise s2."""
    Zs = [design(np.concatenate([t.X_support, t.X_query])) for t in tasks]
    ys = [np.concatenate([t.y_support, t.y_query]) for t in tasks]
    Z, y_all = np.vstack(Zs), np.concatenate(ys)
    beta = np.linalg.lstsq(Z, y_all, rcond=None)[0]
    s2 = np.var(y_all - Z @ beta)
    G = np.eye(Z.shape[1]) * s2
    for _ in range(n_iter):
        G_inv = np.linalg.inv(G)
        Vs = [np.linalg.inv(z.T @ z / s2 + G_inv) for z in Zs]
        bs = [V @ z.T @ (y - z @ beta) / s2
              for z, y, V in zip(Zs, ys, Vs, strict=True)]
        beta = np.linalg.solve(Z.T @ Z, sum(
            z.T @ (y - z @ b) for z, y, b in zip(Zs, ys, bs, strict=True)))
        G = sum(np.outer(b, b) + V for b, V in zip(bs, Vs, strict=True)) / len(Zs)
        s2 = sum(np.sum((y - z @ (beta + b)) ** 2) + np.trace(z @ V @ z.T)
                 for z, y, b, V in zip(Zs, ys, bs, Vs, strict=True)) / len(y_all)
    return beta, G, s2


def blup_predict(beta, G, s2, X_support, y_support, X_query):
    """beta + (Z'Z / s2 + G^-1)^-1 Z'(y - Z beta) / s2 and the predictive
    standard deviation, as a statistician writes them."""
    Z, Zq = design(X_support), design(X_query)
    precision = Z.T @ Z / s2 + np.linalg.inv(G)
    coef = beta + np.linalg.solve(precision, Z.T @ (y_support - Z @ beta) / s2)
    var = s2 + np.einsum("ij,jk,ik->i", Zq, np.linalg.inv(precision), Zq)
    return coef, Zq @ coef, np.sqrt(var)


def mse(tasks, predict):
    return float(np.mean(np.concatenate(
        [(predict(t) - t.y_query) ** 2 for t in tasks])))


@pytest.fixture(scope="module")
def quadratic():
    return quadratic_groups(60, seed=0), quadratic_groups(100, seed=1)


@pytest.fixture(scope="module")
def model(quadratic):
    torch.set_num_threads(1)
    return MetaBayesianRidge(random_state=0).fit(quadratic[0])


def random_prior(d, rng):
    A = rng.normal(size=(d, d))
    return rng.normal(size=d), A @ A.T / d + 0.1 * np.eye(d), rng.uniform(0.1, 1)


@pytest.mark.parametrize("n_support", [1, 2, 7])
def test_posterior_is_the_mixed_model_blup(n_support):
    rng = np.random.default_rng(n_support)
    beta, G, s2 = random_prior(3, rng)
    X, y, X_query = rng.normal(size=(n_support, 2)), rng.normal(size=n_support), \
        rng.normal(size=(4, 2))
    coef, mean, std = blup_predict(beta, G, s2, X, y, X_query)
    chol = np.linalg.cholesky(G)
    post_mean, factor = posterior(torch.from_numpy(design(X)), torch.from_numpy(y),
                                  None, torch.from_numpy(beta),
                                  torch.from_numpy(chol), s2)
    np.testing.assert_allclose(post_mean.numpy(), coef, rtol=1e-10, atol=1e-12)
    precision = design(X).T @ design(X) / s2 + np.linalg.inv(G)
    np.testing.assert_allclose(factor.numpy() @ factor.numpy().T,
                               np.linalg.inv(precision), rtol=1e-9, atol=1e-12)
    reg = BayesianLinearRegressor(prior_mean=beta, prior_chol=chol,
                                  noise_var=s2).fit(X, y)
    got_mean, got_std = reg.predict(X_query, return_std=True)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_std, std, rtol=1e-10)
    np.testing.assert_allclose(reg.predict(X_query), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(reg.sigma_, np.linalg.inv(precision), rtol=1e-9,
                               atol=1e-12)


def test_batched_ragged_posterior_equals_per_task():
    rng = np.random.default_rng(0)
    n_tasks, n_rows, d = 5, 7, 4
    phi = torch.from_numpy(rng.normal(size=(n_tasks, n_rows, d)))
    y = torch.from_numpy(rng.normal(size=(n_tasks, n_rows)))
    counts = torch.tensor([1, 7, 3, 0, 5])
    mask = torch.arange(n_rows) < counts[:, None]
    prior_mean, G, s2 = random_prior(d, rng)
    prior_mean, chol = torch.from_numpy(prior_mean), torch.linalg.cholesky(
        torch.from_numpy(G))
    mean, factor = posterior(phi, y, mask, prior_mean, chol, s2)
    query = torch.from_numpy(rng.normal(size=(n_tasks, 3, d)))
    mu, var = predictive(query, mean, factor, s2)
    for i, n in enumerate(counts.tolist()):
        m_i, f_i = posterior(phi[i, :n], y[i, :n], None, prior_mean, chol, s2)
        mu_i, var_i = predictive(query[i], m_i, f_i, s2)
        torch.testing.assert_close(mean[i], m_i)
        torch.testing.assert_close(factor[i] @ factor[i].T, f_i @ f_i.T)
        torch.testing.assert_close(mu[i], mu_i)
        torch.testing.assert_close(var[i], var_i)
    # no support rows: the prior itself
    torch.testing.assert_close(mean[3], prior_mean)
    torch.testing.assert_close(factor[3] @ factor[3].T, chol @ chol.T)


def test_collate_pads_ragged_tasks_and_random_split_masks_them():
    tasks = quadratic_groups(4, seed=3)
    batch = RaggedBatch.collate(tasks)
    sizes = [t.n_support + t.n_query for t in tasks]
    assert batch.X.shape == (4, max(sizes), 1)
    assert batch.valid.sum(1).tolist() == sizes
    assert batch.n_support.tolist() == [t.n_support for t in tasks]
    assert (batch.X[~batch.valid] == 0).all()
    torch.manual_seed(0)
    support, query = random_split(batch.valid)
    assert not (support & query).any()
    assert ((support | query) == batch.valid).all()
    n_support = support.sum(1)
    assert (n_support >= 1).all() and (query.sum(1) >= 1).all()


def test_single_point_and_constant_targets(model, quadratic):
    task = quadratic[1][0]
    one = model.adapt(task.X_support[:1], task.y_support[:1])
    mean, std = one.predict(task.X_query, return_std=True)
    assert np.isfinite(mean).all() and (std > 0).all()
    constant = model.adapt(task.X_support[:3], np.full(3, 4.0))
    mean, std = constant.predict(task.X_query, return_std=True)
    assert np.isfinite(mean).all() and (std > 0).all()
    reg = BayesianLinearRegressor(noise_var=0.5).fit([[2.0]], [1.0])
    np.testing.assert_allclose(reg.coef_, np.array([1.0, 2.0]) / 5.5)  # ridge


def test_beats_mixed_model_and_global_ridge_with_calibrated_intervals(
        model, quadratic):
    train, test = quadratic
    beta, G, s2 = fit_mixed_model(train)
    lmm = mse(test, lambda t: blup_predict(beta, G, s2, t.X_support, t.y_support,
                                           t.X_query)[1])
    X = np.vstack([np.concatenate([t.X_support, t.X_query]) for t in train])
    y = np.concatenate([np.concatenate([t.y_support, t.y_query]) for t in train])
    ridge = Ridge(1.0).fit(X, y)
    offset = mse(test, lambda t: ridge.predict(t.X_query) + np.mean(
        t.y_support - ridge.predict(t.X_support)))
    bayes = mse(test, lambda t: model.adapt(t.X_support, t.y_support).predict(
        t.X_query))
    assert bayes < 0.5 * min(lmm, offset), (bayes, lmm, offset)
    assert bayes < 0.2  # noise variance 0.09
    inside = []
    for t in test:
        mean, std = model.adapt(t.X_support, t.y_support).predict(
            t.X_query, return_std=True)
        inside.append(np.abs(t.y_query - mean) <= 1.96 * std)
    assert 0.85 <= np.mean(np.concatenate(inside)) <= 0.99
    assert model.score(test) > 0.6  # mean per-task R², 3 to 10 query rows
    # max_epochs="auto": epochs of about 50 meta-updates over the 48 training
    # tasks repeated, early stopping on the 12 held-out tasks
    assert np.isfinite(model.history_[:, "valid_loss"]).all()
    assert len(model.history_[-1, "batches"]) >= 48


def test_raw_unscaled_data_gives_the_same_predictions():
    tasks = quadratic_groups(30, seed=2)

    def rescale(t):
        return Task(t.X_support * 1000 + 500, t.y_support * 1e4 + 3e5,
                    t.X_query * 1000 + 500, t.y_query * 1e4 + 3e5)

    raw = [rescale(t) for t in tasks]
    params = dict(max_epochs=20, random_state=0, module__hidden_sizes=(16,))
    small = MetaBayesianRidge(**params).fit(tasks)
    big = MetaBayesianRidge(**params).fit(raw)
    assert big.scaler_.scale_y_ == pytest.approx(small.scaler_.scale_y_ * 1e4)
    test = [rescale(t) for t in quadratic_groups(5, seed=4)]
    for t, t_raw in zip(quadratic_groups(5, seed=4), test, strict=True):
        mean, std = small.adapt(t.X_support, t.y_support).predict(
            t.X_query, return_std=True)
        mean_raw, std_raw = big.adapt(t_raw.X_support, t_raw.y_support).predict(
            t_raw.X_query, return_std=True)
        np.testing.assert_allclose(mean_raw, mean * 1e4 + 3e5, rtol=1e-5,
                                   atol=1e-3 * 1e4)
        np.testing.assert_allclose(std_raw, std * 1e4, rtol=1e-3)


def test_scaler_statistics_and_round_trip():
    tasks = quadratic_groups(5, seed=5)
    scaler = TaskScaler().fit(tasks)
    X = np.vstack([np.concatenate([t.X_support, t.X_query]) for t in tasks])
    y = np.concatenate([np.concatenate([t.y_support, t.y_query]) for t in tasks])
    np.testing.assert_allclose(scaler.mean_X_, X.mean(0), rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_X_, X.std(0), rtol=1e-6)
    np.testing.assert_allclose(scaler.mean_y_, y.mean())
    np.testing.assert_allclose(scaler.inverse_transform_y(scaler.transform_y(y)), y)
    constant = TaskScaler().fit([Task(np.ones((2, 1)), [3.0, 3.0])])
    assert constant.scale_X_.tolist() == [1.0] and constant.scale_y_ == 1.0


def test_clone_params_reproducibility_and_pickling(tmp_path):
    tasks = quadratic_groups(20, seed=6)
    est = MetaBayesianRidge(max_epochs=3, random_state=0, module__hidden_sizes=(8,))
    assert clone(est).get_params() == est.get_params()
    assert est.get_params()["module__hidden_sizes"] == (8,)
    a, b = clone(est).fit(tasks), clone(est).fit(tasks)
    np.testing.assert_array_equal(a.prior_chol_, b.prior_chol_)
    reg = a.adapt(tasks[0].X_support, tasks[0].y_support)
    np.testing.assert_array_equal(
        reg.predict(tasks[0].X_query),
        b.adapt(tasks[0].X_support, tasks[0].y_support).predict(tasks[0].X_query))
    c = clone(est).set_params(random_state=1).fit(tasks)
    assert not np.array_equal(a.prior_chol_, c.prior_chol_)
    joblib.dump(reg, tmp_path / "reg.joblib")
    loaded = joblib.load(tmp_path / "reg.joblib")
    for x, y in zip(reg.predict(tasks[0].X_query, return_std=True),
                    loaded.predict(tasks[0].X_query, return_std=True), strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a.predict(tasks[:2])[1]) == tasks[1].n_query


def test_custom_module_and_validation_split():
    tasks = quadratic_groups(20, seed=7)
    net = torch.nn.Sequential(torch.nn.Linear(1, 5), torch.nn.Tanh())
    model = MetaBayesianRidge(net, max_epochs=2, validation_fraction=0.25,
                              standardize=False, random_state=0).fit(tasks)
    assert model.scaler_ is None and model.prior_mean_.shape == (1 + 1 + 5,)
    assert np.isfinite(model.history_[:, "valid_loss"]).all()
    assert net[0].weight.grad is None  # the user's module is not trained
    with pytest.raises(ValueError, match="max_epochs"):
        MetaBayesianRidge(max_epochs=-1).fit(tasks)


def test_adapted_regressor_passes_sklearn_checks():
    check_estimator(BayesianLinearRegressor())


def test_prior_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="d=3 columns"):
        BayesianLinearRegressor(prior_mean=[0.0, 1.0]).fit([[1.0, 2.0]], [1.0])
