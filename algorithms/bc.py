"""Gaussian-MLP behaviour cloning: the floor of every table and the cheapest real algorithm.

An MLP (3 x 256 ReLU) maps the state to the mean of a diagonal Gaussian over actions; the log-std is
a learned state-independent vector (default) or a second head of the MLP.  Training maximizes the
log-likelihood of the dataset's actions with Adam (3e-4):

    L = -E_(s, a)~D log pi(a | s),   pi(. | s) = N(mu(s), diag(std^2))

With ``squash=True`` the Gaussian lives in a pre-tanh space and actions are
``a = mid + half * tanh(u)`` inside the bounds (the change of variables adds
``-sum log(half (1 - tanh(u)^2))`` to the log-density).  Acting is deterministic: the mean action,
clipped to the bounds (for ``squash``: ``mid + half * tanh(mu)``).

Batches: D4RL transitions (only ``observations`` and ``actions`` are used);
``act``: ``(B, 1, obs_dim) -> (B, 1, act_dim)``.

``data_kind="sequences"`` makes the same model the floor of the Push-T table: it reads windows
``obs (B, To, obs_dim)``, ``action (B, To - 1 + Ta, act_dim)``, maps the ``To`` flattened observations
to the ``Ta`` actions ``To-1 .. To-1+Ta-1`` (one Gaussian over the flattened chunk), with observations
and actions min-max normalized to [-1, 1] by the dataset's ranges (as Diffusion Policy does); ``act``:
``(B, To, obs_dim) -> (B, Ta, act_dim)``.  With To = Ta = 1 it is plain per-step BC on the windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from algorithms import EnvSpec
from algorithms.diffusion.nets import mlp
from algorithms.paper_scores import iql_table
from algorithms.normalization import RangeNormalized, range_normalizer
from algorithms.common import coerce_field_types

_SQUASH_EPS = 1e-6  # keeps atanh finite for dataset actions lying exactly on the bounds


@dataclass
class BCConfig:
    """Gaussian BC hyperparameters (the usual D4RL BC baseline: 3 x 256 MLP, Adam 3e-4)."""

    hidden_dim: int = 256
    """Width of the MLP's hidden layers."""
    n_hidden: int = 3
    """Number of hidden layers (ReLU)."""
    lr: float = 3e-4
    """Adam learning rate."""
    squash: bool = False
    """tanh-squash the Gaussian into the action bounds (False: plain Gaussian, mean clipped when acting)."""
    state_dependent_std: bool = False
    """Log-std from a second MLP head (False: one learned vector shared by all states)."""
    min_log_std: float = -5.0
    """Lower clamp of the log-std."""
    max_log_std: float = 2.0
    """Upper clamp of the log-std."""
    data_kind: str = "transitions"
    """"transitions" (D4RL batches, env units) or "sequences" (windows, [-1, 1]-normalized; Push-T)."""
    obs_horizon: int = 1
    """sequences only: To, the observations the MLP sees (flattened)."""
    action_horizon: int = 1
    """sequences only: Ta, the actions predicted and executed per call."""

    def __post_init__(self):
        coerce_field_types(self)
        if self.hidden_dim < 1 or self.n_hidden < 1:
            raise ValueError(f"BCConfig: hidden_dim and n_hidden must be >= 1, got {self.hidden_dim}, {self.n_hidden}")
        if not self.lr > 0:
            raise ValueError(f"BCConfig: lr must be > 0, got {self.lr}")
        if not self.min_log_std < self.max_log_std:
            raise ValueError(f"BCConfig: min_log_std ({self.min_log_std}) must be < max_log_std ({self.max_log_std})")
        if self.data_kind not in ("transitions", "sequences"):
            raise ValueError(f"BCConfig: data_kind must be 'transitions' or 'sequences', got {self.data_kind!r}")
        if self.obs_horizon < 1 or self.action_horizon < 1:
            raise ValueError(f"BCConfig: obs_horizon and action_horizon must be >= 1, got {self.obs_horizon}, "
                             f"{self.action_horizon}")


class BC(RangeNormalized):
    """Gaussian behaviour cloning: ``update(batch) -> metrics``, ``act(obs) -> actions``, plain-tensor state dicts."""

    data_kind = "transitions"
    paper_scores = (iql_table(0),)
    tiny_config = {"hidden_dim": 32}

    def __init__(self, config: BCConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        self.obs_dim = spec.obs_dim
        self.seq = c.data_kind == "sequences"
        self.data_kind = c.data_kind
        To, Ta = (c.obs_horizon, c.action_horizon) if self.seq else (1, 1)
        self.obs_horizon, self.action_horizon, self.pred_horizon = To, Ta, To - 1 + Ta
        in_dim, out_dim = To * spec.obs_dim, Ta * spec.act_dim  # (flattened) MLP input and Gaussian dimension
        n_out = out_dim * (2 if c.state_dependent_std else 1)
        self.net = mlp(in_dim, n_out, c.hidden_dim, c.n_hidden, act=nn.ReLU).to(self.device)
        self.log_std = nn.Parameter(torch.zeros(out_dim, device=self.device))  # unused if state-dependent
        params = list(self.net.parameters()) + ([] if c.state_dependent_std else [self.log_std])
        self.opt = torch.optim.Adam(params, lr=c.lr)
        if self.seq:  # the Gaussian lives in [-1, 1]-normalized action space, bounds = the dataset's range
            self.act_low = -torch.ones(out_dim, device=self.device)
            self.act_high = torch.ones(out_dim, device=self.device)
            self.normalizer = range_normalizer(spec, self.device)
        else:
            self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=self.device)
            self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=self.device)
        self.act_mid, self.act_half = (self.act_high + self.act_low) / 2, (self.act_high - self.act_low) / 2

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (B, obs_dim) -> (mean (B, act_dim), log_std (B or 1, act_dim))`` of the (pre-tanh) Gaussian."""
        out = self.net(obs)
        if self.cfg.state_dependent_std:
            mean, log_std = out.chunk(2, dim=-1)
        else:
            mean, log_std = out, self.log_std.unsqueeze(0)
        return mean, log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(actions | obs)``: ``obs (B, obs_dim)``, ``actions (B, act_dim)`` -> ``(B,)``."""
        return self._log_prob(obs, actions)[0]

    def _log_prob(self, obs, actions):
        """``(log pi(actions | obs) (B,), mean, log_std)`` (the last two for metrics)."""
        mean, log_std = self.dist_params(obs)
        if self.cfg.squash:
            y = ((actions - self.act_mid) / self.act_half).clamp(-1 + _SQUASH_EPS, 1 - _SQUASH_EPS)
            u = torch.atanh(y)
            log_det = torch.log(self.act_half * (1 - y.pow(2)))  # log |da/du| per dimension
        else:
            u, log_det = actions, torch.zeros((), device=actions.device)
        z = (u - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi) - log_det).sum(-1), mean, log_std

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: ``obs (B, obs_dim) -> (B, act_dim)`` inside the bounds."""
        return self._squash_or_clip(self.dist_params(obs)[0])

    def _squash_or_clip(self, mean: torch.Tensor) -> torch.Tensor:
        if self.cfg.squash:
            return self.act_mid + self.act_half * torch.tanh(mean)
        return torch.clamp(mean, self.act_low, self.act_high)

    def _flat_windows(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """sequences: ``obs (B, To, obs_dim)``, ``action (B, Tp, act_dim)`` -> normalized, flattened
        ``(B, To * obs_dim)`` and the executed actions ``To-1 .. To-1+Ta-1`` as ``(B, Ta * act_dim)``."""
        To, Ta = self.obs_horizon, self.action_horizon
        obs = batch["obs"].to(self.device, torch.float32)[:, :To]
        action = batch["action"].to(self.device, torch.float32)[:, To - 1:To - 1 + Ta]
        if obs.shape[1] != To or action.shape[1] != Ta:
            raise ValueError(f"BC sequences need obs (B, {To}, obs_dim) and action (B, >= {To - 1 + Ta}, act_dim); "
                             f"got {tuple(batch['obs'].shape)} and {tuple(batch['action'].shape)}")
        return self.normalize_obs(obs).flatten(1), self.normalize_action(action).flatten(1)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One Adam step on the mean negative log-likelihood of ``batch["actions"]`` given ``batch["observations"]``."""
        if self.seq:
            obs, actions = self._flat_windows(batch)
        else:
            obs = batch["observations"].to(self.device, torch.float32)
            actions = batch["actions"].to(self.device, torch.float32)
        logp, mean, log_std = self._log_prob(obs, actions)
        nll = -logp.mean()
        self.opt.zero_grad(set_to_none=True)
        nll.backward()
        self.opt.step()
        with torch.no_grad():  # the pre-step mean action's error: no second forward pass
            mse = (self._squash_or_clip(mean) - actions).pow(2).mean()
            values = torch.stack([nll.detach(), mse, log_std.mean()]).unbind()  # 0-d tensors: no host sync
        return dict(zip(["train/loss", "train/mse", "train/log_std"], values))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, 1, obs_dim) -> (B, 1, act_dim)``: the mean action, inside the action bounds.

        sequences: ``obs (B, To, obs_dim) -> (B, Ta, act_dim)`` (the last ``To`` observations are used)."""
        if not self.seq:
            s = torch.as_tensor(obs)[:, -1].to(self.device, torch.float32)
            return self.mean_action(s).unsqueeze(1)
        device = obs.device if torch.is_tensor(obs) else torch.device("cpu")
        obs = self.obs_window(obs)
        naction = self.mean_action(self.normalize_obs(obs).flatten(1))
        naction = naction.reshape(obs.shape[0], self.action_horizon, self.spec.act_dim)
        return self.unnormalize_action(naction).to(device)

    def state_dict(self) -> dict:
        return {**self.policy_state_dict(), "opt": self.opt.state_dict()}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (no optimizer state): for rollout workers."""
        d = {"net": self.net.state_dict(), "log_std": self.log_std.detach().clone()}
        if self.seq:
            d["normalizer"] = self.normalizer_state()
        return d

    def load_state_dict(self, d: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (without ``opt`` the optimizer is left as it is)."""
        self.net.load_state_dict(d["net"])
        with torch.no_grad():
            self.log_std.copy_(d["log_std"])
        if "opt" in d:
            self.opt.load_state_dict(d["opt"])
        self.load_normalizer(d)
