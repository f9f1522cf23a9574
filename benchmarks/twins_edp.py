"""EDP equivalence twin: the platform's EDP beside the authors' JAX/Flax code on the same weights and draws.

    python -m benchmarks.twins_edp --public-edp PATH [--out benchmarks/results] [--threads 1]
        [--dataset generated:hopper-medium] [--batch-size 256] [--seed 0]

``PATH`` is a checkout of github.com/sail-sg/edp that the user fetched; its ``diffusion/`` and ``utilities/``
modules are imported from there as they are (nothing copied into this repository, nothing downloaded).  Its
trainer (``diffusion/trainer.py``, which imports d4rl, gym and wandb) is never imported: the harness builds the
public ``DiffusionPolicy``, ``Critic``, ``Value``, ``GaussianPolicy`` and ``DiffusionQL`` agent the way the
trainer's ``_setup_*`` does, with the README's DPM-Solver settings (``--sample_method=dpm
--algo_cfg.num_timesteps=1000``, linear schedule, 15 solver calls, ``t_end`` 1e-3) and ``hps.py``'s ``gn`` of
the task (9.0 for hopper-medium; the platform resolves the same through ``algorithms/paper_settings.py``).

**Environment.**  JAX is not a project dependency: install the pins of ``benchmarks/requirements-twins-edp.txt``
into the benchmark's own environment (a copy of the project's venv), e.g.
``python -m pip install -r benchmarks/requirements-twins-edp.txt``.  Python 3.11 and the project's numpy 2 rule
out the 2022-era JAX the public code was written against, and two names it calls were removed from JAX in 2022:
``jax.tree_multimap`` (renamed ``jax.tree_util.tree_map``) and the array method ``x.tile(reps)`` (=
``jnp.tile(x, reps)``, used by its DPM-Solver's ``interpolate_fn``).  ``restore_removed_jax_names`` puts both
back as the aliases they were; nothing else of the public code is touched.  Without JAX, ``edp_twin`` prints one
line and returns ``{}``.

**Weight mapping** (``flax_to_platform``, pure numpy): a Flax ``Dense`` kernel is ``(in, out)``, a torch
``Linear`` weight ``(out, in)``: every kernel is transposed.  Policy: ``base_net/TimeEmbedding_0/Dense_{0,1}`` ->
``actor.time_mlp.{1,3}``, ``base_net/Dense_{0,1,2}`` -> ``actor.mid_layer.{0,2,4}``, ``base_net/Dense_3`` ->
``actor.final_layer``; the first layer's input rows are permuted from the code's ``[s, a, t_emb]`` to the
platform's ``[a, t_emb, s]``.  Critics: ``qf1``/``qf2`` ``Dense_{0..3}`` -> ``critic.q{1,2}_model.{0,2,4,6}``
(both ``[s, a]``), value ``vf`` ``Dense_{0..3}`` -> ``value.{0,2,4,6}``; target networks likewise.

**Checks** on a batch of the platform's loaded dataset (``load_dataset``), each side's random draws aligned: the
harness derives from the public step's PRNG key the draws the public code makes (``jax.random.split`` in its
order: timesteps, noise, the solver's initial noise, the TD3 head coin) and hands exactly those values to the
platform's ``torch.randint`` / ``torch.randn_like`` / ``torch.randn`` / ``torch.rand`` calls (``scripted_draws``:
a draw out of order or of another shape fails), so the platform runs its own ``EDP.update``, ``EDP.sample`` and
``EDP.action_approximation``:

* (a) the denoiser's output at integer steps and at DPM-Solver's fractional steps;
* (b) the diffusion loss of one batch (``DiffusionQL.get_diff_loss`` against ``EDP.action_approximation``);
* (c) one optimizer step, TD3 and IQL backbones (the public jitted ``DiffusionQL._train_step`` against
  ``EDP.update``): every new weight (policy, both critics, value, target critics), the gradient norms before
  clipping, both optimizers fresh (optax ``clip_by_global_norm(gn)`` + ``adamw(3e-4, weight_decay=0)`` against
  torch ``clip_grad_norm_`` + ``Adam(3e-4)``; the code's cosine lr decay is off in its config);
* (d) DPM-Solver at 15 calls from the same initial noise (``DiffusionPolicy.dpm_sample`` against
  ``EDP.sample``), and the action approximation (the one-step x0 estimate of the policy loss);
* (e) the critic losses (TD3: twin Q with the target policy's DPM-Solver actions; IQL: the expectile value loss and
  the Q loss on the new V) and the policy losses of both backbones, as each step reports them.

Tolerances: float32 (JAX/XLA and torch sum matmuls in different orders): ``1e-5`` relative to the quantity's
scale (its largest magnitude, at least 1) for one network pass and the losses; looser ones, each explained in
the report (``TOLERANCE_NOTES``), for the one-step weights (Adam's first step divides by ``|g| + eps``), the
action approximation (x0 multiplies the eps error by ``sqrt(1/abar - 1)``, up to 157) and the 15-call solver.

Writes ``twins_edp.md`` and ``twins_edp.parquet`` (one row per check: backbone, check, max_abs_diff, tolerance,
passed; the public and platform commits and the package versions in the file's metadata) under ``--out``.

**Learning twin** (``--learning`` or ``--learning-only``; ``edp_learning_twin``): EDP with the TD3 backbone trained
by the code's own ``DiffusionQL.train`` (batches drawn as its ``RandSampler`` draws them, with replacement, from
the platform's loaded transitions, actions clipped at 0.999) and by the platform's ``SeedRun``, each side from its
own initialization, per seed of ``--learning-seeds`` (default 0 1 2) to each of ``--learning-eval-steps`` (2500
5000); both evaluated by the platform's ``run_episodes`` (env seeds ``--eval-seed``.., ``--eval-episodes``), the
code acting as its ``dpmensemble_act`` (``PublicEDPPolicy``).  Writes ``twins_edp_learning.{md,parquet}``: per
step both means, the 95% bootstrap CI of the difference (``benchmarks.twins.bootstrap_diff_ci``), the diffusion
losses and each side's training steps/s.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmarks.twins import git_commit  # noqa: E402

DEFAULT_DATASET = "generated:hopper-medium"
PUBLIC_REPO = "github.com/sail-sg/edp"
F32_RTOL = 1e-5          # one float32 network pass, JAX against torch
BACKBONES = ("td3", "iql")
PUBLIC_LOSS_TYPE = {"td3": "TD3", "iql": "IQL"}


# ----------------------------------------------------------------------------- the weight mapping (numpy only)


def _dense(tree: dict) -> dict[str, torch.Tensor]:
    """A Flax ``Dense`` (``kernel (in, out)``, ``bias``) as a torch ``Linear`` (``weight (out, in)``, ``bias``)."""
    kernel, bias = np.asarray(tree["kernel"], dtype=np.float32), np.asarray(tree["bias"], dtype=np.float32)
    return {"weight": torch.from_numpy(np.ascontiguousarray(kernel.T)), "bias": torch.from_numpy(bias.copy())}


def _mlp(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The code's ``Critic`` / ``Value`` (``Dense_0..Dense_3`` with Mish between) as ``mlp``'s ``{0,2,4,6}``."""
    n = len([k for k in tree if k.startswith("Dense_")])
    out = {}
    for i in range(n):
        for name, value in _dense(tree[f"Dense_{i}"]).items():
            out[f"{prefix}{2 * i}.{name}"] = value
    return out


def _params(tree: dict) -> dict:
    """Unwrap Flax's ``{"params": ...}`` (a ``FrozenDict`` or a plain dict)."""
    tree = dict(tree)
    return dict(tree["params"]) if "params" in tree else tree


def policy_state_dict(policy_params: dict, obs_dim: int, act_dim: int) -> dict[str, torch.Tensor]:
    """The code's ``DiffusionPolicy`` params -> the platform's ``NoiseMLP`` state_dict (``time_layout="edp"``).

    The first hidden layer's input is ``[s, a, t_emb]`` in the code and ``[a, t_emb, s]`` on the platform: its
    kernel's rows are permuted, then every kernel is transposed.
    """
    net = _params(policy_params)["base_net"]
    time = net["TimeEmbedding_0"]
    out = {f"time_mlp.1.{k}": v for k, v in _dense(time["Dense_0"]).items()}
    out.update({f"time_mlp.3.{k}": v for k, v in _dense(time["Dense_1"]).items()})
    first = dict(net["Dense_0"])
    kernel = np.asarray(first["kernel"])
    t_dim = kernel.shape[0] - obs_dim - act_dim
    if t_dim < 4:
        raise ValueError(f"policy Dense_0 kernel {kernel.shape} does not fit obs_dim {obs_dim}, act_dim {act_dim}")
    rows = (list(range(obs_dim, obs_dim + act_dim)) + list(range(obs_dim + act_dim, obs_dim + act_dim + t_dim))
            + list(range(obs_dim)))                                        # platform row i <- code row rows[i]
    first["kernel"] = kernel[rows]
    hidden = sorted(k for k in net if k.startswith("Dense_"))
    for i, key in enumerate(hidden[:-1]):
        for name, value in _dense(first if i == 0 else net[key]).items():
            out[f"mid_layer.{2 * i}.{name}"] = value
    out.update({f"final_layer.{k}": v for k, v in _dense(net[hidden[-1]]).items()})
    return out


def critic_state_dict(qf1_params: dict, qf2_params: dict) -> dict[str, torch.Tensor]:
    """The code's two ``Critic`` param trees -> the platform's ``TwinQ`` state_dict."""
    return {**_mlp(_params(qf1_params), "q1_model."), **_mlp(_params(qf2_params), "q2_model.")}


def value_state_dict(vf_params: dict) -> dict[str, torch.Tensor]:
    """The code's ``Value`` params -> the platform's value ``mlp`` state_dict."""
    return _mlp(_params(vf_params))


def flax_to_platform(params: dict, obs_dim: int, act_dim: int) -> dict[str, dict[str, torch.Tensor]]:
    """``{"policy", "qf1", "qf2"[, "vf"]}`` Flax param trees (the agent's ``train_params`` or its target params)
    -> ``{"actor", "critic"[, "value"]}`` state_dicts of the platform's ``EDP``."""
    out = {"actor": policy_state_dict(params["policy"], obs_dim, act_dim),
           "critic": critic_state_dict(params["qf1"], params["qf2"])}
    if "vf" in params:
        out["value"] = value_state_dict(params["vf"])
    return out


def load_public_weights(algo, train_params: dict, tgt_params: dict, obs_dim: int, act_dim: int) -> None:
    """Load the code's online and target params into ``algo`` (strict: every key once)."""
    online = flax_to_platform(train_params, obs_dim, act_dim)
    target = flax_to_platform(tgt_params, obs_dim, act_dim)
    algo.actor.load_state_dict(online["actor"], strict=True)
    algo.ema_actor.load_state_dict(target["actor"], strict=True)
    algo.critic.load_state_dict(online["critic"], strict=True)
    algo.critic_target.load_state_dict(target["critic"], strict=True)
    if algo.cfg.backbone == "iql":
        algo.value.load_state_dict(online["value"], strict=True)


def state_dict_diff(ours: dict, theirs: dict) -> float:
    if set(ours) != set(theirs):
        raise KeyError(f"keys differ: {sorted(set(ours) ^ set(theirs))}")
    return max(float((ours[k].detach().cpu() - theirs[k]).abs().max()) for k in theirs)


# ----------------------------------------------------------------------------- the platform's draws, scripted


@contextlib.contextmanager
def scripted_draws(draws: list[tuple[str, torch.Tensor]]):
    """Inside: ``torch.randint``, ``torch.randn``, ``torch.randn_like`` and ``torch.rand`` return ``draws`` in
    order, each ``(name, tensor)``; a call of another name or shape, or a draw left over, raises."""
    queue = list(draws)
    names = ("randint", "randn", "randn_like", "rand")
    orig = {n: getattr(torch, n) for n in names}

    def shape_of(name, args, kwargs):
        if name == "randn_like":
            return tuple(args[0].shape)
        if name == "randint":
            return tuple(args[2] if len(args) > 2 else kwargs["size"])
        size = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
        return tuple(size)

    def make(name):
        def draw(*args, **kwargs):
            if not queue:
                raise AssertionError(f"scripted_draws: torch.{name} called with no draw left")
            want, value = queue.pop(0)
            shape = shape_of(name, args, kwargs)
            if want != name or tuple(value.shape) != shape:
                raise AssertionError(f"scripted_draws: torch.{name}{shape} called, scripted torch.{want}"
                                     f"{tuple(value.shape)}")
            device = kwargs.get("device") or (args[0].device if name == "randn_like" else None)
            return value.clone().to(device) if device is not None else value.clone()
        return draw

    for n in names:
        setattr(torch, n, make(n))
    try:
        yield queue
    finally:
        for n in names:
            setattr(torch, n, orig[n])
    if queue:
        raise AssertionError(f"scripted_draws: {len(queue)} draw(s) never made: {[n for n, _ in queue]}")


# ----------------------------------------------------------------------------- the public code


def jax_missing() -> str | None:
    """Why the twin cannot run here (a line), or None."""
    for mod in ("jax", "flax", "optax", "distrax", "ml_collections"):
        if importlib.util.find_spec(mod) is None:
            return (f"{mod} is not installed: install benchmarks/requirements-twins-edp.txt into the benchmark's "
                    f"own environment")
    return None


def restore_removed_jax_names() -> None:
    """Put back the two JAX names the public code calls that JAX removed in 2022, as the aliases they were:
    ``jax.tree_multimap`` = ``jax.tree_util.tree_map`` and ``Array.tile(reps)`` = ``jnp.tile(array, reps)`` (on
    concrete arrays and, through the abstract value, on traced ones).  Nothing that computes is replaced."""
    import jax
    import jax.numpy as jnp
    from jax._src import core as jax_core
    from jax._src.array import ArrayImpl

    def tile(self, reps):
        return jnp.tile(self, reps)

    if not hasattr(jax, "tree_multimap"):
        jax.tree_multimap = jax.tree_util.tree_map
    if not hasattr(ArrayImpl, "tile"):
        ArrayImpl.tile = tile
    if not hasattr(jax_core.ShapedArray, "tile"):
        jax_core.ShapedArray.tile = jax_core.aval_method(tile)


def import_public_edp(path: str) -> types.SimpleNamespace:
    """The public EDP modules the twin needs, imported from the checkout at ``path`` as they are."""
    if not os.path.isfile(os.path.join(path, "diffusion", "dql.py")):
        raise SystemExit(f"--public-edp {path}: no diffusion/dql.py there (a checkout of {PUBLIC_REPO})")
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.append(path)      # after the platform's own packages: nothing of ours is shadowed
    restore_removed_jax_names()
    from diffusion import diffusion as pub_diffusion
    from diffusion import dql as pub_dql
    from diffusion import nets as pub_nets
    from utilities import jax_utils as pub_jax_utils

    return types.SimpleNamespace(diffusion=pub_diffusion, nets=pub_nets, dql=pub_dql, jax_utils=pub_jax_utils)


def make_public_agent(pub, backbone: str, obs_dim: int, act_dim: int, max_action: float, grad_norm: float,
                      cfg, seed: int):
    """The public ``DiffusionQL`` built as its trainer's ``_setup_policy/_setup_qf/_setup_vf`` builds it, with the
    README's DPM-Solver settings; the params come from its own initialization (``init_rng(seed)``)."""
    import jax

    pub.jax_utils.init_rng(seed)
    gd = pub.diffusion.GaussianDiffusion(
        num_timesteps=cfg.n_timesteps, schedule_name="linear", model_mean_type=pub.diffusion.ModelMeanType.EPSILON,
        model_var_type=pub.diffusion.ModelVarType.FIXED_SMALL, loss_type=pub.diffusion.LossType.MSE,
        min_value=-max_action, max_value=max_action)
    arch = (cfg.hidden_dim,) * 3
    mish = lambda x: x * jax.numpy.tanh(jax.nn.softplus(x))  # noqa: E731  the trainer's activation="mish"
    policy = pub.nets.DiffusionPolicy(diffusion=gd, observation_dim=obs_dim, action_dim=act_dim, arch=arch,
                                      time_embed_size=16, use_layer_norm=False, sample_method="dpm",
                                      dpm_steps=cfg.sampler_steps, dpm_t_end=cfg.dpm_t_end)
    qf = pub.nets.Critic(obs_dim, act_dim, arch, use_layer_norm=False, act=mish, orthogonal_init=False)
    vf = pub.nets.Value(obs_dim, arch, use_layer_norm=False, act=mish, orthogonal_init=False)
    policy_dist = pub.nets.GaussianPolicy(act_dim, temperature=1.0)
    algo_cfg = pub.dql.DiffusionQL.get_default_config({
        "loss_type": PUBLIC_LOSS_TYPE[backbone], "num_timesteps": cfg.n_timesteps, "max_grad_norm": grad_norm,
        "lr": cfg.lr, "discount": cfg.gamma, "tau": cfg.tau, "alpha": cfg.alpha, "expectile": cfg.expectile,
        "awr_temperature": cfg.temperature, "dpm_steps": cfg.sampler_steps, "dpm_t_end": cfg.dpm_t_end,
        "lr_decay_steps": 2000 * 1000})
    return pub.dql.DiffusionQL(algo_cfg, policy, qf, vf, policy_dist)


def public_draws(key, batch_size: int, act_dim: int, n_timesteps: int, backbone: str) -> dict:
    """The draws the public ``_train_step_{td3,iql}`` makes from its PRNG ``key`` (its own split order)."""
    import jax

    out = {}
    if backbone == "td3":
        out["x_T"] = jax.random.normal(key, (batch_size, act_dim))    # value_loss_fn: the target policy's solver
        key, policy_key = jax.random.split(key)                       # policy_loss_fn
        out["coin"] = jax.random.uniform(key)                          # Q1 (> 0.5) or Q2 in the guide term
    else:
        _, policy_key = jax.random.split(key)                          # _train_step_iql -> policy_loss
        _, policy_key = jax.random.split(policy_key)
    out.update(diffusion_draws(policy_key, batch_size, act_dim, n_timesteps))
    return out


def diffusion_draws(key, batch_size: int, act_dim: int, n_timesteps: int) -> dict:
    """``get_diff_terms``' draws from ``key``: the timesteps, then the noise of ``training_losses``."""
    import jax

    key, ts_key = jax.random.split(key)
    ts = jax.random.randint(ts_key, (batch_size,), minval=0, maxval=n_timesteps)
    _, noise_key = jax.random.split(key)
    return {"ts": ts, "noise": jax.random.normal(noise_key, (batch_size, act_dim))}


@contextlib.contextmanager
def recorded_public_solver(pub):
    """Inside: the code's ``DiffusionPolicy.dpm_sample`` builds a ``DPM_Solver`` subclass that records the
    ``(x, t)`` of every network call (the same computation; ``nets.DPM_Solver`` is restored after)."""
    calls = []

    class Recording(pub.nets.DPM_Solver):
        def noise_prediction_fn(self, x, t):
            calls.append((np.asarray(x), np.asarray(t)))
            return super().noise_prediction_fn(x, t)

    orig, pub.nets.DPM_Solver = pub.nets.DPM_Solver, Recording
    try:
        yield calls
    finally:
        pub.nets.DPM_Solver = orig


def to_torch(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x)).to(dtype)


# ----------------------------------------------------------------------------- the checks


class Checks:
    """Rows of (backbone, check, max_abs_diff, tolerance, passed, scale, note)."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, backbone: str, check: str, ours, theirs, tolerance: float | None = None, note: str = "",
            rtol: float = F32_RTOL) -> dict:
        ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        if ours.shape != theirs.shape:
            raise ValueError(f"{check}: shapes differ, {ours.shape} against {theirs.shape}")
        diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
        scale = max(1.0, float(np.abs(theirs).max()) if theirs.size else 1.0)
        tol = rtol * scale if tolerance is None else float(tolerance)
        row = {"backbone": backbone, "check": check, "max_abs_diff": diff, "tolerance": tol,
               "passed": bool(np.isfinite(diff) and diff <= tol), "scale": scale, "note": note}
        self.rows.append(row)
        print(f"[twins_edp] {backbone:5s} {check}: {diff:.3g} (tolerance {tol:.3g}) "
              f"{'ok' if row['passed'] else 'FAILED'}", flush=True)
        return row


def sample_batch(data, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    idx = np.random.default_rng(seed).choice(len(data.observations), batch_size, replace=False)
    return {k: np.asarray(getattr(data, k))[idx].astype(np.float32)
            for k in ("observations", "actions", "rewards", "next_observations", "terminals")}


def public_batch(algo, batch: dict[str, np.ndarray]) -> dict:
    """The batch as the code's trainer hands it to ``train``: actions clipped to 0.999 of the box (its
    ``clip_action``), rewards through the same shaping as the platform's (``shape_rewards``: its ``norm_reward``
    scale for IQL), ``dones`` the terminals."""
    import jax.numpy as jnp

    rewards = algo.shape_rewards(torch.as_tensor(batch["rewards"]).reshape(-1, 1)).reshape(-1).numpy()
    return {"observations": jnp.asarray(batch["observations"]),
            "actions": jnp.asarray(np.clip(batch["actions"], algo.data_low.numpy(), algo.data_high.numpy())),
            "rewards": jnp.asarray(rewards), "next_observations": jnp.asarray(batch["next_observations"]),
            "dones": jnp.asarray(batch["terminals"])}


def torch_batch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in batch.items()}


GRAD_RTOL = 3e-5
"""A gradient (one backward pass: the forward's activations through the transposed matmuls, twice the float32
sums of a forward pass and more): this times the network's gradient norm, per entry."""
ADAM_EPS = 1e-8


def public_adam_mu(train_state) -> dict:
    """Adam's first moment ``mu = (1 - b1) g`` of a fresh optax state after one step (``g`` after the clip)."""
    found = [x for x in _walk(train_state.opt_state) if hasattr(x, "mu") and hasattr(x, "nu")]
    if len(found) != 1:
        raise AssertionError(f"expected one ScaleByAdamState in the optax state, found {len(found)}")
    return found[0].mu


def _walk(tree):
    yield tree
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "mu"):
        for x in tree:
            yield from _walk(x)


def platform_adam_mu(opt: torch.optim.Optimizer, module: torch.nn.Module, prefix: str = "") -> dict:
    """torch Adam's ``exp_avg = (1 - b1) g`` per parameter name of ``module``."""
    return {prefix + n: opt.state[p]["exp_avg"].detach().clone() for n, p in module.named_parameters()}


def adam_step_check(checks, backbone: str, name: str, new_ours: dict, new_theirs: dict, mu_ours: dict,
                    mu_theirs: dict, lr: float, beta1: float = 0.9) -> None:
    """Two rows: the clipped gradients (``mu / (1 - b1)``) to ``GRAD_RTOL`` of their norm, then the weights.

    Adam's first step moves a weight by ``lr g / (|g| + eps)``, about ``lr sign(g)``: the weights agree to
    float32 wherever ``|g|`` is well above the gradients' difference, and an entry within round-off of 0 may
    land anywhere in ``[-lr, lr]``.  So each weight's tolerance is what a gradient difference at the gradient
    row's tolerance ``d`` can do to it, ``min(2 lr, 2 lr d / (|g| + eps)) + 1e-7``; the row reports the largest
    difference and the tolerance of the entry nearest its own.
    """
    keys = sorted(new_theirs)
    g_ours = np.concatenate([mu_ours[k].numpy().ravel() for k in keys]) / (1 - beta1)
    g_theirs = np.concatenate([np.asarray(mu_theirs[k]).ravel() for k in keys]) / (1 - beta1)
    d_tol = GRAD_RTOL * float(np.linalg.norm(g_theirs))
    checks.add(backbone, f"(c) {name} gradients in the step (clipped, from Adam's first moment)", g_ours,
               g_theirs, tolerance=d_tol, note=f"{GRAD_RTOL:g} x the gradient's norm")
    w_ours = np.concatenate([new_ours[k].detach().numpy().ravel() for k in keys]).astype(np.float64)
    w_theirs = np.concatenate([new_theirs[k].numpy().ravel() for k in keys]).astype(np.float64)
    diff = np.abs(w_ours - w_theirs)
    tol = np.minimum(2 * lr, 2 * lr * d_tol / (np.abs(g_theirs) + ADAM_EPS)) + 1e-7
    worst = int(np.argmax(diff / tol))
    row = checks.add(backbone, f"(c) {name} weights after one step", float(diff.max()), 0.0,
                     tolerance=float(tol[int(np.argmax(diff))]),
                     note="per weight: min(2 lr, 2 lr d / (|g| + eps)) + 1e-7, d the gradient row's tolerance")
    row["passed"] = bool((diff <= tol).all())
    row["worst_ratio"] = float(diff[worst] / tol[worst])


def run_checks(pub, data, args) -> tuple[list[dict], dict]:
    import jax
    import jax.numpy as jnp

    import algorithms
    from algorithms.diffusion.dpm_solver import dpm_solver_eps_sample
    from algorithms.edp import EDP

    seed, batch_size = args.seed, args.batch_size
    spec = data.env_spec()
    obs_dim, act_dim = spec.obs_dim, spec.act_dim
    low, high = np.asarray(spec.act_low), np.asarray(spec.act_high)
    if not (np.allclose(low, -high) and np.allclose(high, high[0])):
        raise SystemExit(f"twins_edp: the public code clips to one scalar max_action; the box [{low}, {high}] is not "
                         f"[-m, m]^d")
    max_action = float(high[0])
    checks, info = Checks(), {}
    batch = sample_batch(data, batch_size, seed)

    for backbone in BACKBONES:
        resolved, _ = algorithms.resolve_params("edp", args.dataset, {"backbone": backbone})
        cfg = algorithms.build_config("edp", resolved)
        if cfg.beta_schedule != "linear_scaled" or cfg.sampler != "dpm_solver" or cfg.time_embedding != "edp":
            raise SystemExit("twins_edp: the twin compares EDPConfig's defaults (linear_scaled, dpm_solver, edp "
                             "embedding) with the code's DPM-Solver settings")
        info[backbone] = {"resolved": resolved, "n_timesteps": cfg.n_timesteps, "grad_norm": cfg.grad_norm,
                          "sampler_steps": cfg.sampler_steps, "lr": cfg.lr}
        agent = make_public_agent(pub, backbone, obs_dim, act_dim, max_action, cfg.grad_norm, cfg, seed)
        torch.manual_seed(seed)
        algo = EDP(cfg, spec, "cpu")
        algo.fit_dataset(data)
        params = agent.train_params
        tgt = {k: agent._tgt_params[k] for k in ("policy", "qf1", "qf2", "vf")}
        load_public_weights(algo, params, tgt, obs_dim, act_dim)
        mapped = flax_to_platform(params, obs_dim, act_dim)
        loaded = [state_dict_diff(getattr(algo, m).state_dict(), mapped[k]) for m, k in
                  (("actor", "actor"), ("critic", "critic"), ("value", "value"))[:2 + (backbone == "iql")]]
        checks.add(backbone, "weights after the mapping (every network)", max(loaded), 0.0, tolerance=0.0)
        pb, tb = public_batch(algo, batch), torch_batch(batch)
        s, K = tb["observations"], cfg.n_timesteps
        key = jax.random.PRNGKey(1000 * (seed + 1) + BACKBONES.index(backbone))

        if backbone == "td3":  # (a), (b), (d): the policy alone (the same for both backbones)
            k1, k2, k3 = jax.random.split(key, 3)
            x = jax.random.normal(k1, (batch_size, act_dim))
            t_int = jax.random.randint(k2, (batch_size,), 0, K)
            t_frac = jax.random.uniform(k3, (batch_size,), minval=0.0, maxval=K - 1.0)
            with torch.no_grad():
                for name, t in (("integer steps", t_int), ("fractional steps", t_frac)):
                    theirs = agent.policy.apply(params["policy"], pb["observations"], x, t,
                                                method=agent.policy.forward)
                    ours = algo.actor(to_torch(x), to_torch(t, torch.long if name[0] == "i" else torch.float32), s)
                    checks.add("policy", f"(a) denoiser output, {name}", ours.numpy(), theirs)

            # (b) diffusion loss and (d) action approximation, the draws of get_diff_terms
            diff_key = jax.random.fold_in(key, 1)
            diff_loss, terms, ts, pred_astart = agent.get_diff_loss(pb)(params, diff_key)
            draws = diffusion_draws(diff_key, batch_size, act_dim, K)
            if not np.array_equal(np.asarray(ts), np.asarray(draws["ts"])):
                raise AssertionError("twins_edp: the derived timesteps are not the code's")
            with torch.no_grad(), scripted_draws([("randint", to_torch(draws["ts"], torch.long)),
                                                  ("randn_like", to_torch(draws["noise"]))]):
                a0_hat, eps_pred, eps, k = algo.action_approximation(s, tb["actions"].clamp(algo.data_low,
                                                                                             algo.data_high))
            checks.add("policy", "(b) diffusion loss, one batch", float(torch.mean((eps_pred - eps) ** 2)),
                       float(diff_loss))
            checks.add("policy", "(b) denoiser output on the noised batch", eps_pred.numpy(),
                       terms["model_output"])
            # x0 = sqrt(1/abar) a_k - sqrt(1/abar - 1) eps: the eps error grows by sqrt(1/abar_k - 1) (up to 157)
            growth = algo.schedule.sqrt_recipm1_alphas_cumprod[k].numpy()[:, None]
            tol_a0 = float((F32_RTOL * (1.0 + growth)).max())
            checks.add("policy", "(d) action approximation (one-step x0)", a0_hat.numpy(), pred_astart,
                       tolerance=tol_a0, note="1e-5 x (1 + sqrt(1/abar_k - 1)) of the batch's largest k")

            # (d) DPM-Solver at 15 calls from the same initial noise; the code's calls recorded on the way
            sample_key = jax.random.fold_in(key, 2)
            with recorded_public_solver(pub) as calls:
                theirs = agent.policy.apply(params["policy"], sample_key, pb["observations"],
                                            method=agent.policy.dpm_sample)
            x_T = jax.random.normal(sample_key, (batch_size, act_dim))
            ours_calls = []

            def denoise(x, t_in):
                ours_calls.append(float(t_in[0]))
                return algo.actor(x, t_in, s)

            with torch.no_grad(), scripted_draws([("randn", to_torch(x_T))]):
                ours = algo.sample(s)
                # the platform's calls, once more through its solver with a recording denoiser
                dpm_solver_eps_sample(denoise, algo.schedule, (batch_size, act_dim), cfg.sampler_steps,
                                      order=cfg.dpm_order, t_end=cfg.dpm_t_end, x_T=to_torch(x_T))
            if len(calls) != cfg.sampler_steps or len(ours_calls) != cfg.sampler_steps:
                raise AssertionError(f"twins_edp: {len(calls)} calls in the code's solver, {len(ours_calls)} in ours")
            t_theirs = [float((np.asarray(t).ravel()[0] - 1.0 / K) * K) for _, t in calls]
            checks.add("policy", f"(d) DPM-Solver: the network's step input at each of the {len(calls)} calls",
                       ours_calls, t_theirs, rtol=F32_RTOL, note="1e-5 x K (the code's t is float32)")
            with torch.no_grad():
                theirs_in = np.stack([np.asarray(agent.policy.apply(params["policy"], pb["observations"], x,
                                                                    jnp.full((batch_size,), t_in, jnp.float32),
                                                                    method=agent.policy.forward))
                                      for (x, _), t_in in zip(calls, t_theirs)])
                ours_in = np.stack([algo.actor(to_torch(x), torch.full((batch_size,), t_in), s).numpy()
                                    for (x, _), t_in in zip(calls, t_theirs)])
            checks.add("policy", "(d) DPM-Solver: the denoiser on the code's input at each call", ours_in, theirs_in)
            checks.add("policy", f"(d) DPM-Solver, {cfg.sampler_steps} calls, same initial noise: the actions",
                       ours.numpy(), theirs, tolerance=SOLVER_TOLERANCE, note="see SOLVER_TOLERANCE")

        # (c) one optimizer step and (e) its losses: the code's jitted _train_step against EDP.update
        step_key = jax.random.fold_in(key, 3)
        draws = public_draws(step_key, batch_size, act_dim, K, backbone)
        script = [("randint", to_torch(draws["ts"], torch.long)), ("randn_like", to_torch(draws["noise"]))]
        if backbone == "td3":
            script += [("randn", to_torch(draws["x_T"])), ("rand", to_torch(draws["coin"]))]
        before = copy.deepcopy(algo)
        states, tgt_new, m = agent._train_step(agent._train_states, agent._tgt_params, step_key, pb, False)
        with scripted_draws(script):
            ours = algo.update(tb)
        ours = {k.removeprefix("train/"): float(v) for k, v in ours.items()}
        m = {k: float(v) for k, v in m.items()}
        info[backbone]["public_metrics"], info[backbone]["platform_metrics"] = m, ours

        if backbone == "td3":
            checks.add(backbone, "(e) critic loss (Q1 + Q2, TD target from the target policy's DPM-Solver)",
                       ours["critic_loss"], m["qf_loss"])
            checks.add(backbone, "(e) policy loss (diffusion + guide)", ours["actor_loss"], m["policy_loss"])
            checks.add(backbone, "(e) guide loss (-alpha Q / mean|Q|)", ours["ql_loss"], m["guide_loss"])
        else:
            checks.add(backbone, "(e) value loss (expectile 0.7)", ours["value_loss"], m["vf_loss"])
            checks.add(backbone, "(e) Q loss (Q1 + Q2 on r + gamma V')", ours["critic_loss"],
                       m["qf1_loss"] + m["qf2_loss"])
            # the code's guide is -mean(w log N(a; a0_hat, I)), the platform's drops log N's constant (no gradient)
            with torch.no_grad():
                q_t = torch.min(*before.critic_target(s, tb["actions"].clamp(algo.data_low, algo.data_high)))
                w = torch.exp(cfg.temperature * (q_t - algo.value(s))).clamp(max=cfg.max_weight)
            const = 0.5 * act_dim * math.log(2 * math.pi) * float(w.mean())
            checks.add(backbone, "(e) policy loss (diffusion + AWR guide, + the code's log-likelihood constant)",
                       ours["actor_loss"] + const, m["policy_loss"])
        checks.add(backbone, "(b) diffusion loss in the step", ours["bc_loss"], m["diff_loss"])
        checks.add(backbone, "(c) policy gradient norm before the clip", ours["actor_grad_norm"],
                   m["policy_grad_norm"], rtol=GRAD_RTOL)
        checks.add(backbone, "(c) critic gradient norm before the clip (max of Q1, Q2)", ours["critic_grad_norm"],
                   max(m["qf1_grad_norm"], m["qf2_grad_norm"]), rtol=GRAD_RTOL)
        new = {k: states[k].params for k in ("policy", "qf1", "qf2", "vf")}
        mapped, mapped_tgt = flax_to_platform(new, obs_dim, act_dim), flax_to_platform(tgt_new, obs_dim, act_dim)
        mu = flax_to_platform({k: public_adam_mu(states[k]) for k in ("policy", "qf1", "qf2", "vf")}, obs_dim,
                              act_dim)
        adam_step_check(checks, backbone, "policy", algo.actor.state_dict(), mapped["actor"],
                        platform_adam_mu(algo.actor_opt, algo.actor), mu["actor"], cfg.lr)
        mu_critic = {**platform_adam_mu(algo.q1_opt, algo.critic.q1_model, "q1_model."),
                     **platform_adam_mu(algo.q2_opt, algo.critic.q2_model, "q2_model.")}
        adam_step_check(checks, backbone, "critic", algo.critic.state_dict(), mapped["critic"], mu_critic,
                        mu["critic"], cfg.lr)
        if backbone == "iql":
            adam_step_check(checks, backbone, "value", algo.value.state_dict(), mapped["value"],
                            platform_adam_mu(algo.value_opt, algo.value), mu["value"], cfg.lr)
        # Polyak 0.005 of the new critic: tau x the critic rows' weight tolerance (2 lr at most) + float32
        checks.add(backbone, "(c) target critic weights after one step (Polyak 0.005)",
                   state_dict_diff(algo.critic_target.state_dict(), mapped_tgt["critic"]), 0.0,
                   tolerance=cfg.tau * 2 * cfg.lr + 1e-7, note="tau x 2 lr + 1e-7")
        checks.add(backbone, "(c) target policy after one step (unchanged before step 1000)",
                   state_dict_diff(algo.ema_actor.state_dict(), mapped_tgt["actor"]), 0.0, tolerance=0.0)
    return checks.rows, info


SOLVER_TOLERANCE = 1e-3
"""The 15-call solver's tolerance on actions in [-1, 1] (0.05% of the range).  The rows before it check the solver's
parts at float32 tolerance: the same step inputs at every call and the same denoiser on the code's input at every
call.  What is left is the chain's float32 arithmetic: the code computes its coefficients (log alpha by
interpolation, sigma = sqrt(1 - alpha^2), lambda, their inverse) in float32, the platform in float64, and the
eps clip at high noise pins eps to x +- 1/157, so the first steps' coefficients (e^h up to ~20) multiply
round-off of the order of 1e-6 into the state: measured 1e-5 after two calls, 7e-5 - 2e-4 at the end; the code's
clip index, int() of its float32 step input, also falls one step lower at some calls (665.99994 -> 665)."""

TOLERANCE_NOTES = {
    "float32": f"one network pass, a loss: {F32_RTOL:g} x max(1, the largest magnitude of the code's value) "
               "(XLA and torch sum float32 matmuls in different orders)",
    "action approximation": "x0 = sqrt(1/abar_k) a_k - sqrt(1/abar_k - 1) eps_theta: the denoiser's float32 error "
                            "grows by sqrt(1/abar_k - 1), up to 157 at k = 999 (the tolerance uses the batch's "
                            "largest k)",
    "one step": "Adam's first step moves a weight by lr g / (|g| + eps), about lr sign(g): per weight, what a "
                "gradient difference at the gradient tolerance d can do, min(2 lr, 2 lr d / (|g| + eps)) + 1e-7 "
                "(adam_step_check); the tolerance shown is the largest-difference weight's",
    "gradients": f"{GRAD_RTOL:g} x the gradient's norm (a backward pass; GRAD_RTOL)",
    "solver": "1e-3 on the actions: the solver's step inputs and each call's denoiser pass at float32 tolerance "
              "(rows before it); the rest is the chain's float32 arithmetic in the code (coefficients in float32, "
              "the platform's in float64), amplified by e^h ~ 20 in the first steps (SOLVER_TOLERANCE)",
}


# ----------------------------------------------------------------------------- output


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("jax", "jaxlib", "flax", "optax", "distrax", "chex", "tensorflow-probability", "ml_collections",
                 "numpy", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    n_fail = sum(not r["passed"] for r in rows)
    L = [f"# EDP equivalence twin: the platform beside the public JAX code on {meta['dataset']}", "",
         f"**{len(rows) - n_fail} of {len(rows)} checks pass**" + (f", {n_fail} fail." if n_fail else "."), "",
         f"* public code: {meta['public_repo']} at commit `{meta['public_commit']}` (JAX/Flax), imported from a "
         f"checkout as is; two names JAX removed in 2022 restored as aliases (`jax.tree_multimap`, `Array.tile`)",
         f"* platform: commit `{meta['platform_commit']}`" + (" (with uncommitted changes)" if meta["dirty"] else ""),
         f"* settings: `algorithms.resolve_params('edp', '{meta['dataset']}', {{'backbone': ...}})` = "
         f"`{json.dumps(meta['resolved'])}` over EDPConfig's defaults (K {meta['n_timesteps']}, linear_scaled, "
         f"DPM-Solver {meta['sampler_steps']} calls); the code: its trainer's setup with `--sample_method=dpm "
         f"--algo_cfg.num_timesteps={meta['n_timesteps']}`, `gn` {meta['grad_norm']}, lr {meta['lr']}, lr decay off",
         f"* one batch of {meta['batch_size']} transitions (seed {meta['seed']}); the code's own initialization "
         f"(init_rng({meta['seed']})) loaded into the platform's networks; random draws aligned",
         f"* versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
         f"* {meta['threads']} torch thread(s), {meta['cpus']} CPUs, load average (1 min) {meta['load_1m']:.1f}; "
         f"wall time {meta['wall_s']:.0f} s", "",
         "| backbone | check | max abs difference | tolerance | passed |", "|---|---|---:|---:|---|"]
    for r in rows:
        L.append(f"| {r['backbone']} | {r['check']} | {r['max_abs_diff']:.3g} | {r['tolerance']:.3g} | "
                 f"{'yes' if r['passed'] else '**no**'} |")
    L += ["", "Tolerances:", ""] + [f"* {k}: {v}" for k, v in meta["tolerance_notes"].items()]
    L += ["", "Differences from the code that are not in these checks (named in `algorithms/edp.py`'s docstring): "
          "PyTorch's default initialization (the code: Flax's lecun-normal), the platform's float64 schedule "
          "tables (the code: float32), the IQL guide loss without log N's constant (same gradient), batches drawn "
          "by the platform's sampler, and the dataset pipeline (`norm_reward` from episode ends).", "",
          f"Rerun: `{meta['command']}`", ""]
    return "\n".join(L)


def write(rows: list[dict], meta: dict, out: str, stem: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    cols = ("backbone", "check", "max_abs_diff", "tolerance", "passed", "scale", "note")
    table = pa.Table.from_pylist([{k: r[k] for k in cols} for r in rows])
    table = table.replace_schema_metadata({"twins_edp": json.dumps(meta, default=str)})
    paths = [os.path.join(out, f"{stem}.{ext}") for ext in ("parquet", "md")]
    pq.write_table(table, paths[0])
    with open(paths[1], "w") as f:
        f.write(markdown(rows, meta))
    return paths


# ----------------------------------------------------------------------------- the twin


def edp_twin(args) -> dict:
    """The EDP equivalence twin (issue 38, part 2): ``args.public_edp`` (a checkout), ``args.out``,
    ``args.threads``; optional ``dataset``, ``batch_size``, ``seed``.  Returns ``{"rows", "meta", "info"}``, or
    ``{}`` after one line when JAX is not installed here."""
    why = jax_missing()
    if why:
        print(f"[twins_edp] skipped: {why}", flush=True)
        return {}
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    from benchmarks.suite import load_1m
    from platform.datasets import load_dataset

    args = argparse.Namespace(**{"dataset": DEFAULT_DATASET, "batch_size": 256, "seed": 0, **vars(args)})
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    pub = import_public_edp(args.public_edp)
    data = load_dataset(args.dataset)
    rows, info = run_checks(pub, data, args)
    dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "algorithms",
                                 "benchmarks/twins_edp.py"], capture_output=True, text=True).stdout.strip())
    meta = {"dataset": args.dataset, "env_id": data.env_id, "public_repo": PUBLIC_REPO,
            "public_commit": git_commit(args.public_edp), "platform_commit": git_commit(ROOT), "dirty": dirty,
            "resolved": info["td3"]["resolved"], "n_timesteps": info["td3"]["n_timesteps"],
            "grad_norm": info["td3"]["grad_norm"], "sampler_steps": info["td3"]["sampler_steps"],
            "lr": info["td3"]["lr"], "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
            "cpus": os.cpu_count() or 0, "load_1m": load_1m(), "versions": versions(),
            "tolerance_notes": TOLERANCE_NOTES, "wall_s": time.perf_counter() - t0,
            "metrics": {b: {"public": info[b]["public_metrics"], "platform": info[b]["platform_metrics"]}
                        for b in BACKBONES},
            "command": f"python -m benchmarks.twins_edp --public-edp PATH --dataset {args.dataset} --batch-size "
                       f"{args.batch_size} --seed {args.seed} --threads {args.threads}"}
    stem = "twins_edp" + ("" if args.dataset == DEFAULT_DATASET else "_" + args.dataset.split(":")[-1]
                          .replace("/", "_"))
    for p in write(rows, meta, args.out, stem):
        print(f"[twins_edp] wrote {p}", flush=True)
    failed = [r for r in rows if not r["passed"]]
    print(f"[twins_edp] {len(rows) - len(failed)} of {len(rows)} checks pass"
          + "".join(f"\n[twins_edp] FAILED {r['backbone']} {r['check']}: {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}"
                    for r in failed), flush=True)
    return {"rows": rows, "meta": meta, "info": info}


# ----------------------------------------------------------------------------- the learning twin (TD3 backbone)


class PublicEDPPolicy:
    """The code's agent behind the platform's policy contract, ``act(obs (B, 1, obs_dim)) -> (B, 1, act_dim)``.

    Its evaluation's ``dpmensemble_act`` (``diffusion/trainer.py``'s ``SamplerPolicy``, not importable: that
    module imports d4rl): 50 candidates per state from the *online* policy's DPM-Solver, one drawn by
    ``jax.random.categorical`` over min(Q1, Q2) of the online critics, the same key for both draws; the code
    runs one state at a time, this takes one categorical per state of the batch.  The key comes from torch's
    generator, which ``run_episodes`` seeds per batch of episodes.
    """

    obs_horizon = 1

    def __init__(self, agent, n_samples: int = 50):
        import jax
        import jax.numpy as jnp

        self.agent = agent
        policy, qf = agent.policy, agent.qf

        def act(params, rng, obs):
            actions = policy.apply(params["policy"], rng, obs, False, repeat=n_samples, method=policy.dpm_sample)
            q = jnp.minimum(qf.apply(params["qf1"], obs, actions), qf.apply(params["qf2"], obs, actions))
            idx = jax.random.categorical(rng, q)                                   # (B,)
            return jnp.take_along_axis(actions, idx[:, None, None], axis=1)[:, 0]

        self._act, self._key = jax.jit(act), jax.random.PRNGKey

    def reset(self, n_envs: int) -> None:
        pass

    def act(self, obs) -> torch.Tensor:
        s = np.asarray(torch.as_tensor(obs)[:, -1], dtype=np.float32)
        key = self._key(int(torch.randint(0, 2 ** 31 - 1, ())))
        return torch.as_tensor(np.asarray(self._act(self.agent.train_params, key, s))).unsqueeze(1)


def learning_seed(pub, seed: int, cfg, spec, data, args) -> list[dict]:
    """One seed of both sides, trained to each evaluation step in turn; one row per side and step."""
    import jax.numpy as jnp

    from benchmarks.twins import evaluate
    from platform.training import SeedRun

    run = SeedRun(seed, types.SimpleNamespace(algorithm="edp"), cfg, spec, data, torch.device("cpu"))
    evaluator = EDP_build(cfg, spec)
    agent = make_public_agent(pub, "td3", spec.obs_dim, spec.act_dim, float(spec.act_high[0]), cfg.grad_norm, cfg,
                              seed)
    policy = PublicEDPPolicy(agent)
    # the code's batches: RandSampler (np.random.randint over the transitions), actions clipped at 0.999
    full = {k: np.asarray(getattr(data, k)) for k in ("observations", "actions", "rewards", "next_observations",
                                                      "terminals")}
    full["actions"] = np.clip(full["actions"], -0.999, 0.999)
    rand = np.random.RandomState(seed)
    rows, done = [], 0
    for target in sorted(set(args.learning_eval_steps)):
        n = target - done
        tick, cpu, seg = time.perf_counter(), time.process_time(), []
        for _ in range(n):
            idx = rand.randint(len(full["observations"]), size=args.batch_size)
            m = agent.train({"observations": jnp.asarray(full["observations"][idx]),
                             "actions": jnp.asarray(full["actions"][idx]), "rewards": jnp.asarray(full["rewards"][idx]),
                             "next_observations": jnp.asarray(full["next_observations"][idx]),
                             "dones": jnp.asarray(full["terminals"][idx].astype(np.float32))})
            seg.append((m["diff_loss"], m["qf_loss"]))          # device values: no sync per step
        seg = np.asarray(seg, dtype=np.float64)                  # means over the segment, as SeedRun's metrics
        pub_losses = {"bc_loss": float(seg[:, 0].mean()), "critic_loss": float(seg[:, 1].mean())}
        pub_t = (time.perf_counter() - tick, time.process_time() - cpu)
        tick, cpu = time.perf_counter(), time.process_time()
        for st in range(done + 1, target + 1):
            run.step(args.batch_size, st)
        ours = {k.removeprefix("train/"): v for k, v in run.train_metrics().items()}
        our_t = (time.perf_counter() - tick, time.process_time() - cpu)
        done = target
        evaluator.load_state_dict(run.algo.policy_state_dict())
        for side, pol, losses, (train_s, train_cpu) in (("public", policy, pub_losses, pub_t),
                                                        ("platform", evaluator, ours, our_t)):
            metrics, eval_s, eval_cpu = evaluate(pol, data.env_id, data, args.eval_episodes, args.eval_seed)
            rows.append({"side": side, "seed": seed, "step": target, "score": metrics["eval/normalized_score"],
                         "return_mean": metrics["eval/return_mean"], "length_mean": metrics["eval/length_mean"],
                         "bc_loss": float(losses.get("bc_loss", float("nan"))),
                         "critic_loss": float(losses.get("critic_loss", float("nan"))), "segment_steps": n,
                         "train_s": train_s, "train_cpu_s": train_cpu, "eval_s": eval_s, "eval_cpu_s": eval_cpu})
            print(f"[twins_edp] learning seed {seed} step {target} {side:8s}: score {rows[-1]['score']:6.1f}  "
                  f"bc {rows[-1]['bc_loss']:.4f}  train {n / train_s:.1f} steps/s  eval {eval_s:.0f} s", flush=True)
    return rows


def EDP_build(cfg, spec):
    import algorithms

    return algorithms.build("edp", cfg, spec, "cpu")


def edp_learning_twin(args) -> dict:
    """EDP (TD3 backbone) trained by the code's own ``DiffusionQL.train`` and by the platform's ``SeedRun`` on the
    same data and settings, both evaluated by the platform's ``run_episodes``; ``twins_edp_learning.{md,parquet}``."""
    why = jax_missing()
    if why:
        print(f"[twins_edp] learning twin skipped: {why}", flush=True)
        return {}
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import algorithms
    from benchmarks.suite import load_1m
    from benchmarks.twins import bootstrap_diff_ci, contains_zero
    from platform.datasets import load_dataset

    t0, load_start = time.perf_counter(), load_1m()
    torch.set_num_threads(args.threads)
    pub = import_public_edp(args.public_edp)
    data = load_dataset(args.dataset)
    spec = data.env_spec()
    resolved, _ = algorithms.resolve_params("edp", args.dataset, {"backbone": "td3"})
    cfg = algorithms.build_config("edp", resolved)
    rows = []
    for seed in args.learning_seeds:
        rows += learning_seed(pub, seed, cfg, spec, data, args)
    summary = []
    for step in sorted(set(args.learning_eval_steps)):
        pub_s = [r["score"] for r in rows if r["step"] == step and r["side"] == "public"]
        our_s = [r["score"] for r in rows if r["step"] == step and r["side"] == "platform"]
        ci = bootstrap_diff_ci(pub_s, our_s)
        bc = {side: float(np.mean([r["bc_loss"] for r in rows if r["step"] == step and r["side"] == side]))
              for side in ("public", "platform")}
        summary.append({"step": step, "public": pub_s, "platform": our_s, "public_mean": float(np.mean(pub_s)),
                        "platform_mean": float(np.mean(our_s)), "ci": ci, "contains_zero": contains_zero(ci),
                        "bc": bc})
    rate = {side: sum(r["segment_steps"] for r in rows if r["side"] == side)
            / sum(r["train_s"] for r in rows if r["side"] == side) for side in ("public", "platform")}
    meta = {"dataset": args.dataset, "env_id": data.env_id, "public_commit": git_commit(args.public_edp),
            "platform_commit": git_commit(ROOT), "resolved": resolved, "seeds": list(args.learning_seeds),
            "eval_steps": sorted(set(args.learning_eval_steps)), "eval_episodes": args.eval_episodes,
            "eval_seed": args.eval_seed, "batch_size": args.batch_size, "threads": args.threads,
            "versions": versions(), "load_1m_start": load_start, "load_1m_end": load_1m(),
            "wall_s": time.perf_counter() - t0, "train_steps_per_s": rate,
            "command": f"python -m benchmarks.twins_edp --public-edp PATH --learning --learning-seeds "
                       f"{' '.join(map(str, args.learning_seeds))} --learning-eval-steps "
                       f"{' '.join(map(str, sorted(set(args.learning_eval_steps))))} --eval-episodes "
                       f"{args.eval_episodes}"}
    L = [f"# EDP learning twin (TD3 backbone): the platform beside the public JAX code on {args.dataset}", "",
         f"* public code: {PUBLIC_REPO} at `{meta['public_commit']}`, trained by its own `DiffusionQL.train` on "
         f"batches drawn as its `RandSampler` draws them (actions clipped at 0.999), acting as its "
         f"`dpmensemble_act` (50 DPM-Solver candidates, categorical over min Q), batched over the envs",
         f"* platform: commit `{meta['platform_commit']}`, `SeedRun` (its sampler and training step); settings "
         f"`{json.dumps(resolved)}` over EDPConfig's defaults for both (K 1000, DPM-Solver 15 calls, gn "
         f"{cfg.grad_norm}); each side its own initialization",
         f"* evaluation: `platform.evaluation.run_episodes` + `summarize`, {args.eval_episodes} episodes on "
         f"{data.env_id}, env seeds {args.eval_seed}..{args.eval_seed + args.eval_episodes - 1}",
         f"* {args.threads} torch thread(s), XLA single-threaded, {os.cpu_count()} CPUs, load average (1 min) "
         f"{load_start:.1f} at the start, {meta['load_1m_end']:.1f} at the end; wall time "
         f"{meta['wall_s'] / 60:.0f} min; training steps/s public {rate['public']:.1f}, platform "
         f"{rate['platform']:.1f} (same process, sides in turn)", "",
         "| step | public | platform | difference (95% bootstrap CI) | contains 0 | diffusion loss public / platform "
         "| per seed public / platform |", "|---:|---:|---:|---|---|---|---|"]
    for sm in summary:
        seeds = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(sm["public"], sm["platform"]))
        L.append(f"| {sm['step']} | {sm['public_mean']:.1f} | {sm['platform_mean']:.1f} | "
                 f"{sm['platform_mean'] - sm['public_mean']:+.1f} [{sm['ci'][0]:+.1f}, {sm['ci'][1]:+.1f}] | "
                 f"{'yes' if sm['contains_zero'] else '**no**'} | {sm['bc']['public']:.4f} / "
                 f"{sm['bc']['platform']:.4f} | {seeds} |")
    L += ["", f"Rerun: `{meta['command']}`", ""]
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(args.out, exist_ok=True)
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"twins_edp_learning": json.dumps(meta)})
    pq.write_table(table, os.path.join(args.out, "twins_edp_learning.parquet"))
    with open(os.path.join(args.out, "twins_edp_learning.md"), "w") as f:
        f.write("\n".join(L))
    print(f"[twins_edp] wrote {os.path.join(args.out, 'twins_edp_learning.md')}", flush=True)
    return {"rows": rows, "summary": summary, "meta": meta}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--public-edp", required=True, help=f"a checkout of {PUBLIC_REPO}")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning", action="store_true", help="also the learning twin (EDP TD3, both sides trained)")
    p.add_argument("--learning-only", action="store_true", help="the learning twin alone")
    p.add_argument("--learning-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--learning-eval-steps", type=int, nargs="+", default=[2500, 5000])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=100_000)
    args = p.parse_args(argv)
    result = {} if args.learning_only else edp_twin(args)
    if args.learning or args.learning_only:
        edp_learning_twin(args)
    return 0 if not result or all(r["passed"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
