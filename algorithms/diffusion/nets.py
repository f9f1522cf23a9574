"""Networks shared by the diffusion methods (Diffusion-QL's noise MLP and its pieces)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of the diffusion step: ``k (B,) -> (B, dim)``.

    ``layout="dql"``: ``[sin, cos]``, frequencies ``exp(-log(10000) i / (dim/2 - 1))`` (Diffusion-QL's
    ``helpers.py``).  ``layout="edp"``: ``[cos, sin]``, frequencies ``exp(-log(10000) i / (dim/2))`` (EDP's
    ``sinusoidal_embedding`` in ``nets.py``, guided-diffusion's); ``i = 0 .. dim/2 - 1``.  ``k`` may be fractional
    (EDP's DPM-Solver feeds a continuous step).
    """

    LAYOUTS = ("dql", "edp")

    def __init__(self, dim: int, layout: str = "dql"):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, got {dim}")
        if layout not in self.LAYOUTS:
            raise ValueError(f"SinusoidalPosEmb layout must be one of {', '.join(self.LAYOUTS)}, got {layout!r}")
        self.dim, self.layout = dim, layout

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        denom = half if self.layout == "edp" else half - 1
        freqs = torch.exp(torch.arange(half, device=k.device, dtype=torch.float32) * (-math.log(10000) / denom))
        arg = k.float()[:, None] * freqs[None, :]
        parts = [arg.cos(), arg.sin()] if self.layout == "edp" else [arg.sin(), arg.cos()]
        return torch.cat(parts, dim=-1)


class _MishFunction(torch.autograd.Function):
    """``mish(x) = x tanh(softplus(x))`` with one exp: ``tanh(log(1 + w)) = n / (n + 2)``, ``w = e^x``,
    ``n = w (w + 2)``.

    Same values as ``F.mish`` to float32 round-off (~1e-6), about twice as fast forward and backward on
    CPU, where Mish is a third of a Diffusion-QL step.  ``x`` is clamped at 20 inside the exp
    (``tanh(softplus(20)) = 1`` in float32), so nothing overflows.
    """

    generate_vmap_rule = True  # torch.func (vmap / grad) support: algorithms/vectorized.py trains seeds in a vmap

    @staticmethod
    def forward(x):
        w = x.clamp(max=20.0).exp_()
        n = (w + 2).mul_(w)
        t = n.div_(n + 2)                                   # tanh(softplus(x))
        return x * t, t                                     # t: an output so that backward can reuse it

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[0], output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_t):
        x, t = ctx.saved_tensors
        # d mish / dx = t + x sigmoid(x) (1 - t^2)
        return torch.sigmoid(x).mul_(x).mul_((t * t).neg_().add_(1)).add_(t).mul_(grad)


def fast_mish(x: torch.Tensor) -> torch.Tensor:
    """``mish(x)`` by ``_MishFunction`` (same values as ``F.mish`` to ~1e-6, about twice as fast on CPU)."""
    return _MishFunction.apply(x)[0]


class FastMish(nn.Module):
    """Drop-in ``nn.Mish`` (no parameters, same state dict) computed by ``_MishFunction``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_mish(x)


def mlp(in_dim: int, out_dim: int, hidden: int = 256, n_hidden: int = 3,
        act: type[nn.Module] = FastMish) -> nn.Sequential:
    """``n_hidden`` x (Linear ``hidden`` + ``act``) then a linear output: ``(B, in_dim) -> (B, out_dim)``."""
    layers, d = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


class NoiseMLP(nn.Module):
    """Diffusion-QL's noise-prediction MLP (``agents/model.py``; parameter names match it).

    Input ``concat[x_k, t_emb(k), s]``; ``t_emb``: sinusoidal ``t_dim`` -> Linear ``2 t_dim`` -> Mish ->
    Linear ``t_dim``; then ``n_hidden`` x ``hidden`` Mish layers and a linear output (Mish = ``FastMish``).
    ``time_layout``: the sinusoid's layout (``SinusoidalPosEmb``: "dql" or "edp").
    ``forward(x (B, act_dim), k (B,) long or float, s (B, obs_dim)) -> eps (B, act_dim)``.
    144,438 parameters for obs_dim 17, act_dim 6 at the defaults.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, t_dim: int = 16, n_hidden: int = 3,
                 time_layout: str = "dql"):
        super().__init__()
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(t_dim, time_layout), nn.Linear(t_dim, t_dim * 2), FastMish(),
                                      nn.Linear(t_dim * 2, t_dim))
        layers, d = [], obs_dim + act_dim + t_dim
        for _ in range(n_hidden):
            layers += [nn.Linear(d, hidden), FastMish()]
            d = hidden
        self.mid_layer = nn.Sequential(*layers)
        self.final_layer = nn.Linear(d, act_dim)

    def forward(self, x: torch.Tensor, k: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.mid_layer(torch.cat([x, self.time_mlp(k), s], dim=-1)))
