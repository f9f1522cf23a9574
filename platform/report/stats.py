"""Statistics of a report: loading the Parquet, IQM, stratified-bootstrap CIs, performance profiles and
probability of improvement (computed by rliable), the final-score protocols, trials and their best
configuration, Optuna parameter importances."""
from __future__ import annotations

import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rlm

from platform import health
from platform.spec import REPORT_PROTOCOLS  # the study files' report.protocol: the same names

METRIC = "eval/normalized_score"
REQUIRED = ("sweep", "trial_id", "algorithm", "dataset", "seed", "step")
N_BOOT = 2000
# Statistics over runs need runs: IQM trims int(n / 4) runs from each end, so below 5 runs it is the mean of at
# most 3, and a bootstrap CI or band resamples a handful of values.  Fewer runs: the report shows mean +- std.
MIN_RUNS_IQM = 5
MIN_RUNS_BAND = 3
BOOT_SEED = 0


class ReportError(ValueError):
    """Bad input (missing / unreadable / incomplete results).  ``str(err)`` is one line for the user."""


# ============================================================================ statistics
#
# rliable (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice") computes the statistics:
# metrics.aggregate_iqm, library.get_interval_estimates (stratified bootstrap, percentile CIs),
# library.create_performance_profile and metrics.probability_of_improvement.  What stays here is the adaptation:
# the report holds one array of per-run scores per task; rliable takes a (runs, tasks) matrix, or, where tasks
# have different numbers of runs, one array per task (its StratifiedIndependentBootstrap); and rliable draws
# its resamples from numpy's global RNG (its `random_state` argument is not used by its own index sampling), so
# each call runs under a fixed seed that is restored afterwards: a rebuilt report has the same intervals.


@contextmanager
def _seeded(seed: int):
    """numpy's global RNG seeded for one rliable call, its previous state restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _runs(tasks: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """The finite scores of each task that has some, as float arrays."""
    arrays = [np.asarray(t, dtype=np.float64).ravel() for t in tasks]
    arrays = [a[np.isfinite(a)] for a in arrays]
    return [a for a in arrays if a.size]


def _rliable_scores(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """rliable's input for one algorithm: the (runs, tasks) matrix when every task has as many runs, else one
    (runs_i, 1) array per task (get_interval_estimates then resamples each task's runs independently)."""
    if len({a.size for a in arrays}) == 1:
        return np.stack(arrays, axis=1)
    return [a[:, None] for a in arrays]


def _pooled_iqm(*scores: np.ndarray) -> np.ndarray:
    """rliable's aggregate IQM over every run of every task: called with the matrix or with one array per task."""
    return np.array([rlm.aggregate_iqm(np.concatenate([s.ravel() for s in scores]))])


def _pooled_mean(*scores: np.ndarray) -> np.ndarray:
    """The mean over every run (rliable's aggregate_mean of one task; the learning curves' band)."""
    return np.array([rlm.aggregate_mean(np.concatenate([s.ravel() for s in scores])[:, None])])


def _estimate(scores, func, reps: int, seed: int, alpha: float) -> tuple[float, float, float]:
    """(point, lo, hi) of the scalar ``func`` of rliable-shaped ``scores`` with rliable's stratified-bootstrap
    percentile CI, under a fixed seed."""
    with _seeded(seed):
        point, ci = rly.get_interval_estimates({"x": scores}, func, method="percentile", reps=reps,
                                               confidence_interval_size=1 - alpha)
    return float(np.ravel(point["x"])[0]), float(np.ravel(ci["x"])[0]), float(np.ravel(ci["x"])[1])


def _interval(arrays: list[np.ndarray], func, reps: int, seed: int, alpha: float) -> tuple[float, float, float]:
    """(point, lo, hi) of ``func`` over the runs of every task (see ``_rliable_scores``)."""
    return _estimate(_rliable_scores(arrays), func, reps, seed, alpha)


def iqm_ci(tasks: Sequence[Sequence[float]], reps: int = N_BOOT, seed: int = BOOT_SEED,
           alpha: float = 0.05) -> tuple[float, float, float]:
    """IQM over all runs of all tasks (rliable's ``metrics.aggregate_iqm``: ``scipy.stats.trim_mean(x, 0.25)``,
    ``int(0.25 * n)`` runs cut from each end, so below 4 runs the plain mean) and its percentile CI from rliable's
    stratified bootstrap (runs resampled within each task).  ``tasks``: one array of per-run scores per task.
    Returns ``(iqm, lo, hi)``; nan without runs."""
    arrays = _runs(tasks)
    if not arrays:
        return float("nan"), float("nan"), float("nan")
    return _interval(arrays, _pooled_iqm, reps, seed, alpha)


def mean_ci(runs: Sequence[float], reps: int = N_BOOT, seed: int = BOOT_SEED,
            alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of one task's runs (rliable's bootstrap, one stratum)."""
    arrays = _runs([runs])
    if not arrays:
        return float("nan"), float("nan")
    return _interval(arrays, _pooled_mean, reps, seed, alpha)[1:]


def score_profile(tasks: Sequence[Sequence[float]], taus: np.ndarray, reps: int = N_BOOT, seed: int = BOOT_SEED,
                  alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's performance profile (run-score distribution): for each threshold ``tau``, the fraction of runs
    scoring above it, with a stratified-bootstrap percentile band; ``library.create_performance_profile``.

    Tasks with different numbers of runs go through ``get_interval_estimates`` with one array per task and the
    mean over tasks of rliable's ``score_distributions`` (each task weighing the same, as the matrix form does).
    ``tasks``: one array of per-run scores per task; ``taus (T,)``.  Returns ``(fraction, lo, hi)``, each ``(T,)``.
    """
    arrays = _runs(tasks)
    taus = np.asarray(taus, dtype=np.float64)
    if not arrays:
        nan = np.full(taus.shape, np.nan)
        return nan, nan, nan
    scores = _rliable_scores(arrays)
    with _seeded(seed):
        if isinstance(scores, np.ndarray):
            point, ci = rly.create_performance_profile({"x": scores}, taus, reps=reps,
                                                       confidence_interval_size=1 - alpha)
        else:
            point, ci = rly.get_interval_estimates(
                {"x": scores}, lambda *per_task: np.mean([rly.score_distributions(s, taus) for s in per_task], axis=0),
                reps=reps, confidence_interval_size=1 - alpha)
    return np.asarray(point["x"], dtype=np.float64), ci["x"][0], ci["x"][1]


def probability_of_improvement(x_tasks: Sequence[Sequence[float]], y_tasks: Sequence[Sequence[float]],
                               reps: int = N_BOOT, seed: int = BOOT_SEED,
                               alpha: float = 0.05) -> tuple[float, float, float]:
    """P(X > Y): rliable's ``metrics.probability_of_improvement`` (per task, the probability that a run of X
    scores above a run of Y, ties counting half (Mann-Whitney U / (n_x n_y)); averaged over tasks) with its
    stratified-bootstrap percentile CI (``get_interval_estimates`` on the pair: runs of X and of Y resampled
    independently within each task).  ``x_tasks[i]`` and ``y_tasks[i]`` are the runs of X and Y on task i.
    Returns ``(p, lo, hi)``; nan if a task has no run of X or of Y."""
    xs, ys = _runs(x_tasks), _runs(y_tasks)
    if len(xs) != len(x_tasks) or len(ys) != len(y_tasks) or len(xs) != len(ys) or not xs:
        return float("nan"), float("nan"), float("nan")
    sx, sy = _rliable_scores(xs), _rliable_scores(ys)
    if isinstance(sx, np.ndarray) and isinstance(sy, np.ndarray):  # rliable's own form: one matrix per algorithm
        pair, func = [sx, sy], rlm.probability_of_improvement
    else:  # different numbers of runs between tasks: one array per task of each, the same average over tasks
        k = len(xs)
        pair = [x[:, None] for x in xs] + [y[:, None] for y in ys]
        def func(*a):
            return np.mean([rlm.probability_of_improvement(a[i], a[k + i]) for i in range(k)])
    return _estimate(pair, func, reps, seed, alpha)


def sample_std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


# ============================================================================ loading


def parquet_path(path: str) -> str:
    if not os.path.exists(path):
        raise ReportError(f"no results at {path}")
    if os.path.isdir(path):
        inner = os.path.join(path, "metrics.parquet")
        if not os.path.exists(inner):
            raise ReportError(f"no results at {path} (no metrics.parquet in this directory)")
        return inner
    return path


def _read_parquet(file: str) -> pd.DataFrame:
    # Same contract as platform.results.read_results, read here because importing platform.results
    # pulls in torch (via platform.checkpoint): seconds that a report does not need.
    try:
        return pd.read_parquet(file, engine="pyarrow")
    except Exception:  # pyarrow raises ArrowInvalid, OSError... on anything that is not Parquet
        raise ReportError(f"{file}: not a readable Parquet file") from None


def load_results(paths: Sequence[str]) -> tuple[pd.DataFrame, dict[str, dict], list[str]]:
    """Read and concatenate results files -> (rows, spec per sweep name, parquet paths)."""
    if not paths:
        raise ReportError("no results given")
    frames, specs, files = [], {}, []
    for p in paths:
        file = parquet_path(p)
        df = _read_parquet(file)
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise ReportError(f"{file}: missing required column(s): {', '.join(missing)}")
        if len(df) == 0:
            raise ReportError(f"{file}: no rows")
        for col in ("seed", "step"):
            if pd.to_numeric(df[col], errors="coerce").isna().any():
                raise ReportError(f"{file}: column {col} has missing or non-numeric values")
        files.append(file)
        frames.append(df)
        spec_file = os.path.join(os.path.dirname(file), "spec.json")
        if os.path.exists(spec_file):
            try:
                with open(spec_file) as f:
                    spec = json.load(f)
                specs[str(spec.get("name") or df["sweep"].iloc[0])] = spec
            except (OSError, ValueError):
                pass  # a broken spec.json only costs the report its spec-derived lines
    df = pd.concat(frames, ignore_index=True)
    # The same file given twice (or overlapping resumed copies) must not double-count runs.
    df = df.drop_duplicates(subset=["sweep", "trial_id", "seed", "step"], keep="last")
    return _normalize(df), specs, files


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col, default in (("env", ""), ("status", "TERMINATED"), ("error", None), (METRIC, np.nan),
                         ("paper_default", False)):
        if col not in df.columns:
            df[col] = default
    df["env"] = df["env"].fillna("").astype(str)
    df["status"] = df["status"].fillna("TERMINATED").astype(str)
    df["sweep"], df["trial_id"] = df["sweep"].astype(str), df["trial_id"].astype(str)
    df["seed"], df["step"] = df["seed"].astype(int), df["step"].astype(int)
    df[METRIC] = pd.to_numeric(df[METRIC], errors="coerce")
    # Trial ids are unique within a sweep only; prefix the sweep when several sweeps are compared.
    multi = df["sweep"].nunique() > 1
    df["_trial"] = (df["sweep"] + "/" + df["trial_id"]) if multi else df["trial_id"]
    df["_bench"] = [f"{dataset_label(d)} ({e})" if e else dataset_label(d)
                    for d, e in zip(df["dataset"].astype(str), df["env"])]
    df["score"] = df[METRIC]
    return df.sort_values(["_trial", "seed", "step"], kind="stable").reset_index(drop=True)


def dataset_label(name: str) -> str:
    """What a dataset is, never where it was on the machine that ran it: ``pusht:/x/pusht_cchi_v7_replay.zarr`` ->
    ``pusht``, ``d4rl:/x/hopper_medium-v2.hdf5`` -> ``d4rl:hopper_medium-v2``; names without a path unchanged."""
    kind, _, value = str(name).partition(":")
    if not value or ("/" not in value and os.sep not in value):
        return str(name)
    if kind == "pusht":
        return "pusht"
    return f"{kind}:{os.path.splitext(os.path.basename(value.rstrip('/')))[0]}"


def spec_for_display(spec: dict) -> dict:
    """A study's spec.json with its dataset paths replaced by their labels (``dataset_label``)."""
    out = dict(spec)
    if isinstance(out.get("dataset"), str):
        out["dataset"] = dataset_label(out["dataset"])
    if isinstance(out.get("datasets"), list):
        out["datasets"] = [dataset_label(d) for d in out["datasets"]]
    out.pop("path", None)  # the study file's absolute path on the machine that ran it
    return out


def config_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("config/")]


# ============================================================================ analysis


# How a run's score is read off its evaluations (the report's ``--protocol``); each paper's own protocol is
# named next to its column.  "final" is the honest one (no selection on the evaluations) and the default.
PROTOCOLS = {
    "final": "the score at each run's last evaluation",
    "best": "each run's best evaluation (Diffusion-QL's online model selection: optimistic)",
    "last_k_mean": "the mean of each run's last {k} evaluations (Diffusion Policy's and EDP's average)",
}
assert tuple(PROTOCOLS) == REPORT_PROTOCOLS
LAST_K = 10  # Diffusion Policy: the last 10 checkpoints; EDP's code: its last 10 evaluations


def final_scores(df: pd.DataFrame, protocol: str = "final", k: int = LAST_K) -> pd.DataFrame:
    """One row per (trial, seed): the run's score under ``protocol`` and its last evaluated ``final_step``."""
    if protocol not in PROTOCOLS:
        raise ReportError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    ev = df[df["score"].notna()]
    if ev.empty:
        return ev.assign(final_step=pd.Series(dtype=int))
    last = ev.loc[ev.groupby(["_trial", "seed"])["step"].idxmax()].copy()
    if protocol != "final":
        grouped = ev.sort_values("step").groupby(["_trial", "seed"])["score"]
        agg = grouped.max() if protocol == "best" else grouped.apply(lambda x: float(x.tail(k).mean()))
        last["score"] = [float(agg.loc[(t, s)]) for t, s in zip(last["_trial"], last["seed"])]
    return last.rename(columns={"step": "final_step"}).reset_index(drop=True)


@dataclass
class Trial:
    key: str
    sweep: str
    trial_id: str
    algorithm: str
    bench: str
    dataset: str
    env: str
    params: dict
    scores: np.ndarray              # final score per seed, seed order
    seeds: list[int]
    final_step: int
    status: str
    error: str | None
    paper_default: bool = False     # ran the paper's setting (the study's first trial)
    per_task: tuple[str, ...] = ()  # params that came from the paper's per-task table (platform/health.py's flags)
    flags: tuple[str, ...] = ()     # health flags (platform/health.py): reasons not to believe the score

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if self.scores.size else float("nan")

    @property
    def std(self) -> float:
        return sample_std(self.scores)


def trials(df: pd.DataFrame, protocol: str = "final") -> list[Trial]:
    """Every trial, evaluated or not, with its scores under ``protocol`` and its configuration."""
    fin = final_scores(df, protocol)
    cfg = config_columns(df)
    out = []
    for key, g in df.groupby("_trial", sort=True):
        first = g.iloc[0]
        f = fin[fin["_trial"] == key].sort_values("seed")
        errors = [e for e in g["error"].dropna().astype(str) if e.strip()]
        params = {c[len("config/"):]: _py(g[c].dropna().iloc[0]) for c in cfg if g[c].notna().any()}
        per_task = g["per_task"].dropna().iloc[0] if "per_task" in g.columns and g["per_task"].notna().any() else ""
        error = errors[-1] if errors else None
        out.append(Trial(key=key, sweep=first["sweep"], trial_id=first["trial_id"], algorithm=str(first["algorithm"]),
                         bench=first["_bench"], dataset=str(first["dataset"]), env=first["env"], params=params,
                         scores=f["score"].to_numpy(dtype=np.float64), seeds=[int(s) for s in f["seed"]],
                         final_step=int(f["final_step"].max()) if len(f) else int(g["step"].max()),
                         status="ERROR" if (g["status"] == "ERROR").any() else str(first["status"]),
                         error=errors[-1] if errors else None,
                         paper_default=bool(g["paper_default"].fillna(False).astype(bool).any()),
                         per_task=tuple(p for p in str(per_task).split(",") if p),
                         flags=tuple(health.trial_flags(g, str(first["algorithm"]), str(first["dataset"]), params,
                                                        error))))
    return out


def final_metric(df: pd.DataFrame, trial: Trial, metric: str) -> float:
    """The mean over seeds of ``metric`` at each seed's last report that has it (nan if none)."""
    if metric not in df.columns:
        return float("nan")
    g = df[(df["_trial"] == trial.key)][["seed", "step", metric]].dropna()
    if g.empty:
        return float("nan")
    last = g.sort_values("step").groupby("seed").tail(1)
    return float(pd.to_numeric(last[metric], errors="coerce").mean())


def pareto_front(points: list[tuple[float, float]], modes: tuple[str, str]) -> list[bool]:
    """For each (a, b) point, whether no other point is at least as good in both and better in one."""
    sign = [1.0 if m == "max" else -1.0 for m in modes]
    pts = [(sign[0] * a, sign[1] * b) for a, b in points]
    return [all(not (q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1])) for q in pts)
            for p in pts]


def _py(v):
    """numpy scalar -> plain Python (for optuna distributions and display)."""
    return v.item() if hasattr(v, "item") else v


def best_trial(ts: list[Trial]) -> Trial | None:
    """Highest mean final score among the trials that ran the full budget (ASHA-stopped ones did not)."""
    evald = [t for t in ts if t.scores.size]
    if not evald:
        return None
    full = max(t.final_step for t in evald)
    pool = [t for t in evald if t.final_step == full]
    return max(pool, key=lambda t: (t.mean, -pool.index(t)))   # ties: the first in trial order


def varying_params(ts: list[Trial]) -> list[str]:
    """Config parameters whose value differs between trials: the searched ones."""
    names = sorted({k for t in ts for k in t.params})
    out = []
    for k in names:
        vals = {json.dumps(t.params.get(k), sort_keys=True, default=str) for t in ts}
        if len(vals) > 1:
            out.append(k)
    return out


def is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def fmt_params(params: dict, keys: list[str] | None = None) -> str:
    keys = sorted(params) if keys is None else keys
    return ", ".join(f"{k}={fmt_param(params[k])}" for k in keys if k in params)


def param_importances(ts: list[Trial], params: list[str]) -> tuple[dict[str, float] | None, str]:
    """Optuna importances of the searched parameters for the trials' mean final score -> (values, note)."""
    evald = [t for t in ts if t.scores.size and np.isfinite(t.mean) and all(k in t.params for k in params)]
    if not params:
        return None, "no searched parameters"
    if len(evald) < 3:
        return None, f"not computed: {len(evald)} evaluated trial(s); importances need at least 3"
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for k in params:
        vals = [t.params[k] for t in evald]
        if is_numeric(vals):
            lo, hi = min(vals), max(vals)
            log = lo > 0 and hi / lo > 10
            if all(isinstance(v, int) for v in vals):
                dists[k] = IntDistribution(int(lo), int(hi), log=log and lo >= 1)
            else:
                dists[k] = FloatDistribution(float(lo), float(hi), log=log)
        else:
            dists[k] = CategoricalDistribution(sorted({json.dumps(v, default=str) for v in vals}))
    study = optuna.create_study(direction="maximize")
    for t in evald:
        p = {k: (t.params[k] if not isinstance(dists[k], CategoricalDistribution)
                 else json.dumps(t.params[k], default=str)) for k in params}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=t.mean))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # PedAnova is flagged experimental
        # fANOVA and mean-decrease-impurity need scikit-learn; PED-ANOVA does not.
        for name, make in (("fANOVA", lambda: optuna.importance.FanovaImportanceEvaluator(seed=BOOT_SEED)),
                           ("mean decrease impurity",
                            lambda: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=BOOT_SEED)),
                           ("PED-ANOVA", lambda: optuna.importance.PedAnovaImportanceEvaluator())):
            try:
                evaluator = make()
            except ImportError:
                continue
            try:
                imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
            except Exception as e:  # a degenerate study (e.g. all scores equal) is reported, not fatal
                return None, f"not computed ({name}: {type(e).__name__}: {e})"
            note = f"optuna {name} over {len(evald)} trials"
            if len(evald) < 10:
                note += " (few trials: indicative only)"
            if len(params) == 1:
                note += "; a single searched parameter has importance 1 by construction"
            return {k: float(v) for k, v in imp.items()}, note
    return None, "not computed: no optuna importance evaluator available"


