"""Scripted demonstrations, written in robomimic's HDF5 layout (``platform/datasets/robomimic.py``).

The papers' demonstration files (robomimic's proficient-human data, IBC's block-pushing oracle data)
cannot be downloaded here, so these scripts make stand-ins with the same layout:

* ``blockpush``: ``PushOracle`` in ``BlockPushEnv`` (small Gaussian action noise for diversity);
* ``lift``: a scripted robosuite Lift grasp (over the cube, down, close, lift) with the default
  OSC_POSE controller, robomimic's low-dim observation keys.

Only successful episodes are kept, like curated demonstrations.  CLI::

    python -m platform.datasets.demos blockpush --episodes 200 --out FILE
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

TASKS = ("blockpush", "lift")
DEFAULT_EPISODES = {"blockpush": 200, "lift": 50}


def blockpush_demos(n_episodes: int, seed: int = 0, noise: float = 0.003, max_tries: int | None = None) -> list[dict]:
    """``n_episodes`` successful oracle episodes (env seeds ``seed, seed + 1, ...``)."""
    from platform.envs.blockpush import BlockPushEnv, PushOracle

    env = BlockPushEnv()
    episodes, s = [], seed
    try:
        while len(episodes) < n_episodes and s - seed < (max_tries or 3 * n_episodes):
            oracle = PushOracle(noise=noise, seed=s)
            obs, _ = env.reset(seed=s)
            s += 1
            ep = {"obs": [obs], "actions": [], "rewards": [], "dones": []}
            while True:
                action = oracle.act(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                ep["actions"].append(action)
                ep["rewards"].append(reward)
                ep["dones"].append(terminated)
                ep["obs"].append(obs)
                if terminated or truncated:
                    break
            if info["is_success"]:
                states = np.array(ep["obs"])  # (T + 1, 10)
                episodes.append({"obs": {"state": states[:-1]}, "next_obs": {"state": states[1:]},
                                 "actions": np.array(ep["actions"]),
                                 "rewards": np.array(ep["rewards"]), "dones": np.array(ep["dones"])})
    finally:
        env.close()
    return episodes


def lift_policy(raw_env, obs: dict, phase: list) -> np.ndarray:
    """One OSC_POSE action of the scripted Lift grasp; ``phase`` is a one-element mutable state."""
    eef, cube = obs["robot0_eef_pos"], obs["cube_pos"]
    action = np.zeros(7)
    target = cube.copy()
    if phase[0] == 0:  # above the cube
        target[2] += 0.08
        if np.linalg.norm(target - eef) < 0.015:
            phase[0] = 1
        grip = -1.0
    elif phase[0] == 1:  # down to it
        target[2] += 0.005
        if np.linalg.norm(target - eef) < 0.01:
            phase[0], phase[1] = 2, 0
        grip = -1.0
    elif phase[0] == 2:  # close the gripper for a few steps
        phase[1] += 1
        if phase[1] > 8:
            phase[0] = 3
        grip = 1.0
    else:  # lift
        target = eef.copy()
        target[2] = cube[2] + 0.2
        grip = 1.0
    action[:3] = np.clip((target - eef) * 10.0, -1.0, 1.0)
    action[6] = grip
    return action


def lift_demos(n_episodes: int, seed: int = 0, noise: float = 0.05, max_tries: int | None = None) -> list[dict]:
    """``n_episodes`` successful scripted Lift episodes (robosuite), robomimic low-dim keys."""
    from platform.envs.robotics import ROBOMIMIC_LOWDIM_KEYS, RobosuiteEnv

    env = RobosuiteEnv("Lift")
    raw = env.raw
    rng = np.random.default_rng(seed)
    episodes, s = [], seed
    try:
        while len(episodes) < n_episodes and s - seed < (max_tries or 3 * n_episodes):
            env.reset(seed=s)
            s += 1
            obs = raw._get_observations(force_update=True)
            phase = [0, 0]
            ep = {k: [] for k in ("obs", "next_obs", "actions", "rewards", "dones")}
            success = False
            for _ in range(env.horizon):
                action = lift_policy(raw, obs, phase)
                action[:3] = np.clip(action[:3] + rng.normal(0, noise, 3), -1, 1)
                ep["obs"].append(RobosuiteEnv.lowdim(obs))
                _, reward, terminated, truncated, _ = env.step(action)
                obs = raw._get_observations()
                ep["next_obs"].append(RobosuiteEnv.lowdim(obs))
                ep["actions"].append(action)
                ep["rewards"].append(reward)
                ep["dones"].append(terminated)
                if terminated or truncated:
                    success = terminated
                    break
            if success:
                episodes.append({**{g: {k: np.array([o[k] for o in ep[g]]) for k in ROBOMIMIC_LOWDIM_KEYS}
                                    for g in ("obs", "next_obs")},
                                 "actions": np.array(ep["actions"]), "rewards": np.array(ep["rewards"]),
                                 "dones": np.array(ep["dones"])})
    finally:
        env.close()
    return episodes


def generate_demos(task: str, out: str, n_episodes: int | None = None, seed: int = 0) -> str:
    """Make ``task``'s demonstrations and write them to ``out`` (robomimic layout); returns ``out``."""
    from platform.datasets.robomimic import write_robomimic
    from platform.envs.robotics import ROBOMIMIC_LOWDIM_KEYS

    n = n_episodes or DEFAULT_EPISODES[task]
    if task == "blockpush":
        episodes, keys, name = blockpush_demos(n, seed), ("state",), "blockpush"
    elif task == "lift":
        episodes, keys, name = lift_demos(n, seed), ROBOMIMIC_LOWDIM_KEYS, "Lift"
    else:
        raise ValueError(f"scripted demonstrations for {task!r}: use one of {', '.join(TASKS)}")
    if len(episodes) < n:
        raise RuntimeError(f"{task}: only {len(episodes)} of {n} scripted episodes succeeded")
    write_robomimic(out, episodes, name, obs_keys=keys, env_kwargs={"scripted": True, "seed": seed})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.datasets.demos", description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=TASKS)
    p.add_argument("--episodes", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    t = time.perf_counter()
    generate_demos(args.task, args.out, args.episodes, args.seed)
    print(f"wrote {args.out} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
