"""Minari datasets read straight from their files (h5py only: no ``minari`` package, no simulator).

The D4RL tasks of the Diffusion-QL and Diffusion Policy papers as Minari publishes them, found in
the local Minari store (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``; nothing is downloaded):

=====================================  ==============================  ======================  ==============
dataset name                           Minari id                       evaluation env          ref. returns
=====================================  ==============================  ======================  ==============
``kitchen:complete|partial|mixed``     ``D4RL/kitchen/<name>-v2``      ``kitchen-<name>``      0 / 4
``antmaze:umaze|umaze-diverse|``       ``D4RL/antmaze/<name>-v1``      ``antmaze-<maze>``      0 / 1
``medium-play|...|large-diverse``
``adroit:pen-human|cloned|expert``     ``D4RL/pen/<quality>-v2``       ``pen``                 D4RL pen's
=====================================  ==============================  ======================  ==============

The value may also be a path to a dataset directory or its ``data/main_data.hdf5`` (e.g.
``kitchen:/data/kitchen-complete``).  Minari's file layout: ``episode_<i>/{observations, actions,
rewards, terminations, truncations}`` with ``T + 1`` observations for ``T`` steps; a dict
observation is a group (nested for nested dicts).  Observations are flattened like the evaluation
envs flatten them: kitchen uses ``observations/observation`` only (59-d), AntMaze concatenates
``achieved_goal, desired_goal, observation`` (gymnasium's ``FlattenObservation`` order: sorted keys).
"""
from __future__ import annotations

import os

import h5py
import numpy as np

from platform.checkpoint import atomic_write

# kind -> (minari id pattern, observation key or None for all sorted keys, reference family)
KINDS = {
    "kitchen": ("D4RL/kitchen/{}-v2", "observation"),
    "antmaze": ("D4RL/antmaze/{}-v1", None),
    "adroit": ("D4RL/pen/{}-v2", None),
}
KITCHEN_NAMES = ("complete", "partial", "mixed")
ANTMAZE_NAMES = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
ADROIT_NAMES = ("pen-human", "pen-cloned", "pen-expert")


def minari_root() -> str:
    return os.path.expanduser(os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets")


def _task(kind: str, value: str) -> tuple[str, str]:
    """``(minari id or '', env id)``; ValueError for an unknown name."""
    base = os.path.basename(value.rstrip("/"))
    if kind == "kitchen":
        names, pick = KITCHEN_NAMES, lambda n: f"kitchen-{n}"
    elif kind == "antmaze":
        names, pick = ANTMAZE_NAMES, lambda n: f"antmaze-{n.split('-')[0]}"
    elif kind == "adroit":
        names, pick = ADROIT_NAMES, lambda n: "pen"
    else:
        raise ValueError(f"unknown Minari task kind {kind!r}")
    if value in names:
        quality = value.split("-", 1)[1] if kind == "adroit" else value
        return KINDS[kind][0].format(quality), pick(value)
    # a path: guess the env from its name (kitchen-complete, umaze-diverse-v1, pen-human-v2, ...)
    for n in sorted(names, key=len, reverse=True):
        if n in base or (kind == "adroit" and n.split("-", 1)[1] in base):
            return "", pick(n)
    if os.path.sep in value or value.endswith(".hdf5"):
        return "", {"kitchen": "kitchen-complete", "antmaze": "antmaze-umaze", "adroit": "pen"}[kind]
    raise ValueError(f"dataset {kind}:{value}: unknown name; use one of {', '.join(names)} or a path")


def resolve(kind: str, value: str) -> tuple[str, str]:
    """``kind:value`` -> ``(path of main_data.hdf5, evaluation env id)``; FileNotFoundError if absent."""
    minari_id, env_id = _task(kind, value)
    if minari_id:
        directory = os.path.join(minari_root(), minari_id)
    else:
        directory = os.path.expanduser(value)
    path = directory if directory.endswith(".hdf5") else os.path.join(directory, "data", "main_data.hdf5")
    if not os.path.exists(path):
        how = (f"copy the Minari dataset {minari_id} there (`minari download {minari_id}` on a machine "
               f"with internet) or set MINARI_DATASETS_PATH" if minari_id else "give an existing Minari dataset directory")
        raise FileNotFoundError(f"dataset {kind}:{value}: no {path}; this machine cannot download it: {how}")
    return path, env_id


def _flat(node, key: str | None, t: int) -> np.ndarray:
    """An episode's observations (dataset or group) -> ``(t, dim)`` float32."""
    if isinstance(node, h5py.Dataset):
        return np.asarray(node[()], dtype=np.float32).reshape(t, -1)
    if key is not None:
        if key not in node:
            raise ValueError(f"observation group has no {key!r} (keys: {', '.join(node.keys())})")
        return _flat(node[key], None, t)
    return np.concatenate([_flat(node[k], None, t) for k in sorted(node.keys())], axis=1)


def load_minari_files(kind: str, value: str, max_episodes: int | None = None):
    """Load ``kitchen:``/``antmaze:``/``adroit:`` datasets as an ``OfflineDataset``."""
    from platform.datasets.base import OfflineDataset
    from platform.datasets.d4rl import validate
    from platform.datasets.scores import ref_scores

    path, env_id = resolve(kind, value)
    label = f"{kind}:{value}"
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    parts = {k: [] for k in keys}
    ends, n = [], 0
    with h5py.File(path, "r") as f:
        names = sorted((k for k in f.keys() if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        for name in names[:max_episodes]:
            ep = f[name]
            t = len(ep["rewards"])
            if t == 0:
                continue
            try:
                obs = _flat(ep["observations"], KINDS[kind][1], t + 1)
            except ValueError as e:
                raise ValueError(f"{label}: {name}: {e}") from None
            term = np.asarray(ep["terminations"][()], dtype=bool).reshape(t)
            timeouts = np.zeros(t, dtype=bool)
            timeouts[-1] = not term[-1]
            for k, v in zip(keys, (obs[:-1], np.asarray(ep["actions"][()], np.float32).reshape(t, -1),
                                   np.asarray(ep["rewards"][()], np.float32), obs[1:], term, timeouts)):
                parts[k].append(v)
            n += t
            ends.append(n)
    if not ends:
        raise ValueError(f"dataset {label}: has no episodes")
    arrays = validate({k: np.concatenate(v) for k, v in parts.items()}, label)
    lo, hi = ref_scores(env_id)
    return OfflineDataset(**arrays, episode_ends=np.asarray(ends, dtype=np.int64), env_id=env_id,
                          ref_min_score=lo, ref_max_score=hi, name=label,
                          # FrankaKitchen, AntMaze and AdroitHandPen all act in Box(-1, 1)
                          act_low=(-1.0,) * arrays["actions"].shape[1], act_high=(1.0,) * arrays["actions"].shape[1],
                          attrs={"path": path})


def write_minari_files(directory: str, episodes: list[dict]) -> str:
    """Write episodes in Minari's HDF5 layout (``<directory>/data/main_data.hdf5``; no metadata.json).

    ``episodes``: dicts with ``observations`` (``(T+1, d)`` array or a dict of them, nested allowed),
    ``actions (T, a)``, ``rewards (T,)``, ``terminations (T,)``, ``truncations (T,)``.  Returns the path.
    """
    path = os.path.join(os.path.expanduser(directory), "data", "main_data.hdf5")

    def put(group, name, value):
        if isinstance(value, dict):
            sub = group.create_group(name)
            for k, v in value.items():
                put(sub, k, v)
        else:
            group.create_dataset(name, data=np.asarray(value))

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for i, ep in enumerate(episodes):
                g = f.create_group(f"episode_{i}")
                g.attrs["id"], g.attrs["total_steps"] = i, len(ep["rewards"])
                for k in ("observations", "actions", "rewards", "terminations", "truncations"):
                    put(g, k, ep[k])

    atomic_write(path, write)
    return path


__all__ = ["load_minari_files", "write_minari_files", "resolve", "minari_root"]
