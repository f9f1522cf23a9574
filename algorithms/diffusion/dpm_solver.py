"""DPM-Solver++(2M) for discrete-time eps-prediction models (Lu et al., 2022), as EDP samples.

A diffusion model trained with K (e.g. 1000) steps is sampled in ``n_steps`` (about 15) solver
steps on the probability-flow ODE.  Work in log-SNR ``lambda_t = log(alpha_t / sigma_t)`` with
``alpha_t = sqrt(abar_t)`` and ``sigma_t = sqrt(1 - abar_t)``; the data-prediction ("++") form is
stable with x0 clipping.  The first step is first order (DDIM); later steps reuse the previous
x0 prediction for a second-order multistep update.
"""
from __future__ import annotations

import torch


def solver_timesteps(alphas_cumprod: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Decreasing integer timesteps from ``K-1`` to ``0``, uniform in log-SNR (DPM-Solver's "logSNR" skip).

    Uniform-in-time steps put one huge log-SNR jump next to the data and bias narrow modes (measured:
    a mode at 0.5 came out at 0.64 with 15 time-uniform steps on a K=1000 linear schedule, 0.504 log-SNR-uniform).
    At most ``n_steps + 1`` entries (fewer when several targets share a timestep).
    """
    abar = alphas_cumprod.double()
    lam = 0.5 * torch.log(abar) - 0.5 * torch.log1p(-abar)  # decreasing in t
    targets = torch.linspace(float(lam[-1]), float(lam[0]), max(1, n_steps) + 1, dtype=torch.float64,
                             device=lam.device)
    return (lam[None, :] - targets[:, None]).abs().argmin(dim=1).unique_consecutive()


def dpm_solver_sample(denoise_fn, schedule, shape, n_steps: int = 15, *, clip=None, generator=None,
                      device=None, x_T: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``shape`` with DPM-Solver++(2M), no gradients.

    ``denoise_fn(x_k: (B, ...), k: (B,) long) -> eps``; ``schedule`` is a ``DiffusionSchedule``
    (only its ``alphas_cumprod`` is used); ``clip`` is None, a float bound or a ``(low, high)`` pair
    applied to every x0 prediction.  Returns the final x0 prediction, shape ``shape``.
    """
    device = device or schedule.alphas_cumprod.device
    abar = schedule.alphas_cumprod.to(device=device, dtype=torch.float64)
    ts = solver_timesteps(abar, n_steps).tolist()
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    with torch.no_grad():
        x = torch.randn(shape, device=device, generator=generator) if x_T is None else x_T
        batch = shape[0]
        x0_prev, h_prev = None, None

        def x0_of(x, t):
            k = torch.full((batch,), int(t), device=device, dtype=torch.long)
            eps = denoise_fn(x, k)
            x0 = (x - sigma[t].float() * eps) / alpha[t].float()
            return _clip(x0, clip)

        for i in range(len(ts) - 1):
            s, t = ts[i], ts[i + 1]
            x0 = x0_of(x, s)
            h = (lam[t] - lam[s]).float()
            if x0_prev is None or h_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (sigma[t] / sigma[s]).float() * x - alpha[t].float() * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        return x0_of(x, ts[-1])


def _clip(x, clip):
    if clip is None:
        return x
    if isinstance(clip, (int, float)):
        return x.clamp(-clip, clip)
    low, high = clip
    return torch.maximum(torch.minimum(x, high), low)
