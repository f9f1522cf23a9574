"""GPU-readiness checks that a CPU machine can make (the `gpu` marker has the ones that need CUDA)."""
import ast
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM_FACTORIES = {"randperm", "randint", "rand", "randn", "randn_like", "rand_like"}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch's CUDA build and a GPU)")


def test_no_seeded_random_call_without_a_device():
    """``torch.randperm(n, generator=g)`` without ``device=`` raises on CUDA ("Expected a 'cpu' device type for
    generator"); every seeded draw in algorithms/ must say where it runs."""
    bad = []
    for name in sorted(os.listdir(os.path.join(ROOT, "algorithms"))) + [
            os.path.join("diffusion", f) for f in sorted(os.listdir(os.path.join(ROOT, "algorithms", "diffusion")))]:
        if not name.endswith(".py"):
            continue
        path = os.path.join(ROOT, "algorithms", name)
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in RANDOM_FACTORIES - {"randn_like", "rand_like"}):
                kws = {k.arg for k in node.keywords}
                if "generator" in kws and "device" not in kws:
                    bad.append(f"algorithms/{name}:{node.lineno}")
    assert not bad, f"seeded random draws without device=: {bad}"


def _lloyd_by_hand(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """k-means as BeT's discretizer, its k initial points drawn on an explicit CPU generator (x with no empty
    cluster: the test data below has none)."""
    first = torch.randperm(x.shape[0], generator=torch.Generator(device="cpu").manual_seed(seed))[:k]
    centers = x.cpu()[first].clone()
    for _ in range(iters):
        assign = torch.cdist(x.cpu(), centers).argmin(1)
        centers = torch.stack([x.cpu()[assign == j].mean(0) for j in range(k)])
    return centers


def _bet_bins(device: str) -> torch.Tensor:
    import algorithms
    from tests.test_contract import SPEC, TINY

    algo = algorithms.build("bet", TINY["bet"], SPEC, device)
    algo.fit_bins(torch.randn(500, SPEC.act_dim, generator=torch.Generator().manual_seed(1)).clamp(-1, 1))
    return algo.centers


def test_bet_bins_are_the_same_whatever_the_generator_device():
    """BeT's bins start from points drawn on a CPU generator whatever the device (the same bins on a GPU): its
    k-means and its fit equal Lloyd's algorithm by hand from ``randperm`` on an explicit CPU generator."""
    from algorithms.bet import kmeans
    from tests.test_contract import SPEC, TINY

    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    by_hand = _lloyd_by_hand(x, 8, 5, 0)
    torch.testing.assert_close(kmeans(x, 8, 5, torch.Generator(device="cpu").manual_seed(0)), by_hand)
    # the fit: a CPU generator seeded 0, on the normalized actions
    import algorithms

    algo = algorithms.build("bet", TINY["bet"], SPEC, "cpu")
    actions = torch.randn(500, SPEC.act_dim, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    algo.fit_bins(actions)
    want = _lloyd_by_hand(algo.normalize_action(actions), algo.cfg.n_bins, algo.cfg.kmeans_iters, 0)
    torch.testing.assert_close(algo.centers, want)
    torch.testing.assert_close(_bet_bins("cpu"), algo.centers)


@pytest.mark.gpu
@needs_cuda
def test_bet_bins_on_cuda_equal_the_cpu_bins():
    """The same bins fitted on ``cuda`` as on the CPU (the initial points come from the same CPU draws; Lloyd's
    steps on the GPU differ by float round-off only)."""
    cpu, cuda = _bet_bins("cpu"), _bet_bins("cuda")
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-5, rtol=1e-5)


def test_resumed_optimizer_keeps_step_counters_on_cpu(tmp_path):
    """The train loop's resume (``SeedRuns.load``) loads checkpoints to the CPU and lets Adam move its state to its
    parameters' device, except ``step``, which stays a CPU tensor as a fresh optimizer has it (on a GPU it would
    sync every step).  Parameters on the ``meta`` device stand in for a GPU: the moments must land there and
    ``step`` must not."""
    from types import SimpleNamespace

    from platform import checkpoint
    from platform.training import SeedRuns

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    checkpoint.save_seed_state(str(tmp_path), 0, {"opt": opt.state_dict()}, 7, torch.get_rng_state())

    meta = torch.nn.Linear(3, 2, device="meta")
    fresh = torch.optim.Adam(meta.parameters())
    run = SimpleNamespace(seed=0, rng=None, sampler=SimpleNamespace(reseed=lambda seed, step: None),
                          algo=SimpleNamespace(load_state_dict=lambda d: fresh.load_state_dict(d["opt"])))
    runs = SeedRuns.__new__(SeedRuns)
    runs.runs = [run]
    assert runs.load(str(tmp_path)) == 7
    states = list(fresh.state.values())
    assert len(states) == 2
    for st in states:
        assert st["step"].device.type == "cpu" and float(st["step"]) == 1.0
        assert st["exp_avg"].device.type == "meta" and st["exp_avg_sq"].device.type == "meta"


def test_no_cuda_is_one_line_error_before_training(monkeypatch):
    """A trial that asks for a GPU on a worker whose torch cannot use CUDA fails at once with one line naming the
    fix (the train loop's check, reached here without Ray Train: its context is faked, CUDA made absent)."""
    import ray.train

    from platform import training
    from platform.spec import load_spec

    spec = load_spec("search_spaces/quickstart.yaml")
    spec = spec.__class__.from_dict({**spec.to_dict(), "resources": {**spec.to_dict()["resources"],
                                                                    "gpus_per_worker": 0.5}})
    assert spec.resources.gpus_per_worker == 0.5
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_world_rank=lambda: 0,
                                                                          get_world_size=lambda: 1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as e:
        training.train_loop({"spec": spec.to_dict(), "params": {}})
    msg = str(e.value)
    assert "\n" not in msg and "gpus_per_worker is 0.5" in msg and "cannot use CUDA" in msg
    assert "install torch's CUDA build there, or set gpus_per_worker: 0" in msg


# ----------------------------------------------------------------------------- DPM-Solver: no device reads


def _reference_dpm_solver_pp(denoise_fn, schedule, shape, n_steps, clip=None, generator=None):
    """DPM-Solver++(2M) as it was before its constants moved to the host (frozen copy: it read them from
    float64 device tensors at every call, ``.tolist()`` and 0-d tensor arithmetic)."""
    from algorithms.diffusion.dpm_solver import _clip, solver_timesteps

    abar = schedule.alphas_cumprod.to(dtype=torch.float64)
    ts = solver_timesteps(abar, n_steps).tolist()
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    with torch.no_grad():
        x = torch.randn(shape, generator=generator)
        x0_prev, h_prev = None, None

        def x0_of(x, t):
            eps = denoise_fn(x, torch.full((shape[0],), int(t), dtype=torch.long))
            return _clip((x - sigma[t].float() * eps) / alpha[t].float(), clip)

        for s, t in zip(ts[:-1], ts[1:]):
            x0 = x0_of(x, s)
            h = (lam[t] - lam[s]).float()
            if x0_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (sigma[t] / sigma[s]).float() * x - alpha[t].float() * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        return x0_of(x, ts[-1])


def _toy_denoiser(device="cpu"):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Mish(), torch.nn.Linear(32, 3)).to(device)
    return lambda x, k: net(torch.cat([x, k[:, None].float() / 100], 1))


@pytest.mark.parametrize("K,kind", [(1000, "linear"), (100, "cosine"), (5, "vp")])
def test_dpm_solver_pp_host_constants_give_the_same_samples(K, kind):
    from algorithms.diffusion.dpm_solver import dpm_solver_sample
    from algorithms.diffusion.schedules import DiffusionSchedule

    sch, den = DiffusionSchedule(K, kind), _toy_denoiser()
    box = (torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([1.0, 0.5, 2.0]))
    for n in (1, 2, 5, 15):
        for clip in (None, 1.0, box):
            new = dpm_solver_sample(den, sch, (64, 3), n, clip=clip, generator=torch.Generator().manual_seed(n))
            ref = _reference_dpm_solver_pp(den, sch, (64, 3), n, clip=clip, generator=torch.Generator().manual_seed(n))
            assert torch.equal(new, ref), (K, kind, n, clip, (new - ref).abs().max())


def test_edp_solver_plan_from_the_host_tables_is_the_buffers_plan():
    from algorithms.diffusion.dpm_solver import dpm_solver_eps_plan, host_alphas_cumprod
    from algorithms.diffusion.schedules import DiffusionSchedule

    for K in (5, 100, 1000):
        sch = DiffusionSchedule(K, "linear_scaled")
        assert torch.equal(host_alphas_cumprod(sch), sch.alphas_cumprod.double())
        assert dpm_solver_eps_plan(host_alphas_cumprod(sch)) == dpm_solver_eps_plan(sch.alphas_cumprod)


@pytest.mark.parametrize("solver", ["dpm_solver", "dpm_solver_pp"])
def test_dpm_solvers_never_read_a_device_tensor(solver):
    """On the meta device every host read (``.item()``, ``float(t)``, ``.tolist()``, ``.cpu()``) raises: a
    sampling call that runs there syncs with a GPU at no point, its first call (the plan is made) included."""
    from algorithms.diffusion.dpm_solver import dpm_solver_eps_sample, dpm_solver_sample
    from algorithms.diffusion.schedules import DiffusionSchedule

    meta = torch.device("meta")
    sch = DiffusionSchedule(1000, "linear").to(meta)
    den = _toy_denoiser(meta)
    clip = (torch.full((3,), -1.0, device=meta), torch.full((3,), 1.0, device=meta))
    sample = dpm_solver_eps_sample if solver == "dpm_solver" else dpm_solver_sample
    for _ in range(2):
        out = sample(den, sch, (8, 3), 15, clip=clip, device=meta)
        assert out.device == meta and out.shape == (8, 3)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the check can fail: a host read on meta raises
        _reference_dpm_solver_pp(den, sch, (8, 3), 15)


# ----------------------------------------------------------------------------- Push-T windows on the device


def _sequence_data():
    from types import SimpleNamespace

    g = np.random.default_rng(0)
    ends = np.array([7, 19, 20, 41, 60], dtype=np.int64)
    data = SimpleNamespace(observations=g.normal(size=(60, 5)).astype(np.float32),
                           actions=g.normal(size=(60, 2)).astype(np.float32), episode_ends=ends)
    algo = SimpleNamespace(obs_horizon=2, pred_horizon=8, action_horizon=4, window_pad_before=None)
    return data, algo


def test_window_sampler_gathers_on_the_device_the_numpy_windows():
    from platform.datasets.sequence import SequenceSampler
    from platform.training import WindowSampler

    data, algo = _sequence_data()
    sampler = WindowSampler(data, algo, torch.device("cpu"))
    assert torch.is_tensor(sampler.observations) and torch.is_tensor(sampler.actions)  # placed once
    numpy_path = SequenceSampler(data.episode_ends, 2, 8, 4)
    for seed, step in ((0, 0), (3, 17)):
        sampler.reseed(seed, step)
        rng = np.random.default_rng([seed, step])
        for _ in range(3):
            got = sampler.sample(32)
            want = numpy_path.get(numpy_path.sample(32, rng), data.observations, data.actions)
            for k in ("obs", "action"):
                assert torch.is_tensor(got[k]) and got[k].dtype == torch.float32
                np.testing.assert_array_equal(got[k].numpy(), want[k])
    # the seeds of a worker share the dataset's device arrays instead of one copy each
    assert WindowSampler(data, algo, torch.device("cpu")).observations is sampler.observations


def test_window_sampler_batches_never_leave_the_device():
    """On the meta device a numpy round trip would raise: the gather runs where the arrays live."""
    from platform.training import TransitionSampler, WindowSampler

    data, algo = _sequence_data()
    meta = torch.device("meta")
    batch = WindowSampler(data, algo, meta).sample(16)
    assert batch["obs"].device == meta and batch["obs"].shape == (16, 2, 5)
    assert batch["action"].device == meta and batch["action"].shape == (16, 8, 2)
    # transitions too: one device copy of the dataset per worker, whatever its number of seeds
    data.rewards = data.terminals = np.zeros(60, np.float32)
    data.next_observations = data.observations
    cpu = torch.device("cpu")
    assert TransitionSampler(data, cpu).arrays["observations"] is TransitionSampler(data, cpu).arrays["observations"]


# ----------------------------------------------------------------------------- bf16, TF32, cuDNN, memory cap


@pytest.mark.parametrize("backbone", ["cnn", "transformer"])
def test_diffusion_policy_bf16_autocast_trains_in_fp32_weights(backbone):
    from algorithms import EnvSpec
    from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig

    size = (dict(down_dims=(8, 16), diffusion_step_embed_dim=8) if backbone == "cnn"
            else dict(n_layer=1, n_head=2, n_emb=32))
    cfg = DiffusionPolicyConfig(backbone=backbone, obs_horizon=2, pred_horizon=4, action_horizon=2, n_timesteps=10,
                                n_inference_steps=10, lr=3e-3, lr_warmup_steps=0, lr_schedule="constant",
                                bf16_autocast=True, **size)
    spec = EnvSpec(obs_dim=3, act_dim=2)
    torch.manual_seed(0)
    algo = DiffusionPolicy(cfg, spec)
    seen = set()
    for m in algo.model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d)):
            m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    g = torch.Generator().manual_seed(1)
    batch = {"obs": torch.rand(32, 2, 3, generator=g) * 2 - 1, "action": torch.rand(32, 4, 2, generator=g) * 2 - 1}

    def fixed_loss():  # the training loss at fixed noise and steps (update draws fresh ones: too noisy to compare)
        gen = torch.Generator().manual_seed(7)
        x0, nobs = algo.normalize_action(batch["action"]), algo.normalize_obs(batch["obs"])
        noise, k = torch.randn(x0.shape, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            pred = algo._eps(algo.model, algo.schedule.q_sample(x0, k, noise), k, nobs)
        return float(torch.nn.functional.mse_loss(pred.float(), noise))

    before = fixed_loss()
    losses = [float(algo.update(batch)["train/loss"]) for _ in range(12)]
    assert torch.bfloat16 in seen  # the layers really ran in bfloat16
    assert all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in algo.model.parameters())
    assert all(v.dtype == torch.float32 for s in algo.optimizer.state.values() for k, v in s.items() if k != "step")
    assert all(p.dtype == torch.float32 for p in algo.ema_model.parameters())
    assert fixed_loss() < 0.9 * before, (before, fixed_loss(), losses)
    assert algo.act(torch.zeros(3, 2, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="bf16_autocast"):
        DiffusionPolicyConfig(bf16_autocast="yes")


def test_bf16_autocast_is_off_by_default():
    from algorithms.diffusion_policy import DiffusionPolicyConfig

    assert DiffusionPolicyConfig().bf16_autocast is False


@pytest.fixture
def _cuda_math_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    yield saved
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])
    torch.backends.cudnn.benchmark = saved[3]


def test_tf32_and_cudnn_benchmark_only_on_cuda(_cuda_math_flags):
    from platform.gpu import configure_math

    def flags():
        return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    before = flags()
    assert configure_math(torch.device("cpu")) == {} and flags() == before  # a CPU worker: torch's defaults
    assert configure_math("cuda:0", tf32=True, cudnn_benchmark=True) == {"tf32": True, "cudnn_benchmark": True}
    assert flags() == (True, True, "high", True)
    configure_math(torch.device("cuda"), tf32=False, cudnn_benchmark=False)
    assert flags() == (False, False, "highest", False)


def test_memory_cap_only_when_trials_share_a_cuda_device():
    from platform.gpu import cap_memory, memory_fraction

    cuda = torch.device("cuda", 0)
    assert memory_fraction(cuda, 0.25) == 0.25 and memory_fraction(cuda, 0.5) == 0.5
    assert memory_fraction(cuda, 1.0) is None and memory_fraction(cuda, 2.0) is None  # a whole GPU: no cap
    assert memory_fraction(cuda, 0.0) is None
    assert memory_fraction(torch.device("cpu"), 0.25) is None
    assert cap_memory(torch.device("cpu"), 0.25) is None  # never touches torch.cuda on a CPU worker


def test_train_options_for_cuda_math_are_named_in_study_files():
    from platform.spec import SpecError, TrainSpec, parse_spec

    assert TrainSpec().tf32 is True and TrainSpec().cudnn_benchmark is True
    base = {"name": "x", "algorithm": "bc", "dataset": "generated:pendulum-medium"}
    spec = parse_spec({**base, "train": {"tf32": False, "cudnn_benchmark": False}})
    assert spec.train.tf32 is False and spec.train.cudnn_benchmark is False
    with pytest.raises(SpecError, match="tf32"):
        parse_spec({**base, "train": {"tf32": "sometimes"}})


# ----------------------------------------------------------------------------- on CUDA (`python -m pytest -m gpu`)



def _cuda(batch: dict) -> dict:
    return {k: v.cuda() for k, v in batch.items()}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_every_algorithm_updates_and_acts_on_cuda(bf16):
    """Every registered algorithm at its contract size: two updates and an act on ``cuda`` (Diffusion Policy
    also under bf16 autocast), weights and outputs on the GPU, finite."""
    import algorithms
    from tests.test_contract import DATA, SPEC, TINY, batch, observations

    for name in algorithms.names():
        if bf16 and name != "diffusion_policy":
            continue
        torch.manual_seed(0)
        algo = algorithms.build(name, {**TINY[name], **({"bf16_autocast": True} if bf16 else {})}, SPEC, "cuda")
        algo.fit_dataset(DATA)
        for step in range(2):
            metrics = algo.update(_cuda(batch(algo, seed=step)))
            assert all(np.isfinite(float(v)) for v in metrics.values()), (name, metrics)
        params = [v for v in algo.state_dict().values() if isinstance(v, dict)]
        assert all(t.is_cuda for d in params for t in d.values() if torch.is_tensor(t)), name
        out = algo.act(observations(algo).cuda())
        assert out.is_cuda and out.dtype == torch.float32 and torch.isfinite(out).all(), name


@pytest.mark.gpu
@needs_cuda
def test_sampling_and_batches_never_sync_on_cuda():
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronizing call: EDP's solvers (after their
    plan is made) and the train loop's samplers run without one."""
    import algorithms
    from platform.training import TransitionSampler, WindowSampler
    from tests.test_contract import DATA, SPEC, TINY

    data, algo_ns = _sequence_data()
    windows = WindowSampler(data, algo_ns, torch.device("cuda"))
    transitions = TransitionSampler(DATA, torch.device("cuda"))
    edp = {s: algorithms.build("edp", {**TINY["edp"], "sampler": s}, SPEC, "cuda") for s in ("dpm_solver",
                                                                                              "dpm_solver_pp")}
    obs = torch.randn(16, SPEC.obs_dim, device="cuda")
    for algo in edp.values():
        algo.sample(obs)  # the first call makes the plan (host floats; no device read either)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for algo in edp.values():
            algo.sample(obs)
        windows.sample(32)
        transitions.sample(32)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["dql", "diffusion_policy"])
def test_resumed_run_on_cuda(tmp_path, name):
    """A checkpoint written on the GPU resumes on it: the same weights, Adam's step counters on the CPU (no
    sync per parameter per step), and training goes on."""
    import algorithms
    from platform.datasets import OfflineDataset
    from platform.spec import SweepSpec
    from platform.training import SeedRuns
    from tests.test_contract import DATA, SPEC, TINY, tensors

    spec = SweepSpec(name="resume-gpu", algorithm=name, dataset="contract-tiny")
    config = algorithms.build_config(name, TINY[name])
    data = OfflineDataset(observations=DATA.observations, actions=DATA.actions, rewards=DATA.rewards,
                          next_observations=DATA.next_observations, terminals=DATA.terminals,
                          timeouts=np.zeros_like(DATA.terminals), episode_ends=DATA.episode_ends,
                          env_id="none", name="contract-tiny", act_low=SPEC.act_low, act_high=SPEC.act_high,
                          ref_min_score=None, ref_max_score=None)  # no env, no reference: never evaluated
    cuda = torch.device("cuda")
    runs = SeedRuns([0, 1], spec, config, SPEC, data, cuda)
    for step in range(1, 4):
        runs.step(16, step)
    runs.save(str(tmp_path), 3)
    resumed = SeedRuns([0, 1], spec, config, SPEC, data, cuda)
    assert resumed.load(str(tmp_path)) == 3
    for a, b in zip(runs.runs, resumed.runs):
        wa, wb = tensors(a.algo.state_dict()), tensors(b.algo.state_dict())
        assert len(wa) == len(wb) > 0 and all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(wa, wb))
        opts = [o for o in vars(b.algo).values() if isinstance(o, torch.optim.Optimizer)]
        assert opts and all(st["step"].device.type == "cpu" for o in opts for st in o.state.values())
        assert all(p.is_cuda for o in opts for g in o.param_groups for p in g["params"])
    resumed.step(16, 4)
    assert all(np.isfinite(v) for m in resumed.train_metrics().values() for v in m.values())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(1200)
def test_two_workers_share_one_gpu(tmp_path, data_dir):
    """A real sweep whose trial has 2 Train workers at 0.5 GPU each: both ranks on one device (the metric gather
    on gloo, not NCCL's "Duplicate GPU detected"), every row says it trained on CUDA."""
    import pandas as pd

    from tests.test_sweep import run_cli

    p = tmp_path / "gpu_pair.yaml"
    p.write_text("name: gpu_pair\nalgorithm: bc\ndataset: generated:pendulum-medium\n"
                 "train: {steps: 40, batch_size: 64, eval_every: 20, eval_episodes: 2, seeds: [0, 1]}\n"
                 "search: {searcher: random, num_samples: 1, scheduler: fifo}\n"
                 "resources: {workers: 2, cpus_per_worker: 0.5, gpus_per_worker: 0.5, eval_actors: 1, "
                 "cpus_per_eval_actor: 0.5}\nfailure: {max_failures: 0}\n")
    out = run_cli([str(p), "--storage", str(tmp_path / "results"), "--no-report"], timeout=1100)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "gpu_pair" / "metrics.parquet")
    assert (df["status"] == "TERMINATED").all() and set(df["seed"]) == {0, 1} and set(df["step"]) == {20, 40}
    device_col = [c for c in df.columns if c.endswith("device")]
    assert device_col and df[device_col[0]].astype(str).str.startswith("cuda").all(), df[device_col].head()


@pytest.mark.gpu
@needs_cuda
def test_benchmark_training_part_on_cuda(tmp_path):
    """The suite's training part on the GPU (quick sizes), TF32 on as a GPU trial sets it, bf16 beside float32."""
    import pyarrow.parquet as pq

    from benchmarks import suite

    try:
        rows = suite.main(["--quick", "--parts", "training", "--device", "cuda", "--tf32", "--bf16",
                           "--out", str(tmp_path), "--threads", "1"])
    finally:
        torch.set_flush_denormal(False)
    table = pq.read_table(tmp_path / "benchmarks.parquet").to_pandas()
    assert len(table) == len(rows) and (table["value"] > 0).all()
    assert {"dql K=5", "edp K=1000", "dp_cnn", "dp_transformer", "dp_cnn bf16 autocast"} <= set(table["case"])
    assert table["note"].str.contains("cuda").all()


