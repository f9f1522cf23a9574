"""Toy tasks with a known multimodal behaviour distribution: their true mixtures, rewards and the mode metrics of
a set of actions (numpy only).  The ``toy:<task>`` datasets sampled from them are ``platform/datasets/toy.py``'s
(made in memory in milliseconds from a fixed seed); the evaluation envs are ``platform/envs/toy.py``'s.

* ``toy:bandit``: the offline bandit of the Diffusion-QL paper (Wang et al., ICLR 2023, Figure 1; its public
  code's ``run_toy_ql.py``, values only): state ``zeros(2)``, 2-D actions from 4 Gaussian corners at
  (+-0.8, +-0.8) with std 0.05, clipped to [-1, 1], 10,000 samples (2,500 per corner); rewards per corner
  N(3, 0.5) left-up, N(0, 0.5) left-bottom, N(1.5, 0.5) right-up, N(5, 0.5) right-bottom.
* ``toy:modes8``: behaviour cloning with 8 modes on a circle of radius 0.7, std 0.05, constant state ``zeros(2)``.
* ``toy:modes-state``: the modes depend on the state: 4 discrete states (one-hot), each with 2 opposite modes on
  the same circle, turned by 45 degrees from one state to the next (8 distinct modes in all).

Every transition is a one-step episode (``terminals`` 1), so a critic learns the reward alone (no bootstrap).
The evaluation env of each task (``platform/envs/toy.py``) pays, for an action, the expected reward of the mode
whose support (within ``SUPPORT_STDS`` std of its centre) holds it, and 0 off the support; the modes tasks pay 1
on the support (their data's rewards are the same function), so ``eval/normalized_score`` is 100 x the expected
reward over the best mode's (bandit) or 100 x the share of actions on the support (modes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

SEED = 0                 # the datasets' fixed seed
SUPPORT_STDS = 3.0       # a mode's support: within this many std of its centre
COVER_FRACTION = 0.25    # a mode is covered when it holds >= COVER_FRACTION / M of a state's samples
MMD_BANDWIDTH = 0.1      # Gaussian kernel width of eval/mmd (2 std of a mode)
MMD_REFERENCE = 500      # samples of the true mixture that eval/mmd compares with (per state)
SAMPLE_ACTIONS = 100     # evaluated actions kept per evaluation (eval/actions_sample, JSON) for the report


@dataclass(frozen=True)
class ToyTask:
    name: str
    env_id: str
    centres: np.ndarray       # (S, M, 2): the mode centres of each of the S discrete states
    std: float
    mode_rewards: np.ndarray  # (M,): the expected reward of each mode (same for every state)
    reward_std: float         # the data's reward noise around it
    n_samples: int            # transitions in the dataset (spread evenly over states and modes)
    obs_dim: int

    @property
    def n_states(self) -> int:
        return self.centres.shape[0]

    @property
    def n_modes(self) -> int:
        return self.centres.shape[1]

    @property
    def radius(self) -> float:
        return SUPPORT_STDS * self.std

    @property
    def ref_scores(self) -> tuple[float, float]:
        return 0.0, float(self.mode_rewards.max())

    def observation(self, state: int) -> np.ndarray:
        """The observation of discrete state ``state``: zeros(2) for one state, else one-hot."""
        obs = np.zeros(self.obs_dim, dtype=np.float32)
        if self.n_states > 1:
            obs[state] = 1.0
        return obs

    def state_of(self, obs: np.ndarray) -> np.ndarray:
        """Discrete state of each observation ``(N, obs_dim) -> (N,)``."""
        obs = np.atleast_2d(np.asarray(obs))
        return np.zeros(len(obs), dtype=np.int64) if self.n_states == 1 else obs.argmax(-1).astype(np.int64)

    def mode_of(self, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Index of the mode whose support holds each action, -1 off every support ``(N,)``."""
        actions = np.atleast_2d(np.asarray(actions, dtype=np.float64))
        c = self.centres[np.asarray(states, dtype=np.int64)]                  # (N, M, 2)
        d = np.linalg.norm(actions[:, None, :] - c, axis=-1)                  # (N, M)
        near = d.argmin(-1)
        return np.where(d[np.arange(len(d)), near] <= self.radius, near, -1)

    def reward(self, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
        """The env's reward: the expected reward of the mode holding the action, 0 off the support."""
        mode = self.mode_of(actions, states)
        return np.where(mode >= 0, self.mode_rewards[np.maximum(mode, 0)], 0.0)

    def sample_modes(self, n_per_mode: int, rng: np.random.Generator, state: int) -> tuple[np.ndarray, np.ndarray]:
        """``n_per_mode`` actions of each mode of ``state`` (clipped to [-1, 1]) and their mode indices."""
        c = self.centres[state]
        a = np.repeat(c, n_per_mode, axis=0) + self.std * rng.standard_normal((len(c) * n_per_mode, 2))
        return np.clip(a, -1.0, 1.0), np.repeat(np.arange(len(c)), n_per_mode)


def _circle(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


TASKS: dict[str, ToyTask] = {
    "bandit": ToyTask("bandit", "ToyBandit-v0",
                      # left-up, left-bottom, right-up, right-bottom, in the paper's order
                      centres=np.array([[[-0.8, 0.8], [-0.8, -0.8], [0.8, 0.8], [0.8, -0.8]]]), std=0.05,
                      mode_rewards=np.array([3.0, 0.0, 1.5, 5.0]), reward_std=0.5, n_samples=10_000, obs_dim=2),
    "modes8": ToyTask("modes8", "ToyModes8-v0", centres=_circle(8, 0.7)[None], std=0.05,
                      mode_rewards=np.ones(8), reward_std=0.0, n_samples=10_000, obs_dim=2),
    "modes-state": ToyTask("modes-state", "ToyModesState-v0",
                           centres=np.stack([_circle(2, 0.7, s * np.pi / 4) for s in range(4)]), std=0.05,
                           mode_rewards=np.ones(2), reward_std=0.0, n_samples=10_000, obs_dim=4),
}
ENV_TASKS = {t.env_id: t for t in TASKS.values()}


# ----------------------------------------------------------------------------- metrics of evaluated actions


def reference_sample(t: ToyTask, state: int, n: int = MMD_REFERENCE) -> np.ndarray:
    """A fixed sample of the true mixture of ``state`` (equal weights), the same at every call."""
    rng = np.random.default_rng([SEED, 1, state])
    a, _ = t.sample_modes(int(np.ceil(n / t.n_modes)), rng, state)
    return a[rng.permutation(len(a))[:n]]


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float = MMD_BANDWIDTH) -> float:
    """Gaussian-kernel MMD between two samples (the square root of the biased estimate of MMD^2)."""
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * bandwidth ** 2))

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m2 = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    return float(np.sqrt(max(m2, 0.0)))


def mode_metrics(t: ToyTask, actions: np.ndarray, observations: np.ndarray) -> dict:
    """The mode metrics of evaluated actions ``(N, 2)`` taken at ``observations (N, obs_dim)``.

    ``eval/modes_covered``: share of the modes (averaged over the states seen) that hold at least
    ``COVER_FRACTION / M`` of that state's actions within their support; ``eval/off_support``: share of actions
    within no mode's support; ``eval/mmd``: Gaussian-kernel MMD to a fixed sample of the true mixture (per state,
    weighted by its actions); bandit: ``eval/best_mode_share``, share of actions on the best corner.
    """
    actions = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
    states = t.state_of(observations)
    mode = t.mode_of(actions, states)
    covered, dist, weights = [], [], []
    for s in np.unique(states):
        here = states == s
        counts = np.bincount(mode[here][mode[here] >= 0], minlength=t.n_modes)
        covered.append(np.mean(counts >= COVER_FRACTION * here.sum() / t.n_modes))
        dist.append(mmd(actions[here], reference_sample(t, int(s))))
        weights.append(here.sum())
    out = {"eval/modes_covered": float(np.average(covered, weights=weights)),
           "eval/off_support": float(np.mean(mode < 0)),
           "eval/mmd": float(np.average(dist, weights=weights))}
    if t.reward_std > 0:
        out["eval/best_mode_share"] = float(np.mean(mode == int(t.mode_rewards.argmax())))
    return out


def actions_sample(actions: np.ndarray, observations: np.ndarray, t: ToyTask, n: int = SAMPLE_ACTIONS) -> str:
    """The first ``n`` evaluated actions as compact JSON ``[[x, y, state], ...]`` (the report's scatter)."""
    actions = np.asarray(actions, dtype=np.float64).reshape(-1, 2)[:n]
    states = t.state_of(observations)[:n]
    return json.dumps([[round(float(x), 3), round(float(y), 3), int(s)] for (x, y), s in zip(actions, states)],
                      separators=(",", ":"))
