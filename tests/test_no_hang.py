"""Nothing the sweep waits on makes it wait for ever without a word (issue 36).

* a stale ``ray_current_cluster`` file (a killed ``ray start`` head) -> the sweep starts a local Ray of its own;
* an explicit Ray address that does not answer (``RAY_ADDRESS``, ``--address``, ``--address auto``) -> one
  line on stderr naming it and where it came from, exit 2, within the bound;
* a dataset lock left by a killed collection -> the next run takes it; one held by a live process too long
  -> one line naming the lock file and its holder, exit 2;
* a results directory that does not answer, an unreachable W&B server -> one line each.

Each Ray-free check takes a few seconds; the one local Ray start about ten.  Temp dirs are short and under
/tmp (``RAY_TMPDIR``): the machine's own /tmp/ray is never read or written.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = """\
name: nohang
algorithm: bc
dataset: generated:pendulum-medium
train: {steps: 20, batch_size: 32, eval_every: 10, eval_episodes: 1, seeds: [0]}
search: {searcher: random, num_samples: 1, scheduler: fifo}
resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.4}
"""


def closed_port() -> int:
    """A localhost port nothing listens on (bound once, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_tmpdir():
    """A short RAY_TMPDIR (Ray's socket paths must fit) whose ray/ray_current_cluster names a dead head."""
    d = tempfile.mkdtemp(prefix="nh", dir="/tmp")
    os.makedirs(os.path.join(d, "ray"))
    port = closed_port()
    with open(os.path.join(d, "ray", "ray_current_cluster"), "w") as f:
        f.write(f"127.0.0.1:{port}\n")
    yield d, port
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    env.update(extra)
    return env


def run_sweep_cli(tmp_path, args, env, timeout=120):
    spec = tmp_path / "nohang.yaml"
    spec.write_text(SPEC)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "platform.sweep", str(spec), "--storage", str(tmp_path / "r"),
                          "--no-report", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    return out, time.time() - t0


# ----------------------------------------------------------------------------- Ray: local unless told otherwise


def test_stale_cluster_file_starts_a_local_ray(ray_tmpdir, data_dir):
    """A ``ray_current_cluster`` naming a dead head (as a killed ``ray start`` leaves it): the sweep's start
    (``init_ray``, no RAY_ADDRESS) starts a local Ray of its own at once, never that address, without a word
    from Ray about failing to reach it; the instance runs tasks."""
    tmpdir, dead_port = ray_tmpdir
    code = textwrap.dedent("""
        import time
        t0 = time.time()
        import ray
        from platform.sweep import init_ray
        init_ray(num_cpus=1, verbose=False)
        print("GCS", ray.get_runtime_context().gcs_address)
        print("SUM", ray.get(ray.remote(lambda: 1 + 1).remote()))
        print("ELAPSED", time.time() - t0)
        ray.shutdown()
        """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=_env(RAY_TMPDIR=tmpdir))
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    gcs = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("GCS"))
    assert not gcs.endswith(f":{dead_port}"), gcs
    assert "SUM 2" in out.stdout
    assert "Failed to connect to GCS" not in text and "Failed to get cluster ID" not in text, text[-3000:]
    # the local instance lives in the temp dir too (nothing of this test under the machine's /tmp/ray)
    assert os.path.isdir(os.path.join(tmpdir, "ray", "session_latest"))
    print(out.stdout.strip().splitlines()[-1])


def _one_line(returncode, stdout, stderr, *expected):
    """Exit 2 and exactly one non-empty stderr line, ``error: ...`` with each of ``expected``; returns it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stdout[-2000:] + stderr[-2000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for e in expected:
        assert e in lines[0], lines[0]
    assert "Traceback" not in stdout + stderr
    return lines[0]


# Subprocess bounds include the interpreter's start and imports (minutes on 2 cores at a load average of 13);
# the sweep's own wait is timed in-process, warm, against the 30 s.
STARTUP_ALLOWANCE_S = 240


def _dead_address_case(how, tmpdir, stale_port):
    """(extra args, extra env, expected fragments) for a dead explicit address given ``how``."""
    port = closed_port()
    if how == "RAY_ADDRESS":
        return [], {"RAY_ADDRESS": f"127.0.0.1:{port}"}, [f"127.0.0.1:{port}", "$RAY_ADDRESS", "unset RAY_ADDRESS"]
    if how == "--address":
        return ["--address", f"127.0.0.1:{port}"], {}, [f"127.0.0.1:{port}", "(--address)", "leave --address out"]
    # auto: the ray_current_cluster file of Ray's temp dir, here naming a dead head
    return ["--address", "auto"], {}, [f"127.0.0.1:{stale_port}", "--address auto", "leave --address out",
                                       os.path.join(tmpdir, "ray", "ray_current_cluster")]


@pytest.mark.parametrize("how", ["RAY_ADDRESS", "--address auto"])
def test_dead_explicit_address_fails_in_one_line(how, tmp_path, ray_tmpdir, data_dir):
    """``python -m platform.sweep`` with an explicit address that does not answer: one stderr line with the
    address, where it came from and how to run locally instead; exit 2; the dataset is not even collected."""
    tmpdir, stale_port = ray_tmpdir
    args, env, expected = _dead_address_case(how, tmpdir, stale_port)
    env = _env(RAY_TMPDIR=tmpdir, DRL_DATA_DIR=str(tmp_path / "data"), **env)
    out, elapsed = run_sweep_cli(tmp_path, args, env, timeout=STARTUP_ALLOWANCE_S + 60)
    line = _one_line(out.returncode, out.stdout, out.stderr, *expected, "does not answer")
    assert elapsed < STARTUP_ALLOWANCE_S + 30, elapsed
    assert not (tmp_path / "data").exists()  # failed before collecting the dataset
    print(f"{how}: exit 2 after {elapsed:.1f} s (process start included): {line}")


@pytest.mark.parametrize("how", ["RAY_ADDRESS", "--address", "--address auto"])
def test_dead_explicit_address_gives_up_within_the_bound(how, tmp_path, ray_tmpdir, monkeypatch, capsys):
    """The sweep's own wait on a dead explicit address (``main``, imports warm): well within 30 s."""
    from platform import sweep

    tmpdir, stale_port = ray_tmpdir
    args, env, expected = _dead_address_case(how, tmpdir, stale_port)
    for var in ("RAY_ADDRESS", "RAY_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_TMPDIR", tmpdir)
    monkeypatch.setenv("DRL_DATA_DIR", str(tmp_path / "data"))
    spec = tmp_path / "nohang.yaml"
    spec.write_text(SPEC)
    common = [str(spec), "--storage", str(tmp_path / "r"), "--no-report", "--verbose"]
    assert sweep.main(common + ["--dry-run"]) == 0  # warm: the imports are not the sweep's wait
    import ray._private.services  # noqa: F401
    capsys.readouterr()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t0 = time.time()
    code = sweep.main(common + args)
    elapsed = time.time() - t0
    cap = capsys.readouterr()
    _one_line(code, cap.out, cap.err, *expected)
    assert elapsed < 30, elapsed
    print(f"{how}: gave up after {elapsed:.2f} s")


def test_silent_server_at_explicit_address_fails_in_one_line(tmp_path, data_dir):
    """A port that accepts connections but never speaks Ray's protocol (a hung GCS, another program): Ray would
    retry for ever with one warning a second; the sweep gives up after DRL_RAY_CONNECT_TIMEOUT_S with one
    line (Ray's repeated warnings held back) and exit 2."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(server.accept()[0])  # kept open, never answered
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        out, elapsed = run_sweep_cli(tmp_path, ["--address", f"127.0.0.1:{port}"],
                                     _env(DRL_RAY_CONNECT_TIMEOUT_S="8"), timeout=STARTUP_ALLOWANCE_S + 60)
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    line = _one_line(out.returncode, out.stdout, out.stderr, f"127.0.0.1:{port}", "(--address)",
                     "could not join it within 8 s", "leave --address out")
    assert elapsed < STARTUP_ALLOWANCE_S + 8, elapsed
    print(f"silent server: exit 2 after {elapsed:.1f} s (process start included): {line}")


def test_dashboard_address_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """``http://...:8265`` is what ``ray job submit --address`` takes; ray.init would end in a traceback."""
    from platform import sweep

    spec = tmp_path / "nohang.yaml"
    spec.write_text(SPEC)
    code = sweep.main([str(spec), "--storage", str(tmp_path / "r"), "--no-report", "--verbose",
                       "--address", "http://127.0.0.1:8265"])
    cap = capsys.readouterr()
    _one_line(code, cap.out, cap.err, "http://127.0.0.1:8265", "dashboard address", "ray job submit")


def test_address_resolution_is_explicit_only(monkeypatch):
    """``cluster_address``: the flag, then RAY_ADDRESS, then a job's RAY_JOB_ID; else None (a local Ray)."""
    from platform.sweep import cluster_address

    for var in ("RAY_ADDRESS", "RAY_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert cluster_address() is None
    assert cluster_address("auto") == ("auto", "--address")
    monkeypatch.setenv("RAY_JOB_ID", "02000000")
    assert cluster_address() == ("auto", "RAY_JOB_ID")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster_address() == ("10.0.0.1:6379", "RAY_ADDRESS")
    assert cluster_address("10.0.0.2:6379") == ("10.0.0.2:6379", "--address")


# ----------------------------------------------------------------------------- dataset locks


HOLDER = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from platform.datasets.generate import _file_lock
with _file_lock({out!r}):
    {body}
"""


def _holder(out: str, body: str) -> subprocess.Popen:
    """A process that takes the lock of ``out`` and runs ``body``; it prints READY (and maybe a PID) first."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=ROOT, out=out, body=body)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    return p, line


def test_stale_dataset_lock_does_not_block_the_next_run(tmp_path):
    """A collection killed while it held the lock (its ``.lock`` file left behind, naming its dead PID), even
    one whose forked helper process outlives it with the lock file open: the next run takes the lock and
    makes the dataset in seconds."""
    from platform.datasets.generate import _file_lock, generate

    out = str(tmp_path / "pendulum-medium.hdf5")
    # the killed collection forked a helper first (as a worker pool would), then died by SIGKILL
    body = ("pid = os.fork()\n"
            "    if pid == 0:\n"
            "        time.sleep(120); os._exit(0)\n"
            "    print('READY', pid, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)")
    holder, line = _holder(out, body)
    orphan = int(line.split()[1])
    try:
        assert holder.wait(timeout=30) == -signal.SIGKILL
        lock = tmp_path / ".pendulum-medium.hdf5.lock"
        assert f"pid {holder.pid} " in lock.read_text()  # left behind, naming the dead collection
        t0 = time.time()
        with _file_lock(out, timeout_s=10):  # would raise DatasetLockTimeout if the orphan held it
            elapsed = time.time() - t0
        path = generate("pendulum", "medium", out, samples=400)
    finally:
        try:
            os.kill(orphan, signal.SIGKILL)
        except ProcessLookupError:
            pass
        holder.stdout.close()
    assert elapsed < 5, elapsed
    assert os.path.exists(path)
    assert lock.read_text() == ""  # released: no holder named
    print(f"stale lock taken after {elapsed:.2f} s")


def test_live_dataset_lock_held_too_long_fails_the_sweep_in_one_line(tmp_path, monkeypatch, capsys):
    """A live process keeps the lock of the study's dataset past DRL_DATASET_LOCK_TIMEOUT_S: the sweep says once
    whom it waits for, then gives up with one line naming the lock file and the holder's PID, exit 2, before
    Ray starts."""
    from platform import sweep

    data = tmp_path / "data"
    monkeypatch.setenv("DRL_DATA_DIR", str(data))
    monkeypatch.setenv("DRL_DATASET_LOCK_TIMEOUT_S", "2")
    for var in ("RAY_ADDRESS", "RAY_JOB_ID"):
        monkeypatch.delenv(var, raising=False)

    def must_not_run(*a, **k):
        raise AssertionError("Ray must not start while the dataset is missing")

    monkeypatch.setattr(sweep, "init_ray", must_not_run)
    from platform.datasets import generated_path

    out = generated_path("pendulum-medium")
    spec = tmp_path / "nohang.yaml"
    spec.write_text(SPEC)
    args = [str(spec), "--storage", str(tmp_path / "r"), "--no-report", "--verbose"]
    assert sweep.main(args + ["--dry-run"]) == 0  # warm: the imports are not the sweep's wait
    capsys.readouterr()
    holder, _ = _holder(out, "print('READY', flush=True); time.sleep(120)")
    try:
        t0 = time.time()
        code = sweep.main(args)
        elapsed = time.time() - t0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    cap = capsys.readouterr()
    lock = os.path.join(os.path.dirname(out), ".pendulum-medium.hdf5.lock")
    assert code == 2, cap
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), cap.err
    assert lock in err[0] and f"pid {holder.pid} " in err[0] and "DRL_DATASET_LOCK_TIMEOUT_S" in err[0], err[0]
    waiting = [line for line in cap.out.splitlines() if "[data] waiting for" in line]
    assert len(waiting) == 1 and lock in waiting[0] and f"pid {holder.pid} " in waiting[0], cap.out
    assert 2 <= elapsed < 15, elapsed


# ----------------------------------------------------------------------------- storage, W&B


def test_results_directory_that_does_not_answer_fails_in_one_line(tmp_path, monkeypatch, capsys):
    """A results directory on a share whose server is gone blocks file calls for ever: the probe is bounded
    (DRL_STORAGE_TIMEOUT_S), one line, exit 2."""
    from platform import sweep

    monkeypatch.setenv("DRL_STORAGE_TIMEOUT_S", "1")
    monkeypatch.setattr(sweep, "_probe_storage", lambda spec, storage: time.sleep(20))  # a hung NFS mount

    def must_not_run(*a, **k):
        raise AssertionError("the sweep must not start on a results directory that does not answer")

    monkeypatch.setattr(sweep, "run_sweep", must_not_run)
    spec = tmp_path / "nohang.yaml"
    spec.write_text(SPEC)
    t0 = time.time()
    code = sweep.main([str(spec), "--storage", str(tmp_path / "share" / "results"), "--no-report"])
    elapsed = time.time() - t0
    cap = capsys.readouterr()
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, cap
    assert f"{spec}" in err[0] and "did not answer within 1 s" in err[0] and "share" in err[0], err[0]
    assert elapsed < 10, elapsed


def test_unreachable_wandb_server_logs_offline(tmp_path, monkeypatch, capsys):
    """W&B online with a server that does not answer: one line, and the trials log offline instead of each
    logger waiting on it."""
    from platform.spec import load_spec
    from platform.sweep import wandb_callback

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    spec_path = tmp_path / "wb.yaml"
    spec_path.write_text(SPEC + "wandb: {enabled: true}\n")
    import ray.air.integrations.wandb  # noqa: F401  (warm: the import is not the wait)

    t0 = time.time()
    callback = wandb_callback(load_spec(str(spec_path)))
    assert time.time() - t0 < 10
    assert callback.kwargs["mode"] == "offline" and os.environ["WANDB_MODE"] == "offline"
    lines = [line for line in capsys.readouterr().out.splitlines() if "W&B" in line]
    assert len(lines) == 1 and "does not answer" in lines[0] and "offline" in lines[0], lines
