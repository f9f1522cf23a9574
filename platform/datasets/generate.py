"""Generate D4RL-format datasets with gymnasium environments (D4RL's recipe, made offline here).

    python -m platform.datasets.generate ENV QUALITY [--out FILE] [--samples N] [--steps N] [--seed S]

ENV: ``pendulum`` (Pendulum-v1), ``halfcheetah``, ``hopper``, ``walker2d`` (gymnasium MuJoCo v5).
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
import glob
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np

from platform.datasets.d4rl import write_d4rl_hdf5

QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")
ENVS = {
    "pendulum": {"env_id": "Pendulum-v1", "cheap": True, "samples": 20_000},
    "halfcheetah": {"env_id": "HalfCheetah-v5", "cheap": False, "samples": 1_000_000},
    "hopper": {"env_id": "Hopper-v5", "cheap": False, "samples": 1_000_000},
    "walker2d": {"env_id": "Walker2d-v5", "cheap": False, "samples": 1_000_000},
}
GENERATOR_VERSION = 2  # 2: evaluation plays one episode per env; medium from D4RL's references
MEDIUM_FRACTION = 1 / 3             # D4RL: medium = "about 1/3 the performance of the expert"
EXPERT_MIN_NORMALIZED = 80.0        # an 'expert' file needs a final SAC evaluation at least this normalized
POLICY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")  # shipped behaviour policies
PENDULUM_NOISE = 0.1                # std of the torque noise of the scripted expert while collecting
PENDULUM_MEDIUM_RANDOM_PROB = 0.7   # chance of a uniform random torque in 'medium' (44.5 normalized)


def parse_name(value: str) -> tuple[str, str]:
    """``"pendulum-medium-replay"`` -> ``("pendulum", "medium-replay")``; ValueError naming the bad part."""
    env, _, quality = value.partition("-")
    if env not in ENVS:
        raise ValueError(f"generated:{value}: unknown env {env!r} (known: {', '.join(ENVS)})")
    if quality not in QUALITIES:
        raise ValueError(f"generated:{value}: unknown quality {quality!r} (known: {', '.join(QUALITIES)})")
    return env, quality


def is_cheap(env: str, quality: str | None = None) -> bool:
    """Made in seconds to minutes without training: Pendulum, ``random``, or a shipped behaviour policy."""
    return ENVS[env]["cheap"] or quality == "random" or (quality is not None and shipped_policy(env, quality) is not None)


def medium_threshold(env: str) -> float:
    """D4RL's medium level: a third of the way from its random to its expert reference return."""
    from platform.datasets.scores import REF_SCORES

    lo, hi = REF_SCORES[env]
    return lo + MEDIUM_FRACTION * (hi - lo)


def shipped_policy(env: str, quality: str) -> str | None:
    """Path of the shipped behaviour policy of ``<env>-<quality>`` (``platform/datasets/policies/``), or None."""
    path = os.path.join(POLICY_DIR, f"{env}-{quality}.pt")
    return path if os.path.exists(path) and os.path.exists(path[:-3] + ".json") else None


def cached_path(env: str, quality: str, cache_dir: str | None = None) -> str:
    from platform.datasets.base import data_dir

    return os.path.join(data_dir(cache_dir), f"{env}-{quality}.hdf5")


def missing_message(env: str, quality: str, path: str) -> str:
    cost = ("minutes (1M steps of the shipped behaviour policy)" if is_cheap(env, quality) else
            "an hour or more on a CPU: SAC training, resumable; no behaviour policy is shipped for it yet")
    train = "" if is_cheap(env, quality) else " --train"
    return (f"generate it once with `python -m platform.datasets.generate {env} {quality}{train} --out {path}` "
            f"(takes {cost}), or call load_dataset(..., allow_generate=True)")


def _progress(total: int, desc: str, quiet: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=quiet, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


# ----------------------------------------------------------------------------- collection


def collect(env_id: str, policy, seed: int, n_steps: int | None = None, n_episodes: int | None = None,
            n_envs: int = 8, desc: str = "", quiet: bool = True) -> dict[str, np.ndarray]:
    """Run ``policy(obs (B, obs_dim), rng) -> actions (B, act_dim)`` in ``n_envs`` envs at once.

    ``n_episodes``: each env plays its share (``n_episodes // n_envs``, the first ones one more) and
    then idles, so short episodes (early falls) are not over-counted as "the first to finish" would.
    ``n_steps``: once ``n_steps`` steps of whole episodes are in, cut them to exactly ``n_steps`` (the
    cut episode's last step becomes a timeout).  Returns D4RL arrays (episodes contiguous; by env for
    ``n_episodes``, in order of completion for ``n_steps``) plus ``episode_returns (E,)`` of the
    complete episodes.
    """
    import gymnasium as gym

    if (n_steps is None) == (n_episodes is None):
        raise ValueError("collect: give exactly one of n_steps, n_episodes")
    n_envs = max(1, min(n_envs, n_episodes or n_envs))
    quota = None if n_episodes is None else [n_episodes // n_envs + (i < n_episodes % n_envs) for i in range(n_envs)]
    rng = np.random.default_rng(seed)
    envs = [gym.make(env_id) for _ in range(n_envs)]
    obs = np.stack([env.reset(seed=seed * 1_000 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    live = [[] for _ in envs]  # rows of the episode in progress in each env
    done = [[] for _ in envs]  # (completion index, episode, return) per env
    n_done, total = 0, 0
    bar = _progress(n_steps or n_episodes, desc or env_id, quiet)
    while (n_steps is not None and total < n_steps) or (n_episodes is not None and n_done < n_episodes):
        actions = np.asarray(policy(obs, rng), dtype=np.float32)
        for i, env in enumerate(envs):
            if quota is not None and len(done[i]) >= quota[i]:
                continue  # this env has played its share
            nxt, r, term, trunc, _ = env.step(actions[i])
            live[i].append((obs[i].copy(), actions[i], r, nxt, term, trunc and not term))
            if term or trunc:
                ep = live[i]
                done[i].append((n_done, {k: np.asarray([row[j] for row in ep]) for j, k in enumerate(
                    ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"))},
                    float(sum(row[2] for row in ep))))
                n_done += 1
                total += len(ep)
                bar.update(len(ep) if n_steps is not None else 1)
                live[i] = []
                nxt, _ = env.reset()
            obs[i] = nxt
    bar.close()
    for env in envs:
        env.close()
    ordered = [d for per_env in done for d in per_env] if quota is not None else sorted(
        (d for per_env in done for d in per_env), key=lambda d: d[0])
    episodes, returns = [d[1] for d in ordered], [d[2] for d in ordered]
    if n_steps is not None:  # keep the episodes that start before n_steps; the last one may be cut
        ends = np.cumsum([len(ep["rewards"]) for ep in episodes])
        n_keep = int(np.searchsorted(ends, n_steps)) + 1
        episodes, returns = episodes[:n_keep], returns[:n_keep - int(ends[n_keep - 1] > n_steps)]
    data = {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
    if n_steps is not None and len(data["rewards"]) > n_steps:
        data = {k: v[:n_steps] for k, v in data.items()}
        data["timeouts"][-1] = not data["terminals"][-1]  # the cut episode ends here, as in D4RL's files
    data = {k: v.astype(bool if k in ("terminals", "timeouts") else np.float32) for k, v in data.items()}
    data["episode_returns"] = np.asarray(returns, dtype=np.float64)
    return data


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def episode_returns(data: dict[str, np.ndarray]) -> np.ndarray:
    """Returns of the episodes that end (terminal or timeout) in D4RL arrays, ``(E,)``."""
    ends = np.nonzero(data["terminals"].astype(bool) | data["timeouts"].astype(bool))[0] + 1
    if len(ends) == 0:
        return np.zeros(0)
    return np.add.reduceat(data["rewards"].astype(np.float64), np.concatenate([[0], ends[:-1]]))[:len(ends)]


# ----------------------------------------------------------------------------- Pendulum (scripted)


def pendulum_expert(obs: np.ndarray) -> np.ndarray:
    """Energy-shaping swing-up + PD balance for Pendulum-v1: ``obs (B, 3) -> torque (B, 1)`` in [-2, 2].

    Pendulum-v1's dynamics are ``th'' = 15 sin(th) + 3 u`` (th = 0 upright), so the energy
    ``E = w^2 / 2 + 15 (cos th - 1)`` is 0 upright at rest and ``dE/dt = 3 u w``: pumping with
    ``u = -E w`` drives E to 0 (the homoclinic orbit through the top); near the top a PD law holds it.
    """
    c, s, w = obs[:, 0], obs[:, 1], obs[:, 2]
    th = np.arctan2(s, c)
    energy = 0.5 * w**2 + 15.0 * (c - 1.0)
    u = np.where(c > 0.85, -(20.0 * th + 4.0 * w), -energy * w)
    return np.clip(u, -2.0, 2.0)[:, None].astype(np.float32)


def pendulum_policy(random_prob: float, noise: float = PENDULUM_NOISE):
    """With probability ``random_prob`` a uniform torque, else the expert's plus N(0, noise)."""
    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = len(obs)
        act = pendulum_expert(obs) + (rng.normal(0.0, noise, (b, 1)) if noise > 0 else 0.0)
        random = rng.uniform(-2.0, 2.0, (b, 1))
        return np.clip(np.where(rng.random((b, 1)) < random_prob, random, act), -2.0, 2.0).astype(np.float32)

    return policy


def generate_pendulum(quality: str, samples: int, seed: int, quiet: bool = True) -> tuple[dict, dict]:
    """Pendulum-v1 data from the scripted policies; returns (arrays, attrs describing the policy)."""
    env_id = ENVS["pendulum"]["env_id"]
    p_med = PENDULUM_MEDIUM_RANDOM_PROB

    def run(p, n, s, desc):
        return collect(env_id, pendulum_policy(p), s, n_steps=n, desc=desc, quiet=quiet)

    if quality == "random":
        return run(1.0, samples, seed, "pendulum-random"), {"policy": "uniform random torques"}
    if quality == "expert":
        return run(0.0, samples, seed, "pendulum-expert"), {
            "policy": f"scripted swing-up + PD expert, N(0, {PENDULUM_NOISE}) torque noise"}
    if quality == "medium":
        return run(p_med, samples, seed, "pendulum-medium"), {
            "policy": f"uniform random torque with probability {p_med}, else the noisy expert"}
    if quality == "medium-expert":
        med, _ = generate_pendulum("medium", samples, seed, quiet)
        exp, _ = generate_pendulum("expert", samples, seed, quiet)
        return concat([med, exp]), {"policy": "pendulum-medium + pendulum-expert (same seed), concatenated"}
    probs = np.linspace(1.0, p_med, 10)
    parts = [run(p, samples // 10 + (i < samples % 10), seed + i, f"pendulum-replay {i + 1}/10")
             for i, p in enumerate(probs)]
    return concat(parts), {"policy": f"10 equal parts, random-torque probability 1.0 -> {p_med} (a learner's buffer)"}


def pendulum_reference_returns(n_episodes: int = 1000, seed: int = 12_345) -> dict[str, tuple[float, float]]:
    """(mean, std) return of the uniform-random policy and the deterministic scripted expert."""
    env_id = ENVS["pendulum"]["env_id"]
    out = {}
    for name, policy in (("random", pendulum_policy(1.0)), ("expert", lambda obs, rng: pendulum_expert(obs))):
        r = collect(env_id, policy, seed, n_episodes=n_episodes)["episode_returns"]
        out[name] = (float(r.mean()), float(r.std()))
    return out


# ----------------------------------------------------------------------------- MuJoCo: SAC behaviour policies


def _env_spec(env_id: str):
    import gymnasium as gym

    from algorithms import EnvSpec

    env = gym.make(env_id)
    space, limit = env.action_space, env.spec.max_episode_steps
    obs_dim = env.observation_space.shape[0]
    env.close()
    spec = EnvSpec(obs_dim=obs_dim, act_dim=space.shape[0], act_low=tuple(float(x) for x in space.low),
                   act_high=tuple(float(x) for x in space.high))
    return spec, limit or 1000


def _actor_policy(actor, deterministic: bool = False):
    import torch

    device = next(actor.parameters()).device

    @torch.no_grad()
    def policy(obs: np.ndarray, rng) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return (actor.mode(o) if deterministic else actor.sample(o)[0]).cpu().numpy()

    return policy


def numpy_noise_policy(actor):
    """The stochastic SAC actor, its Gaussian noise drawn from the collection's numpy ``rng``.

    ``obs (B, obs_dim) -> actions (B, act_dim)``.  Drawing from the seeded numpy generator (not torch's
    global one) makes a collection a function of its seed alone: the same file on any machine.
    """
    import torch

    device = next(actor.parameters()).device

    @torch.no_grad()
    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean, log_std = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
        eps = torch.as_tensor(rng.standard_normal(mean.shape), dtype=torch.float32, device=device)
        return (torch.tanh(mean + log_std.exp() * eps) * actor.scale + actor.bias).cpu().numpy()

    return policy


# What `check_shipped_policy` replays: the first episodes of a seeded collection, one per env.
POLICY_CHECK = {"seed": 0, "n_episodes": 2}


def load_shipped_policy(env: str, quality: str):
    """``(Actor, metadata)`` of a shipped behaviour policy (a plain state dict, ``weights_only`` load)."""
    from algorithms.sac import Actor
    from platform.checkpoint import load_json, load_state

    path = shipped_policy(env, quality)
    if path is None:
        raise FileNotFoundError(f"no shipped behaviour policy for {env}-{quality} in {POLICY_DIR}")
    meta = load_json(path[:-3] + ".json")
    actor = Actor(meta["obs_dim"], meta["act_dim"], meta["hidden_dim"], meta["n_hidden"], meta["act_low"],
                  meta["act_high"])
    actor.load_state_dict(load_state(path))
    return actor.eval(), meta


def check_shipped_policy(env: str, quality: str) -> tuple[list[float], list[float]]:
    """Replay the recorded check collection of a shipped policy: ``(returns now, recorded returns)``."""
    actor, meta = load_shipped_policy(env, quality)
    c = meta["check"]
    r = collect(ENVS[env]["env_id"], numpy_noise_policy(actor), c["seed"], n_episodes=c["n_episodes"],
                n_envs=c["n_episodes"])["episode_returns"]
    return [float(x) for x in r], c["returns"]


def export_policy(env: str, quality: str, work_dir: str, step: int, progress: dict, out_dir: str = POLICY_DIR) -> str:
    """Write the SAC actor snapshot of ``step`` as the shipped ``<env>-<quality>`` policy (+ metadata JSON)."""
    import torch

    from algorithms.sac import Actor, SACConfig
    from platform.checkpoint import load_state, save_json, save_state

    config = SACConfig(**progress["config"])
    spec, _ = _env_spec(ENVS[env]["env_id"])
    actor = Actor(spec.obs_dim, spec.act_dim, config.hidden_dim, config.n_hidden, spec.act_low, spec.act_high)
    actor.load_state_dict(load_state(os.path.join(work_dir, "snapshots", f"actor_{step:09d}.pt")))
    evals = {e["step"]: e for e in progress["evals"]}
    with torch.no_grad():
        check = collect(ENVS[env]["env_id"], numpy_noise_policy(actor), POLICY_CHECK["seed"],
                        n_episodes=POLICY_CHECK["n_episodes"], n_envs=POLICY_CHECK["n_episodes"])["episode_returns"]
    path = os.path.join(out_dir, f"{env}-{quality}.pt")
    save_state(path, actor.state_dict())
    save_json(path[:-3] + ".json", {
        "env_id": ENVS[env]["env_id"], "quality": quality, "generator_version": GENERATOR_VERSION,
        "obs_dim": spec.obs_dim, "act_dim": spec.act_dim, "act_low": list(spec.act_low), "act_high": list(spec.act_high),
        "hidden_dim": config.hidden_dim, "n_hidden": config.n_hidden, "sac_seed": progress["seed"], "sac_step": step,
        "sac_config": progress["config"], "eval_return_mean": evals[step]["return_mean"],
        "eval_return_std": evals[step]["return_std"], "medium_threshold": medium_threshold(env),
        "sac_evals": [[e["step"], round(e["return_mean"], 1)] for e in progress["evals"]],
        "train_seconds": progress.get("seconds"),
        "check": {**POLICY_CHECK, "returns": [float(x) for x in check]}})
    return path


def _save_npz(path: str, arrays: dict) -> None:
    from platform.checkpoint import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
            np.savez(f, **arrays)

    atomic_write(path, write)


def train_sac(env: str, work_dir: str, steps: int, seed: int = 0, eval_every: int = 10_000, eval_episodes: int = 5,
              checkpoint_every: int = 50_000, config=None, quiet: bool = False, device: str = "cpu",
              stop_return: float | None = None):
    """Train SAC online for at least ``steps`` env steps (finishing the last episode), resumably.

    ``stop_return``: stop early at the first evaluation whose mean return reaches it (``--until medium``:
    D4RL's medium threshold, so a medium policy costs only the steps to get there, not the 1M-step run).

    Work dir: ``progress.json`` (the commit point: step, evals, numpy RNG state, config),
    ``state_<step>.pt`` (agent + torch RNG), ``replay/<start>-<end>.npz`` (buffer chunks) and
    ``snapshots/actor_<step>.pt`` (the actor at each evaluation).  Returns ``(agent, buffer, progress)``.
    ``device``: where the networks train (``cuda`` helps; results then differ from CPU in the last bits).
    """
    import gymnasium as gym
    import torch

    from algorithms.sac import SAC, ReplayBuffer, SACConfig
    from platform.checkpoint import load_state, save_json, save_state

    config = config or SACConfig()
    env_id = ENVS[env]["env_id"]
    spec, limit = _env_spec(env_id)
    if steps + limit > config.buffer_size:
        raise ValueError(f"--steps {steps} needs a replay buffer of {steps + limit} rows; "
                         f"SACConfig.buffer_size is {config.buffer_size}")
    os.makedirs(os.path.join(work_dir, "replay"), exist_ok=True)
    os.makedirs(os.path.join(work_dir, "snapshots"), exist_ok=True)
    progress_path = os.path.join(work_dir, "progress.json")
    torch.manual_seed(seed)  # before building the networks: their initial weights depend on it
    agent = SAC(config, spec, device)
    buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, steps + limit, device)
    rng = np.random.default_rng(seed)
    meta = {"env_id": env_id, "seed": seed, "config": asdict(config), "generator_version": GENERATOR_VERSION}
    progress = {**meta, "step": 0, "episode": 0, "evals": [], "rng": None}

    if os.path.exists(progress_path):
        with open(progress_path) as f:
            saved = json.load(f)
        for k, v in meta.items():
            if saved.get(k) != v:
                raise ValueError(f"{work_dir}: was made with {k}={saved.get(k)!r}, now {v!r}; use another --work-dir")
        progress = saved
        for path in sorted(glob.glob(os.path.join(work_dir, "replay", "*.npz"))):
            start, end = (int(x) for x in re.findall(r"\d+", os.path.basename(path)))
            if end > progress["step"]:  # written after the last commit: stale, will be redone
                os.remove(path)
                continue
            with np.load(path) as z:
                buffer.extend({k: z[k] for k in ReplayBuffer.KEYS})
        if buffer.size != progress["step"]:
            raise RuntimeError(f"{work_dir}: replay chunks hold {buffer.size} rows, progress.json says {progress['step']}")
        # a run for --steps stops at the first episode end at or after it; one that went further is another run
        ends = np.nonzero(buffer.data["terminals"][:buffer.size] + buffer.data["timeouts"][:buffer.size])[0] + 1
        if buffer.size > steps and buffer.size > ends[np.searchsorted(ends, steps)]:
            raise ValueError(f"{work_dir}: already trained {buffer.size} steps, more than --steps {steps}; "
                             f"pass --steps {buffer.size} or use another --work-dir")
        state = load_state(os.path.join(work_dir, f"state_{progress['step']:09d}.pt"), device)
        agent.load_state_dict(state["agent"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and agent.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), agent.device)
        rng.bit_generator.state = progress["rng"]
        if not quiet:
            print(f"[generate] {env}: resuming SAC from step {progress['step']} ({work_dir})", flush=True)

    step, episode = progress["step"], progress["episode"]

    def reached() -> bool:
        return stop_return is not None and any(e["return_mean"] >= stop_return for e in progress["evals"])

    if step >= steps or reached():
        return agent, buffer, progress
    env_ = gym.make(env_id)
    low, high = np.asarray(spec.act_low), np.asarray(spec.act_high)
    next_eval = (step // eval_every + 1) * eval_every
    next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
    last_ckpt_rows = buffer.size

    def evaluate():
        r = collect(env_id, _actor_policy(agent.actor, deterministic=True), seed=10_000 + len(progress["evals"]),
                    n_episodes=eval_episodes, n_envs=eval_episodes)["episode_returns"]
        save_state(os.path.join(work_dir, "snapshots", f"actor_{step:09d}.pt"), agent.actor.state_dict())
        progress["evals"].append({"step": step, "return_mean": float(r.mean()), "return_std": float(r.std())})
        return float(r.mean())

    def checkpoint():
        nonlocal last_ckpt_rows
        _save_npz(os.path.join(work_dir, "replay", f"{last_ckpt_rows:09d}-{buffer.size:09d}.npz"),
                  buffer.arrays(last_ckpt_rows, buffer.size))
        rng_states = {"torch_rng": torch.get_rng_state()}
        if agent.device.type == "cuda":  # the policy's sampling noise comes from the GPU's generator
            rng_states["cuda_rng"] = torch.cuda.get_rng_state(agent.device)
        save_state(os.path.join(work_dir, f"state_{step:09d}.pt"), {"agent": agent.state_dict(), **rng_states})
        progress.update(step=step, episode=episode, rng=rng.bit_generator.state,
                        seconds=progress.get("seconds", 0.0) + time.time() - t_commit[0])
        t_commit[0] = time.time()
        save_json(progress_path, progress)  # commit
        for old in glob.glob(os.path.join(work_dir, "state_*.pt")):
            if not old.endswith(f"state_{step:09d}.pt"):
                os.remove(old)
        last_ckpt_rows = buffer.size

    bar = _progress(steps, f"SAC {env}", quiet, initial=step)
    obs, _ = env_.reset(seed=seed * 1_000_003 + episode)  # per-episode seeds: a resumed run sees the same starts
    ep_ret, last_eval, t0, start, metrics = 0.0, float("nan"), time.time(), step, {}
    t_commit = [t0]  # wall time since the last commit, added to progress["seconds"] at each commit
    while True:
        if step < config.learning_starts:
            act = rng.uniform(low, high).astype(np.float32)
        else:
            act = agent.act(obs[None])[0]
        nxt, r, term, trunc, _ = env_.step(act)
        buffer.add(obs, act, r, nxt, term, trunc and not term)
        step += 1
        ep_ret += r
        bar.update(1)
        if step > config.learning_starts:
            metrics = agent.update(buffer.sample(config.batch_size, rng))
        if not (term or trunc):
            obs = nxt
            continue
        # episode boundary: the only place to evaluate and checkpoint, so no episode is ever split
        episode += 1
        finished = step >= steps
        if step >= next_eval or finished:
            last_eval = evaluate()
            next_eval = (step // eval_every + 1) * eval_every
            if stop_return is not None and last_eval >= stop_return:
                finished = True
                if not quiet:
                    print(f"\n[generate] {env}: evaluation return {last_eval:.0f} at step {step} reaches "
                          f"{stop_return:.0f}; stopping SAC", flush=True)
        if step >= next_ckpt or finished:
            checkpoint()
            next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
        bar.set_postfix(eval=f"{last_eval:.0f}", ep=f"{ep_ret:.0f}", sps=f"{(step - start) / (time.time() - t0):.0f}",
                        q=f"{float(metrics.get('train/q_mean', float('nan'))):.1f}", refresh=False)
        if finished:
            break
        ep_ret = 0.0
        obs, _ = env_.reset(seed=seed * 1_000_003 + episode)
    bar.close()
    env_.close()
    return agent, buffer, progress


def train_until(env: str, quality: str, work_dir: str, steps: int, seed: int, medium_return: float | None = None,
                quiet: bool = False, **train_kwargs):
    """Train SAC for ``quality`` and pick its medium snapshot; refuse what does not match D4RL's level.

    ``medium``/``medium-replay`` stop at the first evaluation reaching D4RL's medium threshold
    (``medium_return`` overrides it: for tests on tiny runs; the file records the value used).
    Returns ``(agent, buffer, progress, medium eval record or None, threshold)``.
    """
    from platform.datasets.scores import normalized_score

    threshold = medium_threshold(env) if medium_return is None else medium_return
    stop = threshold if quality in ("medium", "medium-replay") else None
    agent, buffer, progress = train_sac(env, work_dir, steps, seed, quiet=quiet, stop_return=stop, **train_kwargs)
    evals = progress["evals"]
    medium = next((e for e in evals if e["return_mean"] >= threshold), None)
    if quality != "expert" and medium is None:
        best = max(evals, key=lambda e: e["return_mean"])
        raise ValueError(f"{env}: SAC's best evaluation is {best['return_mean']:.0f} (step {best['step']}) after "
                         f"{progress['step']} steps, {env}-medium needs {threshold:.0f} (a third of the way from "
                         f"D4RL's random to expert return); train longer (--steps) or try another --seed")
    if quality in ("expert", "medium-expert"):
        final = normalized_score(env, evals[-1]["return_mean"])
        if final < EXPERT_MIN_NORMALIZED and medium_return is None:
            raise ValueError(f"{env}: SAC's final evaluation is {evals[-1]['return_mean']:.0f} (normalized {final:.1f}) "
                             f"after {progress['step']} steps; {env}-expert needs >= {EXPERT_MIN_NORMALIZED:.0f} "
                             f"normalized: train longer (--steps, D4RL trained 1M)")
    return agent, buffer, progress, medium, threshold


def generate_mujoco(env: str, quality: str, samples: int, seed: int, work_dir: str, steps: int,
                    quiet: bool = False, train: bool = False, medium_return: float | None = None,
                    **train_kwargs) -> tuple[dict, dict]:
    """MuJoCo data: ``random``; else collected from the shipped behaviour policy, or with ``train`` from SAC here."""
    import torch

    from algorithms.sac import Actor
    from platform.checkpoint import load_state

    env_id = ENVS[env]["env_id"]
    if quality == "random":
        spec, _ = _env_spec(env_id)
        low, high = np.asarray(spec.act_low), np.asarray(spec.act_high)
        data = collect(env_id, lambda obs, rng: rng.uniform(low, high, (len(obs), len(low))), seed,
                       n_steps=samples, n_envs=16, desc=f"{env}-random", quiet=quiet)
        return data, {"policy": "uniform random actions"}

    if not train:
        path = shipped_policy(env, quality)
        if path is None:
            shipped = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(POLICY_DIR, "*.pt")))
            raise FileNotFoundError(f"no shipped behaviour policy for {env}-{quality} (shipped: "
                                    f"{', '.join(shipped) or 'none'}); pass --train to train SAC here (hours on a CPU)")
        actor, meta = load_shipped_policy(env, quality)
        data = collect(env_id, numpy_noise_policy(actor), seed, n_steps=samples, n_envs=16,
                       desc=f"{env}-{quality}", quiet=quiet)
        return data, {"policy": f"shipped SAC {quality} policy (step {meta['sac_step']}, deterministic evaluation "
                                f"return {meta['eval_return_mean']:.0f}), stochastic",
                      "policy_file": f"platform/datasets/policies/{os.path.basename(path)}",
                      "sac_steps": meta["sac_step"], "medium_eval_return": meta["eval_return_mean"],
                      "medium_threshold": meta["medium_threshold"]}

    agent, buffer, progress, medium, threshold = train_until(env, quality, work_dir, steps, seed, medium_return,
                                                             quiet, **train_kwargs)
    evals = progress["evals"]
    attrs = {"sac_steps": progress["step"], "sac_config": progress["config"], "medium_threshold": threshold,
             "sac_evals": [[e["step"], e["return_mean"]] for e in evals], "expert_eval_return": evals[-1]["return_mean"]}
    if medium is not None:
        attrs.update(medium_step=medium["step"], medium_eval_return=medium["return_mean"])
    if quality == "medium-replay":
        data = buffer.arrays(0, medium["step"])
        data["episode_returns"] = episode_returns(data)
        return data, {**attrs, "policy": f"SAC replay buffer up to step {medium['step']} (the medium agent's)"}

    def snapshot_actor(step: int):
        actor = Actor(agent.spec.obs_dim, agent.spec.act_dim, agent.cfg.hidden_dim, agent.cfg.n_hidden,
                      agent.spec.act_low, agent.spec.act_high)
        actor.load_state_dict(load_state(os.path.join(work_dir, "snapshots", f"actor_{step:09d}.pt")))
        return actor.to(agent.device)

    torch.manual_seed(seed)
    parts = []
    if quality in ("medium", "medium-expert"):
        parts.append(collect(env_id, numpy_noise_policy(snapshot_actor(medium["step"])), seed, n_steps=samples,
                             n_envs=16, desc=f"{env}-medium", quiet=quiet))
    if quality in ("expert", "medium-expert"):
        parts.append(collect(env_id, numpy_noise_policy(agent.actor), seed, n_steps=samples, n_envs=16,
                             desc=f"{env}-expert", quiet=quiet))
    policy = {"medium": f"SAC snapshot at step {medium['step'] if medium else '?'}, stochastic",
              "expert": f"SAC after {progress['step']} steps, stochastic",
              "medium-expert": "the medium and expert collections, concatenated"}[quality]
    return concat(parts), {**attrs, "policy": policy}


# ----------------------------------------------------------------------------- entry points


@contextmanager
def _file_lock(path: str):
    """Serialize generation of one file across processes (e.g. several Ray workers on first use)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def generate(env: str, quality: str, out: str | None = None, *, samples: int | None = None, steps: int = 1_000_000,
             seed: int = 0, work_dir: str | None = None, cache_dir: str | None = None, force: bool = False,
             quiet: bool | None = None, **train_kwargs) -> str:
    """Generate one dataset to ``out`` (default: the ``generated:`` cache) and return its path.

    An existing file is kept unless ``force``.  ``samples``: transitions per behaviour policy
    (default 20k for pendulum, 1M for MuJoCo); ``steps``: SAC training steps (MuJoCo);
    ``train_kwargs`` (MuJoCo): ``train`` (train SAC here instead of collecting from the shipped policy),
    ``medium_return`` (tests only: overrides D4RL's medium threshold), and ``eval_every``,
    ``eval_episodes``, ``checkpoint_every``, ``config``, ``device`` of ``train_sac``.
    """
    from platform.datasets.scores import REF_SCORES, normalized_score

    parse_name(f"{env}-{quality}")
    out = out or cached_path(env, quality, cache_dir)
    samples = samples or ENVS[env]["samples"]
    quiet = (env == "pendulum") if quiet is None else quiet
    with _file_lock(out):
        if os.path.exists(out) and not force:
            return out
        t0 = time.time()
        if env == "pendulum":
            data, attrs = generate_pendulum(quality, samples, seed, quiet=quiet)
        else:
            work_dir = work_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "work", f"{env}-sac-seed{seed}")
            data, attrs = generate_mujoco(env, quality, samples, seed, work_dir, steps, quiet=quiet, **train_kwargs)
        import gymnasium as gym

        env_id = ENVS[env]["env_id"]
        probe = gym.make(env_id)
        space, limit = probe.action_space, probe.spec.max_episode_steps
        probe.close()
        returns = data.pop("episode_returns")
        lo, hi = REF_SCORES[env]
        norm = normalized_score(env, returns.mean(), ref=(lo, hi)) if len(returns) else float("nan")
        attrs = {"env_id": env_id, "quality": quality, "generator": "platform.datasets.generate",
                 "generator_version": GENERATOR_VERSION, "seed": seed, "samples": len(data["rewards"]),
                 "ref_min_score": lo, "ref_max_score": hi, "act_low": space.low.astype(np.float32),
                 "act_high": space.high.astype(np.float32), "max_episode_steps": limit or 0,
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
    p.add_argument("--samples", type=int, help="transitions per behaviour policy (pendulum 20000, MuJoCo 1000000)")
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
    train_kwargs = {} if a.env == "pendulum" else {
        "eval_every": a.eval_every, "eval_episodes": a.eval_episodes, "checkpoint_every": a.checkpoint_every,
        "config": config, "device": a.device or ("cuda" if torch.cuda.is_available() else "cpu")}
    out = a.out or cached_path(a.env, a.quality, a.cache_dir)
    if a.export_policy:
        if not a.train or a.env == "pendulum" or a.quality != "medium":
            p.error("--export-policy needs --train and a MuJoCo env's medium quality")
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
    if a.env != "pendulum":
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


if __name__ == "__main__":
    sys.exit(main())
