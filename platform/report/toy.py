"""The report's section for studies on the toy tasks (``toy:<task>``, ``platform/envs/toy_tasks.py``): one scatter per
algorithm of its evaluated actions over the true modes, the mode metrics from the Parquet, what the papers
predict and what the run shows (sentences made from the same numbers)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from platform.report.document import Doc, Figure, Table, fmean_std, slug
from platform.report.stats import Trial

METRICS = [("eval/modes_covered", "modes covered"), ("eval/off_support", "off support"), ("eval/mmd", "MMD"),
           ("eval/best_mode_share", "on the best corner"), ("eval/normalized_score", "normalized score")]

PREDICTIONS = {
    "modes": ("What the papers predict: a Gaussian (MSE) policy such as BC averages the modes, so its actions land "
              "between them, off the support; mixture and binning methods (LSTM-GMM with 5 components, BET's k-means "
              "bins) cover at most a fixed number of modes, and an energy model (IBC) covers them only as far as its "
              "sampler finds them; diffusion models (Diffusion Policy, and Diffusion-QL with eta = 0, i.e. diffusion "
              "behaviour cloning) cover every mode (the talk: \"no mode collapse, theoretically infinite modes\"; "
              "Diffusion Policy, Chi et al. 2023, Figure 3)."),
    "bandit": ("What the paper predicts (Diffusion-QL, Wang et al. 2023, Figure 1, whose toy compares TD3+BC, BCQ, "
               "BEAR-MMD and Diffusion-QL): on this offline bandit the Q-guided diffusion policy puts its actions on the "
               "best corner (reward 5) and stays on the data's support, while the Gaussian policy of TD3+BC lands "
               "between corners or on a worse one; a Gaussian BC averages all four corners. IQL is not in the paper's "
               "figure: its policy is a Gaussian too, but fitted by advantage-weighted regression (weights exp(3 A)), "
               "which can put its mean on the best corner when that corner's advantage dominates the weights."),
}


def toy_task_of(dataset: str):
    from platform.envs.toy_tasks import TASKS

    kind, _, value = str(dataset).partition(":")
    return TASKS.get(value) if kind == "toy" else None


def _last_eval(df: pd.DataFrame, t: Trial) -> pd.DataFrame:
    """Each seed's last evaluation of trial ``t`` that has the mode metrics."""
    g = df[(df["_trial"] == t.key)]
    if "eval/modes_covered" not in g.columns:
        return g.iloc[0:0]
    g = g[pd.to_numeric(g["eval/modes_covered"], errors="coerce").notna()]
    return g.loc[g.groupby("seed")["step"].idxmax()] if len(g) else g


def _actions(rows: pd.DataFrame) -> np.ndarray:
    pts = [p for v in rows.get("eval/actions_sample", pd.Series(dtype=object)).dropna() for p in json.loads(v)]
    return np.array(pts, dtype=np.float64).reshape(-1, 3)


def fig_toy_actions(plots, title: str, task, panels: list[tuple[str, np.ndarray]]) -> Figure:
    """One scatter per panel of actions ``(N, 3)`` = x, y, state over the true modes (circles of the support radius);
    the bandit's corners are filled and coloured by expected reward; several states: colour = state."""
    plt = plots.plt
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.9 * rows), squeeze=False)
    cmap, state_colors = plt.get_cmap("viridis"), plt.get_cmap("tab10").colors
    bandit = task.reward_std > 0
    rmax = float(task.mode_rewards.max()) or 1.0
    for ax in axes.flat[n:]:
        ax.axis("off")
    for k, (ax, (label, pts)) in enumerate(zip(axes.flat, panels)):
        for s in range(task.n_states):
            for m, c in enumerate(task.centres[s]):
                color = cmap(task.mode_rewards[m] / rmax) if bandit else state_colors[s % 10]
                ax.add_patch(plt.Circle(c, task.radius, fill=bandit, alpha=0.4 if bandit else 0.9, color=color,
                                        lw=1.2))
                if bandit and k == 0:
                    ax.annotate(f"r={task.mode_rewards[m]:g}", (c[0], c[1] + 1.6 * task.radius), fontsize=7,
                                ha="center")
        if len(pts):
            colors = ("0.3" if k == 0 else "C3") if task.n_states == 1 else [state_colors[int(s) % 10] for s in pts[:, 2]]
            ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6, c=colors, lw=0)
        ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", title=label)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    what = ("the corners' supports (3 std), coloured by expected reward" if bandit
            else "the true modes' supports (3 std)" + (", colour = state" if task.n_states > 1 else ""))
    return plots.save(fig, f"actions-{slug(title)}",
                      f"{title}: evaluated actions of each algorithm's best configuration (the first 100 of each "
                      f"seed's last evaluation, eval/actions_sample, all seeds together) over {what}; first panel: a "
                      "sample of the data's true mixture")


def toy_section(doc: Doc, plots, df: pd.DataFrame, best_by_bench: dict[str, dict[str, Trial]]) -> None:
    """The section, for every benchmark on a toy dataset (nothing otherwise)."""
    from platform.envs.toy_tasks import reference_sample

    benches = [(b, best) for b, best in best_by_bench.items()
               if best and toy_task_of(next(iter(best.values())).dataset) is not None]
    if not benches:
        return
    doc.h(2, "Modes of the evaluated actions")
    for bench, best in benches:
        task = toy_task_of(next(iter(best.values())).dataset)
        doc.h(3, bench)
        doc.p(PREDICTIONS["bandit" if task.reward_std > 0 else "modes"])
        cols = [(c, name) for c, name in METRICS if c in df.columns and (c != "eval/best_mode_share"
                                                                            or task.reward_std > 0)]
        rows, panels, summary = [], [], {}
        data = np.concatenate([np.c_[reference_sample(task, s, 200 // task.n_states), np.full(200 // task.n_states, s)]
                               for s in range(task.n_states)])
        panels.append(("data (true mixture)", data))
        for algo, t in sorted(best.items()):
            last = _last_eval(df, t)
            if not len(last):
                continue
            vals = {c: pd.to_numeric(last[c], errors="coerce").dropna().to_numpy(dtype=np.float64) for c, _ in cols}
            summary[algo] = {c: float(v.mean()) for c, v in vals.items() if v.size}
            rows.append([algo, t.trial_id, str(len(last)), str(int(last["step"].max()))]
                        + [_fmt(vals[c], c) for c, _ in cols])
            m = summary[algo]
            label = (f"{algo}: {100 * m.get('eval/best_mode_share', float('nan')):.0f}% on r={task.mode_rewards.max():g}"
                     if task.reward_std > 0 else
                     f"{algo}: {m.get('eval/modes_covered', float('nan')) * task.n_modes:.1f}/{task.n_modes} modes")
            panels.append((label, _actions(last)))
        if not rows:
            doc.p("No evaluation recorded the mode metrics.")
            continue
        doc.p(f"Metrics per evaluation (`platform/envs/toy_tasks.py`, over the evaluation's one-step episodes): "
              f"modes covered = share of the {task.n_modes} modes"
              + (" of each state" if task.n_states > 1 else "")
              + " holding at least 1/4 of their fair share of the actions within 3 std of their centre; off support "
              "= share of actions within 3 std of no mode; MMD = Gaussian-kernel (width 0.1) MMD to a fixed sample "
              "of the true mixture (a sample of the data itself scores about 0.03-0.04)"
              + ("; on the best corner = share of actions within 3 std of the reward-5 corner" if task.reward_std > 0
                 else "") + ". Each seed's last evaluation, mean ± std over seeds, best configuration per algorithm.")
        doc.table(Table(["algorithm", "trial", "seeds", "step"] + [name for _, name in cols], rows,
                        caption=f"Mode metrics on {bench}"))
        doc.fig(fig_toy_actions(plots, bench, task, panels))
        doc.p(_measured(task, summary))


def _fmt(x: np.ndarray, metric: str) -> str:
    """mean ± std over seeds: 2 decimals for shares and MMD, 1 for the normalized score."""
    if not x.size:
        return "—"
    if metric == "eval/normalized_score":
        return fmean_std(x)
    return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}" if x.size > 1 else f"{x.mean():.2f} (1 seed)"


def _measured(task, summary: dict[str, dict]) -> str:
    """What the run shows, in words made from the table's means."""
    def pct(x):
        return f"{100 * x:.0f}%"

    parts = []
    for algo, m in sorted(summary.items(), key=lambda kv: -kv[1].get("eval/modes_covered", 0)):
        s = (f"{algo} {m.get('eval/modes_covered', float('nan')) * task.n_modes:.1f} of {task.n_modes} modes, "
             f"{pct(m.get('eval/off_support', float('nan')))} off support")
        if task.reward_std > 0:
            s += f", {pct(m.get('eval/best_mode_share', float('nan')))} on the best corner"
        parts.append(s)
    text = "What this run shows (means over seeds at the last evaluation): " + "; ".join(parts) + "."
    if task.reward_std > 0 and summary:
        top = max(summary, key=lambda a: summary[a].get("eval/best_mode_share", -1))
        text += (f" Most on the best corner: {top} "
                 f"({pct(summary[top].get('eval/best_mode_share', float('nan')))}).")
    elif summary:
        full = [a for a, m in summary.items() if m.get("eval/modes_covered", 0) >= 1 - 1e-9]
        text += (f" Every mode covered by: {', '.join(sorted(full))}." if full
                 else " No algorithm covered every mode at this budget.")
    return text
