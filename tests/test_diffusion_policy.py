"""Diffusion Policy: config, normalizer, both noise networks, schedules, a short CPU training run, act, state.

Small networks keep this file to a few seconds on 2 cores; the paper-size U-Net is only built
(not run) to check its parameter count.
"""
import math

import numpy as np
import pytest
import torch

from algorithms import REGISTRY, EnvSpec
from algorithms.diffusion_policy import (ConditionalUnet1D, DiffusionPolicy, DiffusionPolicyConfig,
                                         TransformerForDiffusion, ema_decay, lr_factor)
from algorithms.normalization import minmax_normalizer

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 20, 2
SMALL_CNN = dict(backbone="cnn", down_dims=(32, 64, 128), diffusion_step_embed_dim=32)
SMALL_TF = dict(backbone="transformer", n_layer=2, n_head=2, n_emb=32)


def _spec(obs_dim=OBS_DIM, act_dim=ACT_DIM):
    return EnvSpec(obs_dim=obs_dim, act_dim=act_dim, obs_low=(0.0,) * obs_dim, obs_high=(512.0,) * obs_dim,
                   act_min=(12.0, 25.0)[:act_dim], act_max=(511.0, 511.0)[:act_dim],
                   act_low=(0.0,) * act_dim, act_high=(512.0,) * act_dim)


def test_registered_and_paper_defaults():
    config_cls, algo_cls = REGISTRY["diffusion_policy"]
    assert config_cls is DiffusionPolicyConfig and algo_cls is DiffusionPolicy and algo_cls.data_kind == "sequences"
    cnn = DiffusionPolicyConfig()
    assert (cnn.obs_horizon, cnn.pred_horizon, cnn.action_horizon) == (2, 16, 8)
    assert cnn.down_dims == (256, 512, 1024) and cnn.kernel_size == 5 and cnn.n_groups == 8
    assert cnn.n_timesteps == 100 and cnn.beta_schedule == "cosine" and cnn.clip_sample == 1.0
    assert (cnn.sampler, cnn.n_inference_steps) == ("ddpm", 100)
    assert cnn.ddim_spacing == "leading"  # diffusers' DDIMScheduler timesteps, as the authors' DDIM config
    assert (cnn.lr, cnn.weight_decay, cnn.betas, cnn.lr_warmup_steps) == (1e-4, 1e-6, (0.95, 0.999), 500)
    assert cnn.max_steps == 210_000 and cnn.ema_power == 0.75 and cnn.ema_max == 0.9999
    tf = DiffusionPolicyConfig(backbone="transformer")
    assert (tf.n_layer, tf.n_head, tf.n_emb, tf.p_drop_emb, tf.p_drop_attn) == (8, 4, 256, 0.0, 0.01)
    assert (tf.weight_decay, tf.betas, tf.lr_warmup_steps, tf.max_steps) == (0.1, (0.9, 0.95), 1000, 336_000)


@pytest.mark.parametrize("bad", [
    dict(backbone="mlp"), dict(obs_horizon=2, action_horizon=16, pred_horizon=16), dict(pred_horizon=10),
    dict(sampler="ddpm", n_inference_steps=16), dict(sampler="ddim", n_inference_steps=0),
    dict(down_dims=(30, 64)), dict(backbone="transformer", n_emb=30, n_head=4), dict(beta_schedule="sigmoid"),
    dict(clip_sample=0.0), dict(lr_schedule="step"), dict(ema_max=1.5), dict(sampler="ddim", n_inference_steps=8,
                                                                             ddim_spacing="trailing"),
])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        DiffusionPolicyConfig(**bad)


def test_normalizer_round_trip():
    low, high = (0.0, -3.0, 5.0), (512.0, 3.0, 5.0)  # last dim constant: shifted only, as the public code
    scale, offset = minmax_normalizer(low, high, 3)
    x = torch.tensor([[0.0, -3.0, 5.0], [512.0, 3.0, 5.0], [256.0, 0.0, 5.0]])
    n = x * scale + offset
    torch.testing.assert_close(n[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.all(n[:, 2] == 0)
    torch.testing.assert_close((n - offset) / scale, x)
    algo = DiffusionPolicy(DiffusionPolicyConfig(**SMALL_CNN), _spec(), "cpu")
    a = torch.rand(4, 16, 2) * 400 + 50
    torch.testing.assert_close(algo.unnormalize_action(algo.normalize_action(a)), a)
    edges = algo.normalize_action(torch.tensor([[12.0, 25.0], [511.0, 511.0]]))
    torch.testing.assert_close(edges, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_network_shapes_and_transformer_masks():
    B, To, Tp = 3, 2, 16
    x, k = torch.randn(B, Tp, ACT_DIM), torch.randint(0, 100, (B,))
    unet = ConditionalUnet1D(ACT_DIM, To * OBS_DIM, 32, (32, 64, 128), 5, 8, True)
    assert unet(x, k, torch.randn(B, To * OBS_DIM)).shape == (B, Tp, ACT_DIM)
    tf = TransformerForDiffusion(ACT_DIM, ACT_DIM, Tp, To, OBS_DIM, n_layer=2, n_head=2, n_emb=32).eval()
    cond = torch.randn(B, To, OBS_DIM)
    out = tf(x, k, cond)
    assert out.shape == (B, Tp, ACT_DIM)
    # Causal: changing action token 10 leaves outputs 0..9 unchanged.
    x2 = x.clone()
    x2[:, 10] += 1.0
    out2 = tf(x2, k, cond)
    torch.testing.assert_close(out2[:, :10], out[:, :10])
    assert not torch.allclose(out2[:, 10:], out[:, 10:])
    # Action token 0 sees the time token and obs token 0 only (memory mask t >= s - 1).
    cond2 = cond.clone()
    cond2[:, 1] += 1.0
    out3 = tf(x, k, cond2)
    torch.testing.assert_close(out3[:, 0], out[:, 0])
    assert not torch.allclose(out3[:, 1:], out[:, 1:])


def test_transformer_weight_decay_only_on_weights():
    algo = DiffusionPolicy(DiffusionPolicyConfig(**SMALL_TF), _spec(), "cpu")
    decay_group, no_decay_group = algo.optimizer.param_groups
    assert decay_group["weight_decay"] == 0.1 and no_decay_group["weight_decay"] == 0.0
    names = {id(p): n for n, p in algo.model.named_parameters()}
    decayed = {names[id(p)] for p in decay_group["params"]}
    kept = {names[id(p)] for p in no_decay_group["params"]}
    assert len(decayed) + len(kept) == len(names)
    assert all(n.endswith("weight") for n in decayed)
    assert {"pos_emb", "cond_pos_emb", "ln_f.weight"} <= kept and not any(n.endswith("bias") for n in decayed)
    assert any("in_proj_weight" in n for n in decayed) and any("norm1.weight" in n for n in kept)


def test_paper_size_parameter_counts():
    unet = ConditionalUnet1D(ACT_DIM, 2 * OBS_DIM, 256, (256, 512, 1024), 5, 8, True)
    n_unet = sum(p.numel() for p in unet.parameters())
    assert abs(n_unet / 1e6 - 65.8) < 0.5, n_unet  # the paper's Push-T state U-Net: 65.8M
    del unet
    tf = TransformerForDiffusion(ACT_DIM, ACT_DIM, 16, 2, OBS_DIM, n_layer=8, n_head=4, n_emb=256)
    n_tf = sum(p.numel() for p in tf.parameters())
    assert abs(n_tf / 1e6 - 9.0) < 0.2, n_tf  # the paper's transformer: 9.0M


def test_lr_and_ema_schedules():
    assert lr_factor(0, 500, 1000, "cosine") == 0.0
    assert lr_factor(250, 500, 1000, "cosine") == 0.5
    assert lr_factor(500, 500, 1000, "cosine") == 1.0
    assert math.isclose(lr_factor(750, 500, 1000, "cosine"), 0.5)
    assert lr_factor(1000, 500, 1000, "cosine") == 0.0 and lr_factor(5000, 500, 1000, "cosine") == 0.0
    assert lr_factor(900, 500, 1000, "constant") == 1.0
    # EMAModel.get_decay: 0 for the first two updates, then 1 - (1 + s)^-0.75, capped at 0.9999.
    assert ema_decay(0, 0.75, 1.0, 0.0, 0.9999) == 0.0 and ema_decay(1, 0.75, 1.0, 0.0, 0.9999) == 0.0
    assert math.isclose(ema_decay(2, 0.75, 1.0, 0.0, 0.9999), 1 - 2 ** -0.75)
    assert math.isclose(ema_decay(10_001, 0.75, 1.0, 0.0, 0.9999), 1 - 10_001 ** -0.75)
    assert ema_decay(10**7, 0.75, 1.0, 0.0, 0.9999) == 0.9999


def _toy_batches(n_steps, batch, rng):
    """Windows whose actions are a deterministic function of the last observation (learnable)."""
    for _ in range(n_steps):
        obs = torch.as_tensor(rng.uniform(0, 512, size=(batch, 2, OBS_DIM)), dtype=torch.float32)
        start = obs[:, -1, 18:20]  # agent position
        t = torch.arange(16, dtype=torch.float32)[None, :, None]
        direction = torch.where(obs[:, -1, :1] > 256, 1.0, -1.0)[:, :, None]  # (B, 1, 1)
        action = (start[:, None, :] + direction * 10.0 * t).clamp(12.0, 511.0)
        yield {"obs": obs, "action": action}


@pytest.mark.parametrize("small", [SMALL_CNN, SMALL_TF], ids=["cnn", "transformer"])
def test_short_training_reduces_loss_and_act(small):
    torch.manual_seed(0)
    config = DiffusionPolicyConfig(**small, lr=1e-3, lr_warmup_steps=10, max_steps=120, sampler="ddim",
                                   n_inference_steps=8)
    algo = DiffusionPolicy(config, _spec(), "cpu")
    losses = [algo.update(b)["train/loss"] for b in _toy_batches(120, 32, np.random.default_rng(0))]
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    assert last < 0.5 * first, (first, last)  # about 1.0 -> 0.25 for both backbones
    assert algo.step == 120
    obs = next(_toy_batches(1, 5, np.random.default_rng(1)))["obs"]
    actions = algo.act(obs)
    assert actions.shape == (5, 8, 2)
    lo, hi = torch.tensor(_spec().act_min), torch.tensor(_spec().act_max)
    assert torch.all(actions >= lo - 1e-3) and torch.all(actions <= hi + 1e-3)


@pytest.mark.parametrize("spacing,expected", [
    (None, [84, 72, 60, 48, 36, 24, 12, 0]),          # the default: diffusers' "leading" (K // n = 12)
    ("linspace", [99, 85, 71, 57, 42, 28, 14, 0]),    # the named option: the platform's former rule
])
def test_ddim_acts_on_the_configured_timesteps(spacing, expected):
    torch.manual_seed(0)
    option = {} if spacing is None else {"ddim_spacing": spacing}
    algo = DiffusionPolicy(DiffusionPolicyConfig(**SMALL_CNN, sampler="ddim", n_inference_steps=8, **option),
                           _spec(), "cpu")
    seen, eps = [], algo._eps

    def recording(model, x, k, nobs):
        seen.append(int(k[0]))
        return eps(model, x, k, nobs)

    algo._eps = recording
    chunk = algo.predict_chunk(torch.rand(3, 2, OBS_DIM) * 512, generator=torch.Generator().manual_seed(0))
    assert seen == expected
    assert chunk.shape == (3, 16, ACT_DIM) and torch.isfinite(chunk).all()


def test_update_metrics_lr_warmup_and_ema_copy():
    torch.manual_seed(0)
    algo = DiffusionPolicy(DiffusionPolicyConfig(**SMALL_CNN, lr_warmup_steps=4), _spec(), "cpu")
    batches = list(_toy_batches(3, 8, np.random.default_rng(0)))
    m = algo.update(batches[0])
    assert set(m) == {"train/loss", "train/lr"} and m["train/lr"] == 0.0  # the first step runs at lr 0 (LambdaLR)
    assert algo.update(batches[1])["train/lr"] == pytest.approx(0.25e-4)
    # decay 0 on the first two EMA updates: the EMA network equals the trained one
    for p, q in zip(algo.model.parameters(), algo.ema_model.parameters()):
        torch.testing.assert_close(p, q)
    algo.update(batches[2])
    assert any(not torch.equal(p, q) for p, q in zip(algo.model.parameters(), algo.ema_model.parameters()))


@pytest.mark.parametrize("small", [SMALL_CNN, SMALL_TF], ids=["cnn", "transformer"])
def test_state_dict_round_trip_and_ddpm_act(small):
    torch.manual_seed(0)
    config = DiffusionPolicyConfig(**small, n_timesteps=20, n_inference_steps=20)  # DDPM, a short chain
    algo = DiffusionPolicy(config, _spec(), "cpu")
    for b in _toy_batches(3, 8, np.random.default_rng(0)):
        algo.update(b)
    state = algo.state_dict()
    for v in state["normalizer"].values():
        assert type(v) is torch.Tensor

    def tensors_only(tree):
        if isinstance(tree, dict):
            return all(tensors_only(v) for v in tree.values())
        if isinstance(tree, (list, tuple)):
            return all(tensors_only(v) for v in tree)
        return isinstance(tree, (torch.Tensor, int, float, bool, str, type(None)))

    assert tensors_only(state)
    other = DiffusionPolicy(config, _spec(), "cpu")
    other.load_state_dict(state)
    assert other.step == algo.step
    obs = torch.rand(2, 2, OBS_DIM) * 512
    a1 = algo.act(obs, generator=torch.Generator().manual_seed(3))
    a2 = other.act(obs, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a1, a2)
    assert a1.shape == (2, 8, 2)
    chunk = algo.predict_chunk(obs, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chunk[:, 1:9], a1)  # executed actions are chunk[To-1 : To-1+Ta]
    # the light payload for rollout workers acts the same
    third = DiffusionPolicy(config, _spec(), "cpu")
    third.load_state_dict(algo.policy_state_dict())
    torch.testing.assert_close(third.act(obs, generator=torch.Generator().manual_seed(3)), a1)


def test_results_without_ddim_spacing_read_as_the_old_linspace_rule(tmp_path):
    """Results recorded before ``ddim_spacing`` existed ran DDIM on linspace timesteps: reading them must not let
    today's default ("leading") speak for them; new rows record the spacing they ran with."""
    import pandas as pd

    from platform import results

    # the checked-in toy study (reports/modes): Diffusion Policy with sampler ddim, 16 steps, no ddim_spacing column
    raw = pd.read_parquet("reports/modes/metrics.parquet")
    assert "config/ddim_spacing" not in raw.columns and (raw.loc[raw["algorithm"] == "diffusion_policy",
                                                                 "config/sampler"] == "ddim").all()
    df = results.read_results("reports/modes")
    dp = df["algorithm"] == "diffusion_policy"
    assert dp.any() and (df.loc[dp, "config/ddim_spacing"] == "linspace").all()
    assert df.loc[~dp, "config/ddim_spacing"].isna().all()  # other algorithms have no such field
    # a new trial records the value it ran with: the study's, else today's default
    assert results.with_changed_defaults("diffusion_policy", {"sampler": "ddim"})["ddim_spacing"] == "leading"
    assert results.with_changed_defaults("diffusion_policy", {"ddim_spacing": "linspace"})["ddim_spacing"] == "linspace"
    assert results.with_changed_defaults("bc", {"lr": 1e-3}) == {"lr": 1e-3}
    new = raw[raw["algorithm"] == "diffusion_policy"].head(2).assign(**{"config/ddim_spacing": "leading", "sweep": "new"})
    path = str(tmp_path / "metrics.parquet")
    results.write_frame(pd.concat([raw, new], ignore_index=True), path)
    back = results.read_results(path)
    assert (back.loc[back["sweep"] == "new", "config/ddim_spacing"] == "leading").all()
    old = (back["sweep"] != "new") & (back["algorithm"] == "diffusion_policy")
    assert old.any() and (back.loc[old, "config/ddim_spacing"] == "linspace").all()
