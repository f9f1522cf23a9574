"""IQL (Kostrikov, Nair & Levine, ICLR 2022, "Offline Reinforcement Learning with Implicit Q-Learning").

Never queries Q on actions outside the dataset.  A state value V is fitted to an upper expectile of
Q over the dataset's actions, Q is backed up through V, and the policy is advantage-weighted
regression onto the dataset's actions:

    value:  L_V  = E |tau - 1(u < 0)| u^2,   u = min(Q1_targ, Q2_targ)(s, a) - V(s)        (tau = 0.7)
    critic: L_Q  = 1/2 sum_i ||Q_i(s, a) - (r + gamma (1 - done) V(s'))||^2,  Polyak target (0.005)
    actor:  L_pi = -E min(exp(beta u), 100) log pi(a | s)                                    (beta = 3)

``pi(. | s) = N(mid + h tanh(mlp(s)), diag(exp(log_std)^2))`` with a learned state-independent log std
(clamped to [-20, 2]); its Adam learning rate follows a cosine decay to 0 over ``max_steps``.  Acting
is deterministic: the mean.  V, Q and pi are 2 x 256 ReLU MLPs with Adam 3e-4.  States are normalized
with the dataset's mean/std; rewards are rescaled per domain (``reward_scaling``):

* ``"returns"`` (locomotion): ``r * 1000 / (max return - min return)`` over the dataset's episodes;
* ``"antmaze"``: ``r - 1``, to be used with ``expectile=0.9, temperature=10`` (the paper's AntMaze values);
* ``"none"``.

Per-task settings (``IQL.paper_settings``, the IQL code's configs by domain): locomotion expectile 0.7 /
temperature 3 / "returns"; AntMaze 0.9 / 10 / "antmaze"; Kitchen and Adroit 0.7 / 0.5 / "none" with policy
dropout 0.1.  Defaults follow the paper (Appendix B) as implemented in CORL's ``algorithms/offline/iql.py``
(tinkoff-ai/CORL, the reference for defaults here): e.g. Q loss averaged over the two heads, V updated
before Q, the advantage taken from the V of before its update, ``normalize=True``, ``LOG_STD_MIN = -20``.
CORL's Gaussian mean is ``tanh(mlp(s))`` and its actions are clipped to ``max_action`` only when
acting; here the mean is ``mid + h tanh(mlp(s))``, the same for D4RL's [-1, 1] and right for other bounds.

Dataset statistics: ``fit_dataset(data)`` reads ``data.observations (N, obs_dim)``, ``data.rewards (N,)``
and ``data.episode_ends (E,)`` (the platform's ``OfflineDataset``); the state mean/std and the reward
scale are buffers and travel in the state dicts.  Without it, training raises unless
``stats_from_batch=True`` (state statistics of the first batch; ``reward_scaling="returns"`` then
cannot be computed and raises).

The expectile loss and the advantage weights are shared with EDP's IQL backbone (``algorithms/edp.py``).
Batches: D4RL transitions; ``act``: ``(B, 1, obs_dim) -> (B, 1, act_dim)``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec, paper_settings
from algorithms.diffusion.nets import mlp
from algorithms.paper_scores import iql_table
from algorithms.common import (Algorithm, ObsNormalizer, TwinCritic, advantage_weights, batch_tensors, coerce_field_types,
                               expectile_loss, reward_scale_from_returns, soft_update)

REWARD_SCALINGS = ("returns", "antmaze", "none")


@dataclass
class IQLConfig:
    """IQL hyperparameters: the paper's locomotion values (Kostrikov et al. 2022, Appendix B) = CORL's defaults."""

    expectile: float = 0.7
    """tau, the expectile of V (paper: 0.7 locomotion, 0.9 AntMaze, 0.7 Kitchen/Adroit)."""
    temperature: float = 3.0
    """beta, the inverse temperature of the advantage weights (paper: 3.0 locomotion, 10.0 AntMaze, 0.5 Kitchen/Adroit)."""
    max_weight: float = 100.0
    """Clip of exp(beta A) (paper / CORL's EXP_ADV_MAX: 100)."""
    tau: float = 0.005
    """Polyak rate of the target critic (paper: 0.005)."""
    gamma: float = 0.99
    """Discount (paper: 0.99)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the policy (paper: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin Q (paper: 3e-4)."""
    value_lr: float = 3e-4
    """Adam learning rate of V (paper: 3e-4)."""
    hidden_dim: int = 256
    """Width of every network's hidden layers (paper: 256)."""
    n_hidden: int = 2
    """Hidden ReLU layers per network (paper: 2)."""
    lr_decay: bool = True
    """Cosine decay of the actor's learning rate to 0 over ``max_steps`` (paper / CORL: on)."""
    max_steps: int = 1_000_000
    """Horizon of the cosine decay in gradient steps (paper: 1M; the platform sets the trial's budget)."""
    reward_scaling: str = "returns"
    """"returns": r * ``reward_scale_steps`` / (max - min episode return) (locomotion); "antmaze": r - 1; "none"."""
    reward_scale_steps: float = 1000.0
    """The numerator of the "returns" scaling (paper / CORL: 1000, the locomotion episode length)."""
    actor_dropout: float = 0.0
    """Dropout rate after each hidden layer of the policy in training (paper / code: 0.1 for Kitchen and Adroit,
    none elsewhere; ``paper_settings`` resolves it per domain)."""
    normalize_obs: bool = True
    """Normalize states with the dataset's mean and std (CORL: normalize=True)."""
    obs_std_eps: float = 1e-3
    """Added to the dataset's state std (CORL: 1e-3)."""
    min_log_std: float = -20.0
    """Lower clamp of the policy's log std (CORL: LOG_STD_MIN = -20)."""
    max_log_std: float = 2.0
    """Upper clamp of the policy's log std (CORL: LOG_STD_MAX = 2)."""
    stats_from_batch: bool = False
    """Shortcut: if ``fit_dataset`` was not called, take the state mean/std of the first training batch
    instead of raising (for a platform that does not pass dataset statistics)."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"IQLConfig: {msg}")

        coerce_field_types(self)
        need(0 < self.expectile < 1, f"expectile must be in (0, 1), got {self.expectile}")
        need(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        need(self.max_weight > 0, f"max_weight must be > 0, got {self.max_weight}")
        need(0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}")
        need(0 <= self.gamma <= 1, f"gamma must be in [0, 1], got {self.gamma}")
        need(self.actor_lr > 0 and self.critic_lr > 0 and self.value_lr > 0,
             f"actor_lr, critic_lr and value_lr must be > 0, got {self.actor_lr}, {self.critic_lr}, {self.value_lr}")
        need(self.hidden_dim >= 1 and self.n_hidden >= 1,
             f"hidden_dim and n_hidden must be >= 1, got {self.hidden_dim}, {self.n_hidden}")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(self.reward_scaling in REWARD_SCALINGS,
             f"reward_scaling must be one of {', '.join(REWARD_SCALINGS)}, got {self.reward_scaling!r}")
        need(self.reward_scale_steps > 0, f"reward_scale_steps must be > 0, got {self.reward_scale_steps}")
        need(0 <= self.actor_dropout < 1, f"actor_dropout must be in [0, 1), got {self.actor_dropout}")
        need(self.obs_std_eps >= 0, f"obs_std_eps must be >= 0, got {self.obs_std_eps}")
        need(self.min_log_std < self.max_log_std,
             f"min_log_std ({self.min_log_std}) must be < max_log_std ({self.max_log_std})")


class IQL(Algorithm):
    """IQL agent: ``fit_dataset(data)``, ``update(batch) -> metrics``, ``act(obs) -> actions``, plain-tensor state."""

    data_kind = "transitions"
    paper_scores = (iql_table(2),)
    tiny_config = {"hidden_dim": 32}

    @classmethod
    def paper_settings(cls, dataset: str) -> dict:
        """The public code's per-task values (``algorithms.paper_settings.iql``)."""
        return paper_settings.iql(dataset)

    def __init__(self, config: IQLConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        dev = self.device
        self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=dev)
        self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=dev)
        self.act_mid, self.act_half = (self.act_high + self.act_low) / 2, (self.act_high - self.act_low) / 2
        self.obs_norm = ObsNormalizer(spec.obs_dim).to(dev)
        self.reward_scale = torch.tensor(1.0, device=dev)  # set by fit_dataset for reward_scaling="returns"
        self.actor = mlp(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden, act=nn.ReLU).to(dev)
        if c.actor_dropout > 0:  # the code's dropout after every hidden activation of the policy (Kitchen / Adroit)
            layers = [m for layer in self.actor for m in
                      ((layer, nn.Dropout(c.actor_dropout)) if isinstance(layer, nn.ReLU) else (layer,))]
            self.actor = nn.Sequential(*layers).to(dev)
        self.log_std = nn.Parameter(torch.zeros(spec.act_dim, device=dev))
        self.critic = TwinCritic(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(spec.obs_dim, 1, c.hidden_dim, c.n_hidden, act=nn.ReLU).to(dev)
        fused = dev.type in ("cpu", "cuda")
        self._actor_params = [*self.actor.parameters(), self.log_std]
        self.actor_opt = torch.optim.Adam(self._actor_params, lr=c.actor_lr, fused=fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, fused=fused)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.value_lr, fused=fused)
        self.lr_schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=c.max_steps)
                            if c.lr_decay else None)
        self.step = 0
        self._scale_fitted = False

    # ------------------------------------------------------------------ dataset statistics

    def fit_dataset(self, data) -> None:
        """State mean/std from ``data.observations (N, obs_dim)``; for ``reward_scaling="returns"`` the reward
        scale from ``data.rewards (N,)`` and ``data.episode_ends (E,)``."""
        if self.cfg.normalize_obs:
            self.obs_norm.fit(data.observations, self.cfg.obs_std_eps)
        if self.cfg.reward_scaling == "returns":
            self.reward_scale.fill_(reward_scale_from_returns(data.rewards, data.episode_ends,
                                                              self.cfg.reward_scale_steps))
            self._scale_fitted = True

    def _check_stats(self, obs: torch.Tensor) -> None:
        c = self.cfg
        missing_obs = c.normalize_obs and not bool(self.obs_norm.fitted)
        missing_scale = c.reward_scaling == "returns" and not self._scale_fitted
        if missing_scale:
            raise RuntimeError("IQL: reward_scaling='returns' needs the dataset's episode returns: call "
                               "fit_dataset(data) before update(), or choose reward_scaling 'none' or 'antmaze'")
        if missing_obs:
            if not c.stats_from_batch:
                raise RuntimeError("IQL: state statistics are not set: call fit_dataset(data) before update(), "
                                   "or set stats_from_batch=True to take them from the first batch")
            self.obs_norm.fit(obs, c.obs_std_eps)

    def scale_rewards(self, r: torch.Tensor) -> torch.Tensor:
        """The domain's reward transformation (``reward_scaling``), any shape."""
        if self.cfg.reward_scaling == "returns":
            return r * self.reward_scale
        if self.cfg.reward_scaling == "antmaze":
            return r - 1.0
        return r

    # ------------------------------------------------------------------ the policy

    def dist_params(self, s_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s_norm (B, obs_dim)`` -> ``(mean (B, act_dim) inside the bounds, log_std (act_dim,))``."""
        mean = self.act_mid + self.act_half * torch.tanh(self.actor(s_norm))
        return mean, self.log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std)

    def log_prob(self, s_norm: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``log pi(a | s)`` of the diagonal Gaussian: ``s_norm (B, obs_dim)``, ``a (B, act_dim)`` -> ``(B,)``."""
        mean, log_std = self.dist_params(s_norm)
        z = (a - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    # ------------------------------------------------------------------ one gradient step

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of V, then Q, then the policy (CORL's order).

        ``batch``: ``observations (B, obs_dim)``, ``actions (B, act_dim)``, ``rewards (B,)``,
        ``next_observations (B, obs_dim)``, ``terminals (B,)``.  Returns ``train/...`` floats.
        """
        c = self.cfg
        s, a, r, s2, not_done = batch_tensors(batch, self.device)
        if self.step == 0:
            self._check_stats(s)
        s, s2, r = self.obs_norm(s), self.obs_norm(s2), self.scale_rewards(r)

        # ---- V: upper expectile of the target twin-Q minimum over the dataset's actions
        with torch.no_grad():
            next_v = self.value(s2)                                              # (B, 1), V before its update
            target_q = self.critic_target.q_min(s, a)                            # (B, 1)
        adv = target_q - self.value(s)                                           # (B, 1)
        value_loss = expectile_loss(adv, c.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # ---- Q: backed up through V, never through a policy action
        q_target = r + not_done * c.gamma * next_v
        q1, q2 = self.critic(s, a)
        critic_loss = (F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)) / 2
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)

        # ---- policy: advantage-weighted log-likelihood of the dataset's actions
        weights = advantage_weights(adv.detach(), c.temperature, c.max_weight).squeeze(-1)   # (B,)
        nll = -self.log_prob(s, a)                                               # (B,)
        actor_loss = (weights * nll).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.step += 1

        names = ["value_loss", "critic_loss", "actor_loss", "nll", "adv_mean", "weight_mean", "v_mean", "q_mean",
                 "log_std"]
        values = torch.stack([value_loss.detach(), critic_loss.detach(), actor_loss.detach(), nll.detach().mean(),
                              adv.detach().mean(), weights.mean(), (target_q - adv).detach().mean(),
                              q1.detach().mean(), self.log_std.detach().mean()]).unbind()  # no host sync
        out = {f"train/{n}": v for n, v in zip(names, values)}
        if self.lr_schedule is not None:
            out["train/actor_lr"] = self.actor_opt.param_groups[0]["lr"]
        return out

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, 1, obs_dim) -> (B, 1, act_dim)``: the policy's mean on normalized states."""
        s = torch.as_tensor(obs)[:, -1].to(self.device, torch.float32)
        training = self.actor.training
        self.actor.eval()  # no dropout when acting (the code: deterministic=True)
        try:
            return self.dist_params(self.obs_norm(s))[0].unsqueeze(1)
        finally:
            self.actor.train(training)

    # ------------------------------------------------------------------ plain-tensor checkpoints

    def state_dict(self) -> dict:
        d = {"actor": self.actor.state_dict(), "log_std": self.log_std.detach().clone(),
             "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
             "value": self.value.state_dict(), "actor_opt": self.actor_opt.state_dict(),
             "critic_opt": self.critic_opt.state_dict(), "value_opt": self.value_opt.state_dict(),
             "obs_norm": self.obs_norm.state_dict(), "reward_scale": self.reward_scale.clone(),
             "step": torch.tensor(self.step)}
        if self.lr_schedule is not None:
            d["lr_schedule_epoch"] = torch.tensor(self.lr_schedule.last_epoch)
        return d

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (policy mean network, log std, state statistics): for rollout workers."""
        return {"actor": self.actor.state_dict(), "log_std": self.log_std.detach().clone(),
                "obs_norm": self.obs_norm.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (parts that are missing are left as they are)."""
        for key in ("actor", "critic", "critic_target", "value", "actor_opt", "critic_opt", "value_opt", "obs_norm"):
            if key in d:
                getattr(self, key).load_state_dict(d[key])
        with torch.no_grad():
            if "log_std" in d:
                self.log_std.copy_(d["log_std"])
            if "reward_scale" in d:
                self.reward_scale.copy_(d["reward_scale"])
                self._scale_fitted = True
        if "step" in d:
            self.step = int(d["step"])
        if self.lr_schedule is not None and "lr_schedule_epoch" in d:
            self.lr_schedule.last_epoch = int(d["lr_schedule_epoch"])  # the lr itself came back with actor_opt


__all__ = ["IQLConfig", "IQL", "expectile_loss", "advantage_weights", "reward_scale_from_returns"]
