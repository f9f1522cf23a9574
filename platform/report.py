"""Parquet results -> a report directory: ``index.html``, ``README.md`` and ``figures/``.

    python -m platform.report RESULTS [RESULTS ...] [--out reports/NAME]

``RESULTS`` is a ``metrics.parquet`` file or a sweep directory holding one (a ``spec.json`` beside
it is picked up).  Several results are compared in one report.  The report holds:

* the budget actually run (steps, seeds, evaluation episodes), stated at the top;
* per benchmark (dataset/env): final normalized score per algorithm, mean +- std over seeds and the
  IQM with a 95% stratified-bootstrap CI (rliable's method, 2000 seeded resamples), next to the
  paper's published number from REFERENCE.md where the task matches;
* learning curves (mean over seeds, 95% bootstrap band), sensitivity plots for every searched
  parameter, Optuna parameter importances and the best configuration per study;
* cost (trial wall time, reserved CPU/GPU hours, steps/s), failed trials and run metadata.

Every number comes from the Parquet (the spec only adds what the Parquet cannot know, marked as
such).  ``index.html`` is self-contained (figures embedded as PNG data URIs); ``README.md`` has the
same content with the figures as relative files; figures are also written as SVG.
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

import platform as _pyplatform  # the project's package; re-exports the stdlib module's names (shim)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC = "eval/normalized_score"
REQUIRED = ("sweep", "trial_id", "algorithm", "dataset", "seed", "step")
N_BOOT = 2000
BOOT_SEED = 0
MAX_TRIAL_LINES = 8          # above this, per-trial curves are drawn thin and only the best is labelled
PACKAGES = ("torch", "ray", "optuna", "gymnasium", "pandas", "numpy", "pyarrow", "matplotlib")
MINUS = "\u2212"             # typographic minus for signed differences ("−12.3")


class ReportError(ValueError):
    """Bad input (missing / unreadable / incomplete results).  ``str(err)`` is one line for the user."""


# ============================================================================ statistics


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of runs.

    Same convention as rliable (``scipy.stats.trim_mean(x, 0.25)``): ``int(0.25 * n)`` runs are cut
    from each end, so for n < 4 nothing is cut and the IQM is the plain mean.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        return float("nan")
    k = int(0.25 * x.size)
    return float(x[k:x.size - k].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """Row-wise IQM of a (reps, n) array (the vectorized form of :func:`iqm`)."""
    k = int(0.25 * samples.shape[1])
    s = np.sort(samples, axis=1)
    return s[:, k:samples.shape[1] - k].mean(axis=1)


def stratified_bootstrap_ci(tasks: Sequence[Sequence[float]], stat: str = "iqm", reps: int = N_BOOT,
                            seed: int = BOOT_SEED, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile CI of ``stat`` over all runs, resampling runs with replacement *within* each task.

    ``tasks`` is one array of per-run scores per task (rliable's stratified bootstrap); with one task
    it is the ordinary bootstrap.  Deterministic for a given ``seed``.
    """
    arrays = [np.asarray(t, dtype=np.float64).ravel() for t in tasks]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Resample each task's runs separately, then pool them: each replicate keeps the task mix fixed.
    samples = np.concatenate([a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays], axis=1)
    values = _iqm_rows(samples) if stat == "iqm" else samples.mean(axis=1)
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


# ============================================================================ loading


def _parquet_path(path: str) -> str:
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
        file = _parquet_path(p)
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
    for col, default in (("env", ""), ("status", "TERMINATED"), ("error", None), (METRIC, np.nan)):
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
    df["_bench"] = [f"{d} ({e})" if e else d for d, e in zip(df["dataset"].astype(str), df["env"])]
    df["score"] = df[METRIC]
    return df.sort_values(["_trial", "seed", "step"], kind="stable").reset_index(drop=True)


def config_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("config/")]


# ============================================================================ paper references

# REFERENCE.md, Diffusion-QL Table (D4RL v2 normalized scores).
DQL_D4RL = {
    "halfcheetah-medium": 51.1, "halfcheetah-medium-replay": 47.8, "halfcheetah-medium-expert": 96.8,
    "hopper-medium": 90.5, "hopper-medium-replay": 101.3, "hopper-medium-expert": 111.1,
    "walker2d-medium": 87.0, "walker2d-medium-replay": 95.5, "walker2d-medium-expert": 110.1,
    "antmaze-umaze": 93.4, "antmaze-umaze-diverse": 66.2, "antmaze-medium-play": 76.6,
    "antmaze-medium-diverse": 78.6, "antmaze-large-play": 46.4, "antmaze-large-diverse": 57.3,
}
# REFERENCE.md, Diffusion Policy Table I, Push-T state observations, average of last checkpoints (x100).
PUSHT_AVG = {"DP-CNN": 91.0, "DP-Transformer": 79.0, "LSTM-GMM": 61.0, "IBC": 84.0, "BET": 70.0}
PUSHT_MAX = {"DP-CNN": 95.0, "DP-Transformer": 95.0, "LSTM-GMM": 67.0, "IBC": 90.0, "BET": 79.0}  # Table I max
# (benchmark source, algorithm) -> the paper's training budget, shown next to what was run.  Only budgets
# REFERENCE.md states; baselines' budgets in the Diffusion Policy table are not given there, so none is shown.
PAPER_BUDGET = {("*", "dql"): "2M gradient steps",
                ("pusht", "diffusionpolicy"): "about 210k (U-Net) / 336k (transformer) optimizer steps"}


def paper_budget(algo: str, dataset: str, env: str = "") -> str:
    """The paper's training budget of ``algo`` on this benchmark ('' when REFERENCE.md gives none)."""
    source = _dataset_source(dataset, env)[0]
    return PAPER_BUDGET.get((source, _canon(algo)), PAPER_BUDGET.get(("*", _canon(algo)), ""))


@dataclass
class Reference:
    value: float | None      # on the report's 0..100 scale
    label: str               # what the cell shows when there is no value, or the source


def _canon(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _dataset_source(dataset: str, env: str) -> tuple[str, str]:
    """'d4rl:hopper-medium-v2' -> ('d4rl', 'hopper-medium-v2'); guesses the source when unprefixed."""
    if ":" in dataset:
        src, name = dataset.split(":", 1)
        return src.lower(), name
    if "pusht" in f"{dataset} {env}".lower():
        return "pusht", dataset
    return "d4rl", dataset


def paper_reference(algorithm: str, dataset: str, env: str = "", backbone: str | None = None) -> Reference:
    """The paper's published number for this algorithm on this benchmark (REFERENCE.md), if any."""
    src, name = _dataset_source(dataset, env)
    if src == "generated":
        return Reference(None, "n/a (generated data)")
    algo = _canon(algorithm)
    if src == "d4rl":
        m = re.match(r"^(.*?)(?:-v(\d+))?$", name.lower())
        task, version = m.group(1), m.group(2)
        locomotion = not task.startswith("antmaze")
        # The published locomotion numbers are on the v2 datasets; other versions are different data.
        if algo in ("dql", "diffusionql") and task in DQL_D4RL and not (locomotion and version not in (None, "2")):
            return Reference(DQL_D4RL[task], "Diffusion-QL, ICLR 2023 (protocol: best, online model selection)")
        return Reference(None, "")
    if src == "pusht":
        if algo in ("diffusionpolicy", "dp"):
            key = "DP-Transformer" if str(backbone or "cnn").lower().startswith("trans") else "DP-CNN"
        else:
            key = {"lstmgmm": "LSTM-GMM", "ibc": "IBC", "bet": "BET"}.get(algo, "")
        if key in PUSHT_AVG:
            return Reference(PUSHT_AVG[key], f"{key}, Diffusion Policy (RSS 2023) Table I avg (protocol: "
                                             f"last_k_mean, last 10 checkpoints; max {PUSHT_MAX[key]:g})")
        return Reference(None, "")
    return Reference(None, "")


# ============================================================================ analysis


# How a run's score is read off its evaluations (the report's ``--protocol``); each paper's own protocol is
# named next to its column.  "final" is the honest one (no selection on the evaluations) and the default.
PROTOCOLS = {
    "final": "the score at each run's last evaluation",
    "best": "each run's best evaluation (Diffusion-QL's online model selection: optimistic)",
    "last_k_mean": "the mean of each run's last {k} evaluations (Diffusion Policy's and EDP's average)",
}
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

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if self.scores.size else float("nan")

    @property
    def std(self) -> float:
        return _std(self.scores)


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
        out.append(Trial(key=key, sweep=first["sweep"], trial_id=first["trial_id"], algorithm=str(first["algorithm"]),
                         bench=first["_bench"], dataset=str(first["dataset"]), env=first["env"], params=params,
                         scores=f["score"].to_numpy(dtype=np.float64), seeds=[int(s) for s in f["seed"]],
                         final_step=int(f["final_step"].max()) if len(f) else int(g["step"].max()),
                         status="ERROR" if (g["status"] == "ERROR").any() else str(first["status"]),
                         error=errors[-1] if errors else None))
    return out


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


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _fmt_params(params: dict, keys: list[str] | None = None) -> str:
    keys = sorted(params) if keys is None else keys
    return ", ".join(f"{k}={_fmt_param(params[k])}" for k in keys if k in params)


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
        if _numeric(vals):
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


# ============================================================================ document model

# A report is a list of blocks rendered twice: to HTML (figures embedded) and to Markdown.


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    name: str                # figures/<name>.png and .svg
    caption: str
    png: bytes = b""


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, t: Table) -> None:
        self.blocks.append(("table", t))

    def fig(self, f: Figure) -> None:
        self.blocks.append(("fig", f))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))


def _inline_html(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only inline markup the report uses)."""
    parts = html.escape(text, quote=False).split("`")
    return "".join(f"<code>{s}</code>" if i % 2 else s for i, s in enumerate(parts))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}code{background:#f3f3f3;padding:0 .2em}
nav ul{columns:2}
""".strip()

_NUM = re.compile(r"^[\u2212+\-]?\d[\d.,]*(\s|$|%| \u00b1| \[)")


def render_html(doc: Doc) -> str:
    body, toc = [], []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            anchor = _slug(b[2])
            if b[1] == 2:
                toc.append(f'<li><a href="#{anchor}">{html.escape(b[2])}</a></li>')
            body.append(f'<h{b[1]} id="{anchor}">{_inline_html(b[2])}</h{b[1]}>')
        elif kind == "p":
            body.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1], quote=False)}</pre>")
        elif kind == "table":
            t: Table = b[1]
            rows = []
            for r in t.rows:
                cells = "".join(f'<td class="num">{_inline_html(c)}</td>' if _NUM.match(c) else
                                f"<td>{_inline_html(c)}</td>" for c in r)
                rows.append(f"<tr>{cells}</tr>")
            cap = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in t.headers)
            body.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif kind == "fig":
            f: Figure = b[1]
            data = base64.b64encode(f.png).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(f.caption)}">'
                        f"<figcaption>{_inline_html(f.caption)} (also as <code>figures/{html.escape(f.name)}.svg"
                        f"</code>)</figcaption></figure>")
    nav = f'<nav><ul>{"".join(toc)}</ul></nav>' if toc else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(doc.title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(doc.title)}</h1>\n{nav}\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {i}" for i in b[1]] + [""]
        elif kind == "pre":
            out += ["```", b[1], "```", ""]
        elif kind == "table":
            t: Table = b[1]
            if t.caption:
                out += [f"**{t.caption}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
            out.append("|" + "|".join("---" for _ in t.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in t.rows]
            out.append("")
        elif kind == "fig":
            f: Figure = b[1]
            out += [f"![{f.caption}](figures/{f.name}.png)", "", f"*{f.caption}* ([SVG](figures/{f.name}.svg))", ""]
    return "\n".join(out).rstrip() + "\n"


# ============================================================================ formatting


def fnum(x: float, digits: int = 1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}".replace("-", MINUS)


def fsigned(x: float, digits: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return ""
    return (MINUS if x < 0 else "+") + f"{abs(x):.{digits}f}"


def fmean_std(x: np.ndarray) -> str:
    if not len(x):
        return "—"
    return f"{fnum(float(np.mean(x)))} ± {fnum(_std(x))}" if len(x) > 1 else f"{fnum(float(x[0]))} (1 seed)"


def fiqm(tasks: list[np.ndarray]) -> str:
    allx = np.concatenate(tasks) if tasks else np.array([])
    if not allx.size:
        return "—"
    lo, hi = stratified_bootstrap_ci(tasks)
    return f"{fnum(iqm(allx))} [{fnum(lo)}, {fnum(hi)}]"


def fduration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ============================================================================ figures


class _Plots:
    """Writes figures as PNG + SVG under ``figures/`` and keeps the PNG bytes for embedding."""

    def __init__(self, fig_dir: str):
        import matplotlib

        matplotlib.use("Agg")   # no display: reports are built on headless machines and inside Ray jobs
        import matplotlib.pyplot as plt

        self.plt = plt
        self.dir = fig_dir
        self.names: set[str] = set()

    def save(self, fig, name: str, caption: str) -> Figure:
        base, i = name, 2
        while name in self.names:  # two studies may slug to the same name
            name, i = f"{base}-{i}", i + 1
        self.names.add(name)
        png = os.path.join(self.dir, f"{name}.png")
        fig.savefig(png, dpi=110, bbox_inches="tight")
        fig.savefig(os.path.join(self.dir, f"{name}.svg"), bbox_inches="tight")
        self.plt.close(fig)
        with open(png, "rb") as f:
            return Figure(name=name, caption=caption, png=f.read())


def curve_with_band(df: pd.DataFrame, trial_key: str) -> pd.DataFrame:
    """Per evaluation step of one trial: mean over seeds and a 95% bootstrap band of that mean."""
    ev = df[(df["_trial"] == trial_key) & df["score"].notna()]
    rows = []
    for k, (step, g) in enumerate(ev.groupby("step", sort=True)):
        x = g["score"].to_numpy(dtype=np.float64)
        lo, hi = stratified_bootstrap_ci([x], stat="mean", seed=BOOT_SEED + k) if x.size > 1 else (x[0], x[0])
        rows.append((step, float(x.mean()), lo, hi, x.size))
    return pd.DataFrame(rows, columns=["step", "mean", "lo", "hi", "n"])


def _plot_curve(ax, curve: pd.DataFrame, label: str, color, lw: float = 1.8, band: bool = True) -> None:
    ax.plot(curve["step"], curve["mean"], marker="o", ms=3, lw=lw, color=color, label=label)
    if band and (curve["n"] > 1).any():
        ax.fill_between(curve["step"], curve["lo"], curve["hi"], color=color, alpha=0.2, lw=0)


def _legend_outside(ax) -> None:
    # Right of the axes, so it never hides a curve or the paper line (bbox_inches="tight" keeps it).
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _ref_line(ax, ref: Reference) -> None:
    if ref.value is not None:
        ax.axhline(ref.value, ls="--", color="0.4", lw=1, label=f"paper: {ref.value:g} ({ref.label})")


def fig_algorithms(plots: _Plots, df: pd.DataFrame, bench: str, best: dict[str, Trial]) -> Figure:
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    colors = plots.plt.get_cmap("tab10").colors
    for i, (algo, t) in enumerate(sorted(best.items())):
        _plot_curve(ax, curve_with_band(df, t.key), f"{algo} (best: {t.trial_id})", colors[i % 10])
        _ref_line(ax, paper_reference(algo, t.dataset, t.env, t.params.get("backbone")))
    ax.set(xlabel="gradient step", ylabel="normalized score", title=bench)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return plots.save(fig, f"curves-{_slug(bench)}",
                      f"{bench}: best configuration of each algorithm, mean over seeds with 95% bootstrap band")


def fig_trials(plots: _Plots, df: pd.DataFrame, title: str, ts: list[Trial], best: Trial | None,
               params: list[str]) -> Figure:
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    colors = plots.plt.get_cmap("tab10").colors
    few = len(ts) <= MAX_TRIAL_LINES
    for i, t in enumerate(ts):
        curve = curve_with_band(df, t.key)
        if curve.empty:
            continue
        is_best = best is not None and t.key == best.key
        label = f"{t.trial_id} ({_fmt_params(t.params, params)})" if params else t.trial_id
        if few:
            _plot_curve(ax, curve, label + (" *best" if is_best else ""), colors[i % 10], lw=2.4 if is_best else 1.4)
        elif is_best:
            _plot_curve(ax, curve, "best: " + label, "C3", lw=2.4)
        else:  # many trials: thin grey lines, no band, so the best one stays readable
            _plot_curve(ax, curve, "_nolegend_", "0.7", lw=0.8, band=False)
    if best is not None:
        _ref_line(ax, paper_reference(best.algorithm, best.dataset, best.env, best.params.get("backbone")))
    ax.set(xlabel="gradient step", ylabel="normalized score", title=title)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    what = "one line per trial" if few else f"{len(ts)} trials in grey, the best in red"
    return plots.save(fig, f"curves-{_slug(title)}",
                      f"{title}: learning curves, {what}; mean over seeds with 95% bootstrap band")


def fig_sensitivity(plots: _Plots, title: str, ts: list[Trial], params: list[str], best: Trial | None) -> Figure:
    n = len(params)
    fig, axes = plots.plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.4), squeeze=False)
    evald = [t for t in ts if t.scores.size]
    for ax, k in zip(axes[0], params):
        pts = [t for t in evald if k in t.params]
        vals = [t.params[k] for t in pts]
        numeric = _numeric(vals)
        if numeric:
            x = np.array(vals, dtype=np.float64)
            if x.min() > 0 and x.max() / x.min() > 10:   # spans more than a decade
                ax.set_xscale("log")
        else:
            cats = sorted({_fmt_param(v) for v in vals})
            x = np.array([cats.index(_fmt_param(v)) for v in vals], dtype=np.float64)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        y = np.array([t.mean for t in pts])
        err = np.array([t.std if np.isfinite(t.std) else 0.0 for t in pts])
        # Trials stopped early (ASHA) are scored at an earlier step: hollow, so they are not read as equals.
        full = np.array([t.final_step == max(u.final_step for u in pts) for t in pts])
        for mask, face, label in ((full, "C0", None), (~full, "white", "stopped early")):
            if mask.any():
                ax.errorbar(x[mask], y[mask], yerr=err[mask], fmt="o", color="C0", mfc=face, ecolor="0.5", capsize=3,
                            ms=5, label=label)
        if best is not None and best in pts:
            i = pts.index(best)
            ax.plot([x[i]], [y[i]], marker="*", ms=14, color="C3", ls="none", label="best")
        if best is not None and best in pts or not full.all():
            ax.legend(fontsize=8)
        ax.set(xlabel=k, title=k)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final normalized score")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plots.save(fig, f"sensitivity-{_slug(title)}",
                      f"{title}: final score vs each searched parameter, one point per trial "
                      "(mean over seeds at its last evaluation, bars: std over seeds; hollow: stopped early)")


# ============================================================================ metadata


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return "unavailable (not a git checkout)"
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return head.stdout.strip() + (" (working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unavailable (git not found)"


def _versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def _cuda(torch_version: str) -> str:
    if torch_version == "not installed":
        return "unknown (torch not installed)"
    if "+cpu" in torch_version:  # skip the ~2 s torch import when the build cannot have CUDA
        return "no (CPU-only torch build)"
    try:
        import torch

        if torch.cuda.is_available():
            return f"yes: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        return "no"
    except Exception as e:  # a broken CUDA install must not break the report
        return f"unknown ({type(e).__name__})"


# ============================================================================ the report


def _budget_lines(df: pd.DataFrame, studies: dict[tuple, list[Trial]], specs: dict[str, dict]) -> list[str]:
    lines = []
    for (sweep, algo, bench), ts in studies.items():
        g = df[(df["sweep"] == sweep) & (df["algorithm"] == algo) & (df["_bench"] == bench)]
        ev = g[g["score"].notna()]
        seeds = sorted(g["seed"].unique().tolist())
        max_step = int(ev["step"].max()) if len(ev) else int(g["step"].max())
        n_evals = ev.groupby(["_trial", "seed"])["step"].nunique()
        train = specs.get(sweep, {}).get("train", {})
        if "eval/episodes" in g.columns and g["eval/episodes"].notna().any():
            eps = ", ".join(str(int(v)) for v in sorted(g["eval/episodes"].dropna().unique()))
            episodes = f"{eps} evaluation episodes per evaluation"
        elif "eval_episodes" in train:
            episodes = f"{train['eval_episodes']} evaluation episodes per evaluation (spec.json)"
        else:
            episodes = "evaluation episodes not recorded"
        extra = f", batch {train['batch_size']} (spec.json)" if "batch_size" in train else ""
        planned = f" of {train['steps']} planned" if "steps" in train and train["steps"] != max_step else ""
        evals = (f"{int(n_evals.min())}–{int(n_evals.max())}" if len(n_evals) and n_evals.min() != n_evals.max()
                 else str(int(n_evals.max())) if len(n_evals) else "0")
        paper = paper_budget(algo, str(ts[0].dataset), ts[0].env)
        lines.append(f"`{sweep}`: {algo} on {bench}: {len(ts)} trial(s) × {len(seeds)} seed(s) "
                     f"({', '.join(map(str, seeds))}) × up to {max_step} gradient steps{planned}{extra}; "
                     f"{evals} evaluation(s) per run, {episodes}."
                     + (f" Paper budget: {paper}." if paper else ""))
    return lines


def _results_section(doc: Doc, by_bench: dict[str, list[Trial]], protocol: str = "final") -> dict[str, dict[str, Trial]]:
    doc.h(2, "Results")
    doc.p(f"Score = `eval/normalized_score` (0..100), protocol `{protocol}`: {PROTOCOLS[protocol].format(k=LAST_K)}. "
          "The papers' columns say which protocol each paper used. A run is one seed of one "
          "trial. mean ± sample std (ddof=1) over runs; IQM = interquartile mean over runs (rliable convention, "
          f"trim 25% each end) with a 95% percentile bootstrap CI ({N_BOOT} resamples, seed {BOOT_SEED}). "
          "\"best config\" is the trial with the highest mean final score among those that ran the full budget; "
          "it is selected on the same seeds it is scored on, so its numbers are optimistic. "
          "Δ = mean − paper.")
    best_by_bench: dict[str, dict[str, Trial]] = {}
    for bench, ts in by_bench.items():
        rows = []
        best_by_bench[bench] = {}
        for algo in sorted({t.algorithm for t in ts}):
            ats = [t for t in ts if t.algorithm == algo]
            best = best_trial(ats)
            if best is None:
                rows.append([algo, "no evaluated trial", str(len(ats)), "0", "—", "—", "—", "", ""])
                continue
            best_by_bench[bench][algo] = best
            ref = paper_reference(algo, best.dataset, best.env, best.params.get("backbone"))
            paper = f"{ref.value:g} ({ref.label})" if ref.value is not None else ref.label
            varying = varying_params(ats)
            groups = [(f"best config: {best.trial_id}" + (f" ({_fmt_params(best.params, varying)})" if varying else ""),
                       [best])]
            evald = [t for t in ats if t.scores.size]
            if len(evald) > 1:
                groups.append((f"all {len(evald)} trials" if len(evald) == len(ats)
                               else f"all {len(evald)} evaluated trials (of {len(ats)})", evald))
            for label, members in groups:
                scores = [t.scores for t in members if t.scores.size]
                allx = np.concatenate(scores) if scores else np.array([])
                steps = sorted({t.final_step for t in members if t.scores.size})
                step = str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
                delta = fsigned(float(allx.mean()) - ref.value) if ref.value is not None and allx.size else ""
                rows.append([algo, label, str(len(members)), str(allx.size), step, fmean_std(allx),
                             fiqm([allx]), paper, delta])
        doc.h(3, bench)
        doc.table(Table(["algorithm", "configuration", "trials", "runs", "final step", "mean ± std",
                         "IQM [95% CI]", "paper", "Δ vs paper"], rows, caption=f"Final normalized score on {bench}"))
    # Across benchmarks: rliable's aggregate IQM, resampling runs within each task (stratified).
    if len(by_bench) > 1:
        rows = []
        for algo in sorted({a for b in best_by_bench.values() for a in b}):
            tasks = {b: best_by_bench[b][algo].scores for b in best_by_bench if algo in best_by_bench[b]}
            allx = np.concatenate(list(tasks.values()))
            rows.append([algo, str(len(tasks)), str(allx.size), fmean_std(allx), fiqm(list(tasks.values())),
                         ", ".join(tasks)])
        doc.h(3, "Across benchmarks")
        doc.p("Best configuration per benchmark; IQM over all runs with a stratified bootstrap (runs resampled "
              "within each benchmark). Only comparable between algorithms that cover the same benchmarks.")
        doc.table(Table(["algorithm", "benchmarks", "runs", "mean ± std", "IQM [95% CI]", "benchmarks used"], rows,
                        caption="Aggregate over benchmarks"))
    return best_by_bench


def _cost_section(doc: Doc, df: pd.DataFrame, all_trials: list[Trial], specs: dict[str, dict]) -> None:
    doc.h(2, "Cost")
    # time/* values are per report point and repeated for every seed row: one row per (trial, step).
    per_step = df.drop_duplicates(subset=["_trial", "step"])
    rows, totals = [], {"trials": 0, "failed": 0, "wall": 0.0, "eval": 0.0, "cpu": 0.0, "gpu": 0.0}
    have_spec = True
    per_algo: dict[str, dict] = {}
    for t in all_trials:
        g = per_step[per_step["_trial"] == t.key]
        wall = float(pd.to_numeric(g.get("time/total_s"), errors="coerce").max()) if "time/total_s" in g else np.nan
        ev = float(pd.to_numeric(g["time/eval_s"], errors="coerce").sum()) if "time/eval_s" in g else np.nan
        sps = pd.to_numeric(g["time/steps_per_s"], errors="coerce").dropna().tolist() if "time/steps_per_s" in g else []
        res = specs.get(t.sweep, {}).get("resources")
        a = per_algo.setdefault(t.algorithm, {"trials": 0, "failed": 0, "wall": 0.0, "eval": 0.0, "cpu": 0.0,
                                              "gpu": 0.0, "sps": [], "spec": True, "timed": False})
        a["timed"] |= bool(np.isfinite(wall))
        a["trials"] += 1
        a["failed"] += t.status == "ERROR"
        wall = 0.0 if not np.isfinite(wall) else wall
        a["wall"] += wall
        a["eval"] += 0.0 if not np.isfinite(ev) else ev
        a["sps"] += sps
        if res:
            # Reserved resources x trial wall time: an upper bound on what the trial used.
            workers = max(1, int(res.get("workers", 1)))
            cpus = workers * float(res.get("cpus_per_worker", 1)) + \
                int(res.get("eval_actors", 0)) * float(res.get("cpus_per_eval_actor", 0))
            a["cpu"] += wall / 3600 * cpus
            a["gpu"] += wall / 3600 * workers * float(res.get("gpus_per_worker", 0))
        else:
            a["spec"] = have_spec = False
    for algo, a in sorted(per_algo.items()):
        for k in totals:
            totals[k] += a[k]
        timed, spec_ok = a["timed"], a["spec"] and a["timed"]
        rows.append([algo, str(a["trials"]), str(a["failed"]), fduration(a["wall"]) if timed else "—",
                     f"{a['wall'] / 3600:.3f}" if timed else "—", fduration(a["eval"]) if timed else "—",
                     f"{a['cpu']:.3f}" if spec_ok else "—", f"{a['gpu']:.3f}" if spec_ok else "—",
                     fnum(float(np.mean(a["sps"])) if a["sps"] else np.nan)])
    if len(rows) > 1:
        rows.append(["total", str(totals["trials"]), str(int(totals["failed"])), fduration(totals["wall"]),
                     f"{totals['wall'] / 3600:.3f}", fduration(totals["eval"]),
                     f"{totals['cpu']:.3f}" if have_spec else "—", f"{totals['gpu']:.3f}" if have_spec else "—", ""])
    doc.p("Trial wall time = max `time/total_s` of each trial, summed over trials (trials may have run "
          "concurrently, so this is trial-hours, not elapsed time; Ray's per-trial start-up is not included). "
          "Eval time = sum of `time/eval_s`. CPU-/GPU-hours = trial wall time × the resources each trial reserved "
          "in spec.json (workers × cpus/gpus per worker + eval actors × cpus per actor), an upper bound on use"
          + ("." if have_spec else "; without spec.json only wall hours are known."))
    doc.table(Table(["algorithm", "trials", "failed", "trial wall time", "trial-hours", "eval time", "CPU-hours",
                     "GPU-hours", "mean steps/s (time/steps_per_s)"], rows, caption="Compute cost"))


def _studies_section(doc: Doc, plots: _Plots, df: pd.DataFrame, studies: dict[tuple, list[Trial]]) -> None:
    doc.h(2, "Hyperparameter studies")
    for (sweep, algo, bench), ts in studies.items():
        title = f"{sweep}: {algo} on {bench}"
        doc.h(3, title)
        best = best_trial(ts)
        params = varying_params(ts)
        if best is None:
            doc.p("No trial of this study reached an evaluation.")
            continue
        doc.p(f"Best configuration: trial `{best.trial_id}`, final score {fmean_std(best.scores)} over "
              f"{best.scores.size} seed(s) at step {best.final_step}.")
        doc.table(Table(["parameter", "value", "searched"],
                        [[k, _fmt_param(v), "yes" if k in params else "fixed"] for k, v in sorted(best.params.items())],
                        caption=f"Best configuration of {title}"))
        ranked = sorted([t for t in ts if t.scores.size], key=lambda t: -t.mean)
        ranked += [t for t in ts if not t.scores.size]   # never evaluated: listed last, unranked
        doc.table(Table(["rank", "trial", *params, "seeds", "final step", "mean ± std", "status"],
                        [[str(i + 1) if t.scores.size else "—", t.trial_id,
                          *[_fmt_param(t.params.get(k, "")) for k in params], str(t.scores.size),
                          str(t.final_step) if t.scores.size else "—", fmean_std(t.scores), t.status]
                         for i, t in enumerate(ranked)], caption=f"Trials of {title}, best first"))
        doc.fig(fig_trials(plots, df, title, ts, best, params))
        if not params:
            doc.p("No searched parameter varies between trials: no sensitivity plot or importances.")
            continue
        doc.fig(fig_sensitivity(plots, title, ts, params, best))
        imp, note = param_importances(ts, params)
        if imp is None:
            doc.p(f"Parameter importances: {note}.")
        else:
            doc.table(Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()],
                            caption=f"Parameter importances ({note})"))


def _failures_section(doc: Doc, all_trials: list[Trial]) -> None:
    failed = [t for t in all_trials if t.status == "ERROR"]
    doc.h(2, "Failed trials")
    if not failed:
        doc.p(f"None of the {len(all_trials)} trials failed.")
        return
    doc.table(Table(["sweep", "trial", "algorithm", "last step", "error"],
                    [[t.sweep, t.trial_id, t.algorithm, str(t.final_step), t.error or "(no error line recorded)"]
                     for t in failed], caption=f"{len(failed)} of {len(all_trials)} trials failed"))


def _metadata_section(doc: Doc, df: pd.DataFrame, all_trials: list[Trial], specs: dict[str, dict],
                      files: list[str]) -> None:
    doc.h(2, "Run metadata")
    versions = _versions()
    nodes = df["node/train"].dropna().nunique() if "node/train" in df.columns else 0
    eval_nodes = (len({n for v in df["node/eval"].dropna() for n in str(v).split(",") if n})
                  if "node/eval" in df.columns else 0)
    doc.ul([
        f"Generated: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"Results: {', '.join(f'`{_shown_path(f)}`' for f in files)}",
        f"Git commit (at report time): `{_git_commit()}`",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"Report machine: {os.cpu_count()} CPUs, processor `{_pyplatform.processor() or _pyplatform.machine()}`, "
        f"{_pyplatform.system()} {_pyplatform.release()}, Python {_pyplatform.python_version()}, "
        f"CUDA: {_cuda(versions['torch'])}",
        f"Training ran on {nodes} Ray node(s), evaluation on {eval_nodes} node(s) (from `node/train`, `node/eval`)"
        if nodes else "Ray node ids not recorded",
        f"Seeds: {', '.join(map(str, sorted(df['seed'].unique().tolist())))}",
        f"Trials: {len(all_trials)}, failed: {sum(t.status == 'ERROR' for t in all_trials)}; rows: {len(df)}",
    ])
    for sweep in sorted(df["sweep"].unique()):
        if sweep in specs:
            doc.h(3, f"Spec: {sweep}")
            doc.pre(json.dumps(specs[sweep], indent=2, sort_keys=True, default=str))
        else:
            doc.p(f"No spec.json found beside the results of `{sweep}`.")


def _shown_path(path: str) -> str:
    """A results file as the report names it: relative to the repository when inside it (no machine's paths)."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return rel if not rel.startswith("..") else os.path.basename(path)


def build_report(paths: list[str], out_dir: str, protocol: str = "final") -> str:
    """Write the report for ``paths`` (metrics.parquet files or sweep directories) to ``out_dir``.

    ``protocol``: how a run's score is read off its evaluations (``PROTOCOLS``).  Returns the path of
    ``index.html``.  Raises :class:`ReportError` (one-line message) on bad input.
    """
    if protocol not in PROTOCOLS:
        raise ReportError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    df, specs, files = load_results([paths] if isinstance(paths, str) else list(paths))
    fig_dir = os.path.join(out_dir, "figures")
    if os.path.isdir(fig_dir):  # stale figures from an earlier report of the same name would mislead
        shutil.rmtree(fig_dir)
    os.makedirs(fig_dir, exist_ok=True)
    plots = _Plots(fig_dir)

    all_trials = trials(df, protocol)
    by_bench: dict[str, list[Trial]] = {}
    studies: dict[tuple, list[Trial]] = {}
    for t in all_trials:
        by_bench.setdefault(t.bench, []).append(t)
        studies.setdefault((t.sweep, t.algorithm, t.bench), []).append(t)

    sweeps = sorted(df["sweep"].unique())
    doc = Doc(f"Report: {', '.join(sweeps)}")
    doc.h(2, "Budget")
    doc.p("What was actually run (from the Parquet; items marked spec.json come from the study file). "
          "The papers' numbers below were obtained with far larger budgets.")
    doc.ul(_budget_lines(df, studies, specs))
    if df["score"].notna().sum() == 0:
        doc.p("No run reached an evaluation: there are no scores to report.")

    best_by_bench = _results_section(doc, by_bench, protocol)

    doc.h(2, "Learning curves")
    for bench, best in best_by_bench.items():
        if len(best) > 1:  # one algorithm alone: its per-trial figure below says it all
            doc.fig(fig_algorithms(plots, df, bench, best))
    doc.p("Per-trial curves are in the study sections below." if len(studies) else "")
    _studies_section(doc, plots, df, studies)
    _cost_section(doc, df, all_trials, specs)
    _failures_section(doc, all_trials)
    _metadata_section(doc, df, all_trials, specs, files)
    doc.blocks = [b for b in doc.blocks if not (b[0] == "p" and not b[1])]

    os.makedirs(out_dir, exist_ok=True)
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(render_html(doc))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(doc))
    return index


def _default_out(paths: list[str]) -> str:
    """reports/<sweep name> for one sweep, reports/<a>+<b>... for a comparison."""
    names = []
    for p in paths:
        file = _parquet_path(p)
        try:
            names += sorted(pd.read_parquet(file, columns=["sweep"])["sweep"].astype(str).unique())
        except Exception:  # unreadable: build_report gives the proper error; name it after the directory
            names.append(os.path.basename(os.path.dirname(os.path.abspath(file))))
    name = "+".join(dict.fromkeys(names))[:100] or "report"
    return os.path.join(REPO_ROOT, "reports", re.sub(r"[^A-Za-z0-9._+-]+", "_", name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="metrics.parquet files or sweep directories holding one")
    parser.add_argument("--out", help="output directory (default: reports/<sweep name>)")
    parser.add_argument("--protocol", default="final", choices=list(PROTOCOLS),
                        help="score of a run: its last evaluation (default), its best, or the mean of its last "
                             f"{LAST_K}; the papers' own protocols are named next to their columns")
    args = parser.parse_args(argv)
    try:
        out = args.out or _default_out(args.results)
        index = build_report(args.results, out, args.protocol)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
