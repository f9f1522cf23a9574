"""EDP vs Diffusion-QL training speed, side by side in one process on the same batch.

    python benchmarks/bench_edp_vs_dql.py [--threads 2] [--device cpu|cuda] [--steps 20]

HalfCheetah-sized dims (obs 17, act 6), batch 256, the papers' networks.  Reports gradient steps/s for
DQL and EDP (TD3 backbone, DPM-Solver 15 steps for critic targets) at K = 5, 100, 1000 and the ratios
EDP/DQL at equal K and EDP(K)/DQL(K=5).  DQL at K=1000 is timed on fewer steps (it is ~200x slower).
Timings interleave the two methods per K so that machine noise hits both alike.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from algorithms import EnvSpec  # noqa: E402
from algorithms.dql import DiffusionQL, DQLConfig  # noqa: E402
from algorithms.edp import EDP, EDPConfig  # noqa: E402


def steps_per_s(algo, batch, n, device) -> float:
    algo.update(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        algo.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ks", default="5,100,1000")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    device = torch.device(a.device)
    spec = EnvSpec(17, 6)
    g = torch.Generator().manual_seed(0)
    batch = {"observations": torch.randn(256, 17, generator=g), "actions": torch.rand(256, 6, generator=g) * 2 - 1,
             "rewards": torch.randn(256, generator=g), "next_observations": torch.randn(256, 17, generator=g),
             "terminals": torch.zeros(256)}
    batch = {k: v.to(device) for k, v in batch.items()}
    rows = {}
    for k in [int(x) for x in a.ks.split(",")]:
        torch.manual_seed(0)
        dql = DiffusionQL(DQLConfig(n_timesteps=k), spec, device)
        edp = EDP(EDPConfig(n_timesteps=k), spec, device)
        n_dql = max(2, a.steps * 5 // k) if k > 5 else a.steps
        rows[k] = (steps_per_s(dql, batch, n_dql, device), steps_per_s(edp, batch, a.steps, device))
    base = rows[min(rows)][0]
    print(f"device {device}, {a.threads} threads, batch 256, obs 17 / act 6")
    print(f"{'K':>6} {'DQL steps/s':>12} {'EDP steps/s':>12} {'EDP/DQL same K':>15} {'EDP(K)/DQL(K=5)':>16}")
    for k, (d, e) in rows.items():
        print(f"{k:>6} {d:>12.2f} {e:>12.2f} {e / d:>15.1f} {e / base:>16.2f}")


if __name__ == "__main__":
    main()
