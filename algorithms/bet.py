"""Behavior Transformers (BeT; Shafiullah et al., NeurIPS 2022), low-dimensional observations, in one file.

"Behavior Transformers: Cloning k modes with one stone", as the Diffusion Policy paper (Chi et al.,
RSS 2023, Table I "BET") ran it on Push-T: DP's ``bet_lowdim_policy.py`` with BeT's ``KMeansDiscretizer``
and ``MinGPT`` latent generator, configured by DP's ``train_bet_lowdim_workspace.yaml``:

* actions (normalized to [-1, 1]) are binned by k-means into ``k = 24`` centers; an action is its
  bin plus a residual offset ``a - center[bin]``;
* a minGPT (4 layers, 4 heads, width 72, dropout 0.1, causal attention) reads the last ``To = 3``
  observations (a linear token embedding + learned positions) and, for every step, outputs the bin
  logits and one offset per bin;
* loss: focal loss (gamma 2) on the bins + ``offset_loss_scale`` (1000, DP's value) x MSE between the
  offset predicted for the true bin and the true residual;
* acting: sample a bin from the softmax at the last observed step, add that bin's predicted offset
  (the action at step ``To - 1``; one action per call);
* AdamW lr 1e-4, weight decay 0.1 on Linear weights only (minGPT's ``configure_optimizers``),
  betas (0.9, 0.95), gradient norm clipped at 1.0, batch 256, and a **constant** learning rate: DP's
  ``train_bet_lowdim_workspace.py`` never builds the scheduler its YAML names (``lr_schedule: cosine``
  with 500 warm-up steps is kept as an option).

Shapes: batches ``obs (B, To, obs_dim)``, ``action (B, To, act_dim)`` (the action at each observed
step); ``act(obs (B, To, obs_dim)) -> (B, 1, act_dim)``.

The k-means bins are fitted on *all* the dataset's actions before training (``fit_dataset``, as BeT and
DP's ``fit_action_ae(dataset.get_all_actions())``: 25,650 actions on Push-T's 206 episodes when the loader
keeps them all, the training episodes' otherwise).  Without ``fit_dataset`` (a bare ``update`` loop) they
are fitted on the first batch's actions.  The centers live in the state dict.  No Ray in here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.common import coerce_field_types, lr_factor
from algorithms.normalization import RangeNormalized, range_normalizer
from algorithms.paper_scores import pusht_table


@dataclass
class BETConfig:
    """BeT hyper-parameters; defaults: DP's ``train_bet_lowdim_workspace.yaml`` (BeT's MinGPT/k-means defaults)."""

    obs_horizon: int = 3                # To = horizon = n_obs_steps (DP: 3); the GPT's block size
    n_bins: int = 24                    # k-means clusters (DP: action_ae.num_bins 24)
    kmeans_iters: int = 50              # Lloyd iterations (BeT's KMeansDiscretizer: 50)
    n_layer: int = 4                    # minGPT (DP: n_layer 4, n_head 4, n_embd 72)
    n_head: int = 4
    n_embd: int = 72
    dropout: float = 0.1                # minGPT embd/resid/attn dropout (BeT's GPTConfig default 0.1)
    offset_loss_scale: float = 1000.0   # DP's config ("actions are very small"); BeT's own default is 1.0
    focal_loss_gamma: float = 2.0       # DP / BeT
    lr: float = 1e-4                    # DP optimizer
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    lr_schedule: str = "constant"       # DP's BET workspace builds no scheduler: constant lr ("cosine": its YAML)
    lr_warmup_steps: int = 0            # (the YAML's 500 is never used by the workspace either)
    max_steps: int = 5000 * 42          # cosine length; DP: 5000 epochs (the platform sets it to the run's budget)
    grad_clip_norm: float | None = 1.0  # DP: grad_norm_clip 1.0

    def __post_init__(self):
        coerce_field_types(self)
        self.betas = tuple(float(b) for b in self.betas)
        if self.obs_horizon < 1:
            raise ValueError(f"BETConfig: obs_horizon must be >= 1, got {self.obs_horizon}")
        if self.n_bins < 1 or self.kmeans_iters < 1:
            raise ValueError(f"BETConfig: n_bins and kmeans_iters must be >= 1, got {self.n_bins}, {self.kmeans_iters}")
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd % self.n_head:
            raise ValueError(f"BETConfig: need n_layer >= 1 and n_embd divisible by n_head, got n_layer="
                             f"{self.n_layer}, n_embd={self.n_embd}, n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BETConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.offset_loss_scale < 0 or self.focal_loss_gamma < 0:
            raise ValueError(f"BETConfig: offset_loss_scale and focal_loss_gamma must be >= 0, got "
                             f"{self.offset_loss_scale}, {self.focal_loss_gamma}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"BETConfig: need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"BETConfig: betas must be two numbers in [0, 1), got {self.betas}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"BETConfig: lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.lr_warmup_steps < 0 or self.max_steps < 1:
            raise ValueError(f"BETConfig: need lr_warmup_steps >= 0 and max_steps >= 1, got {self.lr_warmup_steps}, "
                             f"{self.max_steps}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"BETConfig: grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means as BeT's ``KMeansDiscretizer``: ``x (N, D) -> centers (k, D)``.

    Centers start at ``k`` distinct random points; an empty cluster is moved to a random point.
    """
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least n_bins={k} actions to fit, got {x.shape[0]}")
    # index draws on the generator's device (a CUDA generator needs device=; a CPU one works for any x)
    gdev = generator.device if generator is not None else x.device
    centers = x[torch.randperm(x.shape[0], generator=generator, device=gdev)[:k].to(x.device)].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            centers[empty] = x[torch.randint(0, x.shape[0], (int(empty.sum()),), generator=generator,
                                             device=gdev).to(x.device)]
    return centers


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Lin et al.'s focal loss, mean over rows: ``-(1 - p_t)^gamma log p_t``; ``logits (N, k)``, ``target (N,)``."""
    logpt = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    return (-(1.0 - logpt.exp()) ** gamma * logpt).mean()


class MinGPT(nn.Module):
    """Causal transformer over observation tokens (minGPT: pre-LayerNorm blocks, GELU MLP 4x, N(0, 0.02) init).

    ``forward(obs (B, T, obs_dim)) -> (B, T, out_dim)``, step t attending to steps <= t.
    """

    def __init__(self, obs_dim: int, out_dim: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float):
        super().__init__()
        self.tok_emb = nn.Linear(obs_dim, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, out_dim, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block_size), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """minGPT's split: decay the weights of Linear layers (attention projections included), nothing else."""
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2 and n != "pos_emb"]
        no_decay = [p for n, p in self.named_parameters() if not (p.ndim >= 2 and n != "pos_emb")]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def forward(self, obs):
        T = obs.shape[1]
        x = self.drop(self.tok_emb(obs) + self.pos_emb[:, :T])
        return self.head(self.ln_f(self.blocks(x, mask=self.mask[:T, :T], is_causal=True)))


class BET(RangeNormalized):
    """Behavior Transformer: ``update(batch) -> metrics``, ``act(obs) -> (B, 1, act_dim)``, plain-tensor state."""

    data_kind = "sequences"
    paper_scores = (pusht_table("BET"),)
    tiny_config = {"obs_horizon": 3, "n_bins": 4, "n_layer": 1, "n_head": 2, "n_embd": 16, "kmeans_iters": 5}

    def __init__(self, config: BETConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self.obs_horizon = self.pred_horizon = c.obs_horizon  # one action per observed step (DP: horizon = To)
        self.action_horizon = 1
        self.model = MinGPT(spec.obs_dim, c.n_bins * (1 + spec.act_dim), c.obs_horizon, c.n_layer, c.n_head,
                            c.n_embd, c.dropout).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.optim_groups(c.weight_decay), lr=c.lr, betas=c.betas)
        self.centers = torch.zeros(c.n_bins, spec.act_dim, device=self.device)  # k-means bins, normalized units
        self.fitted = False
        self.step = 0
        self.normalizer = range_normalizer(spec, self.device)

    # ------------------------------------------------------------------ bins
    def fit_dataset(self, data) -> None:
        """k-means bins on every action of the source (``data.all_actions`` if the loader has them, e.g. Push-T's
        206 episodes, else ``data.actions (N, act_dim)``; env units)."""
        actions = data.actions if data.all_actions is None else data.all_actions
        self.fit_bins(torch.as_tensor(actions, dtype=torch.float32))

    @torch.no_grad()
    def fit_bins(self, actions: torch.Tensor) -> None:
        """Fit the k-means bins on actions ``(..., act_dim)`` in env units (e.g. all the dataset's actions)."""
        x = self.normalize_action(torch.as_tensor(actions, dtype=torch.float32, device=self.device))
        self.centers = kmeans(x.reshape(-1, self.act_dim), self.cfg.n_bins, self.cfg.kmeans_iters,
                              torch.Generator().manual_seed(0))  # CPU draws: the same bins on any device
        self.fitted = True

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GPT output ``(B, T, k (1 + act_dim))`` -> bin logits ``(B, T, k)``, offsets ``(B, T, k, act_dim)``."""
        k = self.cfg.n_bins
        return out[..., :k], out[..., k:].reshape(*out.shape[:-1], k, self.act_dim)

    # ------------------------------------------------------------------ training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One AdamW step on focal(bins) + scale * MSE(offset of the true bin) over ``obs/action (B, To, .)``."""
        c = self.cfg
        obs = batch["obs"].to(self.device, torch.float32)
        action = batch["action"].to(self.device, torch.float32)
        if obs.shape[1] != c.obs_horizon or action.shape[1] != c.obs_horizon:
            raise ValueError(f"BET batches are obs (B, {c.obs_horizon}, obs_dim) and action (B, {c.obs_horizon}, "
                             f"act_dim); got {tuple(obs.shape)} and {tuple(action.shape)}")
        if not self.fitted:
            self.fit_bins(action)  # first batch (see the module docstring)
        lr = c.lr * lr_factor(self.step, c.lr_warmup_steps, c.max_steps, c.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        naction = self.normalize_action(action).reshape(-1, self.act_dim)          # (N, act_dim), N = B * To
        target = torch.cdist(naction, self.centers).argmin(1)                       # (N,) nearest bin
        residual = naction - self.centers[target]                                   # (N, act_dim)
        self.model.train()
        logits, offsets = self.split(self.model(self.normalize_obs(obs)))
        logits, offsets = logits.reshape(-1, c.n_bins), offsets.reshape(-1, c.n_bins, self.act_dim)
        class_loss = focal_loss(logits, target, c.focal_loss_gamma)
        offset_loss = F.mse_loss(offsets[torch.arange(len(target), device=self.device), target], residual)
        loss = class_loss + c.offset_loss_scale * offset_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip_norm)
        self.optimizer.step()
        self.step += 1
        values = torch.stack([loss.detach(), class_loss.detach(), offset_loss.detach()]).unbind()  # no host sync
        return {"train/loss": values[0], "train/class_loss": values[1], "train/offset_loss": values[2], "train/lr": lr}

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, T, obs_dim) -> (B, act_dim)``: bin ~ softmax(logits at the last step) + its offset, env units."""
        self.model.eval()
        logits, offsets = self.split(self.model(self.normalize_obs(obs))[:, -1])  # (B, k), (B, k, act_dim)
        self.model.train()
        b = torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(1)              # (B,)
        rows = torch.arange(len(b), device=self.device)
        return self.unnormalize_action(self.centers[b] + offsets[rows, b])

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, To, obs_dim)`` (the last ``To`` are used) -> ``(B, 1, act_dim)``."""
        device = obs.device if torch.is_tensor(obs) else torch.device("cpu")
        return self.sample(self.obs_window(obs, full=False)).unsqueeze(1).to(device)

    # ------------------------------------------------------------------ state
    def _policy_state(self) -> dict:
        return {"model": self.model.state_dict(), "centers": self.centers.clone(),
                "fitted": torch.tensor(self.fitted), "normalizer": self.normalizer_state()}

    def state_dict(self) -> dict:
        return {**self._policy_state(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (network, bins, normalizer), for rollout workers."""
        return self._policy_state()

    def load_state_dict(self, state: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (missing parts are left as they are)."""
        self.model.load_state_dict(state["model"])
        self.centers = torch.as_tensor(state["centers"], dtype=torch.float32).to(self.device).clone()
        self.fitted = bool(state["fitted"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "step" in state:
            self.step = int(state["step"])
        self.load_normalizer(state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


__all__ = ["BETConfig", "BET", "MinGPT", "kmeans", "focal_loss"]
