"""Ray for a sweep: join the cluster a job or an explicit address names, else start a local Ray of our own, and
check that its workers can import the project.  Nothing here waits without a bound: an explicit address is probed
in seconds and joined within ``DRL_RAY_CONNECT_TIMEOUT_S``, else one line and exit 2 (``Unavailable``).

``platform.sweep`` (the command line and the Tune wiring) calls ``init_ray`` and ``check_workers_import``.
"""
from __future__ import annotations

import logging
import math
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the Ray working_dir upload leaves out: VCS data, caches, generated results and reports.
WORKING_DIR_EXCLUDES = [".git", "**/__pycache__", "results", "reports", ".pytest_cache", "*.hdf5", ".venv",
                        "wandb", ".whl", ".gl"]
# the driver's variables a local Ray's workers get (DRL_ALGORITHMS: algorithms.register's algorithms;
# DRL_DATASET_SOURCES: platform.datasets.register_source's sources)
PASS_ENV = ("DRL_DATA_DIR", "DRL_ALGORITHMS", "DRL_DATASET_SOURCES", "WANDB_MODE", "PUSHT_ZARR",
            "CUBLAS_WORKSPACE_CONFIG")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Unavailable(RuntimeError):
    """Something the sweep needs did not answer within its bound (an explicit Ray address, a dataset lock held
    too long): ``main`` prints the one-line message and exits 2."""


def cluster_address(address: str | None = None) -> tuple[str, str] | None:
    """``(address, where it came from)`` of the Ray cluster to join, or None: start a local Ray of our own.

    Joining is explicit only: ``address`` (the ``--address`` flag), else ``$RAY_ADDRESS`` (a submitted job's
    driver has it), else ``auto`` inside a job that has only ``$RAY_JOB_ID``.  A ``ray_current_cluster`` file
    or a ``ray start`` head elsewhere on the machine is never joined by itself (a dead one made ``ray.init()``
    wait forever)."""
    if address:
        return address, "--address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if os.environ.get("RAY_JOB_ID"):
        return "auto", "RAY_JOB_ID"
    return None


def on_cluster(address: str | None = None) -> bool:
    """Inside a submitted job, or pointed at a cluster: Ray is there already (not a local instance of ours)."""
    return cluster_address(address) is not None


def _in_submitted_job() -> bool:
    """The driver of a ``ray job submit``: the cluster that started this process answers."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


PROBE_TIMEOUT_S = 5.0  # a TCP connect to an explicit Ray address


def _connect_timeout_s() -> float:
    """Bound on ray.init joining an explicit address that accepted the TCP probe ($DRL_RAY_CONNECT_TIMEOUT_S)."""
    return float(os.environ.get("DRL_RAY_CONNECT_TIMEOUT_S", 30))


def _run_locally(source: str) -> str:
    """How to run the sweep on a local Ray instead of the address from ``source``."""
    return {"--address": "leave --address out",
            "RAY_ADDRESS": "unset RAY_ADDRESS (`env -u RAY_ADDRESS python -m platform.sweep ...`)",
            }.get(source, "unset RAY_JOB_ID")


def _unreachable(target: str, origin: str, source: str, problem: str) -> Unavailable:
    return Unavailable(f"Ray cluster at {target} ({origin}) {problem}: start it, fix "
                       f"{'--address' if source == '--address' else source}, or {_run_locally(source)} to run on a "
                       f"local Ray of the sweep's own")


def check_ray_address(address: str, source: str) -> tuple[str, str]:
    """Probe an explicit Ray address with a bounded TCP connect before ``ray.init`` (which would retry a dead
    GCS for ever, printing only Ray's own warnings); return the ``host:port`` probed and where the address came
    from (for messages).  ``auto`` is what Ray would pick: the ``ray_current_cluster`` file of its temp dir,
    else a GCS process on this machine.  Raises ``Unavailable`` with one line: the address, where it came
    from, how to run locally instead."""
    import socket
    from urllib.parse import urlsplit

    origin = "--address" if source == "--address" else f"${source}"
    target = address
    if address == "auto":
        from ray._common.utils import get_ray_address_file

        path = get_ray_address_file(None)
        try:
            with open(path) as f:
                target = f.read().strip()
            origin = f"{origin} auto, read from {path}" if source == "--address" else f"{origin}: auto, from {path}"
        except OSError:
            from ray._private.services import find_gcs_addresses

            live = sorted(find_gcs_addresses())
            if not live:
                raise Unavailable(f"{'--address' if source == '--address' else source} auto finds no running Ray "
                                  f"cluster ({path} does not exist and no GCS process runs on this machine): start "
                                  f"one (`ray start --head`), or {_run_locally(source)} to run on a local Ray of "
                                  f"the sweep's own") from None
            target = live[0]
            origin = f"{origin} auto, a GCS process on this machine"
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in ("http", "https"):
        raise Unavailable(f"Ray address {target} ({origin}) is a dashboard address (what `ray job submit --address` "
                          f"takes), not a cluster to join: give the head's GCS host:port (port 6379 unless changed), "
                          f"or submit the sweep with `ray job submit --address {target} -- python -m platform.sweep "
                          f"...`")
    parts = urlsplit(target if scheme else f"//{target}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise Unavailable(f"Ray address {target!r} ({origin}) is not host:port (e.g. 10.0.0.1:6379, or auto): fix "
                          f"it, or {_run_locally(source)} to run on a local Ray of the sweep's own")
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise _unreachable(target, origin, source, f"does not answer ({why} within {PROBE_TIMEOUT_S:g} s)") from None
    return f"{host}:{port}", origin


def _bounded(call, message: str, timeout_s: float):
    """Run ``call()`` (a ray.init joining a cluster); if it has not returned after ``timeout_s``, print ``message``
    and Ray's last warning in one line on stderr and exit 2: a GCS that accepts connections but does not
    answer makes Ray retry for ever, with one warning a second.  Meanwhile whatever goes to file descriptor 2
    (Ray's C++ warnings) is held back; after a successful join it is replayed, repeated lines collapsed."""
    import tempfile
    import threading

    sys.stderr.flush()
    held = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(held.fileno(), 2)
    gate, done = threading.Lock(), []

    def give_up():
        with gate:
            if done:
                return
            done.append(True)
            os.dup2(saved, 2)
            last = _ray_lines(held)[-1:]
            sys.stderr.write(f"error: {message}{f' (Ray: {last[0][:200]})' if last else ''}\n")
            sys.stderr.flush()
            os._exit(2)

    timer = threading.Timer(timeout_s, give_up)
    timer.daemon = True
    timer.start()
    try:
        return call()
    finally:
        timer.cancel()
        with gate:
            done.append(True)
            sys.stderr.flush()
            os.dup2(saved, 2)
        os.close(saved)
        lines, before = [], None
        for line in _ray_lines(held, raw=True):
            key = line.split("] ", 1)[-1]
            if key == before:
                lines[-1][1] += 1
            else:
                lines.append([line, 0])
            before = key
        for line, repeats in lines:
            sys.stderr.write(line + (f" (repeated {repeats} more times)" if repeats else "") + "\n")
        sys.stderr.flush()
        held.close()


def _ray_lines(f, raw: bool = False) -> list[str]:
    """The non-empty lines written to ``f`` so far; unless ``raw``, without Ray's ``[time W pid] file.cc:N:``."""
    import re

    f.seek(0)
    lines = [line.rstrip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    return lines if raw else [re.sub(r"^\[[^]]*\] \S+:\d+: ", "", line) for line in lines]


LOCAL_START_ATTEMPTS = 3  # tries of a local ray.init that timed out during node start-up


def init_ray(num_cpus: int | None = None, trial_cpus: float = 0.0, verbose: bool = True,
             address: str | None = None) -> None:
    """Connect to the cluster of a ``ray job submit`` or an explicit address (``address``, else ``$RAY_ADDRESS``;
    see ``cluster_address``), else start a local Ray of our own (``address="local"``) with the repo as working_dir.

    An explicit address is probed first (``check_ray_address``) and joined within ``_connect_timeout_s()``;
    one that does not answer ends the process with one line and exit 2 (``Unavailable``).

    A local instance gets at least enough logical CPUs for one whole trial (``trial_cpus``: Train workers,
    evaluation actors and the trial's Tune function): a worker on 1 CPU plus two 0.5-CPU actors plus
    0.01 for the Tune function does not fit 2 CPUs, and the last actor would wait forever.

    Workers import ``platform.*`` only if the project is on their path from the start: a job's
    ``--working-dir .`` does that on a cluster, ``runtime_env={"working_dir": repo}`` locally.
    ``verbose=False``: workers' output (Train's result dumps, Ray's worker warnings) stays in Ray's log
    files instead of the console.
    """
    import ray

    if ray.is_initialized():
        return
    env_vars = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    level = logging.INFO if verbose else logging.WARNING  # not verbose: Ray's INFO lines stay in its log files
    target = cluster_address(address)
    if target is not None:
        # A submitted job (or an explicit cluster address).  With `--working-dir .` the job's runtime env
        # already carries the project to every worker.  Without it (the card's plain `ray job submit --
        # python -m platform.sweep ...`) the workers would import the standard library's `platform`:
        # give them this checkout as their working_dir (Ray merges it with the job's env_vars).
        addr, source = target
        probed, origin = check_ray_address(addr, source)
        if addr == "auto" and source == "--address" and os.environ.get("RAY_ADDRESS"):
            addr = probed  # ray.init would take $RAY_ADDRESS over "auto"
        join = lambda **kw: ray.init(address=addr, log_to_driver=verbose, logging_level=level, **kw)  # noqa: E731
        if _in_submitted_job():  # the cluster that started this driver answers
            join()
        else:
            timeout_s = _connect_timeout_s()
            _bounded(join, str(_unreachable(probed, origin, source, f"accepts connections but Ray could not join it "
                                                                    f"within {timeout_s:g} s "
                                                                    f"(DRL_RAY_CONNECT_TIMEOUT_S)")), timeout_s)
        if not _carries_project(ray.get_runtime_context().runtime_env):
            ray.shutdown()
            join(runtime_env={"working_dir": REPO_ROOT, "excludes": WORKING_DIR_EXCLUDES})
            print(f"[sweep] the job's runtime env has no working_dir: shipping {REPO_ROOT} to the trials "
                  f"(as `ray job submit --working-dir .` would)", flush=True)
    else:
        # Ray Train's PlacementGroupCleaner polls the state API (served by the dashboard) to see whether a
        # trial's controller is alive, and finds "the" cluster by itself: with another Ray instance on this
        # machine (a second sweep, a test) it may ask that one, conclude the controller is dead and remove
        # the trial's placement group, killing its workers.  Pin it to this instance: the processes that
        # ray.init starts inherit this environment.
        port = _free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        if num_cpus is None and trial_cpus > (os.cpu_count() or 1):
            num_cpus = math.ceil(trial_cpus)
            print(f"[sweep] one trial needs {trial_cpus:g} CPUs, this machine has {os.cpu_count()}: starting "
                  f"Ray with {num_cpus} logical CPUs (slightly oversubscribed)", flush=True)
        for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
            try:
                # address="local": a Ray of our own, never the cluster a (stale) ray_current_cluster file names
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
                         log_to_driver=verbose, logging_level=level,
                         runtime_env={"working_dir": REPO_ROOT, "excludes": WORKING_DIR_EXCLUDES,
                                      "env_vars": env_vars})
                return
            except Exception as e:
                # Ray waits a fixed 30 s for its raylet to register; on an overloaded machine it may not, and the
                # sweep would die before it started.  Tear down what was started and try again.  The same when
                # the dashboard port picked above was taken in the meantime (another process, or one of this
                # Ray's own components): with a new port.
                taken = "already occupied" in str(e)
                if not (taken or "timed out during startup" in str(e)) or attempt == LOCAL_START_ATTEMPTS:
                    raise
                if taken:
                    print(f"[sweep] port {port} for Ray's dashboard was taken meanwhile: retrying with another "
                          f"({attempt}/{LOCAL_START_ATTEMPTS - 1})", flush=True)
                    port = _free_port()
                    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
                else:
                    print(f"[sweep] Ray's local node did not start within Ray's 30 s (busy machine?): retrying "
                          f"({attempt}/{LOCAL_START_ATTEMPTS - 1})", flush=True)
                ray.shutdown()


def _carries_project(runtime_env: dict) -> bool:
    """Whether a runtime env puts this project on the workers' path (a working_dir or py_modules)."""
    return bool(runtime_env.get("working_dir") or runtime_env.get("py_modules"))


class ProjectImportError(RuntimeError):
    """The cluster's workers cannot import the project: no trial could run."""


def check_workers_import(algorithm: str | list[str], timeout_s: float = 300.0) -> None:
    """Import the project and the study's algorithm in a Ray worker before any trial starts.

    A trial that cannot import ``platform.*`` would fail only after its Train run started; this fails the
    sweep in seconds with one line instead (and the fix: ``--working-dir .``).
    """
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def probe(names: list[str]) -> str:
        import importlib

        try:
            importlib.import_module("platform.training")
            import algorithms

            for name in names:
                algorithms.get(name)
        except Exception as e:  # noqa: BLE001 - reported as one line
            return f"{type(e).__name__}: {e}"
        return ""

    try:
        err = ray.get(probe.remote([algorithm] if isinstance(algorithm, str) else list(algorithm)), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ProjectImportError(f"a Ray worker did not start within {timeout_s:.0f} s to import the project "
                                 f"(is the cluster up and has it room for a 0-CPU task?)") from None
    except ray.exceptions.RayError as e:  # e.g. the runtime env (working_dir upload) could not be set up
        raise ProjectImportError(f"a Ray worker could not be set up: {str(e).strip().splitlines()[-1]}") from None
    if err:
        raise ProjectImportError(f"Ray workers cannot import the project ({err}); submit the job with "
                                 f"`ray job submit --working-dir . -- python -m platform.sweep SPEC`")
