"""robomimic HDF5 demonstrations (Mandlekar et al., CoRL 2021): a loader and a writer.

robomimic's layout: ``data`` (attrs ``total``, ``env_args`` = JSON ``{"env_name": "Lift", ...}``),
``data/demo_<i>/{obs/<key> (T, d), next_obs/<key>, actions (T, act_dim), rewards (T,), dones (T,)}``
(``states``/``next_obs`` optional), and ``mask/<filter>`` arrays of demo names (e.g. ``train``,
``valid``).  Demos are read in robomimic's order (sorted by their integer index).

``load_robomimic(path)`` -> ``OfflineDataset``:

* ``observations (N, obs_dim)``: the concatenation of ``obs_keys`` (default: the file's ``obs_keys``
  attribute if it has one, else robomimic's low-dim keys in Diffusion Policy's order, ``object``,
  ``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``);
* ``next_observations``: ``next_obs`` if stored, else the next step's observation (the last step of a
  demo reuses its own);
* ``terminals = dones``; ``timeouts`` = 1 at the last step of a demo that does not end done;
* ``env_id``: ``robosuite:<env_name>`` for robosuite tasks, ``blockpush`` for this platform's Block
  Pushing demos; ``ref_min_score, ref_max_score = 0, 1``: rewards are sparse successes that end the
  episode, so the normalized score is 100 x the success rate.
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np

from platform.checkpoint import atomic_write

DEFAULT_OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
ENV_IDS = {"Lift": "robosuite:Lift", "PickPlaceCan": "robosuite:PickPlaceCan", "blockpush": "blockpush"}
ACTION_BOUND = {"blockpush": 0.03}  # per-step effector move (m); robosuite's OSC actions are in [-1, 1]


def _demo_names(f: h5py.File, filter_key: str | None, label: str) -> list[str]:
    if "data" not in f:
        raise ValueError(f"{label}: no 'data' group (not a robomimic file; it has: {', '.join(sorted(f.keys()))})")
    if filter_key is not None:
        if f"mask/{filter_key}" not in f:
            have = sorted(f["mask"].keys()) if "mask" in f else []
            raise ValueError(f"{label}: no mask/{filter_key} (masks: {', '.join(have) or 'none'})")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{filter_key}"][()]]
    else:
        names = [n for n in f["data"].keys() if n.startswith("demo_")]
    names = sorted(names, key=lambda n: int(n.split("_")[-1]))
    if not names:
        raise ValueError(f"{label}: has no demos")
    return names


def read_env_name(path: str) -> str:
    """The ``env_name`` in ``data.attrs["env_args"]`` ('' if absent)."""
    with h5py.File(path, "r") as f:
        raw = f["data"].attrs.get("env_args", "{}") if "data" in f else "{}"
    raw = raw.decode() if isinstance(raw, bytes) else raw
    return str(json.loads(raw or "{}").get("env_name", ""))


def robomimic_env_id(path: str) -> str:
    """Cheap check: the file opens, has demos; returns the evaluation env id ('' if unknown)."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset robomimic:{path}: no such file")
    with h5py.File(path, "r") as f:
        _demo_names(f, None, os.path.basename(path))
    return ENV_IDS.get(read_env_name(path), "")


def load_robomimic(path: str, obs_keys: tuple[str, ...] | None = None, filter_key: str | None = None,
                   max_demos: int | None = None):
    """Load a robomimic HDF5 file as an ``OfflineDataset`` (see the module docstring).

    ``filter_key``: use only the demos listed in ``mask/<filter_key>``; ``max_demos``: the first n demos.
    """
    from platform.datasets.base import OfflineDataset

    path = os.path.expanduser(path)
    label = f"robomimic:{os.path.basename(path)}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset robomimic:{path}: no such file")
    obs_parts, next_parts, act, rew, term, tout, ends = [], [], [], [], [], [], []
    with h5py.File(path, "r") as f:
        names = _demo_names(f, filter_key, label)[:max_demos]
        if obs_keys is None:
            stored = f["data"].attrs.get("obs_keys")
            obs_keys = tuple(json.loads(stored)) if stored is not None else DEFAULT_OBS_KEYS
        n = 0
        for name in names:
            demo = f["data"][name]
            missing = [k for k in obs_keys if f"obs/{k}" not in demo]
            if missing:
                have = sorted(demo["obs"].keys()) if "obs" in demo else []
                raise ValueError(f"{label}: {name} has no obs/{missing[0]} (obs keys: {', '.join(have)})")
            obs = np.concatenate([np.asarray(demo[f"obs/{k}"][()], np.float32).reshape(len(demo["actions"]), -1)
                                  for k in obs_keys], axis=1)
            t = len(obs)
            if "next_obs" in demo and all(f"next_obs/{k}" in demo for k in obs_keys):
                nxt = np.concatenate([np.asarray(demo[f"next_obs/{k}"][()], np.float32).reshape(t, -1)
                                      for k in obs_keys], axis=1)
            else:
                nxt = obs[np.minimum(np.arange(t) + 1, t - 1)]
            done = np.asarray(demo["dones"][()], dtype=bool).reshape(t) if "dones" in demo else np.zeros(t, bool)
            timeouts = np.zeros(t, dtype=bool)
            timeouts[-1] = not done[-1]
            obs_parts.append(obs)
            next_parts.append(nxt)
            act.append(np.asarray(demo["actions"][()], np.float32).reshape(t, -1))
            rew.append(np.asarray(demo["rewards"][()], np.float32).reshape(t) if "rewards" in demo
                       else np.zeros(t, np.float32))
            term.append(done)
            tout.append(timeouts)
            n += t
            ends.append(n)
    env_name = read_env_name(path)
    bound = ACTION_BOUND.get(env_name, 1.0)
    act_dim = act[0].shape[1]
    return OfflineDataset(observations=np.concatenate(obs_parts), actions=np.concatenate(act),
                          rewards=np.concatenate(rew), next_observations=np.concatenate(next_parts),
                          terminals=np.concatenate(term), timeouts=np.concatenate(tout),
                          episode_ends=np.asarray(ends, dtype=np.int64), env_id=ENV_IDS.get(env_name, ""),
                          ref_min_score=0.0, ref_max_score=1.0, name=label,
                          act_low=(-bound,) * act_dim, act_high=(bound,) * act_dim,
                          attrs={"obs_keys": list(obs_keys), "env_name": env_name, "n_demos": len(names)})


def write_robomimic(path: str, episodes: list[dict], env_name: str, obs_keys: tuple[str, ...] | None = None,
                    env_kwargs: dict | None = None, valid_fraction: float = 0.0) -> None:
    """Write episodes in robomimic's layout (atomically).

    ``episodes``: dicts with ``obs`` (``{key: (T, d)}``), ``actions (T, act_dim)``, ``rewards (T,)``,
    ``dones (T,)`` and optionally ``next_obs``.  ``obs_keys`` (stored as the ``obs_keys`` attribute)
    tells the loader which keys make the observation.  ``valid_fraction`` writes ``mask/train`` and
    ``mask/valid`` (the last demos are the validation ones).
    """
    if not episodes:
        raise ValueError("write_robomimic: no episodes")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            total = 0
            for i, ep in enumerate(episodes):
                g = data.create_group(f"demo_{i}")
                t = len(ep["actions"])
                for group in ("obs", "next_obs"):
                    for k, v in (ep.get(group) or {}).items():
                        g.create_dataset(f"{group}/{k}", data=np.asarray(v, dtype=np.float64).reshape(t, -1))
                g.create_dataset("actions", data=np.asarray(ep["actions"], dtype=np.float64))
                g.create_dataset("rewards", data=np.asarray(ep["rewards"], dtype=np.float64))
                g.create_dataset("dones", data=np.asarray(ep["dones"], dtype=np.int64))
                g.attrs["num_samples"] = t
                total += t
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 1, "env_kwargs": env_kwargs or {}})
            if obs_keys is not None:
                data.attrs["obs_keys"] = json.dumps(list(obs_keys))
            if valid_fraction > 0:
                n_valid = max(1, int(round(len(episodes) * valid_fraction)))
                names = [f"demo_{i}".encode() for i in range(len(episodes))]
                f.create_dataset("mask/train", data=np.array(names[:-n_valid]))
                f.create_dataset("mask/valid", data=np.array(names[-n_valid:]))

    atomic_write(os.path.expanduser(path), write)


__all__ = ["load_robomimic", "write_robomimic", "robomimic_env_id", "DEFAULT_OBS_KEYS"]
