"""MuJoCo behaviour policies: SAC trained to D4RL's levels (``train_sac``, ``train_until``), shipped as
plain actor state dicts (``export_policy``, ``load_shipped_policy``), and collection from them
(``generate_mujoco``).  The recipe and its measured costs: ``platform/datasets/generate.py``'s docstring.
"""
from __future__ import annotations

import glob
import json
import os
import re
import time
from dataclasses import asdict

import numpy as np

from platform.datasets.collect import (ENVS, EXPERT_MIN_NORMALIZED, GENERATOR_VERSION, POLICY_DIR, _progress, collect,
                                        concat, episode_returns, medium_threshold, shipped_policy)

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
    r = collect(ENVS[env].env_id, numpy_noise_policy(actor), c["seed"], n_episodes=c["n_episodes"],
                n_envs=c["n_episodes"])["episode_returns"]
    return [float(x) for x in r], c["returns"]


def export_policy(env: str, quality: str, work_dir: str, step: int, progress: dict, out_dir: str = POLICY_DIR) -> str:
    """Write the SAC actor snapshot of ``step`` as the shipped ``<env>-<quality>`` policy (+ metadata JSON)."""
    import torch

    from algorithms.sac import Actor, SACConfig
    from platform.checkpoint import load_state, save_json, save_state

    config = SACConfig(**progress["config"])
    spec, _ = _env_spec(ENVS[env].env_id)
    actor = Actor(spec.obs_dim, spec.act_dim, config.hidden_dim, config.n_hidden, spec.act_low, spec.act_high)
    actor.load_state_dict(load_state(os.path.join(work_dir, "snapshots", f"actor_{step:09d}.pt")))
    evals = {e["step"]: e for e in progress["evals"]}
    with torch.no_grad():
        check = collect(ENVS[env].env_id, numpy_noise_policy(actor), POLICY_CHECK["seed"],
                        n_episodes=POLICY_CHECK["n_episodes"], n_envs=POLICY_CHECK["n_episodes"])["episode_returns"]
    path = os.path.join(out_dir, f"{env}-{quality}.pt")
    save_state(path, actor.state_dict())
    save_json(path[:-3] + ".json", {
        "env_id": ENVS[env].env_id, "quality": quality, "generator_version": GENERATOR_VERSION,
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
    env_id = ENVS[env].env_id
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

    env_id = ENVS[env].env_id
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


