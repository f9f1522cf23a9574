"""IBC, implicit behaviour cloning (Florence et al., CoRL 2021), low-dimensional observations, in one file.

"Implicit Behavioral Cloning".  Instead of regressing actions, learn an energy ``E(o, a)`` whose
minima are the demonstrated actions, and act by minimizing it:

* **energy model**: an MLP over ``concat[obs window (To * obs_dim), action chunk (Ta * act_dim)]``
  -> one scalar per (observation, candidate) pair, ReLU + dropout, as the Diffusion Policy
  repository's IBC baseline (``diffusion_policy/policy/ibc_dfo_lowdim_policy.py``: 4 x 1024, dropout 0.1);
* **training, InfoNCE**: for every demonstrated chunk ``a+``, draw ``N`` counter-examples uniformly
  in the (normalized) action bounds and minimize the cross-entropy of ``softmax(-E)`` over the
  ``N + 1`` candidates with the demonstration as the label::

      L = -log( exp(-E(o, a+)) / (exp(-E(o, a+)) + sum_j exp(-E(o, a-_j))) )

* **inference, derivative-free optimizer (DFO)**, as the Diffusion Policy paper ran its IBC baseline
  (``ibc_dfo_lowdim_policy.predict_action``): draw ``M = 1024`` candidates uniformly in the bounds, then
  ``dfo_iterations - 1 = 4`` times: resample them with replacement with probabilities
  ``softmax(-E / temperature)`` and add Gaussian noise of std ``sigma = 0.03`` (unclipped, constant);
  finally score the candidates once more and draw the action from the softmax (``dfo_select="sample"``).
  The loop optimizes rather than samples: each resampling weights by softmax(-E) again, so the final draw is
  close to softmax(-dfo_iterations * E), and candidates its unclipped noise pushes past the box meet energies
  no counter-example trained.  Two equally likely modes with a small learned energy gap come out unevenly
  (tests/test_ibc.py: 23/77 on 50/50 data; ``dfo_iterations=1`` draws from softmax(-E) itself).
  google-research/ibc's ``iterative_dfo`` (3 evaluations, sigma 0.33 halved each time, clipped to the
  bounds, the most probable candidate) is the same loop with ``dfo_iterations=3, dfo_noise_std=0.33,
  dfo_noise_shrink=0.5, dfo_clip=True, dfo_select="argmax"``.

Observations and actions are min-max normalized to [-1, 1] with the dataset's ranges (the helpers of
``diffusion_policy.py``); the counter-examples and DFO candidates live in the normalized action box.
The policy sees ``To`` observations and scores the ``Ta`` actions ``To-1 .. To-1+Ta-1`` of each
``Tp`` window (DP's convention, so the same Push-T windows feed IBC and Diffusion Policy).

Sources of the defaults (``IBCConfig`` cites each one):
  [DPcode]   real-stanford/diffusion_policy ``ibc_dfo_lowdim_policy.py`` (network, dropout, InfoNCE with
             the demonstration at index 0, 1e-4 noise on positives, sampling at the end of the DFO).
  [DPcfg]    its ``train_ibc_dfo_lowdim_workspace.yaml`` (the low-dim Push-T config of the paper's Table I:
             To=2, Tp=2, Ta=1, ``train_n_neg`` 1024, ``pred_n_iter`` 5, ``pred_n_samples`` 1024, dropout
             0.1, AdamW 1e-4 / betas (0.95, 0.999) / wd 1e-6, cosine schedule with 500 warm-up steps) and
             the policy's default DFO branch (noise 0.03 at every resampling, no clipping, the final
             action drawn from the softmax).
  [IBCcode]  google-research/ibc ``mcmc.iterative_dfo`` (3 iterations, sigma 0.33 halved every
             iteration, temperature 1, candidates clipped to the bounds) and
             ``configs/pushing_states/mlp_ebm_best.gin`` (256 counter-examples, 16384 DFO samples,
             ``uniform_boundary_buffer`` 0.05) and ``agents/ibc_policy.py`` (the DFO's candidates and
             probabilities form a ``MappedCategorical`` whose ``mode`` is the most probable candidate):
             the options for the original paper's settings.

Known differences that are not switches: google-research/ibc's ResNet energy network
(``MLPEBM``, 8 x 128 pre-activation) is not implemented, the MLP of the DP baseline is; Langevin
MCMC and the gradient penalty of the paper's Langevin variant are not implemented.  No Ray in here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.common import coerce_field_types, lr_factor
from algorithms.normalization import RangeNormalized, action_range, minmax_normalizer
from algorithms.paper_scores import pusht_table

DFO_SELECT = ("argmax", "sample")


@dataclass
class IBCConfig:
    """IBC with the DFO sampler; defaults from the sources listed in the module docstring."""

    # --- horizons (DPcfg: horizon 2, n_obs_steps 2, n_action_steps 1)
    obs_horizon: int = 2                # To, observations the energy conditions on
    pred_horizon: int = 2               # Tp, length of the training window (must hold To-1+Ta actions)
    action_horizon: int = 1             # Ta, actions scored jointly and executed before replanning
    # --- energy network (DPcode: 4 hidden layers of 1024, ReLU, dropout 0.1 after each)
    hidden_dim: int = 1024
    n_hidden: int = 4
    dropout: float = 0.1
    # --- InfoNCE training
    n_counter_examples: int = 1024      # DPcfg train_n_neg 1024 (IBCcode num_counter_examples 256)
    positive_noise_std: float = 1e-4    # DPcode: N(0, 1e-4) added to the normalized demonstrations
    uniform_boundary_buffer: float = 0.0  # widen the sampling box by this fraction of its width on each
                                        # side (DPcode: 0; IBCcode: 0.05)
    # --- DFO inference
    dfo_samples: int = 1024             # M, candidates per observation (DPcfg 1024; IBCcode 16384)
    dfo_iterations: int = 5             # energy evaluations, resampling between them (DPcfg pred_n_iter 5; IBCcode 3)
    dfo_noise_std: float = 0.03         # sigma of the resampling noise, normalized units (DPcode 0.03; IBCcode 0.33)
    dfo_noise_shrink: float = 1.0       # sigma *= shrink after every resampling (DPcode: constant; IBCcode 0.5)
    dfo_clip: bool = False              # clip resampled candidates to the box (DPcode: no; IBCcode: yes)
    dfo_temperature: float = 1.0        # softmax(-E / temperature) (both: 1.0)
    dfo_select: str = "sample"          # final pick: "sample" from the softmax (DPcode) or "argmax" (IBCcode's
                                        # greedy policy: the most probable candidate)
    # --- optimization (DPcfg: AdamW lr 1e-4, betas (0.95, 0.999), eps 1e-8, wd 1e-6, cosine, 500 warm-up)
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    adam_eps: float = 1e-8
    lr_schedule: str = "cosine"         # "cosine" (DPcfg) or "constant" (after warm-up)
    lr_warmup_steps: int = 500
    max_steps: int = 100_000            # length of the cosine schedule; no paper value for low-dim Push-T
                                        # (the platform sets it to the trial's train.steps)
    grad_clip_norm: float | None = None  # not in the sources (None); clip the gradient norm if set

    def __post_init__(self):
        coerce_field_types(self)
        self.betas = tuple(float(b) for b in self.betas)
        To, Tp, Ta = self.obs_horizon, self.pred_horizon, self.action_horizon
        if not (To >= 1 and Ta >= 1 and Tp >= 1):
            raise ValueError(f"horizons must be >= 1, got obs_horizon={To}, pred_horizon={Tp}, action_horizon={Ta}")
        if To - 1 + Ta > Tp:
            raise ValueError(f"the scored actions To-1 .. To-1+Ta-1 must lie in the window: need obs_horizon - 1 + "
                             f"action_horizon <= pred_horizon, got {To} - 1 + {Ta} > {Tp}")
        if self.hidden_dim < 1 or self.n_hidden < 1:
            raise ValueError(f"hidden_dim and n_hidden must be >= 1, got {self.hidden_dim}, {self.n_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_counter_examples < 1:
            raise ValueError(f"n_counter_examples must be >= 1, got {self.n_counter_examples}")
        if self.positive_noise_std < 0 or self.uniform_boundary_buffer < 0:
            raise ValueError(f"positive_noise_std and uniform_boundary_buffer must be >= 0, got "
                             f"{self.positive_noise_std}, {self.uniform_boundary_buffer}")
        if self.dfo_samples < 1 or self.dfo_iterations < 1:
            raise ValueError(f"dfo_samples and dfo_iterations must be >= 1, got {self.dfo_samples}, "
                             f"{self.dfo_iterations}")
        if self.dfo_noise_std < 0 or not 0.0 < self.dfo_noise_shrink <= 1.0 or self.dfo_temperature <= 0:
            raise ValueError(f"need dfo_noise_std >= 0, 0 < dfo_noise_shrink <= 1, dfo_temperature > 0; got "
                             f"{self.dfo_noise_std}, {self.dfo_noise_shrink}, {self.dfo_temperature}")
        if self.dfo_select not in DFO_SELECT:
            raise ValueError(f"dfo_select must be one of {DFO_SELECT}, got {self.dfo_select!r}")
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
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")


class EnergyMLP(nn.Module):
    """``E(obs, actions)``: ``obs (B, To * obs_dim)``, ``actions (B, N, Ta * act_dim)`` -> energies ``(B, N)``.

    Every candidate goes through the whole MLP with its observation (early fusion, as DPcode).
    """

    def __init__(self, obs_in: int, act_in: int, hidden: int, n_hidden: int, dropout: float):
        super().__init__()
        layers, d = [], obs_in + act_in
        for _ in range(n_hidden):
            layers += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        B, N, _ = actions.shape
        x = torch.cat([obs.unsqueeze(1).expand(B, N, obs.shape[-1]), actions], dim=-1)
        return self.net(x).squeeze(-1)


class IBC(RangeNormalized):
    """Implicit BC with InfoNCE training and DFO acting.  ``data_kind = "sequences"``.

    ``update(batch)``: ``obs (B, To, obs_dim)``, ``action (B, Tp, act_dim)`` in env units -> metrics.
    ``act(obs)``: ``(B, To, obs_dim)`` env units -> ``(B, Ta, act_dim)`` env units.
    """

    data_kind = "sequences"
    paper_scores = (pusht_table("IBC"),)
    tiny_config = {"hidden_dim": 32, "n_hidden": 2, "n_counter_examples": 16, "dfo_samples": 32, "obs_horizon": 2,
                   "pred_horizon": 2, "action_horizon": 1}

    def __init__(self, config: IBCConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        self.cfg = c = config
        self.spec = spec
        self.device = torch.device(device)
        self.obs_horizon, self.pred_horizon, self.action_horizon = c.obs_horizon, c.pred_horizon, c.action_horizon
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim

        self.model = EnergyMLP(c.obs_horizon * spec.obs_dim, c.action_horizon * spec.act_dim, c.hidden_dim,
                               c.n_hidden, c.dropout).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c.lr, betas=c.betas, eps=c.adam_eps,
                                           weight_decay=c.weight_decay)
        self.step = 0

        obs_scale, obs_offset = minmax_normalizer(spec.obs_low, spec.obs_high, spec.obs_dim)
        act_min, act_max = action_range(spec)
        act_scale, act_offset = minmax_normalizer(act_min, act_max, spec.act_dim)
        # The sampling box: the dataset's action range in normalized units ([-1, 1] unless a dimension is
        # constant), widened by the boundary buffer.
        low = torch.tensor(act_min, dtype=torch.float32) * act_scale + act_offset
        high = torch.tensor(act_max, dtype=torch.float32) * act_scale + act_offset
        pad = c.uniform_boundary_buffer * (high - low)
        self.normalizer = {k: v.to(self.device) for k, v in dict(
            obs_scale=obs_scale, obs_offset=obs_offset, act_scale=act_scale, act_offset=act_offset,
            act_low=low - pad, act_high=high + pad).items()}

    def _uniform(self, B: int, N: int, generator=None) -> torch.Tensor:
        """``(B, N, Ta * act_dim)`` candidates uniform in the normalized box (the same box for every step)."""
        low = self.normalizer["act_low"].repeat(self.action_horizon)
        high = self.normalizer["act_high"].repeat(self.action_horizon)
        u = torch.rand(B, N, low.numel(), device=self.device, generator=generator)
        return low + u * (high - low)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        low = self.normalizer["act_low"].repeat(self.action_horizon)
        high = self.normalizer["act_high"].repeat(self.action_horizon)
        return torch.maximum(torch.minimum(x, high), low)

    # ------------------------------------------------------------------ training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One InfoNCE step on ``obs (B, To, obs_dim)``, ``action (B, Tp, act_dim)`` (env units)."""
        c = self.cfg
        obs = batch["obs"].to(self.device, torch.float32)[:, :c.obs_horizon]
        action = batch["action"].to(self.device, torch.float32)
        if action.shape[1] != c.pred_horizon or obs.shape[1] != c.obs_horizon:
            raise ValueError(f"batch windows must be obs (B, {c.obs_horizon}, obs_dim) and action "
                             f"(B, {c.pred_horizon}, act_dim); got {tuple(obs.shape)} and {tuple(action.shape)}")
        B = obs.shape[0]
        nobs = self.normalize_obs(obs).reshape(B, -1)                       # (B, To * obs_dim)
        start = c.obs_horizon - 1
        positive = self.normalize_action(action[:, start:start + c.action_horizon]).reshape(B, 1, -1)
        positive = positive + c.positive_noise_std * torch.randn_like(positive)
        negatives = self._uniform(B, c.n_counter_examples)                  # (B, N, Ta * act_dim)
        candidates = torch.cat([positive, negatives], dim=1)                # demonstration at index 0

        lr = c.lr * lr_factor(self.step, c.lr_warmup_steps, c.max_steps, c.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        energy = self.model(nobs, candidates)                               # (B, N + 1)
        labels = torch.zeros(B, dtype=torch.long, device=self.device)
        loss = F.cross_entropy(-energy, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip_norm)
        self.optimizer.step()
        self.step += 1
        with torch.no_grad():  # how often the demonstration beats every counter-example
            accuracy = (energy.argmin(dim=1) == 0).float().mean()
        return {"train/loss": loss.detach(), "train/infonce_accuracy": accuracy, "train/lr": lr}  # no host sync

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def dfo(self, nobs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Derivative-free optimization: ``nobs (B, To * obs_dim)`` normalized -> ``(B, Ta * act_dim)`` normalized."""
        c = self.cfg
        B, M = nobs.shape[0], c.dfo_samples
        rows = torch.arange(B, device=self.device).unsqueeze(1)
        samples = self._uniform(B, M, generator)
        sigma = c.dfo_noise_std
        for i in range(c.dfo_iterations):
            logits = -self.model(nobs, samples) / c.dfo_temperature          # (B, M)
            if i == c.dfo_iterations - 1:
                break
            idx = torch.multinomial(torch.softmax(logits, dim=-1), M, replacement=True, generator=generator)
            noise = torch.randn(samples.shape, device=self.device, generator=generator)
            samples = samples[rows, idx] + sigma * noise
            if c.dfo_clip:
                samples = self._clip(samples)
            sigma *= c.dfo_noise_shrink
        if c.dfo_select == "argmax":
            best = logits.argmax(dim=-1, keepdim=True)
        else:
            best = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        return samples[rows, best].squeeze(1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``obs (B, To, obs_dim)`` -> the executed actions ``(B, Ta, act_dim)``, env units."""
        c = self.cfg
        device = obs.device if torch.is_tensor(obs) else torch.device("cpu")
        obs = self.obs_window(obs)
        nobs = self.normalize_obs(obs).reshape(obs.shape[0], -1)
        was_training = self.model.training
        self.model.eval()  # no dropout while acting
        naction = self.dfo(nobs, generator).reshape(obs.shape[0], c.action_horizon, self.act_dim)
        self.model.train(was_training)
        return self.unnormalize_action(naction).to(device)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain tensors (and ints): energy network, optimizer, step, normalizer (with the sampling box)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "normalizer": self.normalizer_state()}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs: the energy network and the normalizer."""
        return {"model": self.model.state_dict(), "normalizer": self.normalizer_state()}

    def load_state_dict(self, state: dict) -> None:
        """Load a ``state_dict()`` (or a ``policy_state_dict()``: the missing parts are left as they are)."""
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "step" in state:
            self.step = int(state["step"])
        self.load_normalizer(state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
