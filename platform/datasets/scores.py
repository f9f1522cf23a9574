"""D4RL normalized scores: ``100 * (return - random) / (expert - random)``.

``random``/``expert`` are per-task reference returns: D4RL's for its tasks (Fu et al. 2020, the
numbers in D4RL's ``d4rl/infos.py``), measured here for Pendulum-v1.  Generated datasets store the
reference returns they were made with in their HDF5 attributes (``ref_min_score``/``ref_max_score``)
and the loaders prefer those; this table is the fallback for names and gymnasium ids.
"""
from __future__ import annotations

import re

# Pendulum-v1 (200-step episodes), measured with platform/datasets/generate.py over 5000 episodes
# (`python -c "from platform.datasets.generate import pendulum_reference_returns as f; print(f(5000))"`):
# uniform-random torques -1231.0 (std 290, s.e. 4); the scripted energy-shaping swing-up + PD expert
# acting deterministically -150.7 (std 92, s.e. 1.3), near the task's known optimum of about -150.
PENDULUM_RANDOM_SCORE = -1231.0
PENDULUM_EXPERT_SCORE = -150.7

REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331),
    "kitchen": (0.0, 4.0),
    "pendulum": (PENDULUM_RANDOM_SCORE, PENDULUM_EXPERT_SCORE),
}

# gymnasium / gymnasium-robotics ids whose lowercase name is not simply the family
GYM_FAMILY = {"adroithandpen": "pen", "frankakitchen": "kitchen"}


def family(name: str) -> str | None:
    """Task family of a gymnasium id, D4RL or Minari dataset name, or ``generated:`` name.

    ``HalfCheetah-v5`` / ``halfcheetah-medium-v2`` / ``mujoco/halfcheetah/medium-v0`` -> ``halfcheetah``;
    ``AntMaze_UMaze-v4`` -> ``antmaze``; ``pen-human-v1`` -> ``pen`` (but ``Pendulum-v1`` -> ``pendulum``).
    """
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    for tok in tokens:
        if tok in REF_SCORES:
            return tok
        if tok in GYM_FAMILY:
            return GYM_FAMILY[tok]
    return None


def ref_scores(name: str) -> tuple[float | None, float | None]:
    """``(random, expert)`` reference returns of a task, or ``(None, None)`` if unknown."""
    fam = family(name)
    return REF_SCORES[fam] if fam else (None, None)


def reference_for(*names: str | None) -> tuple[float | None, float | None]:
    """The reference returns of the first of ``names`` (dataset name, env id, ...) whose task is known, else
    ``(None, None)``: the no-reference state of ``OfflineDataset``."""
    for name in names:
        if name and family(name):
            return ref_scores(name)
    return None, None


def normalized_score(name, ret, ref: tuple[float, float] | None = None):
    """``100 * (ret - random) / (expert - random)`` for a task name or a dataset.

    ``name``: a gymnasium id (``HalfCheetah-v5``), a dataset name (``halfcheetah-medium-v2``,
    ``generated:pendulum-medium``) or an object with ``ref_min_score``/``ref_max_score`` (an
    ``OfflineDataset``).  ``ret``: a float or numpy array of episode returns.  ``ref`` overrides.
    """
    if ref is None and not isinstance(name, str):
        ref = (name.ref_min_score, name.ref_max_score)
        label = getattr(name, "name", "dataset")
    else:
        label = name
    lo, hi = ref if ref is not None else ref_scores(name)
    if lo is None or hi is None:
        raise KeyError(f"no reference scores for {label!r} (known task families: {', '.join(REF_SCORES)})")
    if hi == lo:
        raise ValueError(f"reference scores of {label!r} are equal ({lo}); cannot normalize")
    return 100.0 * (ret - lo) / (hi - lo)


__all__ = ["REF_SCORES", "family", "ref_scores", "reference_for", "normalized_score", "PENDULUM_RANDOM_SCORE",
           "PENDULUM_EXPERT_SCORE"]

