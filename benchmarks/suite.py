"""The benchmark suite: training, sampling, evaluation and sweep overhead, side by side in one process.

    python -m benchmarks.suite                       # everything (minutes on 2 busy cores)
    python -m benchmarks.suite --parts training,sampling --out results/bench
    python -m benchmarks.suite --quick               # seconds: tiny networks, few steps (the test uses it)
    python -m benchmarks.suite --parts training --device cuda --tf32 --bf16   # on a GPU: as a GPU trial trains,
                                                     # and Diffusion Policy under bf16 autocast next to float32

Parts (``--parts``, comma-separated; default all):

* ``training``: gradient steps/s at the papers' batch (256) for DQL (K=5), EDP (K=100, 1000, TD3
  backbone, DPM-Solver targets), Diffusion Policy CNN and transformer (Push-T shapes), each next to a
  plain eager re-implementation of the same step in this file (``nn.Mish``, table gathers, foreach /
  for-loop optimizers, ``.item()`` per loss), timed interleaved so both see the same machine load.
  The figure is the ratio ours / eager.  DQL also without its fused twin critic, and N seeds trained
  in one ``VectorizedDQL`` (vmap) against N ordinary runs one after the other.
  ``--public-dql PATH``: also the public Diffusion-QL code's own ``Diffusion_QL.train`` step (imported from a
  checkout at PATH, not copied), interleaved with ours eager and with ``train.compile``.
* ``sampling``: milliseconds per batch of actions (10 states x 50 candidates, HalfCheetah dims) for
  DDPM (K = 5, 20, 100; next to the plain chain with per-step gathers), DDIM (K = 100 model, 5-20
  steps) and DPM-Solver++ (K = 1000 model, 5-20 steps).
* ``evaluation``: environment steps/s of DQL policies in Pendulum (and HalfCheetah unless ``--quick``):
  batched inference over all envs of a vector env vs one ``act`` per env, in this process; and a real
  ``EvalPool`` of 1, 2, 4 Ray CPU rollout actors (real gymnasium) on the same episodes.
* ``parallel``: ``train.data_parallel`` for Diffusion Policy (CNN, Push-T shapes): 2 gloo DDP replicas x B/2
  rows (two processes, one thread each) against 1 process x B rows, seconds per global step, and the largest
  weight difference after the same steps (the equivalence the option promises; float round-off only).
* ``overlap``: ``train.overlap_eval`` in real one-trial sweeps (a DQL study on generated Pendulum; a Diffusion
  Policy study on Push-T when its data is in ``../shared``): the trial's wall time with evaluation overlapped
  against the same trial with blocking evaluation.
* ``twins`` (only when named): ``benchmarks/twins.py``, the Diffusion-QL learning twin beside the public code
  (``--public-dql PATH``; skipped in one line without it), its training steps/s and evaluation episodes/s here.
* ``sweep``: a tiny real sweep (1 trial, DQL on generated Pendulum): seconds from ``run_sweep`` to the
  first gradient step, and inside the trial from the train loop's start (``time/first_step_unix`` and
  ``time/loop_start_unix`` in the trial's metric history).

Every row goes to ``benchmarks.parquet`` (one row per measurement: part, case, value, unit,
baseline_value, ratio, threads, load average, ...) and ``benchmarks.md`` under ``--out``; the
Markdown table is printed.  Run from the repo root (``platform`` must shadow the standard library's).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from algorithms import EnvSpec  # noqa: E402
from benchmarks.bench_dql import DirectStep, _swap_activation  # noqa: E402

PARTS = ("training", "sampling", "evaluation", "sweep", "parallel", "overlap")
OPTIONAL_PARTS = ("twins",)  # only when named: benchmarks/twins.py (hours at its default budget)
OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah
COLUMNS = ["part", "case", "value", "unit", "baseline", "baseline_value", "ratio", "threads", "load_1m",
           "quick", "torch", "cpus", "unix_time", "note"]


# ----------------------------------------------------------------------------- helpers


def load_1m() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def row(part: str, case: str, value: float, unit: str, baseline: str = "", baseline_value: float = float("nan"),
        note: str = "", **_) -> dict:
    ratio = value / baseline_value if baseline_value and math.isfinite(baseline_value) else float("nan")
    if unit == "ms":  # lower is better: the ratio is always "times faster than the baseline"
        ratio = baseline_value / value if baseline_value and math.isfinite(baseline_value) else float("nan")
    return {"part": part, "case": case, "value": float(value), "unit": unit, "baseline": baseline,
            "baseline_value": float(baseline_value), "ratio": float(ratio), "threads": torch.get_num_threads(),
            "load_1m": load_1m(), "quick": False, "torch": torch.__version__, "cpus": os.cpu_count() or 0,
            "unix_time": time.time(), "note": note}


def interleaved_rate(fns: dict, calls: int, repeats: int, warmup: int, device=None) -> dict[str, float]:
    """Calls per second of each function: median over ``repeats`` timed runs of ``calls`` calls,
    interleaved (run 1 of every function, then run 2, ...) so that load changes hit all alike.
    On a CUDA ``device`` every timed run ends with a synchronize: the GPU's work is timed, not the launches."""
    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            rates[name].append(calls / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def on(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def transition_batch(batch_size: int, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(batch_size, obs_dim, generator=g),
            "actions": torch.rand(batch_size, act_dim, generator=g) * 2 - 1,
            "rewards": torch.randn(batch_size, generator=g),
            "next_observations": torch.randn(batch_size, obs_dim, generator=g),
            "terminals": (torch.rand(batch_size, generator=g) < 0.01).float()}


# ----------------------------------------------------------------------------- plain eager steps (baselines)


class EDPDirect:
    """EDP's TD3-backbone step written plainly (the code's order and clips): ``nn.Mish``, for-loop Adam,
    ``.item()`` per loss."""

    def __init__(self, algo):
        self.a = algo
        for m in (algo.actor, algo.ema_actor, algo.critic, algo.critic_target):
            _swap_activation(m, nn.Mish)
        self.opts = [torch.optim.Adam(m.parameters(), lr=algo.cfg.lr, foreach=False)
                     for m in (algo.actor, algo.critic.q1_model, algo.critic.q2_model)]

    def __call__(self, batch):
        a, c = self.a, self.a.cfg
        s, act, r = batch["observations"], batch["actions"].clamp(-0.999, 0.999), batch["rewards"].reshape(-1, 1)
        s2, done = batch["next_observations"], batch["terminals"].reshape(-1, 1)
        with torch.no_grad():
            t1, t2 = a.critic_target(s2, a.sample(s2, a.ema_actor))
            target = r + c.gamma * (1 - done) * torch.min(t1, t2)
        q1, q2 = a.critic(s, act)
        k = torch.randint(0, c.n_timesteps, (s.shape[0],), device=s.device)
        eps = torch.randn_like(act)
        a_k = a.schedule.q_sample(act, k, eps)
        eps_pred = a.actor(a_k, k, s)
        a0 = a.schedule.x0_from_eps(a_k, k, eps_pred).clamp(-1.0, 1.0)
        bc_loss = F.mse_loss(eps_pred, eps)
        head = a.critic.q1_model if torch.rand(()) > 0.5 else a.critic.q2_model
        q_new = head(torch.cat([s, a0], -1))
        actor_loss = bc_loss - c.alpha / q_new.abs().mean().detach() * q_new.mean()
        losses = (actor_loss, F.mse_loss(q1, target), F.mse_loss(q2, target))
        for opt, loss, module in zip(self.opts, losses, (a.actor, a.critic.q1_model, a.critic.q2_model)):
            opt.zero_grad()
            loss.backward(inputs=list(module.parameters()))
            nn.utils.clip_grad_norm_(module.parameters(), a.grad_norm)
            opt.step()
        a.step += 1
        with torch.no_grad():
            if a.step % c.update_ema_every == 0 and a.step > c.step_start_ema:
                for pe, p in zip(a.ema_actor.parameters(), a.actor.parameters()):
                    pe.mul_(c.ema_decay).add_(p, alpha=1 - c.ema_decay)
            for pt, p in zip(a.critic_target.parameters(), a.critic.parameters()):
                pt.mul_(1 - c.tau).add_(p, alpha=c.tau)
        return [actor_loss.item(), bc_loss.item(), losses[1].item() + losses[2].item()]


class DPDirect:
    """Diffusion Policy's step written plainly: the same network, for-loop AdamW, per-parameter EMA loop."""

    def __init__(self, algo):
        self.a = algo
        c = algo.cfg
        self.opt = torch.optim.AdamW(algo.model.parameters(), lr=c.lr, betas=c.betas, eps=c.adam_eps,
                                     weight_decay=c.weight_decay, foreach=False)

    def __call__(self, batch):
        a, c = self.a, self.a.cfg
        nobs, x0 = a.normalize_obs(batch["obs"]), a.normalize_action(batch["action"])
        noise = torch.randn_like(x0)
        k = torch.randint(0, c.n_timesteps, (x0.shape[0],), device=x0.device)
        x_k = a.schedule.q_sample(x0, k, noise)
        loss = F.mse_loss(a._eps(a.model, x_k, k, nobs), noise)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if a.ema_model is not None:
            with torch.no_grad():
                for pe, p in zip(a.ema_model.parameters(), a.model.parameters()):
                    pe.mul_(0.999).add_(p, alpha=0.001)
        return loss.item()


def plain_ddpm_chain(model, schedule, obs: torch.Tensor, act_dim: int) -> torch.Tensor:
    """The DDPM chain as the public code writes it: per-step ``(B,)`` index tensors and table gathers."""
    x = torch.randn(obs.shape[0], act_dim)
    for i in reversed(range(schedule.n_timesteps)):
        k = torch.full((obs.shape[0],), i, dtype=torch.long)
        x0 = schedule.x0_from_eps(x, k, model(x, k, obs)).clamp(-1.0, 1.0)
        mean, log_var = schedule.q_posterior(x0, x, k)
        nonzero = (1 - (k == 0).float()).reshape(-1, 1)
        x = mean + nonzero * (0.5 * log_var).exp() * torch.randn_like(x)
    return x.clamp(-1.0, 1.0)


def import_public_dql(path: str):
    """The public Diffusion-QL code's ``Diffusion_QL`` (``agents/ql_diffusion.py``) and ``Data_Sampler``
    (``utils/data_sampler.py``), imported from a checkout at ``path`` as is (nothing copied), as a namespace.
    Its logger imports ``tabulate``, which the agent never calls: a stand-in module is used when it is not
    installed.  ``benchmarks/twins.py`` imports the code the same way."""
    import importlib.util
    import types

    if not os.path.isfile(os.path.join(path, "agents", "ql_diffusion.py")):
        raise SystemExit(f"--public-dql {path}: no agents/ql_diffusion.py there (a checkout of the public "
                         f"Diffusion-QL code, github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL)")
    if os.path.abspath(path) not in sys.path:
        sys.path.insert(0, os.path.abspath(path))
    stand_in = importlib.util.find_spec("tabulate") is None
    if stand_in:  # only while its modules import: nothing else may mistake the stand-in for the package
        sys.modules["tabulate"] = types.SimpleNamespace(tabulate=lambda *a, **k: "")
    try:
        from agents.ql_diffusion import Diffusion_QL
        from utils.data_sampler import Data_Sampler
    finally:
        if stand_in:
            del sys.modules["tabulate"]
    return types.SimpleNamespace(Diffusion_QL=Diffusion_QL, Data_Sampler=Data_Sampler)


def public_dql_step(path: str, batch: dict, device: torch.device):
    """The public Diffusion-QL code's own step, ``Diffusion_QL.train(buffer, 1, B)`` on ``batch`` (its defaults:
    K = 5, VP schedule, 256-wide networks, eta 1, grad_norm 1), as a callable ``f(batch)``.

    ``path``: a checkout of github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL (``agents/``, ``utils/``),
    imported from there as is; nothing of it is copied into this repository.  Its logger imports ``tabulate``,
    which the step never calls: a stand-in module is used when it is not installed.
    """
    Diffusion_QL = import_public_dql(path).Diffusion_QL
    obs_dim, act_dim = batch["observations"].shape[1], batch["actions"].shape[1]
    agent = Diffusion_QL(obs_dim, act_dim, 1.0, str(device), 0.99, 0.005, beta_schedule="vp", n_timesteps=5,
                         eta=1.0)

    class Buffer:  # the code's replay buffer interface: (s, a, s', r, not_done)
        def sample(self, n):
            return (batch["observations"], batch["actions"], batch["next_observations"],
                    batch["rewards"].view(-1, 1), 1.0 - batch["terminals"].view(-1, 1))

    buffer, n = Buffer(), batch["observations"].shape[0]
    return lambda _batch: agent.train(buffer, 1, n)


# ----------------------------------------------------------------------------- parts


def bench_training(args) -> list[dict]:
    from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig
    from algorithms.dql import DiffusionQL, DQLConfig
    from algorithms.edp import EDP, EDPConfig

    q = args.quick
    bs = 32 if q else args.batch_size
    hidden = 32 if q else args.hidden_dim
    families = set(args.algorithms.split(","))
    calls, repeats, warmup = (1, 1, 1) if q else (args.steps, args.repeats, 3)
    spec = EnvSpec(OBS_DIM, ACT_DIM)
    dev = torch.device(args.device)  # --device cuda: models and batches on the GPU, timed with synchronize
    batch = on(transition_batch(bs), dev)
    rows = []

    def pair(case, make_ours, make_direct, batch, calls=calls, note=""):
        torch.manual_seed(0)
        ours = make_ours()
        torch.manual_seed(0)
        direct = make_direct()
        r = interleaved_rate({"ours": lambda: ours(batch), "eager": lambda: direct(batch)}, calls, repeats, warmup,
                             dev)
        rows.append(row("training", case, r["ours"], "steps/s", "eager", r["eager"],
                        note=f"batch {bs}{f', width {hidden}' if hidden != 256 and not q else ''}"
                             f"{', ' + note if note else ''}{', ' + dev.type if dev.type != 'cpu' else ''}"))
        print(f"[bench] training {case}: {r['ours']:.2f} steps/s vs eager {r['eager']:.2f}", flush=True)

    def dql(**kw):
        return DiffusionQL(DQLConfig(n_timesteps=5, hidden_dim=hidden, **kw), spec, dev)

    def edp(K):
        return EDP(EDPConfig(n_timesteps=K, hidden_dim=hidden), spec, dev)

    def compiled(algo):  # train.compile: the step compiled (in the warm-up calls)
        algo.compile()
        return algo.update

    if "dql" in families:
        # the eager baseline always gets two separate critic MLPs with nn.Mish (DirectStep swaps FastMish out)
        pair("dql K=5", lambda: dql().update, lambda: DirectStep(dql(fused_critic=False)), batch,
             note="fused twin critic")
        if not q:
            pair("dql K=5 two critic MLPs", lambda: dql(fused_critic=False).update,
                 lambda: DirectStep(dql(fused_critic=False)), batch, note="fused_critic=False")
            pair("dql K=5 compiled", lambda: compiled(dql()), lambda: DirectStep(dql(fused_critic=False)), batch,
                 note="fused twin critic + train.compile")
            if args.public_dql and hidden != 256:
                print(f"[bench] --public-dql skipped: the public code's networks are 256 wide, not {hidden}", flush=True)
            elif args.public_dql:  # the authors' own step, from a checkout of their code the user fetched
                torch.manual_seed(0)
                fns = {"public": public_dql_step(args.public_dql, batch, dev), "ours": dql().update,
                       "compiled": compiled(dql())}
                r = interleaved_rate({k: (lambda f=f: f(batch)) for k, f in fns.items()}, calls, repeats, warmup, dev)
                for case, key, note in (("dql K=5 vs the public code", "ours", "fused twin critic"),
                                        ("dql K=5 compiled vs the public code", "compiled", "train.compile")):
                    rows.append(row("training", case, r[key], "steps/s", "public code", r["public"],
                                    note=f"batch {bs}, {note}, Diffusion_QL.train(buffer, 1, {bs})"))
                    print(f"[bench] training {case}: {r[key]:.2f} steps/s vs public {r['public']:.2f}", flush=True)

        # N seeds of one config: one VectorizedDQL step vs N ordinary steps (seed-steps/s)
        from algorithms.vectorized import VectorizedDQL, stack_batches

        n_seeds = 2 if q else args.seeds
        cfg = DQLConfig(n_timesteps=5, hidden_dim=hidden)
        vec = VectorizedDQL(cfg, spec, list(range(n_seeds)), dev)
        singles = []
        for s in range(n_seeds):
            torch.manual_seed(s)
            singles.append(DiffusionQL(cfg, spec, dev))
        stacked = stack_batches([on(transition_batch(bs, seed=s), dev) for s in range(n_seeds)])
        seed_batches = [on(transition_batch(bs, seed=s), dev) for s in range(n_seeds)]

        def sequential():
            for algo, b in zip(singles, seed_batches):
                algo.update(b)

        r = interleaved_rate({"vmap": lambda: vec.update(stacked), "seq": sequential}, max(1, calls // n_seeds),
                             repeats, 1, dev)
        rows.append(row("training", f"dql K=5, {n_seeds} seeds vmapped", r["vmap"] * n_seeds, "seed-steps/s",
                        f"{n_seeds} sequential runs", r["seq"] * n_seeds, note=f"batch {bs}, VectorizedDQL"))
        print(f"[bench] training dql {n_seeds} seeds: vmapped {r['vmap'] * n_seeds:.2f} seed-steps/s vs sequential "
              f"{r['seq'] * n_seeds:.2f}", flush=True)
    if "edp" in families:
        for K in (100, 1000):
            pair(f"edp K={K}", lambda K=K: edp(K).update, lambda K=K: EDPDirect(edp(K)), batch)
        if not q:
            pair("edp K=1000 compiled", lambda: compiled(edp(1000)), lambda: EDPDirect(edp(1000)), batch,
                 note="train.compile")

    if "dp" in families:
        dp_spec = EnvSpec(obs_dim=20, act_dim=2, obs_low=(0.0,) * 20, obs_high=(512.0,) * 20, act_min=(0.0,) * 2,
                          act_max=(512.0,) * 2, act_low=(0.0,) * 2, act_high=(512.0,) * 2)
        dp_batch = on({"obs": torch.rand(bs, 2, 20) * 512, "action": torch.rand(bs, 16, 2) * 512}, dev)
        sizes = {"cnn": dict(down_dims=(16, 32), diffusion_step_embed_dim=16) if q else {},
                 "transformer": dict(n_layer=1, n_head=2, n_emb=32) if q else {}}
        for backbone, size in sizes.items():
            def dp(backbone=backbone, size=size):
                return DiffusionPolicy(DiffusionPolicyConfig(backbone=backbone, **size), dp_spec, dev)

            pair(f"dp_{backbone}", lambda: dp().update, lambda: DPDirect(dp()), dp_batch,
                 calls=max(1, calls // 5), note="paper size" if not q else "tiny")
            if args.bf16:  # the same step under bf16 autocast (config bf16_autocast), next to float32
                def dp_bf16(backbone=backbone, size=size):
                    return DiffusionPolicy(DiffusionPolicyConfig(backbone=backbone, bf16_autocast=True, **size), dp_spec,
                                           dev)

                torch.manual_seed(0)
                fast, plain = dp_bf16().update, dp().update
                r = interleaved_rate({"bf16": lambda: fast(dp_batch), "fp32": lambda: plain(dp_batch)},
                                     max(1, calls // 5), repeats, warmup, dev)
                rows.append(row("training", f"dp_{backbone} bf16 autocast", r["bf16"], "steps/s", "float32", r["fp32"],
                                note=f"batch {bs}, {dev.type}{', tf32' if torch.backends.cuda.matmul.allow_tf32 else ''}"))
                print(f"[bench] training dp_{backbone} bf16: {r['bf16']:.2f} steps/s vs float32 {r['fp32']:.2f}",
                      flush=True)
    return rows


def bench_sampling(args) -> list[dict]:
    from algorithms.diffusion import DiffusionSchedule, NoiseMLP, ddim_sample, ddpm_sample, dpm_solver_sample

    q = args.quick
    n = 50 if q else 500                      # 10 states x 50 candidates (DQL/EDP acting on a 10-env actor)
    hidden = 32 if q else 256
    calls, repeats = (1, 1) if q else (max(3, args.steps // 10), args.repeats)
    torch.manual_seed(0)
    net = NoiseMLP(OBS_DIM, ACT_DIM, hidden=hidden).eval()
    obs = torch.randn(n, OBS_DIM)
    shape = (n, ACT_DIM)
    rows = []

    def den(x, k):
        return net(x, k, obs)

    def ms(case, fn, baseline_fn=None, note=""):
        fns = {"ours": fn} | ({"plain": baseline_fn} if baseline_fn else {})
        with torch.no_grad():
            r = interleaved_rate(fns, calls, repeats, 1)
        base = 1e3 / r["plain"] if baseline_fn else float("nan")
        rows.append(row("sampling", case, 1e3 / r["ours"], "ms", "plain chain" if baseline_fn else "", base,
                        note=f"batch {n}{', ' + note if note else ''}"))
        print(f"[bench] sampling {case}: {1e3 / r['ours']:.2f} ms per batch of {n}", flush=True)

    for K in ((5, 20) if q else (5, 20, 100)):
        sch = DiffusionSchedule(K, "vp")
        ms(f"ddpm K={K}", lambda: ddpm_sample(den, sch, shape, clip=1.0),
           lambda: plain_ddpm_chain(net, sch, obs, ACT_DIM))
    sch = DiffusionSchedule(100, "cosine")
    for steps in ((5, 10) if q else (5, 10, 20)):
        ms(f"ddim {steps} steps (K=100)", lambda: ddim_sample(den, sch, shape, steps, clip=1.0))
    sch = DiffusionSchedule(1000, "linear")
    for steps in ((5, 15) if q else (5, 10, 15, 20)):
        ms(f"dpm_solver {steps} steps (K=1000)", lambda: dpm_solver_sample(den, sch, shape, steps, clip=1.0))
    return rows


def _dql_policy(env_id: str, hidden: int, candidates: int):
    """A (randomly initialized) DQL policy sized for ``env_id``; speed does not depend on the weights."""
    import gymnasium as gym

    from algorithms.dql import DiffusionQL, DQLConfig
    from platform.envs import make_env

    env = make_env(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.tolist(), env.action_space.high.tolist()
    env.close()
    assert isinstance(env.action_space, gym.spaces.Box)
    spec = EnvSpec(obs_dim, act_dim, act_low=tuple(low), act_high=tuple(high))
    config = {"hidden_dim": hidden, "n_action_samples": candidates}
    torch.manual_seed(0)
    return DiffusionQL(DQLConfig(**config), spec), config, spec


def bench_evaluation(args) -> list[dict]:
    import ray

    from platform.envs import make_env
    from platform.evaluation import EvalPool, run_episodes

    q = args.quick
    hidden, candidates = (32, 10) if q else (256, 50)
    rows = []
    envs = ["Pendulum-v1"] if q else ["Pendulum-v1", "HalfCheetah-v5"]
    for env_id in envs:
        algo, config, spec = _dql_policy(env_id, hidden, candidates)
        n_envs = 4
        steps = 10 if q else (200 if env_id.startswith("Pendulum") else 100)
        fns = [lambda: make_env(env_id, max_episode_steps=steps) for _ in range(n_envs)]
        seeds = list(range(n_envs))

        def batched():
            return run_episodes(algo, fns, seeds)

        def per_env():
            return [e for s in seeds for e in run_episodes(algo, fns[:1], [s])]

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a rollout actor
        try:
            r = interleaved_rate({"batched": batched, "per_env": per_env}, 1, 1 if q else args.repeats, 1)
        finally:
            torch.set_num_threads(threads)
        total = n_envs * steps
        rows.append(row("evaluation", f"{env_id} batched act, {n_envs} envs", r["batched"] * total, "env steps/s",
                        "one act per env", r["per_env"] * total, note=f"in-process, 1 thread, {steps}-step episodes"))
        print(f"[bench] evaluation {env_id}: batched {r['batched'] * total:.0f} env steps/s, per env "
              f"{r['per_env'] * total:.0f}", flush=True)

    # Ray rollout actors (real Ray, real gymnasium, full-length episodes), the same episodes each time
    if not ray.is_initialized():
        from platform.sweep import init_ray

        init_ray(num_cpus=max(2, os.cpu_count() or 2))
    env_id = "Pendulum-v1"
    algo, config, spec = _dql_policy(env_id, hidden, candidates)
    state = algo.policy_state_dict()
    episodes = 4 if q else 8
    actor_counts = (1, 2) if q else (1, 2, 4)
    base = None
    for n_actors in actor_counts:
        pool = EvalPool(env_id, "dql", config, spec.to_dict(), n_actors=n_actors,
                        envs_per_actor=math.ceil(episodes / n_actors), num_cpus=0.5)
        try:
            pool.evaluate([state], n_actors, 0)  # warm-up: actors built, env made, first act
            reps = []
            for _ in range(1 if q else args.repeats):
                t0 = time.perf_counter()
                m = pool.evaluate([state], episodes, 0)[0]
                reps.append(m["eval/length_mean"] * episodes / (time.perf_counter() - t0))
        finally:
            pool.shutdown()
        sps = statistics.median(reps)
        base = base or sps
        rows.append(row("evaluation", f"{env_id} {n_actors} rollout actor(s)", sps, "env steps/s",
                        "1 actor", base, note=f"{episodes} episodes, batched act per actor"))
        print(f"[bench] evaluation {n_actors} actor(s): {sps:.0f} env steps/s (load {load_1m():.1f})", flush=True)
    return rows


def bench_sweep(args) -> list[dict]:
    """A one-trial sweep; the trial's history JSONL carries the loop's start and first-step timestamps."""
    from platform.datasets import load_dataset
    from platform.spec import parse_spec
    from platform.sweep import run_sweep

    dataset = "generated:pendulum-medium"
    load_dataset(dataset)  # generate/cache outside the timed region
    storage = tempfile.mkdtemp(prefix="bench_sweep_")
    spec = parse_spec({"name": "bench_overhead", "algorithm": "dql", "dataset": dataset,
                       "config": {"hidden_dim": 32, "n_action_samples": 5},
                       "train": {"steps": 2, "batch_size": 32, "eval_every": 2, "eval_episodes": 1, "seeds": [0]},
                       "search": {"searcher": "random", "num_samples": 1, "scheduler": "fifo"},
                       "resources": {"workers": 1, "cpus_per_worker": 0.5, "eval_actors": 1,
                                     "cpus_per_eval_actor": 0.25}})
    t0 = time.time()
    run_sweep(spec, storage=storage, report=False)
    wall = time.time() - t0
    from platform import history

    hist_dir = history.history_dir(storage, spec.name)
    first = history.read(hist_dir, os.listdir(hist_dir)[0].removesuffix(".jsonl"))[0]
    if "time/first_step_unix" not in first:
        raise RuntimeError("the train loop reports no time/first_step_unix (platform/training.py too old)")
    rows = [row("sweep", "run_sweep -> first gradient step", first["time/first_step_unix"] - t0, "s",
                note="Ray start, Tune, Train worker group, dataset, model, eval actors"),
            row("sweep", "train loop start -> first gradient step",
                first["time/first_step_unix"] - first["time/loop_start_unix"], "s",
                note="dataset load, model build, eval pool start"),
            row("sweep", "whole 2-step sweep", wall, "s", note="incl. one evaluation and Parquet results")]
    for r in rows:
        print(f"[bench] sweep {r['case']}: {r['value']:.1f} s", flush=True)
    return rows


DP_SPEC = dict(obs_dim=20, act_dim=2, obs_low=(0.0,) * 20, obs_high=(512.0,) * 20, act_min=(0.0,) * 2,
               act_max=(512.0,) * 2, act_low=(0.0,) * 2, act_high=(512.0,) * 2)


def _dp_batches(n: int, bs: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"obs": torch.rand(bs, 2, 20, generator=g) * 512, "action": torch.rand(bs, 16, 2, generator=g) * 512}
            for _ in range(n)]


def _dp_policy(size: dict):
    from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig

    torch.manual_seed(0)
    return DiffusionPolicy(DiffusionPolicyConfig(backbone="cnn", lr_warmup_steps=0, **size), EnvSpec(**DP_SPEC))


def _ddp_replica(rank: int, world: int, port: int, size: dict, steps: int, bs: int, out: str) -> None:
    """One data-parallel replica (a spawned process): a warm-up update then ``steps`` timed updates on its rows
    of ``_dp_batches(steps + 1, bs)``; rank 0 saves the timed seconds and its state (tests/test_data_parallel.py
    compares it with one process on the whole batches)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    algo = _dp_policy(size)
    algo.distribute(torch.nn.parallel.DistributedDataParallel, rank, world)
    batches, n = _dp_batches(steps + 1, bs), bs // world
    torch.manual_seed(1)
    algo.update({k: v[rank * n:(rank + 1) * n] for k, v in batches[0].items()})  # warm-up (gloo buckets)
    dist.barrier()
    t0 = time.perf_counter()
    for b in batches[1:]:
        algo.update({k: v[rank * n:(rank + 1) * n] for k, v in b.items()})
    dist.barrier()
    if rank == 0:
        torch.save({"seconds": time.perf_counter() - t0, "state": algo.state_dict()}, out)
    dist.destroy_process_group()


def bench_parallel(args) -> list[dict]:
    import socket

    import torch.multiprocessing as mp

    q = args.quick
    bs = 32 if q else args.batch_size
    steps = 2 if q else max(3, args.steps // 5)
    size = dict(down_dims=(16, 32), diffusion_step_embed_dim=16) if q else dict(down_dims=(64, 128, 256),
                                                                                   diffusion_step_embed_dim=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone, batches = _dp_policy(size), _dp_batches(steps + 1, bs)
        torch.manual_seed(1)
        alone.update(batches[0])
        t0 = time.perf_counter()
        for b in batches[1:]:
            alone.update(b)
        one = (time.perf_counter() - t0) / steps
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = os.path.join(tempfile.mkdtemp(prefix="bench_ddp_"), "rank0.pt")
    mp.spawn(_ddp_replica, args=(2, port, size, steps, bs, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    two = got["seconds"] / steps
    diff = max((got["state"]["model"][k] - v).abs().max().item() for k, v in alone.state_dict()["model"].items())
    net = f"U-Net {list(size['down_dims'])}"
    rows = [row("parallel", f"dp_cnn DDP 2 replicas x {bs // 2} rows", two * 1000, "ms", f"1 process x {bs} rows",
                one * 1000, note=f"{net}, 1 thread per process, gloo, per global step"),
            row("parallel", "dp_cnn DDP weights vs 1 process", diff + 1e-12, "max abs weight difference",
                note=f"after {steps + 1} steps; float round-off only (test: < 1e-5)")]
    print(f"[bench] parallel DDP 2 x {bs // 2}: {two * 1000:.0f} ms/step vs 1 x {bs}: {one * 1000:.0f} ms; "
          f"max weight difference {diff:.2e}", flush=True)
    return rows


def bench_overlap(args) -> list[dict]:
    """Trial wall time (the train loop's ``time/total_s`` at its last report) with and without overlap_eval."""
    from platform import history
    from platform.datasets import load_dataset
    from platform.spec import parse_spec
    from platform.sweep import run_sweep

    q = args.quick
    pusht = os.path.join(ROOT, "..", "shared", "datasets", "pusht", "pusht_cchi_v7_replay.zarr")
    studies = [("dql pendulum", "dql", "generated:pendulum-medium",
                {"hidden_dim": 32, "n_action_samples": 5} if q else {},
                dict(steps=20 if q else 600, eval_every=10 if q else 200, eval_episodes=2 if q else 10))]
    if os.path.isdir(pusht):
        studies.append(("diffusion_policy pusht", "diffusion_policy", f"pusht:{os.path.abspath(pusht)}",
                        {"down_dims": [16, 32] if q else [64, 128, 256], "diffusion_step_embed_dim": 16 if q else 64,
                         "sampler": "ddim", "n_inference_steps": 4 if q else 16},
                        dict(steps=10 if q else 300, eval_every=5 if q else 100, eval_episodes=2 if q else 20)))
    rows = []
    for label, algo, dataset, config, train in studies:
        load_dataset(dataset)
        wall = {}
        for overlap in (False, True):
            storage = tempfile.mkdtemp(prefix="bench_overlap_")
            name = f"bench_overlap_{algo}_{int(overlap)}"
            spec = parse_spec({"name": name, "algorithm": algo, "dataset": dataset, "config": config,
                               "train": {**train, "batch_size": 32 if q else 256, "seeds": [0],
                                         "overlap_eval": overlap},
                               "search": {"searcher": "random", "num_samples": 1, "scheduler": "fifo"},
                               "resources": {"workers": 1, "cpus_per_worker": 1, "eval_actors": 1,
                                             "cpus_per_eval_actor": 0.5}})
            run_sweep(spec, storage=storage, report=False)
            hist_dir = history.history_dir(storage, name)
            last = history.read(hist_dir, os.listdir(hist_dir)[0].removesuffix(".jsonl"))[-1]
            wall[overlap] = last["time/total_s"]
        rows.append(row("overlap", f"{label}: trial with overlap_eval", wall[True], "s", "blocking evaluation",
                        wall[False], note=f"{train['steps']} steps, evaluation every {train['eval_every']} "
                                          f"({train['eval_episodes']} episodes), 1 rollout actor"))
        print(f"[bench] overlap {label}: {wall[True]:.1f} s overlapped vs {wall[False]:.1f} s blocking", flush=True)
    return rows


def bench_twins(args) -> list[dict]:
    """``--parts twins``: ``benchmarks/twins.py`` (the Diffusion-QL learning twin beside the public code at
    ``--public-dql``; with ``--quick`` 2 seeds x 20 steps on generated Pendulum), its throughput as rows here.
    Its own report goes to ``--out`` (default: benchmarks/results; with ``--quick``: a temporary folder)."""
    from benchmarks import twins

    argv = ["--public-dql", args.public_dql] if args.public_dql else []
    out = args.out or (tempfile.mkdtemp(prefix="twins_") if args.quick else os.path.join("benchmarks", "results"))
    argv += ["--threads", str(args.threads), "--batch-size", str(args.batch_size), "--out", out]
    if args.quick:
        argv += ["--dataset", "generated:pendulum-medium", "--seeds", "0", "1", "--eval-steps", "10", "20",
                 "--eval-episodes", "2"]
    res = twins.main(argv).get("dql")
    if res is None:
        return []
    rates, meta = res["throughput"], res["meta"]
    note = f"{meta['dataset']}, {len(meta['seeds'])} seeds to {max(meta['eval_steps'])} steps"
    return [row("twins", "dql twin: training", rates["platform"]["train_steps_per_s"], "steps/s", "public code",
                rates["public"]["train_steps_per_s"], note=note),
            row("twins", "dql twin: evaluation", rates["platform"]["eval_episodes_per_s"], "episodes/s",
                "public code", rates["public"]["eval_episodes_per_s"], note=note + f", public act {meta['public_act']}")]


# ----------------------------------------------------------------------------- output


def markdown(rows: list[dict]) -> str:
    head = (f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
            f"load average (1 min) {min(r['load_1m'] for r in rows):.1f}-{max(r['load_1m'] for r in rows):.1f}"
            if rows else "")
    lines = [head, "", "| part | case | value | unit | baseline | baseline value | ratio | note |",
             "|---|---|---:|---|---|---:|---:|---|"]
    for r in rows:
        bv = "" if not math.isfinite(r["baseline_value"]) else f"{r['baseline_value']:.4g}"
        ratio = "" if not math.isfinite(r["ratio"]) else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['part']} | {r['case']} | {r['value']:.4g} | {r['unit']} | {r['baseline']} | {bv} | "
                     f"{ratio} | {r['note']} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out: str) -> tuple[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    table = pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows])
    pq_path, md_path = os.path.join(out, "benchmarks.parquet"), os.path.join(out, "benchmarks.md")
    pq.write_table(table, pq_path)
    with open(md_path, "w") as f:
        f.write(markdown(rows))
    return pq_path, md_path


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="tiny networks and few steps: seconds, for tests")
    p.add_argument("--out", default=None, help="write benchmarks.parquet and benchmarks.md here")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--steps", type=int, default=30, help="gradient steps per timed run (DP: a fifth)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch (papers: 256)")
    p.add_argument("--seeds", type=int, default=8, help="seeds of the vectorized DQL measurement (default 8)")
    p.add_argument("--device", default="cpu", help="training part's device (cpu | cuda; default cpu)")
    p.add_argument("--bf16", action="store_true", help="training part: Diffusion Policy with bf16 autocast too")
    p.add_argument("--tf32", action="store_true", help="CUDA: TF32 matmuls and cuDNN benchmark, as a GPU trial")
    p.add_argument("--hidden-dim", type=int, default=256, help="training part: width of the DQL / EDP networks "
                                                                   "(papers: 256; the quickstart: 128)")
    p.add_argument("--algorithms", default="dql,edp,dp",
                   help="training part: which of dql, edp, dp (Diffusion Policy, paper size) to time (default all)")
    p.add_argument("--public-dql", default=None, metavar="PATH",
                   help="training part: also time the public Diffusion-QL code's own step, imported from PATH (a "
                        "checkout of github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL), next to ours")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS + OPTIONAL_PARTS]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS + OPTIONAL_PARTS)}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.tf32:
        from platform.gpu import configure_math

        configure_math(args.device)  # what a GPU trial's worker sets (a no-op on the CPU)
    rows: list[dict] = []
    for part in parts:
        rows += globals()[f"bench_{part}"](args)
    for r in rows:
        r["quick"] = bool(args.quick)
    print(markdown(rows))
    if args.out:
        for path in write(rows, args.out):
            print(f"[bench] wrote {path}")
    return rows


if __name__ == "__main__":
    main()
