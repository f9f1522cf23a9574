"""Diffusion Policy twin (issue 38, part 2): the platform's Diffusion Policy beside the authors' public code.

    python -m benchmarks.twins_dp --public-dp PATH [--out benchmarks/results] [--threads 1]
        [--batch-size 256] [--sample-batch 8]

``PATH`` is a checkout of github.com/real-stanford/diffusion_policy that the user fetched; its modules are
imported from there as they are (only the model, policy, normalizer, EMA and lr-scheduler modules, nothing
stubbed), nothing of it is copied into this repository and nothing is downloaded.  The public code needs
``diffusers`` (and ``einops``, ``zarr``): install the pins of ``benchmarks/requirements-twins-dp.txt`` into the
benchmark's own environment (``pip install -r benchmarks/requirements-twins-dp.txt``; the authors' own pins,
diffusers 0.11.1 and einops 0.4.1; not a project dependency).  Without diffusers, or without a checkout at
``PATH``, ``dp_twin`` prints one line and returns an empty result.

What is compared, for both backbones (``ConditionalUnet1D`` and ``TransformerForDiffusion``) in the Push-T
low-dim configuration (obs_dim 20, act_dim 2, To=2, Tp=16, Ta=8; the public side is built from the values of
``train_diffusion_unet_lowdim_workspace.yaml`` / ``train_diffusion_transformer_lowdim_pusht_workspace.yaml``,
the platform side from ``DiffusionPolicyConfig``'s defaults, which a first row checks against those files):

* the weight mapping (``map_public_state``): the public networks' weights loaded into the platform's
  (U-Net: the public ``Downsample1d``/``Upsample1d`` wrappers' ``.conv`` disappears from the key; transformer:
  the same keys, less the public ``_dummy_variable`` and the ``mask``/``memory_mask`` buffers, which the platform
  rebuilds and which are compared separately);
* the normalizer (public ``LinearNormalizer.fit(mode="limits")`` on a synthetic Push-T-shaped data set vs the
  platform's ranges taken from the same data), the noise schedule (diffusers' ``alphas_cumprod``);
* (a) the denoiser's output on fixed inputs;
* (b) the training loss of one batch with the same noise and timesteps (the same torch seed: both draw the
  noise, then the timesteps, then the dropout masks in the same order), and its gradients;
* (c) the optimizer: settings and decay groups per parameter, the learning-rate schedule over the whole
  budget, and the new weights after one training step at step N (both sides start from the same mid-training
  state: the public side takes a step at N-1 and its weights, EMA weights and AdamW state are loaded into the
  platform), plus the platform's AdamW applied to the public's gradients;
* (e) the EMA: its decay schedule over the budget, the EMA weights after that step (the EMA starts that step
  from weights of another init, so that the decay shows in them) and the decay the platform's update applied,
  read back from its EMA weights by least squares;
* (d) the samplers from the same initial noise: the public ``predict_action`` with the configured
  ``DDPMScheduler`` (100 steps, squared cosine, clip_sample, epsilon) vs the platform's ``predict_chunk``/``act``
  (same torch seed: the same initial noise and per-step noises), and with ``DDIMScheduler`` as
  ``train_diffusion_unet_ddim_lowdim_workspace.yaml`` sets it (8 steps, set_alpha_to_one, steps_offset 0, eta 0)
  vs the platform's ``sampler="ddim"`` with its default ``ddim_spacing="leading"`` (diffusers' timesteps
  ``(n-1) K//n, ..., K//n, 0``; a row checks them entry by entry against ``DDIMScheduler.set_timesteps``), and,
  measured and reported only, the named option ``ddim_spacing="linspace"`` (the platform's former rule,
  ``round(linspace(K-1, 0, n))``).

Differences are max abs differences, in normalized units for actions (the [-1, 1] space the network works
in).  Tolerances (float32): exact (0) for copied weights, masks, optimizer settings and the lr and EMA-decay
schedules; 1e-6 for the schedule tables, the normalizer and the EMA decay read back; 1e-5 relative to the compared values' largest magnitude for the
denoiser output, the loss and one AdamW step; 1e-4 relative for gradients (sums over 256 x 16 terms);
1e-5 absolute (normalized units) for a chain whose step coefficients are formed the same way on both sides
(DDIM, 8 steps; the public DDPM chain with diffusers' tables in float64, a labelled extra row): per-step
round-off of ~1e-7 grows at most linearly through a chain that clips x0 to [-1, 1] every step, and a
reference row measures the public chain's own sensitivity to one float32 rounding of its weights (~1e-6).
The public DDPM chain as it is gets 1e-4: diffusers keeps its tables in float32, and the first steps amplify
their rounding by up to ``1 / sqrt(abar_99)`` (about 2000; the gap is ~3e-5, and 7e-7 with float64 tables).

Writes ``twins_dp.md`` and ``twins_dp.parquet`` (one row per backbone and check: ``backbone, check, kind,
max_abs_diff, scale, tolerance, passed``; the metadata holds the public commit, the platform commit and the
versions) under ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms import EnvSpec  # noqa: E402
from algorithms.common import lr_factor  # noqa: E402
from algorithms.diffusion.samplers import ddim_timesteps  # noqa: E402
from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig, ema_decay  # noqa: E402
from benchmarks.twins import git_commit  # noqa: E402

PUBLIC_REPO = "github.com/real-stanford/diffusion_policy"
REQUIREMENTS = "benchmarks/requirements-twins-dp.txt"
OBS_DIM, ACT_DIM = 20, 2                    # Push-T low-dim (task/pusht_lowdim.yaml: 9 keypoints x 2 + agent x, y)
CONFIGS = {"cnn": "train_diffusion_unet_lowdim_workspace.yaml",
           "transformer": "train_diffusion_transformer_lowdim_pusht_workspace.yaml"}
DDIM_CONFIG = "train_diffusion_unet_ddim_lowdim_workspace.yaml"
STEP = 1200                                 # the compared training step: past both warm-ups (500 / 1000)
SEED = 0

# tolerances (see the module docstring)
EXACT, TABLE, REL_OUT, REL_GRAD, DDPM_ABS, DDIM_ABS = 0.0, 1e-6, 1e-5, 1e-4, 1e-4, 1e-5


# ----------------------------------------------------------------------------- the weight mapping


_RESAMPLE = re.compile(r"^((?:down|up)_modules\.\d+\.2)\.conv\.")
_PUBLIC_ONLY = {"transformer": ("_dummy_variable", "mask", "memory_mask"), "cnn": ()}


def map_public_key(backbone: str, key: str) -> str | None:
    """A public network's state_dict key -> the platform's (None: the key has no platform counterpart).

    U-Net: ``down_modules.i.2.conv.*`` (``Downsample1d``) and ``up_modules.i.2.conv.*`` (``Upsample1d``) are the
    platform's bare ``down_modules.i.2.*`` / ``up_modules.i.2.*`` convolutions; every other key is the same.
    Transformer: the same keys; ``_dummy_variable`` (``ModuleAttrMixin``'s device probe, empty) and the
    ``mask``/``memory_mask`` buffers (non-persistent on the platform, rebuilt from the horizons) are dropped."""
    if backbone not in _PUBLIC_ONLY:
        raise ValueError(f"backbone must be 'cnn' or 'transformer', got {backbone!r}")
    if key in _PUBLIC_ONLY[backbone]:
        return None
    if backbone == "cnn":
        return _RESAMPLE.sub(r"\1.", key)
    return key


def map_public_state(backbone: str, public_sd: dict) -> dict:
    """The public network's state_dict under the platform's keys (tensors shared, not copied)."""
    out = {}
    for key, value in public_sd.items():
        new = map_public_key(backbone, key)
        if new is not None:
            if new in out:
                raise KeyError(f"two public keys map to {new!r}")
            out[new] = value
    return out


def mapping_gaps(backbone: str, public_keys, platform_keys) -> tuple[list, list]:
    """``(platform keys no public key maps to, mapped public keys the platform lacks)``: both empty when the
    mapping covers the platform's network exactly."""
    mapped = {map_public_key(backbone, k) for k in public_keys} - {None}
    return sorted(set(platform_keys) - mapped), sorted(mapped - set(platform_keys))


# ----------------------------------------------------------------------------- the public code


def import_public_dp(path: str) -> types.SimpleNamespace:
    """The public modules the twin needs, imported from the checkout at ``path`` as they are (appended to
    ``sys.path``; the checkout has no ``__init__.py`` at its package root, so ``diffusion_policy`` is a namespace
    package).  Only these modules (and what they import: ``einops``, ``zarr``, ``diffusers``) are loaded, not the
    workspaces (hydra, wandb)."""
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.append(path)
    names = {"unet": "diffusion_policy.model.diffusion.conditional_unet1d",
             "transformer": "diffusion_policy.model.diffusion.transformer_for_diffusion",
             "unet_policy": "diffusion_policy.policy.diffusion_unet_lowdim_policy",
             "transformer_policy": "diffusion_policy.policy.diffusion_transformer_lowdim_policy",
             "normalizer": "diffusion_policy.model.common.normalizer",
             "ema": "diffusion_policy.model.diffusion.ema_model",
             "lr": "diffusion_policy.model.common.lr_scheduler"}
    mods = {k: importlib.import_module(v) for k, v in names.items()}
    for k, m in mods.items():
        if not os.path.abspath(m.__file__).startswith(path + os.sep):
            raise SystemExit(f"twins_dp: {names[k]} was imported from {m.__file__}, not from {path}: another "
                             f"diffusion_policy package is on sys.path")
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return types.SimpleNamespace(
        ConditionalUnet1D=mods["unet"].ConditionalUnet1D, TransformerForDiffusion=mods["transformer"].TransformerForDiffusion,
        DiffusionUnetLowdimPolicy=mods["unet_policy"].DiffusionUnetLowdimPolicy,
        DiffusionTransformerLowdimPolicy=mods["transformer_policy"].DiffusionTransformerLowdimPolicy,
        LinearNormalizer=mods["normalizer"].LinearNormalizer, EMAModel=mods["ema"].EMAModel,
        get_scheduler=mods["lr"].get_scheduler, DDPMScheduler=DDPMScheduler, DDIMScheduler=DDIMScheduler)


def public_config(path: str, name: str) -> dict:
    """A public workspace yaml as a plain dict (literal values only; ``${...}`` interpolations stay strings)."""
    import yaml

    with open(os.path.join(path, "diffusion_policy", "config", name)) as f:
        return yaml.safe_load(f)


def scheduler_kwargs(conf: dict) -> dict:
    return {k: v for k, v in conf["policy"]["noise_scheduler"].items() if k != "_target_"}


def build_public(pub, backbone: str, conf: dict, scheduler=None, num_inference_steps=None):
    """The public low-dim policy as the yaml builds it (the ``${eval: ...}`` fields resolved for global/obs
    conditioning on Push-T low-dim: input_dim = act_dim, global_cond_dim = obs_dim * To, cond_dim = obs_dim)."""
    p, To, Tp = conf["policy"], conf["n_obs_steps"], conf["horizon"]
    model_kw = {k: v for k, v in p["model"].items() if not k.startswith("_") and not isinstance(v, str)}
    if scheduler is None:
        scheduler = pub.DDPMScheduler(**scheduler_kwargs(conf))
    common = dict(noise_scheduler=scheduler, horizon=Tp, obs_dim=OBS_DIM, action_dim=ACT_DIM,
                  n_action_steps=conf["n_action_steps"], n_obs_steps=To,
                  num_inference_steps=num_inference_steps or p["num_inference_steps"])
    if backbone == "cnn":
        assert conf["obs_as_global_cond"] and not conf["obs_as_local_cond"] and not conf["pred_action_steps_only"]
        model = pub.ConditionalUnet1D(input_dim=ACT_DIM, local_cond_dim=None, global_cond_dim=OBS_DIM * To, **model_kw)
        return pub.DiffusionUnetLowdimPolicy(model=model, obs_as_local_cond=False, obs_as_global_cond=True,
                                             pred_action_steps_only=False, oa_step_convention=p["oa_step_convention"],
                                             **common)
    assert conf["obs_as_cond"] and not conf["pred_action_steps_only"]
    model_kw.pop("obs_as_cond", None)
    model = pub.TransformerForDiffusion(input_dim=ACT_DIM, output_dim=ACT_DIM, horizon=Tp, n_obs_steps=To,
                                        cond_dim=OBS_DIM, obs_as_cond=True, **model_kw)
    return pub.DiffusionTransformerLowdimPolicy(model=model, obs_as_cond=True, pred_action_steps_only=False, **common)


def public_optimizer(policy, backbone: str, conf: dict) -> torch.optim.Optimizer:
    """As the workspaces build it: U-Net ``AdamW(policy.parameters(), **cfg.optimizer)``; transformer
    ``policy.get_optimizer(**cfg.optimizer)`` (decay groups)."""
    o = conf["optimizer"]
    if backbone == "cnn":
        return torch.optim.AdamW(policy.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                 weight_decay=o["weight_decay"])
    return policy.get_optimizer(weight_decay=o["weight_decay"], learning_rate=o["learning_rate"], betas=o["betas"])


def config_mismatches(cfg: DiffusionPolicyConfig, conf: dict, backbone: str) -> list[str]:
    """The platform config's values that differ from the public yaml's (empty: all agree)."""
    p, m, s, e, t, o = (conf["policy"], conf["policy"]["model"], conf["policy"]["noise_scheduler"], conf["ema"],
                        conf["training"], conf["optimizer"])
    pairs = [("obs_horizon", cfg.obs_horizon, conf["n_obs_steps"]), ("pred_horizon", cfg.pred_horizon, conf["horizon"]),
             ("action_horizon", cfg.action_horizon, conf["n_action_steps"]),
             ("n_timesteps", cfg.n_timesteps, s["num_train_timesteps"]),
             ("beta_schedule", {"cosine": "squaredcos_cap_v2"}.get(cfg.beta_schedule), s["beta_schedule"]),
             ("clip_sample", cfg.clip_sample == 1.0, s["clip_sample"]), ("prediction_type", "epsilon", s["prediction_type"]),
             ("variance_type", "fixed_small", s["variance_type"]),
             ("n_inference_steps", cfg.n_inference_steps, p["num_inference_steps"]),
             ("ema_update_after_step", cfg.ema_update_after_step, e["update_after_step"]),
             ("ema_inv_gamma", cfg.ema_inv_gamma, e["inv_gamma"]), ("ema_power", cfg.ema_power, e["power"]),
             ("ema_min", cfg.ema_min, e["min_value"]), ("ema_max", cfg.ema_max, e["max_value"]),
             ("use_ema", cfg.use_ema, t["use_ema"]), ("lr_schedule", cfg.lr_schedule, t["lr_scheduler"]),
             ("lr_warmup_steps", cfg.lr_warmup_steps, t["lr_warmup_steps"]),
             ("lr", cfg.lr, o.get("lr", o.get("learning_rate"))), ("weight_decay", cfg.weight_decay, o["weight_decay"]),
             ("betas", tuple(cfg.betas), tuple(o["betas"])), ("adam_eps", cfg.adam_eps, o.get("eps", 1e-8)),
             ("max_steps / 42 batches per epoch", cfg.max_steps // 42, t["num_epochs"])]
    if backbone == "cnn":
        pairs += [("down_dims", tuple(cfg.down_dims), tuple(m["down_dims"])), ("kernel_size", cfg.kernel_size, m["kernel_size"]),
                  ("n_groups", cfg.n_groups, m["n_groups"]),
                  ("diffusion_step_embed_dim", cfg.diffusion_step_embed_dim, m["diffusion_step_embed_dim"]),
                  ("cond_predict_scale", cfg.cond_predict_scale, m["cond_predict_scale"])]
    else:
        pairs += [(k, getattr(cfg, k), m[k]) for k in ("n_layer", "n_head", "n_emb", "p_drop_emb", "p_drop_attn",
                                                        "causal_attn", "n_cond_layers")]
        pairs += [("time_as_cond", True, m["time_as_cond"])]
    return [f"{name}: platform {a!r} vs public {b!r}" for name, a, b in pairs if a != b]


# ----------------------------------------------------------------------------- data


def synthetic_pusht(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """``n`` Push-T-shaped windows in pixels, float32: ``obs (n, Tp, 20)`` (per-dimension ranges inside
    [0, 512], like the keypoints and the agent position), ``action (n, Tp, 2)`` (agent targets)."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 150, OBS_DIM + ACT_DIM)
    hi = lo + rng.uniform(200, 350, OBS_DIM + ACT_DIM)
    x = rng.uniform(lo, hi, (n, 16, OBS_DIM + ACT_DIM)).astype(np.float32)
    return {"obs": x[..., :OBS_DIM], "action": x[..., OBS_DIM:]}


def env_spec_of(data: dict[str, np.ndarray]) -> EnvSpec:
    """The platform's spec with the data's per-dimension ranges (the public normalizer fits the same min/max)."""
    o, a = data["obs"].reshape(-1, OBS_DIM), data["action"].reshape(-1, ACT_DIM)
    f = lambda v: tuple(float(x) for x in v)  # noqa: E731  (float32 values, exactly)
    return EnvSpec(obs_dim=OBS_DIM, act_dim=ACT_DIM, act_low=(0.0,) * ACT_DIM, act_high=(512.0,) * ACT_DIM,
                   obs_low=f(o.min(0)), obs_high=f(o.max(0)), act_min=f(a.min(0)), act_max=f(a.max(0)))


# ----------------------------------------------------------------------------- comparisons


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def max_abs(a) -> float:
    return float(torch.as_tensor(a).double().abs().max())


def dict_diff(ours: dict, theirs: dict) -> tuple[float, float]:
    """``(max |ours - theirs|, max |theirs|)`` over the tensors of two dicts with the same keys."""
    if set(ours) != set(theirs):
        raise KeyError(f"keys differ: {sorted(set(ours) ^ set(theirs))}")
    nonempty = [k for k in theirs if theirs[k].numel()]
    return (max(max_diff(ours[k], theirs[k]) for k in nonempty), max(max_abs(theirs[k]) for k in nonempty))


def row(backbone, check, diff, scale=1.0, tol=None, rel=False, kind="check", note="") -> dict:
    """One result; ``rel``: the tolerance is ``tol * max(1, scale)``.  ``kind="deviation"``: a documented
    difference, measured and reported, not checked (``tolerance`` and ``passed`` None); ``"reference"``: a
    measurement that sizes a tolerance (idem)."""
    tolerance = None if tol is None else (tol * max(1.0, scale) if rel else tol)
    return {"backbone": backbone, "check": check, "kind": kind, "max_abs_diff": float(diff), "scale": float(scale),
            "tolerance": tolerance, "passed": None if tolerance is None else bool(diff <= tolerance), "note": note}


def named_params(module) -> dict:
    return dict(module.named_parameters())


def compare_backbone(pub, backbone: str, path: str, batch_size: int, sample_batch: int) -> tuple[list, dict]:
    """Every check for one backbone: rows and the facts the report quotes (timesteps, lr)."""
    conf, ddim_conf = public_config(path, CONFIGS[backbone]), public_config(path, DDIM_CONFIG)
    cfg = DiffusionPolicyConfig(backbone=backbone)
    rows, facts = [], {}
    bad = config_mismatches(cfg, conf, backbone)
    rows.append(row(backbone, "config: platform defaults vs the public yaml (fields that differ)", len(bad),
                    tol=EXACT, note="; ".join(bad)))

    data = synthetic_pusht(4 * batch_size)
    spec = env_spec_of(data)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    batches = [{k: v[i * batch_size:(i + 1) * batch_size] for k, v in t.items()} for i in range(2)]

    # ---- the two sides, same weights
    torch.manual_seed(SEED)
    policy = build_public(pub, backbone, conf)
    normalizer = pub.LinearNormalizer()
    normalizer.fit({"obs": t["obs"], "action": t["action"]}, last_n_dims=1, mode="limits")
    policy.set_normalizer(normalizer)
    ema_policy = copy.deepcopy(policy)
    # a mid-training EMA: its weights far from the model's (another init), so that the decay shows in them
    torch.manual_seed(SEED + 10)
    ema_policy.model.load_state_dict(build_public(pub, backbone, conf).model.state_dict())
    ema = pub.EMAModel(model=ema_policy, **{k: v for k, v in conf["ema"].items() if k != "_target_"})
    optimizer = public_optimizer(policy, backbone, conf)
    lr_scheduler = pub.get_scheduler(conf["training"]["lr_scheduler"], optimizer=optimizer,
                                     num_warmup_steps=conf["training"]["lr_warmup_steps"],
                                     num_training_steps=cfg.max_steps)
    algo = DiffusionPolicy(cfg, spec)
    pub_sd = policy.model.state_dict()
    missing, extra = mapping_gaps(backbone, pub_sd, algo.model.state_dict())
    if missing or extra:
        raise KeyError(f"{backbone} weight mapping: platform keys not covered {missing}, unknown keys {extra}")
    algo.model.load_state_dict(map_public_state(backbone, pub_sd), strict=True)
    rows.append(row(backbone, "weights after the mapping", dict_diff(algo.model.state_dict(),
                                                                     map_public_state(backbone, pub_sd))[0], tol=EXACT,
                    note=f"{len(pub_sd)} public keys -> {len(algo.model.state_dict())} platform keys"))
    if backbone == "transformer":
        same = (torch.equal(algo.model.mask, policy.model.mask)  # additive masks: 0 and -inf entries
                and torch.equal(algo.model.memory_mask, policy.model.memory_mask))
        rows.append(row(backbone, "attention masks (causal, memory): entries that differ",
                        0.0 if same else float(((algo.model.mask != policy.model.mask).sum()
                                                + (algo.model.memory_mask != policy.model.memory_mask).sum())),
                        tol=EXACT))

    # ---- normalizer and schedule tables
    probe = batches[0]
    n_pub = policy.normalizer.normalize({"obs": probe["obs"], "action": probe["action"]})
    rows.append(row(backbone, "normalizer (obs and action, [-1, 1] units)",
                    max(max_diff(algo.normalize_obs(probe["obs"]), n_pub["obs"]),
                        max_diff(algo.normalize_action(probe["action"]), n_pub["action"])), tol=TABLE))
    rows.append(row(backbone, "noise schedule (alphas_cumprod)",
                    max_diff(algo.schedule.alphas_cumprod, policy.noise_scheduler.alphas_cumprod), tol=TABLE))

    # ---- (a) the denoiser on fixed inputs (eval mode: no dropout)
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(64, cfg.pred_horizon, ACT_DIM, generator=g)
    k = torch.randint(0, cfg.n_timesteps, (64,), generator=g)
    nobs = torch.rand(64, cfg.obs_horizon, OBS_DIM, generator=g) * 2 - 1
    policy.model.eval()
    algo.model.eval()
    with torch.no_grad():
        out_pub = (policy.model(x, k, global_cond=nobs.reshape(64, -1)) if backbone == "cnn"
                   else policy.model(x, k, nobs))
        out_ours = algo._eps(algo.model, x, k, nobs)
    rows.append(row(backbone, "(a) denoiser output (64 fixed inputs)", max_diff(out_ours, out_pub), max_abs(out_pub),
                    REL_OUT, rel=True))

    # ---- (e), (c) the EMA decay and lr schedules over the whole budget
    grid = sorted(set(range(0, cfg.max_steps + 1, 997)) | {0, 1, cfg.lr_warmup_steps - 1, cfg.lr_warmup_steps,
                                                            cfg.lr_warmup_steps + 1, cfg.max_steps})
    lam = lr_scheduler.lr_lambdas[0]
    rows.append(row(backbone, f"(e) EMA decay schedule, {len(grid)} steps in [0, {cfg.max_steps}]",
                    max(abs(ema.get_decay(n) - ema_decay(n, cfg.ema_power, cfg.ema_inv_gamma, cfg.ema_min, cfg.ema_max,
                                                         cfg.ema_update_after_step)) for n in grid), tol=EXACT))
    rows.append(row(backbone, f"(c) lr schedule factor, {len(grid)} steps in [0, {cfg.max_steps}]",
                    max(abs(lam(n) - lr_factor(n, cfg.lr_warmup_steps, cfg.max_steps, cfg.lr_schedule)) for n in grid),
                    tol=EXACT))

    # ---- a common mid-training state: the public side takes step N-1, the platform loads it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": only advancing it
        for _ in range(STEP - 1):
            lr_scheduler.step()
    ema.optimization_step = STEP - 1
    policy.train()
    torch.manual_seed(SEED + 2)
    public_train_step(policy, backbone, batches[0], optimizer, lr_scheduler, ema)
    algo.model.load_state_dict(map_public_state(backbone, policy.model.state_dict()), strict=True)
    algo.ema_model.load_state_dict(map_public_state(backbone, ema_policy.model.state_dict()), strict=True)
    pub_params = {map_public_key(backbone, n[len("model."):]): p for n, p in named_params(policy).items()
                  if n.startswith("model.") and map_public_key(backbone, n[len("model."):]) is not None}
    ours_params = named_params(algo.model)
    for name, p in ours_params.items():
        st = optimizer.state[pub_params[name]]
        algo.optimizer.state[p] = {k: v.clone() for k, v in st.items()}
    algo.step = STEP

    # optimizer settings per parameter: lr, betas, eps, weight decay of the group holding it
    def settings(opt, params):
        by_id = {id(p): grp for grp in opt.param_groups for p in grp["params"]}
        return {n: torch.tensor([by_id[id(p)]["lr"], *by_id[id(p)]["betas"], by_id[id(p)]["eps"],
                                 by_id[id(p)]["weight_decay"]], dtype=torch.float64) for n, p in params.items()}

    lr_pub = optimizer.param_groups[0]["lr"]
    s_pub = settings(optimizer, pub_params)  # before the step: the public scheduler moves the lr after it

    # ---- (b) loss and gradients, (c) new weights, (e) EMA: one training step at N from the same state
    w_before = {n: p.detach().clone() for n, p in ours_params.items()}
    ema_before = [p.detach().clone() for p in algo.ema_model.parameters()]
    s_before = copy.deepcopy(algo.optimizer.state_dict())
    torch.manual_seed(SEED + 3)
    loss_pub, grads_pub = public_train_step(policy, backbone, batches[1], optimizer, lr_scheduler, ema)
    torch.manual_seed(SEED + 3)
    metrics = algo.update(batches[1])
    for group in algo.optimizer.param_groups:  # the lr that update used, to compare the settings it stepped with
        assert group["lr"] == metrics["train/lr"]
    rows.append(row(backbone, "(c) AdamW settings per parameter (lr at step N, betas, eps, weight decay)",
                    dict_diff(settings(algo.optimizer, ours_params), s_pub)[0], tol=EXACT,
                    note=f"lr at step {STEP}: public {lr_pub:.9g}, platform {metrics['train/lr']:.9g}"))
    loss_ours = float(metrics["train/loss"])
    rows.append(row(backbone, f"(b) training loss, one batch of {batch_size} (same noise, timesteps"
                    + (", dropout masks)" if backbone == "transformer" else ")"),
                    abs(loss_ours - loss_pub), abs(loss_pub), REL_OUT, rel=True,
                    note=f"public {loss_pub:.7f}, platform {loss_ours:.7f}"))
    grads_ours = {n: p.grad.detach().clone() for n, p in ours_params.items()}
    d, s = dict_diff(grads_ours, grads_pub)
    rows.append(row(backbone, "(b) gradients of that loss", d, s, REL_GRAD, rel=True))
    new_pub = {n: p.detach() for n, p in pub_params.items()}
    d, s = dict_diff({n: p.detach() for n, p in ours_params.items()}, new_pub)
    rows.append(row(backbone, f"(c) weights after one training step (step {STEP})", d, s, REL_OUT, rel=True))
    d, s = dict_diff(dict(algo.ema_model.named_parameters()),
                     map_public_state(backbone, dict(ema_policy.model.named_parameters())))
    rows.append(row(backbone, "(e) EMA weights after that step", d, s, REL_OUT, rel=True))
    # the decay the platform's update applied, read back from its EMA (least squares over every weight):
    # E' = d E + (1 - d) W  =>  1 - d = <E' - E, W - E> / |W - E|^2
    num = den = 0.0
    with torch.no_grad():
        for e0, e1, w in zip(ema_before, algo.ema_model.parameters(), algo.model.parameters()):
            num += float(((e1 - e0).double() * (w - e0).double()).sum())
            den += float(((w - e0).double() ** 2).sum())
    decay_ours = 1.0 - num / den
    rows.append(row(backbone, f"(e) EMA decay the update applied at step {STEP} (read back from the EMA weights)",
                    abs(decay_ours - ema.decay), tol=TABLE,
                    note=f"public {ema.decay:.9f}, platform {decay_ours:.9f} (float32 holds a decay near 1 to 6e-8)"))
    # the platform's AdamW on the public's gradients, from the same state: isolates the optimizer
    with torch.no_grad():
        for n, p in ours_params.items():
            p.copy_(w_before[n])
            p.grad = grads_pub[n].clone()
    algo.optimizer.load_state_dict(s_before)
    for group in algo.optimizer.param_groups:
        group["lr"] = metrics["train/lr"]
    algo.optimizer.step()
    d, s = dict_diff({n: p.detach() for n, p in ours_params.items()}, new_pub)
    rows.append(row(backbone, "(c) the platform's AdamW step on the public's gradients", d, s, REL_OUT, rel=True))
    algo.model.load_state_dict(map_public_state(backbone, policy.model.state_dict()), strict=True)

    # ---- (d) samplers from the same initial noise, acting with the EMA networks
    obs = t["obs"][-sample_batch:, :cfg.obs_horizon]
    torch.manual_seed(SEED + 4)
    with torch.no_grad():
        res_pub = ema_policy.predict_action({"obs": obs})
    torch.manual_seed(SEED + 4)
    chunk = algo.predict_chunk(obs)
    torch.manual_seed(SEED + 4)
    acts = algo.act(obs)
    na = algo.normalize_action
    rows.append(row(backbone, f"(d) DDPM {cfg.n_inference_steps} steps: chunk from the same noise "
                    f"({sample_batch} x {cfg.pred_horizon} x {ACT_DIM}, normalized units)",
                    max_diff(na(chunk), na(res_pub["action_pred"])), tol=DDPM_ABS))
    rows.append(row(backbone, "(d) DDPM: act (Ta actions from step To-1) vs predict_action['action']",
                    max_diff(na(acts), na(res_pub["action"])), tol=DDPM_ABS))
    # the same public chain with its scheduler's tables in float64, as the platform computes its own (float32
    # betas, float64 alphas_cumprod & co.): what remains is the arithmetic on float32 tensors
    ema_policy.noise_scheduler = float64_tables(pub.DDPMScheduler(**scheduler_kwargs(conf)))
    torch.manual_seed(SEED + 4)
    with torch.no_grad():
        res_64 = ema_policy.predict_action({"obs": obs})
    ema_policy.noise_scheduler = policy.noise_scheduler
    rows.append(row(backbone, "(d) DDPM: the same public chain with diffusers' tables in float64 (the platform's)",
                    max_diff(na(chunk), na(res_64["action_pred"])), tol=DDIM_ABS))
    # what float32 round-off alone does to the public chain: its EMA weights scaled by (1 + 2^-23), same noise
    nudged = copy.deepcopy(ema_policy)
    with torch.no_grad():
        for p in nudged.model.parameters():
            p.mul_(1.0 + 2.0 ** -23)
        torch.manual_seed(SEED + 4)
        res_nudged = nudged.predict_action({"obs": obs})
    rows.append(row(backbone, "(d) reference: the public DDPM chain vs itself with every weight scaled by "
                    "(1 + 2^-23)", max_diff(na(res_nudged["action_pred"]), na(res_pub["action_pred"])),
                    kind="reference", note="the chain's own sensitivity to one float32 rounding of the weights"))

    n_ddim = ddim_conf["policy"]["num_inference_steps"]
    ddim_kw = scheduler_kwargs(ddim_conf)
    # the platform's DDIM returns x0_hat at t = 0 and steps between consecutive timesteps: diffusers' step with
    # set_alpha_to_one and no offset (prev_timestep = t - K//n)
    assert ddim_kw["set_alpha_to_one"] is True and ddim_kw["steps_offset"] == 0, ddim_kw
    ddim = pub.DDIMScheduler(**ddim_kw)
    ddim_policy = build_public(pub, backbone, conf, scheduler=ddim, num_inference_steps=n_ddim)
    ddim_policy.load_state_dict(ema_policy.state_dict())
    ddim_policy.eval()
    torch.manual_seed(SEED + 5)
    with torch.no_grad():
        ddim_pub = ddim_policy.predict_action({"obs": obs})["action_pred"]
    ddim.set_timesteps(n_ddim)
    ts_pub = [int(v) for v in ddim.timesteps]
    chunks, facts["ddim_timesteps"] = {}, {"public (diffusers DDIMScheduler)": ts_pub}
    for spacing in ("leading", "linspace"):
        option = {} if spacing == "leading" else {"ddim_spacing": spacing}  # "leading": the config's default
        algo_ddim = DiffusionPolicy(DiffusionPolicyConfig(backbone=backbone, sampler="ddim", n_inference_steps=n_ddim,
                                                          **option), spec)
        assert algo_ddim.cfg.ddim_spacing == spacing, (algo_ddim.cfg.ddim_spacing, spacing)
        algo_ddim.load_state_dict(algo.policy_state_dict())
        facts["ddim_timesteps"][f"platform {spacing}"] = ddim_timesteps(cfg.n_timesteps, n_ddim, spacing)
        torch.manual_seed(SEED + 5)
        chunks[spacing] = algo_ddim.predict_chunk(obs)
    ts_ours = facts["ddim_timesteps"]["platform leading"]
    rows.append(row(backbone, f"(d) DDIM {n_ddim} steps: the default timesteps vs diffusers' set_timesteps "
                    "(entries that differ)",
                    sum(a != b for a, b in zip(ts_ours, ts_pub)) + abs(len(ts_ours) - len(ts_pub)), tol=EXACT, note=f"platform {ts_ours}, diffusers {ts_pub}"))
    rows.append(row(backbone, f"(d) DDIM {n_ddim} steps as configured (ddim_spacing='leading', the default): chunk "
                    "from the same noise", max_diff(na(chunks["leading"]), na(ddim_pub)), tol=DDIM_ABS))
    ts_lin = facts["ddim_timesteps"]["platform linspace"]
    rows.append(row(backbone, f"(d) DDIM {n_ddim} steps with the option ddim_spacing='linspace' (timesteps {ts_lin}) "
                    "vs diffusers'", max_diff(na(chunks["linspace"]), na(ddim_pub)), kind="deviation",
                    note="a named option, off by default (algorithms/diffusion_policy.py): the platform's DDIM "
                         "timesteps before ddim_spacing existed"))
    facts["lr_at_step"] = {"public": lr_pub, "platform": metrics["train/lr"]}
    return rows, facts


def float64_tables(scheduler):
    """A diffusers DDPM/DDIM scheduler with its per-step tables in float64 (from its float32 betas, as the
    platform's ``DiffusionSchedule``): its ``step`` then forms the coefficients in float64 and applies them to
    the float32 sample.  Used only for a labelled reference row, never for the public-as-is comparisons."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def public_train_step(policy, backbone: str, batch, optimizer, lr_scheduler, ema) -> tuple[float, dict]:
    """One step of the public workspace's loop (``train_diffusion_*_lowdim_workspace.py``: compute_loss,
    backward, optimizer.step, zero_grad, lr_scheduler.step, ema.step) -> loss and the gradients (platform keys)."""
    loss = policy.compute_loss(batch)
    loss.backward()
    grads = {map_public_key(backbone, n[len("model."):]): p.grad.detach().clone()
             for n, p in policy.named_parameters() if n.startswith("model.") and p.grad is not None}
    grads.pop(None, None)
    optimizer.step()
    optimizer.zero_grad()
    lr_scheduler.step()
    ema.step(policy)
    return float(loss.detach()), grads


# ----------------------------------------------------------------------------- report


def markdown(rows: list[dict], meta: dict) -> str:
    L = ["# Diffusion Policy twin: the platform beside the authors' code (issue 38, part 2)", "",
         f"Public code: {meta['public_repo']} at `{meta['public_commit']}`; platform at `{meta['platform_commit']}`"
         + (f" plus uncommitted changes to {', '.join(meta['platform_uncommitted'])}"
            if meta["platform_uncommitted"] else "") + ".  "
         f"torch {meta['torch']}, diffusers {meta['diffusers']}, einops {meta['einops']}, Python {meta['python']}; "
         f"{meta['threads']} torch thread(s), CPU; {meta['wall_s']:.0f} s wall "
         f"(load average {meta['load_1m_start']:.1f} at the start on {meta['cpus']} CPUs).", "",
         "Push-T low-dim configuration (obs_dim 20, act_dim 2, To=2, Tp=16, Ta=8), the public side built from "
         "its workspace yamls, the platform from `DiffusionPolicyConfig` defaults; the same weights loaded into "
         f"both (`benchmarks/twins_dp.py: map_public_state`); batch {meta['batch_size']} for the training step "
         f"(at step {meta['step']}), {meta['sample_batch']} observations for the samplers.  Differences are max abs "
         "differences; actions in normalized units ([-1, 1]).  A relative tolerance is scaled by max(1, largest "
         "compared magnitude).", "",
         "| backbone | check | max abs diff | scale | tolerance | passed |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        tol = "measured" if r["tolerance"] is None else f"{r['tolerance']:.1e}"
        passed = r["kind"] if r["passed"] is None else ("yes" if r["passed"] else "**no**")
        L.append(f"| {r['backbone']} | {r['check']} | {r['max_abs_diff']:.2e} | {r['scale']:.3g} | {tol} | {passed} |")
    notes = [r for r in rows if r["note"]]
    if notes:
        L += ["", "Notes:", ""] + [f"* {r['backbone']}, {r['check'].split(':')[0]}: {r['note']}" for r in notes]
    checks = [r for r in rows if r["passed"] is not None]
    L += ["", f"{sum(r['passed'] for r in checks)} of {len(checks)} checks pass; "
          f"{sum(r['kind'] == 'deviation' for r in rows)} rows measure documented deviations, "
          f"{sum(r['kind'] == 'reference' for r in rows)} size a tolerance.", "",
          "Tolerances (float32): exact for copied weights, masks, optimizer settings and the lr and EMA-decay "
          "schedules; 1e-6 for the schedule and normalizer tables (float32 vs float64-then-rounded tables) and the "
          "EMA decay read back from the weights (an off-by-one step there moves it by 3e-6); 1e-5 relative for the "
          "denoiser output, the loss, one AdamW step and the EMA; 1e-4 relative for gradients (sums over a whole "
          "batch in a different summation order); 1e-5 absolute in normalized units for the chains whose step "
          "coefficients are formed alike (DDIM, 8 steps; DDPM with diffusers' tables in float64): per-step round-off "
          "of ~1e-7 accumulates at most linearly over the steps, each of which clips x0 to [-1, 1] (the reference "
          "row: the public chain moves by ~1e-6 when its weights are rounded once more); 1e-4 for the public DDPM "
          "chain as it is: diffusers keeps its schedule tables in float32 and the first steps amplify their "
          "rounding by up to 1 / sqrt(abar_99), about 2000 (the platform's tables are float64).", "",
          f"Rerun: `{meta['command']}` (with `pip install -r {REQUIREMENTS}` in the benchmark's environment).", ""]
    return "\n".join(L)


def write(rows: list[dict], meta: dict, out: str) -> list[str]:
    """``twins_dp.parquet`` (one row per check; ``meta`` in the schema metadata under ``twins_dp``) and
    ``twins_dp.md`` under ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    schema = pa.schema([("backbone", pa.string()), ("check", pa.string()), ("kind", pa.string()),
                        ("max_abs_diff", pa.float64()), ("scale", pa.float64()), ("tolerance", pa.float64()),
                        ("passed", pa.bool_()), ("note", pa.string()), ("public_commit", pa.string()),
                        ("platform_commit", pa.string())])
    common = {"public_commit": meta["public_commit"], "platform_commit": meta["platform_commit"]}
    table = pa.Table.from_pylist([{**r, **common} for r in rows], schema=schema)
    table = table.replace_schema_metadata({"twins_dp": json.dumps(meta)})
    paths = [os.path.join(out, "twins_dp.parquet"), os.path.join(out, "twins_dp.md")]
    pq.write_table(table, paths[0])
    with open(paths[1], "w") as f:
        f.write(markdown(rows, meta))
    return paths


# ----------------------------------------------------------------------------- the twin


def dp_twin(args) -> dict:
    """Run every check for both backbones; ``{"rows": [...], "meta": {...}, "facts": {...}}`` or ``{}`` when
    diffusers or the checkout is missing (one line printed)."""
    path = getattr(args, "public_dp", None)
    if importlib.util.find_spec("diffusers") is None:
        print(f"[twins] dp: skipped (diffusers is not installed: pip install -r {REQUIREMENTS} into the "
              f"benchmark's environment)", flush=True)
        return {}
    if not path or not os.path.isfile(os.path.join(path, "diffusion_policy", "policy",
                                                   "diffusion_unet_lowdim_policy.py")):
        print(f"[twins] dp: skipped (no checkout of {PUBLIC_REPO} at {path!r})", flush=True)
        return {}
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    threads = int(getattr(args, "threads", 1) or 1)
    torch.set_num_threads(threads)
    batch_size, sample_batch = int(getattr(args, "batch_size", 256)), int(getattr(args, "sample_batch", 8))
    pub = import_public_dp(path)
    import diffusers
    import einops

    rows, facts = [], {}
    for backbone in ("cnn", "transformer"):
        b_rows, facts[backbone] = compare_backbone(pub, backbone, path, batch_size, sample_batch)
        for r in b_rows:
            flag = "" if r["passed"] is None else (" ok" if r["passed"] else " FAILED")
            print(f"[twins] dp {backbone}: {r['check']}: {r['max_abs_diff']:.3g}{flag}", flush=True)
        rows += b_rows
    # what the platform side ran besides the commit: uncommitted edits to the code it imports
    status = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "algorithms"], capture_output=True,
                            text=True).stdout.splitlines()
    meta = {"public_repo": PUBLIC_REPO, "public_commit": git_commit(path), "platform_commit": git_commit(ROOT),
            "platform_uncommitted": [line[3:] for line in status], "torch": torch.__version__, "diffusers": diffusers.__version__,
            "einops": einops.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
            "threads": threads, "cpus": os.cpu_count() or 0, "load_1m_start": load_start,
            "wall_s": time.perf_counter() - t0, "batch_size": batch_size, "sample_batch": sample_batch,
            "step": STEP, "seed": SEED, "facts": facts,
            "command": f"python -m benchmarks.twins_dp --public-dp PATH --threads {threads} --batch-size "
                       f"{batch_size} --sample-batch {sample_batch}"}
    for p in write(rows, meta, getattr(args, "out", os.path.join("benchmarks", "results"))):
        print(f"[twins] wrote {p}", flush=True)
    return {"rows": rows, "meta": meta, "facts": facts}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--public-dp", default=None, metavar="PATH", help=f"a checkout of {PUBLIC_REPO}")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch (default 256, the public config's)")
    p.add_argument("--sample-batch", type=int, default=8, help="observations sampled from (default 8)")
    return p


def main(argv=None) -> dict:
    return dp_twin(parser().parse_args(argv))


if __name__ == "__main__":
    main()
