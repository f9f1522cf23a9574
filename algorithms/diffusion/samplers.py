"""Reverse-process samplers (DDPM ancestral, optionally differentiable; DDIM) and the DDPM training loss.

``denoise_fn(x_k: (B, ...), k: (B,) long) -> eps`` of the same shape as ``x_k``; the caller closes
over the conditioning (e.g. ``lambda x, k: net(x, k, obs)``).
``clip`` is None, a float bound ``c`` (clip to ``[-c, c]``), or a ``(low, high)`` pair of floats or
tensors broadcastable to ``x`` (e.g. per-dimension action bounds of shape ``(act_dim,)``).

The step index is the same for the whole batch at every step, so the schedule's coefficients are
used as Python scalars (``schedule.host``): no gathers and no host-device synchronisation.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F


def clip_to(x: torch.Tensor, clip) -> torch.Tensor:
    """Clamp ``x`` to ``clip``: None (no-op), a float bound, or a ``(low, high)`` pair (floats or tensors)."""
    if clip is None:
        return x
    if isinstance(clip, (int, float)):
        return x.clamp(-float(clip), float(clip))
    low, high = clip
    if not torch.is_tensor(low) or not torch.is_tensor(high):
        low = torch.as_tensor(low, dtype=x.dtype, device=x.device)
        high = torch.as_tensor(high, dtype=x.dtype, device=x.device)
    return torch.clamp(x, low, high)


def _noise_like(shape, device, dtype, generator):
    return torch.randn(shape, device=device, dtype=dtype, generator=generator)


def ddpm_noise(schedule, shape, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The K standard normals one ``ddpm_sample`` call draws, in its order: ``(K, *shape)`` = ``x_K``, then the
    noise of steps ``K-1 .. 1``.  Drawn up front, so the chain itself (``ddpm_chain``) is a pure function of
    its inputs: what ``torch.compile`` fuses into one graph (the draws stay eager: the same random stream)."""
    device = torch.device(device) if device is not None else schedule.betas.device
    return torch.stack([_noise_like(shape, device, torch.float32, generator) for _ in range(schedule.n_timesteps)])


def ddpm_chain(denoise_fn, schedule, noises: torch.Tensor, *, clip=None) -> torch.Tensor:
    """The K-step DDPM ancestral chain, exactly as Diffusion-QL's ``p_sample_loop`` + ``sample``, on given normals.

    ``noises (K, *shape)`` (``ddpm_noise``): ``x = noises[0]``; for ``k = K-1 .. 0``: ``eps = denoise_fn(x, k)``,
    ``x0_hat = clip(x0_from_eps(x, k, eps))``, ``x <- posterior_mean(x0_hat, x, k) + exp(0.5 log_var_k) z_k``
    with the next of ``noises`` as ``z_k`` and no noise at ``k = 0``; the result is clipped once more (a no-op
    in exact arithmetic, since the last posterior mean is ``x0_hat``).  Returns ``x_0`` of ``shape``.
    Differentiable (the caller chooses the grad mode).
    """
    h = schedule.host
    x = noises[0]
    for j, i in enumerate(reversed(range(schedule.n_timesteps))):
        k = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        eps = denoise_fn(x, k)
        x0 = clip_to(h["sqrt_recip_alphas_cumprod"][i] * x - h["sqrt_recipm1_alphas_cumprod"][i] * eps, clip)
        x = h["posterior_mean_coef1"][i] * x0 + h["posterior_mean_coef2"][i] * x
        if i > 0:
            x = x + math.exp(0.5 * h["posterior_log_variance_clipped"][i]) * noises[j + 1]
    return clip_to(x, clip)


def ddpm_sample(denoise_fn, schedule, shape, *, clip=None, generator: torch.Generator | None = None,
                device=None, grad: bool = False, x_T: torch.Tensor | None = None) -> torch.Tensor:
    """``ddpm_chain`` on freshly drawn normals (``ddpm_noise``; ``x_T`` given: only the K-1 step noises).

    ``grad=True`` keeps the autograd graph through every step (Diffusion-QL's actor loss needs it);
    ``grad=False`` runs under ``torch.no_grad``.  ``generator`` seeds the noise (a generator on ``device``).
    The draws come before the chain; a ``denoise_fn`` that draws no random numbers (every network here) sees
    the same stream as when each step drew its own noise.
    """
    device = torch.device(device) if device is not None else schedule.betas.device
    if x_T is None:
        noises = ddpm_noise(schedule, shape, device=device, generator=generator)
    else:
        noises = torch.stack([x_T.to(device, torch.float32)] + [_noise_like(shape, device, torch.float32, generator)
                                                               for _ in range(schedule.n_timesteps - 1)])
    with contextlib.nullcontext() if grad else torch.no_grad():
        return ddpm_chain(denoise_fn, schedule, noises, clip=clip)


DDIM_SPACINGS = ("leading", "linspace")


def ddim_timesteps(n_timesteps: int, n_steps: int, spacing: str = "linspace") -> list[int]:
    """``n_steps`` decreasing integer timesteps ending at ``0`` (``n_steps`` clamped to ``[1, K]``).

    * ``"leading"``: diffusers' ``DDIMScheduler.set_timesteps`` (0.11.1, ``steps_offset=0``), what Diffusion
      Policy's code samples with: ``r = K // n``, ``(n-1) r, ..., r, 0`` (K=100, n=8: 84, 72, ..., 12, 0); the
      chain starts below ``K-1`` unless ``n = K``.
    * ``"linspace"``: ``round(linspace(K-1, 0, n))`` (K=100, n=8: 99, 85, 71, ..., 14, 0), duplicates removed;
      the platform's rule before Diffusion Policy's ``ddim_spacing`` existed.
    """
    if spacing not in DDIM_SPACINGS:
        raise ValueError(f"spacing must be one of {DDIM_SPACINGS}, got {spacing!r}")
    n_steps = max(1, min(int(n_steps), int(n_timesteps)))
    if spacing == "leading":
        ratio = int(n_timesteps) // n_steps
        return [j * ratio for j in reversed(range(n_steps))]
    ts = np.round(np.linspace(n_timesteps - 1, 0, n_steps)).astype(int).tolist()
    return [t for j, t in enumerate(ts) if j == 0 or t != ts[j - 1]]


def ddim_sample(denoise_fn, schedule, shape, n_steps: int, *, eta: float = 0.0, clip=None,
                generator: torch.Generator | None = None, device=None,
                x_T: torch.Tensor | None = None, spacing: str = "linspace") -> torch.Tensor:
    """DDIM (Song et al., 2021) over the ``n_steps`` timesteps ``t_1 > ... > t_n = 0`` of ``ddim_timesteps(K,
    n_steps, spacing)``; no gradients.

    Step ``t -> t'``: ``x0_hat = clip(x0_from_eps(x, t, eps))``,
    ``x <- sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps + sigma z`` with
    ``sigma = eta sqrt((1 - abar_t') / (1 - abar_t) (1 - abar_t / abar_t'))`` (``eta = 0``: deterministic).
    The model's eps is used as is after clipping x0, as diffusers' ``DDIMScheduler`` does by default.
    The last step (``t = 0``) returns ``x0_hat``: diffusers' ``set_alpha_to_one=True`` (abar of the step after
    0 is 1, so sigma = 0 and ``x = x0_hat``).  Returns a tensor of ``shape``.
    """
    device = torch.device(device) if device is not None else schedule.betas.device
    abar = schedule.host["alphas_cumprod"]
    ts = ddim_timesteps(schedule.n_timesteps, n_steps, spacing)
    with torch.no_grad():
        x = _noise_like(shape, device, torch.float32, generator) if x_T is None else x_T.to(device)
        batch = shape[0]
        for j, t in enumerate(ts):
            k = torch.full((batch,), t, device=device, dtype=torch.long)
            eps = denoise_fn(x, k)
            x0 = clip_to((x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t]), clip)
            if j == len(ts) - 1:
                return x0
            a_t, a_prev = abar[t], abar[ts[j + 1]]
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _noise_like(shape, device, x.dtype, generator)
    return x  # unreachable: the loop returns at t = 0


def ddpm_loss(denoise_fn, schedule, x0: torch.Tensor, *, generator: torch.Generator | None = None,
              k: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The eps-prediction loss ``E_{k, eps} ||eps - denoise_fn(q_sample(x0, k, eps), k)||^2`` (mean over all entries).

    ``x0 (B, ...)``; ``k ~ U{0..K-1}`` per sample, as Diffusion-QL's ``Diffusion.loss``.  Returns a scalar.
    ``k (B,)`` and ``noise`` (like ``x0``) may be given (drawn by the caller, in this order); else drawn here.
    """
    if k is None:
        k = torch.randint(0, schedule.n_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    return F.mse_loss(denoise_fn(schedule.q_sample(x0, k, noise), k), noise)
