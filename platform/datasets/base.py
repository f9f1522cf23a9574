"""The dataset type every loader returns, and the naming rules every loader shares (no loader imports
``platform.datasets`` itself: the package's ``__init__`` is the facade on top of them)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from algorithms import EnvSpec


# ``ref_min_score, ref_max_score`` of a task without reference returns: eval/normalized_score is NaN, said so
NO_REFERENCE = (None, None)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(x) for x in np.atleast_1d(np.asarray(values, dtype=np.float64)))


@dataclass
class OfflineDataset:
    """N transitions from E episodes in D4RL's ``qlearning_dataset`` layout (flat numpy arrays).

    ``observations (N, obs_dim)``, ``actions (N, act_dim)``, ``next_observations (N, obs_dim)``,
    ``rewards (N,)`` float32; ``terminals (N,)`` float32, 1 at true terminations only;
    ``timeouts (N,)`` float32, 1 at the last transition of an episode that ended without terminating
    (time limit or end of data); ``episode_ends (E,)`` int64, exclusive end index of each episode in
    the flat arrays (episode e is rows ``episode_ends[e-1]:episode_ends[e]``), for sequence models.
    ``env_id``: the gymnasium id to evaluate in.  Every loader states the rest, none has a default:

    * ``act_low``/``act_high`` ``(act_dim,)``: the env's action box, from the source's own definition or file,
      else read off the env once (``env_action_box``); a source that knows neither fails to load.
    * ``ref_min_score``/``ref_max_score``: the random and expert reference returns of ``eval/normalized_score``
      (``platform/datasets/scores.py`` holds the known ones), or both ``None``: the documented *no reference*
      state (``NO_REFERENCE``) of a task nobody measured: its runs report ``eval/normalized_score`` NaN next to the
      raw ``eval/return_mean``, and the report's budget table says "no reference" for them.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_ends: np.ndarray
    env_id: str
    act_low: tuple[float, ...]
    act_high: tuple[float, ...]
    ref_min_score: float | None
    ref_max_score: float | None
    name: str = ""
    attrs: dict = field(default_factory=dict)  # file metadata (generator settings etc.)
    # The source's ranges and actions when a reference implementation fits on more than the training rows
    # (Push-T: the paper's normalizer and BeT's k-means use all 206 episodes, training uses 90); None: the data's.
    obs_range: tuple | None = None   # (low (obs_dim,), high (obs_dim,))
    act_range: tuple | None = None   # (min (act_dim,), max (act_dim,))
    all_actions: np.ndarray | None = None

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
        act_dim = self.actions.shape[1]
        self.act_low, self.act_high = _floats(self.act_low), _floats(self.act_high)
        if len(self.act_low) != act_dim or len(self.act_high) != act_dim:
            raise ValueError(f"{label}: act_low/act_high must have act_dim={act_dim} values, got "
                             f"{self.act_low} / {self.act_high}")
        if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in zip(self.act_low, self.act_high)):
            raise ValueError(f"{label}: action box must be finite with low < high, got {self.act_low} / {self.act_high}")
        ref = (self.ref_min_score, self.ref_max_score)
        if ref != NO_REFERENCE:
            if None in ref or not all(math.isfinite(float(x)) for x in ref) or ref[0] == ref[1]:
                raise ValueError(f"{label}: reference returns must be two different finite numbers, or both None "
                                 f"(no reference), got {ref}")
            self.ref_min_score, self.ref_max_score = float(ref[0]), float(ref[1])
        ends = self.episode_ends
        if ends.ndim != 1 or (n and (len(ends) == 0 or ends[-1] != n or ends[0] <= 0 or np.any(np.diff(ends) <= 0))):
            raise ValueError(f"{label}: episode_ends must be increasing exclusive ends finishing at N={n}, "
                             f"got {ends[:5]}...{ends[-3:]}")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def has_reference(self) -> bool:
        """Whether ``eval/normalized_score`` is defined for this data (``NO_REFERENCE`` otherwise)."""
        return (self.ref_min_score, self.ref_max_score) != NO_REFERENCE

    def env_spec(self) -> EnvSpec:
        """Dims, the env's action bounds and the per-dimension obs/action ranges (``obs_range``/``act_range`` when
        set, else the data's)."""
        def tup(a):
            return tuple(float(x) for x in a)

        obs_low, obs_high = self.obs_range or (self.observations.min(0), self.observations.max(0))
        act_min, act_max = self.act_range or (self.actions.min(0), self.actions.max(0))
        return EnvSpec(obs_dim=self.observations.shape[1], act_dim=self.actions.shape[1],
                       act_low=self.act_low, act_high=self.act_high,
                       obs_low=tup(obs_low), obs_high=tup(obs_high), act_min=tup(act_min), act_max=tup(act_max))

    def episode_returns(self) -> np.ndarray:
        """Sum of rewards of each episode, ``(E,)``."""
        return np.add.reduceat(self.rewards.astype(np.float64), np.concatenate([[0], self.episode_ends[:-1]]))


def data_dir(cache_dir: str | None = None) -> str:
    """Where ``generated:`` datasets are cached: ``cache_dir``, ``$DRL_DATA_DIR``, ``~/.cache/diffusion-rl/datasets``."""
    return os.path.expanduser(cache_dir or os.environ.get("DRL_DATA_DIR") or "~/.cache/diffusion-rl/datasets")


def d4rl_dir(cache_dir: str | None = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get("D4RL_DATASET_DIR") or "~/.d4rl/datasets")


def env_action_box(env_id: str) -> tuple[tuple[float, ...], tuple[float, ...], int | None]:
    """``(act_low, act_high, max_episode_steps)`` read off the gymnasium env itself: the one place a loader looks
    the action box up when its source does not state it.  ValueError naming the env and why if it cannot be made
    here (unknown id, simulator not installed) or its action space is not a finite box."""
    try:
        import gymnasium as gym

        env = gym.make(env_id)
        space, limit = env.action_space, env.spec.max_episode_steps if env.spec else None
        env.close()
    except Exception as e:  # unknown id or missing simulator
        raise ValueError(f"env {env_id!r} cannot be made here to read its action box "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"env {env_id!r}: its action space {space} is not a finite box")
    return _floats(np.ravel(low)), _floats(np.ravel(high)), limit
