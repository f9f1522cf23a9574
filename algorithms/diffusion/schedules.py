"""Noise schedules and the closed-form pieces of a K-step DDPM (Ho et al., 2020).

Forward process ``q(x_k | x_0) = N(sqrt(abar_k) x_0, (1 - abar_k) I)`` for ``k = 0 .. K-1``
(index 0 is the least noisy step, ``abar_k = prod_{j<=k} (1 - beta_j)``).  Reverse step: predict
eps, form ``x0_hat``, take the posterior ``q(x_{k-1} | x_k, x0_hat)``.  The tables and formulas are
those of Diffusion-QL's ``agents/diffusion.py`` (itself from diffuser / DDPM).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

BETA_SCHEDULES = ("linear", "linear_scaled", "cosine", "vp")


def make_betas(kind: str, n_timesteps: int) -> torch.Tensor:
    """Betas ``(K,)`` float32 of a named schedule.

    * ``linear``: DDPM's ``linspace(1e-4, 2e-2, K)`` (Diffusion-QL's ``linear_beta_schedule``; diffusers').
      Made for K = 1000: at K = 5 the last step keeps abar_K = 0.95, sampling then starts from N(0, I) at a
      step whose marginal is far from it.
    * ``linear_scaled``: EDP's (guided-diffusion's) linear schedule, ``linspace(1e-4, 2e-2, K) * 1000 / K``
      (abar_K < 1e-4 at every K > 20).  At K <= 20 the rescaled betas reach 1 (EDP's code fails there) and
      capping them at 0.999 leaves a degenerate chain (at K = 5: betas 0.02, 0.999, 0.999, 0.999, 0.999; EDP
      scored -57.9 with it on generated Pendulum at 3000 steps), so at K <= 20 it is the ``vp`` schedule
      (37.2 at K = 5 in the same run).
    * ``cosine``: squared cosine (Nichol & Dhariwal 2021, s = 0.008, betas clipped at 0.999), the same
      as diffusers' ``squaredcos_cap_v2`` that Diffusion Policy uses:
      ``beta_i = min(1 - abar(i+1/K) / abar(i/K), 0.999)``, ``abar(t) = cos((t + s) / (1 + s) * pi/2)^2``.
    * ``vp``: Diffusion-QL's discretized VP-SDE (``vp_beta_schedule``), ``b_min = 0.1``, ``b_max = 10``:
      ``alpha_t = exp(-b_min / T - 0.5 (b_max - b_min)(2t - 1) / T^2)`` for ``t = 1..T``, ``beta_t = 1 - alpha_t``.
    """
    K = int(n_timesteps)
    if K < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
    if kind == "linear":
        betas = np.linspace(1e-4, 2e-2, K, dtype=np.float64)
    elif kind == "linear_scaled" and K > 20:
        betas = np.linspace(1e-4, 2e-2, K, dtype=np.float64) * (1000.0 / K)
    elif kind == "cosine":
        def abar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - abar((i + 1) / K) / abar(i / K), 0.999) for i in range(K)], dtype=np.float64)
    elif kind in ("vp", "linear_scaled"):  # linear_scaled at K <= 20: vp (see above)
        t = np.arange(1, K + 1, dtype=np.float64)
        b_min, b_max = 0.1, 10.0
        betas = 1 - np.exp(-b_min / K - 0.5 * (b_max - b_min) * (2 * t - 1) / K**2)
    else:
        raise ValueError(f"unknown beta schedule {kind!r}; use one of {', '.join(BETA_SCHEDULES)}")
    return torch.tensor(betas, dtype=torch.float32)


class DiffusionSchedule(nn.Module):
    """All per-step tables of a K-step DDPM, each ``(K,)`` float32, registered as (non-persistent) buffers.

    Buffers: ``betas, alphas, alphas_cumprod, alphas_cumprod_prev, sqrt_alphas_cumprod,
    sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod,
    posterior_variance, posterior_log_variance_clipped, posterior_mean_coef1, posterior_mean_coef2``.
    They are derived from ``(n_timesteps, kind)`` alone, so they stay out of ``state_dict``.

    The tables are computed in float64 from the float32 betas and stored as float32.  ``host`` holds
    the same tables as Python floats: samplers use them as scalars (the step index is the same for
    the whole batch), which saves a gather per coefficient and never syncs with a GPU.
    """

    def __init__(self, n_timesteps: int, kind: str = "vp"):
        super().__init__()
        self.n_timesteps, self.kind = int(n_timesteps), kind
        betas = make_betas(kind, n_timesteps).double()
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        tables = {
            "betas": betas, "alphas": alphas, "alphas_cumprod": abar, "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / abar).sqrt(), "sqrt_recipm1_alphas_cumprod": (1 / abar - 1).sqrt(),
            "posterior_variance": post_var,
            # the posterior variance is 0 at k = 0: clip before the log (as DDPM and Diffusion-QL do)
            "posterior_log_variance_clipped": torch.log(post_var.clamp(min=1e-20)),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
        }
        self.host: dict[str, list[float]] = {name: value.tolist() for name, value in tables.items()}
        for name, value in tables.items():
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"n_timesteps={self.n_timesteps}, kind={self.kind!r}"

    @staticmethod
    def _at(table: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[k]`` for ``k (B,)``, reshaped to ``(B, 1, ...)`` to broadcast against ``like (B, ...)``."""
        return table[k].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x0 (B, ...)``, ``k (B,)`` long in ``[0, K)``, ``noise`` like x0 -> ``x_k`` like x0.

        ``x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise``.
        """
        return (self._at(self.sqrt_alphas_cumprod, k, x0) * x0
                + self._at(self.sqrt_one_minus_alphas_cumprod, k, x0) * noise)

    def x0_from_eps(self, xk: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``(x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k)``, in DDPM's form ``sqrt(1/abar) x_k - sqrt(1/abar - 1) eps``.

        ``xk (B, ...)``, ``k (B,)`` long, ``eps`` like xk -> ``x0_hat`` like xk.
        """
        return (self._at(self.sqrt_recip_alphas_cumprod, k, xk) * xk
                - self._at(self.sqrt_recipm1_alphas_cumprod, k, xk) * eps)

    def q_posterior(self, x0: torch.Tensor, xk: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(B, ...)`` and clipped log-variance ``(B, 1, ...)`` of ``q(x_{k-1} | x_k, x0)``."""
        mean = self._at(self.posterior_mean_coef1, k, xk) * x0 + self._at(self.posterior_mean_coef2, k, xk) * xk
        return mean, self._at(self.posterior_log_variance_clipped, k, xk)
