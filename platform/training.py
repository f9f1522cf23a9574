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
import shutil
import tempfile
import time

import numpy as np
import torch

import algorithms
from platform import history
from platform import checkpoint as checkpoint_io
from platform import gpu
from platform.compiling import compile_algorithms
from platform.search import evaluations_until
from platform.spec import SweepSpec


# ----------------------------------------------------------------------------- batches


class TransitionSampler:
    """Uniform minibatches of D4RL-style transitions, kept on the training device.

    Returns ``observations (B, obs_dim)``, ``actions (B, act_dim)``, ``rewards (B,)``,
    ``next_observations (B, obs_dim)``, ``terminals (B,)``; sampling never syncs with the host.
    """

    def __init__(self, data, device: torch.device):
        self.arrays = {k: on_device(data, k, device)
                       for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
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

    Returns ``obs (B, To, obs_dim)`` and ``action (B, Tp, act_dim)`` on the training device.  The per-step
    arrays go to the device once; a batch is one gather there.  The window indices still come from the
    numpy stream seeded by ``(seed, step)`` (the same windows as before, so resumed runs continue the same
    batches); only those ``B`` integers cross to the device per step, not ``B x (To + Tp)`` rows.
    """

    def __init__(self, data, algo, device: torch.device):
        from platform.datasets.sequence import SequenceSampler

        self.sampler = SequenceSampler(np.asarray(data.episode_ends), algo.obs_horizon, algo.pred_horizon,
                                       algo.action_horizon, pad_before=algo.window_pad_before)
        self.observations = on_device(data, "observations", device)
        self.actions = on_device(data, "actions", device)
        self.device = device
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int, step: int):
        self.rng = np.random.default_rng([seed, step])

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(self.sampler.sample(batch_size, self.rng))
        if self.device.type == "cuda":  # pinned, so the copy is queued without waiting for the GPU
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        return self.sampler.get(idx, self.observations, self.actions)


def on_device(data, key: str, device: torch.device) -> torch.Tensor:
    """``data.<key>`` as a float32 tensor on ``device``, made once per dataset and device: the seeds of a
    worker share it instead of each holding its own copy on the GPU (samplers only read it)."""
    cache = data.__dict__.setdefault("_device_arrays", {})
    if (key, device) not in cache:
        cache[(key, device)] = torch.as_tensor(np.asarray(getattr(data, key), dtype=np.float32), device=device)
    return cache[(key, device)]


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


def accumulate(sums: dict, metrics: dict) -> None:
    """Add one update's metrics to running sums; 0-d tensors stay on the device (no host sync per step)."""
    for k, v in metrics.items():
        v = v.detach() if torch.is_tensor(v) else float(v)
        sums[k] = sums[k] + v if k in sums else v


def means(sums: dict, count: int) -> dict[str, float]:
    """The sums' means as floats, read from the device in one transfer, and ``train/nonfinite_losses``: how many
    of them are NaN/inf (a diverged seed; the loop reports it, then fails the trial with ``nonfinite_error``)."""
    keys = [k for k, v in sums.items() if torch.is_tensor(v)]
    values = dict(zip(keys, torch.stack([sums[k].float() for k in keys]).tolist())) if keys else {}
    out = {k: values.get(k, v) / max(count, 1) for k, v in sums.items()}
    out = {k: float(v) for k, v in out.items()}
    out["train/nonfinite_losses"] = float(sum(not math.isfinite(v) for v in out.values()))
    return out


def nonfinite_error(per_seed: dict[int, dict], step: int) -> FloatingPointError | None:
    """The one-line error of the first seed whose metrics became non-finite, or None when all are finite."""
    for seed, m in per_seed.items():
        bad = [k for k, v in m.items() if k.startswith("train/") and not math.isfinite(v)]
        if bad:
            return FloatingPointError(f"seed {seed}: {', '.join(bad)} became non-finite before step {step}")
    return None


class SeedRun:
    """One model (one seed) of a trial: the algorithm, its own batch sampler and metric sums.

    ``shard=(rank, world, wrap)`` (``train.data_parallel``): this worker is one of ``world`` replicas of the
    model; every replica samples the same global batch (same seed, same stream) and trains on its rows.
    """

    def __init__(self, seed: int, spec: SweepSpec, config, env_spec, data, device, shard=None):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        self.seed, self.device = seed, device
        self.algo = algorithms.build(spec.algorithm, config, env_spec, device)
        self.algo.fit_dataset(data)  # dataset statistics beyond EnvSpec (e.g. TD3+BC's state mean/std)
        self.rows = None
        if shard is not None:
            rank, world, wrap = shard
            self.algo.distribute(wrap, rank, world)
            self.rows = (rank, world)
        # Each seed keeps its own torch RNG stream: seeds stepped in turn in one worker would otherwise draw
        # from one shared stream, and seed s's run would depend on which other seeds share its trial.
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.sampler = make_sampler(data, self.algo, device)
        self.sampler.reseed(seed, 0)
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, batch_size: int, step: int) -> None:
        batch = self.sampler.sample(batch_size)
        if self.rows is not None:  # this replica's rows of the global batch
            rank, world = self.rows
            n = batch_size // world
            batch = {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}
        with self.own_rng():
            metrics = self.algo.update(batch)
        accumulate(self.sums, metrics)
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

    def train_metrics(self) -> dict[str, float]:
        """Means of the update metrics since the last call, with ``train/nonfinite_losses`` (see ``means``)."""
        out = means(self.sums, self.count)
        self.sums, self.count = {}, 0
        return out


class SeedRuns:
    """The seeds one worker trains, one ``SeedRun`` each, stepped in turn (the default)."""

    def __init__(self, seeds: list[int], spec: SweepSpec, config, env_spec, data, device, shard=None):
        self.runs = [SeedRun(s, spec, config, env_spec, data, device, shard) for s in seeds]

    def step(self, batch_size: int, step: int) -> None:
        for run in self.runs:
            run.step(batch_size, step)

    def train_metrics(self) -> dict[int, dict]:
        return {run.seed: run.train_metrics() for run in self.runs}

    def policy_states(self) -> list[dict]:
        return [run.algo.policy_state_dict() for run in self.runs]

    def save(self, directory: str, step: int) -> None:
        for run in self.runs:
            checkpoint_io.save_seed_state(directory, run.seed, run.algo.state_dict(), step, run.rng)

    def load(self, directory: str) -> int:
        """Restore every seed from a checkpoint directory; returns its step."""
        step = 0
        for run in self.runs:
            # to CPU: Optimizer.load_state_dict moves the state to its parameters' devices but keeps Adam's
            # `step` counters on the CPU, as a fresh optimizer has them (on the GPU they sync every step)
            state = checkpoint_io.load_seed_state(directory, run.seed, "cpu")
            run.algo.load_state_dict(state["algo"])
            if state["rng"] is not None:
                run.rng = state["rng"].to("cpu", torch.uint8)
            step = state["step"]
            run.sampler.reseed(run.seed, step)  # continue the batch stream deterministically from the step
        return step


class VectorizedSeedRuns:
    """``train: {vectorize_seeds: true}``: a worker's seeds as one vectorized runner, the class the algorithm's
    ``vectorized_seeds()`` names (Diffusion-QL's ``VectorizedDQL``: one vmapped update for all seeds).  Seed s
    follows the same random streams as ``SeedRun(s)``: the same initial weights (built after
    ``torch.manual_seed(s)``), the torch stream from there on, the same batch sampler."""

    def __init__(self, seeds: list[int], spec: SweepSpec, config, env_spec, data, device, shard=None):
        runner = algorithms.get(spec.algorithm)[1].vectorized_seeds()
        if runner is None:
            raise ValueError(f"train.vectorize_seeds: {spec.algorithm} does not support it")
        self.stack = runner.stack_batches
        self.seeds = list(seeds)
        self.vec = runner(config, env_spec, self.seeds, device)
        self.samplers = []
        for s in self.seeds:
            sampler = TransitionSampler(data, device)
            sampler.reseed(s, 0)
            self.samplers.append(sampler)
        self.sums: list[dict[str, float]] = [{} for _ in self.seeds]
        self.count = 0

    def step(self, batch_size: int, step: int) -> None:
        metrics = self.vec.update(self.stack([s.sample(batch_size) for s in self.samplers]))
        for sums, m in zip(self.sums, metrics):
            accumulate(sums, m)
        self.count += 1

    def train_metrics(self) -> dict[int, dict]:
        out = {seed: means(sums, self.count) for seed, sums in zip(self.seeds, self.sums)}
        self.sums, self.count = [{} for _ in self.seeds], 0
        return out

    def policy_states(self) -> list[dict]:
        return [self.vec.seed_policy_state_dict(i) for i in range(len(self.seeds))]

    def save(self, directory: str, step: int) -> None:
        for i, seed in enumerate(self.seeds):
            checkpoint_io.save_seed_state(directory, seed, self.vec.seed_state_dict(i), step,
                                          self.vec.generators[i].get_state())

    def load(self, directory: str) -> int:
        step = 0
        for i, seed in enumerate(self.seeds):
            state = checkpoint_io.load_seed_state(directory, seed, "cpu")
            self.vec.load_seed_state_dict(i, state["algo"])
            if state["rng"] is not None:
                self.vec.generators[i].set_state(state["rng"].to("cpu", torch.uint8))
            step = state["step"]
            self.samplers[i].reseed(seed, step)
        return step


def _resolve_eval_env(spec: SweepSpec, data) -> str:
    return spec.env or data.env_id


# ----------------------------------------------------------------------------- the loop


def train_loop(loop_config: dict) -> None:
    """Ray Train entry point: ``loop_config = {"spec": SweepSpec dict, "params": searched params}``."""
    loop_start_unix, first_step_unix = time.time(), None  # start-up overhead (benchmarks/suite.py reads them)
    import ray.train
    import ray.train.torch

    from platform.datasets import load_dataset
    from platform.evaluation import EvalPool

    # a multi-algorithm study carries this trial's algorithm in its params
    spec, params = SweepSpec.from_dict(loop_config["spec"]).for_trial(loop_config.get("params") or {})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # train.data_parallel: every worker holds a replica of every seed's model (DDP; rank 0 evaluates and
    # checkpoints); otherwise the seeds are split across the workers
    replicas = spec.train.data_parallel and world > 1
    seeds = list(spec.train.seeds) if replicas else spec.train.seeds[rank::world]
    r = spec.resources
    if r.gpus_per_worker > 0 and not torch.cuda.is_available():
        # never hold a GPU and train on the CPU without a word
        raise RuntimeError(f"resources.gpus_per_worker is {r.gpus_per_worker:g} but torch {torch.__version__} on this "
                           f"worker cannot use CUDA (a CPU build, or no driver): install torch's CUDA build there, "
                           f"or set gpus_per_worker: 0")
    device = ray.train.torch.get_device() if r.gpus_per_worker > 0 else torch.device("cpu")
    torch.set_num_threads(max(1, int(r.cpus_per_worker)))
    torch.set_flush_denormal(True)  # denormals make CPU matmuls several times slower late in training
    # CUDA only (no-ops on the CPU): TF32 and cuDNN's autotuner (train.tf32, train.cudnn_benchmark), and this
    # trial's share of a GPU it shares with others as its memory cap (platform/gpu.py)
    gpu.configure_math(device, spec.train.tf32, spec.train.cudnn_benchmark)
    gpu.cap_memory(device, r.gpus_per_worker)

    data = load_dataset(spec.dataset)
    env_spec = data.env_spec()
    # the study's values over the paper's per-task ones for this dataset (algorithms/paper_settings.py)
    config_params, _ = algorithms.resolve_params(spec.algorithm, spec.dataset, {**spec.config, **params})
    # under both, what follows the trial's budget (Algorithm.budget_params: e.g. an lr schedule's max_steps)
    algo_cls = algorithms.get(spec.algorithm)[1]
    budget = algo_cls.budget_params(spec.train.steps, algorithms.config_fields(spec.algorithm))
    config_params = {**budget, **config_params}
    config = algorithms.build_config(spec.algorithm, config_params)
    config_dict = _config_dict(config)
    shard = (rank, world, lambda m: ray.train.torch.prepare_model(m, move_to_device=False)) if replicas else None
    runs = (VectorizedSeedRuns if spec.train.vectorize_seeds else SeedRuns)(seeds, spec, config, env_spec, data,
                                                                             device, shard)
    if spec.train.compile:  # train.compile: fused graphs for the training step (rollout actors stay eager)
        compile_algorithms([run.algo for run in runs.runs], device, ray.get_runtime_context().get_node_id())
    start_step, resumed_from = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start_step = resumed_from = runs.load(d)
        print(f"[train] rank {rank}: resumed seeds {seeds} from step {start_step}", flush=True)

    t = spec.train
    env_id = _resolve_eval_env(spec, data)
    evaluates = rank == 0 or not replicas  # replicas hold the same weights: rank 0 evaluates them
    actors = r.eval_actors if replicas else max(1, r.eval_actors // world)
    pool = EvalPool(env_id, spec.algorithm, config_dict, env_spec.to_dict(), n_actors=actors,
                    envs_per_actor=r.envs_per_actor or math.ceil(t.eval_episodes / actors),
                    num_cpus=r.cpus_per_eval_actor, resources=r.eval_resources,
                    ref_min=data.ref_min_score, ref_max=data.ref_max_score) if evaluates else None
    # the rollout actors' nodes, read at the first report: waiting for the actors here would hold the first
    # gradient step for their start-up (seconds of imports on a loaded machine)
    eval_nodes = None
    train_node = ray.get_runtime_context().get_node_id()
    report_every = t.eval_every
    ckpt_every = t.checkpoint_every or t.eval_every
    log_every = t.log_every or t.eval_every
    t0 = time.perf_counter()
    t_window, steps_window = time.perf_counter(), 0
    train_time = train_cpu = 0.0  # wall and this process's CPU seconds of training alone (CPU: robust to load)

    def publish(step: int, per_seed: dict, is_eval: bool, rates: tuple[float, float], elapsed: float,
                eval_s: float, ckpt_dir: str | None) -> None:
        """Report one point (all workers together: the gather and Train's report are collectives).  ``rates``:
        seed-steps per wall second and per CPU second of training since the last report."""
        nonlocal eval_nodes, resumed_from
        per_seed = per_seed if replicas else _gather(per_seed, world)  # replicas: rank 0's numbers
        if eval_nodes is None:
            eval_nodes = ",".join(sorted(set(pool.node_ids()))) if pool is not None else ""
        if not is_eval:  # a training-only report (log_every, or a diverged step): Tune (and Optuna) want the study's
            # metric(s) in every result; none was measured, so they are NaN
            nan = {m: float("nan") for m in (spec.search.objectives or [spec.search.metric])}
            per_seed = {s: {**nan, **m} for s, m in per_seed.items()}
        metrics = history.flatten(per_seed)
        if is_eval:  # ASHA's clock: evaluations, not reports (log_every reports fall between them)
            metrics["eval/count"] = evaluations_until(step, report_every)
        sps, cpu_sps = rates
        metrics.update({"step": step, "time/total_s": time.perf_counter() - t0, "time/eval_s": eval_s,
                        "time/steps_per_cpu_s": cpu_sps,
                        "time/steps_per_s": sps, "time/ms_per_step": 1000.0 / sps if sps > 0 else float("nan"),
                        "time/window_s": elapsed, "is_eval": int(is_eval),
                        "node/train": train_node, "node/eval": eval_nodes, "node/device": str(device),
                        "world_size": world,
                        "time/loop_start_unix": loop_start_unix, "time/first_step_unix": first_step_unix})
        if resumed_from is not None:  # the first report after a restart says so (the console prints it)
            metrics["resumed_from_step"], resumed_from = resumed_from, None
        if rank == 0:
            score = metrics.get(spec.search.metric, float("nan"))
            print(f"[train] step {step}/{t.steps} {spec.search.metric}={score:.3f} "
                  f"({sps:.1f} seed-steps/s, eval {eval_s:.1f}s)", flush=True)
            history.append(loop_config.get("history_dir"), loop_config.get("trial_id"), metrics)
        if ckpt_dir is None:
            ray.train.report(metrics)
            return
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                             checkpoint_dir_name=f"checkpoint_{step:09d}")
        finally:
            shutil.rmtree(ckpt_dir, ignore_errors=True)

    def save_checkpoint(step: int) -> str:
        """The state at ``step`` in a fresh directory (reported, then removed, by ``publish``)."""
        d = tempfile.mkdtemp(prefix="drl-ckpt-")
        runs.save(d, step)
        if rank == 0:
            checkpoint_io.save_meta(d, algorithm=spec.algorithm, config=config_dict, env_spec=env_spec.to_dict(),
                                    seeds=spec.train.seeds, step=step, dataset=spec.dataset, env=env_id)
        return d

    # train.overlap_eval: the evaluation of step s runs on the rollout actors while training goes on, and is
    # reported (as step s, with the checkpoint of step s) at the next report point; the last one blocks.
    pending = None
    step = start_step
    try:
        while step < t.steps:
            tick, tick_cpu = time.perf_counter(), time.process_time()
            step += 1
            runs.step(t.batch_size, step)
            first_step_unix = first_step_unix or time.time()
            train_time += time.perf_counter() - tick
            train_cpu += time.process_time() - tick_cpu
            steps_window += 1
            is_eval = step % report_every == 0 or step == t.steps
            if not (is_eval or step % log_every == 0):
                continue
            per_seed = runs.train_metrics()
            elapsed = time.perf_counter() - t_window
            seed_steps = steps_window * len(seeds)
            rates = (seed_steps / max(train_time, 1e-9), seed_steps / max(train_cpu, 1e-9))
            t_window, steps_window, train_time, train_cpu = time.perf_counter(), 0, 0.0, 0.0
            diverged = nonfinite_error(per_seed, step)
            if diverged is not None:  # recorded (train/nonfinite_losses > 0), then the trial fails in one line
                publish(step, per_seed, False, rates, elapsed, 0.0, None)
                raise diverged
            if pending is not None:
                p_step, job, p_seed, p_rates, p_elapsed, p_ckpt = pending
                tick = time.perf_counter()
                for seed, m in zip(seeds, job.result()):
                    p_seed[seed].update(m)
                publish(p_step, p_seed, True, p_rates, p_elapsed, time.perf_counter() - tick, p_ckpt)
                pending = None
            if not is_eval:
                publish(step, per_seed, False, rates, elapsed, 0.0, None)
                continue
            ckpt = (save_checkpoint(step) if (step % ckpt_every == 0 or step == t.steps) and evaluates else None)
            if not evaluates:  # a data-parallel replica other than rank 0: report along, nothing to evaluate
                publish(step, per_seed, True, rates, elapsed, 0.0, None)
                continue
            tick = time.perf_counter()
            job = pool.submit(runs.policy_states(), t.eval_episodes, t.eval_seed)  # a snapshot: copied now
            if t.overlap_eval and step < t.steps:
                pending = (step, job, per_seed, rates, elapsed, ckpt)
                continue
            for seed, m in zip(seeds, job.result()):
                per_seed[seed].update(m)
            publish(step, per_seed, True, rates, elapsed, time.perf_counter() - tick, ckpt)
    finally:
        if pool is not None:
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
