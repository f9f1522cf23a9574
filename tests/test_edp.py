"""EDP: the one-step action approximation, DPM-Solver, and no gradient through any sampling step."""
import math

import pytest
import torch

from algorithms import EnvSpec
from algorithms.diffusion.dpm_solver import dpm_solver_sample, solver_timesteps
from algorithms.diffusion.schedules import DiffusionSchedule
from algorithms.edp import EDP, EDPConfig

torch.set_num_threads(1)
SPEC = EnvSpec(obs_dim=3, act_dim=2)


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(n, 3, generator=g), "actions": torch.rand(n, 2, generator=g) * 2 - 1,
            "rewards": torch.randn(n, generator=g), "next_observations": torch.randn(n, 3, generator=g),
            "terminals": torch.zeros(n)}


def test_x0_hat_matches_closed_form():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=100), SPEC)
    b = batch()
    torch.manual_seed(1)
    a0_hat, eps_pred, eps, k = algo.action_approximation(b["observations"], b["actions"])
    abar = algo.schedule.alphas_cumprod[k].unsqueeze(-1)
    a_k = abar.sqrt() * b["actions"] + (1 - abar).sqrt() * eps
    expected = ((a_k - (1 - abar).sqrt() * eps_pred) / abar.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(a0_hat, expected, rtol=1e-4, atol=1e-5)
    # with the true noise the approximation recovers the dataset action exactly
    torch.testing.assert_close(algo.schedule.x0_from_eps(a_k, k, eps), b["actions"], rtol=1e-3, atol=1e-4)


def _grad_fn_names(t):
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack += [f for f, _ in fn.next_functions]
    return names


def test_actor_gradient_never_flows_through_sampling():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=1000), SPEC)
    b = batch()
    a0_hat, *_ = algo.action_approximation(b["observations"], b["actions"])
    q = algo.critic.q1(b["observations"], a0_hat).mean()
    # count the actor network calls in the graph: exactly one (its first Linear's AddmmBackward)
    first = algo.actor.parameters().__next__()
    n_mm = sum(1 for n in _grad_fn_names(q) if n == "AddmmBackward0")
    n_critic_layers = sum(1 for m in algo.critic.q1_net.modules() if isinstance(m, torch.nn.Linear)) \
        if hasattr(algo.critic, "q1_net") else None
    assert first.grad is None
    q.backward()
    assert first.grad is not None and torch.isfinite(first.grad).all()
    # sampled actions (critic targets, acting) carry no graph at all
    s = algo.sample(b["observations"])
    assert not s.requires_grad and s.grad_fn is None
    actor_linears = sum(1 for m in algo.actor.modules() if isinstance(m, torch.nn.Linear))
    if n_critic_layers is not None:
        assert n_mm == actor_linears + n_critic_layers


@pytest.mark.parametrize("backbone", ["td3", "iql"])
def test_update_and_act(backbone):
    torch.manual_seed(0)
    algo = EDP(EDPConfig(backbone=backbone, n_timesteps=100, sampler_steps=5, n_action_samples=4), SPEC)
    m = algo.update(batch())
    for key in ("train/bc_loss", "train/critic_loss", "train/actor_loss", "train/q_mean"):
        assert math.isfinite(m[key]), key
    a = algo.act(torch.randn(5, 1, 3))
    assert a.shape == (5, 1, 2) and (a.abs() <= 1).all()
    state = algo.state_dict()
    other = EDP(EDPConfig(backbone=backbone, n_timesteps=100, sampler_steps=5, n_action_samples=4), SPEC)
    other.load_state_dict(state)
    torch.manual_seed(3)
    x = algo.act(torch.ones(2, 1, 3))
    torch.manual_seed(3)
    y = other.act(torch.ones(2, 1, 3))
    torch.testing.assert_close(x, y)


def test_bc_loss_falls():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=100, alpha=0.0, sampler_steps=3), SPEC)
    b = batch(256)
    first = algo.update(b)["train/bc_loss"]
    for _ in range(150):
        last = algo.update(b)["train/bc_loss"]
    assert last < 0.6 * first


def mixture_eps(x, k, schedule, means, std, weights):
    """Exact eps-prediction for a 1-D Gaussian mixture data distribution (analytic score)."""
    abar = schedule.alphas_cumprod[k].unsqueeze(-1)
    m = abar.sqrt() * means                       # (B, M)
    var = abar * std**2 + (1 - abar)              # (B, 1)
    logp = torch.log(weights) - 0.5 * (x - m) ** 2 / var
    post = torch.softmax(logp, dim=-1)
    score = (post * (m - x) / var).sum(-1, keepdim=True)
    return -(1 - abar).sqrt() * score


def test_dpm_solver_matches_mixture_moments():
    sched = DiffusionSchedule(1000, "linear")
    means, std, weights = torch.tensor([-0.6, 0.5]), 0.08, torch.tensor([0.3, 0.7])
    fn = lambda x, k: mixture_eps(x, k, sched, means, std, weights)
    g = torch.Generator().manual_seed(0)
    x = dpm_solver_sample(fn, sched, (20000, 1), n_steps=25, generator=g)
    # tolerance: mode weights within 2 points, mode means within 0.01, std within 0.01 (20k samples)
    assert abs((x > 0).float().mean().item() - 0.7) < 0.02
    assert abs(x[x > 0].mean().item() - 0.5) < 0.01 and abs(x[x < 0].mean().item() + 0.6) < 0.01
    assert abs(x[x > 0].std().item() - std) < 0.01
    ts = solver_timesteps(sched.alphas_cumprod, 15).tolist()
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True) and len(ts) == 16
