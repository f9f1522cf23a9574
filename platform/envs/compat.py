"""Make gymnasium-robotics 1.4 and robosuite 1.5 run on MuJoCo 4 (the version installed here).

Two MuJoCo 4 changes break them; both patches are no-ops on MuJoCo 3:

* ``mjtJoint`` enum members no longer compare equal to numpy integers from the left
  (``mjJNT_HINGE == np.int32(3)`` is False, while ``np.int32(3) == mjJNT_HINGE`` is True), so the
  joint-address helpers' ``assert joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`` fails for every hinge
  joint (gymnasium_robotics ``get_joint_qpos``/``get_joint_qvel``, robosuite
  ``MjModel.get_joint_qpos_addr``/``get_joint_qvel_addr``).  The replacements below do the same
  lookups on ``int(joint_type)``.
* ``MjData.qM`` is gone and ``mj_fullM`` now takes ``(model, data, dst)`` instead of
  ``(model, dst, qM)``; robosuite's controllers call the old form once per control step
  (``Controller.update``).  The patch gives robosuite's ``MjData`` wrapper a ``qM`` that hands back
  the raw ``MjData`` and routes that one call to the new signature.

Checked: FrankaKitchen-v1 resets and steps; robosuite Lift / PickPlaceCan with the default Panda OSC
controller reset and step.  ``python -m pytest tests/test_envs_robotics.py`` covers both.
"""
from __future__ import annotations

import types

import numpy as np

# qpos / qvel widths per joint type: free, ball, slide, hinge (mjtJoint values 0..3)
_QPOS_WIDTH = {0: 7, 1: 4, 2: 1, 3: 1}
_QVEL_WIDTH = {0: 6, 1: 3, 2: 1, 3: 1}
_patched: set[str] = set()


def _needs_enum_patch() -> bool:
    import mujoco

    return not (mujoco.mjtJoint.mjJNT_HINGE == np.int32(int(mujoco.mjtJoint.mjJNT_HINGE)))


def patch_gymnasium_robotics() -> None:
    """Idempotent; call before making a gymnasium-robotics env whose model has hinge/slide joints."""
    if "gymnasium_robotics" in _patched or not _needs_enum_patch():
        _patched.add("gymnasium_robotics")
        return
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils as mu

    def joint(model, name):
        joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        assert joint_id != -1, f"Joint with name '{name}' is not part of the model!"
        return joint_id, int(model.jnt_type[joint_id])

    def get_joint_qpos(model, data, name):
        joint_id, joint_type = joint(model, name)
        start = model.jnt_qposadr[joint_id]
        return data.qpos[start:start + _QPOS_WIDTH[joint_type]].copy()

    def get_joint_qvel(model, data, name):
        joint_id, joint_type = joint(model, name)
        start = model.jnt_dofadr[joint_id]
        return data.qvel[start:start + _QVEL_WIDTH[joint_type]].copy()

    mu.get_joint_qpos, mu.get_joint_qvel = get_joint_qpos, get_joint_qvel  # robot_get_obs looks them up here
    _patched.add("gymnasium_robotics")


def patch_robosuite() -> None:
    """Idempotent; call before ``robosuite.make``."""
    if "robosuite" in _patched:
        return
    import mujoco
    from robosuite.utils import binding_utils as bu

    if _needs_enum_patch():
        def addr(self, name, widths, starts):
            joint_id = self.joint_name2id(name)
            start = int(getattr(self, starts)[joint_id])
            width = widths[int(self.jnt_type[joint_id])]
            return start if width == 1 else (start, start + width)

        bu.MjModel.get_joint_qpos_addr = lambda self, name: addr(self, name, _QPOS_WIDTH, "jnt_qposadr")
        bu.MjModel.get_joint_qvel_addr = lambda self, name: addr(self, name, _QVEL_WIDTH, "jnt_dofadr")

    if not hasattr(mujoco.MjData, "qM"):
        import robosuite.controllers.parts.controller as controller_module

        bu.MjData.qM = property(lambda self: self._data)  # only ever passed to mj_fullM below

        def mj_fullM(model, dst, data):  # robosuite's (model, dst, qM) call -> MuJoCo 4's (model, data, dst)
            return mujoco.mj_fullM(model, data, dst)

        shim = types.ModuleType("mujoco_mj_fullM_shim")
        shim.__getattr__ = lambda name: getattr(mujoco, name)
        shim.mj_fullM = mj_fullM
        controller_module.mujoco = shim
    _patched.add("robosuite")


__all__ = ["patch_gymnasium_robotics", "patch_robosuite"]
