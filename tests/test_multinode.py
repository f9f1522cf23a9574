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
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Node:
    """One `ray start --block` process (a raylet and its helpers) in a session of its own."""

    def __init__(self, args: list[str], env: dict, log: str):
        self.log = log
        self.proc = subprocess.Popen(["ray", "start", "--block", "--disable-usage-stats", *args], env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.node_id: str | None = None
        self.killed = False

    def kill(self) -> None:
        """SIGKILL this node's processes: its process group and everything it spawned (workers
        have process groups of their own)."""
        self.killed = True
        pids = _descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


class LocalCluster:
    """Head + worker nodes on 127.0.0.1 with token auth and their own temp dir and ports."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="mn", dir="/tmp")  # short: Ray's socket paths must fit
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        # RAY_ADDRESS reaches every Ray process of these nodes: Ray-internal helpers that find "the"
        # cluster by themselves (Train's PlacementGroupCleaner, through the state API) fail with
        # "Found multiple active Ray instances" when other Ray clusters run on this machine, and a
        # dead Train controller's placement group would then never be removed.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": self.address}
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[Node] = []

    def _log(self, name: str) -> str:
        return os.path.join(self.temp_dir, f"{name}.log")

    def start_head(self, num_cpus: int) -> Node:
        node = Node(["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--num-cpus={num_cpus}",
                     f"--temp-dir={self.temp_dir}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                     f"--dashboard-agent-listen-port={free_port()}"], self.env, self._log("head"))
        self.nodes.append(node)
        return self._wait_for(node, {"node:__internal_head__": 1})

    def add_node(self, name: str, num_cpus: int, resources: dict) -> Node:
        # A temp dir of its own, as a separate machine would have: nodes sharing one would share the
        # runtime_env directories, and one node's cleanup would delete the job's working_dir under the
        # driver on the other.
        temp_dir = os.path.join(self.temp_dir, name)
        os.makedirs(temp_dir)
        node = Node([f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                     f"--resources={json.dumps(resources)}", f"--dashboard-agent-listen-port={free_port()}",
                     f"--temp-dir={temp_dir}"], self.env, self._log(name))
        self.nodes.append(node)
        return self._wait_for(node, resources)

    def alive_nodes(self) -> list[dict]:
        """[{node_id, resources}] of the alive nodes, asked through a short-lived driver."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
                "print('NODES=' + json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                                 cwd=self.temp_dir, timeout=60)
        except subprocess.TimeoutExpired:  # the GCS is not answering (yet)
            return []
        line = next((l for l in out.stdout.splitlines() if l.startswith("NODES=")), None)
        return json.loads(line[6:]) if line else []

    def _wait_for(self, node: Node, resources: dict, timeout: float = 240) -> Node:
        known = {n.node_id for n in self.nodes if n.node_id}
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert node.proc.poll() is None, open(node.log).read()[-3000:]
            for n in self.alive_nodes():
                if n["id"] not in known and all(n["resources"].get(k, 0) == v for k, v in resources.items()):
                    node.node_id = n["id"]
                    return node
            time.sleep(2)
        raise TimeoutError(f"node with {resources} did not join: {open(node.log).read()[-3000:]}")

    def submit(self, spec: str, storage: str, data_dir: str) -> subprocess.Popen:
        runtime_env = {"env_vars": {"DRL_DATA_DIR": data_dir}, "excludes": [".git", "results", "reports"]}
        return subprocess.Popen(["ray", "job", "submit", "--address", self.dashboard, "--working-dir", ".",
                                 "--runtime-env-json", json.dumps(runtime_env), "--",
                                 "python", "-m", "platform.sweep", spec, "--storage", storage, "--no-report"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env, start_new_session=True)

    def check_job(self, out: str) -> None:
        """Fail with the job's output; say so when a node died that this test did not kill."""
        if "succeeded" in out:
            return
        lost = [os.path.basename(n.log) for n in self.nodes if n.proc.poll() is not None and not n.killed]
        why = (f"nodes {lost} stopped from outside the test (a `ray stop` elsewhere on this machine?)\n"
               if lost else "")
        pytest.fail(why + out[-4000:])

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            try:
                node.kill()
            except Exception:  # keep tearing down the others
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
