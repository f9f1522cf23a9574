"""LSTM-GMM: robomimic's BC-RNN with a Gaussian-mixture head, the Diffusion Policy paper's first baseline.

Mandlekar et al., "What Matters in Learning from Offline Human Demonstrations for Robot Manipulation"
(CoRL 2021), as the Diffusion Policy paper (Chi et al., RSS 2023, Table I "LSTM-GMM") ran it through
``RobomimicLowdimPolicy`` with ``algo_name=bc_rnn, obs_type=low_dim`` (DP's
``train_robomimic_lowdim_workspace.yaml``), i.e. robomimic's ``BCConfig`` modified by
``generate_paper_configs.modify_bc_rnn_config_for_dataset`` for low-dim data:

* an LSTM (2 layers x 400 hidden; robomimic uses 1000 only for image data) unrolled over
  ``To = 10`` observations (``train.seq_length = rnn.horizon = 10``), no MLP between the LSTM and
  the head (``actor_layer_dims = ()``);
* per time step a Gaussian mixture over actions: 5 modes, ``std = softplus(s) + 1e-4``, mixture
  logits, means passed through ``tanh`` (robomimic does this when the tanh-GMM is off, since its
  actions live in [-1, 1]); ``use_tanh`` (a tanh-transformed mixture) is off;
* loss: the negative log-likelihood of the dataset's actions at every step of the sequence;
  Adam, lr 1e-4 constant, no weight decay, no gradient clipping; batch 256 (DP's dataloader);
* acting: robomimic's ``low_noise_eval`` (every mode's std set to 1e-4), one sample: a mode drawn
  from the mixture weights and, in effect, its mean;
* observations and actions min-max normalized to [-1, 1] with the dataset's ranges (DP's normalizer).

Shapes: batches ``obs (B, To, obs_dim)``, ``action (B, To, act_dim)`` (the action at each observed
step, ``pred_horizon = To``); ``act(obs (B, To, obs_dim)) -> (B, 1, act_dim)``, one action per call.

Acting is stateful, as robomimic's ``RNN_Actor.get_action`` that DP's ``RobomimicLowdimPolicy`` calls with one
observation per step: the LSTM state is carried across control steps and reset at every episode start
(``reset``) and every ``horizon`` (10) steps, so its context is 1..10 observations.  Training windows are
10 steps that never start before their episode (DP's ``pad_before = n_obs_steps - 1 = 0``).  The stateless
shortcut (re-run the LSTM over the last 10 observations, windows padded up to 9 steps before the episode)
is ``stateful_acting=False, pad_before=9``.  No Ray in here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec
from algorithms.normalization import RangeNormalized, range_normalizer
from algorithms.paper_scores import pusht_table
from algorithms.common import coerce_field_types


@dataclass
class LSTMGMMConfig:
    """BC-RNN-GMM hyper-parameters.  Defaults: robomimic ``BCConfig`` + low-dim BC-RNN paper config, as DP ran it."""

    obs_horizon: int = 10               # To = rnn.horizon = train.seq_length (robomimic bc_rnn: 10; DP horizon: 10)
    rnn_hidden_dim: int = 400           # robomimic low-dim BC-RNN: 400 (image: 1000)
    rnn_num_layers: int = 2             # robomimic default
    rnn_type: str = "LSTM"              # "LSTM" (default) or "GRU"
    mlp_hidden_dim: int = 0             # MLP width between RNN and head; 0 = none (robomimic bc_rnn actor_layer_dims=())
    mlp_layers: int = 0                 # number of such MLP layers (0: none)
    gmm_num_modes: int = 5              # robomimic gmm.num_modes
    gmm_min_std: float = 1e-4           # robomimic gmm.min_std
    gmm_std_activation: str = "softplus"  # robomimic gmm.std_activation: "softplus" or "exp"
    tanh_means: bool = True             # robomimic squashes the means with tanh when the tanh-GMM is off
    low_noise_eval: bool = True         # robomimic gmm.low_noise_eval: every std -> 1e-4 when acting
    lr: float = 1e-4                    # robomimic learning_rate.initial (constant: no epoch_schedule)
    weight_decay: float = 0.0           # robomimic regularization.L2
    grad_clip_norm: float | None = None  # robomimic max_gradient_norm: None
    stateful_acting: bool = True        # robomimic: LSTM state kept across steps, reset every obs_horizon steps
    pad_before: int = 0                 # training windows start this many steps before the episode at most (DP: 0)

    def __post_init__(self):
        coerce_field_types(self)
        if self.obs_horizon < 1:
            raise ValueError(f"LSTMGMMConfig: obs_horizon must be >= 1, got {self.obs_horizon}")
        if self.rnn_hidden_dim < 1 or self.rnn_num_layers < 1:
            raise ValueError(f"LSTMGMMConfig: rnn_hidden_dim and rnn_num_layers must be >= 1, got "
                             f"{self.rnn_hidden_dim}, {self.rnn_num_layers}")
        if self.rnn_type not in ("LSTM", "GRU"):
            raise ValueError(f"LSTMGMMConfig: rnn_type must be 'LSTM' or 'GRU', got {self.rnn_type!r}")
        if self.mlp_layers < 0 or (self.mlp_layers > 0 and self.mlp_hidden_dim < 1):
            raise ValueError(f"LSTMGMMConfig: need mlp_layers >= 0 and mlp_hidden_dim >= 1 when mlp_layers > 0, got "
                             f"{self.mlp_layers}, {self.mlp_hidden_dim}")
        if self.gmm_num_modes < 1:
            raise ValueError(f"LSTMGMMConfig: gmm_num_modes must be >= 1, got {self.gmm_num_modes}")
        if not self.gmm_min_std > 0:
            raise ValueError(f"LSTMGMMConfig: gmm_min_std must be > 0, got {self.gmm_min_std}")
        if self.gmm_std_activation not in ("softplus", "exp"):
            raise ValueError(f"LSTMGMMConfig: gmm_std_activation must be 'softplus' or 'exp', "
                             f"got {self.gmm_std_activation!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"LSTMGMMConfig: need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"LSTMGMMConfig: grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")


class RNNGMM(nn.Module):
    """obs sequence -> per-step mixture parameters.

    ``forward(obs (B, T, obs_dim)) -> (logits (B, T, M), means (B, T, M, act_dim), raw_scales (B, T, M, act_dim))``.
    """

    def __init__(self, obs_dim: int, act_dim: int, c: LSTMGMMConfig):
        super().__init__()
        rnn_cls = nn.LSTM if c.rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn_cls(obs_dim, c.rnn_hidden_dim, c.rnn_num_layers, batch_first=True)
        layers, d = [], c.rnn_hidden_dim
        for _ in range(c.mlp_layers):
            layers += [nn.Linear(d, c.mlp_hidden_dim), nn.ReLU()]
            d = c.mlp_hidden_dim
        self.mlp = nn.Sequential(*layers)
        self.M, self.act_dim = c.gmm_num_modes, act_dim
        self.head = nn.Linear(d, self.M * (1 + 2 * act_dim))  # [logits | means | scales] of every mode

    def forward(self, obs, state=None, return_state: bool = False):
        """``state``: the RNN's (h, c) (or h for a GRU) to start from; ``return_state`` also returns the new one."""
        seq, new_state = self.rnn(obs, state)
        h = self.mlp(seq)
        B, T = obs.shape[:2]
        out = self.head(h)
        logits = out[..., :self.M]
        means, scales = out[..., self.M:].reshape(B, T, self.M, 2, self.act_dim).unbind(3)
        return ((logits, means, scales), new_state) if return_state else (logits, means, scales)


class LSTMGMM(RangeNormalized):
    """BC-RNN with a GMM head: ``update(batch) -> metrics``, ``act(obs) -> (B, 1, act_dim)``, plain-tensor state."""

    data_kind = "sequences"
    paper_scores = (pusht_table("LSTM-GMM"),)
    tiny_config = {"obs_horizon": 3, "rnn_hidden_dim": 16, "rnn_num_layers": 1}

    def __init__(self, config: LSTMGMMConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self.obs_horizon = self.pred_horizon = c.obs_horizon  # one action per observed step
        self.action_horizon = 1                                # acts step by step
        self.window_pad_before = c.pad_before
        self.rnn_state, self.rnn_steps = None, 0               # stateful acting: the carried LSTM state
        self.model = RNNGMM(spec.obs_dim, spec.act_dim, c).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.step = 0
        self.normalizer = range_normalizer(spec, self.device)

    # ------------------------------------------------------------------ the mixture
    def mixture(self, nobs: torch.Tensor, low_noise: bool = False, state: bool = False):
        """Per-step GMM over normalized actions: batch shape ``(B, T)``, event shape ``(act_dim,)``; ``state``:
        start from and update the carried LSTM state (stateful acting)."""
        c = self.cfg
        if state:
            (logits, means, scales), self.rnn_state = self.model(nobs, self.rnn_state, return_state=True)
        else:
            logits, means, scales = self.model(nobs)
        if c.tanh_means:
            means = torch.tanh(means)
        if low_noise:
            scales = torch.full_like(means, 1e-4)
        elif c.gmm_std_activation == "softplus":
            scales = F.softplus(scales) + c.gmm_min_std
        else:
            scales = torch.exp(scales) + c.gmm_min_std
        D = torch.distributions
        return D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(means, scales), 1))

    # ------------------------------------------------------------------ training
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One Adam step on ``-log pi(a_t | o_1..t)`` averaged over ``obs (B, To, .)``, ``action (B, To, .)``."""
        c = self.cfg
        obs = batch["obs"].to(self.device, torch.float32)
        action = batch["action"].to(self.device, torch.float32)
        if obs.shape[1] != c.obs_horizon or action.shape[1] != c.obs_horizon:
            raise ValueError(f"LSTM-GMM batches are obs (B, {c.obs_horizon}, obs_dim) and action "
                             f"(B, {c.obs_horizon}, act_dim); got {tuple(obs.shape)} and {tuple(action.shape)}")
        self.model.train()
        nll = -self.mixture(self.normalize_obs(obs)).log_prob(self.normalize_action(action)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        nll.backward()
        if c.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip_norm)
        self.optimizer.step()
        self.step += 1
        return {"train/loss": nll.detach()}  # a 0-d tensor: no host sync

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def sample(self, obs: torch.Tensor, state: bool = False) -> torch.Tensor:
        """One action per sequence from the last step's mixture: ``obs (B, T, obs_dim) -> (B, act_dim)``, env units;
        ``state``: start from and advance the carried LSTM state (stateful acting)."""
        self.model.eval()
        dist = self.mixture(self.normalize_obs(obs), low_noise=self.cfg.low_noise_eval, state=state)
        self.model.train()
        return self.unnormalize_action(dist.sample()[:, -1])

    def reset(self, n_envs: int) -> None:
        self.rnn_state, self.rnn_steps = None, 0

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, T, obs_dim)`` -> ``(B, 1, act_dim)``.  Stateful (default): the last observation advances the
        carried LSTM state (reset every ``obs_horizon`` steps); stateless: the LSTM re-runs over the last To."""
        device = obs.device if torch.is_tensor(obs) else torch.device("cpu")
        obs = self.obs_window(obs, full=False)
        if not self.cfg.stateful_acting:
            return self.sample(obs).unsqueeze(1).to(device)
        h = self.rnn_state[0] if isinstance(self.rnn_state, tuple) else self.rnn_state  # LSTM (h, c) or GRU h
        if h is not None and h.shape[1] != obs.shape[0]:
            self.rnn_state = None  # another batch size: a new set of episodes
        if self.rnn_steps % self.cfg.obs_horizon == 0:
            self.rnn_state = None  # robomimic resets its RNN every `horizon` steps
        self.rnn_steps += 1
        return self.sample(obs[:, -1:], state=True).unsqueeze(1).to(device)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "normalizer": self.normalizer_state()}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (network + normalizer), for rollout workers."""
        return {"model": self.model.state_dict(), "normalizer": self.normalizer_state()}

    def load_state_dict(self, state: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (missing parts are left as they are)."""
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "step" in state:
            self.step = int(state["step"])
        self.load_normalizer(state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


__all__ = ["LSTMGMMConfig", "LSTMGMM", "RNNGMM"]
