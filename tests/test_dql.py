"""Diffusion-QL (algorithms/dql.py): shapes, hand-computed loss pieces, EMA / Polyak math, the Q term's
effect on the actor gradient, determinism, checkpoints, action bounds and a short learning check."""
import copy
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import algorithms
from algorithms import EnvSpec
from algorithms.dql import DiffusionQL, DQLConfig, TwinQ, ema_update, select_by_q, soft_update

torch.set_num_threads(1)

SPEC = EnvSpec(obs_dim=4, act_dim=2, act_low=(-1.0, -0.5), act_high=(1.0, 0.5))
SMALL = dict(hidden_dim=32, n_action_samples=8)


def make(seed=0, spec=SPEC, **kw):
    torch.manual_seed(seed)
    return DiffusionQL(DQLConfig(**{**SMALL, **kw}), spec, "cpu")


def batch(n=16, spec=SPEC, seed=123):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.tensor(spec.act_low), torch.tensor(spec.act_high)
    return {"observations": torch.randn(n, spec.obs_dim, generator=g),
            "actions": low + (high - low) * torch.rand(n, spec.act_dim, generator=g),
            "rewards": torch.randn(n, generator=g),
            "next_observations": torch.randn(n, spec.obs_dim, generator=g),
            "terminals": (torch.rand(n, generator=g) < 0.3).float()}


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def constant_critic(critic: TwinQ, c1: float, c2: float):
    """Make both heads constant: last layer weights 0, biases c1 / c2."""
    with torch.no_grad():
        for head, c in ((critic.q1_model, c1), (critic.q2_model, c2)):
            head[-1].weight.zero_()
            head[-1].bias.fill_(c)


# ----------------------------------------------------------------------------- interface


def test_registry_and_config_defaults_are_the_papers():
    cfg_cls, algo_cls = algorithms.REGISTRY["dql"]
    assert cfg_cls is DQLConfig and algo_cls is DiffusionQL and DiffusionQL.data_kind == "transitions"
    c = DQLConfig()
    assert (c.eta, c.n_timesteps, c.beta_schedule, c.gamma, c.tau, c.lr, c.hidden_dim) == (1.0, 5, "vp", 0.99, 0.005,
                                                                                         3e-4, 256)
    assert (c.ema_decay, c.step_start_ema, c.update_ema_every, c.n_action_samples) == (0.995, 1000, 5, 50)
    assert not (c.max_q_backup or c.lr_decay or c.act_with_ema or c.ema_copy_before_start)
    assert c.reward_shaping == "none" and c.grad_norm == 1.0


@pytest.mark.parametrize("bad, match", [(dict(eta=-1.0), "eta"), (dict(n_timesteps=0), "n_timesteps"),
                                        (dict(eta="big"), "eta"),
                                        (dict(beta_schedule="sigmoid"), "beta_schedule"), (dict(tau=0.0), "tau"),
                                        (dict(ema_decay=1.0), "ema_decay"), (dict(reward_shaping="cql"), "reward"),
                                        (dict(grad_norm=-1.0), "grad_norm"), (dict(n_action_samples=0), "n_action")])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        DQLConfig(**bad)


def test_config_coerces_search_space_types():
    np = pytest.importorskip("numpy")
    c = DQLConfig(eta=np.float64(2.5), n_timesteps=np.int64(10), hidden_dim=64.0, grad_norm=9,
                  max_q_backup=np.bool_(True))
    assert type(c.eta) is float and type(c.n_timesteps) is int and c.n_timesteps == 10 and type(c.hidden_dim) is int
    assert type(c.grad_norm) is float and c.max_q_backup is True
    with pytest.raises(ValueError, match="n_timesteps must be an integer"):
        DQLConfig(n_timesteps=5.5)
    with pytest.raises(ValueError, match="act_with_ema must be true or false"):
        DQLConfig(act_with_ema="yes")


def test_update_and_act_shapes():
    algo = make()
    m = algo.update(batch())
    expected = {"bc_loss", "ql_loss", "actor_loss", "critic_loss", "q_mean", "new_q_mean", "target_q_mean",
                "actor_grad_norm", "critic_grad_norm"}
    assert set(m) == {f"train/{k}" for k in expected}
    assert all(torch.is_tensor(v) and v.dim() == 0 or isinstance(v, float) for v in m.values())
    a = algo.act(torch.randn(7, 1, SPEC.obs_dim))
    assert a.shape == (7, 1, SPEC.act_dim) and a.dtype == torch.float32
    assert algo.step == 1


def test_paper_size_networks():
    algo = make(spec=EnvSpec(17, 6), hidden_dim=256)
    assert sum(p.numel() for p in algo.actor.parameters()) == 144_438   # the public code's counts
    assert sum(p.numel() for p in algo.critic.parameters()) == 275_970


# ----------------------------------------------------------------------------- loss pieces by hand


@pytest.mark.parametrize("max_q_backup", [False, True])
@pytest.mark.parametrize("shaping", ["none", "antmaze"])
def test_critic_target_and_loss_by_hand(max_q_backup, shaping):
    """With constant target heads (Q1' = 2, Q2' = -1) the TD target is r + gamma (1 - d) (-1), whatever a' is."""
    algo = make(max_q_backup=max_q_backup, reward_shaping=shaping, n_backup_samples=3)
    constant_critic(algo.critic_target, 2.0, -1.0)
    b = batch()
    r = b["rewards"] if shaping == "none" else (b["rewards"] - 0.5) * 4.0
    target = r + 0.99 * (1 - b["terminals"]) * (-1.0)
    with torch.no_grad():
        q1, q2 = algo.critic(b["observations"], b["actions"])
    expected_loss = ((q1.squeeze(1) - target) ** 2).mean() + ((q2.squeeze(1) - target) ** 2).mean()
    m = algo.update(b)
    assert m["train/target_q_mean"] == pytest.approx(target.mean().item(), rel=1e-5, abs=1e-6)
    assert m["train/critic_loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    assert m["train/q_mean"] == pytest.approx(q1.mean().item(), rel=1e-5, abs=1e-6)


def test_q_loss_by_hand():
    q1 = torch.tensor([[1.0], [2.0], [3.0]])
    q2 = torch.tensor([[-1.0], [2.0], [-3.0]])
    fixed = make(random_q_head=False)
    assert fixed.q_loss(q1, q2).item() == pytest.approx(-2.0 / 2.0)       # -mean(Q1) / mean|Q2|
    rnd = make()
    seen = {round(rnd.q_loss(q1, q2).item(), 6) for _ in range(50)}
    assert seen == {-1.0, round(-(-2.0 / 3) / 2.0, 6)}                     # or -mean(Q2) / mean|Q1|


def test_q_loss_normalizer_is_detached():
    algo = make(random_q_head=False)
    q1 = torch.tensor([[1.0], [3.0]], requires_grad=True)
    q2 = torch.tensor([[2.0], [-2.0]], requires_grad=True)
    algo.q_loss(q1, q2).backward()
    torch.testing.assert_close(q1.grad, torch.full((2, 1), -0.5 / 2.0))    # d/dq1 of -mean(q1)/2
    assert q2.grad is None or torch.all(q2.grad == 0)


def test_bc_loss_by_hand():
    algo = make()
    b = batch()
    s, a = b["observations"], b["actions"]
    torch.manual_seed(7)
    got = algo.bc_loss(s, a)
    torch.manual_seed(7)
    k = torch.randint(0, 5, (16,))
    eps = torch.randn(16, 2)
    abar = algo.schedule.alphas_cumprod[k].unsqueeze(1)
    a_k = abar.sqrt() * a + (1 - abar).sqrt() * eps
    expected = ((algo.actor(a_k, k, s) - eps) ** 2).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# ----------------------------------------------------------------------------- EMA and Polyak


def test_polyak_update_math():
    algo = make(tau=0.005)
    target_before = params(algo.critic_target)
    algo.update(batch())
    for t0, t1, c in zip(target_before, params(algo.critic_target), params(algo.critic)):
        torch.testing.assert_close(t1, 0.995 * t0 + 0.005 * c)
    # the helpers themselves
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a0 = params(a)
    soft_update(a, b, 0.25)
    for x0, x1, y in zip(a0, params(a), params(b)):
        torch.testing.assert_close(x1, 0.75 * x0 + 0.25 * y)
    a0 = params(a)
    ema_update(a, b, 0.9)
    for x0, x1, y in zip(a0, params(a), params(b)):
        torch.testing.assert_close(x1, 0.9 * x0 + 0.1 * y)


def test_ema_schedule_follows_the_code():
    """EMA ticks at steps 0, 5, 10, ... (counted before the increment) once step >= step_start_ema;
    before that the EMA actor keeps its initial weights (public code) unless ema_copy_before_start."""
    b = batch()
    algo = make(step_start_ema=10, update_ema_every=5)
    init = params(algo.ema_actor)
    for _ in range(10):                                  # steps 0..9: before the start, no change
        algo.update(b)
    assert all(torch.equal(x, y) for x, y in zip(init, params(algo.ema_actor)))
    ema_before = params(algo.ema_actor)
    algo.update(b)                                       # step 10: the first EMA update, with the new actor
    for e0, e1, a in zip(ema_before, params(algo.ema_actor), params(algo.actor)):
        torch.testing.assert_close(e1, 0.995 * e0 + 0.005 * a)
    ema_before = params(algo.ema_actor)
    algo.update(b)                                       # step 11: not a tick
    assert all(torch.equal(x, y) for x, y in zip(ema_before, params(algo.ema_actor)))

    copying = make(step_start_ema=10, update_ema_every=5, ema_copy_before_start=True)
    for _ in range(6):                                   # the tick at step 5 copies the actor
        copying.update(b)
    ema_now, actor_now = params(copying.ema_actor), params(copying.actor)
    assert all(torch.equal(x, y) for x, y in zip(ema_now, actor_now))


# ----------------------------------------------------------------------------- the Q term


def test_eta_changes_the_actor_gradient_and_not_the_critic_step():
    b = batch()
    base = make(eta=0.0, grad_norm=0.0)
    guided = make(eta=1.0, grad_norm=0.0)
    s, a = b["observations"], b["actions"]
    actor_params = list(guided.actor.parameters())

    torch.manual_seed(1)
    g0 = torch.autograd.grad(guided.bc_loss(s, a), actor_params)
    torch.manual_seed(1)
    bc = guided.bc_loss(s, a)
    q1, q2 = guided.critic(s, guided.sample(s, grad=True))
    ql = guided.q_loss(q1, q2)
    g1 = torch.autograd.grad(bc + 1.0 * ql, actor_params)
    assert any(not torch.allclose(x, y) for x, y in zip(g0, g1))
    assert all(p.grad is None for p in guided.critic.parameters())

    # through update(): same seed -> identical critic step (it comes first), different actor step
    torch.manual_seed(2)
    m0 = base.update(b)
    torch.manual_seed(2)
    m1 = guided.update(b)
    m0, m1 = ({k: float(v) for k, v in m.items()} for m in (m0, m1))  # 0-d tensors -> numbers
    assert m0["train/critic_loss"] == m1["train/critic_loss"] and m0["train/ql_loss"] == 0.0
    assert m0["train/actor_grad_norm"] > 0 and m0["train/critic_grad_norm"] > 0  # reported without clipping too
    assert all(torch.equal(x, y) for x, y in zip(params(base.critic), params(guided.critic)))
    assert any(not torch.allclose(x, y) for x, y in zip(params(base.actor), params(guided.actor)))
    assert m1["train/actor_loss"] == pytest.approx(m1["train/bc_loss"] + m1["train/ql_loss"], rel=1e-5)


def test_grad_norm_clipping_bounds_the_step():
    algo = make(grad_norm=1e-3, lr=1.0)
    before = params(algo.actor)
    m = algo.update(batch())
    assert m["train/actor_grad_norm"] > 1e-3  # reported norm is the pre-clip one
    # Adam's first step moves each weight by ~lr regardless of scale; check clipping kept grads tiny instead
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in algo.actor.parameters()))
    assert total.item() == pytest.approx(1e-3, rel=1e-3)
    assert any(not torch.equal(x, y) for x, y in zip(before, params(algo.actor)))


# ----------------------------------------------------------------------------- determinism and checkpoints


def test_determinism_under_manual_seed():
    runs = []
    for _ in range(2):
        algo = make(seed=5)
        torch.manual_seed(9)
        ms = [algo.update(batch(seed=i)) for i in range(3)]
        torch.manual_seed(11)
        runs.append((ms, params(algo.actor), params(algo.critic), algo.act(torch.randn(4, 1, 4))))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(x, y) for x, y in zip(runs[0][1] + runs[0][2], runs[1][1] + runs[1][2]))
    assert torch.equal(runs[0][3], runs[1][3])
    assert not all(torch.equal(x, y) for x, y in zip(params(make(seed=6).actor), params(make(seed=5).actor)))


def _only_plain_values(x):
    if isinstance(x, dict):
        return all(_only_plain_values(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_only_plain_values(v) for v in x)
    return torch.is_tensor(x) or isinstance(x, (int, float, bool, str, type(None)))


def test_state_dict_round_trip_gives_identical_actions_and_training():
    a = make(seed=0, lr_decay=True, lr_decay_schedule="per_step", max_steps=100)
    for i in range(4):
        a.update(batch(seed=i))
    state = a.state_dict()
    assert _only_plain_values(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)  # plain tensors only: no pickled objects
    b = make(seed=1, lr_decay=True, lr_decay_schedule="per_step", max_steps=100)
    b.load_state_dict(loaded)
    assert b.step == 4
    obs = torch.randn(6, 1, 4)
    torch.manual_seed(3)
    act_a = a.act(obs)
    torch.manual_seed(3)
    act_b = b.act(obs)
    assert torch.equal(act_a, act_b)
    torch.manual_seed(4)
    ma = a.update(batch(seed=9))
    torch.manual_seed(4)
    mb = b.update(batch(seed=9))
    assert ma == mb
    assert a.actor_opt.param_groups[0]["lr"] == b.actor_opt.param_groups[0]["lr"] < 3e-4


@pytest.mark.parametrize("act_with_ema", [False, True])
def test_policy_state_dict_is_enough_to_act(act_with_ema):
    a = make(seed=0, act_with_ema=act_with_ema, step_start_ema=0, update_ema_every=1)
    for i in range(3):
        a.update(batch(seed=i))
    policy = a.policy_state_dict()
    assert set(policy) == {"ema_actor" if act_with_ema else "actor", "critic_target"}
    b = make(seed=1, act_with_ema=act_with_ema)
    b.load_state_dict(policy)
    obs = torch.randn(5, 1, 4)
    torch.manual_seed(0)
    act_a = a.act(obs)
    torch.manual_seed(0)
    assert torch.equal(act_a, b.act(obs))


def test_lr_decay_steps_like_the_code():
    """The code's cosine: T_max = num_epochs, stepped once per 50k gradient steps -> x0.999 over 2M steps."""
    c = DQLConfig(lr_decay=True)
    assert (c.lr_decay_schedule, c.lr_maxt, c.lr_step_every) == ("code", 2000, 50_000)
    assert (1 + math.cos(math.pi * (2_000_000 // c.lr_step_every) / c.lr_maxt)) / 2 == pytest.approx(0.99901, abs=1e-5)
    algo = make(lr_decay=True, lr_maxt=4, lr_step_every=2)
    lrs = [algo.update(batch())["train/lr"] for _ in range(4)]
    assert lrs[0] == pytest.approx(3e-4) and lrs[1] == pytest.approx(3e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert lrs[2] == lrs[1] and lrs[3] == pytest.approx(3e-4 * 0.5)


def test_reward_normalize_is_a_z_score_over_the_dataset():
    algo = make(reward_shaping="normalize")
    with pytest.raises(RuntimeError, match="fit_dataset"):
        algo.update(batch())
    rewards = np.array([1.0, 3.0, 5.0, 7.0])
    algo.fit_dataset(SimpleNamespace(rewards=rewards))
    assert algo.reward_mean.item() == pytest.approx(4.0) and algo.reward_std.item() == pytest.approx(rewards.std(ddof=1))
    assert math.isfinite(algo.update(batch())["train/critic_loss"])


def test_lr_decay_per_step_is_cosine_over_max_steps():
    algo = make(lr_decay=True, lr_decay_schedule="per_step", max_steps=10)
    for _ in range(5):
        m = algo.update(batch())
    assert m["train/lr"] == pytest.approx(3e-4 * 0.5, rel=1e-6)   # halfway: (1 + cos(pi/2)) / 2
    assert algo.critic_opt.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.5, rel=1e-6)


# ----------------------------------------------------------------------------- acting


@pytest.mark.parametrize("act_with_ema", [False, True])
def test_act_respects_action_bounds(act_with_ema):
    spec = EnvSpec(obs_dim=3, act_dim=3, act_low=(-0.2, 0.0, -2.0), act_high=(0.1, 3.0, -1.0))
    algo = make(spec=spec, act_with_ema=act_with_ema)
    with torch.no_grad():  # push the net's eps far out so that x0 predictions hit the bounds
        algo.actor.final_layer.bias.copy_(torch.tensor([30.0, -30.0, 5.0]))
        algo.ema_actor.final_layer.bias.copy_(torch.tensor([-30.0, 30.0, -5.0]))
    a = algo.act(torch.randn(20, 1, 3) * 5)
    low, high = torch.tensor(spec.act_low), torch.tensor(spec.act_high)
    assert torch.all(a >= low) and torch.all(a <= high)
    assert torch.all(algo.sample(torch.randn(50, 3)) >= low)


def test_select_by_q_is_softmax_sampling():
    cand = torch.arange(6.0).reshape(1, 3, 2).expand(4, 3, 2)
    q = torch.tensor([0.0, 50.0, 0.0]).expand(4, 3)
    torch.testing.assert_close(select_by_q(cand, q), torch.tensor([[2.0, 3.0]]).expand(4, 2))
    g = torch.Generator().manual_seed(0)
    q = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(20000, 3)
    picks = select_by_q(torch.arange(3.0).reshape(1, 3, 1).expand(20000, 3, 1), q, g).squeeze(1)
    freq = torch.bincount(picks.long(), minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015, rtol=0)


def test_act_picks_the_high_q_candidate():
    """A target critic that loves a[0] ~ +1 makes act choose the candidate with the largest a[0]."""
    spec = EnvSpec(obs_dim=2, act_dim=1)
    algo = make(spec=spec, n_action_samples=50)
    with torch.no_grad():
        for head in (algo.critic_target.q1_model, algo.critic_target.q2_model):
            for layer in head:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.zero_(), layer.bias.zero_()
            head[0].weight[0, 2], head[0].bias[0] = 1.0, 2.0   # hidden unit 0 = mish(a + 2) (input is [s, a])
            head[2].weight[0, 0] = head[4].weight[0, 0] = 1.0  # carried through the next two layers
            head[-1].weight[0, 0] = 500.0  # Q = 500 mish(mish(mish(a + 2))): increasing in a on [-1, 1]
    torch.manual_seed(0)
    obs = torch.randn(8, 1, 2)
    chosen = algo.act(obs)
    torch.manual_seed(0)
    s_rep = obs[:, -1].repeat_interleave(50, 0)
    cand = algo.sample(s_rep).view(8, 50, 1)
    torch.testing.assert_close(chosen.squeeze(1), cand.amax(1), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- learning


def test_a_few_hundred_steps_reduce_bc_loss_on_a_1d_action_task():
    """Actions a = tanh(2 s_0) (1-D): the denoiser learns it; the Q term stays on (eta = 1)."""
    spec = EnvSpec(obs_dim=2, act_dim=1)
    algo = make(spec=spec, hidden_dim=64, eta=1.0, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(2048, 2, generator=g)
    data = {"observations": obs, "actions": torch.tanh(2 * obs[:, :1]), "rewards": torch.zeros(2048),
            "next_observations": torch.randn(2048, 2, generator=g), "terminals": torch.zeros(2048)}
    test_obs = torch.randn(256, 2, generator=g)
    err0 = (algo.sample(test_obs) - torch.tanh(2 * test_obs[:, :1])).abs().mean().item()
    losses = []
    for _ in range(300):
        idx = torch.randint(0, 2048, (64,), generator=g)
        losses.append(algo.update({k: v[idx] for k, v in data.items()})["train/bc_loss"])
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.5 * first, (first, last)
    # and the policy's samples move toward the data: mean |a - tanh(2 s_0)| at most half the untrained one
    err = (algo.sample(test_obs) - torch.tanh(2 * test_obs[:, :1])).abs().mean().item()
    assert err < 0.5 * err0 and err < 0.35, (err0, err)


def test_eta_zero_skips_the_chain_and_copy_is_independent():
    algo = make(eta=0.0)
    m = algo.update(batch())
    assert m["train/ql_loss"] == 0.0 and m["train/actor_loss"] == m["train/bc_loss"]
    clone = copy.deepcopy(algo)
    clone.update(batch(seed=2))
    assert clone.step == 2 and algo.step == 1
