"""The algorithm contract and the pieces several algorithms share.  No Ray in here.

Every registered algorithm subclasses ``Algorithm`` and is built with ``algorithms.build(name, config,
spec, device)``; the platform calls only the methods below, never probes for optional ones
(``fit_dataset`` and ``policy_state_dict`` have defaults here).  ``tests/test_contract.py`` checks every
registered algorithm against this contract.

Shared pieces, one definition each: config type coercion, Polyak/EMA updates, the twin critics
(Diffusion-QL/EDP's Mish ``TwinQ``, TD3's ReLU ``TwinCritic``), dataset state normalization, IQL's
expectile loss and advantage weights (IQL and EDP's IQL backbone), and the warm-up + cosine learning
rate factor (Diffusion Policy, IBC, BET).
"""
from __future__ import annotations

import dataclasses
import math
import operator
from typing import ClassVar, Collection

import numpy as np
import torch
import torch.nn as nn

from algorithms.diffusion.nets import mlp
from algorithms.fields import coerce_value
from algorithms.paper_scores import PaperScore


class Algorithm:
    """The one interface between the platform and an algorithm.

    ``Algo(config, spec, device)`` builds it (the platform seeds torch first); then::

        algo.fit_dataset(data)        # once, before training: dataset statistics beyond the EnvSpec
        metrics = algo.update(batch)  # one gradient step -> {"train/...": 0-d tensor or float}
        actions = algo.act(obs)       # no grad; see data_kind for the shapes
        algo.state_dict() / algo.load_state_dict(d)   # plain tensors only (checkpoints, resume)
        algo.policy_state_dict()      # what a rollout worker needs to act (default: the whole state)
        algo.reset(n_envs)            # the rollout starts a batch of episodes (default: nothing to forget)
        algo.distribute(wrap, rank, world)  # data-parallel training (algorithms with data_parallel = True)
        algo.compile()                # torch.compile the networks named in compile_modules (train.compile)

    ``update``'s metrics are 0-d tensors left on the device (or plain floats for host-side values such as
    the learning rate): reading them forces a host sync, so the platform sums them and reads them once per
    report (``train.log_every`` / evaluations), never per step.

    ``data_kind`` tells the platform which batches the algorithm eats: ``"transitions"`` (D4RL
    qlearning format, ``act`` maps ``(B, 1, obs_dim) -> (B, 1, act_dim)``) or ``"sequences"`` (windows
    ``obs (B, To, obs_dim)`` / ``action (B, Tp, act_dim)``; the instance then has ``obs_horizon``,
    ``pred_horizon`` and ``action_horizon``, and ``act`` maps ``(B, To, obs_dim) -> (B, Ta, act_dim)``).
    """

    data_kind: ClassVar[str] = "transitions"
    # transitions: one observation in, one action out (sequence models set their own in __init__)
    obs_horizon: int = 1
    pred_horizon: int = 1
    action_horizon: int = 1
    # sequences: how many steps a training window may start before its episode (padded with the first step);
    # None: obs_horizon - 1 (Diffusion Policy's convention)
    window_pad_before: int | None = None
    # train.data_parallel: one model trained by several workers, each on its shard of the global batch
    data_parallel: ClassVar[bool] = False
    # train.compile: the networks (attribute names) whose forward torch.compile fuses; empty: not supported
    compile_modules: ClassVar[tuple[str, ...]] = ()
    # act's actions always lie in the action box (EDP: False, its authors' sampler leaves the last step unclipped,
    # a few hundredths over; the rollout clips at the env and counts them, platform/evaluation.py)
    acts_in_box: ClassVar[bool] = True
    # the papers' published numbers the report shows next to this algorithm's (algorithms/paper_scores.py), tried in
    # order; and the paper's training budget by dataset source ("*": any source), shown next to what was run
    paper_scores: ClassVar[tuple[PaperScore, ...]] = ()
    paper_budget: ClassVar[dict[str, str]] = {}
    # the tests' small configuration (config fields over the defaults: tests/test_contract.py builds every registered
    # algorithm with it), and the variants of it (overrides) whose compiled update is checked against the eager one
    tiny_config: ClassVar[dict] = {}
    compile_variants: ClassVar[tuple[dict, ...]] = ({},)

    @classmethod
    def paper_settings(cls, dataset: str) -> dict:
        """The config values the paper's public code uses for ``dataset``'s task (``algorithms/paper_settings.py``):
        the platform fills the fields a study leaves unset with them (``algorithms.resolve_params``) and records
        them as "paper, per task".  Default: none (one setting for every task)."""
        return {}

    @classmethod
    def budget_params(cls, steps: int, config_fields: Collection[str]) -> dict:
        """The config values that follow the trial's budget of ``steps`` gradient steps (``train.steps``); the train
        loop puts them under the study's and the paper's per-task values.  Default: a config field ``max_steps``
        (the span of a learning-rate schedule) is the trial's budget, not the paper's."""
        return {"max_steps": steps} if "max_steps" in config_fields else {}

    @classmethod
    def vectorized_seeds(cls) -> type | None:
        """``train.vectorize_seeds``: the class that trains N seeds of this algorithm in one vectorized update, or
        None (not supported; the default).  It is built as ``Vec(config, spec, seeds, device)`` and has
        ``stack_batches(batches)`` (static: the N seeds' batches -> one), ``update(stacked) -> [metrics per seed]``,
        ``generators`` (one per seed), ``seed_state_dict(i)``, ``seed_policy_state_dict(i)`` and
        ``load_seed_state_dict(i, d)`` (``algorithms/vectorized.py``)."""
        return None

    def fit_dataset(self, data) -> None:
        """Read dataset statistics (``platform.datasets.OfflineDataset``); the default needs none."""

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, "torch.Tensor | float"]:
        raise NotImplementedError(f"{type(self).__name__}.update")

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.act")

    def state_dict(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.state_dict")

    def load_state_dict(self, d: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__}.load_state_dict")

    def policy_state_dict(self) -> dict:
        return self.state_dict()

    def reset(self, n_envs: int) -> None:
        """A batch of ``n_envs`` new episodes starts (the rollout calls it): stateful policies forget."""

    def compile(self) -> None:
        """``torch.compile`` each network of ``compile_modules`` in place (``nn.Module.compile``: the state_dict
        keys, checkpoints and optimizers are unchanged; only the forward is traced and fused).  The math is the
        same up to float round-off (fused element-wise kernels).  Costs seconds of compilation on the first
        steps and needs a C++ compiler on CPU (Triton on GPU)."""
        if not self.compile_modules:
            raise NotImplementedError(f"{type(self).__name__} does not support train.compile")
        for name in self.compile_modules:  # dotted names reach inside a module ("critic.q1_model")
            operator.attrgetter(name)(self).compile()

    def distribute(self, wrap, rank: int, world: int) -> None:
        """Train as rank ``rank`` of ``world`` data-parallel replicas: ``wrap(module)`` returns the module
        whose backward averages gradients across the replicas (DDP); ``update`` then gets this rank's
        ``B / world`` rows of the global batch and draws its own randomness for the global batch, keeping
        this rank's rows, so the replicas together take the step one replica would take on the whole batch."""
        raise NotImplementedError(f"{type(self).__name__} does not support train.data_parallel")


# ----------------------------------------------------------------------------- configs


def coerce_field_types(cfg) -> None:
    """Normalize a config dataclass's scalar fields in place (``algorithms.fields.coerce_value``, lenient:
    search spaces hand over ``numpy.int64`` or ``5.0``), raising ``ValueError`` naming the field."""
    for f in dataclasses.fields(cfg):
        t = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            setattr(cfg, f.name, coerce_value(getattr(cfg, f.name), t))
        except ValueError as e:
            raise ValueError(f"{type(cfg).__name__}: {f.name} must be {e}, got {getattr(cfg, f.name)!r}") from None


# ----------------------------------------------------------------------------- target networks


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak: ``target <- tau * source + (1 - tau) * target`` for every parameter (one fused foreach op)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """EMA: ``ema <- decay * ema + (1 - decay) * model`` for every parameter (the code's ``EMA``)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


# ----------------------------------------------------------------------------- critics and state normalization


class TwinQ(nn.Module):
    """Two independent Q networks, 3 x ``hidden`` Mish each (the code's ``Critic``; same parameter names).

    ``forward(s (B, obs_dim), a (B, act_dim)) -> (q1 (B, 1), q2 (B, 1))``; ``q1`` and ``q_min`` likewise.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.q1_model = mlp(obs_dim + act_dim, 1, hidden)
        self.q2_model = mlp(obs_dim + act_dim, 1, hidden)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([s, a], dim=-1)
        return self.q1_model(x), self.q2_model(x)

    def q1(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.q1_model(torch.cat([s, a], dim=-1))

    def q_min(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.min(*self(s, a))


class TwinCritic(nn.Module):
    """Two independent Q networks on ``concat[s, a]``, ``n_hidden`` x ``hidden`` ReLU each (TD3's critics).

    ``forward(s (B, obs_dim), a (B, act_dim)) -> (q1 (B, 1), q2 (B, 1))``; ``q1`` alone and ``q_min`` likewise.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, n_hidden: int = 2):
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, 1, hidden, n_hidden, act=nn.ReLU)
        self.q2_net = mlp(obs_dim + act_dim, 1, hidden, n_hidden, act=nn.ReLU)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([s, a], dim=-1)
        return self.q1_net(x), self.q2_net(x)

    def q1(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([s, a], dim=-1))

    def q_min(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.min(*self(s, a))


class ObsNormalizer(nn.Module):
    """``s -> (s - mean) / std`` with the dataset's per-dimension statistics (CORL's ``normalize_states``).

    ``mean``, ``std`` ``(obs_dim,)`` and ``fitted`` are buffers: plain tensors in every state dict.
    The identity until ``fit`` is called.
    """

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, observations, eps: float) -> None:
        """Statistics of ``observations (N, obs_dim)`` (numpy or torch): ``mean``, population std ``+ eps``."""
        x = observations.detach().cpu().numpy() if torch.is_tensor(observations) else np.asarray(observations)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0] or len(x) == 0:
            raise ValueError(f"ObsNormalizer.fit: expected observations (N, {self.mean.shape[0]}), got {x.shape}")
        self.mean.copy_(torch.as_tensor(x.mean(0, dtype=np.float64)))
        self.std.copy_(torch.as_tensor(x.std(0, dtype=np.float64) + eps))
        self.fitted.fill_(True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std

    def unnormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


def batch_tensors(batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(s (B, obs_dim), a (B, act_dim), r (B, 1), s2 (B, obs_dim), not_done (B, 1))`` as float32 on ``device``."""
    f = lambda k: batch[k].to(device, torch.float32)  # noqa: E731
    return (f("observations"), f("actions"), f("rewards").reshape(-1, 1), f("next_observations"),
            1.0 - f("terminals").reshape(-1, 1))


# ----------------------------------------------------------------------------- IQL's losses (IQL, EDP's IQL backbone)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric L2: ``mean |expectile - 1(diff < 0)| diff^2`` over any shape -> scalar."""
    weight = torch.abs(expectile - (diff < 0).float())
    return (weight * diff.pow(2)).mean()


def advantage_weights(adv: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """AWR weights ``min(exp(temperature * adv), max_weight)``, same shape as ``adv`` (IQL: beta 3, clip 100)."""
    return torch.exp(temperature * adv).clamp(max=max_weight)


def reward_scale_from_returns(rewards, episode_ends, steps: float = 1000.0) -> float:
    """``steps / (max return - min return)`` over the episodes ``rewards[episode_ends[e-1]:episode_ends[e]]``.

    ``rewards (N,)``, ``episode_ends (E,)`` exclusive ends (the last equal to N).  IQL's locomotion scaling
    (CORL's ``modify_reward`` with ``max_episode_steps=1000``).
    """
    rewards, ends = np.asarray(rewards, dtype=np.float64), np.asarray(episode_ends, dtype=np.int64)
    if len(ends) == 0 or ends[-1] != len(rewards):
        raise ValueError(f"episode_ends must end at len(rewards)={len(rewards)}, got {ends[-3:]}")
    returns = np.add.reduceat(rewards, np.concatenate([[0], ends[:-1]]))
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise ValueError(f"reward_scaling='returns' needs episodes with different returns, got one value "
                         f"{returns.max():.6g} over {len(returns)} episodes")
    return steps / spread


# ----------------------------------------------------------------------------- learning-rate schedule


def lr_factor(step: int, warmup: int, max_steps: int, schedule: str) -> float:
    """diffusers' ``get_scheduler("cosine")``: linear warm-up from 0, then half a cosine to 0 at ``max_steps``.

    (Past ``max_steps`` the rate stays at 0; diffusers' formula would rise again.)
    """
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
