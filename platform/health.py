"""Health of a run: the signs that its score cannot be believed, one definition for the console and the report.

* **actions out of the box**: more than ``OUT_OF_BOX_SHARE`` of the policy's actions beyond the env's action box
  (``eval/action_out_of_box``; the rollout clips them before ``env.step``, but a policy that needs the clip is not
  the policy the paper describes -- EDP's broken 5-call sampler put 62% of its actions there, 1 to 11 half-widths
  over) *and* some action more than ``OUT_OF_BOX_EXCESS`` half-widths over: EDP's faithful sampler leaves its last
  step unclipped, and a few hundredths over is what it does (measured on generated hopper-medium at 2500 steps:
  7% of actions beyond 1% of the half-width, the largest 0.025 over), which the clip at the env hardly changes;
* **non-finite loss**: ``train/nonfinite_losses > 0`` (the trial then fails with a one-line error);
* **Q diverges**: ``|train/q_mean|`` above ``Q_ABS_LIMIT``, or grown more than ``Q_GROWTH``-fold over the second half
  of the run to above ``Q_GROWTH_FLOOR`` (early growth from 0 is learning, not divergence);
* (reports only) **configuration refused** by today's validation (an older run of a setting that breaks its
  algorithm) and **off the paper's per-task settings** (an older run, made before the platform resolved them,
  whose class default differs from the paper's value for the task).
"""
from __future__ import annotations

import json
import math

import numpy as np

OUT_OF_BOX_SHARE = 0.01
OUT_OF_BOX_EXCESS = 0.05
Q_ABS_LIMIT = 1e4
Q_GROWTH, Q_GROWTH_FLOOR = 10.0, 1e3


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def actions_out_of_box(share, excess):
    """The out-of-box rule: more than ``OUT_OF_BOX_SHARE`` of the actions beyond the box and some action more than
    ``OUT_OF_BOX_EXCESS`` half-widths over (a missing excess counts as over).  Elementwise: floats or Series."""
    share, excess = np.asarray(share, dtype=np.float64), np.asarray(excess, dtype=np.float64)
    return (share > OUT_OF_BOX_SHARE) & ~(excess <= OUT_OF_BOX_EXCESS)


def report_flags(result: dict) -> dict[str, str]:
    """Flags of one flat report (``history.flatten``: per-metric means over seeds): ``{kind: one-line reason}``."""
    flags = {}
    out, excess = _num(result.get("eval/action_out_of_box")), _num(result.get("eval/action_excess_max"))
    if actions_out_of_box(out, excess):
        flags["actions"] = (f"{out:.0%} of actions out of the action box (largest excess {excess:.2g} "
                            f"half-widths; clipped at the env)")
    if _num(result.get("train/nonfinite_losses")) > 0:
        flags["nonfinite"] = "a loss became non-finite"
    q = _num(result.get("train/q_mean"))
    if math.isinf(q) or abs(q) > Q_ABS_LIMIT:
        flags["q"] = f"Q scale diverges (train/q_mean {q:.3g})"
    return flags


def q_diverges(steps: list[int], q: list[float]) -> str | None:
    """Whether a run's ``train/q_mean`` series diverges (see the module docstring); the reason or None."""
    pts = sorted((s, v) for s, v in zip(steps, q) if not math.isnan(v))
    if not pts:
        return None
    if any(math.isinf(v) or abs(v) > Q_ABS_LIMIT for _, v in pts):
        return f"Q scale diverges (|train/q_mean| up to {max(abs(v) for _, v in pts):.3g})"
    mid = min(pts, key=lambda p: abs(p[0] - pts[-1][0] / 2))[1]
    last = pts[-1][1]
    if abs(last) > Q_GROWTH_FLOOR and abs(last) > Q_GROWTH * max(abs(mid), 1e-9):
        return f"Q scale diverges (train/q_mean {mid:.3g} at mid-run, {last:.3g} at the end)"
    return None


def _decoded(params: dict) -> dict:
    """Config values as the Parquet stores them (lists and dicts as JSON text) -> Python values."""
    out = {}
    for k, v in params.items():
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


def trial_flags(g, algorithm: str, dataset: str, params: dict, error: str | None) -> list[str]:
    """The health flags of one trial from its Parquet rows ``g`` (every seed and report): one line each."""
    import dataclasses

    import algorithms

    flags = []
    if "eval/action_out_of_box" in g.columns:
        ev = g[["seed", "step", "eval/action_out_of_box", "eval/action_excess_max"]].dropna(
            subset=["eval/action_out_of_box"])
        last = ev.sort_values("step").groupby("seed").tail(1)
        bad = last[actions_out_of_box(last["eval/action_out_of_box"], last["eval/action_excess_max"])]
        if len(bad):
            flags.append(f"actions out of the box in {len(bad)} of {len(last)} runs at their last evaluation (up to "
                         f"{bad['eval/action_out_of_box'].max():.0%}, largest excess "
                         f"{bad['eval/action_excess_max'].max():.2g} half-widths)")
    nonfinite = "train/nonfinite_losses" in g.columns and (g["train/nonfinite_losses"].fillna(0) > 0).any()
    if nonfinite or (error and "non-finite" in error):
        flags.append("a loss became non-finite")
    if "train/q_mean" in g.columns:
        for seed, s in g.dropna(subset=["train/q_mean"]).groupby("seed"):
            reason = q_diverges(s["step"].astype(int).tolist(), s["train/q_mean"].astype(float).tolist())
            if reason:
                flags.append(f"{reason}, seed {seed}")
                break
    try:
        config_cls, algo_cls = algorithms.get(algorithm)
    except KeyError:
        return flags
    params = _decoded(params)
    try:
        config_cls(**params)
    except (TypeError, ValueError) as e:
        flags.append(f"configuration refused by today's validation: {e}")
    if "per_task" not in g.columns or g["per_task"].isna().all():  # run before the platform resolved them
        defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
        off = [f"{k} {defaults.get(k)!r} (paper {v!r})" for k, v in algo_cls.paper_settings(dataset).items()
               if k not in params and defaults.get(k) is not None and defaults.get(k) != v]  # None: looked up
        if off:
            flags.append("off the paper's per-task settings: " + ", ".join(off))
    return flags
