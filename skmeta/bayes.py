"""Meta-learned Bayesian linear regression (ALPaCA; Harrison, Sharma and
Pavone, 2018): a feature network and a Gaussian prior over a linear head,
meta-trained so that the exact posterior on a support set predicts well.

The math is in plain functions, batched over tasks with torch:
:func:`posterior` (the head's Gaussian posterior, masked rows carry no
weight), :func:`predictive` (mean and variance at new rows) and
:func:`log_likelihood`. With features ``(1, x)`` the posterior mean is a
linear mixed model's BLUP.
"""

import math
from dataclasses import dataclass, fields
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval

from . import distributed
from ._learner import (
    SHARED_CONSTRAINTS,
    TorchLearner,
    shared_params_doc,
    standardize_doc,
)
from ._nets import NetSpec, SkmetaNet, TaskDataset, frozen_copy
from ._padding import masked_mean, padded
from ._scaling import TaskScaler
from .base import (
    N_JOBS_CONSTRAINT,
    AdaptedRegressor,
    MetaRegressorMixin,
)
from .nn import MLP


def posterior(phi, y, mask, prior_mean, prior_chol, noise_var):
    """Gaussian posterior over the weights of a linear head, batched.

    With prior ``w ~ N(m0, L L^T)`` and ``y = phi w + N(0, s2)``, the
    posterior precision is ``Lambda_n = phi^T phi / s2 + (L L^T)^-1`` and its
    mean ``Lambda_n^-1 (phi^T y / s2 + (L L^T)^-1 m0)``. It is computed in
    the prior's whitened coordinates (``w = m0 + L v``), where the precision
    ``I + L^T phi^T phi L / s2`` is well conditioned and the prior
    covariance is never inverted; zero rows of ``phi`` (or no rows) leave
    the prior unchanged.

    Parameters
    ----------
    phi : tensor of shape (..., n, d)
        Features of the observed rows.
    y : tensor of shape (..., n)
        Their targets.
    mask : bool tensor of shape (..., n) or None
        Rows that count; the others (padding, query rows) carry zero weight.
    prior_mean : tensor of shape (d,) or (..., d)
    prior_chol : tensor of shape (d, r)
        A square-root factor ``L`` of the prior covariance (``L L^T``): its
        Cholesky factor, or a low-rank factor.
    noise_var : tensor or float
        Observation noise variance ``s2``.

    Returns
    -------
    mean : tensor of shape (..., d)
        Posterior mean of the weights.
    cov_factor : tensor of shape (..., d, r)
        ``F`` with posterior covariance ``F F^T``.
    """
    if mask is not None:
        weight = mask.to(phi.dtype)
        phi, y = phi * weight[..., None], y * weight
    residual = y - (phi @ prior_mean[..., None])[..., 0]
    if mask is not None:
        residual = residual * weight
    whitened = phi @ prior_chol                                    # (..., n, r)
    eye = torch.eye(prior_chol.shape[-1], dtype=phi.dtype, device=phi.device)
    chol = torch.linalg.cholesky(whitened.mT @ whitened / noise_var + eye)
    v = torch.cholesky_solve(whitened.mT @ residual[..., None] / noise_var, chol)
    mean = prior_mean + (prior_chol @ v)[..., 0]
    factor_t = torch.linalg.solve_triangular(
        chol, prior_chol.mT.expand(*chol.shape[:-2], *prior_chol.mT.shape),
        upper=False)
    return mean, factor_t.mT


def predictive(phi, mean, cov_factor, noise_var):
    """Posterior predictive mean and variance at rows ``phi``.

    Parameters
    ----------
    phi : tensor of shape (..., m, d)
    mean, cov_factor : tensors
        What :func:`posterior` returns.
    noise_var : tensor or float

    Returns
    -------
    mean : tensor of shape (..., m)
        ``phi^T m_n``.
    var : tensor of shape (..., m)
        ``s2 + phi^T Lambda_n^-1 phi``.
    """
    mu = (phi @ mean[..., None])[..., 0]
    var = noise_var + (phi @ cov_factor).square().sum(-1)
    return mu, var


def log_likelihood(y, mean, var, mask=None):
    """Mean Gaussian log density of the (masked) rows of each task.

    Parameters
    ----------
    y, mean, var : tensors of shape (..., m)
    mask : bool tensor of shape (..., m) or None

    Returns
    -------
    tensor of shape (...)
        Per task; 0 for a task without rows.
    """
    density = -0.5 * (torch.log(2 * math.pi * var) + (y - mean).square() / var)
    return masked_mean(density, mask)


def augment(X, body):
    """The head's features: a bias column, the inputs and the network's
    output, side by side (so the linear model in ``X`` is representable)."""
    return torch.cat([torch.ones_like(X[..., :1]), X, body], -1)


class GaussianPrior(torch.nn.Module):
    """Meta-learned prior ``N(mean, L L^T)`` over a linear head's weights and
    the noise variance; ``L`` is lower triangular with a positive (exp)
    diagonal, the noise variance log-parameterised."""

    def __init__(self, n_features, scale=1.0, noise_var=0.1):
        super().__init__()
        self.mean = torch.nn.Parameter(torch.zeros(n_features))
        self.chol_raw = torch.nn.Parameter(
            torch.diag(torch.full((n_features,), math.log(scale))))
        self.log_noise_var = torch.nn.Parameter(torch.tensor(math.log(noise_var)))

    def chol(self):
        return (torch.tril(self.chol_raw, -1)
                + torch.diag(torch.exp(torch.diagonal(self.chol_raw))))

    def noise_var(self):
        return torch.exp(self.log_noise_var)


@dataclass
class RaggedBatch:
    """Tasks of any sizes, padded: each task's support rows then its query
    rows in ``X`` (tasks, rows, features) and ``y``; ``valid`` marks real
    rows, ``n_support`` the given support sizes."""

    X: torch.Tensor
    y: torch.Tensor
    valid: torch.Tensor
    n_support: torch.Tensor

    def __len__(self):
        return len(self.X)

    def to(self, device):
        return RaggedBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    @classmethod
    def collate(cls, tasks):
        X, valid = padded([np.concatenate([t.X_support, t.X_query]) for t in tasks],
                          torch.float32)
        y, _ = padded([np.concatenate([t.y_support, t.y_query]) for t in tasks],
                      torch.float64)
        valid = (torch.ones(X.shape[:2], dtype=torch.bool) if valid is None
                 else valid.bool())
        return cls(X, y, valid, torch.tensor([t.n_support for t in tasks]))


def random_split(valid, generator=None):
    """Support and query masks for a padded batch: per task, ``k ~ U{1..n-1}``
    of its ``n`` rows, drawn at random (from ``generator``), are the support
    set and the rest the query set (ALPaCA's randomised support size)."""
    n_valid = valid.sum(1)
    k = (torch.rand(len(valid), generator=generator, device=valid.device)
         * (n_valid - 1)).long() + 1
    scores = torch.rand(valid.shape, generator=generator,
                        device=valid.device).masked_fill(~valid, 2.0)
    rank = scores.argsort(1).argsort(1)
    support = rank < k[:, None]
    return support, valid & ~support


class BayesNet(SkmetaNet):
    """skorch core of :class:`MetaBayesianRidge`: the module is the feature
    network, ``prior_`` the head's prior and the noise; the loss is the
    query rows' negative posterior predictive log-likelihood.

    ``n_features`` (input width) sizes the prior; ``prior_scale`` and
    ``noise_var`` initialise it.
    """

    def __init__(self, *args, n_features=1, prior_scale=1.0, noise_var=0.1,
                 **kwargs):
        self.n_features = n_features
        self.prior_scale = prior_scale
        self.noise_var = noise_var
        super().__init__(*args, **kwargs)

    def initialize_module(self):
        super().initialize_module()
        training = self.module_.training
        with torch.no_grad():
            width = self.module_.eval()(torch.zeros(2, self.n_features)).shape[-1]
        self.module_.train(training)
        self.prior_ = GaussianPrior(1 + self.n_features + width,
                                    self.prior_scale, self.noise_var)
        return self

    def features(self, X, valid):
        """Head features (float64) of the valid rows of a padded batch."""
        phi = torch.zeros(*X.shape[:-1], self.prior_.mean.numel(),
                          dtype=torch.float64, device=X.device)
        rows = X[valid]
        phi[valid] = augment(rows, self.infer(rows).reshape(len(rows), -1)).double()
        return phi

    def collate(self, tasks):
        return RaggedBatch.collate(tasks)

    def batch_loss(self, batch, training):
        batch = batch.to(self.device)
        if training:
            support, query = random_split(batch.valid, self._split_generator())
        else:
            support = (torch.arange(batch.valid.shape[1], device=self.device)
                       < batch.n_support[:, None].to(self.device))
            query = batch.valid & ~support
        phi = self.features(batch.X, batch.valid)
        prior = self.prior_
        noise_var = prior.noise_var().double()
        try:
            mean, cov_factor = posterior(phi, batch.y, support, prior.mean.double(),
                                         prior.chol().double(), noise_var)
        except torch.linalg.LinAlgError:  # non-finite parameters: a NaN loss
            return torch.tensor(torch.nan, device=self.device), None
        mu, var = predictive(phi, mean, cov_factor, noise_var)
        has_query = query.any(1)
        return -log_likelihood(batch.y, mu, var, query)[has_query].mean(), None

    def _split_generator(self):
        """The random support sizes of this batch: a function of the seed,
        the epoch, the batch and the process, so a run resumed from a
        checkpoint draws what the uninterrupted run drew."""
        epoch, batch = len(self.history), len(self.history[-1, "batches"])
        rank = distributed.rank_and_world_size()[0]
        seed = hash((self.shuffle_seed, epoch, batch, rank)) % 2**63
        return torch.Generator(self.device).manual_seed(seed)


class BayesianLinearRegressor(AdaptedRegressor):
    """Bayesian linear regression on fixed features with a given Gaussian prior.

    ``fit`` computes the exact posterior of the weights of
    ``y = phi(x)^T w + noise`` (float64, no optimisation), with
    ``w ~ N(prior_mean, prior_chol prior_chol^T)``, noise variance
    ``noise_var`` and features ``phi(x) = (1, x, features(x))`` of the
    standardised inputs; ``predict`` gives the posterior predictive mean
    and, with ``return_std=True``, its standard deviation, in the user's
    units. It works from a single example (the prior does the rest). This is
    what :meth:`MetaBayesianRidge.adapt` returns; with ``features=None`` and
    ``scaler=None`` the features are ``(1, x)`` and the posterior mean is a
    linear mixed model's BLUP for a new group (fixed effects
    ``prior_mean``, random-effects covariance ``prior_chol prior_chol^T``,
    residual variance ``noise_var``).

    Parameters
    ----------
    features : torch.nn.Module or None, default=None
        Maps a float32 tensor of standardised rows (n, n_features) to extra
        features (n, k); used as it is (eval mode, CPU, no gradients). None
        adds none.
    prior_mean : array-like of shape (d,) or None, default=None
        Prior mean of the weights, ``d = 1 + n_features + k``; None means 0.
    prior_chol : array-like of shape (d, r) or None, default=None
        A square-root factor of the prior covariance (its Cholesky factor);
        None means the identity.
    noise_var : float, default=1.0
        Noise variance, in standardised units when ``scaler`` is given.
    scaler : TaskScaler or None, default=None
        A fitted :class:`skmeta._scaling.TaskScaler` that standardises
        ``X`` and ``y`` before the model sees them; None uses the raw values.

    Attributes
    ----------
    coef_ : ndarray of shape (d,)
        Posterior mean of the weights.
    sigma_ : ndarray of shape (d, d)
        Posterior covariance of the weights.
    n_features_in_ : int

    Examples
    --------
    >>> from skmeta.bayes import BayesianLinearRegressor
    >>> reg = BayesianLinearRegressor(noise_var=1e-4)  # prior N(0, I)
    >>> reg.fit([[1.0], [2.0]], [3.0, 5.0]).coef_.round(2).tolist()
    [1.0, 2.0]
    >>> mean, std = reg.predict([[3.0], [30.0]], return_std=True)
    >>> mean.round(2).tolist(), bool(std[1] > std[0] > 0.01)
    ([7.0, 61.0], True)
    """

    _parameter_constraints = {
        "features": [None, torch.nn.Module],
        "prior_mean": ["array-like", None],
        "prior_chol": ["array-like", None],
        "noise_var": [Interval(Real, 0, None, closed="neither")],
        "scaler": [None, TaskScaler],
    }

    _dtype = np.float64  # the posterior is computed in float64

    def __init__(self, features=None, prior_mean=None, prior_chol=None,
                 noise_var=1.0, scaler=None):
        self.features = features
        self.prior_mean = prior_mean
        self.prior_chol = prior_chol
        self.noise_var = noise_var
        self.scaler = scaler

    def predict(self, X, return_std=False):
        """Posterior predictive mean (and standard deviation) of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the predictive standard deviation (noise included).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,)
            Only if ``return_std`` is True.
        """
        mean, std = self._predictive(self._validated_X(X))
        return (mean, std) if return_std else mean

    def _features(self, X):
        if self.scaler is not None:
            X = self.scaler.transform_X(X)
        parts = [np.ones((len(X), 1)), X]
        if self.features is not None:
            try:
                with torch.no_grad():
                    body = self.features(torch.from_numpy(X.astype(np.float32)))
            except RuntimeError as error:
                raise ValueError(f"The feature network cannot take X of shape "
                                 f"{X.shape}: {error}") from error
            parts.append(body.reshape(len(X), -1).double().numpy())
        return torch.from_numpy(np.hstack(parts))

    def _prior(self, d):
        mean = (np.zeros(d) if self.prior_mean is None
                else np.asarray(self.prior_mean, dtype=np.float64).reshape(-1))
        chol = (np.eye(d) if self.prior_chol is None
                else np.asarray(self.prior_chol, dtype=np.float64))
        if mean.shape != (d,) or chol.ndim != 2 or chol.shape[0] != d:
            raise ValueError(
                f"The features have d={d} columns (bias, {self.n_features_in_} "
                f"inputs, {d - 1 - self.n_features_in_} from the network), but "
                f"prior_mean has shape {mean.shape} and prior_chol "
                f"{chol.shape}; they must be (d,) and (d, r).")
        return torch.tensor(mean), torch.tensor(chol)

    def _fit_array(self, X, y):
        phi = self._features(X)
        y = self.scaler.transform_y(y) if self.scaler is not None else y
        prior_mean, prior_chol = self._prior(phi.shape[1])
        mean, factor = posterior(phi, torch.tensor(y, dtype=torch.float64),
                                 None, prior_mean, prior_chol, float(self.noise_var))
        self.coef_ = mean.numpy()
        self._cov_factor = factor.numpy()
        self.sigma_ = self._cov_factor @ self._cov_factor.T

    def _predictive(self, X):
        """Predictive mean and standard deviation, in the user's units."""
        mean, var = predictive(self._features(X), torch.tensor(self.coef_),
                               torch.tensor(self._cov_factor),
                               float(self.noise_var))
        mean, std = mean.numpy(), np.sqrt(var.numpy())
        if self.scaler is None:
            return mean, std
        return (self.scaler.inverse_transform_y(mean),
                self.scaler.inverse_scale_y(std))


class MetaBayesianRidge(MetaRegressorMixin, TorchLearner):
    __doc__ = """Meta-learned Bayesian linear regression with a closed-form adaptation.

    ALPaCA (Harrison, Sharma and Pavone, 2018): a feature network ``phi``,
    a Gaussian prior over a linear head on ``(1, x, phi(x))`` and a noise
    variance are meta-trained so that, on each training task, the exact
    Bayesian posterior from a support set predicts the query rows well (the
    loss is their negative posterior predictive log-likelihood; the support
    size is drawn at random per task and meta-batch, from 1 to all but one
    of the task's rows, support and query pooled). ``adapt`` computes the
    posterior on a new task's support set: no gradient steps, exact,
    float64, from a single example on. The adapted
    :class:`BayesianLinearRegressor` predicts with
    ``predict(X, return_std=True)`` as scikit-learn's ``BayesianRidge`` does.

    Because the head sees ``(1, x)`` itself, the model contains the linear
    mixed model with random intercepts and slopes (whose BLUP is the
    posterior mean with features ``(1, x)``); the network adds what is not
    linear. Tasks may have any numbers of support and query rows.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The feature network, mapping (n, n_features) to (n, k). None means
        :class:`skmeta.nn.MLP` with ``hidden_sizes=(32, 32)``; its
        ``in_features`` is set from the data. Configure a class with
        ``module__<name>`` parameters.
""" + standardize_doc(True, "features and targets", " (predictions and standard "
                     "deviations are returned in the user's units)") + """\
    n_jobs : int or None, default=None
        Parallel jobs for the per-task work of ``predict`` and ``score``,
        through joblib.
""" + shared_params_doc(max_epochs="auto", meta_batch_size=16,
                        validation_fraction=0.2) + """
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The meta-trained torch core (``net_.module_`` the feature network,
        ``net_.prior_`` the prior).
    history_ : skorch.History
    scaler_ : TaskScaler or None
        The training tasks' statistics (None if ``standardize=False``).
    features_ : torch.nn.Module
        Frozen CPU copy of the feature network.
    prior_mean_ : ndarray of shape (d,)
    prior_chol_ : ndarray of shape (d, d)
        Cholesky factor of the prior covariance of the head's weights
        (standardised units; ``d = 1 + n_features + k``).
    noise_var_ : float
        Meta-learned noise variance (standardised units).
    n_features_in_ : int

    Examples
    --------
    >>> from skmeta import MetaBayesianRidge
    >>> from skmeta.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(100, k_shot=5, random_state=0)
    >>> model = MetaBayesianRidge(max_epochs=5, random_state=0).fit(tasks)
    >>> reg = model.adapt(tasks[0].X_support, tasks[0].y_support)
    >>> mean, std = reg.predict(tasks[0].X_query, return_std=True)
    >>> mean.shape, bool((std > 0).all())
    ((10,), True)
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(self, module=None, *, standardize=True, max_epochs="auto",
                 meta_batch_size=16, meta_lr=1e-3, shuffle=True,
                 validation_fraction=0.2, device="cpu", callbacks=None,
                 n_jobs=None, verbose=0, random_state=None, **kwargs):
        self.module = module
        self.standardize = standardize
        self.max_epochs = max_epochs
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.device = device
        self.callbacks = callbacks
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self._store_routed(kwargs)

    def _net_spec(self, tasks):
        n_features = tasks[0].X_support.shape[1]
        return NetSpec(BayesNet, MLP if self.module is None else self.module,
                       TaskDataset(tasks),
                       data_kwargs={"in_features": n_features,
                                    "hidden_sizes": (32, 32)},
                       routed=self._routed_params("module__", strip=True),
                       params={"n_features": n_features})

    def _fitted_state(self, net, tasks):
        prior = net.prior_
        return {"features_": frozen_copy(net.module_),
                "prior_mean_": prior.mean.detach().cpu().double().numpy(),
                "prior_chol_": prior.chol().detach().cpu().double().numpy(),
                "noise_var_": float(prior.noise_var().detach())}

    def _adapt(self, X_support, y_support):
        return BayesianLinearRegressor(
            features=self.features_, prior_mean=self.prior_mean_,
            prior_chol=self.prior_chol_, noise_var=self.noise_var_,
            scaler=self.scaler_).fit(X_support, y_support)
