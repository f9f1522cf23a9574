"""The papers' robot benchmarks as flat-observation gymnasium envs, by the platform's env ids.

Every env here returns ``float64`` Box observations, takes Box actions, and sets
``info["is_success"]`` (what ``platform/evaluation.py`` counts as ``eval/success_rate``).

======================================  ===================================================================
platform id                             what it is
======================================  ===================================================================
``kitchen-complete`` / ``-partial``     gymnasium-robotics ``FrankaKitchen-v1`` with D4RL's task sets
/ ``-mixed`` / ``-all``                 (complete: microwave, kettle, light switch, slide cabinet;
                                        partial/mixed: microwave, kettle, bottom burner, light switch);
                                        obs = ``obs["observation"]`` (59: robot qpos 9, qvel 9, objects
                                        qpos 21, qvel 20); reward = tasks completed this step, so the
                                        return counts completed tasks (D4RL normalizes by 4); 280 steps;
                                        success = all tasks of the set done (Diffusion Policy's p4).
``antmaze-umaze`` / ``-medium`` /       ``AntMaze_*-v4`` with D4RL's fixed start and goal cells; obs =
``-large``                              achieved_goal (x, y) + desired_goal (2) + observation (27), the
                                        ``FlattenObservation`` order; sparse reward 1 within 0.45 of the
                                        goal, which ends the episode (``continuing_task=False``), so the
                                        return is the success (D4RL's antmaze normalization is 0..1);
                                        700 / 1000 / 1000 steps as D4RL.
``pen``                                 ``AdroitHandPen-v1`` (45-d obs, 24-d action), 100 steps as D4RL's
                                        ``pen-*`` tasks; success from the env.
``robosuite:Lift``,                     robosuite 1.5 Panda with the default OSC controller, robomimic's
``robosuite:PickPlaceCan`` (``lift``,   low-dim observation (``object``, ``robot0_eef_pos``,
``can``)                                ``robot0_eef_quat``, ``robot0_gripper_qpos``, Diffusion Policy's
                                        order), sparse reward 1 on success, which ends the episode;
                                        400 steps (Diffusion Policy's robomimic ``max_steps``).
``blockpush``                           the IBC Block Pushing task (``platform/envs/blockpush.py``).
======================================  ===================================================================

MuJoCo 4 needs two patches for gymnasium-robotics and robosuite (``platform/envs/compat.py``);
they are applied here before any of those envs is made.
"""
from __future__ import annotations

import numpy as np
import gymnasium as gym

KITCHEN_TASKS = {
    "complete": ["microwave", "kettle", "light switch", "slide cabinet"],
    "partial": ["microwave", "kettle", "bottom burner", "light switch"],
    "mixed": ["microwave", "kettle", "bottom burner", "light switch"],
    "all": ["microwave", "kettle", "bottom burner", "top burner", "light switch", "slide cabinet", "hinge cabinet"],
}
KITCHEN_MAX_STEPS = 280  # D4RL kitchen and FrankaKitchen-v1

# D4RL's mazes: 'r' start cell, 'g' goal cell (d4rl/locomotion/maze_env.py U_MAZE, BIG_MAZE, HARDEST_MAZE)
_R, _G = "r", "g"
ANTMAZE_MAPS = {
    "umaze": [[1, 1, 1, 1, 1],
              [1, _R, 0, 0, 1],
              [1, 1, 1, 0, 1],
              [1, _G, 0, 0, 1],
              [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1],
               [1, _R, 0, 1, 1, 0, 0, 1],
               [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1],
               [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, _G, 1],
               [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
              [1, _R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
              [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
              [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
              [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, _G, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}
ANTMAZE_MAX_STEPS = {"umaze": 700, "medium": 1000, "large": 1000}
PEN_MAX_STEPS = 100  # D4RL pen-v0/v1 tasks
ROBOSUITE_TASKS = {"lift": "Lift", "can": "PickPlaceCan"}
ROBOMIMIC_LOWDIM_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
ROBOSUITE_MAX_STEPS = 400  # Diffusion Policy's robomimic env_runner max_steps for Lift and Can


def _register_gymnasium_robotics() -> None:
    import gymnasium_robotics

    from platform.envs.compat import patch_gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    patch_gymnasium_robotics()


class KitchenWrapper(gym.Wrapper):
    """``FrankaKitchen-v1`` -> 59-d Box obs; ``info["is_success"]`` once every task is done."""

    def __init__(self, env: gym.Env, n_tasks: int):
        super().__init__(env)
        self.n_tasks = n_tasks
        self.observation_space = env.observation_space["observation"]
        self._done_tasks = 0

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._done_tasks = 0
        info["is_success"], info["tasks_completed"] = False, 0
        return obs["observation"], info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float64))
        self._done_tasks += int(round(reward))
        info["tasks_completed"] = self._done_tasks
        info["is_success"] = self._done_tasks >= self.n_tasks
        return obs["observation"], float(reward), bool(terminated), bool(truncated), info


class SuccessInfoWrapper(gym.Wrapper):
    """Copies gymnasium-robotics' ``info["success"]`` to ``info["is_success"]``."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["is_success"] = bool(info.get("success", False))
        return obs, reward, terminated, truncated, info


def make_kitchen_env(tasks: str = "complete", max_episode_steps: int = KITCHEN_MAX_STEPS, **kwargs) -> gym.Env:
    if tasks not in KITCHEN_TASKS:
        raise ValueError(f"kitchen task set {tasks!r}: use one of {', '.join(KITCHEN_TASKS)}")
    _register_gymnasium_robotics()
    env = gym.make("FrankaKitchen-v1", tasks_to_complete=KITCHEN_TASKS[tasks], max_episode_steps=max_episode_steps,
                   **kwargs)
    return KitchenWrapper(env, len(KITCHEN_TASKS[tasks]))


def make_antmaze_env(maze: str = "umaze", max_episode_steps: int | None = None, **kwargs) -> gym.Env:
    if maze not in ANTMAZE_MAPS:
        raise ValueError(f"antmaze maze {maze!r}: use one of {', '.join(ANTMAZE_MAPS)}")
    _register_gymnasium_robotics()
    env_id = {"umaze": "AntMaze_UMaze-v4", "medium": "AntMaze_Medium-v4", "large": "AntMaze_Large-v4"}[maze]
    env = gym.make(env_id, maze_map=ANTMAZE_MAPS[maze], continuing_task=False, reward_type="sparse",
                   max_episode_steps=max_episode_steps or ANTMAZE_MAX_STEPS[maze], **kwargs)
    return gym.wrappers.FlattenObservation(SuccessInfoWrapper(env))


def make_pen_env(max_episode_steps: int = PEN_MAX_STEPS, **kwargs) -> gym.Env:
    _register_gymnasium_robotics()
    return SuccessInfoWrapper(gym.make("AdroitHandPen-v1", max_episode_steps=max_episode_steps, **kwargs))


class RobosuiteEnv(gym.Env):
    """A robosuite task as a gymnasium env with robomimic's low-dim observation (see module doc).

    obs ``(obs_dim,)`` float64: ``object-state`` then eef pos (3), eef quat (4), gripper qpos (2);
    action ``(7,)`` in [-1, 1]: OSC_POSE delta (xyz, axis-angle) and gripper (-1 open, 1 close).
    ``reset(seed=s)`` reseeds the RNG robosuite's object placement draws from: the env's ``rng`` Generator
    (robosuite >= 1.5, shared with its placement sampler, so it is reseeded in place) and numpy's global RNG
    (older versions).
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str = "Lift", horizon: int = ROBOSUITE_MAX_STEPS, **kwargs):
        import robosuite

        from platform.envs.compat import patch_robosuite

        patch_robosuite()
        self.task = task
        self._env = robosuite.make(task, robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                                   use_camera_obs=False, reward_shaping=False, control_freq=20,
                                   horizon=horizon, ignore_done=True, **kwargs)
        self.horizon = horizon
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        obs = self._flat(self._env.reset())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=obs.shape, dtype=np.float64)
        self._t = 0

    @staticmethod
    def lowdim(obs: dict) -> dict:
        """robosuite observation dict -> robomimic's low-dim keys."""
        return {"object": obs["object-state"], **{k: obs[k] for k in ROBOMIMIC_LOWDIM_KEYS[1:]}}

    def _flat(self, obs: dict) -> np.ndarray:
        low = self.lowdim(obs)
        return np.concatenate([np.asarray(low[k], dtype=np.float64).ravel() for k in ROBOMIMIC_LOWDIM_KEYS])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            np.random.seed(seed % 2**32)
            rng = getattr(self._env, "rng", None)
            if isinstance(rng, np.random.Generator):  # in place: the placement sampler holds this object
                rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._t = 0
        return self._flat(self._env.reset()), {"is_success": False}

    def step(self, action):
        obs, _, _, _ = self._env.step(np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0))
        self._t += 1
        success = bool(self._env._check_success())
        return self._flat(obs), float(success), success, self._t >= self.horizon, {"is_success": success}

    @property
    def sim(self):
        return self._env.sim

    @property
    def raw(self):
        """The robosuite environment (for scripted demonstrations)."""
        return self._env

    def close(self):
        self._env.close()


def robotics_ids() -> list[str]:
    return ([f"kitchen-{t}" for t in KITCHEN_TASKS] + [f"antmaze-{m}" for m in ANTMAZE_MAPS] + ["pen"]
            + [f"robosuite:{t}" for t in ROBOSUITE_TASKS.values()] + list(ROBOSUITE_TASKS) + ["blockpush"])


def is_robotics_id(env_id: str) -> bool:
    return env_id in robotics_ids()


def make_robotics_env(env_id: str, **kwargs) -> gym.Env:
    """Build one of ``robotics_ids()``; ImportError names the extra to install if a simulator is missing."""
    family, _, rest = env_id.partition("-")
    try:
        if family == "kitchen":
            return make_kitchen_env(rest, **kwargs)
        if family == "antmaze":
            return make_antmaze_env(rest, **kwargs)
        if env_id == "pen":
            return make_pen_env(**kwargs)
        if env_id == "blockpush":
            from platform.envs.blockpush import BlockPushEnv

            return BlockPushEnv(**kwargs)
        task = ROBOSUITE_TASKS.get(env_id) or env_id.partition(":")[2]
        if task in ROBOSUITE_TASKS.values():
            return RobosuiteEnv(task, **kwargs)
    except ModuleNotFoundError as e:
        raise ImportError(f"environment {env_id!r} needs {e.name}: pip install \".[robotics]\"") from None
    raise ValueError(f"unknown robotics environment {env_id!r}; known: {', '.join(robotics_ids())}")


__all__ = ["make_robotics_env", "is_robotics_id", "robotics_ids", "KITCHEN_TASKS", "ANTMAZE_MAPS",
           "ROBOMIMIC_LOWDIM_KEYS", "RobosuiteEnv"]
