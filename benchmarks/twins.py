"""Twins: each diffusion method trained beside its authors' public code, same data, settings and evaluation.

    python -m benchmarks.twins --public-dql PATH [--public-edp PATH] [--public-dp PATH]
        [--dataset generated:hopper-medium] [--seeds 0 1 2 3] [--eval-steps 2500 5000 10000 20000]
        [--out benchmarks/results]

``PATH`` is a checkout of the authors' code that the user fetched (Diffusion-QL:
github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL); it is imported from there as is (the same way
as ``benchmarks/suite.py --public-dql``), nothing of it is copied into this repository and nothing is
downloaded.  A twin whose path is not given is skipped with one line.  Run from the repo root.

**Diffusion-QL twin** (issue 38, parts 1 and 3):

* equivalence first: the public ``Diffusion_QL``'s weights loaded into the platform's ``DiffusionQL`` (the
  mapping: the public ``actor.model.*`` is the platform's ``actor.*``, ``ema_model.model.*`` its
  ``ema_actor.*``, ``critic.q{1,2}_model.{0,2,4,6}.*`` its ``critic.*``, the same keys, ``FusedTwinQ``
  loading ``TwinQ``'s), then, with the random draws aligned (same torch seed; the public chain draws one
  more normal per chain, for its step 0 where it is multiplied by 0, which the harness draws and drops on
  the platform's side; the public's numpy coin of the L_q head matched to the platform's torch coin): the
  sampled actions, the critics' values, the BC loss, ``act`` against the public ``sample_action``, the four
  losses of one training step and every weight after it.  Max abs differences are reported.
* learning: per seed, the public agent trained by its own ``train(replay_buffer, iterations, batch_size)``
  on its own ``Data_Sampler`` built from the platform's loaded transitions, next to the platform's
  ``SeedRun`` (``algorithms.build`` + ``fit_dataset`` + ``TransitionSampler``, the platform's training
  step), with the papers' per-task settings as the platform resolves them
  (``algorithms.resolve_params("dql", dataset, {})``) passed to both, batch 256, one torch thread.  Both
  are evaluated at every ``--eval-steps`` by the platform's ``run_episodes`` (actions clipped to the box, env
  seeds 100000..100009) and ``summarize`` (normalized score from the dataset's reference returns); the
  public agent acts through its own ``sample_action`` (one state at a time, as its ``eval_policy``), or
  ``--public-act batched`` (the same math for all envs at once).
* per step: both means over seeds, a 95% percentile-bootstrap CI of the difference of means (platform -
  public; each side's seeds resampled independently, 10000 resamples, fixed seed) and whether it contains
  0; each side's training steps/s (same process, same threads, the sides interleaved segment by segment)
  and evaluation episodes/s.
* writes ``twins_dql.md``, ``twins_dql.parquet`` (one row per side, seed and evaluation step; the
  equivalence numbers and the settings in the file's metadata) and ``twins_dql.png`` (both curves with
  95% bootstrap bands) under ``--out``; a dataset other than generated:hopper-medium gets its name
  appended (``twins_dql_pendulum-medium.md``).  Both record the public code's commit.

Seeds can run as separate processes (one per core) and be merged: ``python -m benchmarks.twins --public-dql PATH
--seeds 0 1 --out A`` and ``... --seeds 2 3 --out B``, then ``python -m benchmarks.twins --merge A B`` writes the
one result (the runs must share every setting and the public commit; checked).

**EDP and Diffusion Policy twins** (issue 38, part 2) live in ``benchmarks/twins_edp.py`` and
``benchmarks/twins_dp.py``: ``--public-edp`` / ``--public-dp`` run their equivalence checks (each needs packages
that are not project dependencies, named in ``benchmarks/requirements-twins-*.txt``; without them it says so in
one line).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import types
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import algorithms  # noqa: E402
from algorithms.common import Algorithm  # noqa: E402

DEFAULT_DATASET = "generated:hopper-medium"
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# platform reward_shaping -> the public Data_Sampler's reward_tune (main.py's names)
REWARD_TUNE = {"none": "no", "antmaze": "cql_antmaze", "normalize": "normalize"}


# ----------------------------------------------------------------------------- statistics


def bootstrap_diff_ci(a, b, n_resamples: int = N_RESAMPLES, level: float = 0.95,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``mean(b) - mean(a)``: the seeds of each side resampled with replacement,
    independently of the other side's, ``n_resamples`` times from ``np.random.default_rng(seed)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    mean_a = a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(axis=1)
    mean_b = b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(mean_b - mean_a, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(x, n_resamples: int = N_RESAMPLES, level: float = 0.95,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``mean(x)`` over its seeds (the figure's bands)."""
    return bootstrap_diff_ci([0.0], x, n_resamples, level, seed)


def contains_zero(ci: tuple[float, float]) -> bool:
    return ci[0] <= 0.0 <= ci[1]


# ----------------------------------------------------------------------------- the public Diffusion-QL code


def git_commit(path: str) -> str:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def max_action_of(env_spec) -> float:
    """The public code's scalar ``max_action``: only a symmetric box with one bound for every dimension."""
    low, high = np.asarray(env_spec.act_low), np.asarray(env_spec.act_high)
    if not (np.allclose(low, -high) and np.allclose(high, high[0])):
        raise SystemExit(f"the public Diffusion-QL code clips to one scalar max_action; this task's action box "
                         f"[{low}, {high}] is not [-m, m]^d")
    return float(high[0])


def make_public_agent(pub, cfg, env_spec, max_action: float):
    """The public ``Diffusion_QL`` with the platform's resolved settings (as its main.py passes them)."""
    if cfg.lr_decay:
        raise SystemExit("twins: lr_decay is on; the public code steps its cosine once per train() call, which "
                         "the twin's evaluation segments would change: run it with lr_decay off")
    if cfg.hidden_dim != 256:
        raise SystemExit(f"twins: the public networks are 256 wide, the platform's config says {cfg.hidden_dim}")
    if cfg.critic_lr != 3e-4 or cfg.n_backup_samples != 10 or cfg.n_action_samples != 50:
        raise SystemExit("twins: the public code fixes critic_lr 3e-4, 10 backup samples and 50 candidates")
    return pub.Diffusion_QL(state_dim=env_spec.obs_dim, action_dim=env_spec.act_dim, max_action=max_action,
                            device="cpu", discount=cfg.gamma, tau=cfg.tau, max_q_backup=cfg.max_q_backup,
                            eta=cfg.eta, beta_schedule=cfg.beta_schedule, n_timesteps=cfg.n_timesteps,
                            ema_decay=cfg.ema_decay, step_start_ema=cfg.step_start_ema,
                            update_ema_every=cfg.update_ema_every, lr=cfg.lr, lr_decay=False,
                            lr_maxt=cfg.lr_maxt, grad_norm=cfg.grad_norm)


def public_weights(agent) -> dict:
    """The public agent's networks under the platform's ``DiffusionQL`` state_dict keys (the weight mapping)."""
    return {"actor": agent.actor.model.state_dict(), "ema_actor": agent.ema_model.model.state_dict(),
            "critic": agent.critic.state_dict(), "critic_target": agent.critic_target.state_dict()}


def load_public_weights(algo, agent) -> None:
    for key, sd in public_weights(agent).items():
        getattr(algo, key).load_state_dict(sd, strict=True)


def weight_diffs(algo, agent) -> dict[str, float]:
    """Largest |platform - public| over the weights of each of the four networks."""
    out = {}
    for key, sd in public_weights(agent).items():
        ours = getattr(algo, key).state_dict()
        if set(ours) != set(sd):
            raise KeyError(f"{key}: keys differ: {sorted(set(ours) ^ set(sd))}")
        out[key] = max(float((ours[k] - sd[k]).abs().max()) for k in sd)
    return out


def max_weight_diff(algo, agent) -> float:
    """Largest |platform - public| over every weight of the four networks."""
    return max(weight_diffs(algo, agent).values())


def qlearning_dict(data) -> dict:
    """The platform's loaded transitions as ``d4rl.qlearning_dataset`` returns them (what Data_Sampler takes)."""
    return {k: np.asarray(getattr(data, k)) for k in
            ("observations", "actions", "next_observations", "rewards", "terminals")}


class PublicPolicy(Algorithm):
    """The public agent behind the platform's policy contract: ``act(obs (B, 1, obs_dim)) -> (B, 1, act_dim)``.

    ``batched=False``: the public ``sample_action`` once per state (its ``eval_policy``'s way: 50 candidates,
    one drawn by softmax over the target critic's min Q).  ``batched=True``: the same computation for all
    states at once (``actor.sample`` on the 50 repeats of every state, softmax per state)."""

    data_kind = "transitions"

    def __init__(self, agent, batched: bool = False):
        self.agent, self.batched = agent, batched

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(obs)[:, -1].float()
        if not self.batched:
            with warnings.catch_warnings():  # its F.softmax(q) without dim= (1-d: the same softmax)
                warnings.simplefilter("ignore", UserWarning)
                acts = [self.agent.sample_action(x.numpy()) for x in s]
            return torch.as_tensor(np.stack(acts), dtype=torch.float32).unsqueeze(1)
        n, b = 50, s.shape[0]
        s_rep = torch.repeat_interleave(s, repeats=n, dim=0)
        a = self.agent.actor.sample(s_rep)
        q = self.agent.critic_target.q_min(s_rep, a).view(b, n)
        idx = torch.multinomial(torch.softmax(q, dim=-1), 1)                      # (b, 1)
        return a.view(b, n, -1).gather(1, idx.unsqueeze(-1).expand(-1, 1, a.shape[-1]))


class FixedBuffer:
    """The public replay-buffer interface returning one fixed batch: ``(s, a, s', r (B, 1), not_done (B, 1))``."""

    def __init__(self, batch: dict):
        self.batch = batch

    def sample(self, n):
        b = self.batch
        return (b["observations"], b["actions"], b["next_observations"], b["rewards"].view(-1, 1),
                1.0 - b["terminals"].view(-1, 1))


@contextlib.contextmanager
def public_draw_order():
    """Align the platform's random draws with the public chain's: ``p_sample_loop`` draws ``x_K`` and then one
    normal per step *including step 0* (multiplied by 0 there); the platform's ``ddpm_noise`` draws the K it
    uses.  Inside this block every ``ddpm_noise`` of ``algorithms.dql`` draws the public's extra normal too."""
    import algorithms.dql as dql

    orig = dql.ddpm_noise

    def aligned(schedule, shape, *, device=None, generator=None):
        noises = orig(schedule, shape, device=device, generator=generator)
        torch.randn(shape, device=noises.device, generator=generator)  # the public step-0 draw, unused
        return noises

    dql.ddpm_noise = aligned
    try:
        yield
    finally:
        dql.ddpm_noise = orig


def platform_coin(seed: int, cfg, b: int, act_dim: int) -> float:
    """The platform's L_q head coin (``torch.rand(())`` after the step's other draws, in the public order)."""
    k, n_next = cfg.n_timesteps, b * (cfg.n_backup_samples if cfg.max_q_backup else 1)
    torch.manual_seed(seed)
    for _ in range(k + 1):
        torch.randn((n_next, act_dim))
    torch.randint(0, k, (b,))
    torch.randn((b, act_dim))
    for _ in range(k + 1):
        torch.randn((b, act_dim))
    return float(torch.rand(()))


def numpy_seed_for(coin: float) -> int:
    """A numpy seed whose first ``np.random.uniform()`` falls on the same side of 0.5 as ``coin``."""
    for s in range(10_000):
        if (np.random.RandomState(s).uniform() > 0.5) == (coin > 0.5):
            return s
    raise RuntimeError("no numpy seed found")


def dql_equivalence(pub, cfg, env_spec, data, max_action: float, batch_size: int = 256, seed: int = 0) -> dict:
    """Max abs differences between the public Diffusion-QL and the platform's on the same weights and draws."""
    out: dict[str, float] = {}
    torch.manual_seed(seed)
    agent = make_public_agent(pub, cfg, env_spec, max_action)
    torch.manual_seed(seed)
    algo = algorithms.build("dql", cfg, env_spec, "cpu")
    out["initial weights, same torch seed"] = max_weight_diff(algo, agent)
    load_public_weights(algo, agent)
    out["weights after the mapping"] = max_weight_diff(algo, agent)

    idx = np.random.default_rng(seed).choice(len(data.observations), batch_size, replace=False)
    batch = {k: torch.as_tensor(np.asarray(getattr(data, k))[idx], dtype=torch.float32)
             for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    s, a = batch["observations"], batch["actions"]
    with torch.no_grad():
        torch.manual_seed(seed + 1)
        a_pub = agent.actor.sample(s)
        torch.manual_seed(seed + 1)
        a_ours = algo.sample(s)
        out["sampled actions (K-step chain)"] = float((a_pub - a_ours).abs().max())
        q_pub, q_ours = agent.critic(s, a), algo.critic(s, a)
        out["critic Q1, Q2"] = max(float((x - y).abs().max()) for x, y in zip(q_pub, q_ours))
        out["target critic min Q"] = float((agent.critic_target.q_min(s, a) - algo.critic_target.q_min(s, a))
                                           .abs().max())
        torch.manual_seed(seed + 2)
        bc_pub = agent.actor.loss(a, s)
        torch.manual_seed(seed + 2)
        bc_ours = algo.bc_loss(s, a)
        out["BC loss (same k, eps)"] = abs(float(bc_pub) - float(bc_ours))
        diffs, same = [], 0
        for i in range(8):
            torch.manual_seed(seed + 10 + i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                x = torch.as_tensor(agent.sample_action(s[i].numpy()))
            torch.manual_seed(seed + 10 + i)
            with public_draw_order():
                y = algo.act(s[i:i + 1, None])[0, 0]
            diffs.append(float((x - y).abs().max()))
            same += diffs[-1] < 1e-4
        out["act vs sample_action (8 states)"] = max(diffs)
        out["act picks the same candidate (of 8)"] = float(same)

    step_seed = seed + 3
    coin = platform_coin(step_seed, cfg, batch_size, env_spec.act_dim)
    np.random.seed(numpy_seed_for(coin))
    torch.manual_seed(step_seed)
    m_pub = agent.train(FixedBuffer(batch), 1, batch_size)
    torch.manual_seed(step_seed)
    with public_draw_order():
        m_ours = algo.update(batch)
    for name in ("critic_loss", "bc_loss", "ql_loss", "actor_loss"):
        out[f"one step: {name}"] = abs(float(m_pub[name][0]) - float(m_ours[f"train/{name}"]))
    grads = dict(agent.actor.model.named_parameters())
    out["one step: actor gradients (clipped)"] = max(float((p.grad - grads[n].grad).abs().max())
                                                     for n, p in algo.actor.named_parameters())
    for key, v in weight_diffs(algo, agent).items():
        out[f"one step: {key} weights after it"] = v
    return out


# ----------------------------------------------------------------------------- the learning twin


def evaluate(policy, env_id: str, data, n_episodes: int, eval_seed: int) -> tuple[dict, float]:
    """The platform's evaluation of ``policy``: ``run_episodes`` over env seeds ``eval_seed..`` (one env per
    episode, batched) and ``summarize``; returns the metrics, the wall time and this process's CPU time."""
    from platform.envs import make_env
    from platform.evaluation import run_episodes, summarize

    env_fns = [lambda: make_env(env_id) for _ in range(n_episodes)]
    tick, cpu = time.perf_counter(), time.process_time()
    episodes = run_episodes(policy, env_fns, list(range(eval_seed, eval_seed + n_episodes)))
    wall, cpu = time.perf_counter() - tick, time.process_time() - cpu
    return summarize(episodes, env_id, data.ref_min_score, data.ref_max_score), wall, cpu


def dql_seed(pub, seed: int, cfg, env_spec, data, sampler_data: dict, reward_tune: str, max_action: float,
             eval_steps: list[int], args) -> list[dict]:
    """One seed of both sides, trained segment by segment to each evaluation step; one row per side and step."""
    from platform.training import SeedRun

    device = torch.device("cpu")
    run = SeedRun(seed, types.SimpleNamespace(algorithm="dql"), cfg, env_spec, data, device)  # seeds torch itself
    evaluator = algorithms.build("dql", cfg, env_spec, "cpu")  # a rollout actor's copy, as EvalPool makes it
    torch.manual_seed(seed)
    np.random.seed(seed)
    agent = make_public_agent(pub, cfg, env_spec, max_action)  # the global torch/numpy streams are its own
    sampler = pub.Data_Sampler(sampler_data, "cpu", reward_tune)
    policy = PublicPolicy(agent, batched=args.public_act == "batched")
    rows, done = [], 0
    for j, target in enumerate(eval_steps):
        n = target - done

        def train_public():
            m = agent.train(sampler, iterations=n, batch_size=args.batch_size)
            return {k: float(np.mean(v)) for k, v in m.items()}

        def train_platform():
            for st in range(done + 1, target + 1):
                run.step(args.batch_size, st)
            return {k.removeprefix("train/"): v for k, v in run.train_metrics().items()}

        sides = [("public", train_public), ("platform", train_platform)]
        if j % 2:  # alternate who trains first: load changes hit both alike
            sides.reverse()
        trained = {}
        for side, fn in sides:
            tick, cpu = time.perf_counter(), time.process_time()
            losses = fn()
            trained[side] = (losses, time.perf_counter() - tick, time.process_time() - cpu)
        done = target
        evaluator.load_state_dict(run.algo.policy_state_dict())
        for side, pol in (("public", policy), ("platform", evaluator)):
            metrics, eval_s, eval_cpu_s = evaluate(pol, data.env_id, data, args.eval_episodes, args.eval_seed)
            losses, train_s, train_cpu_s = trained[side]
            rows.append({"side": side, "seed": seed, "step": target, "score": metrics["eval/normalized_score"],
                         "return_mean": metrics["eval/return_mean"], "return_std": metrics["eval/return_std"],
                         "length_mean": metrics["eval/length_mean"], "act_ms": metrics["eval/act_ms"],
                         "action_out_of_box": metrics["eval/action_out_of_box"],
                         "segment_steps": n, "train_s": train_s, "train_cpu_s": train_cpu_s,
                         "train_steps_per_s": n / train_s, "eval_s": eval_s, "eval_cpu_s": eval_cpu_s,
                         "eval_episodes_per_s": args.eval_episodes / eval_s,
                         "bc_loss": losses.get("bc_loss", float("nan")),
                         "ql_loss": losses.get("ql_loss", float("nan")),
                         "critic_loss": losses.get("critic_loss", float("nan")),
                         "actor_loss": losses.get("actor_loss", float("nan"))})
            print(f"[twins] dql seed {seed} step {target} {side:8s}: score {rows[-1]['score']:6.1f}  "
                  f"bc {rows[-1]['bc_loss']:.4f}  train {rows[-1]['train_steps_per_s']:.1f} steps/s "
                  f"({n / max(train_cpu_s, 1e-9):.1f} per CPU s)  eval {rows[-1]['eval_episodes_per_s']:.2f} "
                  f"episodes/s ({args.eval_episodes / max(eval_cpu_s, 1e-9):.2f} per CPU s)", flush=True)
    return rows


def step_rates(pub, cfg, env_spec, data, max_action: float, batch_size: int, calls: int = 20,
               repeats: int = 5) -> dict[str, float]:
    """Training steps/s of one batch of the dataset, in this process, interleaved (``suite.interleaved_rate``:
    median of ``repeats`` runs of ``calls`` calls): the public ``Diffusion_QL.train(buffer, 1, B)``, the
    platform's eager ``update`` and its ``train.compile`` step (``algo.compile()``; skipped without a C++
    compiler, which torch.compile's CPU backend needs)."""
    from benchmarks.suite import interleaved_rate
    from platform.compiling import cxx_compiler
    from platform.training import TransitionSampler

    sampler = TransitionSampler(data, torch.device("cpu"))
    sampler.reseed(0, 0)
    batch = sampler.sample(batch_size)
    torch.manual_seed(0)
    agent = make_public_agent(pub, cfg, env_spec, max_action)
    buffer = FixedBuffer(batch)
    eager = algorithms.build("dql", cfg, env_spec, "cpu")
    fns = {"public": lambda: agent.train(buffer, iterations=1, batch_size=batch_size),
           "platform eager": lambda: eager.update(batch)}
    if cxx_compiler():
        compiled = algorithms.build("dql", cfg, env_spec, "cpu")
        compiled.compile()
        fns["platform compiled"] = lambda: compiled.update(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return interleaved_rate(fns, calls, repeats, warmup=3)


def per_step_summary(rows: list[dict], eval_steps: list[int]) -> list[dict]:
    out = []
    for step in eval_steps:
        pub = [r["score"] for r in rows if r["step"] == step and r["side"] == "public"]
        ours = [r["score"] for r in rows if r["step"] == step and r["side"] == "platform"]
        ci = bootstrap_diff_ci(pub, ours)
        bc = {side: float(np.mean([r["bc_loss"] for r in rows if r["step"] == step and r["side"] == side]))
              for side in ("public", "platform")}
        out.append({"step": step, "public_mean": float(np.mean(pub)), "platform_mean": float(np.mean(ours)),
                    "diff": float(np.mean(ours) - np.mean(pub)), "ci_lo": ci[0], "ci_hi": ci[1],
                    "contains_zero": contains_zero(ci), "public_ci": bootstrap_mean_ci(pub),
                    "platform_ci": bootstrap_mean_ci(ours), "public_bc_loss": bc["public"],
                    "platform_bc_loss": bc["platform"], "public_scores": pub, "platform_scores": ours})
    return out


def throughput(rows: list[dict]) -> dict:
    """Each side's training steps/s and evaluation episodes/s (all steps or episodes over all the time), per
    wall-clock second and per CPU second of this process (on a shared machine the CPU figure is the steadier)."""
    out = {}
    for side in ("public", "platform"):
        rs = [r for r in rows if r["side"] == side]
        steps, episodes = sum(r["segment_steps"] for r in rs), sum(r["eval_episodes_per_s"] * r["eval_s"] for r in rs)
        out[side] = {"train_steps_per_s": steps / sum(r["train_s"] for r in rs),
                     "train_steps_per_cpu_s": steps / max(sum(r["train_cpu_s"] for r in rs), 1e-9),
                     "eval_episodes_per_s": episodes / sum(r["eval_s"] for r in rs),
                     "eval_episodes_per_cpu_s": episodes / max(sum(r["eval_cpu_s"] for r in rs), 1e-9),
                     "steps": steps, "episodes": episodes, "wall_s": sum(r["train_s"] + r["eval_s"] for r in rs),
                     "cpu_s": sum(r["train_cpu_s"] + r["eval_cpu_s"] for r in rs)}
    return out


# ----------------------------------------------------------------------------- output


def markdown(meta: dict, equivalence: dict, summary: list[dict], rates: dict) -> str:
    L = [f"# Diffusion-QL twin: the platform beside the public code on {meta['dataset']}", ""]
    if max(meta["eval_steps"]) < 2500:
        L += [f"**A smoke run** ({max(meta['eval_steps'])} steps at most): it checks the harness, not the learning; "
              f"issue 38 asks for 2500-20000 steps x at least 4 seeds.", ""]
    L += [f"* public code: {meta['public_repo']} at commit `{meta['public_commit']}`",
          f"* platform: commit `{meta['platform_commit']}`",
          f"* settings (both sides): `algorithms.resolve_params('dql', '{meta['dataset']}', {{}})` = "
          f"`{json.dumps(meta['resolved'])}` over DQLConfig's defaults (K {meta['n_timesteps']}, "
          f"{meta['beta_schedule']} schedule, lr_decay off); batch {meta['batch_size']}; reward_tune "
          f"`{meta['reward_tune']}`",
          f"* seeds {meta['seeds']}; evaluation: `platform.evaluation.run_episodes` + `summarize`, "
          f"{meta['eval_episodes']} episodes on {meta['env_id']}, env seeds {meta['eval_seed']}.."
          f"{meta['eval_seed'] + meta['eval_episodes'] - 1}; the public agent acts through its "
          f"{'own sample_action, one state at a time' if meta['public_act'] == 'per_state' else 'sample_action math, batched over the envs'}",
          f"* torch {meta['torch']}, {meta['threads']} torch thread(s), {meta['cpus']} CPUs, load average (1 min) "
          f"{meta['load_1m_start']:.1f} at the start, {meta['load_1m_end']:.1f} at the end; "
          f"wall time {meta['wall_s'] / 60:.1f} min", "",
          "## Equivalence on the same weights and aligned draws (max abs difference)", "",
          "| quantity | value |", "|---|---:|"]
    for k, v in equivalence.items():
        L.append(f"| {k} | {v:.3g} |" if "of 8" not in k else f"| {k} | {v:.0f} |")
    L += ["", "## Normalized score per evaluation step (mean over seeds)", "",
          "Difference = platform - public; 95% percentile-bootstrap CI (each side's seeds resampled "
          f"independently, {N_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).", "",
          "| step | public | platform | difference | 95% CI | contains 0 | BC loss public / platform | "
          "per seed public / platform |", "|---:|---:|---:|---:|---|---|---|---|"]
    for s in summary:
        seeds = ", ".join(f"{p:.1f} / {o:.1f}" for p, o in zip(s["public_scores"], s["platform_scores"]))
        L.append(f"| {s['step']} | {s['public_mean']:.1f} | {s['platform_mean']:.1f} | {s['diff']:+.1f} | "
                 f"[{s['ci_lo']:+.1f}, {s['ci_hi']:+.1f}] | {'yes' if s['contains_zero'] else '**no**'} | "
                 f"{s['public_bc_loss']:.4f} / {s['platform_bc_loss']:.4f} | {seeds} |")
    inside = sum(s["contains_zero"] for s in summary)
    n_seeds = len(meta["seeds"])
    L += ["", f"The CI contains 0 at {inside} of {len(summary)} evaluation steps. A percentile bootstrap over "
          f"{n_seeds} seeds per side treats those seeds as the whole population, so its interval is narrow; and "
          f"with {len(summary)} steps tested at the 95% level, at least one excludes 0 by chance "
          f"{1 - 0.95 ** len(summary):.0%} of the time when the two sides learn alike."]
    L += ["", "## Throughput (same process, same threads; training interleaved segment by segment)", "",
          "| side | training steps/s | per CPU s | evaluation episodes/s | per CPU s |", "|---|---:|---:|---:|---:|"]
    for side in ("public", "platform"):
        r = rates[side]
        L.append(f"| {side} | {r['train_steps_per_s']:.1f} | {r['train_steps_per_cpu_s']:.1f} | "
                 f"{r['eval_episodes_per_s']:.2f} | {r['eval_episodes_per_cpu_s']:.2f} |")
    ratio = lambda k: rates["platform"][k] / rates["public"][k]  # noqa: E731
    L += ["", f"Platform / public: training {ratio('train_steps_per_s'):.2f}x ({ratio('train_steps_per_cpu_s'):.2f}x "
          f"per CPU s), evaluation {ratio('eval_episodes_per_s'):.2f}x ({ratio('eval_episodes_per_cpu_s'):.2f}x per "
          f"CPU s): the platform's eager step; evaluation episodes can run to different lengths on the two sides."]
    if meta.get("step_rates"):
        r = meta["step_rates"]
        L += ["", f"One batch of the dataset (batch {meta['batch_size']}), the same process, interleaved (median of 5 "
              "runs of 20 steps): training steps/s", "", "| step | steps/s | / public |", "|---|---:|---:|"]
        L += [f"| {k} | {v:.1f} | {v / r['public']:.2f}x |" for k, v in r.items()]
        if "platform compiled" not in r:
            L.append("| platform compiled | (no C++ compiler for torch.compile's CPU kernels) | |")
    L += ["", f"Cost: {rates['public']['cpu_s'] + rates['platform']['cpu_s']:.0f} CPU s "
          f"({meta['wall_s']:.0f} s wall, equivalence check and start-up included) for "
          f"{len(meta['seeds'])} seeds x {max(meta['eval_steps'])} steps x 2 sides.", "",
          f"Rerun: `{meta['command']}`", ""]
    if meta.get("parts"):
        L[-1:-1] = [f"Run as {len(meta['parts'])} processes side by side (one per core), merged: "
                    + "; ".join(f"seeds {pt['seeds']} in {pt['wall_s'] / 60:.0f} min" for pt in meta["parts"])
                    + ". Each process interleaves its two sides, so the throughput ratio compares like with like.",
                    ""]
    return "\n".join(L)


def figure(summary: list[dict], meta: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s["step"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    for side, color in (("public", "tab:orange"), ("platform", "tab:blue")):
        mean = [s[f"{side}_mean"] for s in summary]
        lo, hi = [s[f"{side}_ci"][0] for s in summary], [s[f"{side}_ci"][1] for s in summary]
        label = f"public code ({meta['public_commit'][:7]})" if side == "public" else "platform"
        ax.plot(steps, mean, marker="o", color=color, label=label)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalized score")
    ax.set_title(f"Diffusion-QL twins, {meta['dataset']}, {len(meta['seeds'])} seeds (95% bootstrap bands)",
                 fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[dict], meta: dict, equivalence: dict, summary: list[dict], rates: dict, out: str,
          stem: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    common = {"dataset": meta["dataset"], "public_commit": meta["public_commit"],
              "platform_commit": meta["platform_commit"], "threads": meta["threads"], "torch": meta["torch"]}
    table = pa.Table.from_pylist([{**r, **common} for r in rows])
    table = table.replace_schema_metadata({"twins": json.dumps({"meta": meta, "equivalence": equivalence,
                                                                "throughput": rates})})
    paths = [os.path.join(out, f"{stem}.{ext}") for ext in ("parquet", "md", "png")]
    pq.write_table(table, paths[0])
    with open(paths[1], "w") as f:
        f.write(markdown(meta, equivalence, summary, rates))
    figure(summary, meta, paths[2])
    return paths


# ----------------------------------------------------------------------------- the twins


def dql_twin(args) -> dict:
    from benchmarks.suite import import_public_dql, load_1m
    from platform.datasets import load_dataset

    t0, load_start = time.perf_counter(), load_1m()
    platform_commit = git_commit(ROOT)  # at the start: the code this process imports (HEAD may move during a run)
    pub = import_public_dql(args.public_dql)
    data = load_dataset(args.dataset)
    env_spec = data.env_spec()
    resolved, _ = algorithms.resolve_params("dql", args.dataset, {})
    cfg = algorithms.build_config("dql", resolved)
    max_action = max_action_of(env_spec)
    reward_tune = REWARD_TUNE[cfg.reward_shaping]
    eval_steps = sorted(set(args.eval_steps))
    print(f"[twins] dql on {args.dataset} ({data.env_id}): settings {resolved}, seeds {args.seeds}, "
          f"evaluations at {eval_steps}", flush=True)

    equivalence = dql_equivalence(pub, cfg, env_spec, data, max_action, args.batch_size)
    for k, v in equivalence.items():
        print(f"[twins] dql equivalence: {k}: {v:.3g}", flush=True)

    rates_1b = step_rates(pub, cfg, env_spec, data, max_action, args.batch_size)
    print("[twins] dql one-batch training steps/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates_1b.items()),
          flush=True)
    sampler_data = qlearning_dict(data)
    rows = []
    for seed in args.seeds:
        rows += dql_seed(pub, seed, cfg, env_spec, data, sampler_data, reward_tune, max_action, eval_steps, args)
    summary = per_step_summary(rows, eval_steps)
    rates = throughput(rows)
    meta = {"dataset": args.dataset, "env_id": data.env_id, "public_repo":
            "github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL", "public_commit": git_commit(args.public_dql),
            "platform_commit": platform_commit, "resolved": resolved, "n_timesteps": cfg.n_timesteps,
            "beta_schedule": cfg.beta_schedule, "reward_tune": reward_tune, "batch_size": args.batch_size,
            "seeds": list(args.seeds), "eval_steps": eval_steps, "eval_episodes": args.eval_episodes,
            "eval_seed": args.eval_seed, "public_act": args.public_act, "threads": torch.get_num_threads(),
            "step_rates": rates_1b,
            "torch": torch.__version__, "cpus": os.cpu_count() or 0, "load_1m_start": load_start,
            "load_1m_end": load_1m(), "wall_s": time.perf_counter() - t0,
            "command": "python -m benchmarks.twins --public-dql PATH --dataset " + args.dataset + " --seeds "
                       + " ".join(map(str, args.seeds)) + " --eval-steps " + " ".join(map(str, eval_steps))
                       + (" --public-act batched" if args.public_act == "batched" else "")}
    stem = "twins_dql" + ("" if args.dataset == DEFAULT_DATASET else "_" + args.dataset.split(":")[-1]
                          .replace("/", "_"))
    for p in write(rows, meta, equivalence, summary, rates, args.out, stem):
        print(f"[twins] wrote {p}", flush=True)
    for s in summary:
        print(f"[twins] dql step {s['step']}: public {s['public_mean']:.1f}, platform {s['platform_mean']:.1f}, "
              f"difference {s['diff']:+.1f} [{s['ci_lo']:+.1f}, {s['ci_hi']:+.1f}]"
              f"{'' if s['contains_zero'] else ' (excludes 0)'}", flush=True)
    return {"equivalence": equivalence, "summary": summary, "throughput": rates, "rows": rows, "meta": meta}


def merge(paths: list[str], out: str, public_dql: str | None = None) -> dict:
    """One Diffusion-QL twin result from several runs of the same twin (e.g. seeds 0 1 and seeds 2 3 run as two
    processes, one per core): the rows are concatenated, the summary, CI and throughput recomputed from them.
    The runs must share the dataset, settings, evaluation and public commit (checked) and have no seed twice."""
    import pyarrow.parquet as pq

    parts = []
    for p in paths:
        f = os.path.join(p, "twins_dql.parquet") if os.path.isdir(p) else p
        if not os.path.isfile(f):
            raise SystemExit(f"twins --merge: {f}: no such file (a twins_dql*.parquet or the folder holding one)")
        t = pq.read_table(f)
        parts.append((f, t.to_pylist(), json.loads(t.schema.metadata[b"twins"])))
    same = ("dataset", "public_commit", "resolved", "batch_size", "eval_steps", "eval_episodes", "eval_seed",
            "public_act", "threads", "torch")
    meta0 = parts[0][2]["meta"]
    for f, _, info in parts[1:]:
        diff = [k for k in same if info["meta"][k] != meta0[k]]
        if diff:
            raise SystemExit(f"twins --merge: {f}: differs from {parts[0][0]} in {', '.join(diff)}")
    seeds = [s for _, _, info in parts for s in info["meta"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"twins --merge: seed(s) repeated across the runs: {seeds}")
    common = ("dataset", "public_commit", "platform_commit", "threads", "torch")
    rows = [{k: v for k, v in r.items() if k not in common} for _, rs, _ in parts for r in rs]
    summary = per_step_summary(rows, meta0["eval_steps"])
    rates = throughput(rows)
    meta = dict(meta0, seeds=sorted(seeds), wall_s=max(info["meta"]["wall_s"] for _, _, info in parts),
                load_1m_start=max(info["meta"]["load_1m_start"] for _, _, info in parts),
                load_1m_end=max(info["meta"]["load_1m_end"] for _, _, info in parts),
                parts=[{"seeds": info["meta"]["seeds"], "wall_s": info["meta"]["wall_s"],
                        "platform_commit": info["meta"]["platform_commit"], "command": info["meta"]["command"]}
                       for _, _, info in parts])
    if public_dql:  # the one-batch step rates (eager, compiled, public) measured in this process
        from benchmarks.suite import import_public_dql
        from platform.datasets import load_dataset

        data = load_dataset(meta0["dataset"])
        env_spec = data.env_spec()
        cfg = algorithms.build_config("dql", meta0["resolved"])
        meta["step_rates"] = step_rates(import_public_dql(public_dql), cfg, env_spec, data, max_action_of(env_spec),
                                        meta0["batch_size"])
    meta["command"] = " & ".join(pt["command"] for pt in meta["parts"]) + " (one process each, merged with " \
        "python -m benchmarks.twins --merge DIR ...)"
    stem = os.path.splitext(os.path.basename(parts[0][0]))[0]
    for p in write(rows, meta, parts[0][2]["equivalence"], summary, rates, out, stem):
        print(f"[twins] wrote {p}", flush=True)
    return {"summary": summary, "throughput": rates, "rows": rows, "meta": meta}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--public-dql", default=None, metavar="PATH",
                   help="a checkout of github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL")
    p.add_argument("--public-edp", default=None, metavar="PATH", help="a checkout of the public EDP code")
    p.add_argument("--public-dp", default=None, metavar="PATH", help="a checkout of the public Diffusion Policy code")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"platform dataset name (default {DEFAULT_DATASET})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--eval-steps", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    p.add_argument("--eval-seed", type=int, default=100_000, help="first env seed (default 100000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--public-act", choices=("per_state", "batched"), default="per_state",
                   help="the public agent acts through its sample_action one state at a time (default) or the "
                        "same math batched over the envs (faster)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="merge the Diffusion-QL twin results of several runs (their --out folders or Parquet "
                        "files; e.g. seeds split over processes) into one result under --out, and exit")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.merge:
        return {"dql": merge(args.merge, args.out, args.public_dql)}
    results = {}
    if args.public_dql:
        results["dql"] = dql_twin(args)
    else:
        print("[twins] dql: skipped (no --public-dql PATH)", flush=True)
    for name, path in (("edp", args.public_edp), ("dp", args.public_dp)):
        if not path:
            print(f"[twins] {name}: skipped (no --public-{name} PATH)", flush=True)
            continue
        # each twin's module reports a missing package (jax, diffusers) in one line and returns {}
        module = __import__(f"benchmarks.twins_{name}", fromlist=[f"{name}_twin"])
        results[name] = getattr(module, f"{name}_twin")(args)
    return results


if __name__ == "__main__":
    main()
