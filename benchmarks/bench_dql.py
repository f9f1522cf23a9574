"""Diffusion-QL speed: gradient steps/s and action-selection latency at the paper's settings.

HalfCheetah-sized problem (obs 17, act 6), batch 256, K = 5 (VP), the paper's networks (noise MLP
3 x 256 Mish, twin critic 3 x 256 Mish).  For each device (CPU with ``--threads`` threads, and CUDA
when available):

* ``steps/s``: ``DiffusionQL.update`` on random batches already on the device (the platform's
  sampler keeps the dataset there too), median and best of ``--repeats`` timed runs of ``--steps``.
* ``act ms``: one ``act`` call for 1 state (50 candidates through the K-step chain, softmax-Q pick),
  and for a batch of 10 states (a vector env).
* with ``--baseline``: the same step written the direct way (``nn.Mish``, per-step table gathers,
  backward into the critic's weights too, foreach Adam, four ``.item()`` per step), timed
  interleaved with ours so that both see the same machine load.  The public code
  (Zhendong-Wang/Diffusion-Policies-for-Offline-RL) measured 12.8 steps/s on a 2-core CPU (7.9 ms per action).

    python benchmarks/bench_dql.py --steps 100
    python benchmarks/bench_dql.py --steps 100 --timesteps 5,20 --baseline --json out.json

Run from the repo root (the project's ``platform`` package must shadow the standard library's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from algorithms import EnvSpec  # noqa: E402
from algorithms.diffusion.nets import FastMish  # noqa: E402
from algorithms.dql import DiffusionQL, DQLConfig, soft_update  # noqa: E402

OBS_DIM, ACT_DIM = 17, 6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(n: int, batch_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        b = {"observations": torch.randn(batch_size, OBS_DIM, generator=g),
             "actions": torch.rand(batch_size, ACT_DIM, generator=g) * 2 - 1,
             "rewards": torch.randn(batch_size, generator=g),
             "next_observations": torch.randn(batch_size, OBS_DIM, generator=g),
             "terminals": (torch.rand(batch_size, generator=g) < 0.01).float()}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


class DirectStep:
    """The same Diffusion-QL step written the direct way, as a cost baseline (not used by the platform).

    Differences from ``DiffusionQL.update``, all cost-only (same math): ``nn.Mish``; the schedule's
    coefficients gathered per step from the tables; ``actor_loss.backward()`` also fills the critic's
    gradients; foreach Adam; a coin from NumPy; four ``.item()`` host syncs per step.
    """

    def __init__(self, algo: DiffusionQL):
        self.a = algo
        for module in (algo.actor, algo.ema_actor, algo.critic, algo.critic_target):
            _swap_activation(module, nn.Mish)
        algo.actor_opt = torch.optim.Adam(algo.actor.parameters(), lr=algo.cfg.lr, foreach=True)
        algo.critic_opt = torch.optim.Adam(algo.critic.parameters(), lr=algo.cfg.critic_lr, foreach=True)

    def _chain(self, model, obs):
        a, sch = self.a, self.a.schedule
        x = torch.randn(obs.shape[0], ACT_DIM, device=a.device)
        for i in reversed(range(sch.n_timesteps)):
            k = torch.full((obs.shape[0],), i, device=a.device, dtype=torch.long)
            x0 = sch.x0_from_eps(x, k, model(x, k, obs)).clamp(-1.0, 1.0)
            mean, log_var = sch.q_posterior(x0, x, k)
            nonzero = (1 - (k == 0).float()).reshape(-1, 1)
            x = mean + nonzero * (0.5 * log_var).exp() * torch.randn_like(x)
        return x.clamp(-1.0, 1.0)

    def __call__(self, batch):
        a, c = self.a, self.a.cfg
        s, act, r = batch["observations"], batch["actions"], batch["rewards"].reshape(-1, 1)
        s2, not_done = batch["next_observations"], 1 - batch["terminals"].reshape(-1, 1)
        q1, q2 = a.critic(s, act)
        with torch.no_grad():
            t1, t2 = a.critic_target(s2, self._chain(a.ema_actor, s2))
            target = r + not_done * c.gamma * torch.min(t1, t2)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        a.critic_opt.zero_grad()
        critic_loss.backward()
        nn.utils.clip_grad_norm_(a.critic.parameters(), c.grad_norm)
        a.critic_opt.step()
        bc_loss = a.bc_loss(s, act)
        n1, n2 = a.critic(s, self._chain(a.actor, s))
        if np.random.uniform() > 0.5:
            q_loss = -n1.mean() / n2.abs().mean().detach()
        else:
            q_loss = -n2.mean() / n1.abs().mean().detach()
        actor_loss = bc_loss + c.eta * q_loss
        a.actor_opt.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(a.actor.parameters(), c.grad_norm)
        a.actor_opt.step()
        if a.step % c.update_ema_every == 0 and a.step >= c.step_start_ema:
            with torch.no_grad():
                for pe, p in zip(a.ema_actor.parameters(), a.actor.parameters()):
                    pe.mul_(c.ema_decay).add_(p, alpha=1 - c.ema_decay)
        soft_update(a.critic_target, a.critic, c.tau)
        a.step += 1
        return [actor_loss.item(), bc_loss.item(), q_loss.item(), critic_loss.item()]


def _swap_activation(module: nn.Module, cls) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Mish, FastMish)):
            setattr(module, name, cls())
        else:
            _swap_activation(child, cls)


def _time_steps(step_fn, batches, steps: int, device) -> float:
    """Steps per second over ``steps`` calls (after the caller's warm-up)."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step_fn(batches[i % len(batches)])
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _time_act(algo: DiffusionQL, n_states: int, device, calls: int) -> float:
    """Median milliseconds of one ``act`` call for ``n_states`` states."""
    obs = torch.randn(n_states, 1, OBS_DIM, device=device)
    for _ in range(3):
        algo.act(obs)
    times = []
    for _ in range(calls):
        _sync(device)
        t0 = time.perf_counter()
        algo.act(obs)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench(device: torch.device, K: int, args) -> dict:
    torch.manual_seed(0)
    cfg = DQLConfig(n_timesteps=K, n_action_samples=args.candidates)
    ours = DiffusionQL(cfg, EnvSpec(OBS_DIM, ACT_DIM), device)
    batches = _batches(8, args.batch_size, device)
    runs = {"ours": (ours.update, [])}
    if args.baseline:
        torch.manual_seed(0)
        runs["direct"] = (DirectStep(DiffusionQL(cfg, EnvSpec(OBS_DIM, ACT_DIM), device)), [])
    for fn, _ in runs.values():  # warm-up (allocator, kernels, cuBLAS handles)
        for i in range(args.warmup):
            fn(batches[i % len(batches)])
    for _ in range(args.repeats):  # interleaved, so both see the same load
        for fn, out in runs.values():
            out.append(_time_steps(fn, batches, args.steps, device))
    row = {"device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None, "K": K,
           "batch_size": args.batch_size}
    for name, (_, out) in runs.items():
        row[f"{name}_steps_per_s_median"] = statistics.median(out)
        row[f"{name}_steps_per_s_best"] = max(out)
    row["act_ms_1_state"] = _time_act(ours, 1, device, args.act_calls)
    row["act_ms_10_states"] = _time_act(ours, 10, device, max(5, args.act_calls // 4))
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100, help="gradient steps per timed run (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median and best reported)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256, help="paper: 256")
    p.add_argument("--timesteps", default="5", help="comma-separated K values (paper: 5)")
    p.add_argument("--candidates", type=int, default=50, help="candidate actions per state when acting (paper: 50)")
    p.add_argument("--act-calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (the public-code reference numbers: 2)")
    p.add_argument("--devices", default="auto", help="'auto' (cpu, and cuda when present) or e.g. 'cpu' / 'cuda'")
    p.add_argument("--baseline", action="store_true", help="also time the direct-style step, interleaved")
    p.add_argument("--json", help="write the rows to this file")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.devices == "auto" \
        else args.devices.split(",")
    rows = [bench(torch.device(d), int(K), args) for d in names for K in args.timesteps.split(",")]

    print(f"\nDiffusion-QL, obs {OBS_DIM} / act {ACT_DIM}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.repeats} runs, act: {args.candidates} candidates per state; torch {torch.__version__}")
    head = f"{'device':<12}{'K':>4}{'steps/s med':>13}{'best':>8}"
    if args.baseline:
        head += f"{'direct med':>12}{'best':>8}{'speed-up':>10}"
    head += f"{'act ms (1)':>12}{'act ms (10)':>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        dev = r["device"] + (f" x{r['threads']}" if r["threads"] else "")
        line = f"{dev:<12}{r['K']:>4}{r['ours_steps_per_s_median']:>13.1f}{r['ours_steps_per_s_best']:>8.1f}"
        if args.baseline:
            line += (f"{r['direct_steps_per_s_median']:>12.1f}{r['direct_steps_per_s_best']:>8.1f}"
                     f"{r['ours_steps_per_s_median'] / r['direct_steps_per_s_median']:>9.2f}x")
        line += f"{r['act_ms_1_state']:>12.2f}{r['act_ms_10_states']:>13.2f}"
        print(line)
    print("reference (the public Diffusion-QL code, 2-core CPU): 12.8 steps/s at K=5, 6.0 at K=20; act 7.9 ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
