"""What every dataset generator shares: the names (envs, qualities, D4RL's medium level, the cache path),
episode collection from any policy with seeded noise, and the scripted Pendulum policies.

The recipe and its measured costs: ``platform/datasets/generate.py``'s docstring.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np


QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")
GENERATOR_VERSION = 2  # 2: evaluation plays one episode per env; medium from D4RL's references
MEDIUM_FRACTION = 1 / 3             # D4RL: medium = "about 1/3 the performance of the expert"
EXPERT_MIN_NORMALIZED = 80.0        # an 'expert' file needs a final SAC evaluation at least this normalized
POLICY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")  # shipped behaviour policies
PENDULUM_NOISE = 0.1                # std of the torque noise of the scripted expert while collecting
PENDULUM_MEDIUM_RANDOM_PROB = 0.7   # chance of a uniform random torque in 'medium' (44.5 normalized)


@dataclass(frozen=True)
class GeneratedEnv:
    """One ``generated:<env>-<quality>`` environment, a row of ``ENVS`` (the last lines of this file).

    ``env_id``: the gymnasium id the data is collected in (the file's action box and time limit are read off it);
    ``samples``: the default transitions per behaviour policy; ``scripted``: for an env whose behaviour policies
    are scripted here, ``(quality, samples, seed, quiet) -> (arrays, attrs)`` (seconds, made on first use, no SAC
    options); None: SAC behaviour policies (``behaviour.generate_mujoco``: collected from the shipped
    ``policies/<env>-<quality>.pt``, or trained here with ``--train``).  The env's reference returns (normalized
    score, D4RL's medium level) are its family's row of ``scores.REF_SCORES``.
    """
    env_id: str
    samples: int
    scripted: Callable[..., tuple[dict, dict]] | None = None

    @property
    def cheap(self) -> bool:
        """Every quality is made in seconds without training."""
        return self.scripted is not None


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
    return ENVS[env].cheap or quality == "random" or (quality is not None and shipped_policy(env, quality) is not None)


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
    env_id = ENVS["pendulum"].env_id
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
    env_id = ENVS["pendulum"].env_id
    out = {}
    for name, policy in (("random", pendulum_policy(1.0)), ("expert", lambda obs, rng: pendulum_expert(obs))):
        r = collect(env_id, policy, seed, n_episodes=n_episodes)["episode_returns"]
        out[name] = (float(r.mean()), float(r.std()))
    return out


# ----------------------------------------------------------------------------- the generated envs, one row each

ENVS: dict[str, GeneratedEnv] = {
    "pendulum": GeneratedEnv("Pendulum-v1", samples=20_000, scripted=generate_pendulum),
    "halfcheetah": GeneratedEnv("HalfCheetah-v5", samples=1_000_000),
    "hopper": GeneratedEnv("Hopper-v5", samples=1_000_000),
    "walker2d": GeneratedEnv("Walker2d-v5", samples=1_000_000),
}
