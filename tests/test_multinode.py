"""A real multi-node Ray cluster on one machine: a head and worker nodes, each its own raylet on
127.0.0.1, token authentication on (RAY_AUTH_MODE=token, a random per-test token), and a study
submitted the way clusters/README.md does it (`ray job submit --working-dir .`).

* Rollout actors with ``eval_resources: {rollout: 1}`` run on the node that advertises `rollout`,
  not on the head (the Parquet's ``node/eval`` column says where they ran).
* A worker node killed mid-sweep (its raylet and everything it started, SIGKILL) loses no finished
  trial: the sweep goes on once a replacement node joins (what an autoscaler would do), and every
  trial is in the Parquet file.

Each node is `ray start --block` in its own session, so teardown kills exactly the processes this
test started.  (`ray stop --force` would also stop every other Ray on the machine: other test
sessions share it.)  Slow: starting the nodes and a Train run per trial takes minutes on 2 cores.
"""
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.raycluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPEC = """\
name: {name}
algorithm: bc
dataset: generated:pendulum-medium
train: {{steps: {steps}, batch_size: 64, eval_every: {eval_every}, eval_episodes: 2, seeds: [0, 1]}}
search:
  searcher: random
  num_samples: {num_samples}
  scheduler: fifo
  max_concurrent: 1
  space:
    lr: {{loguniform: [0.0001, 0.01]}}
resources: {{workers: 1, cpus_per_worker: 1, eval_actors: 2, cpus_per_eval_actor: 0.25, eval_resources: {{rollout: 1}}}}
failure: {{max_failures: 2, trial_max_failures: 2}}
"""


@pytest.fixture
def cluster():
    c = LocalCluster()
    try:
        yield c
    finally:
        c.shutdown()


def write_spec(tmp_path, name: str, steps: int, eval_every: int, num_samples: int) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(SPEC.format(name=name, steps=steps, eval_every=eval_every, num_samples=num_samples))
    return str(p)


def finish(job: subprocess.Popen, lines: list[str], timeout: float) -> str:
    """Read the rest of a `ray job submit` output; kill it if it runs past ``timeout``."""
    deadline = time.time() + timeout
    try:
        for line in job.stdout:
            lines.append(line)
            if time.time() > deadline:
                break
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    return "".join(lines)


def test_rollout_actors_run_on_the_rollout_node(cluster, tmp_path, data_dir):
    head = cluster.start_head(num_cpus=2)
    rollout = cluster.add_node("rollout", num_cpus=2, resources={"rollout": 4})
    assert head.node_id != rollout.node_id
    spec = write_spec(tmp_path, "mn_place", steps=20, eval_every=10, num_samples=2)
    storage = tmp_path / "results"
    t0 = time.time()
    out = finish(cluster.submit(spec, str(storage), data_dir), [], timeout=600)
    wall = time.time() - t0
    cluster.check_job(out)
    df = pd.read_parquet(storage / "mn_place" / "metrics.parquet")
    assert df["trial_id"].nunique() == 2 and (df["status"] == "TERMINATED").all()
    assert set(df["step"]) == {10, 20} and set(df["seed"]) == {0, 1}
    assert df["eval/return_mean"].notna().all()
    # every rollout actor ran on the rollout node, none on the head
    assert set(df["node/eval"]) == {rollout.node_id}, df["node/eval"].unique()
    assert head.node_id not in set(df["node/eval"])
    assert set(df["node/train"]) <= {head.node_id, rollout.node_id}
    print(f"\nmultinode placement: {len(df)} rows, {df['trial_id'].nunique()} trials in {wall:.0f}s; "
          f"head {head.node_id[:12]}, rollout {rollout.node_id[:12]}; node/eval {sorted(set(df['node/eval']))}; "
          f"node/train {sorted(set(df['node/train']))}")


def test_worker_node_lost_mid_sweep_keeps_finished_trials(cluster, tmp_path, data_dir):
    head = cluster.start_head(num_cpus=2)
    first = cluster.add_node("rollout_a", num_cpus=2, resources={"rollout": 4})
    spec = write_spec(tmp_path, "mn_loss", steps=40, eval_every=10, num_samples=3)
    storage = tmp_path / "results"
    job = cluster.submit(spec, str(storage), data_dir)
    lines, finished, deadline = [], None, time.time() + 600
    killed_at = None
    for line in job.stdout:
        lines.append(line)
        if finished is None and "finished (1/3" in line:
            finished = line.split()[1]  # "[sweep] <trial_id> finished (1/3 trials done)"
        elif finished is not None and "[sweep]" in line and " step " in line and finished not in line:
            # The second trial has reported an evaluation: it is mid-run.  Lose the rollout node.
            first.kill()
            killed_at = time.time()
            break
        assert time.time() < deadline, "".join(lines[-60:])
    assert killed_at, "".join(lines[-60:])
    second = cluster.add_node("rollout_b", num_cpus=2, resources={"rollout": 4})  # the replacement
    replaced_after = time.time() - killed_at
    out = finish(job, lines, timeout=600)
    cluster.check_job(out)

    df = pd.read_parquet(storage / "mn_loss" / "metrics.parquet")
    assert df["trial_id"].nunique() == 3, df.groupby("trial_id")["status"].first()
    assert not df.duplicated(["trial_id", "seed", "step"]).any()
    done = df[df["trial_id"] == finished]
    # the trial that finished before the node was lost: all its rows, evaluated on the lost node
    assert len(done) == 2 * 4 and (done["status"] == "TERMINATED").all()
    assert set(done["node/eval"]) == {first.node_id}
    # the sweep carried on: every trial finished, later ones evaluated on the replacement node
    assert (df.groupby("trial_id")["status"].first() == "TERMINATED").all()
    assert df.groupby("trial_id").size().tolist() == [8, 8, 8]
    assert second.node_id in set(df["node/eval"])
    assert head.node_id not in set(df["node/eval"])
    print(f"\nmultinode node loss: killed {first.node_id[:12]} mid-trial, replacement {second.node_id[:12]} "
          f"joined {replaced_after:.0f}s later; node/eval per trial "
          f"{df.groupby('trial_id')['node/eval'].first().str[:12].to_dict()}")
