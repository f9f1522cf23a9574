"""Learning checks on the robot benchmarks that have demonstrations here (slow).

Run with `python -m pytest -m slow tests/test_learning_robotics.py`.  In-process, one thread: BET (the
cheapest of the sequence policies that solve these tasks: ~10 steps/s at batch 256) trained on the
scripted demonstrations of ``platform/datasets/demos.py`` and evaluated on 20 fixed test seeds, against
the uniform-random policy on the same seeds.  Measured (2026-11-29, 2 shared cores): Block Pushing
0.05 / 1.00 success after 1000 / 3000 steps (random 0.0); robosuite Lift 0.70 / 1.00 (random 0.0).

Franka Kitchen, AntMaze and Adroit pen have no demonstrations or offline data here (their Minari/D4RL
files cannot be downloaded and there is no scripted expert), so they only have the end-to-end plumbing
test in test_envs_robotics.py.
"""
import os

import numpy as np
import pytest
import torch

import algorithms
from platform.datasets import load_dataset
from platform.envs import make_env
from platform.evaluation import run_episodes, summarize
from platform.training import make_sampler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TEST_SEEDS = list(range(100_000, 100_020))


class UniformRandomPolicy:
    """The floor of every success-rate check: uniform actions in the env's bounds."""

    obs_horizon = 1

    def __init__(self, low, high):
        self.low, self.high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, 1, obs_dim)`` -> ``(B, 1, act_dim)``."""
        u = torch.rand(obs.shape[0], 1, self.low.shape[0])
        return self.low + u * (self.high - self.low)


def _success(policy, data) -> float:
    episodes = run_episodes(policy, [lambda: make_env(data.env_id) for _ in range(10)], TEST_SEEDS)
    return summarize(episodes, data.env_id, data.ref_min_score, data.ref_max_score)["eval/success_rate"]


@pytest.mark.parametrize("task,module", [("blockpush", "pybullet"), ("lift", "robosuite")])
def test_bet_learns_from_scripted_demos(task, module, data_dir):
    pytest.importorskip(module)
    from platform.datasets.robotics import scripted_path
    from platform.datasets.demos import generate_demos

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if not os.path.exists(scripted_path(task)):
        generate_demos(task, scripted_path(task))
    data = load_dataset(f"scripted:{task}")
    spec = data.env_spec()
    random_success = _success(UniformRandomPolicy(spec.act_low, spec.act_high), data)

    torch.manual_seed(0)
    algo = algorithms.build("bet", {}, spec)
    sampler = make_sampler(data, algo, torch.device("cpu"))
    sampler.reseed(0, 0)
    losses = [algo.update(sampler.sample(256))["train/loss"] for _ in range(3000)]
    success = _success(algo, data)
    print(f"{task}: BET success {success:.2f} after 3000 steps (random {random_success:.2f}); "
          f"loss {np.mean(losses[:100]):.3f} -> {np.mean(losses[-100:]):.3f}")
    assert random_success <= 0.1
    assert np.mean(losses[-100:]) < np.mean(losses[:100])
    assert success >= 0.8
