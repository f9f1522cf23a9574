"""Learning tests (slow; run with `python -m pytest -m slow tests/test_learning.py`).

In-process training on the generated Pendulum-v1 medium dataset (20k transitions, normalized score
of the data itself: about 36), evaluated on 10 fixed seeds per model, 2 training seeds per method.
"""
import time

import numpy as np
import pytest
import torch

import algorithms
from platform.datasets import load_dataset
from platform.envs import make_env
from platform.evaluation import run_episodes, summarize
from platform.training import TransitionSampler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def train_and_score(name: str, steps: int, seed: int, **params) -> tuple[float, float]:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    data = load_dataset("generated:pendulum-medium")
    torch.manual_seed(seed)
    algo = algorithms.build(name, params, data.env_spec())
    algo.fit_dataset(data)
    sampler = TransitionSampler(data, torch.device("cpu"))
    sampler.reseed(seed, 0)
    t0 = time.perf_counter()
    for _ in range(steps):
        algo.update(sampler.sample(256))
    wall = time.perf_counter() - t0
    episodes = run_episodes(algo, [lambda: make_env(data.env_id) for _ in range(10)], list(range(100_000, 100_010)))
    score = summarize(episodes, data.env_id, data.ref_min_score, data.ref_max_score)["eval/normalized_score"]
    print(f"{name} seed {seed}: normalized {score:.1f} after {steps} steps in {wall:.0f}s", flush=True)
    return score, wall


def test_dql_beats_behaviour_cloning(data_dir):
    dql = [train_and_score("dql", 3000, s)[0] for s in (0, 1)]
    bc = [train_and_score("bc", 3000, s)[0] for s in (0, 1)]
    print(f"DQL {np.mean(dql):.1f} vs BC {np.mean(bc):.1f}")
    assert np.mean(dql) > np.mean(bc) + 5


def test_edp_matches_dql_in_less_time(data_dir):
    """EDP at its paper's setting (K = 1000, DPM-Solver with 15 steps for the TD target and acting) scores like
    Diffusion-QL (K = 5) in less training time.  With 5 solver steps EDP scored 43.3 / 37.3 here against DQL's
    89.1 / 90.9 (2026-12-01): too few steps for a K = 1000 chain; with 15: 92.1 / 91.1."""
    dql = [train_and_score("dql", 3000, s) for s in (0, 1)]
    edp = [train_and_score("edp", 3000, s, n_timesteps=1000, sampler_steps=15) for s in (0, 1)]
    d_score, d_wall = np.mean([x[0] for x in dql]), np.sum([x[1] for x in dql])
    e_score, e_wall = np.mean([x[0] for x in edp]), np.sum([x[1] for x in edp])
    print(f"DQL {d_score:.1f} in {d_wall:.0f}s vs EDP {e_score:.1f} in {e_wall:.0f}s")
    assert e_score >= d_score - 5 and e_wall < d_wall


def test_edp_learns_at_every_k(data_dir):
    """EDP's linear_scaled schedule ends near pure noise at any K: K=5 and K=1000 both learn (the unscaled
    linear schedule scored 76.1 at K=5 vs 89.2 at K=1000 here, seed 0, with the earlier EDP).  At K = 5 the
    noise-prediction DPM-Solver is refused (it stops on a noisy step): the 5-step chain samples instead."""
    scores = {K: np.mean([train_and_score("edp", 3000, s, n_timesteps=K, **({"sampler": "ddpm"} if K < 20 else {}))[0]
                          for s in (0, 1)]) for K in (5, 1000)}
    print(f"EDP K=5 {scores[5]:.1f}, K=1000 {scores[1000]:.1f}")
    assert scores[5] > 70 and scores[1000] > 70
