"""The dataset type every loader returns, and the naming rules every loader shares (no loader imports
``platform.datasets`` itself: the package's ``__init__`` is the facade on top of them)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from algorithms import EnvSpec


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
        """Dims, the env's action bounds and the per-dimension obs/action ranges (``obs_range``/``act_range`` when
        set, else the data's)."""
        def tup(a):
            return tuple(float(x) for x in a)

        obs_low, obs_high = self.obs_range or (self.observations.min(0), self.observations.max(0))
        act_min, act_max = self.act_range or (self.actions.min(0), self.actions.max(0))
        return EnvSpec(obs_dim=self.observations.shape[1], act_dim=self.actions.shape[1],
                       act_low=tup(self.act_low) if self.act_low is not None else (),
                       act_high=tup(self.act_high) if self.act_high is not None else (),
                       obs_low=tup(obs_low), obs_high=tup(obs_high), act_min=tup(act_min), act_max=tup(act_max))

    def episode_returns(self) -> np.ndarray:
        """Sum of rewards of each episode, ``(E,)``."""
        return np.add.reduceat(self.rewards.astype(np.float64), np.concatenate([[0], self.episode_ends[:-1]]))


def data_dir(cache_dir: str | None = None) -> str:
    """Where ``generated:`` datasets are cached: ``cache_dir``, ``$DRL_DATA_DIR``, ``~/.cache/diffusion-rl/datasets``."""
    return os.path.expanduser(cache_dir or os.environ.get("DRL_DATA_DIR") or "~/.cache/diffusion-rl/datasets")


def d4rl_dir(cache_dir: str | None = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get("D4RL_DATASET_DIR") or "~/.d4rl/datasets")
