"""EDP: Efficient Diffusion Policies for offline RL (Kang et al., NeurIPS 2023).

Diffusion-QL backpropagates the Q term through all K sampling steps, so its cost grows with K.
EDP instead noises the *dataset* action to one random step k and predicts it back in one shot:

    a_k    = sqrt(abar_k) a + sqrt(1 - abar_k) eps                   (forward process)
    a0_hat = (a_k - sqrt(1 - abar_k) eps_theta(a_k, k, s)) / sqrt(abar_k)   ("action approximation")

and uses ``a0_hat`` in the policy-improvement term.  No step of a sampling chain is ever
differentiated, so K can be 1000; actions are sampled with DPM-Solver (about 15 steps).

Backbones (``backbone``):

* ``td3``: ``L = L_diffusion - lambda * Q1(s, a0_hat)``, ``lambda = alpha / mean|Q1|`` (alpha = 2.0),
  critic target from actions sampled by the EMA policy (TD3+BC-style twin-Q minimum).
* ``iql``: expectile value ``V`` (tau = 0.7) and ``Q`` trained IQL-style on dataset actions only; the
  policy's denoising loss is weighted by ``exp(beta * (Q - V))`` (beta = 3, clipped at 100), an
  advantage-weighted regression on the one-step reconstruction.

Acting: 50 candidate actions per state from the EMA policy, one picked by softmax over Q
(energy-based action selection, as Diffusion-QL does).  Batches: D4RL transitions.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.diffusion.dpm_solver import dpm_solver_sample
from algorithms.diffusion.nets import NoiseMLP
from algorithms.diffusion.schedules import DiffusionSchedule
from algorithms.dql import TwinQ, ema_update, mlp, select_by_q, soft_update
from algorithms.iql import advantage_weights, expectile_loss


@dataclass
class EDPConfig:
    backbone: str = "td3"            # "td3" (Q term) or "iql" (advantage-weighted denoising); paper: both, + CRR
    n_timesteps: int = 1000          # K used in training; EDP's point is that K=1000 is affordable
    beta_schedule: str = "linear"    # DDPM's linear schedule for K=1000 ("vp" and "cosine" also available)
    sampler: str = "dpm_solver"      # "dpm_solver" (paper) or "ddpm" (the full K-step chain, slow)
    sampler_steps: int = 15          # DPM-Solver steps at evaluation and for critic targets (paper: ~15)
    alpha: float = 2.0               # TD3 backbone: lambda = alpha / mean|Q|  (paper: 2.0)
    expectile: float = 0.7           # IQL backbone: expectile of V (IQL locomotion: 0.7)
    temperature: float = 3.0         # IQL backbone: beta in exp(beta * A) (IQL locomotion: 3.0)
    max_weight: float = 100.0        # IQL backbone: clip of the advantage weights (IQL: 100)
    gamma: float = 0.99
    tau: float = 0.005               # Polyak rate of the target critic
    lr: float = 3e-4
    hidden_dim: int = 256
    ema_decay: float = 0.995         # actor EMA, as in Diffusion-QL whose code EDP builds on
    step_start_ema: int = 1000
    update_ema_every: int = 5
    grad_norm: float = 1.0           # max grad norm of the actor (0 disables clipping)
    n_action_samples: int = 50       # candidates for Q-based action selection at evaluation

    def __post_init__(self):
        if self.backbone not in ("td3", "iql"):
            raise ValueError(f"backbone must be 'td3' or 'iql', got {self.backbone!r}")
        if self.sampler not in ("dpm_solver", "ddpm"):
            raise ValueError(f"sampler must be 'dpm_solver' or 'ddpm', got {self.sampler!r}")
        if self.n_timesteps < 1 or self.sampler_steps < 1 or self.n_action_samples < 1:
            raise ValueError("n_timesteps, sampler_steps and n_action_samples must be >= 1")
        if not 0 < self.expectile < 1:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if self.lr <= 0 or self.hidden_dim < 1 or not 0 <= self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("need lr > 0, hidden_dim >= 1, gamma in [0, 1], tau in (0, 1]")
        if self.alpha < 0 or self.temperature < 0 or self.max_weight <= 0 or self.grad_norm < 0:
            raise ValueError("alpha, temperature, grad_norm must be >= 0 and max_weight > 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class EDP:
    data_kind = "transitions"

    def __init__(self, config: EDPConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        self.cfg, self.spec, self.device = config, spec, torch.device(device)
        c = config
        self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=self.device)
        self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=self.device)
        self.actor = NoiseMLP(spec.obs_dim, spec.act_dim, hidden=c.hidden_dim).to(self.device)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.schedule = DiffusionSchedule(c.n_timesteps, c.beta_schedule).to(self.device)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, c.hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        params = list(self.critic.parameters())
        if c.backbone == "iql":
            self.value = mlp(spec.obs_dim, 1, c.hidden_dim).to(self.device)
            params += list(self.value.parameters())
        self.critic_opt = torch.optim.Adam(params, lr=c.lr)
        self.step = 0

    # ------------------------------------------------------------------ sampling

    def sample(self, obs: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """Actions for states ``obs (B, obs_dim)`` -> ``(B, act_dim)``, no gradients."""
        model = model or self.ema_actor

        def denoise(x, k):
            return model(x, k, obs)

        shape = (obs.shape[0], self.spec.act_dim)
        clip = (self.act_low, self.act_high)
        if self.cfg.sampler == "dpm_solver":
            return dpm_solver_sample(denoise, self.schedule, shape, self.cfg.sampler_steps, clip=clip,
                                     device=self.device)
        from algorithms.diffusion.samplers import ddpm_sample

        return ddpm_sample(denoise, self.schedule, shape, clip=clip, device=self.device)

    def action_approximation(self, obs, actions):
        """Noise dataset actions to a random step and reconstruct them in one shot.

        ``obs (B, obs_dim)``, ``actions (B, act_dim)`` -> ``(a0_hat (B, act_dim), eps_pred, eps, k)``.
        Gradients flow only through this one network call, never through a sampling chain.
        """
        b = actions.shape[0]
        k = torch.randint(0, self.cfg.n_timesteps, (b,), device=self.device)
        eps = torch.randn_like(actions)
        a_k = self.schedule.q_sample(actions, k, eps)
        eps_pred = self.actor(a_k, k, obs)
        a0_hat = self.schedule.x0_from_eps(a_k, k, eps_pred)
        a0_hat = torch.maximum(torch.minimum(a0_hat, self.act_high), self.act_low)
        return a0_hat, eps_pred, eps, k

    # ------------------------------------------------------------------ learning

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.cfg
        s, a, r = batch["observations"], batch["actions"], batch["rewards"].reshape(-1, 1)
        s2, done = batch["next_observations"], batch["terminals"].reshape(-1, 1)

        # critic
        if c.backbone == "td3":
            with torch.no_grad():
                a2 = self.sample(s2)
                q1_t, q2_t = self.critic_target(s2, a2)
                target = r + c.gamma * (1 - done) * torch.min(q1_t, q2_t)
            q1, q2 = self.critic(s, a)
            critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
            value_loss = torch.zeros((), device=self.device)
        else:
            with torch.no_grad():
                q1_t, q2_t = self.critic_target(s, a)
                q_t = torch.min(q1_t, q2_t)
                target = r + c.gamma * (1 - done) * self.value(s2)
            value_loss = expectile_loss(q_t - self.value(s), c.expectile)
            q1, q2 = self.critic(s, a)
            critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target) + value_loss
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # actor
        a0_hat, eps_pred, eps, _ = self.action_approximation(s, a)
        if c.backbone == "td3":
            bc_loss = F.mse_loss(eps_pred, eps)
            q_new = self.critic.q1(s, a0_hat)
            lam = c.alpha / q_new.abs().mean().detach()
            q_loss = -lam * q_new.mean()
            actor_loss = bc_loss + q_loss
        else:
            with torch.no_grad():
                q1_t, q2_t = self.critic_target(s, a)
                adv = torch.min(q1_t, q2_t) - self.value(s)
                w = advantage_weights(adv, c.temperature, c.max_weight)
            per_sample = (eps_pred - eps).pow(2).mean(dim=-1, keepdim=True)
            bc_loss = per_sample.mean()
            q_loss = (w * per_sample).mean() - bc_loss  # the advantage re-weighting, reported apart
            actor_loss = (w * per_sample).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        grad_norm = (nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_norm) if c.grad_norm > 0
                     else torch.zeros((), device=self.device))
        self.actor_opt.step()

        self.step += 1
        if self.step % c.update_ema_every == 0:
            if self.step < c.step_start_ema:
                self.ema_actor.load_state_dict(self.actor.state_dict())
            else:
                ema_update(self.ema_actor, self.actor, c.ema_decay)
        soft_update(self.critic_target, self.critic, c.tau)

        values = torch.stack([bc_loss.detach(), q_loss.detach(), actor_loss.detach(), critic_loss.detach(),
                              value_loss.detach(), q1.detach().mean(), grad_norm.detach()]).tolist()
        names = ["bc_loss", "ql_loss", "actor_loss", "critic_loss", "value_loss", "q_mean", "actor_grad_norm"]
        return {f"train/{n}": v for n, v in zip(names, values)}

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, 1, obs_dim)`` -> ``(B, 1, act_dim)``: best of ``n_action_samples`` by softmax(Q)."""
        s = obs[:, -1].to(self.device)
        n = self.cfg.n_action_samples
        s_rep = s.repeat_interleave(n, dim=0)
        cand = self.sample(s_rep)
        q = self.critic_target.q1(s_rep, cand).view(-1, n)
        return select_by_q(cand.view(-1, n, self.spec.act_dim), q).unsqueeze(1)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        d = {"actor": self.actor.state_dict(), "ema_actor": self.ema_actor.state_dict(),
             "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
             "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
             "step": torch.tensor(self.step)}
        if self.cfg.backbone == "iql":
            d["value"] = self.value.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        self.actor.load_state_dict(d["actor"])
        self.ema_actor.load_state_dict(d["ema_actor"])
        self.critic.load_state_dict(d["critic"])
        self.critic_target.load_state_dict(d["critic_target"])
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        if self.cfg.backbone == "iql":
            self.value.load_state_dict(d["value"])
        self.step = int(d["step"])
