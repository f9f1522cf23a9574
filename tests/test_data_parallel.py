"""train.data_parallel: W replicas x B/W rows take the step one model takes on B rows (Diffusion Policy).

The replicas sample the same global batch, keep their rows, draw the global batch's noise and diffusion steps
and keep theirs; DDP averages the gradients.  So 2 workers x 128 rows equal 1 worker x 256 up to the float
round-off of summing the loss in two halves (tolerance below: 1e-5 on every parameter after a few Adam steps,
whose updates are ~lr = 1e-4 per step: a replica that trained on its rows alone would be off by about that).
"""
import socket
import textwrap

import pytest
import torch
import torch.multiprocessing as mp

from benchmarks import suite
from tests.test_sweep import ROOT, run_cli

SIZE = dict(down_dims=(16, 32), diffusion_step_embed_dim=16)  # a tiny U-Net, Push-T shapes (suite.DP_SPEC)
STEPS, B = 3, 64


def _policy():
    return suite._dp_policy(SIZE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_take_the_whole_batch_step(tmp_path):
    """The benchmark suite's replica (benchmarks/suite.py ``_ddp_replica``), 2 gloo processes x B/2 rows, against
    one process on the same B-row batches."""
    torch.set_num_threads(1)
    alone = _policy()
    torch.manual_seed(1)  # the seed's stream after building, as every replica has it
    for batch in suite._dp_batches(STEPS + 1, B):
        alone.update(batch)
    out = str(tmp_path / "replica0.pt")
    mp.spawn(suite._ddp_replica, args=(2, _free_port(), SIZE, STEPS, B, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)["state"]
    want = alone.state_dict()
    start = _policy().state_dict()
    moved = max((want["model"][k] - start["model"][k]).abs().max().item() for k in want["model"])
    assert moved > 1e-4  # the steps changed the weights (so equality below is not trivial)
    for part in ("model", "ema_model"):
        for k, v in want[part].items():
            assert torch.allclose(got[part][k], v, atol=1e-5, rtol=0), (part, k, (got[part][k] - v).abs().max())


def test_distribute_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank must be in"):
        _policy().distribute(lambda m: m, 2, 2)


def test_data_parallel_needs_an_algorithm_that_supports_it(tmp_path):
    spec = tmp_path / "dp.yaml"
    spec.write_text("name: t\nalgorithm: iql\ndataset: generated:pendulum-medium\ntrain: {data_parallel: true}\n")
    out = run_cli([str(spec), "--dry-run"])
    assert out.returncode == 2
    assert "train.data_parallel: iql does not support it; algorithms that do: diffusion_policy" in out.stderr


DDP_STUDY = """\
name: {name}
algorithm: diffusion_policy
dataset: generated:pendulum-medium
config: {{backbone: cnn, down_dims: [16, 32], diffusion_step_embed_dim: 16, pred_horizon: 8, action_horizon: 4,
          n_timesteps: 20, sampler: ddim, n_inference_steps: 8, lr_warmup_steps: 0}}
train: {{steps: 6, batch_size: 64, eval_every: 3, eval_episodes: 2, seeds: [0], data_parallel: true}}
search: {{searcher: grid, scheduler: fifo}}
resources: {{workers: 2, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}}
"""


@pytest.mark.timeout(900)
def test_data_parallel_trial_equals_one_worker_on_the_whole_batch(tmp_path, data_dir):
    """Through the real train loop: a 2-worker data-parallel trial (Ray Train, gloo DDP) ends with the weights of
    the same seed trained alone on the whole batch (in this process, by the loop's own SeedRun).

    Without a warm-up (the CNN's default 500 steps would keep the lr near 0 over these 6 steps: no weight would move
    by the tolerance, and the comparison could not fail), 6 AdamW steps at lr 1e-4 move weights by ~6e-4: a replica
    that trained on its own half of the batch, or did not train, is off by far more than the 1e-5 tolerance."""
    import pandas as pd

    import algorithms
    from platform import checkpoint
    from platform.datasets import load_dataset
    from platform.spec import load_spec
    from platform.training import SeedRun

    path = tmp_path / "ddp.yaml"
    path.write_text(textwrap.dedent(DDP_STUDY.format(name="ddp")))
    out = run_cli([str(path), "--storage", str(tmp_path / "results"), "--no-report"], timeout=800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "ddp" / "metrics.parquet")
    assert sorted(df["step"]) == [3, 6]  # one seed, evaluated once per report point (rank 0)
    assert df["eval/return_mean"].notna().all()
    last = sorted(p for p in (tmp_path / "results" / "ddp").rglob("checkpoint_000000006") if p.is_dir())
    assert last, "no checkpoint of step 6"
    got = checkpoint.load_seed_state(str(last[0]), 0, "cpu")["algo"]

    spec = load_spec(str(path))
    data = load_dataset(spec.dataset)
    config = algorithms.build_config(spec.algorithm, {**spec.config, "max_steps": spec.train.steps})
    torch.set_num_threads(1)
    run = SeedRun(0, spec, config, data.env_spec(), data, torch.device("cpu"))
    start = {k: v.clone() for k, v in run.algo.state_dict()["model"].items()}
    for step in range(1, 7):
        run.step(spec.train.batch_size, step)
    want = run.algo.state_dict()
    moved = max((want["model"][k] - start[k]).abs().max().item() for k in want["model"])
    assert moved > 20 * 1e-5, moved  # the steps changed the weights by far more than the tolerance below
    for part in ("model", "ema_model"):
        for k, v in want[part].items():
            assert torch.allclose(got[part][k], v, atol=1e-5, rtol=0), (part, k, (got[part][k] - v).abs().max())
    assert ROOT  # the CLI ran from the repo root
