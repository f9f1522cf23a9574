"""Soft Actor-Critic (Haarnoja et al. 2018), compact online version in the cleanrl/CORL style.

Used by ``platform.datasets.generate`` to train the behaviour policies of D4RL-style datasets
(D4RL itself used SAC for its MuJoCo medium/expert data).  It is *not* an offline algorithm and is
not in ``algorithms.REGISTRY``; the online loop (env interaction, checkpoints) lives in the generator.

* Tanh-squashed Gaussian actor, rescaled to the action bounds; log-std clamped to [-5, 2] (cleanrl).
* Twin Q critic as one 2-member ensemble (batched matmuls, CORL's SAC-N trick) + Polyak target.
* Automatic entropy tuning towards ``target_entropy = -act_dim``.
* 256x256 ReLU networks, Adam lr 3e-4, batch 256, gamma 0.99, tau 0.005 (the SAC paper's values).

Shapes: ``obs (B, obs_dim)``, ``actions (B, act_dim)`` in env units, ``rewards/terminals (B,)``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    hidden_dim: int = 256          # SAC paper: 2 x 256 ReLU for actor and critics
    n_hidden: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005             # Polyak factor of the target critic
    init_alpha: float = 1.0        # initial entropy temperature (cleanrl/CORL: 1.0)
    target_entropy: float | None = None  # None: -act_dim (SAC paper's heuristic)
    learning_starts: int = 10_000  # uniform-random actions (and no updates) for the first steps
    buffer_size: int = 2_000_000   # a cap: the buffer never wraps (D4RL's held the whole run), sized to the run

    def __post_init__(self):
        for name in ("hidden_dim", "n_hidden", "batch_size", "buffer_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SACConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"SACConfig.gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"SACConfig.tau must be in (0, 1], got {self.tau}")
        if self.learning_starts < 0:
            raise ValueError(f"SACConfig.learning_starts must be >= 0, got {self.learning_starts}")


def mlp(in_dim: int, out_dim: int, hidden: int, n_hidden: int) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied as one batched matmul: ``(n, B, in) -> (n, B, out)``."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """Two Q networks in one ensemble: ``Q(obs (B, obs_dim), act (B, act_dim)) -> (2, B)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int, n: int = 2):
        super().__init__()
        layers, d = [], obs_dim + act_dim
        for _ in range(n_hidden):
            layers += [EnsembleLinear(n, d, hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers, EnsembleLinear(n, d, 1))
        self.n = n

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class Actor(nn.Module):
    """Tanh-Gaussian policy; ``sample(obs (B, obs_dim)) -> (action (B, act_dim), log_prob (B,))``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int, low, high):
        super().__init__()
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden, n_hidden)
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        # cleanrl's soft clamp keeps gradients flowing at the bounds
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self(obs)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)  # reparameterized
        y = torch.tanh(u)
        # log N(u; mean, std) minus the log-det of a = scale * tanh(u) + bias (numerically stable form)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u)) + torch.log(self.scale)).sum(-1)
        return y * self.scale + self.bias, log_prob

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self(obs)
        return torch.tanh(mean) * self.scale + self.bias


class SAC:
    """``update(batch) -> metrics`` (one gradient step of critic, actor and temperature) and ``act``.

    ``update`` returns 0-d tensors; ``float()`` the ones you need.
    """

    def __init__(self, config: SACConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        self.cfg, self.spec, self.device = config, spec, torch.device(device)
        c = config
        self.actor = Actor(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden, spec.act_low,
                           spec.act_high).to(self.device)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, c.hidden_dim, c.n_hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(spec.act_dim) if c.target_entropy is None else float(c.target_entropy)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obs, act, rew = batch["observations"], batch["actions"], batch["rewards"]
        next_obs, term = batch["next_observations"], batch["terminals"]
        alpha = self.log_alpha.exp().detach()

        # Critic: soft Bellman backup; only true terminations stop bootstrapping (not time limits).
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
            next_q = self.critic_target(next_obs, next_act).min(0).values - alpha * next_logp
            target = rew + self.cfg.gamma * (1.0 - term) * next_q
        q = self.critic(obs, act)
        critic_loss = ((q - target) ** 2).mean(1).sum()  # sum of the two MSEs, as cleanrl
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor: maximize min-Q + entropy.  The critic is frozen for this pass: backward then skips its
        # weight gradients (about a sixth of the update's work) and only flows through its input.
        self.critic.requires_grad_(False)
        new_act, logp = self.actor.sample(obs)
        q_pi = self.critic(obs, new_act).min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, self.cfg.tau)
        # 0-d tensors, not floats: reading a value every step would sync (and cost) for nothing
        return {"train/critic_loss": critic_loss.detach(), "train/actor_loss": actor_loss.detach(),
                "train/alpha": alpha, "train/q_mean": q.detach().mean(), "train/entropy": -logp.detach().mean()}

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """``obs (B, obs_dim)`` (numpy or tensor) -> actions ``(B, act_dim)`` numpy, in env units."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        a = self.actor.mode(o) if deterministic else self.actor.sample(o)[0]
        return a.cpu().numpy()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "config": asdict(self.cfg),
                "spec": self.spec.to_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.actor.load_state_dict(d["actor"])
        self.critic.load_state_dict(d["critic"])
        self.critic_target.load_state_dict(d["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(d["log_alpha"])
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        self.alpha_opt.load_state_dict(d["alpha_opt"])


class ReplayBuffer:
    """Append-only numpy buffer (D4RL kept the whole run, so no wrap-around).

    Stores ``observations, actions, rewards, next_observations, terminals, timeouts`` row by row;
    ``sample`` returns torch tensors for ``SAC.update``.  ``arrays(start, end)`` gives rows as the
    D4RL-format dict the generator writes (and checkpoints as npz chunks).
    """

    KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu"):
        self.capacity, self.size, self.device = capacity, 0, torch.device(device)
        self.data = {"observations": np.zeros((capacity, obs_dim), np.float32),
                     "actions": np.zeros((capacity, act_dim), np.float32),
                     "rewards": np.zeros(capacity, np.float32),
                     "next_observations": np.zeros((capacity, obs_dim), np.float32),
                     "terminals": np.zeros(capacity, np.float32),
                     "timeouts": np.zeros(capacity, np.float32)}

    def add(self, obs, act, rew, next_obs, terminal: bool, timeout: bool) -> None:
        if self.size >= self.capacity:
            raise RuntimeError(f"replay buffer full ({self.capacity} rows): raise SACConfig.buffer_size")
        i = self.size
        for k, v in zip(self.KEYS, (obs, act, rew, next_obs, terminal, timeout)):
            self.data[k][i] = v
        self.size += 1

    def extend(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["rewards"])
        if self.size + n > self.capacity:
            raise RuntimeError(f"replay buffer full ({self.capacity} rows): raise SACConfig.buffer_size")
        for k in self.KEYS:
            self.data[k][self.size:self.size + n] = arrays[k]
        self.size += n

    def arrays(self, start: int = 0, end: int | None = None) -> dict[str, np.ndarray]:
        end = self.size if end is None else end
        return {k: v[start:end].copy() for k, v in self.data.items()}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=batch_size)
        return {k: torch.from_numpy(self.data[k][idx]).to(self.device)
                for k in ("observations", "actions", "rewards", "next_observations", "terminals")}


__all__ = ["SACConfig", "SAC", "ReplayBuffer", "Actor", "TwinQ"]
