"""The talk's claims, one row each, judged from the checked-in results (issue 40, part 4).

    python -m platform.report.claims [--out reports/claims]

Reads ``reports/<study>/metrics.parquet`` (the Parquet every sweep copies beside its report) and writes
``README.md`` and ``index.html`` (the same table and sections; links to each study's report section and figure) and
``figures/edp-speedup.png``.  Every number in the table is read from those files here; nothing is typed by hand.

The verdict rule (``verdict``), one for every claim.  Each claim's test says, from each seed's last evaluation (or
the clocks of ``platform/report/speedup.py``), whether the claimed outcome is observed (``met``), whether its
opposite is (``opposite``), and whether the run meets what the claim presupposes (``conclusive``: the paper's
training budget for a claim about trained policies; both methods at the score for a claim about time):

* holds: the claimed outcome is observed on every seed it names;
* contradicted: not that, the opposite is observed on every seed, and the run is conclusive;
* not shown at this budget: anything else, and a claim whose study has no results checked in.

So a run below the paper's budget can show a claim, never refute it: an under-trained policy is not evidence
against what a trained one does.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from platform.report import speedup as sp
from platform.report.document import Doc, Figure, Table, render_html, render_markdown
from platform.report.figures import Plots

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLDS, NOT_SHOWN, CONTRADICTED = "holds", "not shown at this budget", "contradicted"
SCORE = "eval/normalized_score"

TOY_PAPER_STEPS = 100_000      # Diffusion-QL's toy (run_toy_ql.py): 1000 epochs x 100 steps
DQL_PAPER_STEPS = 2_000_000    # Diffusion-QL on D4RL (2000 epochs x 1000)
PUSHT_PAPER_STEPS = 200_000    # Diffusion Policy's Push-T U-Net: ~210k steps (5000 epochs x ~42 batches)
ON_SUPPORT = 0.8               # "on the support": at least this share of actions within 3 std of a mode
ON_BEST = 0.9                  # "picks the best mode": at least this share of actions on the reward-5 corner
FAR_FASTER = 2.0               # "trains far faster": the conservative time-to-80 ratio at least this


@dataclass
class Evidence:
    measured: str       # what the platform measured, numbers from the Parquet
    met: bool           # the claimed outcome, on every seed the test names
    opposite: bool      # the contrary outcome, on every seed the test names
    conclusive: bool    # the run meets what the claim presupposes


def verdict(ev: Evidence | None) -> str:
    if ev is None:
        return NOT_SHOWN
    if ev.met:
        return HOLDS
    if ev.opposite and ev.conclusive:
        return CONTRADICTED
    return NOT_SHOWN


# ============================================================================ reading the checked-in results


def load(study: str, root: str = REPO_ROOT) -> pd.DataFrame | None:
    path = os.path.join(root, "reports", study, "metrics.parquet")
    return pd.read_parquet(path) if os.path.exists(path) else None


def last_evals(df: pd.DataFrame) -> pd.DataFrame:
    """Each (trial, seed)'s last evaluation."""
    ev = df[pd.to_numeric(df.get(SCORE), errors="coerce").notna()]
    return ev.loc[ev.groupby(["trial_id", "seed"])["step"].idxmax()].sort_values(["algorithm", "dataset", "seed"])


def budget(df: pd.DataFrame) -> str:
    ev = last_evals(df)
    return f"{int(ev['step'].max()):,} steps x {ev['seed'].nunique()} seed{'s' * (ev['seed'].nunique() != 1)}"


def _col(rows: pd.DataFrame, c: str) -> np.ndarray:
    return pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=np.float64) if c in rows else np.array([])


def _mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else float("nan")


def _f(x: float, d: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{d}f}"


# ============================================================================ the claims' tests


def modes_evidence(dfs: dict) -> Evidence | None:
    df = dfs.get("modes")
    if df is None:
        return None
    last = last_evals(df)
    n = 8  # toy:modes8
    parts = [f"{a} {_f(_mean(_col(g, 'eval/modes_covered')) * n)}/{n}, {_f(100 * _mean(_col(g, 'eval/off_support')), 0)}%"
             for a, g in sorted(last.groupby("algorithm"), key=lambda kv: -_mean(_col(kv[1], "eval/modes_covered")))]
    diff = last[last["algorithm"].isin(["diffusion_policy", "dql"])]
    cov, off = _col(diff, "eval/modes_covered"), _col(diff, "eval/off_support")
    met = bool(cov.size) and bool(np.all(cov >= 1 - 1e-9) and np.all(off <= 1 - ON_SUPPORT))
    opposite = bool(cov.size) and any(np.all(_col(g, "eval/modes_covered") <= 0.5) for _, g in diff.groupby("algorithm"))
    return Evidence(f"`modes`, {budget(df)}, toy:modes8: modes covered of 8 / actions off the support, mean over seeds "
                    f"(last evaluation): " + "; ".join(parts) + ". Diffusion = diffusion_policy and dql (eta 0).",
                    met, opposite, int(last["step"].max()) >= TOY_PAPER_STEPS)


def bandit_evidence(dfs: dict) -> Evidence | None:
    df = dfs.get("bandit")
    if df is None:
        return None
    last = last_evals(df)
    parts = [f"{a} {_f(100 * _mean(_col(g, 'eval/best_mode_share')), 0)}% on the best corner, "
             f"{_f(100 * _mean(_col(g, 'eval/off_support')), 0)}% off the support"
             for a, g in sorted(last.groupby("algorithm"), key=lambda kv: -_mean(_col(kv[1], "eval/best_mode_share")))]
    dql = last[last["algorithm"] == "dql"]
    best, off = _col(dql, "eval/best_mode_share"), _col(dql, "eval/off_support")
    met = bool(best.size) and bool(np.all(best >= ON_BEST) and np.all(off <= 1 - ON_SUPPORT))
    opposite = bool(best.size) and bool(np.all(best < 0.5))
    return Evidence(f"`bandit`, {budget(df)}, toy:bandit (mean over seeds, last evaluation): " + "; ".join(parts) + ".",
                    met, opposite, int(last["step"].max()) >= TOY_PAPER_STEPS)


def _times(reach: list[sp.Reach]) -> str:
    return " / ".join(f"{r.train_s:.0f} s" if r.reached else f"> {r.train_s:.0f} s" for r in reach)


SPEEDUP_STUDIES = ("edp_speedup", "edp_speedup_dql")  # EDP's and Diffusion-QL's side at K = 100 (one file each)


def speedup_frame(dfs: dict) -> pd.DataFrame | None:
    """Both sides of the K = 100 comparison in one frame; None unless both are checked in."""
    parts = [dfs[s] for s in SPEEDUP_STUDIES if dfs.get(s) is not None]
    return pd.concat(parts, ignore_index=True) if len(parts) == len(SPEEDUP_STUDIES) else None


def speedup_evidence(dfs: dict) -> Evidence | None:
    df = speedup_frame(dfs)
    if df is None:
        return None
    s = sp.speedup(df)
    ratio, exact = s.ratio_bounds()
    sides = "; ".join(f"`{st}` {budget(dfs[st])}" for st in SPEEDUP_STUDIES)
    text = (f"{sides}; K = {_k(df)}, generated Pendulum: training seconds per seed to a score of "
            f"{sp.THRESHOLD:g}, EDP {_times(s.reach['edp'])}, DQL {_times(s.reach['dql'])}")
    if math.isfinite(ratio):
        text += f" (EDP faster by {'' if exact else '≥ '}{ratio:.1f}x, slowest EDP seed against fastest DQL seed)"
    eq = {a: s.at_equal[a] for a in ("dql", "edp")}
    text += (f"; at equal training time {s.equal_s:.0f} s: EDP {_scores(eq['edp'])}, DQL {_scores(eq['dql'])}; "
             f"seconds per step DQL / EDP = {s.cost['dql'] / s.cost['edp']:.1f}x")
    k1000 = dfs.get("edp_speedup_k1000")
    if k1000 is not None:
        cost = _costs(k1000)
        if {"dql", "edp"} <= set(cost):
            text += (f"; at K = {_k(k1000)} ({budget(k1000)}, `edp_speedup_k1000`) {cost['dql'] / cost['edp']:.0f}x, "
                     f"implied time to {sp.THRESHOLD:g}: DQL {_implied(s.reach['dql'], cost['dql'])}, "
                     f"EDP {_implied(s.reach['edp'], cost['edp'])} (implied, not measured)")
    fast, base = s.reach["edp"], s.reach["dql"]
    met = math.isfinite(ratio) and ratio >= FAR_FASTER
    opposite = (all(r.reached for r in base) and all(r.reached for r in fast)
                and max(r.train_s for r in base) <= min(r.train_s for r in fast))
    return Evidence(text + ".", met, opposite, all(r.reached for r in base + fast))


def _k(df: pd.DataFrame) -> str:
    ks = sorted({int(k) for k in pd.to_numeric(df.get("config/n_timesteps"), errors="coerce").dropna()})
    return "/".join(map(str, ks)) or "?"


def _scores(at: list[tuple[float, int, float]]) -> str:
    return ", ".join(f"{score:.1f} (step {step})" if math.isfinite(score) else f"none yet (at step {now:.0f})"
                     for score, step, now in at)


def _costs(df: pd.DataFrame) -> dict[str, float]:
    """Median seconds per training step per algorithm (warm-up window left out)."""
    return {a: float(np.median([sp.sec_per_step(c) for c in cs])) for a, cs in sp.by_algorithm(sp.curves(df)).items()}


def _implied(reach: list[sp.Reach], sec_step: float) -> str:
    vals = sp.implied_at(reach, sec_step)
    return " / ".join(("" if exact else "> ") + _dur(t) for t, exact in vals)


def _dur(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def horizon_evidence(dfs: dict) -> Evidence | None:
    df = dfs.get("dp_horizon")
    if df is None or "config/action_horizon" not in df:
        return None
    last = last_evals(df)
    by = {int(ta): _col(g, SCORE) for ta, g in last.groupby("config/action_horizon")}
    lo, hi = min(by), max(by)
    parts = [f"Ta = {ta}: {_f(_mean(x))} ({x.size} runs)" for ta, x in sorted(by.items())]
    return Evidence(f"`dp_horizon`, {budget(df)}: mean score by action horizon: " + "; ".join(parts) + ".",
                    hi > lo and by[hi].min() > by[lo].max(), hi > lo and by[hi].max() < by[lo].min(),
                    int(last["step"].max()) >= PUSHT_PAPER_STEPS)


def _beats(df: pd.DataFrame, winners: list[str], baselines: list[str]) -> tuple[list[str], bool, bool]:
    """Per benchmark: the winners' best mean against the baselines' best mean; met when on every benchmark some
    winner's every seed is above the best baseline mean; opposite when every winner seed is below it everywhere."""
    last = last_evals(df)
    parts, met, opposite = [], True, True
    for ds, g in last.groupby("dataset", sort=True):
        base = {a: _col(x, SCORE) for a, x in g[g["algorithm"].isin(baselines)].groupby("algorithm")}
        win = {a: _col(x, SCORE) for a, x in g[g["algorithm"].isin(winners)].groupby("algorithm")}
        best_base = max(base, key=lambda a: _mean(base[a])) if base else None
        name = str(ds).split(":")[-1]
        if not win or best_base is None:
            parts.append(f"{name}: " + ("no " + "/".join(winners) + " evaluation" if not win else "no baseline")
                         + (f" (best baseline {best_base} {_f(_mean(base[best_base]))})" if best_base else ""))
            met = opposite = False
            continue
        bar = _mean(base[best_base])
        parts.append(f"{name}: " + ", ".join(f"{a} {_f(_mean(x))}" for a, x in sorted(win.items()))
                     + f" vs best baseline {best_base} {_f(bar)}")
        met &= any(np.all(x > bar) for x in win.values())
        opposite &= all(np.all(x < bar) for x in win.values())
    return parts, met and bool(parts), opposite and bool(parts)


def d4rl_evidence(dfs: dict) -> Evidence | None:
    df = dfs.get("locomotion_table")
    if df is None:
        return None
    parts, met, opposite = _beats(df, ["dql", "edp"], ["bc", "td3bc", "iql"])
    text = f"`locomotion_table`, {budget(df)}, generated D4RL-format medium data: " + "; ".join(parts) + "."
    small = dfs.get("offline_table")
    if small is not None:  # context, not the claim's test: a small non-D4RL task
        p, _, _ = _beats(small, ["dql", "edp"], ["bc", "td3bc", "iql"])
        text += f" Context (not D4RL, not in the test): `offline_table`, {budget(small)}, " + "; ".join(p) + "."
    return Evidence(text, met, opposite, int(last_evals(df)["step"].max()) >= DQL_PAPER_STEPS)


def pusht_evidence(dfs: dict) -> Evidence | None:
    df = dfs.get("pusht_table_cpu")
    if df is None:
        return None
    parts, met, opposite = _beats(df, ["diffusion_policy"], ["lstm_gmm", "ibc", "bet", "bc"])
    return Evidence(f"`pusht_table_cpu`, {budget(df)}, real Push-T demonstrations, 50 test seeds: " + "; ".join(parts)
                    + " (its Diffusion Policy trial was stopped before its first evaluation).",
                    met, opposite, int(last_evals(df)["step"].max()) >= PUSHT_PAPER_STEPS)


# ============================================================================ the table


@dataclass
class Claim:
    claim: str
    source: str                          # the talk's slide and the paper's figure / table
    studies: list[str]                   # search_spaces/<study>.yaml, reports/<study>/
    link: str                            # the report section / figure the row points to (relative to reports/claims/)
    test: str                            # what met / opposite mean for this claim
    evidence: Callable[[dict], Evidence | None]
    gpu: str = ""                        # the command that runs the claim at the paper's budget, where it needs a GPU


CLAIMS = [
    Claim("Diffusion covers every mode of a multimodal behaviour (\"no mode collapse, theoretically infinite modes\"), "
          "where an MSE policy averages them",
          "talk, slide \"Intuition\"; Diffusion-QL (Wang et al. 2023) Figure 1, behaviour-cloning panels",
          ["modes"], "[modes § Modes of the evaluated actions](../modes/README.md#modes-of-the-evaluated-actions), "
          "[scatter](../modes/figures/actions-toy-modes8-toymodes8-v0.png)",
          f"met: every seed of diffusion_policy and dql (eta 0) covers 8/8 modes with ≥ {ON_SUPPORT:.0%} of actions on "
          "the support; opposite: a diffusion method covers ≤ half the modes on every seed; conclusive from "
          f"{TOY_PAPER_STEPS:,} steps (the paper's toy budget)", modes_evidence),
    Claim("Diffusion-QL's Q-guided diffusion picks the best mode while staying on the data's support",
          "talk, Diffusion-QL slides; Diffusion-QL (Wang et al. 2023) Figure 1 (offline bandit)",
          ["bandit"], "[bandit § Modes of the evaluated actions](../bandit/README.md#modes-of-the-evaluated-actions), "
          "[scatter](../bandit/figures/actions-toy-bandit-toybandit-v0.png)",
          f"met: every Diffusion-QL seed puts ≥ {ON_BEST:.0%} of its actions on the reward-5 corner and ≥ "
          f"{ON_SUPPORT:.0%} on the support; opposite: < 50% on the best corner on every seed; conclusive from "
          f"{TOY_PAPER_STEPS:,} steps", bandit_evidence),
    Claim("EDP's one-step action approximation trains far faster than differentiating through the chain at large K "
          "(paper: ~25x, \"5 days to 5 hours\" at K = 1000)",
          "talk, slide \"Diffusion-QL without differentiating through chain\"; EDP (Kang et al. 2023), abstract",
          ["edp_speedup", "edp_speedup_dql", "edp_speedup_k1000"], "[EDP speed-up below](#edp-speed-up), "
          "[learning curves](../edp_speedup/README.md#learning-curves)",
          f"met: EDP reaches {sp.THRESHOLD:g} on every seed and its slowest seed is ≥ {FAR_FASTER:g}x faster (training "
          "clock) than Diffusion-QL's fastest (a Diffusion-QL seed that never got there counts with its whole run, a "
          "lower bound); opposite: every Diffusion-QL seed reaches it no later than every EDP seed; conclusive when "
          "every run reached it", speedup_evidence),
    Claim("Diffusion Policy's action horizon gives temporal action consistency (executing a sequence of Ta > 1 "
          "actions beats shorter horizons on Push-T)",
          "talk, slide \"Results\" (temporal action consistency); Diffusion Policy (Chi et al. 2023), action-horizon "
          "ablation",
          ["dp_horizon"], "[dp_horizon.yaml](../../search_spaces/dp_horizon.yaml) (no report yet)",
          "met: every run at the largest Ta scores above every run at the smallest; opposite: below every one; "
          f"conclusive from {PUSHT_PAPER_STEPS:,} steps", horizon_evidence,
          "`python -m platform.sweep search_spaces/dp_horizon.yaml` (8 trials x 20k Push-T steps: a GPU study, "
          "`gpus_per_worker: 0.5` as written)"),
    Claim("Diffusion policies beat the baselines (BC, TD3+BC, IQL) on D4RL locomotion",
          "talk, Diffusion-QL \"Results\" and EDP \"Results\" slides; Diffusion-QL Table 1 (e.g. hopper-medium 90.5 "
          "vs IQL 66.3), EDP Table 1",
          ["locomotion_table", "offline_table"],
          "[locomotion_table § Results](../locomotion_table/README.md#results), "
          "[offline_table § Results](../offline_table/README.md#results)",
          "met: on every task some diffusion method (dql, edp) has every seed above the best baseline's mean; "
          f"opposite: every diffusion seed below it on every task; conclusive from {DQL_PAPER_STEPS:,} steps",
          d4rl_evidence,
          "`python -m platform.sweep search_spaces/locomotion_table.yaml --steps 1000000` on a GPU machine (set "
          "`resources.gpus_per_worker`, e.g. 0.25; the paper trains Diffusion-QL 2M steps)"),
    Claim("Diffusion Policy beats LSTM-GMM, IBC and BET on Push-T (0.91 average, Table I)",
          "talk, Diffusion Policy experiment slides; Diffusion Policy (Chi et al. 2023) Table I (state observations)",
          ["pusht_table_cpu"], "[pusht_table_cpu § Results](../pusht_table_cpu/README.md#results)",
          "met: every Diffusion Policy seed above the best baseline's mean; opposite: every seed below it; "
          f"conclusive from {PUSHT_PAPER_STEPS:,} steps", pusht_evidence,
          "`python -m platform.sweep search_spaces/pusht_table.yaml` (paper sizes, ~210k steps, 3 seeds: a GPU study)"),
]


def rows(root: str = REPO_ROOT) -> list[tuple[Claim, Evidence | None, str]]:
    studies = {s for c in CLAIMS for s in c.studies}
    dfs = {s: df for s in sorted(studies) if (df := load(s, root)) is not None}
    return [(c, ev, verdict(ev)) for c in CLAIMS for ev in [c.evidence(dfs)]]


# ============================================================================ the EDP section and the document


def speedup_table(dfs: dict) -> Table | None:
    """Per seed: steps and both clocks to the threshold, the score at equal training time, the last evaluation, and
    the time implied at K = 1000."""
    df = speedup_frame(dfs)
    if df is None:
        return None
    s = sp.speedup(df)
    k1000 = dfs.get("edp_speedup_k1000")
    cost = _costs(k1000) if k1000 is not None else {}
    out = []
    for a in (s.base, s.fast):
        for seed, r, (eq, eq_step, now), (fin, fin_step) in zip(s.seeds[a], s.reach[a], s.at_equal[a], s.final[a]):
            implied = sp.implied_at([r], cost[a])[0] if a in cost else (float("nan"), True)
            got = "" if r.reached else "> "
            out.append([a, str(seed), f"{got}{r.step}", f"{got}{r.train_s:.0f}", f"{got}{r.wall_s:.0f}",
                        f"{eq:.1f} (step {eq_step})" if math.isfinite(eq) else f"— (step {now:.0f}, no evaluation yet)",
                        f"{fin:.1f} (step {fin_step})", f"{1000 * s.cost[a]:.0f}",
                        f"{1000 * cost[a]:.0f}" if a in cost else "—",
                        ("" if implied[1] else "> ") + _dur(implied[0])])
    head = ["algorithm", "seed", f"steps to {sp.THRESHOLD:g}", f"training s to {sp.THRESHOLD:g}",
            f"trial wall s to {sp.THRESHOLD:g}", f"score at {s.equal_s:.0f} training s", "last evaluation",
            f"ms per step, K = {_k(df)}", f"ms per step, K = {_k(k1000) if k1000 is not None else 1000}",
            f"IMPLIED training time to {sp.THRESHOLD:g} at K = {_k(k1000) if k1000 is not None else 1000}"]
    sides = ", ".join(f"{st}: {budget(dfs[st])}" for st in SPEEDUP_STUDIES)
    return Table(head, out, caption=f"EDP vs Diffusion-QL on generated Pendulum, K = {_k(df)} ({sides})")


def fig_speedup(df: pd.DataFrame, out_dir: str) -> Figure:
    """Score against training seconds, every seed, both methods; the threshold as a line (PNG + SVG under
    ``out_dir/figures``, the report's ``Plots``)."""
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    plots = Plots(fig_dir)
    fig, ax = plots.plt.subplots(figsize=(6.4, 3.6))
    colors = {"dql": "C0", "edp": "C3"}
    curves = sp.curves(df)
    first_seed = min(c.seed for c in curves)
    for c in curves:
        ax.plot(c.train_s, c.scores, marker="o", ms=3, lw=1.2, color=colors.get(c.algorithm, "0.4"),
                label=f"{c.algorithm} (K = {c.k})" if c.seed == first_seed else None)
    ax.axhline(sp.THRESHOLD, color="0.5", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="training seconds per seed (log)", ylabel="normalized score",
           title="Score against training time, every seed")
    ax.legend(fontsize=8)
    return plots.save(fig, "edp-speedup", "Score against training seconds per seed (log), every seed of both "
                                          "methods; dashed: the threshold")


def build(root: str = REPO_ROOT) -> tuple[Doc, dict]:
    found = rows(root)
    dfs = {s: df for s in SPEEDUP_STUDIES + ("edp_speedup_k1000",) if (df := load(s, root)) is not None}
    doc = Doc("The talk's claims, judged from the checked-in results")
    doc.p("One row per claim of the talk (`../shared/seed-slides.md`), the paper figure or table it comes from, what "
          "this platform measured (the study, its budget and seeds, numbers read by `platform/report/claims.py` from "
          "`reports/<study>/metrics.parquet`: each seed's last evaluation unless said), and a verdict decided by one "
          "rule in code. Rebuild: `python -m platform.report.claims`. Every study ran on 2 shared CPU cores; the "
          "budgets are in each study's YAML comment and report.")
    doc.h(2, "Claims")
    doc.table(Table(["#", "claim", "from", "measured here (study, budget, seeds)", "verdict", "see",
                     "at the paper's budget"],
                    [[str(i + 1), c.claim, c.source,
                      ev.measured if ev else "no results checked in (`reports/" + c.studies[0] + "/` has no Parquet)",
                      f"**{v}**", c.link, c.gpu or "runs on a CPU (see the study's YAML)"]
                     for i, (c, ev, v) in enumerate(found)]))
    doc.h(2, "Verdict rule")
    doc.p(f"`verdict` in `platform/report/claims.py`: **{HOLDS}** when the claim's test is met on every seed it names; "
          f"**{CONTRADICTED}** when it is not, its opposite is observed on every seed, and the run is conclusive (the "
          f"paper's training budget for a claim about trained policies; every run at the score for a claim about "
          f"time); **{NOT_SHOWN}** otherwise, and when a study has no results checked in. A run below the paper's "
          f"budget can show a claim, never refute it. Each claim's test:")
    doc.ul([f"claim {i + 1}: {c.test}." for i, c in enumerate(CLAIMS)])
    doc.h(2, "EDP speed-up")
    table = speedup_table(dfs)
    if table is None:
        doc.p("`reports/edp_speedup/` and `reports/edp_speedup_dql/` are not both checked in yet: `python -m "
              "platform.sweep search_spaces/edp_speedup.yaml`, then `search_spaces/edp_speedup_dql.yaml`.")
        return doc, dfs
    doc.p(f"`platform/report/speedup.py` on `reports/edp_speedup/metrics.parquet` and "
          f"`reports/edp_speedup_dql/metrics.parquet` (EDP's and Diffusion-QL's halves, their budgets in the YAMLs; "
          f"`reports/edp_speedup_k1000/metrics.parquet` for K = 1000 when run). Training seconds: per seed, the sum "
          f"over report windows of steps / `time/steps_per_cpu_s` (CPU seconds of the Train worker's process, so a "
          f"load on the shared cores does not stretch them; `time/steps_per_s`, wall, for results recorded before "
          f"that column; gradient steps only: no evaluation, checkpoint or start-up); "
          f"trial wall seconds: `time_s` at the evaluation (evaluations included: Diffusion-QL's 50 candidate actions "
          f"through the K-step chain cost far more than EDP's 15 DPM-Solver calls). A time to {sp.THRESHOLD:g} is the "
          f"first evaluation at or above it (evaluations every few hundred steps: the time is known to that "
          f"resolution); \"> t\" means the run never reached it and t is its last evaluation. The equal training time "
          f"is EDP's shortest whole run. The last column is IMPLIED, not measured: the steps each seed needed at "
          f"K = {_k(dfs['edp_speedup'])} times the median seconds per step measured briefly at K = 1000 (the warm-up "
          f"window left out), assuming the same steps are needed at K = 1000; the two studies ran under different "
          f"loads (see their YAML), so compare ratios, not absolute seconds, across them.")
    doc.table(table)
    return doc, dfs


def _out_default(root: str) -> str:
    return os.path.join(root, "reports", "claims")


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _html_href(href: str) -> str:
    """Another report's README.md section -> the same section of its index.html."""
    return re.sub(r"^(\.\./[^/]+/)README\.md", r"\1index.html", href)


def write(out: str, root: str = REPO_ROOT) -> str:
    doc, dfs = build(root)
    os.makedirs(out, exist_ok=True)
    frame = speedup_frame(dfs)
    if frame is not None:  # the speed-up section is the document's last: its figure closes it
        doc.fig(fig_speedup(frame, out))
    md = render_markdown(doc)
    html_text = render_html(doc)
    # the document model's HTML knows only `code`: links and **bold** become tags here
    html_text = _LINK.sub(lambda m: f'<a href="{_html_href(m.group(2))}">{m.group(1)}</a>', html_text)
    html_text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html_text)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write(html_text)
    return os.path.join(out, "README.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.report.claims", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=_out_default(REPO_ROOT), help="output directory (default: reports/claims)")
    p.add_argument("--root", default=REPO_ROOT, help="the repository whose reports/*/metrics.parquet are read")
    a = p.parse_args(argv)
    print(f"[claims] {write(a.out, a.root)}")
    for c, _, v in rows(a.root):
        print(f"[claims] {v:>26}: {c.claim[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
