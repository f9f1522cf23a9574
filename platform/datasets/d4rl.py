"""D4RL HDF5 files: a loader with ``d4rl.qlearning_dataset`` semantics and an atomic writer.

File layout (D4RL's): ``observations (N, obs_dim)``, ``actions (N, act_dim)``, ``rewards (N,)``,
``terminals (N,)``, ``timeouts (N,)`` and, in some files, ``next_observations (N, obs_dim)``;
``infos/*`` and ``metadata/*`` groups are ignored.  Files made by ``platform.datasets.generate``
also carry attributes: ``env_id``, ``ref_min_score``/``ref_max_score``, ``act_low``/``act_high``
and generator metadata.

``qlearning`` reproduces ``d4rl.qlearning_dataset(env, dataset, terminate_on_end=False)``:

* transitions are the steps ``i in range(N - 1)`` (the file's last step is always dropped);
* the successor of step i is ``next_observations[i]`` if the file has it, else ``observations[i+1]``;
* a step with ``timeouts[i]`` (the last step of an episode cut by the time limit) is dropped: its
  ``observations[i+1]`` belongs to the next episode.  Files without ``timeouts`` use D4RL's old rule,
  ``episode_step == max_episode_steps - 1``, with D4RL's step counter (quirks included);
* ``terminals`` (true terminations) are kept as they are.

Beyond D4RL it returns ``episode_ends`` (exclusive ends of the episodes among the kept transitions:
after a terminal, before a dropped step, at the end of the data) and ``timeouts`` (1 at the last
kept transition of an episode that ended without a true termination).
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np

from platform.checkpoint import atomic_write

REQUIRED = ("observations", "actions", "rewards", "terminals")
OPTIONAL = ("timeouts", "next_observations")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and the array."""


# ----------------------------------------------------------------------------- reading


def read_arrays(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Raw arrays (required + optional keys) and file attributes, validated."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such D4RL dataset file")
    name = os.path.basename(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{name}: not a readable HDF5 file ({e})") from None
    with f:
        for key in REQUIRED:
            if key not in f:
                raise DatasetError(f"{name}: missing array {key!r} (the file has: {', '.join(sorted(f.keys()))})")
            if not isinstance(f[key], h5py.Dataset):
                raise DatasetError(f"{name}: {key!r} is a group, expected an array")
        arrays = {k: f[k][()] for k in (*REQUIRED, *OPTIONAL) if k in f and isinstance(f[k], h5py.Dataset)}
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
    return validate(arrays, name), attrs


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def validate(arrays: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """Check shapes and values (one clear error naming the array); flatten ``(N, 1)`` columns to ``(N,)``."""
    out = {}
    for key, a in arrays.items():
        a = np.asarray(a)
        if key in ("observations", "actions", "next_observations"):
            if a.ndim == 1:  # 1-D observation/action spaces stored flat
                a = a[:, None]
            if a.ndim != 2:
                raise DatasetError(f"{name}: {key!r} must be 2-D (N, dim), has shape {a.shape}")
        else:
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1:
                raise DatasetError(f"{name}: {key!r} must be 1-D (N,), has shape {a.shape}")
        if a.dtype.kind not in "fiub":
            raise DatasetError(f"{name}: {key!r} has non-numeric dtype {a.dtype}")
        out[key] = a
    n = len(out["observations"])
    for key, a in out.items():
        if len(a) != n:
            raise DatasetError(f"{name}: {key!r} has {len(a)} rows, 'observations' has {n}")
    if "next_observations" in out and out["next_observations"].shape[1] != out["observations"].shape[1]:
        raise DatasetError(f"{name}: 'next_observations' has {out['next_observations'].shape[1]} columns, "
                           f"'observations' has {out['observations'].shape[1]}")
    if n < 2:
        raise DatasetError(f"{name}: needs at least 2 steps, has {n}")
    for key, a in out.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            rows = np.nonzero(~np.isfinite(a).reshape(n, -1).all(axis=1))[0]
            raise DatasetError(f"{name}: {key!r} has NaN or inf in {len(rows)} row(s), first at row {rows[0]}")
    return out


# ----------------------------------------------------------------------------- qlearning_dataset


def final_timesteps(arrays: dict[str, np.ndarray], max_episode_steps: int | None) -> np.ndarray:
    """D4RL's ``final_timestep`` per step: ``timeouts`` if present, else its episode-step counter rule."""
    n = len(arrays["rewards"])
    if "timeouts" in arrays:
        return arrays["timeouts"].astype(bool)
    final = np.zeros(n, dtype=bool)
    if not max_episode_steps:
        return final
    # d4rl's loop, counter quirk included: after a terminal the counter restarts at 1, after a cut at 0
    term, step = arrays["terminals"].astype(bool), 0
    for i in range(n - 1):
        if step == max_episode_steps - 1:
            final[i], step = True, 0
            continue
        step = 1 if term[i] else step + 1
    return final


def qlearning(arrays: dict[str, np.ndarray], max_episode_steps: int | None = None,
              terminate_on_end: bool = False) -> dict[str, np.ndarray]:
    """``d4rl.qlearning_dataset`` on validated raw arrays, plus ``timeouts`` and ``episode_ends``.

    Returns ``observations (M, obs_dim)``, ``actions (M, act_dim)``, ``next_observations (M, obs_dim)``
    float32, ``rewards (M,)``, ``terminals (M,)``, ``timeouts (M,)`` float32 and ``episode_ends (E,)`` int64,
    with ``M <= N - 1``.
    """
    obs, n = arrays["observations"], len(arrays["observations"])
    term = arrays["terminals"].astype(bool)
    final = final_timesteps(arrays, max_episode_steps)
    m = n - 1  # d4rl: for i in range(N - 1)
    keep = np.ones(m, dtype=bool) if terminate_on_end else ~final[:m]
    nxt = arrays["next_observations"][:m] if "next_observations" in arrays else obs[1:]
    # the kept step i is the last of its episode if it terminates, is a (kept) cut, precedes a dropped
    # cut, or is the last transition
    last = term[:m] | final[:m] | np.append(final[1:m] & (not terminate_on_end), True)
    idx = np.nonzero(keep)[0]
    ends = np.nonzero(last[idx])[0] + 1
    if len(idx) and (len(ends) == 0 or ends[-1] != len(idx)):
        ends = np.append(ends, len(idx))
    return {"observations": obs[idx].astype(np.float32),
            "actions": arrays["actions"][idx].astype(np.float32),
            "rewards": arrays["rewards"][idx].astype(np.float32),
            "next_observations": nxt[idx].astype(np.float32),
            "terminals": term[idx].astype(np.float32),
            "timeouts": (last[idx] & ~term[idx]).astype(np.float32),
            "episode_ends": ends.astype(np.int64)}


# ----------------------------------------------------------------------------- loading


def infer_env_id(name: str) -> str | None:
    """Gymnasium id to evaluate a D4RL-named dataset in (``hopper-medium-v2`` -> ``Hopper-v5``).

    D4RL's v2 MuJoCo data came from gym's v3 tasks (mujoco-py); gymnasium's v5 tasks have the same
    observation and action spaces and are the closest ones runnable today.
    """
    from platform.datasets.collect import ENVS
    from platform.datasets.scores import family

    row = ENVS.get(family(name) or "")  # the generated envs are D4RL's tasks (and Pendulum)
    return row.env_id if row else None


def read_env_id(path: str) -> str:
    """The ``env_id`` attribute of a file, else inferred from its name; raises DatasetError if neither."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such D4RL dataset file")
    with h5py.File(path, "r") as f:
        env_id = _attr(f.attrs.get("env_id", ""))
    env_id = env_id or infer_env_id(os.path.basename(path))
    if not env_id:
        raise DatasetError(f"{os.path.basename(path)}: no env_id attribute and the file name does not name a known "
                           f"task; set `env:` in the study")
    return env_id


def load_d4rl(path: str, env_id: str | None = None, terminate_on_end: bool = False):
    """Load a D4RL-format HDF5 file as an ``OfflineDataset`` (qlearning semantics, see module doc).

    The action box is the file's ``act_low``/``act_high`` attributes, else the env's (``env_action_box``): a file
    whose env cannot be made here and that states no box fails (DatasetError), it does not guess [-1, 1].  The
    reference returns are the file's attributes, else the task's (``scores.reference_for``), else none
    (``NO_REFERENCE``)."""
    from platform.datasets.base import OfflineDataset, env_action_box
    from platform.datasets.scores import reference_for

    name = os.path.basename(path)
    arrays, attrs = read_arrays(path)
    env_id = env_id or attrs.get("env_id") or infer_env_id(name)
    if not env_id:
        raise DatasetError(f"{name}: no env_id attribute and the file name does not name a known task")
    act_low, act_high = attrs.get("act_low"), attrs.get("act_high")
    limit = attrs.get("max_episode_steps")
    if act_low is None or act_high is None:
        try:
            act_low, act_high, env_limit = env_action_box(env_id)
        except ValueError as e:
            raise DatasetError(f"{name}: no act_low/act_high attributes, and {e}: write the box into the file "
                               f"(write_d4rl_hdf5's attrs) or install the env's simulator") from None
        limit = limit or env_limit
    elif "timeouts" not in arrays and not limit:  # the time limit splits episodes: read it off the env if it exists
        try:
            limit = env_action_box(env_id)[2]
        except ValueError:
            limit = None
    lo, hi = attrs.get("ref_min_score"), attrs.get("ref_max_score")
    if lo is None or hi is None:
        lo, hi = reference_for(name, env_id)
    q = qlearning(arrays, max_episode_steps=limit, terminate_on_end=terminate_on_end)
    return OfflineDataset(**q, env_id=str(env_id), name=name, ref_min_score=lo, ref_max_score=hi,
                          act_low=act_low, act_high=act_high, attrs=attrs)


# ----------------------------------------------------------------------------- writing


def write_d4rl_hdf5(path: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Write D4RL-format arrays and attributes atomically (temp file in the same folder + rename).

    ``arrays``: at least observations, actions, rewards, terminals (timeouts, next_observations
    optional), validated first.  ``attrs``: scalars, strings or arrays; dicts/lists of str are stored
    as JSON strings; None values are skipped.
    """
    clean = validate({k: v for k, v in arrays.items()}, os.path.basename(path))
    missing = [k for k in REQUIRED if k not in clean]
    if missing:
        raise DatasetError(f"{os.path.basename(path)}: missing array {missing[0]!r}")
    dtypes = {"terminals": bool, "timeouts": bool}

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for k, v in clean.items():
                f.create_dataset(k, data=np.asarray(v, dtype=dtypes.get(k, np.float32)),
                                 compression="gzip", compression_opts=1)
            for k, v in (attrs or {}).items():
                if v is None:
                    continue
                if isinstance(v, dict) or (isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v)):
                    v = json.dumps(v, sort_keys=True, default=str)
                f.attrs[k] = v

    atomic_write(path, write)


__all__ = ["DatasetError", "read_arrays", "validate", "qlearning", "load_d4rl", "read_env_id", "write_d4rl_hdf5",
           "infer_env_id"]
