"""Process helpers for tests that start Ray clusters of their own, and a loopback multi-node cluster.

Teardown kills exactly the processes a test started (the process tree below what it spawned), never
`ray stop --force`, which would stop every Ray on the machine: other test sessions and long runs
share it.
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

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RAY = os.path.join(BIN, "ray")  # the `ray` of the running interpreter's environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
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
        # from the repository root, like a user's head: a job submitted without --working-dir runs there
        self.proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env, cwd=ROOT,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.node_id: str | None = None
        self.killed = False

    def kill(self) -> None:
        """SIGKILL this node's processes: its process group and everything it spawned (workers
        have process groups of their own)."""
        self.killed = True
        kill_tree(self.proc.pid)  # collects the tree before the first kill
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # and whatever is left in its process group
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
        # The running interpreter's bin/ first on PATH: `ray` and a job's `python` must be this
        # environment's (a virtualenv that is not activated), not whatever else PATH finds.
        path = os.pathsep.join([BIN, os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
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
                                 cwd=self.temp_dir, timeout=120)
        except subprocess.TimeoutExpired:  # the GCS is not answering (yet)
            return []
        line = next((l for l in out.stdout.splitlines() if l.startswith("NODES=")), None)
        return json.loads(line[6:]) if line else []

    def _wait_for(self, node: Node, resources: dict, timeout: float = 600) -> Node:
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
        return subprocess.Popen([RAY, "job", "submit", "--address", self.dashboard, "--working-dir", ".",
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




def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (collected first: orphans are reparented to init)."""
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
