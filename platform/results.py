"""Every trial's metric history -> one Parquet dataset per sweep (``<storage>/<name>/metrics.parquet``).

One row per (trial, seed, report point)::

    sweep, trial_id, algorithm, dataset, env, seed, config/<param>..., step, time_s,
    train/<metric>..., eval/return_mean, eval/return_std, eval/normalized_score,
    eval/success_rate, eval/act_ms, ..., time/steps_per_s, time/steps_per_cpu_s, time/ms_per_step, node/train, node/eval,
    status, error, paper_default, per_task

``config/<param>`` holds what the trial trained with: the study's values over the paper's per-task values for
the dataset (``algorithms.resolve_params``), plus the ``CHANGED_DEFAULTS`` fields at the config's default when the
study leaves them out (a row without one ran before it existed: ``read_results`` fills in the old default);
``per_task`` names the params that came from the paper's table.
Health columns: ``eval/action_out_of_box``, ``eval/action_excess_max``, ``train/nonfinite_losses`` and, for
Q-learning algorithms, ``train/q_mean``.  A trial a scheduler stopped early has status ``STOPPED``.  ``paper_default`` marks the trial that ran the
paper's setting (the algorithm's defaults for every searched parameter, run first by Optuna studies).
A failed trial keeps its rows (status ``ERROR``) and, if it never reported, gets one row with the
reason in ``error``.  The file is written atomically (temp file + rename) and merged with what is
already there, keyed by (sweep, trial_id, seed, step), so a resumed sweep appends without duplicates.
Read it with ``pandas.read_parquet(path)``.
"""
from __future__ import annotations

import json
import math
import os
import re

import pandas as pd

import algorithms
from platform import history
from platform.checkpoint import atomic_write
from platform.spec import SweepSpec

KEY = ["sweep", "trial_id", "seed", "step"]

# Config fields whose default changed after results had been recorded without them: every new row records the
# value the trial ran with (the study's, else the config's default), so a row without it ran the old default,
# and ``read_results`` fills it in as that.  diffusion_policy.ddim_spacing: DDIM ran on round(linspace(K-1, 0, n))
# ("linspace") until the field existed; its default is now diffusers' "leading" (algorithms/diffusion_policy.py).
# edp.time_embedding: EDP's noise network took Diffusion-QL's step sinusoid ("dql") until the equivalence twin found
# the authors' (e732f4d); the same commit moved DPM-Solver's intermediate points, which no field records.
CHANGED_DEFAULTS = {"diffusion_policy": {"ddim_spacing": "linspace"}, "edp": {"time_embedding": "dql"}}


def with_changed_defaults(algorithm: str, params: dict) -> dict:
    """``params`` plus today's default of each of ``algorithm``'s ``CHANGED_DEFAULTS`` fields it does not set."""
    names = CHANGED_DEFAULTS.get(algorithm, {})
    if not names:
        return params
    fields = algorithms.config_fields(algorithm)
    return {**{k: fields[k].default for k in names}, **params}


def fill_changed_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Rows recorded before a ``CHANGED_DEFAULTS`` field existed (column missing or empty) get its old default."""
    if "algorithm" not in df.columns:
        return df
    for algorithm, old in CHANGED_DEFAULTS.items():
        rows = df["algorithm"] == algorithm
        if not rows.any():
            continue
        for k, value in old.items():
            col = f"config/{k}"
            if col not in df.columns:
                df[col] = pd.Series([None] * len(df), index=df.index, dtype=object)
            df.loc[rows & df[col].isna(), col] = value
    return df


def results_path(storage: str, name: str) -> str:
    return os.path.join(storage, name, "metrics.parquet")


def save_spec(spec: SweepSpec, storage: str) -> None:
    """Keep the study next to its results (reports cite it)."""
    from platform.checkpoint import save_json

    save_json(os.path.join(storage, spec.name, "spec.json"), spec.to_dict())


def rows_from_history(reports: list[dict], *, sweep: str, trial_id: str, algorithm: str, dataset: str, env: str,
                      seeds: list[int], params: dict, status: str, error: str | None,
                      paper_default: bool = False, per_task: list[str] = ()) -> list[dict]:
    """Turn a trial's reported results (flat dicts) into one row per (seed, step).

    ``paper_default``: the trial ran the paper's setting (the study's first, ``search.paper_point``);
    ``per_task``: the names of ``params`` that came from the paper's per-task table (column ``per_task``)."""
    rows = []
    base = {"sweep": sweep, "trial_id": trial_id, "algorithm": algorithm, "dataset": dataset, "env": env,
            "status": status, "error": error, "paper_default": bool(paper_default),
            "per_task": ",".join(per_task)}
    base.update({f"config/{k}": _plain(v) for k, v in params.items()})
    for result in reports:
        step = result.get("step")
        if step is None or (isinstance(step, float) and math.isnan(step)):
            continue
        shared = {k: v for k, v in result.items() if k.startswith(("time/", "node/"))}
        for seed, metrics in history.seed_records(result).items():
            rows.append({**base, "seed": seed, "step": int(step), "time_s": result.get("time/total_s"),
                         **shared, **metrics})
    if not rows:  # never reported: keep one row per seed that says why
        rows = [{**base, "seed": s, "step": 0} for s in seeds]
    return rows


def _plain(v):
    return v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)


def _trial_history(result, history_dir: str | None = None, trial_id: str | None = None) -> list[dict]:
    """The trial's reports: the training loop's append-only JSONL log if present, else Tune's records."""
    records = history.read(history_dir, trial_id)
    if records is not None:
        return records
    df = result.metrics_dataframe
    if df is None or len(df) == 0:
        return [result.metrics] if result.metrics else []
    return df.to_dict("records")


def _error_line(err) -> str | None:
    if err is None:
        return None
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # The root cause is usually the last "SomethingError: ..." line of the chained traceback.
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    return (causes[-1] if causes else lines[-1] if lines else repr(err))[:500]


def frame_from_grid(grid, spec: SweepSpec, storage: str | None = None) -> pd.DataFrame:
    from platform.datasets import dataset_env_id

    from platform.search import paper_point

    point = paper_point(spec)
    rows = []
    for result in grid:
        trial_id = _trial_id(result)
        tspec, searched = spec.for_trial(result.config or {})  # the trial's algorithm, dataset and fixed config
        env = tspec.env or dataset_env_id(tspec.dataset)
        # what the trial trained with: the study's values over the paper's per-task ones (training.py does the same)
        params, per_task = algorithms.resolve_params(tspec.algorithm, tspec.dataset, {**tspec.config, **searched})
        params = with_changed_defaults(tspec.algorithm, params)  # recorded even when the study leaves them out
        reports = _trial_history(result, history.history_dir(storage, spec.name) if storage else None, trial_id)
        last_step = max((int(h["step"]) for h in reports if h.get("step") is not None), default=0)
        # ended without an error before its budget: a scheduler (ASHA) stopped it
        status = "ERROR" if result.error else "STOPPED" if last_step < spec.train.steps else "TERMINATED"
        rows += rows_from_history(reports, sweep=spec.name, trial_id=trial_id,
                                  algorithm=tspec.algorithm, dataset=tspec.dataset, env=env, seeds=spec.train.seeds,
                                  params=params, per_task=per_task, status=status, error=_error_line(result.error),
                                  paper_default=point is not None and all(
                                      _same(searched.get(k), v) for k, v in point.items()))
    return pd.DataFrame(rows)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9))


def _trial_id(result) -> str:
    if result.metrics and result.metrics.get("trial_id"):
        return str(result.metrics["trial_id"])
    # Trials that never reported: the id is the suffix of the trial directory name.
    base = os.path.basename(str(result.path).rstrip("/"))
    m = re.search(r"_([0-9a-f]{5,8})_\d+_", base)  # <trainable>_<trial id>_<index>_<params>_<date>
    return m.group(1) if m else base


def merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Union of old and new rows; for a repeated (sweep, trial, seed, step) the new row wins."""
    df = new if old is None or len(old) == 0 else pd.concat([old, new], ignore_index=True)
    df = df.drop_duplicates(subset=KEY, keep="last")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def write_frame(df: pd.DataFrame, path: str) -> str:
    old = read_results(path) if os.path.exists(path) else None
    df = merge(old, df)
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))
    return path


def write_results(grid, spec: SweepSpec, storage: str) -> str:
    return write_frame(frame_from_grid(grid, spec, storage), results_path(storage, spec.name))


def write_portable(results: str, out_dir: str) -> None:
    """Copy a sweep's ``metrics.parquet`` (and ``spec.json`` beside it) into ``out_dir`` with every dataset path
    replaced by its label (``pusht:/x/pusht_cchi_v7_replay.zarr`` -> ``pusht``): a report's results say what the
    data was, never where it lay on the machine that ran them.  The report reads labels as it reads paths."""
    from platform.report.stats import dataset_label, spec_for_display

    df = read_results(results, fill=False)  # a copy of the file: only the paths change
    for col in ("dataset", "config/dataset"):
        if col in df.columns:
            df[col] = df[col].map(lambda v: dataset_label(v) if isinstance(v, str) else v)
    atomic_write(os.path.join(out_dir, "metrics.parquet"), lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))
    spec_json = os.path.join(os.path.dirname(results) if results.endswith(".parquet") else results, "spec.json")
    if os.path.exists(spec_json):
        with open(spec_json) as f:
            raw = json.load(f)
        spec = spec_for_display(raw)
        if isinstance(raw.get("path"), str):  # the study file: relative to the repo, never the machine's absolute path
            spec["path"] = raw["path"] if not os.path.isabs(raw["path"]) else os.path.basename(raw["path"])

        def write_json(tmp):
            with open(tmp, "w") as f:
                json.dump(spec, f, indent=2, sort_keys=True)

        atomic_write(os.path.join(out_dir, "spec.json"), write_json)


def read_results(path: str, fill: bool = True) -> pd.DataFrame:
    """Read one results file (or a directory holding metrics.parquet) with a clear error; ``fill``: rows recorded
    before a ``CHANGED_DEFAULTS`` field get its old default (False: the file as it is)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.parquet")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no results at {path}")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends on a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    return fill_changed_defaults(df) if fill else df


def best_trials(df: pd.DataFrame, metric: str, mode: str = "max", top: int = 5) -> pd.DataFrame | None:
    """Per trial: its config and the final value of ``metric`` averaged over seeds, best first."""
    if metric not in df.columns or df[metric].notna().sum() == 0:
        return None
    evald = df[df[metric].notna()]
    last = evald.loc[evald.groupby(["trial_id", "seed"])["step"].idxmax()]
    cfg = [c for c in df.columns if c.startswith("config/")]
    summary = last.groupby("trial_id").agg(**{"algorithm": ("algorithm", "first"), metric: (metric, "mean"),
                                              "seeds": ("seed", "nunique"),
                                              "step": ("step", "max")})
    params = last.groupby("trial_id")[cfg].first() if cfg else None
    if params is not None:
        summary = summary.join(params)
    summary = summary.sort_values(metric, ascending=(mode == "min")).head(top)
    return summary.reset_index()
