"""TD3+BC (Fujimoto & Gu, NeurIPS 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 with a behaviour-cloning term in the actor loss and normalized states; nothing else changes:

    states:  s <- (s - mu) / (sigma + 1e-3), mu and sigma the dataset's per-dimension mean and std
    critic:  a' = clip(pi_targ(s') + clip(N(0, (0.2 h)^2), -0.5 h, 0.5 h), low, high)    (target smoothing)
             y  = r + gamma * (1 - done) * min(Q1_targ, Q2_targ)(s', a')
             L_critic = ||Q1(s, a) - y||^2 + ||Q2(s, a) - y||^2
    actor (every 2nd step):
             L_pi = -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2,   lambda = alpha / mean|Q1(s, pi(s))|.detach()
             then Polyak (tau = 0.005) on the actor and both critics

``h`` is the half-width of the action range (TD3's ``max_action`` for symmetric bounds);
``pi(s) = mid + h * tanh(mlp(s))`` stays inside the bounds.  Acting is deterministic: ``pi(s)``.

Defaults are the paper's (alpha 2.5, policy noise 0.2, noise clip 0.5, policy delay 2, tau 0.005,
Adam 3e-4 for actor and critics, 2 x 256 ReLU networks, gamma 0.99, state normalization; 1M steps,
batch 256) as implemented in CORL's ``algorithms/offline/td3_bc.py`` (tinkoff-ai/CORL), the reference
for every default here.  One Adam over both critics equals CORL's two Adams (Adam is per-parameter).

Dataset statistics: ``fit_dataset(data)`` sets the state mean/std from ``data.observations (N, obs_dim)``
(any object with that array, e.g. the platform's ``OfflineDataset``).  They are buffers, so they travel
in ``state_dict()`` and ``policy_state_dict()`` to checkpoints and rollout workers.  Training without
fitted statistics raises, unless ``stats_from_batch=True`` (a named shortcut: the first batch's mean/std).

Batches: D4RL transitions (``data_kind = "transitions"``); ``act``: ``(B, 1, obs_dim) -> (B, 1, act_dim)``.
The algorithm never seeds globally: the platform calls ``torch.manual_seed`` before constructing it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.diffusion.nets import mlp
from algorithms.paper_scores import iql_table
from algorithms.common import Algorithm, ObsNormalizer, TwinCritic, batch_tensors, coerce_field_types, soft_update


@dataclass
class TD3BCConfig:
    """TD3+BC hyperparameters: the paper's values (Fujimoto & Gu 2021, Appendix C) = CORL's defaults."""

    alpha: float = 2.5
    """lambda = alpha / mean|Q| weighs the Q term against the BC term (paper: 2.5)."""
    policy_noise: float = 0.2
    """Std of the target-policy smoothing noise, in units of the action half-range (paper: 0.2 x max_action)."""
    noise_clip: float = 0.5
    """Clip of that noise, in units of the action half-range (paper: 0.5 x max_action)."""
    policy_freq: int = 2
    """Actor and target networks are updated every ``policy_freq`` critic steps (paper: 2)."""
    tau: float = 0.005
    """Polyak rate of the target actor and critics (paper: 0.005)."""
    gamma: float = 0.99
    """Discount (paper: 0.99)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (paper: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (paper: 3e-4)."""
    hidden_dim: int = 256
    """Width of the actor's and critics' hidden layers (paper: 256)."""
    n_hidden: int = 2
    """Number of hidden ReLU layers of each network (paper: 2)."""
    normalize_obs: bool = True
    """Normalize states with the dataset's mean and std (paper: on for D4RL)."""
    obs_std_eps: float = 1e-3
    """Added to the dataset's state std (paper / CORL: 1e-3)."""
    stats_from_batch: bool = False
    """Shortcut: if ``fit_dataset`` was not called, take the state mean/std of the first training batch
    instead of raising (for a platform that does not pass dataset statistics)."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"TD3BCConfig: {msg}")

        coerce_field_types(self)
        need(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        need(self.policy_noise >= 0 and self.noise_clip >= 0,
             f"policy_noise and noise_clip must be >= 0, got {self.policy_noise}, {self.noise_clip}")
        need(self.policy_freq >= 1, f"policy_freq must be >= 1, got {self.policy_freq}")
        need(0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}")
        need(0 <= self.gamma <= 1, f"gamma must be in [0, 1], got {self.gamma}")
        need(self.actor_lr > 0 and self.critic_lr > 0,
             f"actor_lr and critic_lr must be > 0, got {self.actor_lr}, {self.critic_lr}")
        need(self.hidden_dim >= 1 and self.n_hidden >= 1,
             f"hidden_dim and n_hidden must be >= 1, got {self.hidden_dim}, {self.n_hidden}")
        need(self.obs_std_eps >= 0, f"obs_std_eps must be >= 0, got {self.obs_std_eps}")


# ----------------------------------------------------------------------------- pieces IQL shares


# ----------------------------------------------------------------------------- TD3+BC


class TD3BC(Algorithm):
    """TD3+BC agent: ``fit_dataset(data)``, ``update(batch) -> metrics``, ``act(obs) -> actions``, plain-tensor state."""

    data_kind = "transitions"
    paper_scores = (iql_table(1),)
    tiny_config = {"hidden_dim": 32}

    def __init__(self, config: TD3BCConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=self.device)
        self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=self.device)
        self.act_mid, self.act_half = (self.act_high + self.act_low) / 2, (self.act_high - self.act_low) / 2
        self.obs_norm = ObsNormalizer(spec.obs_dim).to(self.device)
        self.actor = mlp(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden, act=nn.ReLU).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinCritic(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        fused = self.device.type in ("cpu", "cuda")  # one fused kernel per Adam step; same algorithm
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, fused=fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, fused=fused)
        self._actor_params = list(self.actor.parameters())
        self.step = 0
        zero = torch.zeros((), device=self.device)
        # The actor learns every policy_freq steps; its last values are reported in between so that the
        # platform's per-step averages of the metrics stay meaningful.
        self._last_actor = {"actor_loss": zero, "bc_loss": zero, "lambda": zero, "pi_q_mean": zero}

    # ------------------------------------------------------------------ dataset statistics

    def fit_dataset(self, data) -> None:
        """State mean/std from ``data.observations (N, obs_dim)`` (a no-op with ``normalize_obs=False``)."""
        if self.cfg.normalize_obs:
            self.obs_norm.fit(data.observations, self.cfg.obs_std_eps)

    def _check_stats(self, obs: torch.Tensor) -> None:
        if not self.cfg.normalize_obs or bool(self.obs_norm.fitted):
            return
        if not self.cfg.stats_from_batch:
            raise RuntimeError("TD3BC: state statistics are not set: call fit_dataset(data) before update(), "
                               "or set stats_from_batch=True to take them from the first batch")
        self.obs_norm.fit(obs, self.cfg.obs_std_eps)

    # ------------------------------------------------------------------ the policy

    def policy(self, s_norm: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """``s_norm (B, obs_dim)`` normalized states -> actions ``(B, act_dim)`` inside the bounds."""
        net = self.actor if net is None else net
        return self.act_mid + self.act_half * torch.tanh(net(s_norm))

    # ------------------------------------------------------------------ one gradient step

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One critic step, and an actor + target step every ``policy_freq`` calls.

        ``batch``: ``observations (B, obs_dim)``, ``actions (B, act_dim)``, ``rewards (B,)``,
        ``next_observations (B, obs_dim)``, ``terminals (B,)``.  Returns ``train/...`` floats.
        """
        c = self.cfg
        s, a, r, s2, not_done = batch_tensors(batch, self.device)
        if self.step == 0:
            self._check_stats(s)
        s, s2 = self.obs_norm(s), self.obs_norm(s2)
        self.step += 1  # counted first, as TD3's total_it: the actor learns at steps 2, 4, ...

        # ---- critic: smoothed target policy, clipped double Q
        with torch.no_grad():
            noise = (torch.randn_like(a) * (c.policy_noise * self.act_half)).clamp(
                -c.noise_clip * self.act_half, c.noise_clip * self.act_half)
            a2 = torch.maximum(torch.minimum(self.policy(s2, self.actor_target) + noise, self.act_high), self.act_low)
            target_q = r + not_done * c.gamma * self.critic_target.q_min(s2, a2)       # (B, 1)
        q1, q2 = self.critic(s, a)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # ---- delayed actor: -lambda Q1 + BC, then all targets
        if self.step % c.policy_freq == 0:
            pi = self.policy(s)
            q = self.critic.q1(s, pi)
            lam = c.alpha / q.abs().mean().detach()
            bc_loss = F.mse_loss(pi, a)
            actor_loss = -lam * q.mean() + bc_loss
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward(inputs=self._actor_params)  # the critics' gradients would be thrown away
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            self._last_actor = {"actor_loss": actor_loss.detach(), "bc_loss": bc_loss.detach(),
                                "lambda": lam, "pi_q_mean": q.detach().mean()}

        names = ["critic_loss", "q_mean", "target_q_mean", *self._last_actor]
        values = torch.stack([critic_loss.detach(), q1.detach().mean(), target_q.mean(),
                              *self._last_actor.values()]).unbind()  # no host sync
        return {f"train/{n}": v for n, v in zip(names, values)}

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, 1, obs_dim) -> (B, 1, act_dim)``: the deterministic policy on normalized states."""
        s = torch.as_tensor(obs)[:, -1].to(self.device, torch.float32)
        return self.policy(self.obs_norm(s)).unsqueeze(1)

    # ------------------------------------------------------------------ plain-tensor checkpoints

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "actor_target": self.actor_target.state_dict(),
                "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "obs_norm": self.obs_norm.state_dict(), "step": torch.tensor(self.step)}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (actor and state statistics): for rollout workers."""
        return {"actor": self.actor.state_dict(), "obs_norm": self.obs_norm.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (parts that are missing are left as they are)."""
        for key in ("actor", "actor_target", "critic", "critic_target", "actor_opt", "critic_opt", "obs_norm"):
            if key in d:
                getattr(self, key).load_state_dict(d[key])
        if "step" in d:
            self.step = int(d["step"])


__all__ = ["TD3BCConfig", "TD3BC", "ObsNormalizer", "TwinCritic", "batch_tensors"]
