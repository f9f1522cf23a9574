"""Every sampler setting the configs accept samples its model's distribution: checked with the exact noise
predictor of a known two-mode mixture, so a failure is the sampler's, never a network's.

The data: actions in [-1, 1] from 0.3 N(-0.6, 0.08^2) + 0.7 N(0.5, 0.08^2) (``tests/test_edp.py``'s mixture).
For each accepted (sampler, K, steps, order), 4000 samples must stay in the box (at most 0.5% beyond it by more
than 0.02: EDP's DPM-Solver leaves its last step unclipped, as the authors' code) and lie within W1 0.1 of the
data beyond what the full K-step DDPM chain reaches with the same predictor (the chain is blurred at small K).
A refused setting must say why in one line, and a study that names it exits 2 before anything starts.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from algorithms.diffusion.dpm_solver import (dpm_solver_eps_sample, dpm_solver_sample, host_alphas_cumprod,
                                             sampler_problem)
from algorithms.diffusion.samplers import ddim_sample, ddpm_sample
from algorithms.diffusion.schedules import DiffusionSchedule
from algorithms.edp import EDPConfig

MEANS, STD, WEIGHTS = torch.tensor([-0.6, 0.5]), 0.08, torch.tensor([0.3, 0.7])
N = 4000
KS = (5, 20, 100, 1000)
STEPS = range(3, 21)


def eps_exact(x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The mixture's exact eps-prediction at noise level ``abar``: ``x (B, 1) -> (B, 1)``."""
    m, var = abar.sqrt() * MEANS, abar * STD ** 2 + (1 - abar)
    post = torch.softmax(torch.log(WEIGHTS) - 0.5 * (x - m) ** 2 / var, dim=-1)
    return -(1 - abar).sqrt() * (post * (m - x) / var).sum(-1, keepdim=True)


def reference() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    comp = torch.multinomial(WEIGHTS, N, replacement=True, generator=g)
    return (MEANS[comp] + STD * torch.randn(N, generator=g)).sort().values


REF = reference()


def w1(x: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance to the data sample (equal sizes: mean gap of the sorted samples)."""
    return (x.flatten().sort().values - REF).abs().mean().item()


def predictors(sched: DiffusionSchedule):
    """(discrete-step eps_fn(x, k), continuous-time eps_fn(x, t_in)) of the exact mixture under ``sched``."""
    K = sched.n_timesteps
    abar = host_alphas_cumprod(sched).numpy()
    grid = np.linspace(0, 1, K + 1)[1:]

    def at_k(x, k):
        return eps_exact(x, torch.tensor(float(abar[int(k[0])]), dtype=torch.float32))

    def at_t(x, t_in):  # DPM-Solver's continuous time: log alpha piecewise linear between the grid times
        la = float(np.interp((float(t_in[0]) + 1) / K, grid, 0.5 * np.log(abar)))
        return eps_exact(x, torch.tensor(math.exp(2 * la), dtype=torch.float32))

    return at_k, at_t


def settings():
    """Every (sampler, schedule, K, steps, order) of the grid, accepted or not."""
    for K in KS:
        for n in STEPS:
            for order in (1, 2, 3):
                yield "dpm_solver", "linear_scaled", K, n, order
            yield "dpm_solver_pp", "linear_scaled", K, n, None
            if n <= K:  # Diffusion Policy's schedule (squaredcos_cap_v2), both of its DDIM timestep rules
                yield "ddim", "cosine", K, n, None            # ddim_spacing "leading" (diffusers', the default)
                yield "ddim_linspace", "cosine", K, n, None   # ddim_spacing "linspace" (the named option)


def accepted(sampler: str, K: int, n: int, order) -> bool:
    """What validation says: EDP's config for its solvers, the shared rule for Diffusion Policy's DDIM."""
    if sampler.startswith("ddim"):  # one threshold for both timestep rules
        return sampler_problem("ddim", K, n) is None
    try:
        EDPConfig(sampler=sampler, n_timesteps=K, sampler_steps=n, dpm_order=order or 3)
        return True
    except ValueError as e:
        assert "sampler" in str(e) and "\n" not in str(e), e  # one line naming the setting
        return False


def sample(sampler: str, sched, n: int, order) -> torch.Tensor:
    at_k, at_t = predictors(sched)
    g = torch.Generator().manual_seed(0)
    if sampler == "dpm_solver":
        return dpm_solver_eps_sample(at_t, sched, (N, 1), n, order=order, generator=g, clip=1.0)
    if sampler == "dpm_solver_pp":
        return dpm_solver_sample(at_k, sched, (N, 1), n, generator=g, clip=1.0)
    return ddim_sample(at_k, sched, (N, 1), n, generator=g, clip=1.0,
                       spacing="linspace" if sampler == "ddim_linspace" else "leading")


def test_every_accepted_sampler_setting_stays_in_the_box_and_matches_the_data():
    chain_w1, bad, n_accepted = {}, [], 0
    for sampler, kind, K, n, order in settings():
        if not accepted(sampler, K, n, order):
            continue
        n_accepted += 1
        sched = DiffusionSchedule(K, kind)
        if (K, kind) not in chain_w1:
            at_k, _ = predictors(sched)
            chain_w1[K, kind] = w1(ddpm_sample(at_k, sched, (N, 1), clip=1.0, generator=torch.Generator().manual_seed(0)))
        x = sample(sampler, sched, n, order)
        out = (x.abs() > 1.02).float().mean().item()
        dist = w1(x)
        if out > 0.005 or not dist <= chain_w1[K, kind] + 0.1:
            bad.append(f"{sampler} K={K} steps={n} order={order}: {out:.1%} out of the box, W1 {dist:.3f} "
                       f"(chain {chain_w1[K, kind]:.3f})")
    assert n_accepted >= 100, n_accepted  # the grid is mostly accepted: the rules refuse traps, not the space
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("sampler,K,n,order", [
    ("dpm_solver", 1000, 5, 3),    # the tables' old EDP setting: 65% of samples out of the box
    ("dpm_solver", 1000, 20, 3),   # last step of order 2
    ("dpm_solver", 1000, 14, 2),   # order 2, even calls: last step of order 2
    ("dpm_solver", 5, 15, 3),      # K = 5: the solver stops on a noisy step
    ("dpm_solver_pp", 1000, 3, None),
    ("ddim_linspace", 100, 5, None),  # W1 0.13 (chain 0.012)
    ("ddim", 100, 3, None),           # diffusers' timesteps: W1 0.16 at 3 (0.08 at 5 would pass the bound)
])
def test_broken_sampler_settings_are_refused(sampler, K, n, order):
    assert not accepted(sampler, K, n, order)
    sched = DiffusionSchedule(K, "cosine" if sampler.startswith("ddim") else "linear_scaled")
    x = sample(sampler, sched, n, order or 3)
    at_k, _ = predictors(sched)
    chain = w1(ddpm_sample(at_k, sched, (N, 1), clip=1.0, generator=torch.Generator().manual_seed(0)))
    # what the refusal protects from, measured: out of the box, or far from the data
    assert (x.abs() > 1.02).float().mean().item() > 0.005 or w1(x) > chain + 0.1


def test_the_authors_edp_setting_is_accepted():
    EDPConfig()  # K = 1000, DPM-Solver, 15 calls, order 3
    EDPConfig(sampler="dpm_solver_pp", sampler_steps=5)  # the labelled few-step alternative


def test_a_study_with_the_broken_edp_sampler_exits_2_in_one_line(tmp_path):
    study = tmp_path / "edp5.yaml"
    study.write_text("name: edp5\nalgorithm: edp\ndataset: generated:pendulum-medium\n"
                     "config: {sampler: dpm_solver, sampler_steps: 5}\ntrain: {steps: 10, seeds: [0]}\n")
    proc = subprocess.run([sys.executable, "-m", "platform.sweep", str(study), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "edp5.yaml" in lines[0] and "sampler_steps" in lines[0] \
        and "dpm_solver_pp" in lines[0], lines
