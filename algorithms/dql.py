"""Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023): diffusion policies as an expressive policy class.

The policy pi_theta(a | s) is a K-step DDPM over actions conditioned on the state: Diffusion-QL's
noise MLP, VP schedule, K = 5, predicted x0 clipped to the action bounds.  One gradient step:

    critic:  y = r + gamma * (1 - done) * min(Q1', Q2')(s', a'),   a' ~ pi_ema(. | s')   (target nets, no grad)
             L_critic = ||Q1(s, a) - y||^2 + ||Q2(s, a) - y||^2
    actor:   L = L_bc + eta * L_q
             L_bc = E_{k, eps} ||eps - eps_theta(sqrt(abar_k) a + sqrt(1 - abar_k) eps, k, s)||^2
             L_q  = -mean Q_i(s, a_new) / mean |Q_j(s, a_new)|.detach(),   a_new ~ pi_theta(. | s)
    then:    actor EMA (0.995, every 5 steps, from step 1000), Polyak target critic (tau = 0.005)

``a_new`` is sampled through the whole reverse chain **with gradients through every step**; the
normalization by mean |Q| makes ``alpha = eta / E|Q|`` (the paper's scale-free weight).  As in the
authors' code, (i, j) is (1, 2) or (2, 1) with probability 1/2 each step.

Acting: 50 candidate actions per state from the policy, one drawn with probability softmax(Q) over
the target critic's min(Q1, Q2) (the code's ``sample_action``).

Faithful to the public code (``agents/ql_diffusion.py``, ``agents/diffusion.py``, ``main.py``),
including three details the paper does not state, each kept as the default and switchable:
the EMA actor keeps its *initial* weights until ``step_start_ema`` (``ema_copy_before_start``),
acting samples from the *online* actor (``act_with_ema``), and the L_q critic is chosen at random
(``random_q_head``).  Per-task settings of the code's ``main.py`` (lr, eta, max_q_backup, reward tune,
num_epochs, gn: e.g. gn 9 on hopper / halfcheetah medium, 1 on walker2d medium) are its table in
``algorithms/paper_settings.py``, which the platform resolves for a study's dataset (``DiffusionQL.paper_settings``).

Batches: D4RL transitions (``data_kind = "transitions"``); ``act``: ``(B, 1, obs_dim) -> (B, 1, act_dim)``.
The algorithm never seeds globally: the platform calls ``torch.manual_seed`` before constructing it.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms import EnvSpec, paper_settings
from algorithms.common import Algorithm, TwinQ, coerce_field_types, ema_update, soft_update
from algorithms.diffusion.nets import FastMish, NoiseMLP, fast_mish, mlp
from algorithms.diffusion.samplers import ddpm_chain, ddpm_loss, ddpm_noise
from algorithms.diffusion.schedules import BETA_SCHEDULES, DiffusionSchedule
from algorithms.paper_scores import DIFFUSION_QL

REWARD_SHAPINGS = ("none", "antmaze", "normalize")
LR_DECAY_SCHEDULES = ("code", "per_step")


@dataclass
class DQLConfig:
    """Diffusion-QL hyperparameters; defaults are the paper's / public code's (batch size is the platform's)."""

    eta: float = 1.0
    """Weight of the normalized Q term (paper: 1.0 locomotion, 0.5-4.5 AntMaze, 0.1-0.15 pen, 0.005 kitchen)."""
    n_timesteps: int = 5
    """K, the number of diffusion steps (paper: 5)."""
    beta_schedule: str = "vp"
    """Noise schedule: "vp" (paper: beta_min 0.1, beta_max 10), "linear" or "cosine"."""
    hidden_dim: int = 256
    """Width of the noise MLP and of both critics, 3 hidden layers each (paper: 256)."""
    gamma: float = 0.99
    """Discount (paper: 0.99)."""
    tau: float = 0.005
    """Polyak rate of the target critic (paper: 0.005)."""
    lr: float = 3e-4
    """Adam learning rate of the actor (paper: 3e-4; code: 1e-3 antmaze-medium-play, 3e-5 pen)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic (code: always 3e-4)."""
    grad_norm: float = 1.0
    """Max global grad norm of actor and critic, 0 disables (code's class default 1.0; main.py: 1-10 per task)."""
    lr_decay: bool = False
    """Cosine-anneal both learning rates (code: the --lr_decay flag, off by default, on in its README's commands)."""
    lr_decay_schedule: str = "code"
    """"code": ``CosineAnnealingLR(T_max=lr_maxt)`` stepped once every ``lr_step_every`` gradient steps, as the
    code steps it once per ``agent.train`` call (eval_freq 50 x 1000 steps) with T_max = num_epochs: over 2M steps
    the lr only falls to 0.999 of its start.  "per_step" (a deviation): a cosine to 0 over ``max_steps``."""
    lr_maxt: int = 2000
    """T_max of the code's cosine, in scheduler steps (code: num_epochs, 2000 locomotion, 1000 AntMaze / pen)."""
    lr_step_every: int = 50_000
    """Gradient steps per scheduler step (code: eval_freq 50 x 1000 steps per epoch)."""
    max_steps: int = 2_000_000
    """Horizon of the "per_step" cosine in gradient steps (paper: 2000 epochs x 1000 steps)."""
    ema_decay: float = 0.995
    """Decay of the actor's EMA (paper: 0.995); the EMA actor makes the critic's next actions."""
    step_start_ema: int = 1000
    """First step at which the EMA is updated (paper: 1000)."""
    update_ema_every: int = 5
    """EMA update period in steps (paper: 5)."""
    ema_copy_before_start: bool = False
    """Deviation: copy the actor into the EMA actor at EMA ticks before ``step_start_ema`` (diffuser's
    trainer does; Diffusion-QL's code leaves the EMA actor at its initial weights until then)."""
    max_q_backup: bool = False
    """Target = min over critics of the max over ``n_backup_samples`` next actions (paper: AntMaze only)."""
    n_backup_samples: int = 10
    """Next actions sampled per state for ``max_q_backup`` (code: 10)."""
    reward_shaping: str = "none"
    """"antmaze": r <- (r - 0.5) * 4 (the code's "cql_antmaze" reward tune, used for every AntMaze task);
    "normalize": r <- (r - mean) / std over the dataset's transitions (the code's reward_tune "normalize",
    used for pen-human and pen-cloned)."""
    n_action_samples: int = 50
    """Candidate actions per state when acting, one drawn by softmax(Q) (paper: 50)."""
    act_with_ema: bool = False
    """Deviation: sample the candidates from the EMA actor (the code samples from the online actor)."""
    random_q_head: bool = True
    """L_q = -Q1/|Q2| or -Q2/|Q1| at random each step, as the code; False: always -Q1/|Q2| (the paper's form)."""
    fused_critic: bool = True
    """Speed only, same math: both critics as one batched network (``FusedTwinQ``, same state_dict keys as
    ``TwinQ``); False: two separate MLPs (``TwinQ``).  Optimizer states of the two are not interchangeable."""

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"DQLConfig: {msg}")

        coerce_field_types(self)
        need(self.eta >= 0, f"eta must be >= 0, got {self.eta}")
        need(self.n_timesteps >= 1, f"n_timesteps (K) must be >= 1, got {self.n_timesteps}")
        need(self.beta_schedule in BETA_SCHEDULES,
             f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        need(self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}")
        need(0 <= self.gamma <= 1, f"gamma must be in [0, 1], got {self.gamma}")
        need(0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}")
        need(self.lr > 0 and self.critic_lr > 0, f"lr and critic_lr must be > 0, got {self.lr}, {self.critic_lr}")
        need(self.grad_norm >= 0, f"grad_norm must be >= 0 (0 disables clipping), got {self.grad_norm}")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(self.lr_decay_schedule in LR_DECAY_SCHEDULES,
             f"lr_decay_schedule must be one of {', '.join(LR_DECAY_SCHEDULES)}, got {self.lr_decay_schedule!r}")
        need(self.lr_maxt >= 1 and self.lr_step_every >= 1,
             f"lr_maxt and lr_step_every must be >= 1, got {self.lr_maxt}, {self.lr_step_every}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.step_start_ema >= 0, f"step_start_ema must be >= 0, got {self.step_start_ema}")
        need(self.update_ema_every >= 1, f"update_ema_every must be >= 1, got {self.update_ema_every}")
        need(self.n_backup_samples >= 1, f"n_backup_samples must be >= 1, got {self.n_backup_samples}")
        need(self.reward_shaping in REWARD_SHAPINGS,
             f"reward_shaping must be one of {', '.join(REWARD_SHAPINGS)}, got {self.reward_shaping!r}")
        need(self.n_action_samples >= 1, f"n_action_samples must be >= 1, got {self.n_action_samples}")


# ----------------------------------------------------------------------------- shared pieces (EDP uses them too)


class FusedTwinQ(nn.Module):
    """``TwinQ`` computed as one batched network: both heads' layer-l weights stacked ``(2, in, out)``,
    one ``baddbmm`` (and one Mish) per layer for the two heads instead of two of each.

    Same initial weights as ``TwinQ`` (built from the same two ``mlp`` calls, same RNG order), same
    forward values up to float round-off, and the same ``state_dict`` keys and shapes
    (``q1_model.0.weight (hidden, in)``, ...): checkpoints load either way.  ``q1_model`` / ``q2_model``
    are rebuilt on access as ``nn.Sequential`` heads whose ``Linear`` weights are *views* of the
    stacked parameters, so code that edits one head in place (tests) edits this network.
    ``forward(s (B, obs_dim), a (B, act_dim)) -> (q1 (B, 1), q2 (B, 1))``; ``q1`` and ``q_min`` likewise.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, n_hidden: int = 3):
        super().__init__()
        heads = [mlp(obs_dim + act_dim, 1, hidden, n_hidden) for _ in range(2)]
        lins = [[m for m in h if isinstance(m, nn.Linear)] for h in heads]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([l1.weight.detach().t(), l2.weight.detach().t()]).contiguous())
             for l1, l2 in zip(*lins)])                                           # (2, in, out) each
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([l1.bias.detach(), l2.bias.detach()]).unsqueeze(1).contiguous())
             for l1, l2 in zip(*lins)])                                           # (2, 1, out) each
        self._register_state_dict_hook(FusedTwinQ._to_twin_keys)
        self.register_load_state_dict_pre_hook(FusedTwinQ._from_twin_keys)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in) -> (2, B, 1)``: both heads' outputs."""
        h = x.unsqueeze(0).expand(2, -1, -1)
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if j < last:
                h = fast_mish(h)
        return h

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.heads(torch.cat([s, a], dim=-1))
        return q[0], q[1]

    def q1(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self(s, a)[0]

    def q_min(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.heads(torch.cat([s, a], dim=-1)).amin(0)

    # ---- TwinQ compatibility: per-head views and TwinQ's state_dict keys
    def _head(self, h: int) -> nn.Sequential:
        layers = []
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[2], device="meta")
            del lin.weight, lin.bias
            lin.weight, lin.bias = w.detach()[h].t(), b.detach()[h, 0]        # views: edits reach the stack
            layers += [lin] + ([FastMish()] if j < len(self.weights) - 1 else [])
        return nn.Sequential(*layers)

    q1_model = property(lambda self: self._head(0))
    q2_model = property(lambda self: self._head(1))

    @staticmethod
    def _to_twin_keys(module, state_dict, prefix, local_metadata):
        n = len(module.weights)
        ws = [state_dict.pop(f"{prefix}weights.{j}") for j in range(n)]
        bs = [state_dict.pop(f"{prefix}biases.{j}") for j in range(n)]
        for h in range(2):  # TwinQ's order: all of q1_model, then q2_model
            for j in range(n):
                state_dict[f"{prefix}q{h + 1}_model.{2 * j}.weight"] = ws[j][h].t().contiguous()
                state_dict[f"{prefix}q{h + 1}_model.{2 * j}.bias"] = bs[j][h, 0].clone()
        return state_dict

    @staticmethod
    def _from_twin_keys(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                        error_msgs):
        for j in range(len(module.weights)):
            keys = [f"{prefix}q{h + 1}_model.{2 * j}.{n}" for n in ("weight", "bias") for h in range(2)]
            if all(k in state_dict for k in keys):
                w1, w2, b1, b2 = (state_dict.pop(k) for k in keys)
                state_dict[f"{prefix}weights.{j}"] = torch.stack([w1.t(), w2.t()])
                state_dict[f"{prefix}biases.{j}"] = torch.stack([b1, b2]).unsqueeze(1)


def select_by_q(candidates: torch.Tensor, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one of N candidates per state with probability softmax(Q) over the N.

    ``candidates (B, N, act_dim)``, ``q (B, N)`` -> ``(B, act_dim)``.
    """
    idx = torch.multinomial(F.softmax(q, dim=-1), 1, generator=generator)  # (B, 1)
    return candidates.gather(1, idx.unsqueeze(-1).expand(-1, 1, candidates.shape[-1])).squeeze(1)


# ----------------------------------------------------------------------------- Diffusion-QL


class DiffusionQL(Algorithm):
    """Diffusion-QL agent: ``update(batch) -> metrics``, ``act(obs) -> actions``, plain-tensor state dicts."""

    data_kind = "transitions"
    compile_modules = ("actor", "ema_actor", "critic", "critic_target")  # train.compile: inside the step's two graphs
    paper_scores = DIFFUSION_QL
    paper_budget = {"*": "2M gradient steps"}  # Wang et al. 2023, Sec. 5
    tiny_config = {"hidden_dim": 32, "n_action_samples": 8}

    @classmethod
    def vectorized_seeds(cls) -> type:
        """``train.vectorize_seeds``: ``algorithms.vectorized.VectorizedDQL`` (the paper's defaults)."""
        from algorithms.vectorized import VectorizedDQL

        return VectorizedDQL

    @classmethod
    def paper_settings(cls, dataset: str) -> dict:
        """The public code's per-task values (``algorithms.paper_settings.diffusion_ql``)."""
        return paper_settings.diffusion_ql(dataset)

    def __init__(self, config: DQLConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        c = self.cfg = config
        self.spec, self.device = spec, torch.device(device)
        self.act_low = torch.tensor(spec.act_low, dtype=torch.float32, device=self.device)
        self.act_high = torch.tensor(spec.act_high, dtype=torch.float32, device=self.device)
        self.schedule = DiffusionSchedule(c.n_timesteps, c.beta_schedule).to(self.device)
        self.actor = NoiseMLP(spec.obs_dim, spec.act_dim, hidden=c.hidden_dim).to(self.device)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        critic_cls = FusedTwinQ if c.fused_critic else TwinQ
        self.critic = critic_cls(spec.obs_dim, spec.act_dim, c.hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # fused Adam: one kernel per step instead of a dozen foreach passes (same algorithm, ~5% faster on CPU)
        fused = self.device.type in ("cpu", "cuda")
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr, fused=fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, fused=fused)
        t_max = c.lr_maxt if c.lr_decay_schedule == "code" else c.max_steps
        self.lr_every = c.lr_step_every if c.lr_decay_schedule == "code" else 1  # gradient steps per scheduler step
        self.lr_schedulers = ([torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=0.0)
                               for o in (self.actor_opt, self.critic_opt)] if c.lr_decay else [])
        self.reward_mean = torch.tensor(0.0, device=self.device)  # reward_shaping="normalize": set by fit_dataset
        self.reward_std = torch.tensor(1.0, device=self.device)
        self._reward_fitted = False
        self._actor_params = list(self.actor.parameters())
        self.step = 0

    def fit_dataset(self, data) -> None:
        """``reward_shaping="normalize"``: the mean and std of ``data.rewards (N,)`` over all transitions."""
        rewards = torch.as_tensor(data.rewards, dtype=torch.float64)
        self.reward_mean.fill_(float(rewards.mean()))
        self.reward_std.fill_(float(rewards.std()))
        self._reward_fitted = True

    # ------------------------------------------------------------------ the policy

    def sample(self, obs: torch.Tensor, model: nn.Module | None = None, grad: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The K-step reverse chain: ``obs (B, obs_dim) -> actions (B, act_dim)`` within the action bounds.

        ``model``: the noise network (default: the online actor); ``grad=True`` keeps the graph.
        """
        noises = ddpm_noise(self.schedule, (obs.shape[0], self.spec.act_dim), device=self.device, generator=generator)
        with contextlib.nullcontext() if grad else torch.no_grad():
            return self._chain(self.actor if model is None else model, obs, noises)

    def _chain(self, model: nn.Module, obs: torch.Tensor, noises: torch.Tensor) -> torch.Tensor:
        """``ddpm_chain`` of ``model`` conditioned on ``obs (B, obs_dim)``, normals ``noises (K, B, act_dim)``."""
        return ddpm_chain(lambda x, k: model(x, k, obs), self.schedule, noises, clip=(self.act_low, self.act_high))

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor, k: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Denoising loss at a uniform random step (the code's ``Diffusion.loss``): scalar.  ``k (B,)`` and
        ``noise (B, act_dim)``: the draws (else drawn here, ``k`` first)."""
        return ddpm_loss(lambda x, kk: self.actor(x, kk, obs), self.schedule, actions, k=k, noise=noise)

    def q_loss(self, q1_new: torch.Tensor, q2_new: torch.Tensor, coin: torch.Tensor | None = None) -> torch.Tensor:
        """``-mean Q_i / mean |Q_j|.detach()`` for ``q*_new (B, 1)``; (i, j) random as in the code, or (1, 2).

        ``coin``: a 0-d uniform draw choosing (1, 2) when > 0.5 (else drawn here)."""
        loss_12 = -q1_new.mean() / q2_new.abs().mean().detach()
        if not self.cfg.random_q_head:
            return loss_12
        loss_21 = -q2_new.mean() / q1_new.abs().mean().detach()
        # The code flips np.random per step; a tensor coin from torch's generator keeps it seeded and sync-free.
        coin = torch.rand((), device=self.device) if coin is None else coin
        return torch.where(coin > 0.5, loss_12, loss_21)

    # ------------------------------------------------------------------ one gradient step

    # The step's two graphs, pure functions of the batch and of random draws made beforehand (in the order
    # the code draws them): eager by default, each one torch.compile'd graph with train.compile (``compile``).

    def _critic_loss(self, s: torch.Tensor, a: torch.Tensor, r: torch.Tensor, s2: torch.Tensor,
                     not_done: torch.Tensor, noises: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(||Q1(s, a) - y||^2 + ||Q2(s, a) - y||^2, mean Q1, mean y)``, scalars, with the TD target (no grad)
        ``y (B, 1) = r + gamma (1 - done) min(Q1', Q2')(s', a')``, ``a'`` from the EMA actor's chain on
        ``noises (K, B, act_dim)``; ``max_q_backup``: ``noises (K, B n, act_dim)``, and each target critic's
        max over the n next actions of a state before the min."""
        c = self.cfg
        with torch.no_grad():
            if c.max_q_backup:
                n = c.n_backup_samples
                s2_rep = s2.repeat_interleave(n, dim=0)                         # (B n, obs_dim)
                t1, t2 = self.critic_target(s2_rep, self._chain(self.ema_actor, s2_rep, noises))
                target_q = torch.min(t1.view(-1, n).amax(1, keepdim=True), t2.view(-1, n).amax(1, keepdim=True))
            else:
                t1, t2 = self.critic_target(s2, self._chain(self.ema_actor, s2, noises))
                target_q = torch.min(t1, t2)
            target_q = r + not_done * c.gamma * target_q                       # (B, 1)
        q1, q2 = self.critic(s, a)
        return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q), q1.detach().mean(), target_q.mean()

    def _actor_loss(self, s: torch.Tensor, a: torch.Tensor, bc_k: torch.Tensor, bc_noise: torch.Tensor,
                    noises: torch.Tensor, coin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(L_bc + eta L_q, L_bc, L_q, mean Q1(s, a_new))``: ``a_new`` through the differentiable chain on
        ``noises (K, B, act_dim)``, scored by the critic just updated (as in the code)."""
        bc_loss = self.bc_loss(s, a, bc_k, bc_noise)
        if self.cfg.eta == 0:  # pure diffusion BC: skip the chain (the Q term has zero weight)
            zero = torch.zeros((), device=s.device)
            return bc_loss, bc_loss, zero, zero
        q1_new, q2_new = self.critic(s, self._chain(self.actor, s, noises))
        ql_loss = self.q_loss(q1_new, q2_new, coin)
        return bc_loss + self.cfg.eta * ql_loss, bc_loss, ql_loss, q1_new.detach().mean()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a batch of transitions.

        ``batch``: ``observations (B, obs_dim)``, ``actions (B, act_dim)``, ``rewards (B,)``,
        ``next_observations (B, obs_dim)``, ``terminals (B,)``.  Returns ``train/...`` floats.
        """
        c, dev = self.cfg, self.device
        s = batch["observations"].to(dev, torch.float32)
        a = batch["actions"].to(dev, torch.float32)
        r = batch["rewards"].to(dev, torch.float32).reshape(-1, 1)
        s2 = batch["next_observations"].to(dev, torch.float32)
        not_done = 1.0 - batch["terminals"].to(dev, torch.float32).reshape(-1, 1)
        if c.reward_shaping == "antmaze":
            r = (r - 0.5) * 4.0
        elif c.reward_shaping == "normalize":
            if not self._reward_fitted:
                raise RuntimeError("DiffusionQL: reward_shaping='normalize' needs the dataset's rewards: "
                                   "call fit_dataset(data) before update()")
            r = (r - self.reward_mean) / self.reward_std
        b, shape = s.shape[0], (s.shape[0], self.spec.act_dim)

        # ---- critic: TD target from the EMA actor's next actions and the target critic
        n_next = b * (c.n_backup_samples if c.max_q_backup else 1)
        critic_loss, q_mean, target_mean = self._critic_loss(s, a, r, s2, not_done,
                                                             ddpm_noise(self.schedule, (n_next, self.spec.act_dim)))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_gn = self._clip_grads(self.critic.parameters())
        self.critic_opt.step()

        # ---- actor: BC + eta * normalized Q of actions sampled through the differentiable chain
        bc_k = torch.randint(0, c.n_timesteps, (b,), device=dev)               # the draws, in the code's order
        bc_noise = torch.randn(shape, device=dev)
        noises = ddpm_noise(self.schedule, shape) if c.eta > 0 else None
        coin = torch.rand((), device=dev) if c.eta > 0 and c.random_q_head else torch.zeros((), device=dev)
        # the critic's weights as constants here: only the actor trains on this loss (the code computes the
        # critic's gradients too and zeroes them unused), so the backward skips the critic's weight gradients
        self.critic.requires_grad_(False)
        try:
            actor_loss, bc_loss, ql_loss, new_q = self._actor_loss(s, a, bc_k, bc_noise, noises, coin)
        finally:
            self.critic.requires_grad_(True)
        self.actor_opt.zero_grad(set_to_none=True)
        # inputs=: only the actor's gradients; the critic's weight gradients would be thrown away anyway.
        actor_loss.backward(inputs=self._actor_params)
        actor_gn = self._clip_grads(self._actor_params)
        self.actor_opt.step()

        # ---- EMA actor (step counted before the increment, as the code) and Polyak target critic
        if self.step % c.update_ema_every == 0:
            if self.step >= c.step_start_ema:
                ema_update(self.ema_actor, self.actor, c.ema_decay)
            elif c.ema_copy_before_start:
                torch._foreach_copy_(list(self.ema_actor.parameters()), self._actor_params)
        soft_update(self.critic_target, self.critic, c.tau)
        self.step += 1
        if self.step % self.lr_every == 0:
            for sched in self.lr_schedulers:
                sched.step()

        names = ["bc_loss", "ql_loss", "actor_loss", "critic_loss", "q_mean", "new_q_mean", "target_q_mean",
                 "actor_grad_norm", "critic_grad_norm"]
        values = torch.stack([bc_loss.detach(), ql_loss.detach(), actor_loss.detach(), critic_loss.detach(),
                              q_mean, new_q, target_mean, actor_gn, critic_gn]).unbind()  # no sync
        out = {f"train/{n}": v for n, v in zip(names, values)}
        if self.lr_schedulers:
            out["train/lr"] = self.actor_opt.param_groups[0]["lr"]
        return out

    def compile(self) -> None:
        """``train.compile``: the step's two graphs (the critic loss with its TD target, the actor loss: each a
        K-step chain with its networks and the arithmetic between them) as ``torch.compile``'d functions, forward and
        backward fused across the chain.  The random draws stay eager (same streams), the networks stay plain
        modules (same state_dict, checkpoints, optimizers); the math is the eager step's up to float round-off.
        Acting (rollout actors) stays eager.  Costs a minute or two of compilation on the first steps on CPU."""
        for name in ("_critic_loss", "_actor_loss"):
            setattr(self, name, torch.compile(getattr(self, name)))  # the instance's compiled graph shadows it

    def _clip_grads(self, params) -> torch.Tensor:
        """Clip to ``grad_norm`` (if > 0) and return the pre-clip global gradient norm as a 0-d tensor."""
        if self.cfg.grad_norm > 0:
            return nn.utils.clip_grad_norm_(params, self.cfg.grad_norm).detach()
        return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]).detach()

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``obs (B, 1, obs_dim) -> (B, 1, act_dim)``: N candidates per state, one drawn by softmax(min target Q).

        ``generator`` (on the algorithm's device) makes the draw reproducible; default: torch's global RNG.
        """
        obs = torch.as_tensor(obs)
        s = obs[:, -1].to(self.device, torch.float32)                          # (B, obs_dim)
        n = self.cfg.n_action_samples
        s_rep = s.repeat_interleave(n, dim=0)                                   # (B n, obs_dim)
        cand = self.sample(s_rep, self.ema_actor if self.cfg.act_with_ema else self.actor, generator=generator)
        q = self.critic_target.q_min(s_rep, cand).view(-1, n)                   # (B, n)
        return select_by_q(cand.view(-1, n, self.spec.act_dim), q, generator).unsqueeze(1)

    # ------------------------------------------------------------------ plain-tensor checkpoints

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "ema_actor": self.ema_actor.state_dict(),
                "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "step": torch.tensor(self.step), "reward_mean": self.reward_mean.clone(),
                "reward_std": self.reward_std.clone()}

    def policy_state_dict(self) -> dict:
        """What ``act`` needs (the sampling actor and the target critic that ranks candidates): for rollout workers."""
        key = "ema_actor" if self.cfg.act_with_ema else "actor"
        return {key: getattr(self, key).state_dict(), "critic_target": self.critic_target.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Load a ``state_dict()`` or a ``policy_state_dict()`` (parts that are missing are left as they are)."""
        for key in ("actor", "ema_actor", "critic", "critic_target", "actor_opt", "critic_opt"):
            if key in d:
                getattr(self, key).load_state_dict(d[key])
        if "step" in d:
            self.step = int(d["step"])
            for sched in self.lr_schedulers:  # the optimizers' lr came back with their state; resume the cosine
                sched.last_epoch = self.step // self.lr_every
        for k in ("reward_mean", "reward_std"):
            if k in d:
                getattr(self, k).copy_(d[k])
                self._reward_fitted = True


__all__ = ["DQLConfig", "DiffusionQL", "FusedTwinQ", "select_by_q"]
