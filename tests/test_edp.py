"""EDP: the one-step action approximation, DPM-Solver, and no gradient through any sampling step."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from algorithms import EnvSpec
from algorithms.diffusion.dpm_solver import dpm_solver_sample, solver_timesteps
from algorithms.diffusion.schedules import DiffusionSchedule
from algorithms.edp import EDP, EDPConfig
from algorithms.iql import expectile_loss

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


@pytest.mark.parametrize("backbone", ["td3", "iql", "crr"])
def test_update_and_act(backbone):
    torch.manual_seed(0)
    algo = EDP(EDPConfig(backbone=backbone, n_timesteps=100, sampler_steps=10, n_action_samples=4), SPEC)
    m = algo.update(batch())
    for key in ("train/bc_loss", "train/critic_loss", "train/actor_loss", "train/q_mean"):
        assert math.isfinite(m[key]), key
    a = algo.act(torch.randn(5, 1, 3))
    # EDP's DPM-Solver keeps x0 in the box through eps clipping and leaves the last sample unclipped
    assert a.shape == (5, 1, 2) and (a.abs() <= 1.05).all()
    state = algo.state_dict()
    other = EDP(EDPConfig(backbone=backbone, n_timesteps=100, sampler_steps=10, n_action_samples=4), SPEC)
    other.load_state_dict(state)
    torch.manual_seed(3)
    x = algo.act(torch.ones(2, 1, 3))
    torch.manual_seed(3)
    y = other.act(torch.ones(2, 1, 3))
    torch.testing.assert_close(x, y)


def test_bc_loss_falls():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=100, alpha=0.0, sampler_steps=10), SPEC)
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
    sched = DiffusionSchedule(1000, "linear_scaled")
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


# ----------------------------------------------------------------------------- fidelity to the authors' code


@pytest.mark.parametrize("K", [5, 20, 100, 1000])
def test_linear_scaled_schedule_ends_near_pure_noise(K):
    """EDP's linear schedule is rescaled by 1000/K (capped at 0.999): abar_K ~ 0 at every K; DQL's is not."""
    from algorithms.diffusion.schedules import make_betas

    assert EDPConfig().beta_schedule == "linear_scaled"
    sched = DiffusionSchedule(K, "linear_scaled")
    assert float(sched.alphas_cumprod[-1]) < 0.01 and float(sched.betas.max()) < 1.0
    if K <= 20:  # the VP schedule there, not a chain of betas capped below 1
        torch.testing.assert_close(make_betas("linear_scaled", K), make_betas("vp", K))
    if K == 1000:  # the same as DDPM's at K = 1000
        torch.testing.assert_close(make_betas("linear_scaled", K), make_betas("linear", K))
    else:  # the unscaled one (Diffusion-QL's, kept as "linear") leaves abar_K far from 0
        assert float(DiffusionSchedule(K, "linear").alphas_cumprod[-1]) > 0.3


def test_iql_backbone_loss_by_hand():
    """Policy loss = eps-MSE + mean w * 0.5 ||a - clip(a0_hat)||^2, w from the V updated in the same step."""
    torch.manual_seed(0)
    algo = EDP(EDPConfig(backbone="iql", n_timesteps=100, sampler="ddpm", norm_reward=False), SPEC)
    ref = copy.deepcopy(algo)
    b = batch(64)
    torch.manual_seed(7)
    m = algo.update(b)
    torch.manual_seed(7)
    s, a = b["observations"], b["actions"].clamp(-0.999, 0.999)
    a0_hat, eps_pred, eps, _ = ref.action_approximation(s, a)
    with torch.no_grad():
        q_t = torch.min(*ref.critic_target(s, a))
    v_loss = expectile_loss(q_t - ref.value(s), 0.7)
    ref._step(ref.value_opt, v_loss, list(ref.value.parameters()))       # V first, as the code
    with torch.no_grad():
        w = torch.exp(3.0 * (q_t - ref.value(s))).clamp(max=100.0)
    guide = (w * 0.5 * ((a - a0_hat) ** 2).sum(-1, keepdim=True)).mean()
    diff = ((eps_pred - eps) ** 2).mean()
    assert m["train/bc_loss"] == pytest.approx(diff.item(), rel=1e-5)
    assert m["train/ql_loss"] == pytest.approx(guide.item(), rel=1e-5)
    assert m["train/actor_loss"] == pytest.approx(diff.item() + guide.item(), rel=1e-5)
    assert m["train/value_loss"] == pytest.approx(v_loss.item(), rel=1e-5)


@pytest.mark.parametrize("crr", [dict(), dict(crr_beta=0.002), dict(crr_fn="binary"), dict(crr_avg="max")],
                         ids=["exp", "exp-clipped", "binary", "max"])
def test_crr_backbone_loss_by_hand(crr):
    """Policy loss = eps-MSE - mean_b lambda_b log N(a_b; clip(a0_hat_b), I) (up to its constant), lambda =
    min(exp(A / beta), 20) or 1[A > 0], A = min(Q1, Q2)(s, a) - mean (or max) over 10 a_j ~ N(a0_hat, I) of
    min(Q1, Q2)(s, a_j), with the online critics before this step's update (the public code's CRR backbone)."""
    torch.manual_seed(0)
    c = EDPConfig(backbone="crr", n_timesteps=100, sampler="ddpm", **crr)
    algo = EDP(c, SPEC)
    ref = copy.deepcopy(algo)
    b = batch(64)
    torch.manual_seed(7)
    m = algo.update(b)
    torch.manual_seed(7)   # the step's draws in its order: k and eps, the target actions' chain, then the a_j
    s, a = b["observations"], b["actions"].clamp(-0.999, 0.999)
    a0_hat, eps_pred, eps, _ = ref.action_approximation(s, a)
    with torch.no_grad():
        ref.sample(b["next_observations"], ref.ema_actor)
        noise = torch.randn(64, 10, 2)

        def q_min(actions):
            x = torch.cat([s, actions], -1)
            return torch.minimum(ref.critic.q1_model(x), ref.critic.q2_model(x))[:, 0]

        q_j = torch.stack([q_min(a0_hat + noise[:, j]) for j in range(10)], 1)        # (64, 10)
        v = q_j.mean(1) if c.crr_avg == "mean" else q_j.max(1).values
        adv = q_min(a) - v
        lam = torch.exp(adv / c.crr_beta).clamp(max=20.0) if c.crr_fn == "exp" else (adv > 0).float()
    guide = (lam * 0.5 * ((a - a0_hat) ** 2).sum(-1)).mean()
    diff = ((eps_pred - eps) ** 2).mean()
    if crr.get("crr_beta"):   # the clip is exercised: some weights at 20, some below
        assert bool((lam == 20.0).any()) and bool((lam < 20.0).any()), lam
    if c.crr_fn == "binary":
        assert 0 < float(lam.mean()) < 1, lam
    assert m["train/bc_loss"] == pytest.approx(diff.item(), rel=1e-5)
    assert m["train/ql_loss"] == pytest.approx(guide.item(), rel=1e-5)
    assert m["train/actor_loss"] == pytest.approx(diff.item() + guide.item(), rel=1e-5)


@pytest.mark.parametrize("backbone,n_clips", [("td3", 3), ("iql", 4), ("crr", 3)])
def test_every_network_clipped_at_the_task_norm(backbone, n_clips, monkeypatch):
    """Policy, Q1, Q2 (and V) each clipped on its own at the code's per-task gn, looked up from the dataset name."""
    algo = EDP(EDPConfig(backbone=backbone, n_timesteps=10, sampler="ddpm", n_action_samples=2), SPEC)
    data = SimpleNamespace(name="generated:walker2d-medium", rewards=np.arange(10.0), episode_ends=np.array([4, 10]))
    algo.fit_dataset(data)
    assert algo.grad_norm == 1.0
    algo.fit_dataset(SimpleNamespace(name="d4rl:hopper-medium-v2", rewards=np.arange(10.0),
                                     episode_ends=np.array([4, 10])))
    assert algo.grad_norm == 9.0
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, n: calls.append(n) or real(p, n))
    algo.update(batch())
    assert calls == [9.0] * n_clips
    other = EDP(EDPConfig(n_timesteps=10, sampler="ddpm"), SPEC)
    other.fit_dataset(SimpleNamespace(name="generated:pendulum-medium", rewards=np.arange(10.0),
                                      episode_ends=np.array([4, 10])))
    assert other.grad_norm == 1.0 and EDP(EDPConfig(grad_norm=4.0), SPEC).grad_norm == 4.0


def test_acting_uses_online_policy_and_online_critics():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=10, sampler="ddpm", n_action_samples=8), SPEC)
    for _ in range(3):
        algo.update(batch())
    obs = torch.randn(4, 1, 3)
    torch.manual_seed(5)
    before = algo.act(obs)
    with torch.no_grad():  # scramble what the code does not use for acting
        for p in [*algo.ema_actor.parameters(), *algo.critic_target.parameters()]:
            p.mul_(-3.0).add_(1.0)
    torch.manual_seed(5)
    torch.testing.assert_close(algo.act(obs), before)
    assert set(algo.policy_state_dict()) == {"actor", "critic"}

    # skew the online critics: Q1 = 1000 a[0], Q2 = -1000 a[0], so min(Q1, Q2) = -1000 |a[0]| and the softmax
    # picks, among the 8 candidates of a state, the one whose a[0] is nearest 0 (Q1 alone would pick the largest
    # a[0], Q2 alone the smallest, max(Q1, Q2) the farthest from 0, an act that ignores the critic any of them)
    class Linear0(torch.nn.Module):
        def __init__(self, sign):
            super().__init__()
            self.sign = sign

        def forward(self, x):
            return self.sign * 1000.0 * x[:, SPEC.obs_dim:SPEC.obs_dim + 1]

    algo.critic.q1_model, algo.critic.q2_model = Linear0(1.0), Linear0(-1.0)
    torch.manual_seed(5)
    picked = algo.act(obs)[:, 0]
    torch.manual_seed(5)   # the same candidates, by hand: 8 per state from the online policy
    cand = algo.sample(obs[:, -1].repeat_interleave(8, dim=0), algo.actor).view(4, 8, 2)
    want = cand[torch.arange(4), cand[..., 0].abs().argmin(1)]
    assert float(cand[..., 0].abs().std()) > 0.05  # the candidates differ, so the pick says something
    torch.testing.assert_close(picked, want)


def test_target_policy_keeps_initial_weights_until_step_1000():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=10, sampler="ddpm", step_start_ema=6, update_ema_every=5), SPEC)
    init = copy.deepcopy(algo.actor.state_dict())
    for _ in range(5):   # step 5 is an EMA tick before the start: no copy (the code)
        algo.update(batch())
    for k, v in algo.ema_actor.state_dict().items():
        torch.testing.assert_close(v, init[k])
    for _ in range(5):   # step 10 > 6: target <- 0.995 target + 0.005 policy
        algo.update(batch())
    k = "final_layer.weight"
    expected = 0.995 * init[k] + 0.005 * algo.actor.state_dict()[k]
    torch.testing.assert_close(algo.ema_actor.state_dict()[k], expected)
    assert EDPConfig().step_start_ema == 1000


def test_td3_guide_uses_a_random_head_of_the_critic_before_its_update():
    torch.manual_seed(0)
    algo = EDP(EDPConfig(n_timesteps=10, sampler="ddpm"), SPEC)
    heads_seen = set()
    for step in range(12):
        ref = copy.deepcopy(algo)
        b = batch(32, seed=step)
        torch.manual_seed(step)
        m = algo.update(b)
        torch.manual_seed(step)
        s, a = b["observations"], b["actions"].clamp(-0.999, 0.999)
        a0_hat, *_ = ref.action_approximation(s, a)
        with torch.no_grad():
            guides = []
            for head in (ref.critic.q1_model, ref.critic.q2_model):  # pre-update critic
                q = head(torch.cat([s, a0_hat], -1))
                guides.append((-(2.0 / q.abs().mean()) * q.mean()).item())
        match = [i for i, g in enumerate(guides) if m["train/ql_loss"] == pytest.approx(g, rel=1e-4)]
        assert len(match) == 1, (m["train/ql_loss"], guides)
        heads_seen.add(match[0])
    assert heads_seen == {0, 1}


def test_dataset_actions_and_rewards_as_the_code():
    algo = EDP(EDPConfig(n_timesteps=10, sampler="ddpm", backbone="iql"), SPEC)
    r = torch.tensor([[0.0], [1.0]])
    algo.fit_dataset(SimpleNamespace(name="d4rl:antmaze-umaze-v2", rewards=np.array([0.0, 1.0, 0.0]),
                                     episode_ends=np.array([2, 3])))
    assert algo.shaping == "antmaze" and not algo.norm_reward
    torch.testing.assert_close(algo.shape_rewards(r), r - 1.0)          # IQL: r - 1
    td3 = EDP(EDPConfig(n_timesteps=10, sampler="ddpm"), SPEC)
    td3.fit_dataset(SimpleNamespace(name="antmaze-umaze-v2", rewards=np.array([0.0, 1.0]), episode_ends=np.array([2])))
    torch.testing.assert_close(td3.shape_rewards(r), (r - 0.5) * 4.0)   # TD3 / CRR: (r - 0.5) * 4
    kitchen = EDP(EDPConfig(n_timesteps=10, sampler="ddpm"), SPEC)
    kitchen.fit_dataset(SimpleNamespace(name="minari:D4RL/kitchen/mixed-v2", rewards=np.array([0.0, 2.0, 4.0]),
                                        episode_ends=np.array([3])))
    torch.testing.assert_close(kitchen.shape_rewards(torch.tensor([[0.0], [2.0], [4.0]])),
                               torch.tensor([[-1.0], [0.0], [1.0]]))    # min-max to [-1, 1]
    pendulum = EDP(EDPConfig(n_timesteps=10, sampler="ddpm"), SPEC)
    pendulum.fit_dataset(SimpleNamespace(name="generated:pendulum-medium", rewards=np.array([-3.0, -1.0]),
                                         episode_ends=np.array([2])))
    assert pendulum.shaping == "none"  # "pendulum" is not Adroit's "pen"
    torch.testing.assert_close(pendulum.shape_rewards(r), r)
    loco = EDP(EDPConfig(n_timesteps=10, sampler="ddpm", backbone="iql"), SPEC)
    loco.fit_dataset(SimpleNamespace(name="generated:hopper-medium", rewards=np.array([1.0, 2.0, -1.0, 0.0, 7.0]),
                                     episode_ends=np.array([2, 4, 5])))
    assert loco.norm_reward and loco.reward_scale.item() == pytest.approx(125.0)  # 1000 / (7 - -1)
    # dataset actions at the bounds are pulled in to 0.999 of them
    assert torch.allclose(loco.data_high, torch.full((2,), 0.999))


def test_edp_dpm_solver_is_noise_prediction_singlestep_order3():
    """15 model calls in steps of order [3, 3, 3, 3, 2, 1], and the right moments on an analytic model."""
    from algorithms.diffusion.dpm_solver import dpm_solver_eps_plan, dpm_solver_eps_sample

    sched = DiffusionSchedule(1000, "linear_scaled")
    plan = dpm_solver_eps_plan(sched.alphas_cumprod, 15, 3, 1e-3)
    assert [p["order"] for p in plan] == [3, 3, 3, 3, 2, 1]
    assert plan[0]["s"]["t"] == 1.0 and plan[-1]["t"]["t"] == pytest.approx(1e-3)
    assert plan[-1]["t"]["t_in"] == pytest.approx(0.0, abs=1e-9)  # (t - 1/K) K at t_end = 1/K
    abar = sched.alphas_cumprod.double()
    grid = torch.linspace(0, 1, 1001, dtype=torch.float64)[1:]
    means, std, weights = torch.tensor([-0.6, 0.5]), 0.08, torch.tensor([0.3, 0.7])
    calls = []

    def fn(x, t_in):  # the exact eps of the mixture at the continuous time the solver asks for
        calls.append(1)
        t = (t_in[0].item() + 1) / 1000
        la = float(np.interp(t, grid.numpy(), 0.5 * np.log(abar.numpy())))
        ab = torch.tensor(math.exp(2 * la), dtype=torch.float32)
        m, var = ab.sqrt() * means, ab * std ** 2 + (1 - ab)
        post = torch.softmax(torch.log(weights) - 0.5 * (x - m) ** 2 / var, dim=-1)
        return -(1 - ab).sqrt() * (post * (m - x) / var).sum(-1, keepdim=True)

    g = torch.Generator().manual_seed(0)
    x = dpm_solver_eps_sample(fn, sched, (20000, 1), 15, generator=g, clip=1.0)
    assert len(calls) == 15
    assert abs((x > 0).float().mean().item() - 0.7) < 0.02
    # the code's intermediate points (uniform in time within each step) leave the narrow modes at 0.49 / -0.574
    assert abs(x[x > 0].mean().item() - 0.5) < 0.02 and abs(x[x < 0].mean().item() + 0.6) < 0.035


def test_results_before_the_twin_fix_read_as_the_old_time_embedding():
    """EDP results recorded before ``time_embedding`` existed ran Diffusion-QL's sinusoid: read as "dql", never as
    today's default; a new trial records the embedding it ran with."""
    import pandas as pd

    from platform import results

    raw = pd.read_parquet("reports/edp_steps/metrics.parquet")  # an EDP study run before e732f4d
    assert "config/time_embedding" not in raw.columns and (raw["algorithm"] == "edp").any()
    df = results.read_results("reports/edp_steps")
    assert (df.loc[df["algorithm"] == "edp", "config/time_embedding"] == "dql").all()
    assert results.with_changed_defaults("edp", {"n_timesteps": 100})["time_embedding"] == "edp"
