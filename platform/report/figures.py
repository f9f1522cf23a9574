"""The report's figures (matplotlib): curves per algorithm and per trial, sensitivity per parameter."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from platform.report.document import Figure, slug
from platform.report.papers import Reference, paper_reference
from platform.report.stats import (BOOT_SEED, MIN_RUNS_BAND, Trial, fmt_param, fmt_params, is_numeric, mean_ci,
                                   score_profile)

MAX_TRIAL_LINES = 8          # above this, per-trial curves are drawn thin and only the best is labelled


# ============================================================================ figures


class Plots:
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
    """Per evaluation step of one trial: mean over seeds and a 95% bootstrap band of that mean (rliable's)."""
    ev = df[(df["_trial"] == trial_key) & df["score"].notna()]
    rows = []
    for k, (step, g) in enumerate(ev.groupby("step", sort=True)):
        x = g["score"].to_numpy(dtype=np.float64)
        # a band from one or two seeds would be a resample of themselves: none below MIN_RUNS_BAND
        lo, hi = mean_ci(x, seed=BOOT_SEED + k) if x.size >= MIN_RUNS_BAND else (float("nan"), float("nan"))
        rows.append((step, float(x.mean()), lo, hi, x.size))
    return pd.DataFrame(rows, columns=["step", "mean", "lo", "hi", "n"])


def _plot_curve(ax, curve: pd.DataFrame, label: str, color, lw: float = 1.8, band: bool = True) -> None:
    ax.plot(curve["step"], curve["mean"], marker="o", ms=3, lw=lw, color=color, label=label)
    if band and (curve["n"] >= MIN_RUNS_BAND).any():
        ax.fill_between(curve["step"], curve["lo"], curve["hi"], color=color, alpha=0.2, lw=0)


def _legend_outside(ax) -> None:
    # Right of the axes, so it never hides a curve or the paper line (bbox_inches="tight" keeps it).
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _ref_line(ax, ref: Reference) -> None:
    if ref.value is not None:
        ax.axhline(ref.value, ls="--", color="0.4", lw=1, label=f"paper: {ref.value:g} ({ref.label})")


def fig_algorithms(plots: Plots, df: pd.DataFrame, bench: str, best: dict[str, Trial]) -> Figure:
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    colors = plots.plt.get_cmap("tab10").colors
    for i, (algo, t) in enumerate(sorted(best.items())):
        _plot_curve(ax, curve_with_band(df, t.key), f"{algo} (best: {t.trial_id})", colors[i % 10])
        _ref_line(ax, paper_reference(algo, t.dataset, t.env, t.params))
    ax.set(xlabel="gradient step", ylabel="normalized score", title=bench)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return plots.save(fig, f"curves-{slug(bench)}",
                      f"{bench}: best configuration of each algorithm, mean over seeds with 95% bootstrap band")


def fig_trials(plots: Plots, df: pd.DataFrame, title: str, ts: list[Trial], best: Trial | None,
               params: list[str]) -> Figure:
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    colors = plots.plt.get_cmap("tab10").colors
    few = len(ts) <= MAX_TRIAL_LINES
    for i, t in enumerate(ts):
        curve = curve_with_band(df, t.key)
        if curve.empty:
            continue
        is_best = best is not None and t.key == best.key
        label = f"{t.trial_id} ({fmt_params(t.params, params)})" if params else t.trial_id
        if few:
            _plot_curve(ax, curve, label + (" *best" if is_best else ""), colors[i % 10], lw=2.4 if is_best else 1.4)
        elif is_best:
            _plot_curve(ax, curve, "best: " + label, "C3", lw=2.4)
        else:  # many trials: thin grey lines, no band, so the best one stays readable
            _plot_curve(ax, curve, "_nolegend_", "0.7", lw=0.8, band=False)
    if best is not None:
        _ref_line(ax, paper_reference(best.algorithm, best.dataset, best.env, best.params))
    ax.set(xlabel="gradient step", ylabel="normalized score", title=title)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    what = "one line per trial" if few else f"{len(ts)} trials in grey, the best in red"
    return plots.save(fig, f"curves-{slug(title)}",
                      f"{title}: learning curves, {what}; mean over seeds with 95% bootstrap band")


def fig_sensitivity(plots: Plots, title: str, ts: list[Trial], params: list[str], best: Trial | None) -> Figure:
    n = len(params)
    fig, axes = plots.plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.4), squeeze=False)
    evald = [t for t in ts if t.scores.size]
    for ax, k in zip(axes[0], params):
        pts = [t for t in evald if k in t.params]
        vals = [t.params[k] for t in pts]
        numeric = is_numeric(vals)
        if numeric:
            x = np.array(vals, dtype=np.float64)
            if x.min() > 0 and x.max() / x.min() > 10:   # spans more than a decade
                ax.set_xscale("log")
        else:
            cats = sorted({fmt_param(v) for v in vals})
            x = np.array([cats.index(fmt_param(v)) for v in vals], dtype=np.float64)
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
    return plots.save(fig, f"sensitivity-{slug(title)}",
                      f"{title}: final score vs each searched parameter, one point per trial "
                      "(mean over seeds at its last evaluation, bars: std over seeds; hollow: stopped early)")




def fig_pareto(plots: Plots, title: str, points: list[tuple[Trial, float, float]], front: list[bool],
               metrics: tuple[str, str], params: list[str]) -> Figure:
    """Score against cost, one point per trial; the Pareto front (no trial better in both) joined by a line."""
    fig, ax = plots.plt.subplots(figsize=(5.6, 3.8))
    xs = np.array([c for _, _, c in points])
    ys = np.array([s for _, s, _ in points])
    on = np.array(front)
    ax.scatter(xs[~on], ys[~on], color="0.6", s=22, label="dominated")
    order = np.argsort(xs[on])
    ax.plot(xs[on][order], ys[on][order], "o-", color="C3", ms=6, label="Pareto front")
    for (t, s, c), f in zip(points, front):
        if f:
            ax.annotate(fmt_params(t.params, params), (c, s), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if xs.min() > 0 and xs.max() / xs.min() > 10:
        ax.set_xscale("log")
    ax.set(xlabel=metrics[1], ylabel=metrics[0], title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return plots.save(fig, f"pareto-{slug(title)}",
                      f"{title}: {metrics[0]} against {metrics[1]} at each trial's last evaluation (mean over "
                      "seeds), one point per trial; red: the Pareto front")


def fig_profiles(plots: Plots, tasks_by_algo: dict[str, dict[str, np.ndarray]]) -> Figure:
    """rliable's performance profiles: per algorithm, the fraction of runs (tasks weighted equally) scoring above
    each normalized score, with a 95% stratified-bootstrap band."""
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    colors = plots.plt.get_cmap("tab10").colors
    top = max(float(np.nanmax(x)) for tasks in tasks_by_algo.values() for x in tasks.values() if np.isfinite(x).any())
    taus = np.linspace(0.0, max(100.0, top), 201)
    for i, (algo, tasks) in enumerate(sorted(tasks_by_algo.items())):
        frac, lo, hi = score_profile(list(tasks.values()), taus)
        n = sum(x.size for x in tasks.values())
        ax.step(taus, frac, where="post", color=colors[i % 10], lw=1.8, label=f"{algo} ({len(tasks)} tasks, {n} runs)")
        ax.fill_between(taus, lo, hi, step="post", color=colors[i % 10], alpha=0.15, lw=0)
    ax.set(xlabel="normalized score τ", ylabel="fraction of runs with score > τ", ylim=(-0.02, 1.02),
           title="Performance profiles")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return plots.save(fig, "performance-profiles",
                      "Performance profiles (rliable's score distributions): fraction of runs above each score, "
                      "tasks weighted equally, with 95% stratified-bootstrap bands; higher curves dominate")
