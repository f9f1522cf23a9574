"""The toy tasks' evaluation envs (``ToyBandit-v0``, ``ToyModes8-v0``, ``ToyModesState-v0``): one-step episodes.

``reset(seed)`` gives the state (``zeros(2)`` for the one-state tasks; ``toy:modes-state``: one of 4 one-hot states,
drawn from the seed); ``step(action)`` pays the expected reward of the mode whose support holds the action
(``platform/envs/toy_tasks.py``: within 3 std of its centre), 0 off the support, and ends the episode.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from platform.envs.toy_tasks import TASKS


class ToyEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, task: str):
        self.task = TASKS[task]
        t = self.task
        self.observation_space = gym.spaces.Box(0.0, 1.0, (t.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.state = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = int(self.np_random.integers(self.task.n_states))
        return self.task.observation(self.state), {"state": self.state}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(1, 2)
        mode = int(self.task.mode_of(action, [self.state])[0])
        reward = float(self.task.reward(action, [self.state])[0])
        return self.task.observation(self.state), reward, True, False, {"state": self.state, "mode": mode}


def register() -> None:
    for name, t in TASKS.items():
        if t.env_id not in gym.registry:
            gym.register(t.env_id, entry_point=ToyEnv, kwargs={"task": name}, max_episode_steps=1)
