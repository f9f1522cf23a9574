"""The one generic train loop, run by a Ray Train ``TorchTrainer`` for every trial.

Per worker: load the dataset, build one algorithm per seed (``algorithms.REGISTRY``), run
gradient steps, evaluate every ``eval_every`` steps in a pool of CPU rollout actors, and
``ray.train.report`` namespaced metrics with a plain-state checkpoint.  The seeds of a trial are
split across the Train workers (``seeds[rank::world_size]``): several seeds per Train run amortize
its start-up cost, and more workers train more seeds at once.  On restart (a killed worker, or a
resumed sweep) training continues from the latest checkpoint; batch sampling and the torch RNG
are re-seeded from ``(seed, step)``, so a resumed run is reproducible.

This is the only module that knows Ray Train.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time

import numpy as np
import torch

import algorithms
from platform import history
from platform import checkpoint as checkpoint_io
from platform.search import evaluations_until
from platform.spec import SweepSpec


# ----------------------------------------------------------------------------- batches


class TransitionSampler:
    """Uniform minibatches of D4RL-style transitions, kept on the training device.

    Returns ``observations (B, obs_dim)``, ``actions (B, act_dim)``, ``rewards (B,)``,
    ``next_observations (B, obs_dim)``, ``terminals (B,)``; sampling never syncs with the host.
    """

    def __init__(self, data, device: torch.device):
        def t(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

        self.arrays = {"observations": t(data.observations), "actions": t(data.actions),
                       "rewards": t(data.rewards), "next_observations": t(data.next_observations),
                       "terminals": t(data.terminals)}
        self.n = len(data.observations)
        self.device = device
        self.generator = torch.Generator(device=device)

    def reseed(self, seed: int, step: int):
        self.generator.manual_seed(_mix(seed, step))

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.n, (batch_size,), device=self.device, generator=self.generator)
        return {k: v[idx] for k, v in self.arrays.items()}


class WindowSampler:
    """(To, Tp) windows cut from episodes, for sequence policies such as Diffusion Policy.

    Returns ``obs (B, To, obs_dim)`` and ``action (B, Tp, act_dim)`` on the training device.
    """

    def __init__(self, data, algo, device: torch.device):
        from platform.datasets.sequence import SequenceSampler

        self.sampler = SequenceSampler(np.asarray(data.episode_ends), algo.obs_horizon, algo.pred_horizon,
                                       algo.action_horizon)
        self.observations = np.asarray(data.observations, dtype=np.float32)
        self.actions = np.asarray(data.actions, dtype=np.float32)
        self.device = device
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int, step: int):
        self.rng = np.random.default_rng([seed, step])

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = self.sampler.sample(batch_size, self.rng)
        batch = self.sampler.get(idx, self.observations, self.actions)
        pin = self.device.type == "cuda"
        return {k: (torch.from_numpy(np.ascontiguousarray(v)).pin_memory() if pin else torch.from_numpy(v))
                .to(self.device, non_blocking=True) for k, v in batch.items()}


def make_sampler(data, algo, device: torch.device):
    kind = algo.data_kind
    if kind == "transitions":
        return TransitionSampler(data, device)
    if kind == "sequences":
        return WindowSampler(data, algo, device)
    raise ValueError(f"unknown data_kind {kind!r} of {type(algo).__name__}")


def _mix(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


# ----------------------------------------------------------------------------- trial state


class SeedRun:
    """One model (one seed) of a trial: the algorithm, its own batch sampler and metric sums."""

    def __init__(self, seed: int, spec: SweepSpec, config, env_spec, data, device):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        self.seed, self.device = seed, device
        self.algo = algorithms.build(spec.algorithm, config, env_spec, device)
        self.algo.fit_dataset(data)  # dataset statistics beyond EnvSpec (e.g. TD3+BC's state mean/std)
        # Each seed keeps its own torch RNG stream: seeds stepped in turn in one worker would otherwise draw
        # from one shared stream, and seed s's run would depend on which other seeds share its trial.
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.sampler = make_sampler(data, self.algo, device)
        self.sampler.reseed(seed, 0)
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, batch_size: int, step: int) -> None:
        with self.own_rng():
            metrics = self.algo.update(self.sampler.sample(batch_size))
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    @contextlib.contextmanager
    def own_rng(self):
        """Swap this seed's torch RNG state in for the duration of the block (and save where it got to)."""
        other = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            other_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.cuda_rng, self.device)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(other)
            if self.cuda_rng is not None:
                self.cuda_rng = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(other_cuda, self.device)

    def train_metrics(self, step: int) -> dict[str, float]:
        """Means of the update metrics since the last call; raises on NaN/inf (a diverged trial)."""
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"seed {self.seed}: {', '.join(bad)} became non-finite before step {step}")
        self.sums, self.count = {}, 0
        return out


def _resolve_eval_env(spec: SweepSpec, data) -> str:
    return spec.env or data.env_id


# ----------------------------------------------------------------------------- the loop


def train_loop(loop_config: dict) -> None:
    """Ray Train entry point: ``loop_config = {"spec": SweepSpec dict, "params": searched params}``."""
    loop_start_unix, first_step_unix = time.time(), None  # start-up overhead (benchmarks/suite.py reads them)
    import ray.train

    from platform.datasets import load_dataset
    from platform.evaluation import EvalPool

    # a multi-algorithm study carries this trial's algorithm in its params
    spec, params = SweepSpec.from_dict(loop_config["spec"]).for_trial(loop_config.get("params") or {})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seeds = spec.train.seeds[rank::world]
    r = spec.resources
    if r.gpus_per_worker > 0 and not torch.cuda.is_available():
        # never hold a GPU and train on the CPU without a word
        raise RuntimeError(f"resources.gpus_per_worker is {r.gpus_per_worker:g} but torch {torch.__version__} on this "
                           f"worker cannot use CUDA (a CPU build, or no driver): install torch's CUDA build there, "
                           f"or set gpus_per_worker: 0")
    device = ray.train.torch.get_device() if r.gpus_per_worker > 0 else torch.device("cpu")
    torch.set_num_threads(max(1, int(r.cpus_per_worker)))
    torch.set_flush_denormal(True)  # denormals make CPU matmuls several times slower late in training

    data = load_dataset(spec.dataset)
    env_spec = data.env_spec()
    config_params = {**spec.config, **params}
    if "max_steps" in algorithms.config_fields(spec.algorithm) and "max_steps" not in config_params:
        config_params["max_steps"] = spec.train.steps  # lr schedules span this trial's budget, not the paper's
    config = algorithms.build_config(spec.algorithm, config_params)
    config_dict = _config_dict(config)
    runs = [SeedRun(s, spec, config, env_spec, data, device) for s in seeds]

    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            for run in runs:
                # to CPU: Optimizer.load_state_dict moves the state to its parameters' devices but keeps Adam's
                # `step` counters on the CPU, as a fresh optimizer has them (on the GPU they sync every step)
                state = checkpoint_io.load_seed_state(d, run.seed, "cpu")
                run.algo.load_state_dict(state["algo"])
                if state["rng"] is not None:
                    run.rng = state["rng"].to("cpu", torch.uint8)
                start_step = state["step"]
        for run in runs:  # continue the random streams deterministically from the checkpoint step
            run.sampler.reseed(run.seed, start_step)
            torch.manual_seed(_mix(run.seed, start_step))
        print(f"[train] rank {rank}: resumed seeds {seeds} from step {start_step}", flush=True)

    t = spec.train
    env_id = _resolve_eval_env(spec, data)
    pool = EvalPool(env_id, spec.algorithm, config_dict, env_spec.to_dict(),
                    n_actors=max(1, r.eval_actors // world),
                    envs_per_actor=r.envs_per_actor or math.ceil(t.eval_episodes / max(1, r.eval_actors // world)),
                    num_cpus=r.cpus_per_eval_actor, resources=r.eval_resources,
                    ref_min=data.ref_min_score, ref_max=data.ref_max_score)
    eval_nodes = ",".join(sorted(set(pool.node_ids())))
    train_node = ray.get_runtime_context().get_node_id()
    report_every = t.eval_every
    ckpt_every = t.checkpoint_every or t.eval_every
    log_every = t.log_every or t.eval_every
    t0 = time.perf_counter()
    t_window, steps_window = time.perf_counter(), 0
    train_time = 0.0

    step = start_step
    try:
        while step < t.steps:
            tick = time.perf_counter()
            step += 1
            for run in runs:
                run.step(t.batch_size, step)
            first_step_unix = first_step_unix or time.time()
            train_time += time.perf_counter() - tick
            steps_window += 1
            is_eval = step % report_every == 0 or step == t.steps
            if not (is_eval or step % log_every == 0):
                continue
            per_seed = {run.seed: run.train_metrics(step) for run in runs}
            elapsed = time.perf_counter() - t_window
            sps = steps_window * len(runs) / max(train_time, 1e-9)
            eval_s = 0.0
            if is_eval:
                tick = time.perf_counter()
                results = pool.evaluate([run.algo.policy_state_dict() for run in runs], t.eval_episodes, t.eval_seed)
                eval_s = time.perf_counter() - tick
                for run, m in zip(runs, results):
                    per_seed[run.seed].update(m)
            per_seed = _gather(per_seed, world)
            metrics = history.flatten(per_seed)
            if is_eval:  # ASHA's clock: evaluations, not reports (log_every reports fall between them)
                metrics["eval/count"] = evaluations_until(step, report_every)
            metrics.update({"step": step, "time/total_s": time.perf_counter() - t0, "time/eval_s": eval_s,
                            "time/steps_per_s": sps, "time/window_s": elapsed, "is_eval": int(is_eval),
                            "node/train": train_node, "node/eval": eval_nodes, "node/device": str(device),
                            "world_size": world,
                            "time/loop_start_unix": loop_start_unix, "time/first_step_unix": first_step_unix})
            t_window, steps_window, train_time = time.perf_counter(), 0, 0.0
            if rank == 0:
                score = metrics.get(spec.search.metric, float("nan"))
                print(f"[train] step {step}/{t.steps} {spec.search.metric}={score:.3f} "
                      f"({sps:.1f} seed-steps/s, eval {eval_s:.1f}s)", flush=True)
            if rank == 0:
                history.append(loop_config.get("history_dir"), loop_config.get("trial_id"), metrics)
            if is_eval and (step % ckpt_every == 0 or step == t.steps):
                with tempfile.TemporaryDirectory() as d:
                    for run in runs:
                        checkpoint_io.save_seed_state(d, run.seed, run.algo.state_dict(), step, run.rng)
                    if rank == 0:
                        checkpoint_io.save_meta(d, algorithm=spec.algorithm, config=config_dict,
                                                env_spec=env_spec.to_dict(), seeds=spec.train.seeds, step=step,
                                                dataset=spec.dataset, env=env_id)
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                                     checkpoint_dir_name=f"checkpoint_{step:09d}")
            else:
                ray.train.report(metrics)
    finally:
        pool.shutdown()


def _config_dict(config) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


_GLOO_GROUP = None  # the metric gather's process group (made once per worker process)


def _gather(per_seed: dict, world: int) -> dict:
    """All workers' per-seed metrics, on every worker (seeds are split across workers)."""
    if world == 1:
        return per_seed
    import torch.distributed as dist

    parts = [None] * world
    # small dicts of floats: gloo on CPU, never NCCL (which fails with "Duplicate GPU detected" when
    # fractional GPUs put two ranks on one device)
    global _GLOO_GROUP
    if _GLOO_GROUP is None:
        _GLOO_GROUP = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    dist.all_gather_object(parts, per_seed, group=_GLOO_GROUP)
    merged = {}
    for p in parts:
        merged.update(p)
    return merged
