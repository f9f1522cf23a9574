"""Minari datasets (the maintained successor of D4RL) from the local store, flattened to D4RL layout.

Needs ``pip install minari`` and the dataset already in the local store (``$MINARI_DATASETS_PATH``,
default ``~/.minari/datasets``): nothing is downloaded here.  Minari stores each episode's T actions
with its T+1 observations, so transitions are exact (``next_observations`` is the true successor,
no step is dropped).  Dict observations (goal-conditioned tasks) are concatenated in the order of
the observation space's keys, as gymnasium's ``FlattenObservation`` does.
"""
from __future__ import annotations

import numpy as np


def _minari():
    try:
        import minari
    except ImportError:
        raise ImportError("minari: datasets need the minari package (pip install minari); it is not installed") from None
    return minari


def _open(dataset_id: str):
    minari = _minari()
    local = minari.list_local_datasets()
    if dataset_id not in local:
        import os

        store = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        known = ", ".join(sorted(local)[:10]) or "none"
        raise FileNotFoundError(f"dataset minari:{dataset_id}: not in the local Minari store {store} (local: {known}); "
                                f"this machine cannot download it: copy it there (`minari download` elsewhere)")
    return minari.load_dataset(dataset_id)


def _env_id(ds) -> str:
    spec = getattr(ds.spec, "eval_env_spec", None) or ds.spec.env_spec
    return spec.id if spec is not None else ""


def minari_env_id(dataset_id: str) -> str:
    """Cheap check that a dataset is in the local store; returns its (evaluation) env id."""
    return _env_id(_open(dataset_id))


def _flat(x, space) -> np.ndarray:
    """Episode observations/actions ``(T, ...)`` (or a dict of them) -> ``(T, dim)`` float32."""
    if isinstance(x, dict):
        keys = list(space.spaces) if space is not None and hasattr(space, "spaces") else sorted(x)
        return np.concatenate([_flat(x[k], space.spaces[k] if space is not None else None) for k in keys], axis=1)
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(len(x), -1)


def load_minari(dataset_id: str):
    """Load a local Minari dataset as an ``OfflineDataset`` (episodes in stored order)."""
    from platform.datasets.base import OfflineDataset
    from platform.datasets.d4rl import validate
    from gymnasium.spaces import Box

    from platform.datasets.scores import reference_for

    ds = _open(dataset_id)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    parts = {k: [] for k in keys}
    ends, n = [], 0
    for ep in ds.iterate_episodes():
        obs = _flat(ep.observations, ds.observation_space)  # (T+1, obs_dim)
        t = len(ep.rewards)
        term = np.asarray(ep.terminations, dtype=bool).reshape(t)
        trunc = np.asarray(ep.truncations, dtype=bool).reshape(t)
        timeouts = np.zeros(t, dtype=bool)
        timeouts[-1] = not term[-1]  # the episode ends here without terminating (time limit or cut)
        for k, v in zip(keys, (obs[:-1], _flat(ep.actions, ds.action_space), np.asarray(ep.rewards, np.float32),
                               obs[1:], term, timeouts | (trunc & ~term))):
            parts[k].append(v)
        n += t
        ends.append(n)
    if not ends:
        raise ValueError(f"dataset minari:{dataset_id}: has no episodes")
    arrays = validate({k: np.concatenate(v) for k, v in parts.items()}, f"minari:{dataset_id}")
    env_id = _env_id(ds)
    meta = ds.storage.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is None or hi is None:
        lo, hi = reference_for(dataset_id, env_id)
    space = ds.action_space  # the dataset's own action space states the box
    if not (isinstance(space, Box) and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(f"dataset minari:{dataset_id}: its action space {space} is not a finite box")
    return OfflineDataset(**arrays, episode_ends=np.asarray(ends, dtype=np.int64), env_id=env_id,
                          ref_min_score=lo, ref_max_score=hi, name=f"minari:{dataset_id}",
                          act_low=np.ravel(space.low), act_high=np.ravel(space.high),
                          attrs={"minari_total_steps": int(meta.get("total_steps", n))})


__all__ = ["load_minari", "minari_env_id"]
