"""Diffusion Policy (Chi et al., RSS 2023), low-dimensional observations, in one file.

"Diffusion Policy: Visuomotor Policy Learning via Action Diffusion".  Faithful to the paper's
public code for the Push-T low-dim task (``conditional_unet1d.py``, ``transformer_for_diffusion.py``,
``diffusion_unet_lowdim_policy.py``, ``diffusion_transformer_lowdim_policy.py`` and the
``train_diffusion_{unet,transformer}_lowdim*`` configs):

* the policy sees the last ``To`` observations and denoises a chunk of ``Tp`` actions (the action
  at the same step as the first observation and the ``Tp - 1`` after it); ``act`` returns the
  ``Ta`` actions ``To-1 .. To-1+Ta-1`` of the chunk, which the env runs before replanning
  (receding horizon);
* DDPM, 100 steps, squared-cosine betas, epsilon prediction, predicted x0 clipped to [-1, 1];
  sampling with the 100-step DDPM chain (the Push-T config) or DDIM with fewer steps;
* observations and actions min-max normalized to [-1, 1] with the dataset's ranges;
* two noise networks: a 1-D temporal conditional U-Net (FiLM on observation features + diffusion
  step embedding) and a transformer (causal self-attention over action tokens, cross-attention
  to [time token, observation tokens]);
* AdamW, cosine learning rate with linear warm-up, EMA of the weights (power 0.75, max 0.9999),
  and the EMA network is the one that acts.

Deviations from the public code are named config fields, off by default: ``ddim_spacing="linspace"`` runs
``sampler="ddim"`` on the platform's former timesteps ``round(linspace(K-1, 0, n))`` (8 steps: 99, 85, 71, 57,
42, 28, 14, 0) instead of diffusers' DDIMScheduler's ``(n-1) K//n, ..., K//n, 0`` (84, 72, ..., 12, 0; the
default ``"leading"``); from the same noise the chunks then differ by up to 1.7 in normalized units. Known
differences that are not switches: the schedule tables are computed in float64 where diffusers keeps them in
float32, so the 100-step DDPM chain from the same noise differs from the public one by about 3e-5 in
normalized units (7e-7 once diffusers' tables are float64 too: the gap is their float32 rounding, which
the first steps amplify by up to ``1 / sqrt(abar_99)``, about 2000); the cosine learning rate stays at 0
past ``max_steps`` (diffusers' would rise again); batches are drawn with replacement (the public code
shuffles epochs: ``SequenceSampler.epoch`` does that). Everything else (networks, loss, AdamW groups,
learning rate, EMA, DDPM and DDIM sampling) matches the public code at float32 round-off:
``benchmarks/twins_dp.py``, results in ``benchmarks/results/twins_dp.md``. No Ray in here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.common import lr_factor
from algorithms.diffusion.nets import SinusoidalPosEmb
from algorithms.diffusion.dpm_solver import sampler_problem
from algorithms.diffusion.samplers import DDIM_SPACINGS, ddim_sample, ddpm_sample
from algorithms.diffusion.schedules import DiffusionSchedule
from algorithms.normalization import RangeNormalized, range_normalizer
from algorithms.paper_scores import pusht_table

BACKBONES = ("cnn", "transformer")
# Paper values that differ between the two backbones (train_diffusion_unet_lowdim_workspace.yaml,
# train_diffusion_transformer_lowdim_pusht_workspace.yaml).  A config field left at None takes these.
_BACKBONE_DEFAULTS = {
    "cnn": dict(weight_decay=1e-6, betas=(0.95, 0.999), lr_warmup_steps=500, max_steps=5000 * 42),
    "transformer": dict(weight_decay=1e-1, betas=(0.9, 0.95), lr_warmup_steps=1000, max_steps=8000 * 42),
}


@dataclass
class DiffusionPolicyConfig:
    """Hyper-parameters; defaults are the paper's Push-T low-dim settings (public code configs)."""

    backbone: str = "cnn"               # "cnn" (1-D temporal U-Net) or "transformer"; paper: both, CNN the default
    # --- horizons (paper Push-T: To=2, Tp=16, Ta=8)
    obs_horizon: int = 2                # To, observations the policy conditions on (n_obs_steps)
    pred_horizon: int = 16              # Tp, actions denoised per chunk (horizon)
    action_horizon: int = 8             # Ta, actions executed before replanning (n_action_steps)
    # --- diffusion (paper: DDPMScheduler(100, squaredcos_cap_v2, epsilon, clip_sample=True, fixed_small))
    n_timesteps: int = 100              # K, training diffusion steps
    beta_schedule: str = "cosine"       # "cosine" = squared-cosine (squaredcos_cap_v2); also "linear", "vp"
    clip_sample: float | None = 1.0     # clip predicted x0 to [-c, c] while sampling (normalized units); None: off
    sampler: str = "ddpm"               # "ddpm" (paper's Push-T low-dim: 100-step DDPM) or "ddim"
    n_inference_steps: int = 100        # denoising steps at act(); DDPM must use n_timesteps; paper text: 8-16 DDIM
    ddim_eta: float = 0.0               # DDIM stochasticity (0: deterministic DDIM)
    ddim_spacing: str = "leading"       # DDIM timesteps: "leading" = the authors' (diffusers DDIMScheduler:
                                        # (n-1) K//n, ..., K//n, 0); "linspace" = the platform's rule before this
                                        # field (round(linspace(K-1, 0, n))), which results without the field ran
    # --- CNN backbone (ConditionalUnet1D)
    down_dims: tuple[int, ...] = (256, 512, 1024)  # U-Net channel widths per level
    kernel_size: int = 5                # temporal conv kernel
    n_groups: int = 8                   # GroupNorm groups
    diffusion_step_embed_dim: int = 256  # sinusoidal step embedding -> MLP(4x) -> this width
    cond_predict_scale: bool = True     # FiLM with scale and bias (True in the paper's configs); False: bias only
    # --- transformer backbone (TransformerForDiffusion)
    n_layer: int = 8                    # decoder layers
    n_head: int = 4                     # attention heads
    n_emb: int = 256                    # token width
    p_drop_emb: float = 0.0             # dropout on token + position embeddings
    p_drop_attn: float = 0.01           # dropout inside attention/MLP blocks (Push-T: 0.01; other tasks 0.3)
    causal_attn: bool = True            # causal self-attention over action tokens; obs token i visible from action i
    n_cond_layers: int = 0              # 0: MLP over [time, obs] tokens as memory (paper); >0: transformer encoder
    # --- optimization (paper: AdamW lr 1e-4, cosine schedule with warm-up, batch 256)
    lr: float = 1e-4
    weight_decay: float | None = None   # None -> CNN 1e-6 (all params); transformer 0.1 (Linear/attention weights only)
    betas: tuple[float, float] | None = None  # None -> CNN (0.95, 0.999); transformer (0.9, 0.95)
    adam_eps: float = 1e-8
    lr_schedule: str = "cosine"         # "cosine" (paper) or "constant" (after warm-up)
    lr_warmup_steps: int | None = None  # None -> CNN 500, transformer 1000
    max_steps: int | None = None        # length of the cosine schedule; None -> paper budget: 5000 (CNN) / 8000
                                        # (transformer) epochs x 42 batches.  Set it to the run's step budget.
    grad_clip_norm: float | None = None  # not in the paper (None); clip the gradient norm if set
    # --- speed (not in the paper: the public code trains in float32)
    bf16_autocast: bool = False         # the network's forward/backward under torch.autocast(bfloat16) in update;
                                        # parameters, AdamW state, EMA and the loss stay float32; acting unchanged
    # --- EMA (paper: EMAModel(update_after_step=0, inv_gamma=1, power=0.75, min 0, max 0.9999))
    use_ema: bool = True                # act with the EMA weights (paper: yes)
    ema_power: float = 0.75
    ema_inv_gamma: float = 1.0
    ema_min: float = 0.0
    ema_max: float = 0.9999
    ema_update_after_step: int = 0

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        for name, value in _BACKBONE_DEFAULTS[self.backbone].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.down_dims = tuple(int(d) for d in self.down_dims)
        self.betas = tuple(float(b) for b in self.betas)
        To, Tp, Ta = self.obs_horizon, self.pred_horizon, self.action_horizon
        if not (To >= 1 and Ta >= 1 and Tp >= 1):
            raise ValueError(f"horizons must be >= 1, got obs_horizon={To}, pred_horizon={Tp}, action_horizon={Ta}")
        if To - 1 + Ta > Tp:
            raise ValueError(f"the executed actions To-1 .. To-1+Ta-1 must lie in the chunk: need obs_horizon - 1 + "
                             f"action_horizon <= pred_horizon, got {To} - 1 + {Ta} > {Tp}")
        if self.n_timesteps < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {self.n_timesteps}")
        if self.beta_schedule not in ("cosine", "linear", "vp"):
            raise ValueError(f"beta_schedule must be 'cosine', 'linear' or 'vp', got {self.beta_schedule!r}")
        if self.clip_sample is not None and self.clip_sample <= 0:
            raise ValueError(f"clip_sample must be > 0 or None, got {self.clip_sample}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if not 1 <= self.n_inference_steps <= self.n_timesteps:
            raise ValueError(f"n_inference_steps must be in [1, n_timesteps={self.n_timesteps}], "
                             f"got {self.n_inference_steps}")
        if self.sampler == "ddpm" and self.n_inference_steps != self.n_timesteps:
            raise ValueError(f"sampler 'ddpm' runs the full chain: n_inference_steps must equal n_timesteps "
                             f"({self.n_timesteps}), got {self.n_inference_steps}; use sampler 'ddim' for fewer steps")
        problem = sampler_problem(self.sampler, self.n_timesteps, self.n_inference_steps)
        if problem is not None:
            raise ValueError(f"sampler {self.sampler!r} with n_inference_steps={self.n_inference_steps}: {problem}")
        if self.ddim_spacing not in DDIM_SPACINGS:
            raise ValueError(f"ddim_spacing must be one of {DDIM_SPACINGS}, got {self.ddim_spacing!r}")
        if self.ddim_eta < 0:
            raise ValueError(f"ddim_eta must be >= 0, got {self.ddim_eta}")
        if self.backbone == "cnn":
            if not self.down_dims or any(d <= 0 for d in self.down_dims):
                raise ValueError(f"down_dims must be positive widths, got {self.down_dims}")
            bad = [d for d in self.down_dims if d % self.n_groups]
            if bad:
                raise ValueError(f"every down_dims entry must be divisible by n_groups={self.n_groups}, got {bad}")
            factor = 2 ** (len(self.down_dims) - 1)  # the U-Net halves the time axis at every level but the last
            if Tp % factor:
                raise ValueError(f"pred_horizon={Tp} must be divisible by 2**(len(down_dims)-1)={factor}")
            if self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
            if self.diffusion_step_embed_dim < 4 or self.diffusion_step_embed_dim % 2:
                raise ValueError(f"diffusion_step_embed_dim must be even and >= 4, got {self.diffusion_step_embed_dim}")
        else:
            if self.n_layer < 1 or self.n_head < 1 or self.n_emb % self.n_head or self.n_emb % 2:
                raise ValueError("need n_layer >= 1 and an even n_emb divisible by n_head, "
                                 f"got n_layer={self.n_layer}, "
                                 f"n_emb={self.n_emb}, n_head={self.n_head}")
            for name in ("p_drop_emb", "p_drop_attn"):
                if not 0.0 <= getattr(self, name) < 1.0:
                    raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
            if self.n_cond_layers < 0:
                raise ValueError(f"n_cond_layers must be >= 0, got {self.n_cond_layers}")
        if self.lr <= 0 or self.weight_decay < 0 or self.adam_eps <= 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, adam_eps > 0; got {self.lr}, {self.weight_decay}, "
                             f"{self.adam_eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.lr_warmup_steps < 0 or self.max_steps < 1:
            raise ValueError(f"need lr_warmup_steps >= 0 and max_steps >= 1, got {self.lr_warmup_steps}, "
                             f"{self.max_steps}")
        if not isinstance(self.bf16_autocast, bool):
            raise ValueError(f"bf16_autocast must be true or false, got {self.bf16_autocast!r}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")
        if not (self.ema_power > 0 and self.ema_inv_gamma > 0 and 0.0 <= self.ema_min <= self.ema_max <= 1.0
                and self.ema_update_after_step >= 0):
            raise ValueError("EMA needs ema_power > 0, ema_inv_gamma > 0, 0 <= ema_min <= ema_max <= 1, "
                             "ema_update_after_step >= 0")


# ============================================================================ CNN: ConditionalUnet1D


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish.  ``(B, C_in, T) -> (B, C_out, T)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, c_out), nn.Mish())

    def forward(self, x):
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; between them FiLM from the condition: ``out = scale(c) * h + bias(c)``.

    ``x (B, C_in, T)``, ``cond (B, cond_dim)`` -> ``(B, C_out, T)``.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int,
                 cond_predict_scale: bool):
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(c_in, c_out, kernel_size, n_groups),
                                     Conv1dBlock(c_out, c_out, kernel_size, n_groups)])
        self.out_channels = c_out
        self.cond_predict_scale = cond_predict_scale
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, c_out * 2 if cond_predict_scale else c_out))
        self.residual_conv = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, cond):
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond).unsqueeze(-1)  # (B, 2*C_out or C_out, 1)
        if self.cond_predict_scale:
            scale, bias = embed[:, :self.out_channels], embed[:, self.out_channels:]
            out = scale * out + bias
        else:
            out = out + embed
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """1-D temporal U-Net over the action chunk, conditioned globally on (step embedding, obs features).

    ``forward(sample (B, Tp, act_dim), k (B,), global_cond (B, To * obs_dim)) -> (B, Tp, act_dim)``.
    Down path: per level two residual blocks then a stride-2 conv (not after the last level); two
    mid blocks; up path: concatenate the skip, two residual blocks, transposed conv to upsample.
    """

    def __init__(self, input_dim: int, global_cond_dim: int, diffusion_step_embed_dim: int = 256,
                 down_dims=(256, 512, 1024), kernel_size: int = 5, n_groups: int = 8, cond_predict_scale: bool = True):
        super().__init__()
        all_dims = [input_dim] + list(down_dims)
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(),
                                                    nn.Linear(dsed * 4, dsed))
        cond_dim = dsed + global_cond_dim

        def res(c_in, c_out):
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups, cond_predict_scale)

        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        self.down_modules = nn.ModuleList([
            nn.ModuleList([res(d_in, d_out), res(d_out, d_out),
                           nn.Conv1d(d_out, d_out, 3, 2, 1) if i < len(in_out) - 1 else nn.Identity()])
            for i, (d_in, d_out) in enumerate(in_out)])
        mid = all_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid, mid), res(mid, mid)])
        # As in the public code, every up level upsamples (there is one level fewer than down levels).
        self.up_modules = nn.ModuleList([
            nn.ModuleList([res(d_out * 2, d_in), res(d_in, d_in), nn.ConvTranspose1d(d_in, d_in, 4, 2, 1)])
            for d_in, d_out in reversed(in_out[1:])])
        start = down_dims[0]
        self.final_conv = nn.Sequential(Conv1dBlock(start, start, kernel_size, n_groups),
                                        nn.Conv1d(start, input_dim, 1))

    def forward(self, sample, k, global_cond):
        x = sample.transpose(1, 2)  # (B, act_dim, Tp): convolve over time
        cond = torch.cat([self.diffusion_step_encoder(k), global_cond], dim=-1)
        skips = []
        for res1, res2, down in self.down_modules:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for m in self.mid_modules:
            x = m(x, cond)
        for res1, res2, up in self.up_modules:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final_conv(x).transpose(1, 2)


# ============================================================================ Transformer: TransformerForDiffusion


class TransformerForDiffusion(nn.Module):
    """minGPT-style decoder over action tokens with [time, obs_1..obs_To] tokens as memory.

    ``forward(sample (B, Tp, act_dim), k (B,), cond (B, To, obs_dim)) -> (B, Tp, act_dim)``.
    Memory: sinusoidal step embedding (one token) and a linear embedding of each observation, plus
    learned positions, through an MLP (or a small encoder).  Decoder: pre-LN layers with causal
    self-attention (action token t sees actions <= t) and cross-attention in which action token t
    sees the time token and observation tokens <= t.
    """

    def __init__(self, input_dim: int, output_dim: int, horizon: int, n_obs_steps: int, cond_dim: int,
                 n_layer: int = 8, n_head: int = 4, n_emb: int = 256, p_drop_emb: float = 0.0,
                 p_drop_attn: float = 0.01, causal_attn: bool = True, n_cond_layers: int = 0):
        super().__init__()
        T, T_cond = horizon, 1 + n_obs_steps
        self.input_emb = nn.Linear(input_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, T, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        self.time_emb = SinusoidalPosEmb(n_emb)
        self.cond_obs_emb = nn.Linear(cond_dim, n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, T_cond, n_emb))
        if n_cond_layers > 0:
            layer = nn.TransformerEncoderLayer(n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, n_cond_layers, enable_nested_tensor=False)
        else:
            self.encoder = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        layer = nn.TransformerDecoderLayer(n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu",
                                           batch_first=True, norm_first=True)  # pre-LN: "important for stability"
        self.decoder = nn.TransformerDecoder(layer, n_layer)
        if causal_attn:
            # Additive masks (0 = attend, -inf = blocked), as in the public code.
            t = torch.arange(T)
            self.register_buffer("mask", torch.zeros(T, T).masked_fill(t[None, :] > t[:, None], float("-inf")),
                                 persistent=False)
            s = torch.arange(T_cond)
            # memory position 0 is the time token; obs token s (1-based) is visible from action token >= s-1
            self.register_buffer("memory_mask",
                                 torch.zeros(T, T_cond).masked_fill(~(t[:, None] >= s[None, :] - 1), float("-inf")),
                                 persistent=False)
        else:
            self.mask = self.memory_mask = None
        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, output_dim)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, mean=0.0, std=0.02)
        nn.init.normal_(self.cond_pos_emb, mean=0.0, std=0.02)

    @staticmethod
    def _init_weights(module):
        # GPT init, as the public code: N(0, 0.02) weights, zero biases, unit LayerNorm.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(module, name) is not None:
                    nn.init.normal_(getattr(module, name), mean=0.0, std=0.02)
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(module, name) is not None:
                    nn.init.zeros_(getattr(module, name))
        elif isinstance(module, nn.LayerNorm):
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.weight)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on Linear and attention projection weights only; none on biases, LayerNorms, positions."""
        decay = set()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                decay.add(id(m.weight))
            elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
                decay.add(id(m.in_proj_weight))
        params = list(self.parameters())
        return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
                {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]

    def forward(self, sample, k, cond):
        memory = torch.cat([self.time_emb(k).unsqueeze(1), self.cond_obs_emb(cond)], dim=1)  # (B, 1+To, n_emb)
        memory = self.encoder(self.drop(memory + self.cond_pos_emb[:, :memory.shape[1]]))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, :sample.shape[1]])  # (B, Tp, n_emb)
        x = self.decoder(tgt=x, memory=memory, tgt_mask=self.mask, memory_mask=self.memory_mask)
        return self.head(self.ln_f(x))


# ============================================================================ helpers


def ema_decay(step: int, power: float, inv_gamma: float, min_value: float, max_value: float,
              update_after_step: int = 0) -> float:
    """The public ``EMAModel.get_decay``: ``1 - (1 + s / inv_gamma) ** -power`` with ``s = step - after - 1``."""
    s = max(0, step - update_after_step - 1)
    if s <= 0:
        return 0.0
    return max(min_value, min(1.0 - (1.0 + s / inv_gamma) ** -power, max_value))


# ============================================================================ the algorithm


class DiffusionPolicy(RangeNormalized):
    """Diffusion Policy on low-dim observations.  ``data_kind = "sequences"``.

    ``update(batch)``: ``obs (B, To, obs_dim)``, ``action (B, Tp, act_dim)`` in env units -> metrics.
    ``act(obs)``: ``(B, To, obs_dim)`` env units -> ``(B, Ta, act_dim)`` env units.
    """

    data_kind = "sequences"
    data_parallel = True
    paper_scores = (pusht_table("DP-Transformer", backbone="transformer"), pusht_table("DP-CNN"))  # by backbone
    # the released Push-T configs' 3000-4500 epochs
    paper_budget = {"pusht": "about 210k (U-Net) / 336k (transformer) optimizer steps"}
    tiny_config = {"backbone": "cnn", "down_dims": (16, 32), "diffusion_step_embed_dim": 16, "obs_horizon": 2,
                   "pred_horizon": 4, "action_horizon": 2, "n_timesteps": 10, "n_inference_steps": 10}

    def __init__(self, config: DiffusionPolicyConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        self.cfg = c = config
        self.spec = spec
        self.device = torch.device(device)
        self.obs_horizon, self.pred_horizon, self.action_horizon = c.obs_horizon, c.pred_horizon, c.action_horizon
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim

        if c.backbone == "cnn":
            # Observations condition globally: the To observation vectors flattened (obs_as_global_cond).
            self.model = ConditionalUnet1D(spec.act_dim, c.obs_horizon * spec.obs_dim, c.diffusion_step_embed_dim,
                                           c.down_dims, c.kernel_size, c.n_groups, c.cond_predict_scale)
            groups = [{"params": list(self.model.parameters()), "weight_decay": c.weight_decay}]
        else:
            self.model = TransformerForDiffusion(spec.act_dim, spec.act_dim, c.pred_horizon, c.obs_horizon,
                                                 spec.obs_dim, c.n_layer, c.n_head, c.n_emb, c.p_drop_emb,
                                                 c.p_drop_attn, c.causal_attn, c.n_cond_layers)
            groups = self.model.optim_groups(c.weight_decay)
        self.model.to(self.device)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False) if c.use_ema else None
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, betas=c.betas, eps=c.adam_eps)
        self.schedule = DiffusionSchedule(c.n_timesteps, c.beta_schedule).to(self.device)
        self.step = 0
        # train.data_parallel: the (DDP-wrapped) module the loss runs through, and this replica's rows
        self.train_model, self.rank, self.world = self.model, 0, 1

        # [-1, 1] normalization with the dataset's ranges (state_dict keeps them, as plain tensors).
        self.normalizer = range_normalizer(spec, self.device)

    def _eps(self, model: nn.Module, x_k, k, nobs):
        """Noise prediction ``(B, Tp, act_dim)`` for noisy chunks ``x_k``, steps ``k (B,)``, normalized obs."""
        if self.cfg.backbone == "cnn":
            return model(x_k, k, nobs.reshape(nobs.shape[0], -1))
        return model(x_k, k, nobs)

    # ------------------------------------------------------------------ training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on ``obs (B, To, obs_dim)``, ``action (B, Tp, act_dim)`` (env units)."""
        c = self.cfg
        obs = batch["obs"].to(self.device, torch.float32)[:, :c.obs_horizon]
        action = batch["action"].to(self.device, torch.float32)
        if action.shape[1] != c.pred_horizon or obs.shape[1] != c.obs_horizon:
            raise ValueError(f"batch windows must be obs (B, {c.obs_horizon}, obs_dim) and action "
                             f"(B, {c.pred_horizon}, act_dim); got {tuple(obs.shape)} and {tuple(action.shape)}")
        nobs, x0 = self.normalize_obs(obs), self.normalize_action(action)

        # Warm-up + cosine: the public code steps a LambdaLR after each update, so update n uses factor(n).
        lr = c.lr * lr_factor(self.step, c.lr_warmup_steps, c.max_steps, c.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        # DDPM loss: noise x0 to a uniform random step k, regress the noise.  A data-parallel replica draws
        # the global batch's noise and steps and keeps its own rows: the replicas' averaged gradient is then
        # the gradient of the whole batch (GroupNorm and LayerNorm are per sample; dropout masks are not shared).
        self.model.train()
        b = x0.shape[0]
        noise = torch.randn((b * self.world, *x0.shape[1:]), device=self.device)[self.rank * b:(self.rank + 1) * b]
        k = torch.randint(0, c.n_timesteps, (b * self.world,), device=self.device)[self.rank * b:(self.rank + 1) * b]
        x_k = self.schedule.q_sample(x0, k, noise)
        # bf16_autocast: matmuls and convolutions in bfloat16 (tensor cores on a GPU; float32's exponent range, so
        # no loss scaling), the weights, their gradients and the optimizer in float32; the loss in float32
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=c.bf16_autocast):
            eps_pred = self._eps(self.train_model, x_k, k, nobs)
        loss = F.mse_loss(eps_pred.float(), noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip_norm)
        self.optimizer.step()

        if self.ema_model is not None:
            decay = ema_decay(self.step, c.ema_power, c.ema_inv_gamma, c.ema_min, c.ema_max, c.ema_update_after_step)
            with torch.no_grad():
                ema_params, params = list(self.ema_model.parameters()), list(self.model.parameters())
                torch._foreach_mul_(ema_params, decay)
                torch._foreach_add_(ema_params, params, alpha=1.0 - decay)
        self.step += 1
        return {"train/loss": loss.detach(), "train/lr": lr}  # a 0-d tensor: no host sync

    def distribute(self, wrap, rank: int, world: int) -> None:
        """Data-parallel training: the loss runs through ``wrap(self.model)`` (DDP); ``self.model`` stays the
        plain module, so EMA, checkpoints and acting are unchanged."""
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world), got rank {rank} of {world}")
        self.train_model, self.rank, self.world = wrap(self.model), rank, world

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def predict_chunk(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The whole denoised chunk: ``obs (B, To, obs_dim)`` -> ``(B, Tp, act_dim)``, env units."""
        c = self.cfg
        obs = self.obs_window(obs)
        nobs = self.normalize_obs(obs)
        model = self.ema_model if self.ema_model is not None else self.model
        was_training = model.training
        model.eval()

        def denoise(x_k, k):
            return self._eps(model, x_k, k, nobs)

        shape = (obs.shape[0], c.pred_horizon, self.act_dim)
        if c.sampler == "ddpm":
            naction = ddpm_sample(denoise, self.schedule, shape, clip=c.clip_sample, generator=generator,
                                  device=self.device)
        else:
            naction = ddim_sample(denoise, self.schedule, shape, c.n_inference_steps, eta=c.ddim_eta,
                                  clip=c.clip_sample, generator=generator, device=self.device,
                                  spacing=c.ddim_spacing)
        model.train(was_training)
        if c.clip_sample is not None:  # the last DDPM step returns the clipped x0 already; DDIM's may not
            naction = naction.clamp(-c.clip_sample, c.clip_sample)
        return self.unnormalize_action(naction)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``obs (B, To, obs_dim)`` -> the executed actions ``(B, Ta, act_dim)`` = chunk[:, To-1 : To-1+Ta]."""
        device = obs.device if torch.is_tensor(obs) else torch.device("cpu")
        chunk = self.predict_chunk(obs, generator)
        start = self.obs_horizon - 1  # the chunk's step 0 is aligned with the oldest observation
        return chunk[:, start:start + self.action_horizon].to(device)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain tensors (and ints): network, EMA network, optimizer, step, normalizer."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "normalizer": self.normalizer_state()}
        if self.ema_model is not None:
            state["ema_model"] = self.ema_model.state_dict()
        return state

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (acting network + normalizer): a light payload for rollout workers."""
        key = "ema_model" if self.ema_model is not None else "model"
        net = self.ema_model if self.ema_model is not None else self.model
        return {key: net.state_dict(), "normalizer": self.normalizer_state()}

    def load_state_dict(self, state: dict) -> None:
        """Load a ``state_dict()`` (or a ``policy_state_dict()``: the missing parts are left as they are)."""
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if "ema_model" in state:
            if self.ema_model is None:
                raise ValueError("state has EMA weights but this policy has use_ema=False")
            self.ema_model.load_state_dict(state["ema_model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "step" in state:
            self.step = int(state["step"])
        self.load_normalizer(state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
