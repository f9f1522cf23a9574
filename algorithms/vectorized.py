"""N seeds of one Diffusion-QL config trained in one process, in lockstep, with ``torch.func``.

Each seed is a full ``DiffusionQL`` (same constructor, so seed ``i``'s initial weights are exactly those
of ``torch.manual_seed(seeds[i]); DiffusionQL(config, spec)``); their parameters and Adam moments are
stacked along a leading seed axis ``N``.  One ``update`` computes all seeds' gradients at once with
``vmap(grad(loss))`` over the stacked parameters (``functional_call`` on one template network), then
clips, steps Adam, updates the EMA actor and the Polyak target critic with ``_foreach`` ops on the
stacked tensors (they are element-wise, so the seed axis costs nothing there).

Randomness is drawn outside the ``vmap`` from one generator per seed, in exactly the order
``DiffusionQL.update`` draws from torch's global RNG (the target chain's K normals, the BC loss's step
and noise, the actor chain's K normals, the Q-head coin).  Each generator starts from the global RNG
state right after that seed's model was built, so seed ``i`` of a vectorized run follows the same
random stream as an ordinary run of seed ``i`` and matches it to float round-off
(tests/test_vectorized.py).

Supported: the paper's defaults (``max_q_backup=False``, ``reward_shaping="none"``, ``lr_decay=False``,
``eta > 0``); other options raise ``ValueError``.  No Ray in here.

How ``platform/training.py`` uses it (``train: {vectorize_seeds: true}``, ``VectorizedSeedRuns``): a trial with
seeds ``[s_1..s_N]`` builds one ``VectorizedDQL(config, env_spec, seeds)`` instead of N ``SeedRun``s,
stacks the N samplers' batches (``stack_batches``) each step, and reports ``update``'s per-seed metric
dicts under ``seed<s>/...`` as today; ``seed_state_dict(i)`` gives each seed's plain ``DiffusionQL``
state for checkpoints and for the rollout actors, ``load_seed_state_dict`` restores it.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from algorithms import EnvSpec
from algorithms.diffusion.samplers import ddpm_chain
from algorithms.dql import DiffusionQL, DQLConfig

_MODELS = ("actor", "ema_actor", "critic", "critic_target")


def stack_batches(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """N per-seed batches ``{key: (B, ...)}`` -> one ``{key: (N, B, ...)}``."""
    return {k: torch.stack([b[k] for b in batches]) for k in batches[0]}


class VectorizedDQL:
    """N seeds of ``DiffusionQL(config)`` trained together.

    ``update(batch)``: ``batch`` as ``DiffusionQL.update``'s with a leading seed axis ``(N, B, ...)``
    (``stack_batches``); returns one metrics dict per seed.  ``seed_state_dict(i)`` is seed ``i``'s
    ordinary ``DiffusionQL.state_dict()`` (plain tensors).
    """

    stack_batches = staticmethod(stack_batches)  # what the platform calls (``Algorithm.vectorized_seeds``)

    def __init__(self, config: DQLConfig, spec: EnvSpec, seeds: list[int], device: torch.device | str = "cpu"):
        c = config
        if c.max_q_backup or c.reward_shaping != "none" or c.lr_decay or c.eta <= 0:
            raise ValueError("VectorizedDQL supports max_q_backup=False, reward_shaping='none', lr_decay=False "
                             "and eta > 0 only")
        if not seeds:
            raise ValueError("VectorizedDQL needs at least one seed")
        self.cfg, self.spec, self.seeds, self.device = c, spec, list(seeds), torch.device(device)
        self.generators, algos = [], []
        rng = torch.get_rng_state()
        for s in self.seeds:
            torch.manual_seed(s)
            algos.append(DiffusionQL(c, spec, self.device))
            g = torch.Generator(device=self.device)
            g.set_state(torch.get_rng_state() if self.device.type == "cpu" else torch.cuda.get_rng_state(self.device))
            self.generators.append(g)
        torch.set_rng_state(rng)
        self.template = algos[0]  # its modules run every seed's weights through functional_call
        self.params = {m: stack_module_state([getattr(a, m) for a in algos])[0] for m in _MODELS}
        for m in _MODELS:  # detached leaves; gradients come from torch.func.grad, never from .grad
            self.params[m] = {k: v.detach() for k, v in self.params[m].items()}
        self.adam = {m: {"m": {k: torch.zeros_like(v) for k, v in self.params[m].items()},
                         "v": {k: torch.zeros_like(v) for k, v in self.params[m].items()}}
                     for m in ("actor", "critic")}
        self.step = 0

    # ------------------------------------------------------------------ one seed's losses (vmapped)

    def _chain(self, actor_params, s, noises):
        """The K-step DDPM chain of ``ddpm_sample`` with given normals ``noises (K, B, act_dim)``."""
        return ddpm_chain(lambda x, k: functional_call(self.template.actor, actor_params, (x, k, s)),
                          self.template.schedule, noises, clip=(self.template.act_low, self.template.act_high))

    def _critic_loss(self, critic_params, target_params, ema_params, b, rnd):
        c = self.cfg
        with torch.no_grad():
            a2 = self._chain(ema_params, b["next_observations"], rnd["target_chain"])
            t1, t2 = functional_call(self.template.critic_target, target_params, (b["next_observations"], a2))
            not_done = 1.0 - b["terminals"].reshape(-1, 1)
            target_q = b["rewards"].reshape(-1, 1) + not_done * c.gamma * torch.min(t1, t2)
        q1, q2 = functional_call(self.template.critic, critic_params, (b["observations"], b["actions"]))
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        return loss, (loss, q1.mean(), target_q.mean())

    def _actor_loss(self, actor_params, critic_params, b, rnd):
        c, sch = self.cfg, self.template.schedule
        s, a = b["observations"], b["actions"]
        k, noise = rnd["bc_k"], rnd["bc_noise"]
        eps = functional_call(self.template.actor, actor_params, (sch.q_sample(a, k, noise), k, s))
        bc_loss = F.mse_loss(eps, noise)
        new_a = self._chain(actor_params, s, rnd["actor_chain"])
        q1, q2 = functional_call(self.template.critic, critic_params, (s, new_a))
        loss_12 = -q1.mean() / q2.abs().mean().detach()
        ql = loss_12
        if c.random_q_head:
            ql = torch.where(rnd["coin"] > 0.5, loss_12, -q2.mean() / q1.abs().mean().detach())
        loss = bc_loss + c.eta * ql
        return loss, (bc_loss, ql, loss, q1.mean())

    # ------------------------------------------------------------------ the step

    def _draw(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Each seed's normals etc. in ``DiffusionQL.update``'s order, stacked ``(N, ...)``."""
        K, A, dev = self.cfg.n_timesteps, self.spec.act_dim, self.device
        out = {"target_chain": [], "bc_k": [], "bc_noise": [], "actor_chain": [], "coin": []}
        for g in self.generators:
            out["target_chain"].append(torch.stack([torch.randn(batch_size, A, device=dev, generator=g)
                                                    for _ in range(K)]))
            out["bc_k"].append(torch.randint(0, K, (batch_size,), device=dev, generator=g))
            out["bc_noise"].append(torch.randn(batch_size, A, device=dev, generator=g))
            out["actor_chain"].append(torch.stack([torch.randn(batch_size, A, device=dev, generator=g)
                                                   for _ in range(K)]))
            out["coin"].append(torch.rand((), device=dev, generator=g) if self.cfg.random_q_head
                               else torch.zeros((), device=dev))
        return {k: torch.stack(v) for k, v in out.items()}

    def _clip(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-seed global-norm clipping in place (``clip_grad_norm_``'s formula); returns the pre-clip norms (N,)."""
        g = list(grads.values())
        norm = torch.stack([x.reshape(x.shape[0], -1).pow(2).sum(1) for x in g]).sum(0).sqrt()  # (N,)
        if self.cfg.grad_norm > 0:
            coef = (self.cfg.grad_norm / (norm + 1e-6)).clamp(max=1.0)
            for x in g:
                x.mul_(coef.view(-1, *([1] * (x.dim() - 1))))
        return norm

    def _adam(self, name: str, grads: dict[str, torch.Tensor], lr: float) -> None:
        """torch.optim.Adam's update (betas 0.9 / 0.999, eps 1e-8, no weight decay), on the stacked tensors."""
        b1, b2, eps, t = 0.9, 0.999, 1e-8, self.step + 1
        keys = list(grads)
        p = [self.params[name][k] for k in keys]
        m = [self.adam[name]["m"][k] for k in keys]
        v = [self.adam[name]["v"][k] for k in keys]
        g = [grads[k] for k in keys]
        torch._foreach_lerp_(m, g, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, 1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** t))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(p, m, denom, -lr / (1 - b1 ** t))

    def update(self, batch: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """One gradient step of every seed on its own batch ``{key: (N, B, ...)}``; one metrics dict per seed."""
        c, dev = self.cfg, self.device
        b = {k: v.to(dev, torch.float32) for k, v in batch.items()}
        rnd = self._draw(b["observations"].shape[1])
        P = self.params
        critic_grads, (critic_loss, q_mean, target_q) = vmap(grad(self._critic_loss, has_aux=True))(
            P["critic"], P["critic_target"], P["ema_actor"], b, rnd)
        critic_gn = self._clip(critic_grads)
        self._adam("critic", critic_grads, c.critic_lr)
        actor_grads, (bc_loss, ql_loss, actor_loss, new_q) = vmap(grad(self._actor_loss, has_aux=True))(
            P["actor"], P["critic"], b, rnd)
        actor_gn = self._clip(actor_grads)
        self._adam("actor", actor_grads, c.lr)
        actor_p, ema_p = list(P["actor"].values()), list(P["ema_actor"].values())
        if self.step % c.update_ema_every == 0:
            if self.step >= c.step_start_ema:
                torch._foreach_lerp_(ema_p, actor_p, 1.0 - c.ema_decay)
            elif c.ema_copy_before_start:
                torch._foreach_copy_(ema_p, actor_p)
        torch._foreach_lerp_(list(P["critic_target"].values()), list(P["critic"].values()), c.tau)
        self.step += 1
        names = ["bc_loss", "ql_loss", "actor_loss", "critic_loss", "q_mean", "new_q_mean", "target_q_mean",
                 "actor_grad_norm", "critic_grad_norm"]
        values = torch.stack([bc_loss, ql_loss, actor_loss, critic_loss, q_mean, new_q, target_q, actor_gn,
                              critic_gn], dim=1)  # (N, 9), left on the device: no sync
        return [{f"train/{n}": v for n, v in zip(names, row.unbind())} for row in values.unbind()]

    # ------------------------------------------------------------------ per-seed plain state

    def seed_state_dict(self, i: int) -> dict:
        """Seed ``i`` as a ``DiffusionQL.state_dict()`` (weights and step; optimizer moments under ``adam``)."""
        algo = self._seed_algo(i)
        d = {m: getattr(algo, m).state_dict() for m in _MODELS}
        d["step"] = torch.tensor(self.step)
        d["adam"] = {m: {s: {k: v[i].clone() for k, v in self.adam[m][s].items()} for s in ("m", "v")}
                     for m in ("actor", "critic")}
        return d

    def seed_policy_state_dict(self, i: int) -> dict:
        """Seed ``i``'s ``DiffusionQL.policy_state_dict()``: what a rollout worker needs (no optimizer moments)."""
        return self._seed_algo(i).policy_state_dict()

    def load_seed_state_dict(self, i: int, d: dict) -> None:
        algo = self._seed_algo(i)
        for m in _MODELS:
            getattr(algo, m).load_state_dict(d[m])
            for k, v in getattr(algo, m).named_parameters():
                self.params[m][k][i].copy_(v.detach())
        for m in ("actor", "critic"):
            for s in ("m", "v"):
                for k, v in d.get("adam", {}).get(m, {}).get(s, {}).items():
                    self.adam[m][s][k][i].copy_(v)
        self.step = int(d["step"])

    def _seed_algo(self, i: int) -> DiffusionQL:
        """A ``DiffusionQL`` holding seed ``i``'s current weights (a copy)."""
        algo = copy.copy(self.template)
        for m in _MODELS:
            module = copy.deepcopy(getattr(self.template, m))
            with torch.no_grad():
                for k, v in module.named_parameters():
                    v.copy_(self.params[m][k][i])
            setattr(algo, m, module)
        return algo


__all__ = ["VectorizedDQL", "stack_batches"]
