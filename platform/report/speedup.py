"""EDP's training speed-up read from a study's Parquet (issue 40, part 3; the EDP paper's claim: about 25x less
training time than Diffusion-QL at K = 1000, "5 days to 5 hours" on the locomotion suite).

Two clocks, both from the Parquet's time columns of every report row of a (trial, seed):

* ``train_s``: seconds of gradient steps of that seed, summed over report windows as
  ``(step - previous step) / time/steps_per_s`` (``time/steps_per_s`` is seed-steps per second of training alone,
  measured by ``platform/training.py`` per window without evaluations, checkpoints or start-up): the paper's
  "training time", and the same whether a worker trains one seed or several in turn;
* ``wall_s``: ``time_s``, the trial's elapsed time at that report (evaluations and all its seeds included).

Where the Parquet has ``time/steps_per_cpu_s`` (seed-steps per CPU second of the Train worker's process, recorded
since the speed-up runs), ``train_s`` uses it instead of ``time/steps_per_s``: CPU seconds do not stretch when other
work shares the cores, so two studies run at different times (or beside other jobs) compare fairly.

``time_to`` is the first evaluation at or above the threshold (a run that never got there gives a lower bound:
its last evaluation's clock, flagged ``reached=False``).  ``implied_at`` scales the steps a run needed by another
study's seconds per step (K = 1000): an *implied* time, never a measured one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

THRESHOLD = 80.0          # the normalized score whose time is compared (issue 40)
SCORE = "eval/normalized_score"


@dataclass
class Curve:
    """One (trial, seed): evaluations in step order with both clocks, and its training clock at every report."""
    algorithm: str
    k: int | None                 # config/n_timesteps
    seed: int
    steps: np.ndarray             # (E,) evaluated steps
    scores: np.ndarray            # (E,)
    train_s: np.ndarray           # (E,) training seconds of this seed up to each evaluation
    wall_s: np.ndarray            # (E,) trial elapsed seconds (time_s) at each evaluation
    all_steps: np.ndarray         # (R,) every report's step (log_every rows too)
    all_train_s: np.ndarray       # (R,)
    sec_per_step: np.ndarray      # (R,) each report window's seconds per step (1 / time/steps_per_s)


@dataclass
class Reach:
    step: int
    train_s: float
    wall_s: float
    reached: bool                 # False: never at the threshold; the clocks are then the run's last evaluation's


def curves(df: pd.DataFrame) -> list[Curve]:
    """Every (trial, seed) of a study's rows that has at least one evaluation."""
    out = []
    keys = [c for c in ("sweep", "trial_id") if c in df.columns] + ["seed"]
    for key, g in df.groupby(keys, sort=True):
        seed = key[-1]
        g = g.sort_values("step")
        g = g[g["step"] > 0]
        clock = "time/steps_per_cpu_s" if g.get("time/steps_per_cpu_s") is not None and \
            g["time/steps_per_cpu_s"].notna().all() else "time/steps_per_s"
        sps = pd.to_numeric(g[clock], errors="coerce").to_numpy(dtype=np.float64)
        steps = g["step"].to_numpy(dtype=np.int64)
        d = np.diff(np.r_[0, steps]).astype(np.float64)
        per = np.where(sps > 0, 1.0 / np.where(sps > 0, sps, 1.0), np.nan)
        train = np.cumsum(d * per)
        score = pd.to_numeric(g.get(SCORE), errors="coerce").to_numpy(dtype=np.float64)
        ev = np.isfinite(score)
        if not ev.any():
            continue
        k = g["config/n_timesteps"].dropna() if "config/n_timesteps" in g.columns else pd.Series(dtype=float)
        out.append(Curve(algorithm=str(g["algorithm"].iloc[0]), k=int(k.iloc[0]) if len(k) else None, seed=int(seed),
                         steps=steps[ev], scores=score[ev], train_s=train[ev],
                         wall_s=pd.to_numeric(g["time_s"], errors="coerce").to_numpy(dtype=np.float64)[ev],
                         all_steps=steps, all_train_s=train, sec_per_step=per))
    return out


def time_to(c: Curve, threshold: float = THRESHOLD) -> Reach:
    """The first evaluation at or above ``threshold``; else the last evaluation, as a lower bound."""
    hit = np.flatnonzero(c.scores >= threshold)
    i, reached = (int(hit[0]), True) if hit.size else (len(c.steps) - 1, False)
    return Reach(int(c.steps[i]), float(c.train_s[i]), float(c.wall_s[i]), reached)


def score_at(c: Curve, seconds: float) -> tuple[float, int, float]:
    """At ``seconds`` of training: (the score of the last evaluation made by then (NaN if none), its step, the step the
    run had reached by then, interpolated on the training clock)."""
    done = np.flatnonzero(c.train_s <= seconds + 1e-9)
    step_now = float(np.interp(seconds, np.r_[0.0, c.all_train_s], np.r_[0, c.all_steps]))
    if not done.size:
        return float("nan"), 0, step_now
    i = int(done[-1])
    return float(c.scores[i]), int(c.steps[i]), step_now


def sec_per_step(c: Curve) -> float:
    """Median seconds per gradient step over the run's report windows, the first (warm-up) left out when there are
    more."""
    w = c.sec_per_step[np.isfinite(c.sec_per_step)]
    w = w[1:] if w.size > 1 else w
    return float(np.median(w)) if w.size else float("nan")


def by_algorithm(cs: list[Curve]) -> dict[str, list[Curve]]:
    out: dict[str, list[Curve]] = {}
    for c in cs:
        out.setdefault(c.algorithm, []).append(c)
    return out


@dataclass
class Speedup:
    """The comparison of a slow (``base``, Diffusion-QL) and a fast (``fast``, EDP) method on one study."""
    base: str
    fast: str
    reach: dict[str, list[Reach]]             # per algorithm, per seed (seed order)
    seeds: dict[str, list[int]]
    equal_s: float                            # the equal training time: the fast method's shortest whole run
    at_equal: dict[str, list[tuple[float, int, float]]]
    final: dict[str, list[tuple[float, int]]]   # each seed's last evaluation: (score, step)
    cost: dict[str, float]                    # median seconds per step
    steps: int

    def ratio_bounds(self) -> tuple[float, bool]:
        """A conservative time-to-threshold ratio base / fast on the training clock: the base method's fastest seed
        over the fast method's slowest; ``exact`` False when a base seed's time is only a lower bound (then the
        ratio is one too).  NaN when a fast seed never reached the threshold."""
        fast, base = self.reach[self.fast], self.reach[self.base]
        if not fast or not base or not all(r.reached for r in fast):
            return float("nan"), False
        return min(r.train_s for r in base) / max(r.train_s for r in fast), all(r.reached for r in base)


def speedup(df: pd.DataFrame, base: str = "dql", fast: str = "edp", threshold: float = THRESHOLD) -> Speedup:
    cs = by_algorithm(curves(df))
    missing = [a for a in (base, fast) if a not in cs]
    if missing:
        raise ValueError(f"no evaluated runs of {', '.join(missing)} in these results")
    for a in cs:
        cs[a].sort(key=lambda c: c.seed)
    equal_s = min(float(c.train_s[-1]) for c in cs[fast])
    return Speedup(base=base, fast=fast,
                   reach={a: [time_to(c, threshold) for c in cs[a]] for a in (base, fast)},
                   seeds={a: [c.seed for c in cs[a]] for a in (base, fast)},
                   equal_s=equal_s,
                   at_equal={a: [score_at(c, equal_s) for c in cs[a]] for a in (base, fast)},
                   final={a: [(float(c.scores[-1]), int(c.steps[-1])) for c in cs[a]] for a in (base, fast)},
                   cost={a: float(np.median([sec_per_step(c) for c in cs[a]])) for a in (base, fast)},
                   steps=int(max(c.steps[-1] for a in (base, fast) for c in cs[a])))


def implied_at(reach: list[Reach], sec_step: float) -> list[tuple[float, bool]]:
    """Implied training seconds to the threshold at another cost per step: (steps needed x ``sec_step``, exact);
    a run that never reached it gives a lower bound (exact False)."""
    return [(r.step * sec_step if math.isfinite(sec_step) else float("nan"), r.reached) for r in reach]
