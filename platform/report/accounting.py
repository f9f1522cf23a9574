"""The report's bookkeeping sections: the budget that was run, the health flags, the compute cost, the failed trials
and the run's metadata (commit, packages, machine, specs).  ``platform.report`` assembles them with its results,
study and video sections.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import subprocess

import numpy as np
import pandas as pd

import platform as _pyplatform  # the project's package; re-exports the stdlib module's names (shim)
from platform.report.document import Doc, Table, fduration, fnum
from platform.report.papers import paper_budget
from platform.report.stats import Trial, spec_for_display

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("torch", "ray", "optuna", "gymnasium", "pandas", "numpy", "pyarrow", "matplotlib")


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


def budget_section(doc: Doc, df: pd.DataFrame, studies: dict[tuple, list[Trial]], specs: dict[str, dict]) -> None:
    """What was run: one table row per (study, algorithm, dataset); what every row shares (batch, evaluation
    episodes) is said once above it.  Data without reference returns (``OfflineDataset``'s no-reference state) is
    named as such: its runs evaluated, but have no normalized score."""
    doc.h(2, "Budget")
    rows, no_reference = [], []
    for (sweep, algo, bench), ts in studies.items():
        g = df[(df["sweep"] == sweep) & (df["algorithm"] == algo) & (df["_bench"] == bench)]
        ev = g[g["score"].notna()]
        unscored = (ev.empty and "eval/return_mean" in g.columns and g["eval/return_mean"].notna().any())
        if unscored:  # evaluated (raw returns) with no reference returns to normalize them by
            ev = g[g["eval/return_mean"].notna()]
            no_reference.append(bench)
        seeds = sorted(g["seed"].unique().tolist())
        max_step = int(ev["step"].max()) if len(ev) else int(g["step"].max())
        n_evals = ev.groupby(["_trial", "seed"])["step"].nunique()
        train = specs.get(sweep, {}).get("train", {})
        if "eval/episodes" in g.columns and g["eval/episodes"].notna().any():
            episodes = ", ".join(str(int(v)) for v in sorted(g["eval/episodes"].dropna().unique()))
        elif "eval_episodes" in train:
            episodes = f"{train['eval_episodes']} (spec.json)"
        else:
            episodes = "not recorded"
        planned = f" of {train['steps']} planned" if "steps" in train and train["steps"] != max_step else ""
        evals = (f"{int(n_evals.min())}–{int(n_evals.max())}" if len(n_evals) and n_evals.min() != n_evals.max()
                 else str(int(n_evals.max())) if len(n_evals) else "0")
        rows.append({"study": f"`{sweep}`", "algorithm": algo, "dataset": bench,
                     "runs": f"{len(ts)} trial(s) × {len(seeds)} seed(s) ({', '.join(map(str, seeds))}) × up to "
                             f"{max_step} gradient steps{planned}",
                     "batch": f"{train['batch_size']} (spec.json)" if "batch_size" in train else "not recorded",
                     "evaluations per run": evals + (" (no reference returns: no normalized score)" if unscored else ""),
                     "evaluation episodes": episodes,
                     "paper budget": paper_budget(algo, str(ts[0].dataset), ts[0].env) or "—"})
    shared = [k for k in ("batch", "evaluation episodes") if rows and len({r[k] for r in rows}) == 1]
    said = {"batch": lambda v: f"batch {v}", "evaluation episodes": lambda v: f"{v} evaluation episodes per evaluation"}
    doc.p("What was actually run (from the Parquet; items marked spec.json come from the study file). "
          "The papers' numbers below were obtained with far larger budgets."
          + (" Every run: " + "; ".join(said[k](rows[0][k]) for k in shared) + "." if shared else ""))
    headers = [k for k in ("study", "algorithm", "dataset", "runs", "batch", "evaluations per run",
                           "evaluation episodes", "paper budget") if k not in shared]
    if rows:
        doc.table(Table(headers, [[r[k] for k in headers] for r in rows], caption="What was run"))
    if df["score"].notna().sum() == 0:
        doc.p(f"The runs evaluated, but {', '.join(sorted(set(no_reference)))} has no reference returns (random and "
              "expert) to normalize by: there is no normalized score to report; the raw returns are "
              "`eval/return_mean` in the Parquet." if no_reference else
              "No run reached an evaluation: there are no scores to report.")


def health_section(doc: Doc, studies: dict[tuple, list[Trial]]) -> None:
    """One line per (study, algorithm, dataset): ok, or each flag of platform/health.py with the trials it hit."""
    doc.h(2, "Health")
    doc.p("Signs that a score cannot be believed (platform/health.py): more than 1% of a run's actions beyond the "
          "action box at its last evaluation, some by more than 0.05 half-widths (clipped at the env, as every "
          "public evaluation loop does; EDP's unclipped last step puts a few hundredths over, not flagged), a "
          "non-finite loss, a diverging Q scale, a configuration today's validation refuses, or an older run made "
          "off the paper's per-task settings.")
    lines = []
    for (sweep, algo, bench), ts in studies.items():
        flagged = [t for t in ts if t.flags]
        if not flagged:
            lines.append(f"`{sweep}`: {algo} on {bench}: ok ({len(ts)} trial(s))")
            continue
        reasons = sorted({f for t in flagged for f in t.flags})
        lines.append(f"`{sweep}`: {algo} on {bench}: ⚠ {len(flagged)} of {len(ts)} trial(s) flagged: "
                     + "; ".join(reasons))
    doc.ul(lines)


def cost_section(doc: Doc, df: pd.DataFrame, all_trials: list[Trial], specs: dict[str, dict]) -> None:
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


def failures_section(doc: Doc, all_trials: list[Trial]) -> None:
    failed = [t for t in all_trials if t.status == "ERROR"]
    doc.h(2, "Failed trials")
    if not failed:
        doc.p(f"None of the {len(all_trials)} trials failed.")
        return
    doc.table(Table(["sweep", "trial", "algorithm", "last step", "error"],
                    [[t.sweep, t.trial_id, t.algorithm, str(t.final_step), t.error or "(no error line recorded)"]
                     for t in failed], caption=f"{len(failed)} of {len(all_trials)} trials failed"))


def metadata_section(doc: Doc, df: pd.DataFrame, all_trials: list[Trial], specs: dict[str, dict],
                      files: list[str]) -> None:
    doc.h(2, "Run metadata")
    versions = _versions()
    nodes = df["node/train"].dropna().nunique() if "node/train" in df.columns else 0
    eval_nodes = (len({n for v in df["node/eval"].dropna() for n in str(v).split(",") if n})
                  if "node/eval" in df.columns else 0)
    doc.ul([
        f"Generated: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"Results: {', '.join(f'`{shown_path(f)}`' for f in files)}",
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
            doc.pre(json.dumps(spec_for_display(specs[sweep]), indent=2, sort_keys=True, default=str))
        else:
            doc.p(f"No spec.json found beside the results of `{sweep}`.")


def shown_path(path: str) -> str:
    """A results file as the report names it: relative to the repository when inside it (no machine's paths)."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return rel if not rel.startswith("..") else os.path.basename(path)
