"""Low-dimensional Push-T, as the Diffusion Policy paper evaluates it, on top of ``gym_pusht``.

``make_pusht_env()`` wraps ``gym_pusht/PushT-v0`` (``obs_type="state"``: agent x, y, block x, y,
block angle; same physics, PD controller, goal and reward as the paper's ``PushTEnv``) so that:

* the observation is the paper's 20-d low-dim observation: 9 block keypoints (x, y) then the agent
  x, y, exactly like ``PushTKeypointsEnv`` (first 20 entries) and the training data
  (``concat(keypoint.reshape(18), state[:2])``);
* reward = ``clip(coverage / 0.95, 0, 1)``, ``terminated`` when coverage > 0.95 (both from gym_pusht,
  identical to the paper's env), ``truncated`` after 300 steps (the paper's ``max_steps``),
  ``info["is_success"]`` and ``info["coverage"]``;
* ``reset(seed=s)`` draws the initial state like the paper's env (``np.random.RandomState(s)``:
  agent and block positions from ``randint``, angle ``randn() * 2 pi - pi``, set in the "legacy"
  order its test envs use), so seed 100000 + i is the paper's i-th test initial condition.
  gym_pusht's own distribution (PCG64, uniform angle) is available with ``dp_initial_states=False``;
* ``reset(options={"reset_to_state": state})`` puts the env exactly in a dataset state (agent x, y,
  block x, y, angle as recorded).  gym_pusht's own ``reset_to_state`` sets the block position
  before its angle (the paper's "legacy" order), and with pymunk 6 a rotation pivots about the
  block's centre of gravity, which moves the block by up to ~90 px; this wrapper pre-compensates.

The keypoints: the paper's ``PymunkKeypointManager.create_from_pusht_env`` draws the T with pygame,
runs farthest-point sampling (9 points, ``default_rng(0)``) over its pixels in the block's frame and
adds a uniform(0, 1) shift; world keypoints are ``R(angle) @ local + block.position``.  Re-running
that procedure here gives ``BLOCK_KEYPOINTS_LOCAL`` below; it reproduces the dataset's stored
keypoints from its stored states to float32 precision (see tests/test_pusht.py).
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # gym_pusht imports pygame, which prints a banner

import gymnasium as gym  # noqa: E402

MAX_EPISODE_STEPS = 300  # paper: env_runner.max_steps
SUCCESS_COVERAGE = 0.95  # paper / gym_pusht: success_threshold
OBS_DIM, ACT_DIM = 20, 2
BLOCK_COG = np.array([0.0, 45.0])  # centre of gravity of the T in its body frame (mean of its two bars' centroids)

# The paper's 9 block keypoints in the block's body frame (pixels), from its seeded procedure.
BLOCK_KEYPOINTS_LOCAL = np.array([
    [9.2697867138, 90.0409735239],
    [-60.9834723645, -1.1867297608],
    [60.9127555773, -1.3933642242],
    [-0.2705034390, 25.5436249915],
    [-14.0649275762, 122.8158535541],
    [39.0027385002, 32.8574042766],
    [-39.9664144247, 32.7296554464],
    [-16.8243443794, 62.8631789223],
    [23.5414612202, -1.7002881095],
])


def _rot(angle: np.ndarray) -> np.ndarray:
    """``(...,)`` angles -> ``(..., 2, 2)`` rotation matrices."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def block_keypoints(block_pose: np.ndarray) -> np.ndarray:
    """``(..., 3)`` block (x, y, angle) -> ``(..., 9, 2)`` keypoints in pixels."""
    block_pose = np.asarray(block_pose, dtype=np.float64)
    return BLOCK_KEYPOINTS_LOCAL @ np.swapaxes(_rot(block_pose[..., 2]), -1, -2) + block_pose[..., None, :2]


def lowdim_obs(state: np.ndarray) -> np.ndarray:
    """``(..., 5)`` gym_pusht state (agent x, y, block x, y, angle) -> ``(..., 20)`` low-dim obs."""
    state = np.asarray(state, dtype=np.float64)
    kp = block_keypoints(state[..., 2:5])
    return np.concatenate([kp.reshape(*kp.shape[:-2], 18), state[..., :2]], axis=-1)


def _tee_vertices() -> tuple[np.ndarray, np.ndarray]:
    """The T's two bars in its body frame (gym_pusht ``add_tee``, scale 30, length 4)."""
    scale, length = 30.0, 4.0
    bar = np.array([(-length * scale / 2, scale), (length * scale / 2, scale), (length * scale / 2, 0),
                    (-length * scale / 2, 0)])
    stem = np.array([(-scale / 2, scale), (-scale / 2, length * scale), (scale / 2, length * scale),
                     (scale / 2, scale)])
    return bar, stem


GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # gym_pusht / paper goal (x, y, angle)


def block_coverage(block_pose: np.ndarray) -> np.ndarray:
    """``(N, 3)`` block poses -> ``(N,)`` fraction of the goal T covered by the block (the env's ``coverage``).

    Vectorized over poses with shapely 2; reward = ``clip(coverage / 0.95, 0, 1)``.
    """
    import shapely

    block_pose = np.atleast_2d(np.asarray(block_pose, dtype=np.float64))

    def tee(pose):
        rot_t = np.swapaxes(_rot(pose[:, 2]), -1, -2)
        parts = [shapely.polygons(v @ rot_t + pose[:, None, :2]) for v in _tee_vertices()]
        return shapely.union(*parts)

    goal = tee(GOAL_POSE[None])[0]
    return shapely.area(shapely.intersection(tee(block_pose), goal)) / shapely.area(goal)


def coverage_reward(coverage: np.ndarray) -> np.ndarray:
    """The paper's reward: ``clip(coverage / 0.95, 0, 1)``."""
    return np.clip(np.asarray(coverage) / SUCCESS_COVERAGE, 0.0, 1.0)


def legacy_reset_state(state: np.ndarray) -> np.ndarray:
    """The ``reset_to_state`` argument that makes gym_pusht land exactly on ``state``.

    gym_pusht (like the paper's legacy env) sets ``block.position = p'`` then ``block.angle = a``
    on a fresh block (angle 0); pymunk 6 rotates about the centre of gravity ``c``, so the block
    ends at ``p' + c - R(a) c``.  Solving for ``p'`` gives ``p + (R(a) - I) c``.
    """
    state = np.array(state, dtype=np.float64)
    state[2:4] = state[2:4] + (_rot(state[4]) - np.eye(2)) @ BLOCK_COG
    return state


def dp_initial_state(rs: np.random.RandomState | int | None) -> np.ndarray:
    """The paper's random initial state (``PushTEnv.reset``: legacy ``RandomState(seed)``)."""
    if not isinstance(rs, np.random.RandomState):
        rs = np.random.RandomState(seed=rs)
    return np.array([rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400),
                     rs.randn() * 2 * np.pi - np.pi], dtype=np.float64)


class PushTKeypointsWrapper(gym.Wrapper):
    """``gym_pusht/PushT-v0`` (state obs) -> 20-d keypoint observations; see the module docstring."""

    def __init__(self, env: gym.Env, dp_initial_states: bool = True, seed: int | None = None):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(low=0.0, high=512.0, shape=(OBS_DIM,), dtype=np.float64)
        self.dp_initial_states = dp_initial_states
        self._default_seed = seed
        self._rs: np.random.RandomState | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        if seed is None and self._rs is None:
            seed = self._default_seed
        if options.get("reset_to_state") is not None:
            options["reset_to_state"] = legacy_reset_state(options["reset_to_state"])
        elif self.dp_initial_states:
            # Seeded reset: the paper's initial state for this seed; unseeded: continue the stream.
            if seed is not None or self._rs is None:
                self._rs = np.random.RandomState(seed=seed)
            options["reset_to_state"] = dp_initial_state(self._rs)
        state, info = self.env.reset(seed=seed, options=options or None)
        info["state"] = np.asarray(state, dtype=np.float64)
        return lowdim_obs(state), info

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float64))
        info["state"] = np.asarray(state, dtype=np.float64)
        return lowdim_obs(state), float(reward), bool(terminated), bool(truncated), info


def make_pusht_env(seed: int | None = None, dp_initial_states: bool = True,
                   max_episode_steps: int = MAX_EPISODE_STEPS, **kwargs) -> gym.Env:
    """Low-dim Push-T: obs ``(20,)`` float64 in pixels, action ``(2,)`` agent target in ``[0, 512]``.

    ``seed`` seeds the first reset that is called without a seed.  ``kwargs`` go to
    ``gym.make("gym_pusht/PushT-v0", ...)`` (e.g. ``render_mode``).
    """
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    env = gym.make("gym_pusht/PushT-v0", obs_type="state", max_episode_steps=max_episode_steps, **kwargs)
    return PushTKeypointsWrapper(env, dp_initial_states=dp_initial_states, seed=seed)
