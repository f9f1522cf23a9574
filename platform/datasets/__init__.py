"""Offline datasets by name, as written in a study's ``dataset:`` key.

* ``d4rl:<file.hdf5>`` or ``d4rl:<D4RL name>`` (e.g. ``d4rl:halfcheetah-medium-v2``): a D4RL HDF5 file,
  loaded with ``qlearning_dataset`` semantics (``platform/datasets/d4rl.py``).  Names are looked up as
  ``<dir>/<name>.hdf5`` or D4RL's own file name ``<dir>/halfcheetah_medium-v2.hdf5``, with ``<dir>``
  the ``cache_dir`` argument, else ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets`` (d4rl's defaults).
* ``minari:<dataset id>``: a dataset in the local Minari store (needs ``pip install minari``).
* ``generated:<env>-<quality>`` (e.g. ``generated:pendulum-medium``, ``generated:hopper-medium-replay``):
  made by ``python -m platform.datasets.generate`` and cached as ``<dir>/<env>-<quality>.hdf5`` with
  ``<dir>`` the ``cache_dir`` argument, else ``$DRL_DATA_DIR``, else ``~/.cache/diffusion-rl/datasets``.
  Missing Pendulum datasets are generated on first use (about a second); MuJoCo ones take hours, so
  they raise an error with the command to run unless ``allow_generate=True``.
* ``pusht:<path to pusht_cchi_v7_replay.zarr>``: the Diffusion Policy paper's Push-T demonstrations
  (``platform/datasets/pusht.py``).
* ``robomimic:<file.hdf5>``, ``scripted:<blockpush|lift>``, ``kitchen:<name>``, ``antmaze:<name>``,
  ``adroit:<pen-quality>``: the robot benchmarks (``platform/datasets/robotics.py``).

Nothing is downloaded: the machines this runs on may be offline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from algorithms import EnvSpec

ROBOTICS_KINDS = ("robomimic", "scripted", "kitchen", "antmaze", "adroit")
KINDS = ("d4rl", "minari", "generated", "pusht", "robomimic", "scripted", "kitchen", "antmaze", "adroit")


@dataclass
class OfflineDataset:
    """N transitions from E episodes in D4RL's ``qlearning_dataset`` layout (flat numpy arrays).

    ``observations (N, obs_dim)``, ``actions (N, act_dim)``, ``next_observations (N, obs_dim)``,
    ``rewards (N,)`` float32; ``terminals (N,)`` float32, 1 at true terminations only;
    ``timeouts (N,)`` float32, 1 at the last transition of an episode that ended without terminating
    (time limit or end of data); ``episode_ends (E,)`` int64, exclusive end index of each episode in
    the flat arrays (episode e is rows ``episode_ends[e-1]:episode_ends[e]``), for sequence models.
    ``env_id``: the gymnasium id to evaluate in; ``ref_min_score``/``ref_max_score``: the random and
    expert reference returns of the normalized score (None if unknown).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_ends: np.ndarray
    env_id: str
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    name: str = ""
    act_low: tuple | None = None     # the env's action bounds if known (EnvSpec's default: [-1, 1])
    act_high: tuple | None = None
    attrs: dict = field(default_factory=dict)  # file metadata (generator settings etc.)

    def __post_init__(self):
        f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
        self.observations, self.next_observations = f32(self.observations), f32(self.next_observations)
        self.actions, self.rewards = f32(self.actions), f32(self.rewards)
        self.terminals, self.timeouts = f32(self.terminals), f32(self.timeouts)
        self.episode_ends = np.asarray(self.episode_ends, dtype=np.int64)
        label = self.name or "dataset"
        n = len(self.observations)
        for key in ("observations", "actions", "next_observations"):
            if getattr(self, key).ndim != 2:
                raise ValueError(f"{label}: {key} must be (N, dim), has shape {getattr(self, key).shape}")
        for key in ("actions", "rewards", "next_observations", "terminals", "timeouts"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{label}: {key} has {len(getattr(self, key))} rows, observations has {n}")
        for key in ("rewards", "terminals", "timeouts"):
            if getattr(self, key).ndim != 1:
                raise ValueError(f"{label}: {key} must be (N,), has shape {getattr(self, key).shape}")
        ends = self.episode_ends
        if ends.ndim != 1 or (n and (len(ends) == 0 or ends[-1] != n or ends[0] <= 0 or np.any(np.diff(ends) <= 0))):
            raise ValueError(f"{label}: episode_ends must be increasing exclusive ends finishing at N={n}, "
                             f"got {ends[:5]}...{ends[-3:]}")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    def env_spec(self) -> EnvSpec:
        """Dims, the env's action bounds and the data's per-dimension obs/action ranges."""
        def tup(a):
            return tuple(float(x) for x in a)

        return EnvSpec(obs_dim=self.observations.shape[1], act_dim=self.actions.shape[1],
                       act_low=tup(self.act_low) if self.act_low is not None else (),
                       act_high=tup(self.act_high) if self.act_high is not None else (),
                       obs_low=tup(self.observations.min(0)), obs_high=tup(self.observations.max(0)),
                       act_min=tup(self.actions.min(0)), act_max=tup(self.actions.max(0)))

    def episode_returns(self) -> np.ndarray:
        """Sum of rewards of each episode, ``(E,)``."""
        return np.add.reduceat(self.rewards.astype(np.float64), np.concatenate([[0], self.episode_ends[:-1]]))


def data_dir(cache_dir: str | None = None) -> str:
    """Where ``generated:`` datasets are cached: ``cache_dir``, ``$DRL_DATA_DIR``, ``~/.cache/diffusion-rl/datasets``."""
    return os.path.expanduser(cache_dir or os.environ.get("DRL_DATA_DIR") or "~/.cache/diffusion-rl/datasets")


def d4rl_dir(cache_dir: str | None = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get("D4RL_DATASET_DIR") or "~/.d4rl/datasets")


def split_name(name: str) -> tuple[str, str]:
    """``"generated:pendulum-medium"`` -> ``("generated", "pendulum-medium")``; ValueError if malformed."""
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(f"dataset {name!r}: expected <kind>:<value> with kind one of {', '.join(KINDS)} "
                         f"(e.g. generated:pendulum-medium)")
    kind, value = name.split(":", 1)
    if kind not in KINDS:
        raise ValueError(f"dataset {name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if not value.strip():
        raise ValueError(f"dataset {name!r}: nothing after '{kind}:'")
    return kind, value.strip()


def d4rl_path(value: str, cache_dir: str | None = None) -> str:
    """Resolve ``d4rl:<value>`` to a file; FileNotFoundError saying how to provide it if absent."""
    if value.endswith((".hdf5", ".h5")) or "/" in value or os.sep in value:
        path = os.path.expanduser(value)
        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset d4rl:{value}: no such file {path}")
        return path
    root = d4rl_dir(cache_dir)
    env, _, rest = value.partition("-")
    candidates = [os.path.join(root, value + ".hdf5")]
    if rest:  # d4rl saves downloads under the URL's name: halfcheetah_medium-v2.hdf5
        candidates.append(os.path.join(root, f"{env}_{rest}.hdf5"))
    for path in candidates:
        if os.path.exists(path):
            return path
    from platform.datasets.generate import ENVS, QUALITIES

    quality = rest.rsplit("-v", 1)[0] if rest else ""
    hint = ""
    if env in ENVS and quality in QUALITIES:
        hint = (f" or use a D4RL-style dataset made here: dataset: generated:{env}-{quality} after "
                f"`python -m platform.datasets.generate {env} {quality}`")
    raise FileNotFoundError(
        f"dataset d4rl:{value}: not found at {' or '.join(candidates)}. This machine cannot download it: copy the "
        f"D4RL file there (or set D4RL_DATASET_DIR / give d4rl:<path.hdf5>){hint}")


def generated_path(value: str, cache_dir: str | None = None) -> str:
    from platform.datasets.generate import parse_name

    env, quality = parse_name(value)
    return os.path.join(data_dir(cache_dir), f"{env}-{quality}.hdf5")


def check_dataset(name: str, cache_dir: str | None = None, validate: bool = True) -> str:
    """Pre-flight check before any training (nothing generated): returns the evaluation env id.

    HDF5 files (``d4rl:`` and existing ``generated:`` ones) are read and validated in full (missing
    arrays, shapes, row counts, NaN/inf), and a Push-T store's arrays are read, so a bad file fails here,
    in seconds, rather than in every Ray worker (``validate=False``: resolve the env id only).
    Raises ValueError (``DatasetError``) / FileNotFoundError / ImportError, one message naming the file.
    """
    from platform.datasets import generate

    kind, value = split_name(name)
    if kind == "d4rl":
        from platform.datasets.d4rl import read_arrays, read_env_id

        path = d4rl_path(value, cache_dir)
        if validate:
            read_arrays(path)
        return read_env_id(path)
    if kind == "generated":
        env, quality = generate.parse_name(value)
        path = generated_path(value, cache_dir)
        if not os.path.exists(path) and not generate.is_cheap(env, quality):
            raise FileNotFoundError(f"dataset {name!r} is not generated yet: {generate.missing_message(env, quality, path)}")
        if validate and os.path.exists(path):
            from platform.datasets.d4rl import read_arrays

            read_arrays(path)
        return generate.ENVS[env]["env_id"]
    if kind == "pusht":
        from platform.datasets.pusht import read_pusht_zarr

        path = os.path.expanduser(value)
        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset {name!r}: no Push-T zarr store at {path}")
        if validate:
            read_pusht_zarr(path)  # not a zarr store, missing arrays, wrong shapes
        return "pusht"
    if kind in ROBOTICS_KINDS:  # robomimic:, scripted:, kitchen:, antmaze:, adroit: (platform/datasets/robotics.py)
        from platform.datasets import robotics

        return robotics.check(kind, value, cache_dir)
    from platform.datasets.minari import minari_env_id

    return minari_env_id(value)


def dataset_env_id(name: str, cache_dir: str | None = None) -> str:
    """The evaluation env id of a dataset name, or "" if it cannot be resolved."""
    try:
        return check_dataset(name, cache_dir, validate=False)
    except (ValueError, FileNotFoundError, ImportError, KeyError, OSError):
        return ""


def ensure_dataset(name: str, cache_dir: str | None = None) -> None:
    """Make a missing ``generated:`` dataset now if that is cheap (Pendulum, ``random``, a shipped behaviour
    policy): a sweep calls this before its trials start, so they do not each wait on it."""
    from platform.datasets import generate

    kind, value = split_name(name)
    if kind != "generated":
        return
    env, quality = generate.parse_name(value)
    path = generated_path(value, cache_dir)
    if not os.path.exists(path) and generate.is_cheap(env, quality):
        if not generate.ENVS[env]["cheap"]:
            print(f"[data] {name} is not in {os.path.dirname(path)} yet: collecting it from "
                  f"{'a random policy' if quality == 'random' else 'the shipped behaviour policy'} (minutes)",
                  flush=True)
        generate.generate(env, quality, path)


def load_dataset(name: str, cache_dir: str | None = None, allow_generate: bool | None = None) -> OfflineDataset:
    """Resolve a study's ``dataset:`` name to an ``OfflineDataset``.

    ``cache_dir``: directory of ``generated:`` (and ``d4rl:<name>``) files, see the module doc.
    ``allow_generate``: None generates missing cheap datasets only (Pendulum, MuJoCo ``random`` and the
    qualities with a shipped behaviour policy: seconds to minutes); True also the others (SAC training,
    hours); False never generates.
    """
    kind, value = split_name(name)
    if kind == "d4rl":
        from platform.datasets.d4rl import load_d4rl

        return load_d4rl(d4rl_path(value, cache_dir))
    if kind == "generated":
        from platform.datasets import generate
        from platform.datasets.d4rl import load_d4rl

        env, quality = generate.parse_name(value)
        path = generated_path(value, cache_dir)
        if not os.path.exists(path):
            if allow_generate is False or (allow_generate is None and not generate.is_cheap(env, quality)):
                raise FileNotFoundError(f"dataset {name!r} is not generated yet: "
                                        f"{generate.missing_message(env, quality, path)}")
            generate.generate(env, quality, path)
        data = load_d4rl(path)
        data.name = f"generated:{env}-{quality}"
        return data
    if kind == "pusht":
        from platform.datasets.pusht import load_pusht

        return load_pusht(os.path.expanduser(value))
    if kind in ROBOTICS_KINDS:
        from platform.datasets import robotics

        return robotics.load(kind, value, cache_dir, allow_generate)
    from platform.datasets.minari import load_minari

    return load_minari(value)


__all__ = ["OfflineDataset", "load_dataset", "ensure_dataset", "check_dataset", "dataset_env_id", "data_dir", "d4rl_dir",
           "split_name", "d4rl_path", "generated_path"]
