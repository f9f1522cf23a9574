"""Generate D4RL-format datasets with gymnasium environments (D4RL's recipe, made offline here).

    python -m platform.datasets.generate ENV QUALITY [--out FILE] [--samples N] [--steps N] [--seed S]

ENV: a row of ``collect.ENVS``, the one table of generated envs (its gymnasium id, default size, and whether its
behaviour policies are scripted here or SAC's): ``pendulum`` (Pendulum-v1, scripted), ``halfcheetah``,
``hopper``, ``walker2d`` (gymnasium MuJoCo v5, SAC).  Adding an env is a row there.
QUALITY, as in D4RL (Fu et al. 2020, section 5):

* ``random``: a uniform random policy.
* ``medium``: D4RL's level: a SAC policy stopped at the first evaluation whose return reaches a third of
  the way from D4RL's random to D4RL's expert reference return (halfcheetah 3858, hopper 1065,
  walker2d 1532; ``medium_threshold``).  A run that does not get there writes nothing and says what
  it reached: a file never carries a D4RL name it does not match.
* ``expert``: a fully trained SAC policy (its final evaluation at least 80 normalized).
* ``medium-replay``: the medium agent's whole replay buffer (everything it saw until it got there).
* ``medium-expert``: the medium and expert datasets concatenated.

Behaviour policies act stochastically while collecting, as D4RL's did, with their Gaussian noise drawn
from the collection's seeded numpy generator: the same seed gives the same file on any machine.
Episodes cut by the time limit are marked ``timeouts`` and only true terminations ``terminals``; a
collection of exactly ``--samples`` steps cuts its last episode (marked as a timeout, as D4RL's 1M-step
files do).  Files are written atomically and cached: without ``--out`` they go to the directory that
``generated:<env>-<quality>`` reads (``$DRL_DATA_DIR`` or ``~/.cache/diffusion-rl/datasets``), and an
existing file is kept unless ``--force``.

**Shipped behaviour policies** (``platform/datasets/policies/<env>-<quality>.pt``, a plain actor state
dict of about 0.3 MB loaded with ``weights_only=True``, and ``.json`` with its SAC run: steps, every
evaluation, the check returns): ``python -m platform.datasets.generate halfcheetah medium`` only
*collects* 1M steps from it (16 envs, batched acting) and takes minutes; a sweep whose dataset is
missing makes it before its trials start.  Which exist, what each cost and how far its data lands from
D4RL's own file: ``platform/datasets/policies/README.md``.  ``--train`` trains SAC here instead;
``--train --export-policy`` writes a new shipped policy (the medium snapshot) and no dataset.

**Pendulum** (the quickstart's and the tests' data): no training.  The expert is a scripted
energy-shaping swing-up with a PD balancer (``pendulum_expert``; deterministic return -150.7 per
200-step episode over 5000 episodes, about the task's known optimum of -150); for collection it adds
N(0, 0.1) torque noise.  ``medium`` takes a uniform random torque with probability 0.7 and the noisy
expert's otherwise; ``medium-replay`` mixes ten such policies whose random-action probability falls
from 1.0 to 0.7, like a learner's buffer.  Default 20,000 steps = 100 episodes.  Measured here with
seed 0 (mean episode return, normalized score, generation time; about 4 s more per command for the
imports; the 2 cores were shared with other jobs): random -1219.9 (1.0) 1.0 s; medium -750.1 (44.5)
1.8 s; expert -149.9 (100.1) 1.1 s; medium-replay -983.3 (22.9) 1.9 s; medium-expert -450.0 (72.3) 3.7 s.

**MuJoCo with ``--train``**: SAC (``algorithms/sac.py``: twin Q, auto-entropy, 256x256, lr 3e-4, batch
256, 10k random steps first) is trained for up to ``--steps`` env steps (one gradient step per env step)
and evaluated every ``--eval-every`` steps (10 deterministic episodes, one per env; each evaluated actor
kept as a snapshot).  All qualities of one env and seed share one training run in a work directory next
to the output (``<out dir>/work/<env>-sac-seed<S>/``): the agent, optimizer and RNG states plus the replay
buffer (npz chunks) are checkpointed every ``--checkpoint-every`` steps at an episode boundary, and a
rerun continues from the last checkpoint (also to extend training with a larger ``--steps``).
Cost on this 2-core CPU: about 50 SAC steps/s with one torch thread (the update, ~0.64 GFLOP, is most
of it; the critic is frozen during the actor's pass and no metric is read per step), so a medium policy
takes the 50k-200k steps SAC needs to reach the threshold (tens of minutes to about an hour), and
D4RL's 1M-step expert about 6 hours; ``--device cuda`` trains on a GPU.  Collection: 1M steps with 16
envs takes a few minutes; the random policy about 2.5 min (100k measured: 14.9 s, mean return -279.0
against D4RL's random reference -280.2).  Sanity check of the SAC implementation: on Pendulum-v1 it
reaches -146 (deterministic eval) after 5k steps.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from platform.datasets.behaviour import (check_shipped_policy, export_policy, generate_mujoco, load_shipped_policy,
                                          train_sac, train_until)
from platform.datasets.base import env_action_box
from platform.datasets.collect import (ENVS, GENERATOR_VERSION, QUALITIES, cached_path, collect, is_cheap,
                                        medium_threshold, missing_message, parse_name, pendulum_reference_returns)
from platform.datasets.d4rl import write_d4rl_hdf5

# ----------------------------------------------------------------------------- entry points


class DatasetLockTimeout(TimeoutError):
    """Another live process held a dataset's lock for longer than the wait allows (the message names both)."""


def lock_timeout_s() -> float:
    """How long generation waits for another process's lock on the same file ($DRL_DATASET_LOCK_TIMEOUT_S)."""
    return float(os.environ.get("DRL_DATASET_LOCK_TIMEOUT_S", 1800))


_THREAD_LOCKS: dict[str, threading.Lock] = {}  # POSIX locks are per process: threads of one process queue here


@contextmanager
def _file_lock(path: str, timeout_s: float | None = None):
    """Serialize generation of one file across processes (e.g. several Ray workers on first use).

    The lock is ``.<name>.lock`` next to the file, taken with a POSIX record lock (``fcntl.lockf``): the kernel
    drops it when its holder dies, and processes the holder forked do not inherit it, so the lock file a
    killed collection leaves behind (it names the dead PID) never blocks the next run.  The holder writes its
    PID, host and start time into the file; a waiter says once which lock it waits for and who holds it, and
    after ``timeout_s`` (default ``lock_timeout_s()``) raises ``DatasetLockTimeout`` naming both.
    """
    import socket

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
    timeout_s = lock_timeout_s() if timeout_s is None else timeout_s
    in_process = _THREAD_LOCKS.setdefault(lock_path, threading.Lock())
    if not in_process.acquire(timeout=timeout_s):
        raise DatasetLockTimeout(f"{lock_path} is still held by another thread of this process after {timeout_s:g} s")
    try:
        with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644), "r+") as f:
            deadline, said = time.monotonic() + timeout_s, False
            while True:
                try:
                    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:  # EACCES / EAGAIN: a live process holds it
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    if time.monotonic() >= deadline:
                        raise DatasetLockTimeout(
                            f"{lock_path} is still held by {holder} after {timeout_s:g} s "
                            f"(DRL_DATASET_LOCK_TIMEOUT_S): wait for that process to finish {os.path.basename(path)}, "
                            f"or stop it") from None
                    if not said:
                        print(f"[data] waiting for {lock_path}: {holder} is making {os.path.basename(path)} "
                              f"(gives up after {timeout_s:g} s)", flush=True)
                        said = True
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                f.flush()
                fcntl.lockf(f, fcntl.LOCK_UN)
    finally:
        in_process.release()


def generate(env: str, quality: str, out: str | None = None, *, samples: int | None = None, steps: int = 1_000_000,
             seed: int = 0, work_dir: str | None = None, cache_dir: str | None = None, force: bool = False,
             quiet: bool | None = None, **train_kwargs) -> str:
    """Generate one dataset to ``out`` (default: the ``generated:`` cache) and return its path.

    An existing file is kept unless ``force``.  ``samples``: transitions per behaviour policy
    (default: the env's row of ``ENVS``, 20k for Pendulum, 1M for MuJoCo); ``steps``: SAC training steps;
    ``quiet``: no progress bars (default: for scripted envs, made in seconds);
    ``train_kwargs`` (SAC envs only): ``train`` (train SAC here instead of collecting from the shipped policy),
    ``medium_return`` (tests only: overrides D4RL's medium threshold), and ``eval_every``,
    ``eval_episodes``, ``checkpoint_every``, ``config``, ``device`` of ``train_sac``.
    """
    from platform.datasets.scores import normalized_score, reference_for

    parse_name(f"{env}-{quality}")
    row = ENVS[env]
    if row.scripted is not None and train_kwargs:
        raise ValueError(f"{env}: its behaviour policies are scripted; SAC options {sorted(train_kwargs)} do not apply")
    out = out or cached_path(env, quality, cache_dir)
    samples = samples or row.samples
    quiet = row.cheap if quiet is None else quiet
    with _file_lock(out):
        if os.path.exists(out) and not force:
            return out
        t0 = time.time()
        if row.scripted is not None:
            data, attrs = row.scripted(quality, samples, seed, quiet=quiet)
        else:
            work_dir = work_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "work", f"{env}-sac-seed{seed}")
            data, attrs = generate_mujoco(env, quality, samples, seed, work_dir, steps, quiet=quiet, **train_kwargs)
        act_low, act_high, limit = env_action_box(row.env_id)
        returns = data.pop("episode_returns")
        lo, hi = reference_for(env, row.env_id)  # (None, None): a task nobody measured, no normalized score
        norm = normalized_score(env, returns.mean(), ref=(lo, hi)) if len(returns) and lo is not None else float("nan")
        attrs = {"env_id": row.env_id, "quality": quality, "generator": "platform.datasets.generate",
                 "generator_version": GENERATOR_VERSION, "seed": seed, "samples": len(data["rewards"]),
                 "ref_min_score": lo, "ref_max_score": hi, "act_low": np.asarray(act_low, np.float32),
                 "act_high": np.asarray(act_high, np.float32), "max_episode_steps": limit or 0,
                 "n_episodes": len(returns), "mean_episode_return": float(returns.mean()) if len(returns) else np.nan,
                 "mean_normalized_score": float(norm), "seconds": time.time() - t0,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **attrs}
        write_d4rl_hdf5(out, data, attrs)
    if not quiet:
        print(summary(out), flush=True)
    return out


def summary(path: str) -> str:
    """One line about a generated file, from its attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
    return (f"[generate] {a['env_id']} {a['quality']}: {a['samples']} steps, {a['n_episodes']} episodes, mean return "
            f"{a['mean_episode_return']:.1f} (normalized {a['mean_normalized_score']:.1f}), {a['seconds']:.1f}s -> {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.datasets.generate", description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for the recipe and the measured costs.")
    p.add_argument("env", choices=list(ENVS))
    p.add_argument("quality", choices=QUALITIES)
    p.add_argument("--out", help="output .hdf5 (default: the cache read by generated:<env>-<quality>)")
    p.add_argument("--cache-dir", help="cache directory (default: $DRL_DATA_DIR or ~/.cache/diffusion-rl/datasets)")
    p.add_argument("--samples", type=int, help="transitions per behaviour policy (default: the env's row, "
                   + ", ".join(f"{name} {row.samples}" for name, row in ENVS.items()) + ")")
    p.add_argument("--steps", type=int, default=1_000_000, help="MuJoCo: SAC training env steps (default 1M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="MuJoCo: SAC checkpoints (default: <out dir>/work/<env>-sac-seed<S>)")
    p.add_argument("--eval-every", type=int, default=10_000, help="MuJoCo: SAC evaluation/snapshot interval")
    p.add_argument("--eval-episodes", type=int, default=10, help="MuJoCo: SAC evaluation episodes (one per env)")
    p.add_argument("--train", action="store_true",
                   help="MuJoCo: train SAC here instead of collecting from the shipped behaviour policy (hours on a "
                        "CPU); medium stops at D4RL's medium level, and a run that does not reach it writes nothing")
    p.add_argument("--export-policy", action="store_true",
                   help="with --train: write the medium SAC actor to platform/datasets/policies/ (no dataset)")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="MuJoCo: checkpoint interval (steps)")
    p.add_argument("--learning-starts", type=int, help="MuJoCo: random steps before SAC updates (default 10000)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for SAC on 2 cores)")
    p.add_argument("--device", default=None, help="MuJoCo: SAC device (default: cuda if available, else cpu)")
    p.add_argument("--force", action="store_true", help="regenerate even if the output exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    for name in ("samples", "steps", "eval_every", "eval_episodes", "checkpoint_every", "threads"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    import torch

    from algorithms.sac import SACConfig

    torch.set_num_threads(a.threads)
    try:
        config = SACConfig() if a.learning_starts is None else SACConfig(learning_starts=a.learning_starts)
    except ValueError as e:
        p.error(str(e))
    sac = ENVS[a.env].scripted is None  # SAC behaviour policies take the training options; scripted ones none
    train_kwargs = {} if not sac else {
        "eval_every": a.eval_every, "eval_episodes": a.eval_episodes, "checkpoint_every": a.checkpoint_every,
        "config": config, "device": a.device or ("cuda" if torch.cuda.is_available() else "cpu")}
    out = a.out or cached_path(a.env, a.quality, a.cache_dir)
    if a.export_policy:
        if not a.train or not sac or a.quality != "medium":
            p.error("--export-policy needs --train and the medium quality of an env with SAC behaviour policies")
        work_dir = a.work_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "work", f"{a.env}-sac-seed{a.seed}")
        try:
            _, _, progress, medium, _ = train_until(a.env, "medium", work_dir, a.steps, a.seed, quiet=a.quiet,
                                                    **train_kwargs)
        except (ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        path = export_policy(a.env, "medium", work_dir, medium["step"], progress)
        print(f"[generate] {a.env}: medium policy (SAC step {medium['step']}, evaluation return "
              f"{medium['return_mean']:.0f}) -> {path}", flush=True)
        return 0
    if sac:
        train_kwargs["train"] = a.train
    if os.path.exists(out) and not a.force:
        print(f"[generate] {out} exists; keeping it (--force regenerates)", flush=True)
        return 0
    try:
        generate(a.env, a.quality, out, samples=a.samples, steps=a.steps, seed=a.seed, work_dir=a.work_dir,
                 force=a.force, quiet=a.quiet, **train_kwargs)
        if a.quiet:
            print(summary(out), flush=True)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0



# the generator's API in one place (defined in collect.py and behaviour.py)
__all__ = ["generate", "main", "summary", "ENVS", "QUALITIES", "parse_name", "is_cheap", "cached_path",
           "missing_message", "medium_threshold", "collect", "pendulum_reference_returns", "train_sac", "train_until",
           "export_policy", "load_shipped_policy", "check_shipped_policy"]


if __name__ == "__main__":
    sys.exit(main())
