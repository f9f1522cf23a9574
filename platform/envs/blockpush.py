"""Block Pushing (Florence et al., "Implicit Behavioral Cloning", CoRL 2021), in pybullet, with its oracle.

The task of IBC's ``BlockPush-v0``: push a 4 cm cube on a table into a target zone with a cylindrical
end effector that moves in the plane.  Same observation and action layout as IBC's state observation:

* obs ``(10,)``: block x, y, yaw; effector x, y; effector target x, y; target x, y, yaw (metres, radians);
* action ``(2,)``: change of the effector target (x, y), clipped to +-``max_step`` (m) per control step;
* 10 Hz control, 24 physics steps of 1/240 s each (IBC's rates);
* reward 1 and ``terminated`` when the block centre is within ``goal_tolerance`` of the target
  (``info["is_success"]``), ``truncated`` after ``max_episode_steps``.

Deviation from IBC, stated: the end effector is a kinematically driven floating cylinder (a pybullet
fixed constraint moved to the target each step) instead of an xArm driven by inverse kinematics;
reset ranges and the 0.05 m tolerance (Diffusion Policy's multimodal variant's) are this file's,
and there is one block and one target (IBC's ``BlockPush``, not DP's two-block ``BlockPushMultimodal``).

``PushOracle`` is IBC's oriented-push oracle in spirit: go behind the block on the block->target
line, then push along it, re-approaching when the block drifts off the line.
"""
from __future__ import annotations

import numpy as np
import gymnasium as gym

BLOCK_HALF = 0.02          # 4 cm cube
EFFECTOR_RADIUS = 0.0125
EFFECTOR_HEIGHT = 0.04
WORKSPACE = np.array([[0.15, -0.5], [0.7, 0.5]])  # IBC's WORKSPACE_BOUNDS (x, y)
CONTROL_HZ, SIM_HZ = 10, 240


class BlockPushEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, max_episode_steps: int = 100, goal_tolerance: float = 0.05, max_step: float = 0.03):
        import pybullet
        from pybullet_utils import bullet_client

        if goal_tolerance <= 0 or max_step <= 0 or max_episode_steps < 1:
            raise ValueError("blockpush: goal_tolerance, max_step and max_episode_steps must be positive")
        self.max_episode_steps, self.goal_tolerance, self.max_step = max_episode_steps, goal_tolerance, max_step
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(10,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-max_step, max_step, shape=(2,), dtype=np.float64)
        self._p = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self._build()
        self._target = np.zeros(3)
        self._effector_target = np.zeros(2)
        self._t = 0

    # --------------------------------------------------------------------------- state
    def _build(self):
        """A fresh world (rebuilt at every reset: pybullet's contact caches would make resets differ)."""
        p = self._p
        p.resetSimulation()
        p.setGravity(0, 0, -9.8)
        p.setTimeStep(1.0 / SIM_HZ)
        plane = p.createMultiBody(0, p.createCollisionShape(p.GEOM_PLANE))
        p.changeDynamics(plane, -1, lateralFriction=0.5)
        self._block = p.createMultiBody(0.1, p.createCollisionShape(p.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3),
                                        basePosition=[0.4, 0, BLOCK_HALF])
        p.changeDynamics(self._block, -1, lateralFriction=0.5)
        shape = p.createCollisionShape(p.GEOM_CYLINDER, radius=EFFECTOR_RADIUS, height=EFFECTOR_HEIGHT)
        self._effector = p.createMultiBody(1.0, shape, basePosition=[0.3, -0.3, EFFECTOR_HEIGHT / 2 + 0.005])
        p.changeDynamics(self._effector, -1, lateralFriction=0.1)
        self._cid = p.createConstraint(self._effector, -1, -1, -1, p.JOINT_FIXED, [0, 0, 0], [0, 0, 0],
                                       [0.3, -0.3, EFFECTOR_HEIGHT / 2 + 0.005])

    def _place_effector(self, xy):
        z = EFFECTOR_HEIGHT / 2 + 0.005
        self._p.resetBasePositionAndOrientation(self._effector, [xy[0], xy[1], z], [0, 0, 0, 1])
        self._p.resetBaseVelocity(self._effector, [0, 0, 0], [0, 0, 0])
        self._p.changeConstraint(self._cid, [xy[0], xy[1], z], maxForce=200)

    def _block_pose(self) -> np.ndarray:
        pos, orn = self._p.getBasePositionAndOrientation(self._block)
        return np.array([pos[0], pos[1], self._p.getEulerFromQuaternion(orn)[2]])

    def _obs(self) -> np.ndarray:
        eff = np.array(self._p.getBasePositionAndOrientation(self._effector)[0][:2])
        return np.concatenate([self._block_pose(), eff, self._effector_target, self._target])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        rng = self.np_random
        eff = np.array([0.3, -0.35]) + rng.uniform(-0.02, 0.02, 2)
        block = np.array([0.4, -0.15]) + rng.uniform(-0.05, 0.05, 2)
        self._target = np.array([*(np.array([0.45, 0.15]) + rng.uniform(-0.05, 0.05, 2)), rng.uniform(-np.pi, np.pi)])
        yaw = rng.uniform(-np.pi, np.pi)
        self._build()
        self._p.resetBasePositionAndOrientation(self._block, [block[0], block[1], BLOCK_HALF],
                                                self._p.getQuaternionFromEuler([0, 0, yaw]))
        self._p.resetBaseVelocity(self._block, [0, 0, 0], [0, 0, 0])
        self._effector_target = eff.copy()
        self._place_effector(eff)
        self._t = 0
        for _ in range(SIM_HZ // CONTROL_HZ):  # settle
            self._p.stepSimulation()
        return self._obs(), {"is_success": False}

    def step(self, action):
        delta = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -self.max_step, self.max_step)
        self._effector_target = np.clip(self._effector_target + delta, WORKSPACE[0], WORKSPACE[1])
        start = np.array(self._p.getBasePositionAndOrientation(self._effector)[0][:2])
        n = SIM_HZ // CONTROL_HZ
        z = EFFECTOR_HEIGHT / 2 + 0.005
        for i in range(n):  # move the constraint along a straight line to the target within one control step
            xy = start + (self._effector_target - start) * (i + 1) / n
            self._p.changeConstraint(self._cid, [xy[0], xy[1], z], maxForce=200)
            self._p.stepSimulation()
        self._t += 1
        dist = float(np.linalg.norm(self._block_pose()[:2] - self._target[:2]))
        success = dist < self.goal_tolerance
        info = {"is_success": success, "block_target_distance": dist}
        return self._obs(), float(success), success, self._t >= self.max_episode_steps, info

    def close(self):
        if self._p is not None:
            self._p.disconnect()
            self._p = None


class PushOracle:
    """Scripted expert: approach behind the block, then push it along the block->target line.

    ``act(obs) -> (2,)`` effector-target change.  ``noise`` (m) adds Gaussian noise to each action
    (for diverse demonstrations); the oracle itself is deterministic.
    """

    def __init__(self, max_step: float = 0.03, standoff: float = 0.045, noise: float = 0.0, seed: int = 0):
        self.max_step, self.standoff, self.noise = max_step, standoff, noise
        self.rng = np.random.default_rng(seed)
        self.pushing = False

    def reset(self):
        self.pushing = False

    def act(self, obs: np.ndarray) -> np.ndarray:
        block, eff, eff_target, target = obs[:2], obs[3:5], obs[5:7], obs[7:9]
        to_goal = target - block
        v = to_goal / max(np.linalg.norm(to_goal), 1e-6)  # push direction
        rel = eff - block
        behind, lateral = -float(rel @ v), float(rel @ np.array([-v[1], v[0]]))
        if self.pushing and (behind < self.standoff - 0.02 or abs(lateral) > 0.02):
            self.pushing = False  # the block slid off the line: re-approach
        prepush = block - (self.standoff + 0.02) * v
        if not self.pushing:
            goal = prepush
            if behind < 0.03 and np.linalg.norm(rel) < 0.08:  # in front of or beside the block: go round it
                side = np.sign(lateral) or 1.0
                goal = block + 0.08 * side * np.array([-v[1], v[0]]) - 0.03 * v
            if np.linalg.norm(eff - prepush) < 0.01:
                self.pushing = True
        if self.pushing:  # keep the effector on the line through the block, moving towards the target
            goal = block - self.standoff * v + 0.6 * self.max_step * v
        delta = np.clip(goal - eff_target, -self.max_step, self.max_step)
        if self.noise:
            delta = delta + self.rng.normal(0.0, self.noise, 2)
        return np.clip(delta, -self.max_step, self.max_step)


__all__ = ["BlockPushEnv", "PushOracle"]
