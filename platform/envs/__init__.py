"""Environment factory used by the evaluation actors: one place that knows env ids.

``make_env("HalfCheetah-v5")`` is plain ``gymnasium.make``; ``pusht`` (or ``gym_pusht/PushT-v0``)
gives the low-dimensional Push-T task of the Diffusion Policy paper (20-d keypoint observations).
The robot benchmarks (``kitchen-complete``, ``antmaze-umaze``, ``pen``, ``robosuite:Lift``,
``blockpush``, ...) come from ``platform/envs/robotics.py``; the toy tasks' one-step envs (``ToyBandit-v0``,
``ToyModes8-v0``, ``ToyModesState-v0``) from ``platform/envs/toy.py``, registered with gymnasium on import.
"""
from __future__ import annotations

import gymnasium as gym

from platform.envs import toy as _toy

_toy.register()

PUSHT_IDS = ("pusht", "PushT-v0", "gym_pusht/PushT-v0")


def make_env(env_id: str, **kwargs) -> gym.Env:
    """Build one environment; raises ValueError with the id if it does not exist."""
    if env_id in PUSHT_IDS:
        from platform.envs.pusht import make_pusht_env

        return make_pusht_env(**kwargs)
    from platform.envs.robotics import is_robotics_id, make_robotics_env

    if is_robotics_id(env_id):  # kitchen-*, antmaze-*, pen, robosuite:*, blockpush (platform/envs/robotics.py)
        return make_robotics_env(env_id, **kwargs)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:  # NameNotFound, VersionNotFound, DependencyNotInstalled, ...
        raise ValueError(f"cannot make environment {env_id!r}: {e}") from None


def check_env_id(env_id: str) -> None:
    """Fail fast (before any training) if ``env_id`` is not a known environment."""
    from platform.envs.robotics import is_robotics_id

    if env_id in PUSHT_IDS or is_robotics_id(env_id):
        return
    if env_id not in gym.registry:
        import difflib

        near = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown environment {env_id!r}{hint}")
