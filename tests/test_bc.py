"""Gaussian behaviour cloning (algorithms/bc.py)."""
import io
import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

import algorithms
from algorithms import EnvSpec
from algorithms.bc import BC, BCConfig

torch.set_num_threads(1)

SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=(-1.0, 0.0), act_high=(1.0, 2.0))


def make(seed=0, spec=SPEC, **kw):
    torch.manual_seed(seed)
    return BC(BCConfig(**{"hidden_dim": 32, **kw}), spec, "cpu")


def data(n=4096, seed=0):
    """Actions a linear function of the state plus small noise, inside the bounds."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    a0 = torch.tanh(0.8 * obs[:, 0] - 0.5 * obs[:, 1]) * 0.9
    a1 = 1.0 + 0.9 * torch.tanh(obs[:, 2])
    act = torch.stack([a0, a1], 1) + 0.02 * torch.randn(n, 2, generator=g)
    low, high = torch.tensor(SPEC.act_low), torch.tensor(SPEC.act_high)
    return obs, torch.maximum(torch.minimum(act, high), low)


def test_registry_and_config():
    assert algorithms.REGISTRY["bc"] == (BCConfig, BC) and BC.data_kind == "transitions"
    c = BCConfig()
    assert (c.hidden_dim, c.n_hidden, c.lr, c.squash, c.state_dependent_std) == (256, 3, 3e-4, False, False)
    for bad, match in [(dict(lr=0.0), "lr"), (dict(hidden_dim=0), "hidden_dim"),
                       (dict(min_log_std=1.0, max_log_std=0.0), "log_std")]:
        with pytest.raises(ValueError, match=match):
            BCConfig(**bad)


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_log_prob_matches_torch_distributions(squash, state_dependent_std):
    algo = make(squash=squash, state_dependent_std=state_dependent_std)
    with torch.no_grad():
        algo.log_std.fill_(-0.3)
    obs, act = data(64)
    act = act.clamp(torch.tensor([-0.99, 0.01]), torch.tensor([0.99, 1.99]))
    mean, log_std = algo.dist_params(obs)
    base = Normal(mean, log_std.exp().expand_as(mean))
    if squash:
        dist = TransformedDistribution(base, [TanhTransform(), AffineTransform(algo.act_mid, algo.act_half)])
    else:
        dist = base
    expected = dist.log_prob(act).sum(-1)
    torch.testing.assert_close(algo.log_prob(obs, act), expected, rtol=1e-4, atol=1e-4)


def test_update_returns_the_nll_and_act_shapes():
    algo = make()
    obs, act = data(32)
    with torch.no_grad():
        mean = algo.net(obs)
    expected = (0.5 * (act - mean).pow(2) + 0.5 * math.log(2 * math.pi)).sum(-1).mean()  # log_std = 0 at init
    m = algo.update({"observations": obs, "actions": act})
    assert set(m) == {"train/loss", "train/mse", "train/log_std"} and all(v.dim() == 0 for v in m.values())
    assert m["train/loss"] == pytest.approx(expected.item(), rel=1e-5)
    out = algo.act(torch.randn(5, 1, 3))
    assert out.shape == (5, 1, 2)


@pytest.mark.parametrize("squash", [False, True])
def test_act_respects_bounds(squash):
    algo = make(squash=squash)
    with torch.no_grad():
        algo.net[-1].bias.copy_(torch.tensor([50.0, -50.0]))
    a = algo.act(torch.randn(100, 1, 3))
    assert torch.all(a >= torch.tensor(SPEC.act_low)) and torch.all(a <= torch.tensor(SPEC.act_high))
    torch.testing.assert_close(a[:, 0], torch.tensor([[1.0, 0.0]]).expand(100, 2))


@pytest.mark.parametrize("kw", [{}, {"squash": True, "state_dependent_std": True}])
def test_learns_a_simple_mapping(kw):
    algo = make(lr=1e-3, **kw)
    obs, act = data()
    g = torch.Generator().manual_seed(1)
    first = None
    for _ in range(400):
        idx = torch.randint(0, len(obs), (128,), generator=g)
        m = algo.update({"observations": obs[idx], "actions": act[idx]})
        first = first if first is not None else m
    test_obs, test_act = data(512, seed=7)
    mse = (algo.act(test_obs.unsqueeze(1)).squeeze(1) - test_act).pow(2).mean().item()
    assert m["train/loss"] < first["train/loss"] - 1.0
    assert mse < 0.01, mse


def test_determinism_and_state_dict_round_trip():
    obs, act = data(64)
    runs = []
    for _ in range(2):
        algo = make(seed=3)
        runs.append([algo.update({"observations": obs, "actions": act}) for _ in range(3)])
    assert runs[0] == runs[1]
    a = make(seed=3)
    for _ in range(3):
        a.update({"observations": obs, "actions": act})
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make(seed=4)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(8, 1, 3)
    assert torch.equal(a.act(x), b.act(x))
    assert a.update({"observations": obs, "actions": act}) == b.update({"observations": obs, "actions": act})
    c = make(seed=5)
    c.load_state_dict(a.policy_state_dict())  # weights only, for rollout workers
    assert set(a.policy_state_dict()) == {"net", "log_std"} and torch.equal(a.act(x), c.act(x))
