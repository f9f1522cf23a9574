"""Imitation baselines of the Diffusion Policy paper: LSTM-GMM (algorithms/lstm_gmm.py), BET (algorithms/bet.py)
and Gaussian-MLP BC on sequences (algorithms/bc.py, ``data_kind="sequences"``)."""
import pytest
import torch

import algorithms
from algorithms import EnvSpec
from algorithms.bc import BC, BCConfig
from algorithms.bet import BET, BETConfig, focal_loss, kmeans
from algorithms.lstm_gmm import LSTMGMM, LSTMGMMConfig

torch.set_num_threads(1)

# Push-T-like ranges (env units), so that the [-1, 1] normalization is exercised.
SPEC = EnvSpec(obs_dim=4, act_dim=2, obs_low=(0.0,) * 4, obs_high=(512.0,) * 4, act_min=(10.0, 20.0),
               act_max=(500.0, 480.0))
# Two-mode toy: constant observation, each action +1 or -1 with probability 1/2.
TOY = EnvSpec(obs_dim=2, act_dim=1, obs_low=(-1.0, -1.0), obs_high=(1.0, 1.0), act_min=(-1.0,), act_max=(1.0,))


def tiny(name, spec=SPEC, **kw):
    torch.manual_seed(0)
    if name == "lstm_gmm":
        return LSTMGMM(LSTMGMMConfig(**{"obs_horizon": 4, "rnn_hidden_dim": 32, "rnn_num_layers": 1, **kw}), spec)
    if name == "bet":
        return BET(BETConfig(**{"obs_horizon": 3, "n_bins": 8, "n_layer": 1, "n_head": 2, "n_embd": 16,
                                "kmeans_iters": 20, "lr_warmup_steps": 0, "lr_schedule": "constant", **kw}), spec)
    return BC(BCConfig(**{"data_kind": "sequences", "hidden_dim": 32, "n_hidden": 2, "obs_horizon": 2,
                          "action_horizon": 3, **kw}), spec)


def windows(algo, n, seed=0):
    """Learnable windows: the action at step t is a fixed function of the observation at step t, which is held
    constant within a window (so that the actions after the last observed step are predictable too)."""
    g = torch.Generator().manual_seed(seed)
    obs = (torch.rand(n, 1, 4, generator=g) * 512).expand(n, algo.pred_horizon, 4).contiguous()
    u = obs / 256 - 1  # in [-1, 1]
    a = torch.stack([0.5 * (u[..., 0] - u[..., 1]), torch.tanh(2 * u[..., 2]) * 0.8], -1)
    action = torch.stack([255 + 245 * a[..., 0], 250 + 230 * a[..., 1]], -1)
    return {"obs": obs[:, :algo.obs_horizon], "action": action}


@pytest.mark.parametrize("name", ["lstm_gmm", "bet", "bc"])
def test_registry_shapes_and_state(name):
    algo = tiny(name)
    if name != "bc":
        assert algorithms.REGISTRY[name][1] is type(algo)
    assert algo.data_kind == "sequences"
    To, Tp, Ta = algo.obs_horizon, algo.pred_horizon, algo.action_horizon
    assert (To, Tp, Ta) == {"lstm_gmm": (4, 4, 1), "bet": (3, 3, 1), "bc": (2, 4, 3)}[name]
    batch = windows(algo, 32)
    metrics = algo.update(batch)
    assert all(k.startswith("train/") and (isinstance(v, float) or torch.is_tensor(v) and v.dim() == 0)
               for k, v in metrics.items())
    out = algo.act(batch["obs"][:5])
    assert out.shape == (5, Ta, 2) and torch.isfinite(out).all()
    # a fresh instance loaded from the policy state acts identically (plain tensors only)
    state = algo.policy_state_dict()
    flat = [v for d in state.values() for v in (d.values() if isinstance(d, dict) else [d])]
    assert all(torch.is_tensor(v) for v in flat)
    other = tiny(name)
    other.load_state_dict(state)
    algo.reset(5), other.reset(5)  # stateful policies (LSTM-GMM) start new episodes alike
    torch.manual_seed(1)
    a1 = algo.act(batch["obs"][:5])
    torch.manual_seed(1)
    assert torch.equal(a1, other.act(batch["obs"][:5]))
    full = algo.state_dict()
    other.load_state_dict(full)
    assert other.step == algo.step if hasattr(algo, "step") else True


def test_configs_validate():
    assert (LSTMGMMConfig().rnn_hidden_dim, LSTMGMMConfig().rnn_num_layers, LSTMGMMConfig().gmm_num_modes,
            LSTMGMMConfig().obs_horizon, LSTMGMMConfig().lr) == (400, 2, 5, 10, 1e-4)
    c = BETConfig()
    assert (c.n_bins, c.n_layer, c.n_head, c.n_embd, c.obs_horizon, c.offset_loss_scale) == (24, 4, 4, 72, 3, 1000.0)
    for cls, bad, match in [(LSTMGMMConfig, dict(gmm_num_modes=0), "gmm_num_modes"),
                            (LSTMGMMConfig, dict(rnn_type="TCN"), "rnn_type"),
                            (BETConfig, dict(n_embd=70, n_head=4), "n_embd"),
                            (BETConfig, dict(n_bins=0), "n_bins"),
                            (BCConfig, dict(data_kind="frames"), "data_kind"),
                            (BCConfig, dict(obs_horizon=0), "obs_horizon")]:
        with pytest.raises(ValueError, match=match):
            cls(**bad)


@pytest.mark.parametrize("name", ["lstm_gmm", "bet", "bc"])
def test_loss_decreases(name):
    algo = tiny(name, lr=3e-3) if name != "bet" else tiny(name, lr=1e-3, offset_loss_scale=10.0)
    data = windows(algo, 512)
    first = [algo.update(data)["train/loss"] for _ in range(5)]
    for _ in range(150):
        last = algo.update(data)["train/loss"]
    assert last < min(first) - 0.3, (first, last)


def test_bet_kmeans_and_focal_loss():
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]])
    x = (true[:, None] + 0.05 * torch.randn(3, 200, 2, generator=g)).reshape(-1, 2)
    centers = kmeans(x, 3, 30, torch.Generator().manual_seed(1))
    err = torch.cdist(true, centers).min(1).values
    assert err.max() < 0.05, centers
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    p = torch.exp(-ce)
    torch.testing.assert_close(focal_loss(logits, target, 2.0), ((1 - p) ** 2 * ce).mean())
    torch.testing.assert_close(focal_loss(logits, target, 0.0), ce.mean())


@pytest.mark.parametrize("name", ["lstm_gmm", "bet"])
def test_two_modes_are_both_recovered(name):
    """Constant observation, action +1 or -1 with probability 1/2: samples must cover both modes."""
    if name == "lstm_gmm":
        algo = tiny(name, spec=TOY, obs_horizon=2, rnn_hidden_dim=16, gmm_num_modes=5, lr=1e-2)
    else:
        algo = tiny(name, spec=TOY, obs_horizon=2, n_bins=4, lr=3e-3, offset_loss_scale=10.0, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        sign = torch.randint(0, 2, (256, algo.pred_horizon, 1), generator=g) * 2.0 - 1.0
        algo.update({"obs": torch.zeros(256, algo.obs_horizon, 2), "action": sign})
    torch.manual_seed(0)
    a = algo.act(torch.zeros(1000, algo.obs_horizon, 2)).flatten()
    near_plus, near_minus = ((a - 1).abs() < 0.2).float().mean(), ((a + 1).abs() < 0.2).float().mean()
    assert near_plus >= 0.25 and near_minus >= 0.25, (name, float(near_plus), float(near_minus))
    assert near_plus + near_minus >= 0.9  # and not in between (a unimodal fit would put them near 0)


def test_bc_sequences_targets_the_executed_actions():
    """The executed chunk is actions To-1 .. To-1+Ta-1 of the window, in env units after unnormalization."""
    algo = tiny("bc", lr=3e-3)
    data = windows(algo, 512)
    for _ in range(300):
        algo.update(data)
    pred = algo.act(data["obs"])
    target = data["action"][:, algo.obs_horizon - 1:]
    assert pred.shape == target.shape
    err = (pred - target).abs().mean() / 245
    base = (target - target.mean(0)).abs().mean() / 245  # error of the best constant prediction
    assert err < 0.5 * base, (float(err), float(base))


def test_paper_reference_for_the_pusht_table():
    from platform import report

    for name, avg, best in [("lstm_gmm", 61.0, "67"), ("ibc", 84.0, "90"), ("bet", 70.0, "79")]:
        ref = report.paper_reference(name, "pusht:datasets/pusht/x.zarr")
        assert ref.value == avg and f"max {best}" in ref.label, ref
    assert report.paper_reference("bc", "pusht:x.zarr").value is None


def test_bet_as_the_paper_ran_it_constant_lr_and_bins_on_the_whole_dataset():
    """DP's BET workspace builds no lr scheduler (constant 1e-4) and fits k-means on all the dataset's actions."""
    c = BETConfig()
    assert (c.lr, c.lr_schedule, c.lr_warmup_steps) == (1e-4, "constant", 0)
    algo = tiny("bet", lr_schedule=BETConfig.lr_schedule, lr_warmup_steps=BETConfig.lr_warmup_steps, n_bins=4)
    lrs = [algo.update(windows(algo, 16, seed=i))["train/lr"] for i in range(3)]
    assert lrs == [1e-4] * 3

    class Data:  # two far-apart action clusters, only one of which the first batch would show
        actions = torch.cat([torch.full((300, 2), 50.0), torch.full((300, 2), 450.0)]).numpy()
        all_actions = None
    algo = tiny("bet", n_bins=2)
    algo.fit_dataset(Data())
    centers = algo.unnormalize_action(algo.centers).sort(0).values
    assert torch.allclose(centers, torch.tensor([[50.0, 50.0], [450.0, 450.0]]), atol=1e-3)
    algo.update(windows(algo, 8))  # the first batch no longer refits the bins
    assert torch.allclose(algo.unnormalize_action(algo.centers).sort(0).values, centers)


def test_lstm_gmm_acts_statefully_as_robomimic_and_trains_on_unpadded_windows():
    """DP's LSTM-GMM: windows never start before their episode (pad_before 0), and acting carries the LSTM state,
    reset at reset() and every To steps: step t's action is the LSTM over the observations since the last reset."""
    algo = tiny("lstm_gmm", gmm_num_modes=1)  # one mode, low-noise eval: the action is the mean
    assert algo.window_pad_before == 0 and algo.cfg.stateful_acting
    from platform.datasets.sequence import SequenceSampler
    assert SequenceSampler(torch.tensor([10, 25]).numpy(), 4, 4, 1, pad_before=algo.window_pad_before).rows.min() >= 0
    g = torch.Generator().manual_seed(1)
    obs = torch.rand(3, 10, 4, generator=g) * 512   # 3 envs, 10 steps
    algo.reset(3)
    stateful = torch.stack([algo.act(obs[:, max(0, t - 3):t + 1])[:, 0] for t in range(10)], 1)
    stateless = tiny("lstm_gmm", gmm_num_modes=1, stateful_acting=False)
    stateless.load_state_dict(algo.state_dict())
    To = algo.obs_horizon  # 4: resets at t = 0, 4, 8
    expect = torch.stack([stateless.act(obs[:, t - t % To:t + 1])[:, 0] for t in range(10)], 1)
    assert torch.allclose(stateful, expect, atol=0.2), (stateful - expect).abs().max()
    # without the periodic reset the context would be the whole history: a different action at t = 5
    full = stateless.act(obs[:, :6])[:, 0]
    assert not torch.allclose(full, stateful[:, 5], atol=0.2)
    algo.reset(3)  # a new batch of episodes: the first action is the one-observation LSTM's again
    assert torch.allclose(algo.act(obs[:, :1])[:, 0], expect[:, 0], atol=0.2)
