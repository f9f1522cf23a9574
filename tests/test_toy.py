"""The toy tasks of issue 40 (platform/envs/toy_tasks.py, platform/datasets/toy.py, platform/envs/toy.py): the datasets' statistics, the envs'
rewards, the mode metrics on hand-made action sets, the rollout's record of first actions, and that the studies
validate.  Seconds."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from platform.datasets import load_dataset
from platform.envs.toy_tasks import TASKS, mode_metrics, reference_sample

BANDIT_CORNERS = np.array([[-0.8, 0.8], [-0.8, -0.8], [0.8, 0.8], [0.8, -0.8]])  # the paper's order
BANDIT_REWARDS = np.array([3.0, 0.0, 1.5, 5.0])


def test_bandit_dataset_is_the_papers():
    d = load_dataset("toy:bandit")
    assert len(d) == 10_000 and d.env_id == "ToyBandit-v0"
    assert np.all(d.observations == 0) and d.observations.shape[1] == 2
    assert np.all(d.terminals == 1) and np.array_equal(d.episode_ends, np.arange(1, 10_001))
    assert d.actions.min() >= -1 and d.actions.max() <= 1
    acts, rews = d.actions.reshape(4, 2500, 2), d.rewards.reshape(4, 2500)
    assert np.abs(acts.mean(1) - BANDIT_CORNERS).max() < 0.01           # 2500 per corner, at (+-0.8, +-0.8)
    assert np.abs(acts.std(1) - 0.05).max() < 0.004
    assert np.abs(rews.mean(1) - BANDIT_REWARDS).max() < 0.05          # N(3), N(0), N(1.5), N(5)
    assert np.abs(rews.std(1) - 0.5).max() < 0.03
    assert (d.ref_min_score, d.ref_max_score) == (0.0, 5.0)
    assert np.array_equal(load_dataset("toy:bandit").actions, d.actions)  # a fixed seed


@pytest.mark.parametrize("name", ["modes8", "modes-state"])
def test_modes_datasets(name):
    t, d = TASKS[name], load_dataset(f"toy:{name}")
    states = t.state_of(d.observations)
    angles = []
    for s in range(t.n_states):
        a = d.actions[states == s]
        mode = t.mode_of(a, np.full(len(a), s))
        assert np.mean(mode < 0) < 0.02                                  # 3 std in 2-D hold 98.9%
        for m in range(t.n_modes):
            am = a[mode == m]
            assert abs(len(am) - len(a) / t.n_modes) < 0.02 * len(a)      # equal weights
            assert np.linalg.norm(am.mean(0) - t.centres[s, m]) < 0.01
            assert np.abs(am.std(0) - 0.05).max() < 0.006
        angles += list(np.degrees(np.arctan2(t.centres[s, :, 1], t.centres[s, :, 0])) % 360)
    assert np.allclose(np.linalg.norm(t.centres, axis=-1), 0.7)
    assert np.allclose(sorted(angles), np.arange(0, 360, 45))         # 8 distinct modes, 45 degrees apart
    assert np.all(d.terminals == 1)
    assert np.array_equal(d.rewards, t.reward(d.actions, states))    # the data's reward is the env's


def test_env_rewards():
    from platform.envs import make_env

    env = make_env("ToyBandit-v0")
    obs, _ = env.reset(seed=7)
    assert np.all(obs == 0)
    for corner, r in zip(BANDIT_CORNERS, BANDIT_REWARDS):
        _, reward, term, _, info = env.step(corner + [0.1, 0.0])        # inside the 3-std support (0.15)
        assert reward == r and term
    for off in ([0.0, 0.0], [0.8, -0.8 + 0.16], [0.55, 0.55]):          # between corners / just off the support
        assert env.step(off)[1] == 0.0
    env = make_env("ToyModesState-v0")
    t = TASKS["modes-state"]
    seen = set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        s = info["state"]
        seen.add(s)
        assert obs[s] == 1 and obs.sum() == 1
        assert env.step(t.centres[s, 1])[1] == 1.0
        assert env.step(t.centres[(s + 1) % 4, 0])[1] == 0.0            # another state's mode is off this support
    assert seen == {0, 1, 2, 3}


def test_mode_metrics_on_hand_made_actions():
    t = TASKS["modes8"]
    obs = np.zeros((400, 2))
    rng = np.random.default_rng(1)
    one_mode = t.centres[0, 3] + 0.05 * rng.standard_normal((400, 2))
    m = mode_metrics(t, one_mode, obs)
    assert m["eval/modes_covered"] == pytest.approx(1 / 8)
    assert m["eval/off_support"] < 0.03 and m["eval/mmd"] > 0.3
    mean_of_modes = np.zeros((400, 2)) + 0.01 * rng.standard_normal((400, 2))  # BC's average of the modes
    m = mode_metrics(t, mean_of_modes, obs)
    assert m["eval/off_support"] == 1.0 and m["eval/modes_covered"] == 0.0
    truth = reference_sample(t, 0, 400)[rng.permutation(400)]
    m = mode_metrics(t, truth + 0 * rng.standard_normal(truth.shape), obs)
    assert m["eval/modes_covered"] == 1.0 and m["eval/off_support"] < 0.03
    fresh, _ = t.sample_modes(50, np.random.default_rng(2), 0)          # another sample of the mixture
    assert mode_metrics(t, fresh, obs)["eval/mmd"] < 0.08
    # a mode with a few stray actions is not covered (1/4 of its fair share is the bar)
    few = np.concatenate([one_mode[:390], np.repeat(t.centres[0, 0][None], 10, 0)])
    assert mode_metrics(t, few, obs)["eval/modes_covered"] == pytest.approx(1 / 8)

    b = TASKS["bandit"]
    best = np.repeat([[0.8, -0.8]], 100, axis=0)
    m = mode_metrics(b, best, np.zeros((100, 2)))
    assert m["eval/best_mode_share"] == 1.0 and m["eval/modes_covered"] == 0.25
    assert b.reward(best, np.zeros(100, int)).mean() == 5.0

    s = TASKS["modes-state"]                                            # per state: mode 0 of every state
    states = np.repeat(np.arange(4), 50)
    acts = s.centres[states, 0]
    m = mode_metrics(s, acts, np.eye(4)[states])
    assert m["eval/modes_covered"] == pytest.approx(0.5) and m["eval/off_support"] == 0.0


class _FixedPolicy:
    """A stand-in algorithm for run_episodes: acts a fixed list of actions in order (one per env)."""
    obs_horizon = 1

    def __init__(self, actions):
        self.actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        self.i = 0

    def reset(self, n):
        pass

    def act(self, obs):
        n = obs.shape[0]
        a = self.actions[self.i:self.i + n]
        self.i += n
        return a.unsqueeze(1)


def test_rollout_records_the_first_actions_and_summarize_adds_the_metrics():
    from platform.envs import make_env
    from platform.evaluation import run_episodes, summarize

    t = TASKS["modes8"]
    actions = np.concatenate([t.centres[0, :2].repeat(5, 0), [[1.5, 0.0]] * 2])  # 2 modes, 2 out of the box
    eps = run_episodes(_FixedPolicy(actions), [lambda: make_env("ToyModes8-v0")] * 4, list(range(12)))
    assert [e["length"] for e in eps] == [1] * 12
    assert np.allclose([e["first_action"] for e in eps][:10], actions[:10], atol=1e-6)
    assert np.allclose(eps[10]["first_action"], [1.0, 0.0])           # the clipped action the env stepped
    m = summarize(eps, "ToyModes8-v0", 0.0, 1.0)
    assert m["eval/modes_covered"] == pytest.approx(2 / 8)
    assert m["eval/off_support"] == pytest.approx(2 / 12)
    assert m["eval/normalized_score"] == pytest.approx(100 * 10 / 12)
    assert m["eval/action_out_of_box"] == pytest.approx(2 / 12)       # the health metrics stay beside them
    sample = json.loads(m["eval/actions_sample"])
    assert len(sample) == 12 and sample[0][:2] == pytest.approx(list(t.centres[0, 0]), abs=1e-3)
    assert "eval/modes_covered" not in summarize(eps, "Pendulum-v1", 0.0, 1.0)


def test_history_keeps_text_metrics_per_seed():
    from platform import history

    out = history.flatten({0: {"eval/mmd": 0.1, "eval/actions_sample": "[[0,0,0]]"},
                           1: {"eval/mmd": 0.3, "eval/actions_sample": "[[1,1,0]]"}})
    assert out["eval/mmd"] == pytest.approx(0.2) and "eval/actions_sample" not in out
    assert history.seed_records(out)[1]["eval/actions_sample"] == "[[1,1,0]]"


@pytest.mark.parametrize("study", ["search_spaces/modes.yaml", "search_spaces/bandit.yaml"])
def test_studies_validate_and_their_sequence_models_get_one_window_per_episode(study):
    import algorithms
    from platform.training import make_sampler

    proc = subprocess.run([sys.executable, "-m", "platform.sweep", study, "--dry-run"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = yaml.safe_load(open(study))
    data = load_dataset(spec["dataset"])
    for name in spec["algorithm"]["grid"]:
        algo = algorithms.build(name, algorithms.build_config(name, spec["config"].get(name, {})), data.env_spec())
        sampler = make_sampler(data, algo, torch.device("cpu"))
        if algo.data_kind == "sequences":  # one-step episodes: the YAML's horizons must leave each one a window
            assert len(sampler.sampler.rows) == len(data), name


def test_report_draws_the_actions_and_states_the_numbers(tmp_path):
    import pandas as pd

    from platform.envs.toy_tasks import actions_sample
    from platform.report import build_report

    t, rows = TASKS["bandit"], []
    for trial, algo, centre in (("t0", "dql", [0.8, -0.8]), ("t1", "bc", [0.0, 0.0])):
        for seed in (0, 1):
            a = np.array(centre) + 0.03 * np.random.default_rng(seed).standard_normal((200, 2))
            m = mode_metrics(t, a, np.zeros((200, 2)))
            rows.append({"sweep": "toy", "trial_id": trial, "algorithm": algo, "dataset": "toy:bandit",
                         "env": t.env_id, "seed": seed, "step": 100, "status": "TERMINATED",
                         "eval/normalized_score": 20.0 * t.reward(a, np.zeros(200, int)).mean(), **m,
                         "eval/actions_sample": actions_sample(a, np.zeros((200, 2)), t)})
    pd.DataFrame(rows).to_parquet(tmp_path / "metrics.parquet")
    build_report([str(tmp_path / "metrics.parquet")], str(tmp_path / "report"))
    text = (tmp_path / "report" / "README.md").read_text()
    assert "## Modes of the evaluated actions" in text and "Diffusion-QL, Wang et al. 2023, Figure 1" in text
    assert "| dql | t0 | 2 | 100 | 0.25 ± 0.00 | 0.00 ± 0.00 |" in text
    assert "Most on the best corner: dql (100%)" in text
    assert (tmp_path / "report" / "figures" / "actions-toy-bandit-toybandit-v0.png").exists()
