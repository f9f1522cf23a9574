"""[-1, 1] range normalization shared by the imitation policies (Diffusion Policy, IBC, LSTM-GMM, BET).

As Diffusion Policy's ``LinearNormalizer(mode="limits")``: observations and actions are mapped from the
dataset's ranges (the ``EnvSpec``'s ``obs_low/obs_high`` and ``act_min/act_max``, falling back to the
action bounds) to [-1, 1].  The state is a dict of plain tensors (``obs_scale``, ``obs_offset``,
``act_scale``, ``act_offset``, plus any key an algorithm adds, e.g. IBC's sampling box) saved in every
checkpoint under ``"normalizer"``, so a policy loaded for evaluation acts in the units it was trained in.
"""
from __future__ import annotations

import torch

from algorithms import EnvSpec
from algorithms.common import Algorithm


def minmax_normalizer(low, high, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, offset)`` with ``x_norm = x * scale + offset`` mapping [low, high] to [-1, 1].

    As the public ``LinearNormalizer(mode="limits")``: a dimension whose range is below 1e-4 is only
    shifted (``x - low``).  Without ranges (empty ``low``/``high``), the identity.
    """
    if not low or not high:
        return torch.ones(dim), torch.zeros(dim)
    low, high = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
    span = high - low
    flat = span < 1e-4
    scale = 2.0 / torch.where(flat, torch.full_like(span, 2.0), span)
    offset = torch.where(flat, -low, -1.0 - scale * low)
    return scale, offset


def action_range(spec: EnvSpec) -> tuple[list, list]:
    """The dataset's action range when known (``act_min/act_max``), else the action space's bounds."""
    return spec.act_min or spec.act_low, spec.act_max or spec.act_high


def range_normalizer(spec: EnvSpec, device: torch.device) -> dict[str, torch.Tensor]:
    """``{obs_scale, obs_offset (obs_dim,), act_scale, act_offset (act_dim,)}`` on ``device``."""
    obs_scale, obs_offset = minmax_normalizer(spec.obs_low, spec.obs_high, spec.obs_dim)
    act_scale, act_offset = minmax_normalizer(*action_range(spec), spec.act_dim)
    return {k: v.to(device) for k, v in dict(obs_scale=obs_scale, obs_offset=obs_offset,
                                             act_scale=act_scale, act_offset=act_offset).items()}


class RangeNormalized(Algorithm):
    """Mixin for a policy with ``self.normalizer`` (the dict above), ``self.device``, ``self.obs_dim`` and
    ``self.obs_horizon``: the three maps, the normalizer's state, and the check of ``act``'s input."""

    normalizer: dict[str, torch.Tensor]
    device: torch.device
    obs_dim: int
    obs_horizon: int

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs * self.normalizer["obs_scale"] + self.normalizer["obs_offset"]

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.normalizer["act_scale"] + self.normalizer["act_offset"]

    def unnormalize_action(self, naction: torch.Tensor) -> torch.Tensor:
        return (naction - self.normalizer["act_offset"]) / self.normalizer["act_scale"]

    def normalizer_state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.normalizer.items()}

    def load_normalizer(self, state: dict) -> None:
        """Take ``state["normalizer"]`` when the state has one (a policy-only state always does)."""
        if "normalizer" in state:
            self.normalizer = {k: torch.as_tensor(v, dtype=torch.float32).to(self.device).clone()
                               for k, v in state["normalizer"].items()}

    def obs_window(self, obs, full: bool = True) -> torch.Tensor:
        """``act``'s input ``(B, T, obs_dim)`` -> its last ``To`` steps ``(B, min(T, To), obs_dim)`` on the
        policy's device; ``full`` requires ``T >= To`` (policies that condition on exactly To steps)."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.ndim != 3 or obs.shape[2] != self.obs_dim or (full and obs.shape[1] < self.obs_horizon):
            raise ValueError(f"act expects obs (B, {self.obs_horizon}, {self.obs_dim}), got {tuple(obs.shape)}")
        return obs[:, -self.obs_horizon:]
