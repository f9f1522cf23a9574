"""EDP: Efficient Diffusion Policies for offline RL (Kang et al., NeurIPS 2023).

Diffusion-QL backpropagates the Q term through all K sampling steps, so its cost grows with K.
EDP instead noises the *dataset* action to one random step k and predicts it back in one shot:

    a_k    = sqrt(abar_k) a + sqrt(1 - abar_k) eps                          (forward process)
    a0_hat = clip(sqrt(1/abar_k) a_k - sqrt(1/abar_k - 1) eps_theta(a_k, k, s))   ("action approximation")

and uses ``a0_hat`` in the policy-improvement term.  No step of a sampling chain is ever
differentiated, so K can be 1000; actions are sampled with DPM-Solver (15 model calls).

Faithful by default to the authors' code (sail-sg/edp: ``diffusion/{diffusion,dql,trainer,nets,
dpm_solver}.py``); every deviation is a named option, off by default:

* Schedule ``linear_scaled``: DDPM's linear betas rescaled by 1000/K (the code's), so abar_K is near 0 at
  every K; at K <= 20 the rescaled betas reach 1 (the code then fails) and capping them leaves a
  degenerate chain, so there it is Diffusion-QL's VP schedule (``make_betas``).  K = 1000 with DPM-Solver is the paper's efficient setting
  (the code's default is K = 100 with the full DDPM chain: ``sampler: ddpm, n_timesteps: 100``).
* Sampler ``dpm_solver``: noise-prediction DPM-Solver, singlestep order 3, time-uniform, eps clipped
  to keep x0 in the action box, t_end 1e-3, 15 calls, for acting *and* the critic's target actions
  (``dpm_solver_pp``: our DPM-Solver++(2M) with log-SNR steps, a named alternative).
* Acting: 50 candidates from the *online* policy, ranked by min(Q1, Q2) of the *online* critics,
  one drawn with probability softmax(Q) (``act_with_ema`` / ``act_with_target_critic`` deviate).
* Target ("EMA") policy: starts as the initial weights and stays there until step 1000 (no copy),
  then ``0.995 target + 0.005 policy`` every 5 steps; it only makes the critic's target actions.
* Every network has its own Adam (lr 3e-4) and its own gradient clip at ``grad_norm`` (the code's
  per-task ``gn``: ``GRAD_NORMS``; None = look it up from the dataset's name, 1.0 if unknown).
* Dataset actions clipped to 0.999 of the bounds; per-domain rewards (``reward_shaping``: AntMaze
  ``r - 1`` for IQL, ``(r - 0.5) * 4`` otherwise; Kitchen / Adroit min-max scaled to [-1, 1]);
  ``norm_reward`` (IQL backbone): r * 1000 / (max - min episode return).

Backbones (``backbone``; L_diff = E ||eps - eps_theta(a_k, k, s)||^2, uniform k, unweighted):

* ``td3``: ``L = L_diff - alpha / mean|Q_i(s, a0_hat)| * mean Q_i(s, a0_hat)``, i = 1 or 2 at random each
  step, the online critic *before* this step's update (alpha = 2.0).  Critic: twin-Q TD target
  ``r + gamma (1 - d) min(Q1', Q2')(s', a')``, ``a'`` from the target policy.
* ``iql``: per step V, then the policy, then Q (the code's order).  V: expectile 0.7 of
  min(Q1', Q2')(s, a) of the target critics; policy: ``L_diff + mean_b w_b 0.5 ||a_b - a0_hat_b||^2`` with
  ``w = min(exp(3 (min Q'(s, a) - V(s))), 100)`` (the advantage-weighted log-likelihood of a unit-variance
  Gaussian at ``a0_hat``); Q: ``r + gamma (1 - d) V(s')``.
* ``crr``: ``L_diff - mean_b lambda_b log N(a_b; a0_hat_b, I)``, ``lambda = min(exp(A / beta), 20)`` (or
  1[A > 0] for ``crr_fn: binary``), ``A = min Q(s, a) - mean_j min Q(s, a_j)``, ``a_j ~ N(a0_hat, I)``,
  10 samples; critic as ``td3``.

Checked against the code (``benchmarks/twins_edp.py``, results in ``benchmarks/results/twins_edp.md``): the same
weights loaded into both and the random draws aligned, the denoiser, the diffusion loss, the action approximation,
DPM-Solver at 15 calls, the TD3 and IQL critic, value and policy losses and one optimizer step agree to float32
round-off (the CRR backbone is not in the twin).  It found two deviations, both fixed: the step's sinusoid (now
the code's, ``time_embedding``; the platform had Diffusion-QL's [sin, cos] with frequencies 10000^(-i/7)) and
DPM-Solver's intermediate points (now uniform in time within each step, as the code's ``singlestep_loop_fn``;
they were at r = 1/3, 2/3 of the step's log-SNR).  Remaining differences, none of them a knob, none visible
beyond float32 round-off:

* PyTorch's default initialization (the code: Flax's lecun-normal).
* The noise network's input order ``[a, t_emb, s]`` (the code: ``[s, a, t_emb]``): a permutation of its first
  layer's input rows (the twin's weight mapping permutes them).
* Schedule tables and the solver's coefficients in float64, stored as float32 (the code: float32 throughout;
  abar differs by 5e-7 relative, the 15-call solver's actions by ~1e-4).
* The IQL guide loss drops ``log N``'s constant ``(d/2) log(2 pi) mean(w)`` (the code's ``awr_loss`` keeps it):
  the same gradient; the logged ``ql_loss`` / ``actor_loss`` are lower by it.
* torch ``clip_grad_norm_`` + ``Adam`` (the code: optax ``clip_by_global_norm`` + ``adamw`` with weight decay 0;
  torch adds 1e-6 to the norm it divides by).
* Batches drawn by the platform's sampler; D4RL transitions (the code's ``norm_reward`` splits trajectories where
  observations jump, the platform's ``reward_scale_from_returns`` at the dataset's episode ends).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec, paper_settings
from algorithms.diffusion.dpm_solver import dpm_solver_eps_sample, dpm_solver_sample, sampler_problem
from algorithms.diffusion.nets import NoiseMLP, SinusoidalPosEmb, mlp
from algorithms.diffusion.samplers import ddpm_sample
from algorithms.diffusion.schedules import BETA_SCHEDULES, DiffusionSchedule
from algorithms.common import (Algorithm, TwinQ, advantage_weights, coerce_field_types, expectile_loss,
                               reward_scale_from_returns, soft_update)

BACKBONES = ("td3", "iql", "crr")
SAMPLERS = ("dpm_solver", "dpm_solver_pp", "ddpm")
REWARD_SHAPINGS = ("auto", "none", "antmaze", "minmax")
ACTION_CLIP = 0.999  # dataset actions are clipped to this fraction of the bounds (the code's clip_action)

DEFAULT_GRAD_NORM = 1.0  # tasks the code's table (algorithms/paper_settings.py) does not name (e.g. Pendulum)


@dataclass
class EDPConfig:
    backbone: str = "td3"
    """"td3" (Q guide term), "iql" (advantage-weighted likelihood of a0_hat) or "crr" (paper: all three)."""
    n_timesteps: int = 1000
    """K in training; EDP's point is that K = 1000 is affordable (the code's DDPM default: 100)."""
    beta_schedule: str = "linear_scaled"
    """"linear_scaled" (the code's: linear rescaled by 1000/K, capped at 0.999); also "linear", "vp", "cosine"."""
    sampler: str = "dpm_solver"
    """"dpm_solver" (the code's noise-prediction DPM-Solver), "dpm_solver_pp" (ours) or "ddpm" (the K-step chain)."""
    sampler_steps: int = 15
    """Model calls of DPM-Solver (code: 15)."""
    dpm_order: int = 3
    """Order of the singlestep DPM-Solver (code: 3)."""
    dpm_t_end: float = 1e-3
    """Last time of DPM-Solver on [0, 1] (code: 1e-3)."""
    alpha: float = 2.0
    """TD3 backbone: lambda = alpha / mean|Q| (code and paper: 2.0)."""
    expectile: float = 0.7
    """IQL backbone: expectile of V (code: 0.7)."""
    temperature: float = 3.0
    """IQL backbone: w = exp(temperature * A) (code: 3.0)."""
    max_weight: float = 100.0
    """IQL backbone: clip of w (code: 100)."""
    norm_reward: bool | None = None
    """r * 1000 / (max - min episode return); None: on for the IQL backbone outside AntMaze (the code's README
    runs IQL with --norm_reward; its flag's default is off), off otherwise."""
    crr_samples: int = 10
    """CRR backbone: actions a_j ~ N(a0_hat, I) in the value estimate (code: 10)."""
    crr_beta: float = 1.0
    """CRR backbone: lambda = exp(A / beta) (code: 1.0)."""
    crr_max_weight: float = 20.0
    """CRR backbone: clip of lambda (code: crr_ratio_upper_bound 20)."""
    crr_fn: str = "exp"
    """CRR backbone: "exp" or "binary" (1[A > 0]) weights (code: exp)."""
    crr_avg: str = "mean"
    """CRR backbone: value estimate = "mean" or "max" over the sampled actions (code: mean)."""
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target critics and of the target policy (code: 0.005 for both)."""
    lr: float = 3e-4
    """Adam learning rate of every network (code: 3e-4)."""
    hidden_dim: int = 256
    time_embedding: str = "edp"
    """Sinusoid of the noise network's step input (t_dim 16): "edp" (the code's ``sinusoidal_embedding``: [cos,
    sin], frequencies 10000^(-i/8)) or "dql" (Diffusion-QL's: [sin, cos], 10000^(-i/7); the platform's EDP until
    the equivalence twin, ``benchmarks/twins_edp.py``, found the difference)."""
    ema_decay: float = 0.995
    """Target policy: ``ema_decay * target + (1 - ema_decay) * policy`` (code: 1 - tau = 0.995)."""
    step_start_ema: int = 1000
    """The target policy keeps its initial weights until this step (code: 1000)."""
    update_ema_every: int = 5
    ema_copy_before_start: bool = False
    """Deviation: copy the policy into the target policy at EMA ticks before ``step_start_ema``."""
    grad_norm: float | None = None
    """Per-network max grad norm (0 disables); None: the code's per-task value (``GRAD_NORMS``) from the dataset's
    name, ``DEFAULT_GRAD_NORM`` for tasks it does not list."""
    clip_actions: bool = True
    """Clip dataset actions to 0.999 of the bounds (the code's clip_action)."""
    reward_shaping: str = "auto"
    """"auto" (by the dataset's domain, as the code: antmaze / minmax for Kitchen and Adroit / none),
    "none", "antmaze" (IQL: r - 1, else (r - 0.5) * 4) or "minmax" (to [-1, 1] with the dataset's min and max)."""
    n_action_samples: int = 50
    """Candidates per state when acting, one drawn by softmax(min Q) (code: 50)."""
    act_with_ema: bool = False
    """Deviation: sample the candidates from the target policy (the code: the online policy)."""
    act_with_target_critic: bool = False
    """Deviation: rank the candidates with the target critics (the code: the online critics)."""
    guide_after_critic_update: bool = False
    """Deviation (TD3 backbone): the guide term from Q1 of the critic *after* this step's update (Diffusion-QL's
    order); the code uses Q1 or Q2 at random from the critic before it."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"EDPConfig: {msg}")

        coerce_field_types(self)
        need(self.backbone in BACKBONES, f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        need(self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        need(self.beta_schedule in BETA_SCHEDULES,
             f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        need(self.n_timesteps >= 1 and self.sampler_steps >= 1 and self.n_action_samples >= 1,
             "n_timesteps, sampler_steps and n_action_samples must be >= 1")
        need(self.sampler == "ddpm" or self.n_timesteps >= 2, "DPM-Solver needs n_timesteps >= 2 (or sampler: ddpm)")
        need(self.dpm_order in (1, 2, 3), f"dpm_order must be 1, 2 or 3, got {self.dpm_order}")
        need(self.time_embedding in SinusoidalPosEmb.LAYOUTS,
             f"time_embedding must be one of {', '.join(SinusoidalPosEmb.LAYOUTS)}, got {self.time_embedding!r}")
        if self.sampler != "ddpm":  # settings that cannot sample the model's distribution (measured: dpm_solver.py)
            problem = sampler_problem(self.sampler, self.n_timesteps, self.sampler_steps, self.dpm_order)
            need(problem is None, f"sampler {self.sampler!r} with sampler_steps={self.sampler_steps}, "
                                  f"n_timesteps={self.n_timesteps}: {problem}")
        need(0 < self.dpm_t_end < 1, f"dpm_t_end must be in (0, 1), got {self.dpm_t_end}")
        need(0 < self.expectile < 1, f"expectile must be in (0, 1), got {self.expectile}")
        need(self.lr > 0 and self.hidden_dim >= 1 and 0 <= self.gamma <= 1 and 0 < self.tau <= 1,
             "need lr > 0, hidden_dim >= 1, gamma in [0, 1], tau in (0, 1]")
        need(self.alpha >= 0 and self.temperature >= 0 and self.max_weight > 0,
             "alpha and temperature must be >= 0 and max_weight > 0")
        need(self.grad_norm is None or self.grad_norm >= 0, f"grad_norm must be >= 0 or null, got {self.grad_norm}")
        need(self.crr_samples >= 1 and self.crr_beta > 0 and self.crr_max_weight > 0,
             "crr_samples >= 1, crr_beta > 0 and crr_max_weight > 0")
        need(self.crr_fn in ("exp", "binary"), f"crr_fn must be 'exp' or 'binary', got {self.crr_fn!r}")
        need(self.crr_avg in ("mean", "max"), f"crr_avg must be 'mean' or 'max', got {self.crr_avg!r}")
        need(self.reward_shaping in REWARD_SHAPINGS,
             f"reward_shaping must be one of {', '.join(REWARD_SHAPINGS)}, got {self.reward_shaping!r}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.update_ema_every >= 1 and self.step_start_ema >= 0, "update_ema_every >= 1, step_start_ema >= 0")


class EDP(Algorithm):
    """EDP agent: ``fit_dataset(data)``, ``update(batch) -> metrics``, ``act(obs) -> actions``, plain-tensor state."""

    data_kind = "transitions"
    acts_in_box = False  # the code's DPM-Solver leaves its last step unclipped (reports/edp_speedup, K = 100: up to
    # 16% of actions beyond the box, by at most 0.03 half-widths; 4% / 1.02 before e732f4d's solver fix)
    # train.compile: each head of a twin critic on its own, since the Q1 and Q2 losses backward separately
    # (one compiled graph for both heads frees its saved tensors at the first backward)
    compile_modules = ("actor", "ema_actor", "critic.q1_model", "critic.q2_model", "critic_target.q1_model",
                       "critic_target.q2_model")
    tiny_config = {"hidden_dim": 32, "n_timesteps": 100, "sampler_steps": 10, "n_action_samples": 4}
    compile_variants = ({}, {"backbone": "iql"}, {"backbone": "crr"})

    @classmethod
    def paper_settings(cls, dataset: str) -> dict:
        """The public code's per-task values (``algorithms.paper_settings.edp``)."""
        return paper_settings.edp(dataset)

    def __init__(self, config: EDPConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        self.cfg, self.spec, self.device = config, spec, torch.device(device)
        c, dev = config, self.device
        self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=dev)
        self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=dev)
        mid, half = (self.act_high + self.act_low) / 2, (self.act_high - self.act_low) / 2
        self.data_low, self.data_high = mid - ACTION_CLIP * half, mid + ACTION_CLIP * half
        self.actor = NoiseMLP(spec.obs_dim, spec.act_dim, hidden=c.hidden_dim, time_layout=c.time_embedding).to(dev)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)  # the target policy: initial weights
        self.schedule = DiffusionSchedule(c.n_timesteps, c.beta_schedule).to(dev)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, c.hidden_dim).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        # one optimizer (and one gradient clip) per network, as the code
        self.q1_opt = torch.optim.Adam(self.critic.q1_model.parameters(), lr=c.lr)
        self.q2_opt = torch.optim.Adam(self.critic.q2_model.parameters(), lr=c.lr)
        if c.backbone == "iql":
            self.value = mlp(spec.obs_dim, 1, c.hidden_dim).to(dev)
            self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.lr)
        # dataset-dependent settings, set by fit_dataset (defaults for a platform that does not call it)
        self.grad_norm = DEFAULT_GRAD_NORM if c.grad_norm is None else c.grad_norm
        self.shaping = "none" if c.reward_shaping == "auto" else c.reward_shaping
        self.norm_reward = bool(c.norm_reward) if c.norm_reward is not None else c.backbone == "iql"
        self.reward_scale = torch.tensor(1.0, device=dev)
        self.reward_min = torch.tensor(0.0, device=dev)
        self.reward_max = torch.tensor(1.0, device=dev)
        self._reward_fitted = False
        self.step = 0

    def compile(self) -> None:
        """``train.compile``: the networks of ``compile_modules``, and IQL's value network (``Algorithm.compile``)."""
        super().compile()
        if self.cfg.backbone == "iql":
            self.value.compile()

    # ------------------------------------------------------------------ dataset

    def fit_dataset(self, data) -> None:
        """Per-task settings from the dataset (its ``name``, ``rewards (N,)``, ``episode_ends (E,)``), as the code."""
        c, name = self.cfg, getattr(data, "name", "") or ""
        dom = paper_settings.domain(name)
        if c.grad_norm is None:  # the platform resolves it before (algorithms.resolve_params); library use lands here
            self.grad_norm = paper_settings.edp(name).get("grad_norm", DEFAULT_GRAD_NORM)
        if c.reward_shaping == "auto":
            self.shaping = {"antmaze": "antmaze", "kitchen": "minmax", "adroit": "minmax"}.get(dom, "none")
        if c.norm_reward is None:
            self.norm_reward = c.backbone == "iql" and dom != "antmaze"
        elif dom == "antmaze":
            self.norm_reward = False  # the code forces it off for AntMaze
        if self.norm_reward:
            self.reward_scale.fill_(reward_scale_from_returns(data.rewards, data.episode_ends, 1000.0))
        rewards = torch.as_tensor(data.rewards, dtype=torch.float32) * self.reward_scale.cpu()
        self.reward_min.fill_(float(rewards.min()))
        self.reward_max.fill_(float(rewards.max()))
        self._reward_fitted = True

    def shape_rewards(self, r: torch.Tensor) -> torch.Tensor:
        """The code's reward pipeline: ``norm_reward`` scale, then the domain transform.  ``r (B, 1)``."""
        r = r * self.reward_scale
        if self.shaping == "antmaze":
            return r - 1.0 if self.cfg.backbone == "iql" else (r - 0.5) * 4.0
        if self.shaping == "minmax":
            if not self._reward_fitted:
                raise RuntimeError("EDP: reward_shaping='minmax' needs the dataset's rewards: call fit_dataset(data)")
            return ((r - self.reward_min) / (self.reward_max - self.reward_min) - 0.5) * 2.0
        return r

    # ------------------------------------------------------------------ sampling

    def sample(self, obs: torch.Tensor, model: nn.Module | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for states ``obs (B, obs_dim)`` -> ``(B, act_dim)``, no gradients (default: the online policy)."""
        model = self.actor if model is None else model
        shape, clip = (obs.shape[0], self.spec.act_dim), (self.act_low, self.act_high)

        def denoise(x, k):
            return model(x, k, obs)

        c = self.cfg
        if c.sampler == "dpm_solver":
            return dpm_solver_eps_sample(denoise, self.schedule, shape, c.sampler_steps, order=c.dpm_order,
                                         t_end=c.dpm_t_end, clip=clip, device=self.device, generator=generator)
        if c.sampler == "dpm_solver_pp":
            return dpm_solver_sample(denoise, self.schedule, shape, c.sampler_steps, clip=clip, device=self.device,
                                     generator=generator)
        return ddpm_sample(denoise, self.schedule, shape, clip=clip, device=self.device, generator=generator)

    def action_approximation(self, obs, actions):
        """Noise dataset actions to a random step and reconstruct them in one shot.

        ``obs (B, obs_dim)``, ``actions (B, act_dim)`` -> ``(a0_hat (B, act_dim), eps_pred, eps, k)``;
        ``a0_hat`` is clipped to the action bounds (the code's ``clip_denoised``).  Gradients flow only
        through this one network call, never through a sampling chain.
        """
        b = actions.shape[0]
        k = torch.randint(0, self.cfg.n_timesteps, (b,), device=self.device)
        eps = torch.randn_like(actions)
        a_k = self.schedule.q_sample(actions, k, eps)
        eps_pred = self.actor(a_k, k, obs)
        a0_hat = torch.clamp(self.schedule.x0_from_eps(a_k, k, eps_pred), self.act_low, self.act_high)
        return a0_hat, eps_pred, eps, k

    # ------------------------------------------------------------------ learning

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> torch.Tensor:
        """Backward into ``params`` only, clip them at ``grad_norm``, step; the pre-clip norm (0-d tensor)."""
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        norm = (nn.utils.clip_grad_norm_(params, self.grad_norm) if self.grad_norm > 0
                else nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        opt.step()
        return norm.detach()

    def _td_target(self, r, s2, not_done) -> torch.Tensor:
        with torch.no_grad():
            q1_t, q2_t = self.critic_target(s2, self.sample(s2, self.ema_actor))
            return r + self.cfg.gamma * not_done * torch.min(q1_t, q2_t)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on ``observations (B, obs_dim)``, ``actions``, ``rewards (B,)``, ``next_observations``,
        ``terminals (B,)``; returns ``train/...`` floats."""
        c, dev = self.cfg, self.device
        s = batch["observations"].to(dev, torch.float32)
        a = batch["actions"].to(dev, torch.float32)
        if c.clip_actions:
            a = torch.clamp(a, self.data_low, self.data_high)
        r = self.shape_rewards(batch["rewards"].to(dev, torch.float32).reshape(-1, 1))
        s2 = batch["next_observations"].to(dev, torch.float32)
        not_done = 1.0 - batch["terminals"].to(dev, torch.float32).reshape(-1, 1)
        q1_params, q2_params = list(self.critic.q1_model.parameters()), list(self.critic.q2_model.parameters())
        actor_params = list(self.actor.parameters())
        zero = torch.zeros((), device=dev)
        value_loss = value_gn = zero

        a0_hat, eps_pred, eps, _ = self.action_approximation(s, a)
        diff_loss = F.mse_loss(eps_pred, eps)
        if c.backbone == "iql":
            # V, then the policy (with the new V), then Q (with the new V): the code's order
            with torch.no_grad():
                q_t = torch.min(*self.critic_target(s, a))
            value_loss = expectile_loss(q_t - self.value(s), c.expectile)
            value_gn = self._step(self.value_opt, value_loss, list(self.value.parameters()))
            with torch.no_grad():
                w = advantage_weights(q_t - self.value(s), c.temperature, c.max_weight)  # (B, 1)
            guide_loss = (w * 0.5 * (a - a0_hat).pow(2).sum(-1, keepdim=True)).mean()
            actor_loss = diff_loss + guide_loss
            actor_gn = self._step(self.actor_opt, actor_loss, actor_params)
            with torch.no_grad():
                target = r + c.gamma * not_done * self.value(s2)
            q1, q2 = self.critic(s, a)
            q1_loss, q2_loss = F.mse_loss(q1, target), F.mse_loss(q2, target)
        else:
            target = self._td_target(r, s2, not_done)
            q1, q2 = self.critic(s, a)
            q1_loss, q2_loss = F.mse_loss(q1, target), F.mse_loss(q2, target)
            # the policy's guide term uses the critics *before* this step's update (one set of params, as the code)
            if c.backbone == "td3" and c.guide_after_critic_update:
                q1_gn = self._step(self.q1_opt, q1_loss, q1_params)
                q2_gn = self._step(self.q2_opt, q2_loss, q2_params)
                q_new = self.critic.q1_model(torch.cat([s, a0_hat], -1))
                guide_loss = -(c.alpha / q_new.abs().mean().detach()) * q_new.mean()
            elif c.backbone == "td3":
                use_q1 = torch.rand((), device=dev) > 0.5        # Q1 or Q2 at random; a tensor coin: no sync
                q_new = torch.where(use_q1, self.critic.q1_model(torch.cat([s, a0_hat], -1)),
                                    self.critic.q2_model(torch.cat([s, a0_hat], -1)))
                guide_loss = -(c.alpha / q_new.abs().mean().detach()) * q_new.mean()
            else:  # crr
                with torch.no_grad():
                    n = c.crr_samples
                    a_j = a0_hat.detach().unsqueeze(1) + torch.randn(a.shape[0], n, a.shape[1], device=dev)
                    s_rep = s.unsqueeze(1).expand(-1, n, -1).reshape(-1, s.shape[-1])
                    v_j = torch.min(*self.critic(s_rep, a_j.reshape(-1, a.shape[1]))).view(-1, n)
                    v = v_j.mean(1, keepdim=True) if c.crr_avg == "mean" else v_j.amax(1, keepdim=True)
                    adv = torch.min(q1, q2).detach() - v
                    lam = (torch.clamp(torch.exp(adv / c.crr_beta), max=c.crr_max_weight) if c.crr_fn == "exp"
                           else (adv > 0).float())
                log_prob = -0.5 * (a - a0_hat).pow(2).sum(-1, keepdim=True)   # log N(a; a0_hat, I) + const
                guide_loss = -(lam * log_prob).mean()
            actor_loss = diff_loss + guide_loss
            actor_gn = self._step(self.actor_opt, actor_loss, actor_params)
        if not (c.backbone == "td3" and c.guide_after_critic_update):
            q1_gn = self._step(self.q1_opt, q1_loss, q1_params)
            q2_gn = self._step(self.q2_opt, q2_loss, q2_params)

        # target policy (step counted after the increment, as the code) and target critics
        self.step += 1
        if self.step % c.update_ema_every == 0:
            if self.step > c.step_start_ema:
                soft_update(self.ema_actor, self.actor, 1.0 - c.ema_decay)
            elif c.ema_copy_before_start:
                self.ema_actor.load_state_dict(self.actor.state_dict())
        soft_update(self.critic_target, self.critic, c.tau)

        names = ["bc_loss", "ql_loss", "actor_loss", "critic_loss", "value_loss", "q_mean", "actor_grad_norm",
                 "critic_grad_norm", "value_grad_norm"]
        values = torch.stack([diff_loss.detach(), guide_loss.detach(), actor_loss.detach(),
                              (q1_loss + q2_loss).detach(), value_loss.detach(), q1.detach().mean(), actor_gn,
                              torch.maximum(q1_gn, q2_gn), value_gn]).unbind()  # no sync
        return {f"train/{n}": v for n, v in zip(names, values)}

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``obs (B, 1, obs_dim)`` -> ``(B, 1, act_dim)``: ``n_action_samples`` candidates, one drawn by softmax(min Q)."""
        s = torch.as_tensor(obs)[:, -1].to(self.device, torch.float32)
        n = self.cfg.n_action_samples
        s_rep = s.repeat_interleave(n, dim=0)
        cand = self.sample(s_rep, self.ema_actor if self.cfg.act_with_ema else self.actor, generator=generator)
        critic = self.critic_target if self.cfg.act_with_target_critic else self.critic
        q = critic.q_min(s_rep, cand).view(-1, n)
        idx = torch.multinomial(F.softmax(q, dim=-1), 1, generator=generator)  # (B, 1)
        return cand.view(-1, n, self.spec.act_dim).gather(1, idx.unsqueeze(-1).expand(-1, 1, self.spec.act_dim))

    # ------------------------------------------------------------------ state

    def _modules(self) -> dict:
        mods = {"actor": self.actor, "ema_actor": self.ema_actor, "critic": self.critic,
                "critic_target": self.critic_target, "actor_opt": self.actor_opt, "q1_opt": self.q1_opt,
                "q2_opt": self.q2_opt}
        if self.cfg.backbone == "iql":
            mods.update(value=self.value, value_opt=self.value_opt)
        return mods

    def state_dict(self) -> dict:
        d = {k: m.state_dict() for k, m in self._modules().items()}
        d.update(step=torch.tensor(self.step), grad_norm=torch.tensor(self.grad_norm),
                 reward_scale=self.reward_scale.clone(), reward_min=self.reward_min.clone(),
                 reward_max=self.reward_max.clone(), norm_reward=torch.tensor(self.norm_reward),
                 shaping=torch.tensor(REWARD_SHAPINGS.index(self.shaping)))
        return d

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (the sampling policy and the critics that rank candidates): for rollout workers."""
        actor = "ema_actor" if self.cfg.act_with_ema else "actor"
        critic = "critic_target" if self.cfg.act_with_target_critic else "critic"
        return {actor: getattr(self, actor).state_dict(), critic: getattr(self, critic).state_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (missing parts are left as they are)."""
        for key, module in self._modules().items():
            if key in d:
                module.load_state_dict(d[key])
        if "step" in d:
            self.step = int(d["step"])
            self.grad_norm = float(d["grad_norm"])
            self.norm_reward = bool(d["norm_reward"])
            self.shaping = REWARD_SHAPINGS[int(d["shaping"])]
            for k in ("reward_scale", "reward_min", "reward_max"):
                getattr(self, k).copy_(d[k])
            self._reward_fitted = True
