"""Diffusion Policy speed: training samples/s and milliseconds per action chunk.

For both backbones, at the paper's size and at a small CPU size, on Push-T shapes (obs 20-d, act
2-d, To=2, Tp=16, Ta=8): samples/s of ``update`` at batch 256 (the paper's batch), and the time of
one ``act`` call (one whole chunk) with DDIM 16 steps and DDPM 100 steps, at batch 1 (one env) and
at a batch of envs.  Also the window sampler's cost per batch.  CUDA when available.

    python benchmarks/bench_diffusion_policy.py                      # everything, auto device
    python benchmarks/bench_diffusion_policy.py --sizes small --threads 2 --json out.json

Run from the repo root (the project's ``platform`` package must shadow the standard library's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms import EnvSpec  # noqa: E402
from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig  # noqa: E402

SIZES = {
    ("cnn", "paper"): dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256),
    ("cnn", "small"): dict(down_dims=(64, 128, 256), diffusion_step_embed_dim=64),
    ("transformer", "paper"): dict(n_layer=8, n_head=4, n_emb=256),
    ("transformer", "small"): dict(n_layer=4, n_head=4, n_emb=128),
}
OBS_DIM, ACT_DIM, TO, TP = 20, 2, 2, 16


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _spec() -> EnvSpec:
    return EnvSpec(obs_dim=OBS_DIM, act_dim=ACT_DIM, obs_low=(0.0,) * OBS_DIM, obs_high=(512.0,) * OBS_DIM,
                   act_min=(0.0,) * ACT_DIM, act_max=(512.0,) * ACT_DIM, act_low=(0.0,) * ACT_DIM,
                   act_high=(512.0,) * ACT_DIM)


def _timed(fn, device, min_iters: int, min_seconds: float) -> float:
    """Seconds per call: one warm-up call, then at least ``min_iters`` calls and ``min_seconds``."""
    fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - t0) / n


def bench_one(backbone: str, size: str, device: torch.device, batch: int, act_batches: list[int],
              min_seconds: float) -> dict:
    torch.manual_seed(0)
    spec = _spec()
    algo = DiffusionPolicy(DiffusionPolicyConfig(backbone=backbone, **SIZES[(backbone, size)]), spec, device)
    row = {"backbone": backbone, "size": size, "params_M": algo.num_parameters() / 1e6, "device": str(device)}
    train_batch = {"obs": torch.rand(batch, TO, OBS_DIM, device=device) * 512,
                   "action": torch.rand(batch, TP, ACT_DIM, device=device) * 512}
    sec = _timed(lambda: algo.update(train_batch), device, min_iters=2, min_seconds=min_seconds)
    row["train_steps_per_s"] = 1.0 / sec
    row["train_samples_per_s"] = batch / sec
    for sampler, steps in (("ddim", 16), ("ddpm", 100)):
        algo.cfg.sampler, algo.cfg.n_inference_steps = sampler, steps  # same weights, other sampler
        for b in act_batches:
            obs = torch.rand(b, TO, OBS_DIM, device=device) * 512
            sec = _timed(lambda: algo.act(obs), device, min_iters=2, min_seconds=min_seconds / 2)
            row[f"ms_per_chunk_{sampler}{steps}_b{b}"] = 1e3 * sec
    return row


def bench_sampler(batch: int) -> float:
    """Microseconds to cut one batch of (To, Tp) windows from Push-T-sized arrays (numpy)."""
    from platform.datasets.sequence import SequenceSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(60, 250, size=90)
    ends = np.cumsum(lengths)
    obs = rng.random((ends[-1], OBS_DIM), dtype=np.float32)
    act = rng.random((ends[-1], ACT_DIM), dtype=np.float32)
    s = SequenceSampler(ends, TO, TP, 8)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        s.get(s.sample(batch, rng), obs, act)
        n += 1
    return 1e6 * (time.perf_counter() - t0) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--backbones", default="cnn,transformer")
    p.add_argument("--sizes", default="small,paper")
    p.add_argument("--batch", type=int, default=256, help="training batch (paper: 256)")
    p.add_argument("--act-batches", default="1,50", help="act() batch sizes (1 env; 50 = the paper's test seeds)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="time each measurement at least this long")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    act_batches = [int(b) for b in args.act_batches.split(",") if b]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# Diffusion Policy benchmark: torch {torch.__version__}, {name}, train batch {args.batch}")
    print(f"window sampler: {bench_sampler(args.batch):.0f} us per batch of {args.batch} (To=2, Tp=16, numpy)")
    rows = []
    for size in args.sizes.split(","):
        for backbone in args.backbones.split(","):
            row = bench_one(backbone, size, device, args.batch, act_batches, args.min_seconds)
            rows.append(row)
            cells = [f"{row['params_M']:.2f}M", f"{row['train_steps_per_s']:.3g} steps/s",
                     f"{row['train_samples_per_s']:.4g} samples/s"]
            cells += [f"{k.removeprefix('ms_per_chunk_')} {v:.1f} ms" for k, v in row.items()
                      if k.startswith("ms_per_chunk_")]
            print(f"{backbone:12s} {size:6s} " + " | ".join(cells), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "batch": args.batch, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
