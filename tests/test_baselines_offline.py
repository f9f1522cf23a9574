"""TD3+BC and IQL: shapes, losses, TD3+BC's state normalization, IQL's expectile loss and weights.

The learning test (both beat a random policy on the generated Pendulum-v1 medium dataset) is slow:
`python -m pytest -m slow tests/test_baselines_offline.py`.
"""
import io
import math
import time

import numpy as np
import pytest
import torch

import algorithms
from algorithms import EnvSpec
from algorithms.iql import IQL, IQLConfig, advantage_weights, expectile_loss, reward_scale_from_returns
from algorithms.td3bc import TD3BC, TD3BCConfig

torch.set_num_threads(1)  # tiny networks: threads only add contention on the shared 2-core machine
SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=(-2.0, -1.0), act_high=(2.0, 1.0))
SMALL = {"hidden_dim": 32}


class Data:
    """A tiny offline dataset: ``observations (N, 3)`` with mean (1, -2, 5) and std (0.5, 2, 10),
    reward ``-|a|^2 + s_0``, episodes of 16 steps (the last one's terminal set)."""

    def __init__(self, n=256, seed=0):
        g = np.random.default_rng(seed)
        self.observations = (g.normal(size=(n, 3)) * [0.5, 2.0, 10.0] + [1.0, -2.0, 5.0]).astype(np.float32)
        self.actions = (g.uniform(-1, 1, size=(n, 2)) * [2.0, 1.0]).astype(np.float32)
        self.next_observations = np.roll(self.observations, -1, axis=0)
        self.rewards = (-(self.actions ** 2).sum(1) + self.observations[:, 0]).astype(np.float32)
        self.episode_ends = np.arange(16, n + 1, 16, dtype=np.int64)
        self.terminals = np.zeros(n, dtype=np.float32)
        self.terminals[self.episode_ends - 1] = 1.0

    def batch(self, idx=None):
        idx = slice(None) if idx is None else idx
        return {k: torch.as_tensor(getattr(self, k)[idx]) for k in
                ("observations", "actions", "rewards", "next_observations", "terminals")}


def make(name, seed=0, data=None, **kw):
    torch.manual_seed(seed)
    algo = algorithms.build(name, {**SMALL, **kw}, SPEC)
    algo.fit_dataset(data or Data())
    return algo


def test_registered_and_configs_validated():
    assert algorithms.get("td3bc") == (TD3BCConfig, TD3BC) and algorithms.get("iql") == (IQLConfig, IQL)
    assert TD3BC.data_kind == IQL.data_kind == "transitions"
    c = TD3BCConfig()  # the paper's values
    assert (c.alpha, c.policy_noise, c.noise_clip, c.policy_freq, c.tau, c.actor_lr, c.critic_lr, c.hidden_dim,
            c.n_hidden, c.gamma) == (2.5, 0.2, 0.5, 2, 0.005, 3e-4, 3e-4, 256, 2, 0.99)
    c = IQLConfig()
    assert (c.expectile, c.temperature, c.max_weight, c.tau, c.actor_lr, c.hidden_dim, c.n_hidden,
            c.lr_decay, c.reward_scaling) == (0.7, 3.0, 100.0, 0.005, 3e-4, 256, 2, True, "returns")
    for cls, bad in ((TD3BCConfig, {"policy_freq": 0}), (TD3BCConfig, {"tau": 0.0}), (IQLConfig, {"expectile": 1.0}),
                     (IQLConfig, {"reward_scaling": "locomotion"}), (IQLConfig, {"max_weight": 0.0})):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cls(**bad)


@pytest.mark.parametrize("name", ["td3bc", "iql"])
def test_shapes_bounds_and_finite_losses(name):
    algo = make(name)
    m = algo.update(Data().batch(slice(0, 64)))
    assert all(k.startswith("train/") and math.isfinite(v) for k, v in m.items()), m
    assert "train/critic_loss" in m
    obs = torch.randn(7, 1, 3) * 100  # far outside the data: the actions must still respect the bounds
    a = algo.act(obs)
    assert a.shape == (7, 1, 2)
    assert torch.all(a[..., 0].abs() <= 2.0) and torch.all(a[..., 1].abs() <= 1.0)


@pytest.mark.parametrize("name", ["td3bc", "iql"])
def test_critic_loss_falls(name):
    data = Data()
    # IQL's locomotion scaling (1000 / return spread) would blow these 16-step episodes' rewards up ~100x
    algo = make(name, data=data, critic_lr=1e-3, **({"reward_scaling": "none"} if name == "iql" else {}))
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        losses.append(algo.update(data.batch(torch.randint(0, 256, (64,), generator=g)))["train/critic_loss"])
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.3 * first, (first, last)


def test_td3bc_normalization_round_trip():
    data = Data(n=512, seed=3)
    algo = make("td3bc", data=data)
    mean, std = data.observations.astype(np.float64).mean(0), data.observations.astype(np.float64).std(0) + 1e-3
    np.testing.assert_allclose(algo.obs_norm.mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(algo.obs_norm.std.numpy(), std, rtol=1e-5)
    x = torch.as_tensor(data.observations)
    z = algo.obs_norm(x)
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, atol=1e-2)
    torch.testing.assert_close(algo.obs_norm.unnormalize(z), x, rtol=1e-5, atol=1e-4)
    for _ in range(4):
        algo.update(data.batch(slice(0, 64)))
    # the statistics are plain tensors in both state dicts and survive torch.save / weights_only loading
    for d in (algo.state_dict(), algo.policy_state_dict()):
        buf = io.BytesIO()
        torch.save(d, buf)
        buf.seek(0)
        other = TD3BC(TD3BCConfig(**SMALL), SPEC)  # never fitted: identity normalizer
        assert not bool(other.obs_norm.fitted)
        other.load_state_dict(torch.load(buf, weights_only=True))
        assert bool(other.obs_norm.fitted)
        torch.testing.assert_close(other.obs_norm.mean, algo.obs_norm.mean)
        obs = x[:16].unsqueeze(1)
        assert torch.equal(other.act(obs), algo.act(obs))
    # without statistics, training refuses unless the shortcut is named
    with pytest.raises(RuntimeError, match="fit_dataset"):
        TD3BC(TD3BCConfig(**SMALL), SPEC).update(data.batch(slice(0, 8)))
    shortcut = TD3BC(TD3BCConfig(stats_from_batch=True, **SMALL), SPEC)
    shortcut.update(data.batch(slice(0, 64)))
    np.testing.assert_allclose(shortcut.obs_norm.mean.numpy(), data.observations[:64].mean(0), rtol=1e-4)


def test_td3bc_delayed_actor_and_determinism():
    data = Data()
    a, b = make("td3bc", data=data), make("td3bc", data=data)
    w0 = [p.clone() for p in a.actor.parameters()]
    torch.manual_seed(1)  # the target-smoothing noise comes from the global RNG
    ma = a.update(data.batch(slice(0, 64)))
    assert all(torch.equal(p, q) for p, q in zip(w0, a.actor.parameters()))  # step 1: critic only
    assert ma["train/actor_loss"] == 0.0
    ma = a.update(data.batch(slice(64, 128)))
    assert not all(torch.equal(p, q) for p, q in zip(w0, a.actor.parameters()))  # step 2: the actor learns
    assert ma["train/lambda"] > 0 and ma["train/bc_loss"] > 0
    torch.manual_seed(1)
    b.update(data.batch(slice(0, 64)))
    assert b.update(data.batch(slice(64, 128))) == ma


def test_expectile_loss_and_weights_by_hand():
    diff = torch.tensor([-2.0, -1.0, 0.5, 3.0])
    # weights |0.7 - 1(u<0)|: 0.3, 0.3, 0.7, 0.7 -> (0.3*4 + 0.3*1 + 0.7*0.25 + 0.7*9) / 4
    assert expectile_loss(diff, 0.7).item() == pytest.approx((1.2 + 0.3 + 0.175 + 6.3) / 4)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25 + 9) / 4)  # 1/2 of the MSE
    w = advantage_weights(torch.tensor([-1.0, 0.0, 1.0, 2.0]), 3.0, 100.0)
    torch.testing.assert_close(w, torch.tensor([math.exp(-3), 1.0, math.exp(3), 100.0]))  # exp(6) = 403 -> 100
    # EDP's IQL backbone uses these very functions
    import algorithms.edp as edp

    assert edp.expectile_loss is expectile_loss and edp.advantage_weights is advantage_weights
    # returns of three episodes: 3, -1, 7 -> 1000 / (7 - -1)
    assert reward_scale_from_returns([1, 2, -1, 0, 7], [2, 4, 5]) == pytest.approx(125.0)
    with pytest.raises(ValueError):
        reward_scale_from_returns([1.0, 1.0], [1, 2])  # equal returns: no spread


def test_iql_log_prob_reward_scale_and_cosine_lr():
    data = Data()
    algo = make("iql", data=data, max_steps=10)
    returns = np.add.reduceat(data.rewards.astype(np.float64), np.r_[0, data.episode_ends[:-1]])
    assert algo.reward_scale.item() == pytest.approx(1000 / (returns.max() - returns.min()), rel=1e-5)
    s, a = algo.obs_norm(torch.as_tensor(data.observations[:8])), torch.as_tensor(data.actions[:8])
    mean, log_std = algo.dist_params(s)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(a).sum(-1)
    torch.testing.assert_close(algo.log_prob(s, a), expected)
    lrs = [algo.update(data.batch(slice(0, 32)))["train/actor_lr"] for _ in range(10)]
    assert lrs[4] == pytest.approx(3e-4 * (1 + math.cos(math.pi * 5 / 10)) / 2) and lrs[-1] == pytest.approx(0.0)
    assert make("iql", reward_scaling="antmaze").scale_rewards(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 0.0]


def test_iql_state_dict_round_trip():
    data = Data()
    a = make("iql", data=data, max_steps=100)
    for i in range(3):
        a.update(data.batch(slice(32 * i, 32 * i + 32)))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = IQL(IQLConfig(max_steps=100, **SMALL), SPEC)  # not fitted: loading brings statistics and reward scale
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.reward_scale.item() == a.reward_scale.item() and b.step == 3
    x = torch.randn(5, 1, 3)
    assert torch.equal(a.act(x), b.act(x))
    nxt = data.batch(slice(100, 164))
    torch.manual_seed(0)
    ma = a.update(nxt)
    torch.manual_seed(0)
    assert b.update(nxt) == ma
    c = IQL(IQLConfig(max_steps=100, **SMALL), SPEC)
    c.load_state_dict(a.policy_state_dict())
    assert set(a.policy_state_dict()) == {"actor", "log_std", "obs_norm"} and torch.equal(a.act(x), c.act(x))


# ----------------------------------------------------------------------------- learning (slow)

LEARN_STEPS = 2000


def _train_and_score(name: str, seed: int) -> tuple[float, float]:
    from platform.datasets import load_dataset
    from platform.envs import make_env
    from platform.evaluation import run_episodes, summarize
    from platform.training import TransitionSampler

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    data = load_dataset("generated:pendulum-medium")
    torch.manual_seed(seed)
    params = {"max_steps": LEARN_STEPS} if name == "iql" else {}
    algo = algorithms.build(name, params, data.env_spec())
    algo.fit_dataset(data)
    sampler = TransitionSampler(data, torch.device("cpu"))
    sampler.reseed(seed, 0)
    t0 = time.perf_counter()
    for _ in range(LEARN_STEPS):
        algo.update(sampler.sample(256))
    wall = time.perf_counter() - t0
    episodes = run_episodes(algo, [lambda: make_env(data.env_id) for _ in range(10)], list(range(100_000, 100_010)))
    score = summarize(episodes, data.env_id, data.ref_min_score, data.ref_max_score)["eval/normalized_score"]
    print(f"{name} seed {seed}: normalized {score:.1f} after {LEARN_STEPS} steps in {wall:.0f}s", flush=True)
    return score, wall


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", ["td3bc", "iql"])
def test_beats_random_on_pendulum(name, data_dir):
    """2000 steps x batch 256, one seed, 10 evaluation episodes; the normalized score's 0 is the random policy."""
    score, _ = _train_and_score(name, 0)
    assert score > 20.0, score
