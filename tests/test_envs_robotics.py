"""Robot benchmarks: robomimic / Minari-file loaders (h5py only), Block Pushing, kitchen, AntMaze, pen, robosuite.

Loader tests write small files with h5py and need no simulator.  Env tests skip when their simulator
(``pip install ".[robotics]"``) is missing.
"""
import json
import os

import h5py
import numpy as np
import pytest

from platform.datasets import check_dataset, load_dataset
from platform.datasets.minari_files import write_minari_files
from platform.datasets.robomimic import load_robomimic, write_robomimic


# ----------------------------------------------------------------------------- robomimic HDF5


def _robomimic_file(path, lengths=(3, 4), done_last=(True, False), env_name="Lift"):
    """Demo i, step t: object = [100 i + t] * 10, eef_pos = [t] * 3, eef_quat = [i] * 4, gripper = [-t] * 2."""
    episodes = []
    for i, (t_len, done) in enumerate(zip(lengths, done_last)):
        t = np.arange(t_len, dtype=np.float64)
        obs = {"object": np.repeat((100 * i + t)[:, None], 10, 1), "robot0_eef_pos": np.repeat(t[:, None], 3, 1),
               "robot0_eef_quat": np.full((t_len, 4), float(i)), "robot0_gripper_qpos": np.repeat(-t[:, None], 2, 1),
               "robot0_joint_pos": np.zeros((t_len, 7))}
        dones = np.zeros(t_len)
        dones[-1] = done
        episodes.append({"obs": obs, "actions": np.full((t_len, 7), 0.1 * (i + 1)), "rewards": dones.copy(),
                         "dones": dones})
    write_robomimic(path, episodes, env_name, valid_fraction=0.5)
    return path


def test_robomimic_loader_layout(tmp_path):
    path = _robomimic_file(str(tmp_path / "lift.hdf5"))
    with h5py.File(path) as f:  # the official layout
        assert sorted(f["data"].keys()) == ["demo_0", "demo_1"]
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"
        assert f["data/demo_1/obs/object"].shape == (4, 10)
    d = load_robomimic(path)
    assert d.env_id == "robosuite:Lift" and len(d) == 7 and d.episode_ends.tolist() == [3, 7]
    assert d.observations.shape == (7, 19) and d.actions.shape == (7, 7)
    # key order object, eef_pos, eef_quat, gripper: demo 1, step 2
    np.testing.assert_allclose(d.observations[5], [102] * 10 + [2] * 3 + [1] * 4 + [-2] * 2)
    np.testing.assert_allclose(d.next_observations[3], d.observations[4])  # shifted within a demo
    np.testing.assert_allclose(d.next_observations[2], d.observations[2])  # last step reuses its own
    assert d.terminals.tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert d.timeouts.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert (d.ref_min_score, d.ref_max_score) == (0.0, 1.0)
    # masks, key choice, errors
    assert load_robomimic(path, filter_key="valid").episode_ends.tolist() == [4]
    assert load_robomimic(path, obs_keys=("robot0_eef_pos",)).observations.shape == (7, 3)
    with pytest.raises(ValueError, match="no obs/cube_pos"):
        load_robomimic(path, obs_keys=("cube_pos",))
    with pytest.raises(ValueError, match="no mask/test"):
        load_robomimic(path, filter_key="test")
    assert check_dataset(f"robomimic:{path}") == "robosuite:Lift"
    assert load_dataset(f"robomimic:{path}").observations.shape == (7, 19)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset(f"robomimic:{tmp_path}/nope.hdf5")


# ----------------------------------------------------------------------------- Minari files


def _minari_episode(t_len, start, dict_obs):
    obs = np.arange(start, start + t_len + 1, dtype=np.float64)[:, None] * np.ones((1, 59))
    if dict_obs:
        obs = {"observation": obs, "achieved_goal": {"microwave": np.zeros((t_len + 1, 1))},
               "desired_goal": {"microwave": np.full((t_len + 1, 1), -0.75)}}
    term = np.zeros(t_len, dtype=bool)
    term[-1] = start == 0
    return {"observations": obs, "actions": np.full((t_len, 9), start / 100.0), "rewards": np.arange(t_len, dtype=float),
            "terminations": term, "truncations": ~term & (np.arange(t_len) == t_len - 1)}


def test_minari_files_kitchen_and_antmaze(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    write_minari_files(tmp_path / "D4RL/kitchen/complete-v2", [_minari_episode(4, 0, True), _minari_episode(3, 10, True)])
    assert check_dataset("kitchen:complete") == "kitchen-complete"
    d = load_dataset("kitchen:complete")
    assert d.observations.shape == (7, 59) and d.actions.shape == (7, 9)  # the goals are not in the obs
    assert d.episode_ends.tolist() == [4, 7]
    np.testing.assert_allclose(d.observations[:, 0], [0, 1, 2, 3, 10, 11, 12])
    np.testing.assert_allclose(d.next_observations[:, 0], [1, 2, 3, 4, 11, 12, 13])
    assert d.terminals.tolist() == [0, 0, 0, 1, 0, 0, 0] and d.timeouts.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert (d.ref_min_score, d.ref_max_score) == (0.0, 4.0)  # D4RL kitchen
    # AntMaze: every key, sorted (FlattenObservation's order): achieved (1) + desired (1) + observation (59)
    path = write_minari_files(tmp_path / "my-umaze-diverse", [_minari_episode(5, 0, True)])
    d = load_dataset(f"antmaze:{os.path.dirname(os.path.dirname(path))}")
    assert d.env_id == "antmaze-umaze" and d.observations.shape == (5, 61)
    np.testing.assert_allclose(d.observations[2, :3], [0.0, -0.75, 2.0])
    with pytest.raises(FileNotFoundError, match="MINARI_DATASETS_PATH"):
        check_dataset("antmaze:large-play")
    with pytest.raises(ValueError, match="unknown name"):
        check_dataset("kitchen:bogus")


# ----------------------------------------------------------------------------- Block Pushing


def test_blockpush_env_and_oracle():
    pytest.importorskip("pybullet")
    from platform.envs import make_env
    from platform.envs.blockpush import PushOracle

    env = make_env("blockpush")
    o1, _ = env.reset(seed=3)
    o2, _ = env.reset(seed=3)
    np.testing.assert_allclose(o1, o2, atol=1e-9)
    assert o1.shape == (10,) and env.action_space.shape == (2,)
    np.testing.assert_allclose(o1[3:5], o1[5:7], atol=2e-3)  # the effector sits at its target after reset
    results = {}
    for name in ("oracle", "random"):
        wins = 0
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            oracle, rng = PushOracle(), np.random.default_rng(seed)
            while True:
                action = oracle.act(obs) if name == "oracle" else rng.uniform(-0.03, 0.03, 2)
                obs, reward, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            assert reward == float(info["is_success"]) and terminated == info["is_success"]
            wins += info["is_success"]
        results[name] = wins
    env.close()
    assert results == {"oracle": 4, "random": 0}, results


def test_scripted_blockpush_dataset(tmp_path):
    pytest.importorskip("pybullet")
    from platform.datasets.demos import generate_demos

    path = generate_demos("blockpush", str(tmp_path / "bp.hdf5"), n_episodes=3, seed=5)
    d = load_robomimic(path)
    assert d.env_id == "blockpush" and d.observations.shape[1] == 10 and d.actions.shape[1] == 2
    assert d.n_episodes == 3 and np.abs(d.actions).max() <= 0.03 + 1e-9
    assert d.env_spec().act_high == (0.03, 0.03)
    last = d.episode_ends - 1
    assert d.rewards[last].tolist() == [1, 1, 1] and d.rewards.sum() == 3 and d.terminals[last].all()
    # the block ends within the tolerance of the target in the successor of the last step
    assert np.all(np.linalg.norm(d.next_observations[last, :2] - d.next_observations[last, 7:9], axis=1) < 0.05 + 1e-6)


# ----------------------------------------------------------------------------- MuJoCo robot envs


def test_kitchen_env():
    pytest.importorskip("gymnasium_robotics")
    from platform.envs import check_env_id, make_env

    check_env_id("kitchen-complete")
    env = make_env("kitchen-complete")
    obs, info = env.reset(seed=0)
    assert obs.shape == (59,) and env.action_space.shape == (9,) and env.unwrapped.spec is not None
    assert sorted(env.unwrapped.goal) == sorted(["microwave", "kettle", "light switch", "slide cabinet"])
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.zeros(9))
    assert reward == 0.0 and not terminated and info["tasks_completed"] == 0 and info["is_success"] is False
    env.close()


def test_antmaze_env_uses_d4rl_cells():
    pytest.importorskip("gymnasium_robotics")
    from platform.envs import make_env

    env = make_env("antmaze-umaze")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (31,) and env.action_space.shape == (8,)
    # start cell (row 1, col 1) and goal cell (row 3, col 1) of D4RL's U-maze, 4 m cells centred on 0
    np.testing.assert_allclose(obs[:2], [-4.0, 4.0], atol=1.0)
    np.testing.assert_allclose(obs[2:4], [-4.0, -4.0], atol=1.0)
    obs, reward, terminated, truncated, info = env.step(np.zeros(8))
    assert reward == 0.0 and info["is_success"] is False
    env.close()


def test_pen_env_limit():
    pytest.importorskip("gymnasium_robotics")
    from platform.envs import make_env

    env = make_env("pen")
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, _, truncated, info = env.step(env.action_space.sample())
        steps += 1
    assert steps == 100 and "is_success" in info
    env.close()


def test_robosuite_lift_env():
    pytest.importorskip("robosuite")
    from platform.envs import make_env

    env = make_env("robosuite:Lift")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (19,) and env.action_space.shape == (7,)
    np.testing.assert_allclose(env.reset(seed=0)[0][:3], obs[:3])  # seeded cube placement
    assert np.abs(env.reset(seed=1)[0][:2] - obs[:2]).max() > 1e-4
    obs, _ = env.reset(seed=0)
    for _ in range(3):  # the cube drops onto the table from its spawn height
        obs, reward, terminated, _, info = env.step(np.zeros(7))
    assert reward == 0.0 and not terminated and not info["is_success"]
    cube_z = obs[2]
    for _ in range(3):
        obs, *_ = env.step(np.zeros(7))
    assert abs(obs[2] - cube_z) < 1e-3 and 0.7 < cube_z < 0.9  # resting on the table (table top at 0.8 m)
    env.close()


def test_robotics_studies_parse():
    from platform.spec import load_spec

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search_spaces")
    got = {n: load_spec(os.path.join(root, n + ".yaml")) for n in
           ("kitchen_dql", "kitchen_dp", "robomimic_dp", "blockpush_dp", "antmaze_dql", "adroit_pen_dql")}
    assert got["antmaze_dql"].config["reward_shaping"] == "antmaze" and got["kitchen_dql"].env == "kitchen-complete"
    assert {s.algorithm for s in got.values()} == {"dql", "diffusion_policy"}


# ----------------------------------------------------------------------------- end to end through the platform

E2E = """\
name: {name}
algorithm: {algorithm}
dataset: {dataset}
env: {env}
config: {config}
train: {{steps: 20, batch_size: 32, eval_every: 20, eval_episodes: 1, seeds: [0]}}
search: {{metric: eval/normalized_score, searcher: random, num_samples: 1, scheduler: fifo}}
resources: {{workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}}
failure: {{max_failures: 0}}
"""


def _random_episodes(env_id, n_episodes, length, minari=True):
    """Random-action episodes of a platform env, in Minari's (or robomimic's) episode layout."""
    from platform.envs import make_env

    env = make_env(env_id)
    out = []
    for i in range(n_episodes):
        obs = [env.reset(seed=i)[0]]
        actions = [env.action_space.sample() for _ in range(length)]
        for a in actions:
            obs.append(env.step(a)[0])
        obs, actions, rewards = np.array(obs), np.array(actions), np.zeros(length)
        if minari:
            out.append({"observations": obs, "actions": actions, "rewards": rewards,
                        "terminations": np.zeros(length, bool), "truncations": np.arange(length) == length - 1})
        else:
            out.append({"obs": {"state": obs[:-1]}, "next_obs": {"state": obs[1:]}, "actions": actions,
                        "rewards": rewards, "dones": np.zeros(length)})
    env.close()
    return out


CASES = {  # env id -> (simulator module, algorithm, config, dataset kind)
    "blockpush": ("pybullet", "diffusion_policy", "{down_dims: [16, 32], sampler: ddim, n_inference_steps: 4}", "robomimic"),
    "kitchen-complete": ("gymnasium_robotics", "dql", "{eta: 0.005, n_action_samples: 4}", "kitchen"),
    "antmaze-umaze": ("gymnasium_robotics", "dql", "{reward_shaping: antmaze, max_q_backup: true, n_action_samples: 4}",
                      "antmaze"),
    "pen": ("gymnasium_robotics", "dql", "{eta: 0.15, n_action_samples: 4}", "adroit"),
    "robosuite:Lift": ("robosuite", "bc", "{}", "robomimic"),
}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", list(CASES))
def test_sweep_end_to_end(env_id, tmp_path, data_dir):
    """Dataset file -> python -m platform.sweep -> Ray Train -> rollout actors in the env -> Parquet."""
    import pandas as pd

    from tests.test_sweep import run_cli

    module, algorithm, config, kind = CASES[env_id]
    pytest.importorskip(module)
    if kind == "robomimic":
        path = str(tmp_path / "demos.hdf5")
        write_robomimic(path, _random_episodes(env_id, 2, 20, minari=False),
                        "blockpush" if env_id == "blockpush" else "Lift", obs_keys=("state",))
        dataset = f"robomimic:{path}"
    else:
        directory = tmp_path / {"kitchen": "complete", "antmaze": "umaze", "adroit": "pen-human"}[kind]
        write_minari_files(directory, _random_episodes(env_id, 2, 20))
        dataset = f"{kind}:{directory}"
    assert check_dataset(dataset) == env_id
    name = "e2e_" + env_id.replace(":", "_").replace("-", "_")
    spec = tmp_path / "study.yaml"
    spec.write_text(E2E.format(name=name, algorithm=algorithm, dataset=dataset, env=env_id, config=config))
    out = run_cli([str(spec), "--storage", str(tmp_path / "results"), "--no-report"], timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / name / "metrics.parquet")
    row = df[df["step"] == 20].iloc[0]
    assert row["status"] == "TERMINATED" and np.isfinite(row["eval/return_mean"])
    assert 0.0 <= row["eval/success_rate"] <= 1.0 and row["eval/length_mean"] >= 1
