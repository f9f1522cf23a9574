"""``toy:<task>`` datasets: samples of the toy tasks of ``platform/envs/toy_tasks.py`` (their modes, rewards and
metrics live with the envs), made in memory in milliseconds from the fixed seed ``SEED``."""
from __future__ import annotations

import numpy as np

from platform.envs.toy_tasks import SEED, TASKS, ToyTask


def task(value: str) -> ToyTask:
    if value not in TASKS:
        raise ValueError(f"dataset toy:{value}: unknown toy task; use one of {', '.join('toy:' + k for k in TASKS)}")
    return TASKS[value]


def check_toy(value: str, cache_dir=None, validate: bool = True) -> str:
    return task(value).env_id


def load_toy(value: str, cache_dir=None, allow_generate=None):
    """The ``toy:<task>`` dataset: every transition a one-step episode (terminal), from seed ``SEED``."""
    from platform.datasets.base import OfflineDataset

    t = task(value)
    rng = np.random.default_rng(SEED)
    per_mode = t.n_samples // (t.n_states * t.n_modes)
    obs, acts, rews = [], [], []
    for s in range(t.n_states):
        a, mode = t.sample_modes(per_mode, rng, s)
        if t.reward_std > 0:  # the bandit: noisy rewards around the corner's mean, as the paper draws them
            r = t.mode_rewards[mode] + t.reward_std * rng.standard_normal(len(a))
        else:                 # the modes tasks: the env's reward (1 on the support)
            r = t.reward(a, np.full(len(a), s))
        obs.append(np.repeat(t.observation(s)[None], len(a), axis=0))
        acts.append(a)
        rews.append(r)
    obs, acts, rews = np.concatenate(obs), np.concatenate(acts), np.concatenate(rews)
    n = len(obs)
    lo, hi = t.ref_scores
    return OfflineDataset(observations=obs, actions=acts, rewards=rews, next_observations=obs,
                          terminals=np.ones(n), timeouts=np.zeros(n), episode_ends=np.arange(1, n + 1),
                          env_id=t.env_id, ref_min_score=lo, ref_max_score=hi, name=f"toy:{t.name}",
                          act_low=(-1.0, -1.0), act_high=(1.0, 1.0),
                          attrs={"seed": SEED, "std": t.std, "centres": t.centres.tolist(),
                                 "mode_rewards": t.mode_rewards.tolist()})
