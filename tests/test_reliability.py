"""Reliability: every test injects a fault and checks the outcome on values.

* a Ray Train worker SIGKILLed mid-trial -> restarts from its last checkpoint, no gap or duplicate steps;
* a rollout actor SIGKILLed mid-evaluation -> the task is retried on the restarted actor, same score;
* a crash in the middle of a checkpoint / Parquet write -> the previous version stays readable (HDF5: test_datasets);
* bad input (YAML, keys, ranges, datasets, env ids, storage) -> exit 2, one line naming the file and the
  problem, nothing started, the results directory untouched;
* the spec parser, fuzzed with hypothesis, raises only ``SpecError``.

The two Ray-heavy tests (worker kill, rollout actor kill) are ``slow`` (run them with ``-m slow``) and use tiny
budgets (generated:pendulum-medium, 100 steps, tiny networks).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.raycluster import descendants, kill_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- helpers


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tree_state(path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (directories as "dir")."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), path)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ----------------------------------------------------------------------------- rollout actor killed


def _tiny_dql():
    """A real (randomly initialized, seeded) Diffusion-QL policy for Pendulum: stochastic acting."""
    import torch

    import algorithms

    config = {"hidden_dim": 16, "n_timesteps": 3, "n_action_samples": 10}
    env_spec = algorithms.EnvSpec(obs_dim=3, act_dim=1, act_low=(-2.0,), act_high=(2.0,))
    torch.manual_seed(0)
    algo = algorithms.build("dql", config, env_spec)
    return algo, algo.cfg, env_spec


@pytest.mark.slow  # a Ray start plus four evaluations: over the default run's budget on 2 busy cores
def test_rollout_actor_killed_mid_evaluation_is_retried_with_the_same_score(ray_local):
    """SIGKILL the rollout actor while it runs an evaluation task: Ray restarts the actor (``max_restarts``),
    retries the task (``max_task_retries``), and the score equals the undisturbed one (fixed episode seeds and
    per-batch seeding of the policy's sampling)."""
    import dataclasses

    from ray.util.state import get_actor, list_tasks

    from platform.evaluation import EvalPool

    ray = ray_local
    algo, config, env_spec = _tiny_dql()
    pool = EvalPool("Pendulum-v1", "dql", dataclasses.asdict(config), env_spec.to_dict(), n_actors=1,
                    envs_per_actor=2, num_cpus=0.5, ref_min=-1500.0, ref_max=0.0)
    try:
        state = algo.policy_state_dict()
        episodes, first_seed = 16, 100_000  # 8 batches of 2 episodes x 200 steps: long enough to be killed
        undisturbed = pool.evaluate([state], episodes, first_seed)[0]
        # The actor's RNG has moved on since; the same evaluation must still give the same numbers.
        again = pool.evaluate([state], episodes, first_seed)[0]
        scores = lambda d: {k: v for k, v in d.items() if k != "eval/act_ms"}  # noqa: E731  (act_ms: wall time)
        assert scores(again) == scores(undisturbed)

        actor = pool.actors[0]
        actor_id = actor._actor_id.hex()
        pid_before = get_actor(actor_id).pid
        # Same call as EvalPool.evaluate makes, split so that the actor can be killed while it runs.
        from platform.checkpoint import to_cpu
        from platform.evaluation import summarize

        ref = ray.put(to_cpu(state))
        seeds = list(range(first_seed, first_seed + episodes))
        future = actor.evaluate.remote(ref, seeds)
        deadline = time.time() + 60
        while not list_tasks(filters=[("actor_id", "=", actor_id), ("func_or_class_name", "=", "RolloutActor.evaluate"),
                                      ("state", "=", "RUNNING")]):
            assert time.time() < deadline, "the evaluation task never started"
            time.sleep(0.1)
        ready, _ = ray.wait([future], timeout=0)
        assert not ready, "the evaluation finished before the kill: make it longer"
        os.kill(pid_before, signal.SIGKILL)
        episodes_after = ray.get(future, timeout=300)
        disturbed = summarize(sorted(episodes_after, key=lambda e: e["seed"]), "Pendulum-v1", -1500.0, 0.0)

        info = get_actor(actor_id)
        assert info.pid != pid_before and info.state == "ALIVE"  # restarted (max_restarts)
        attempts = [t.attempt_number for t in list_tasks(
            filters=[("actor_id", "=", actor_id), ("func_or_class_name", "=", "RolloutActor.evaluate")], limit=1000)]
        assert max(attempts) >= 1, attempts  # the killed task was retried (max_task_retries)
        assert scores(disturbed) == scores(undisturbed)
        assert undisturbed["eval/episodes"] == episodes and np.isfinite(undisturbed["eval/normalized_score"])
    finally:
        pool.shutdown()


# ----------------------------------------------------------------------------- bad input: exit 2, nothing started

GOOD_SPEC = """\
name: rel
algorithm: bc
dataset: {dataset}
train: {{steps: 40, batch_size: 32, eval_every: 20, eval_episodes: 2, seeds: [0]}}
search: {{searcher: random, num_samples: 1, scheduler: fifo}}
resources: {{workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}}
"""


def _h5(path, drop=None, **override):
    """A small valid D4RL-format file for Pendulum, with one array dropped or replaced."""
    import h5py

    n = 50
    arrays = {"observations": np.zeros((n, 3), np.float32), "actions": np.zeros((n, 1), np.float32),
              "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
    arrays.update(override)
    arrays.pop(drop, None)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        f.attrs["env_id"] = "Pendulum-v1"
    return str(path)


def _nan_obs():
    a = np.zeros((50, 3), np.float32)
    a[17, 2] = np.nan
    return a


# (case id, how to break the input, what the one error line must say)
BAD_INPUTS = [
    ("malformed_yaml", lambda t: ("spec", GOOD_SPEC.format(dataset="x") + "train: [unclosed\n"), r"malformed YAML"),
    ("misspelled_key", lambda t: ("spec", GOOD_SPEC.format(dataset="generated:pendulum-medium")
                                  .replace("eval_every", "eval_evry")), r"train\.eval_evry: unknown key \(did you mean 'eval_every'\?\)"),
    ("out_of_range", lambda t: ("spec", GOOD_SPEC.format(dataset="generated:pendulum-medium")
                                .replace("steps: 40", "steps: -5")), r"train\.steps: must be >= 1, got -5"),
    ("bad_distribution", lambda t: ("spec", GOOD_SPEC.format(dataset="generated:pendulum-medium")
                                    .replace("scheduler: fifo", "scheduler: fifo, space: {lr: {loguniform: [0, 1]}}")),
     r"search\.space\.lr\.loguniform: loguniform needs low > 0"),
    ("hdf5_missing_array", lambda t: ("dataset", "d4rl:" + _h5(t / "pend.hdf5", drop="rewards")),
     r"dataset: pend\.hdf5: missing array 'rewards'"),
    ("hdf5_misshaped", lambda t: ("dataset", "d4rl:" + _h5(t / "pend.hdf5", actions=np.zeros((49, 1), np.float32))),
     r"dataset: pend\.hdf5: 'actions' has 49 rows, 'observations' has 50"),
    ("hdf5_3d_array", lambda t: ("dataset", "d4rl:" + _h5(t / "pend.hdf5", actions=np.zeros((50, 1, 2), np.float32))),
     r"dataset: pend\.hdf5: 'actions' must be 2-D \(N, dim\), has shape \(50, 1, 2\)"),
    ("hdf5_nan", lambda t: ("dataset", "d4rl:" + _h5(t / "pend.hdf5", observations=_nan_obs())),
     r"dataset: pend\.hdf5: 'observations' has NaN or inf in 1 row\(s\), first at row 17"),
    ("hdf5_not_hdf5", lambda t: ((t / "pend.hdf5").write_text("oops"), ("dataset", f"d4rl:{t}/pend.hdf5"))[1],
     r"dataset: pend\.hdf5: not a readable HDF5 file"),
    ("pusht_missing_zarr", lambda t: ("dataset", f"pusht:{t}/nowhere/pusht_cchi_v7_replay.zarr"),
     r"dataset: .*no Push-T zarr store at .*nowhere/pusht_cchi_v7_replay\.zarr"),
    ("pusht_not_a_store", lambda t: ((t / "empty.zarr").mkdir(), ("dataset", f"pusht:{t}/empty.zarr"))[1],
     r"dataset: pusht: no zarr store at"),
    ("unknown_env", lambda t: ("spec", GOOD_SPEC.format(dataset="generated:pendulum-medium") + "env: Pendulum-v9\n"),
     r"env: unknown environment 'Pendulum-v9' \(did you mean 'Pendulum-v1'\?\)"),
    ("storage_under_a_file", lambda t: ((t / "afile").write_text("x"), ("storage", str(t / "afile" / "results")))[1],
     r"storage: results directory .*afile/results cannot be created: .*afile is a file"),
    ("storage_read_only_fs", lambda t: ("storage", "/proc/drl-results"),  # fails for root too, unlike chmod
     r"storage: results directory /proc/drl-results is not writable"),
    ("storage_full", lambda t: ("env", {"DRL_MIN_FREE_MB": str(10**12)}), r"storage: only \d+ MiB free at .*need"),
]


@pytest.mark.parametrize("case,make,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_before_anything_starts(case, make, expected, tmp_path, monkeypatch, capsys,
                                                               data_dir):
    """``python -m platform.sweep`` (its ``main``) on a broken input: exit code 2, one line naming the file and
    the problem, Ray never initialized, no trial run, and a results directory with earlier results untouched."""
    import platform.sweep as sweep

    def must_not_run(*a, **k):
        raise AssertionError("a bad input must be rejected before Ray starts")

    monkeypatch.setattr(sweep, "init_ray", must_not_run)
    monkeypatch.setattr(sweep, "run_sweep", must_not_run)
    storage = tmp_path / "results"
    (storage / "rel").mkdir(parents=True)
    pd.DataFrame({"sweep": ["rel"], "step": [20], "eval/normalized_score": [12.5]}).to_parquet(
        storage / "rel" / "metrics.parquet")
    before = _tree_state(storage)
    spec_text = GOOD_SPEC.format(dataset="generated:pendulum-medium")
    args = []
    what, value = make(tmp_path)
    if what == "spec":
        spec_text = value
    elif what == "dataset":
        spec_text = GOOD_SPEC.format(dataset=value)
    elif what == "storage":
        args = ["--storage", value]
    elif what == "env":
        for k, v in value.items():
            monkeypatch.setenv(k, v)
    spec_path = tmp_path / "study.yaml"
    spec_path.write_text(spec_text)
    code = sweep.main([str(spec_path), "--no-report", *(args or ["--storage", str(storage)])])
    out = capsys.readouterr()
    assert code == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(f"error: {spec_path}"), lines[0]
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in out.err + out.out
    assert _tree_state(storage) == before


def test_bad_input_exit_code_through_the_real_cli(tmp_path, data_dir):
    """The same check through a real ``python -m platform.sweep`` process: exit status 2, one stderr line."""
    spec = tmp_path / "study.yaml"
    spec.write_text(GOOD_SPEC.format(dataset="d4rl:" + _h5(tmp_path / "pend.hdf5", observations=_nan_obs())))
    storage = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "platform.sweep", str(spec), "--storage", str(storage)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"error: {spec}: dataset: pend.hdf5: 'observations' has NaN or inf in 1 row(s), first at row 17"]
    assert not storage.exists() and "[sweep]" not in out.stdout


# ----------------------------------------------------------------------------- atomic writes


def _tmp_leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_checkpoint_write_crash_leaves_previous_checkpoint(tmp_path, monkeypatch):
    """torch.save dies half-way (disk full): the previous checkpoint still loads, bit for bit; no temp file left."""
    import errno

    import torch

    from platform.checkpoint import load_state, save_state

    path = str(tmp_path / "seed_0.pt")
    save_state(path, {"algo": {"w": torch.full((256, 256), 1.0)}, "step": 20})
    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.truncate(size // 2)  # what is on disk when the write is cut off
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        save_state(path, {"algo": {"w": torch.full((256, 256), 2.0)}, "step": 40})
    state = load_state(path)
    assert state["step"] == 20 and torch.equal(state["algo"]["w"], torch.full((256, 256), 1.0))
    assert _tmp_leftovers(tmp_path) == []


def test_parquet_write_crash_leaves_previous_results(tmp_path, monkeypatch):
    """The Parquet writer dies after a partial file: metrics.parquet still reads, with the old rows only."""
    from platform.results import read_results, write_frame

    path = str(tmp_path / "metrics.parquet")
    old = pd.DataFrame({"sweep": "s", "trial_id": "a", "seed": [0, 0], "step": [20, 40],
                        "eval/normalized_score": [10.0, 20.0]})
    write_frame(old, path)
    expected = read_results(path)
    real = pd.DataFrame.to_parquet

    def dies_half_way(self, target, *a, **k):
        real(self, target, *a, **k)
        with open(target, "r+b") as fh:
            fh.truncate(os.path.getsize(target) // 2)
        raise OSError("simulated crash in the middle of the Parquet write")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dies_half_way)
    new = pd.DataFrame({"sweep": "s", "trial_id": "a", "seed": [0], "step": [60], "eval/normalized_score": [30.0]})
    with pytest.raises(OSError, match="simulated crash"):
        write_frame(new, path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_results(path), expected)
    assert _tmp_leftovers(tmp_path) == []
    write_frame(new, path)  # and the next write works and merges
    assert read_results(path)["step"].tolist() == [20, 40, 60]


WRITER = """
import os, sys, numpy as np, pandas as pd, torch
from platform.checkpoint import save_state, atomic_write
out = sys.argv[1]
i = 0
while True:
    i += 1
    save_state(os.path.join(out, "ckpt.pt"), {"w": torch.full((2_000_000,), float(i)), "step": i})
    df = pd.DataFrame({"step": np.full(300_000, i), "x": np.random.rand(300_000)})
    atomic_write(os.path.join(out, "metrics.parquet"), lambda tmp: df.to_parquet(tmp, index=False))
    print(i, flush=True)
"""


def test_sigkill_during_big_writes_leaves_readable_files(tmp_path):
    """A process SIGKILLed while it rewrites an 8 MB checkpoint and a 300k-row Parquet file in a loop: both
    files are always a complete earlier version (never torn), whenever the kill lands."""
    import torch

    from platform.checkpoint import load_state

    mid_write = 0
    for attempt in range(5):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert int(proc.stdout.readline()) == 1, "the writer never finished a first round"
            proc.stdout.readline()  # a second round, then kill as soon as a write is seen in progress
            # (a random sleep missed every write on a machine with a fast disk: poll for the temp file instead)
            deadline = time.monotonic() + 20
            while not _tmp_leftovers(out) and time.monotonic() < deadline:
                time.sleep(0.0005)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        state = load_state(str(out / "ckpt.pt"))
        assert torch.equal(state["w"], torch.full((2_000_000,), float(state["step"])))
        df = pd.read_parquet(out / "metrics.parquet")
        assert len(df) == 300_000 and df["step"].nunique() == 1 and df["step"].iloc[0] >= state["step"] - 1
        mid_write += bool(_tmp_leftovers(out))  # a temp file left behind: the kill hit a write in progress
        if mid_write:
            break
    assert mid_write, "no kill landed in the middle of a write in 5 attempts"


# ----------------------------------------------------------------------------- spec parser fuzzing


def _yamlish():
    from hypothesis import strategies as st

    # allow_subnormal=False: the train loop (and the benchmark suite, run earlier in the same pytest process)
    # turn on torch.set_flush_denormal, and hypothesis then refuses to build a float strategy with subnormals.
    scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_subnormal=False)
               | st.text(max_size=12) | st.sampled_from(["bc", "dql", "grid", "uniform", "loguniform", "choice",
                                                         "optuna", "asha", "max", "generated:pendulum-medium"]))
    keys = st.text(max_size=10) | st.sampled_from(
        ["name", "algorithm", "dataset", "env", "config", "train", "search", "resources", "failure", "wandb",
         "storage", "steps", "seeds", "space", "lr", "eta", "grid", "num_samples", "eval_actors", "workers"])
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
                        max_leaves=12)


BASE = {"name": "fz", "algorithm": "bc", "dataset": "generated:pendulum-medium",
        "train": {"steps": 10, "batch_size": 8, "eval_every": 5, "eval_episodes": 1, "seeds": [0]},
        "search": {"searcher": "random", "num_samples": 1, "space": {"lr": {"loguniform": [0.0001, 0.01]}}},
        "resources": {"workers": 1, "eval_actors": 1}}


def test_fuzz_spec_mutations_raise_only_spec_error():
    """A valid study with random values put at random (known and unknown) keys: parse or SpecError, nothing else."""
    import copy

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from platform.spec import SpecError, parse_spec

    paths = [(), ("train",), ("search",), ("search", "space"), ("search", "space", "lr"), ("resources",),
             ("config",), ("failure",), ("wandb",)]
    seen = {"ok": 0, "error": 0}

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(paths), _yamlish().filter(lambda v: True), st.integers(0, 30)),
                    min_size=0, max_size=3), st.data())
    def check(mutations, data):
        spec = copy.deepcopy(BASE)
        for path, value, which in mutations:
            node = spec
            for p in path:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
            keys = sorted(node) + ["name", "steps", "seeds", "searcher", "space", "lr", "workers", "grid", "eta"]
            node[keys[which % len(keys)] if which < 25 else data.draw(st.text(max_size=6))] = value
        try:
            parse_spec(spec, "fuzz.yaml")
            seen["ok"] += 1
        except SpecError as e:
            assert str(e).startswith("fuzz.yaml") and "\n" not in str(e)
            seen["error"] += 1
            seen.setdefault("keys", set()).add(e.key.split(".")[0])

    check()
    # the fuzzer reached both outcomes, and errors from several sections
    assert seen["error"] > 40 and seen["ok"] > 0 and len(seen["keys"]) >= 5, seen


def test_fuzz_yaml_text_raises_only_spec_error(tmp_path):
    """Random text, random YAML documents and corrupted copies of a valid file, through ``load_spec``."""
    import yaml
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from platform.spec import SpecError, load_spec

    good = yaml.safe_dump(BASE, sort_keys=False)
    path = str(tmp_path / "fuzz.yaml")

    def corrupt(args):
        pos, junk = args
        pos %= len(good)
        return good[:pos] + junk + good[pos + len(junk) // 2:]

    texts = (st.text(max_size=200) | _yamlish().map(lambda v: yaml.safe_dump(v))
             | st.tuples(st.integers(0, 10**6), st.text(alphabet=":{}[]-#&*!|>'\"%@` \n\t,?abc01", max_size=8))
             .map(corrupt))

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(texts)
    def check(text):
        with open(path, "w") as f:
            f.write(text)
        try:
            load_spec(path)
        except SpecError as e:
            assert str(e).startswith(path) and "\n" not in str(e), str(e)

    check()


# ----------------------------------------------------------------------------- Ray Train worker killed

WORKER_KILL_SPEC = """\
name: wkill
algorithm: bc
dataset: generated:pendulum-medium
config: {hidden_dim: 32}
train: {steps: 100, batch_size: 32, eval_every: 20, eval_episodes: 2, seeds: [0]}
search: {searcher: random, num_samples: 1, scheduler: fifo}
resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}
failure: {max_failures: 2}
"""


@pytest.mark.slow
def test_train_worker_killed_mid_trial_resumes_from_checkpoint(tmp_path, data_dir):
    """SIGKILL the trial's Ray Train worker right after its first checkpointed evaluation: Train restarts it
    (``failure.max_failures``) from the last checkpoint; the trial finishes with every evaluation step exactly
    once in the Parquet history (no gap, no duplicate) and ends at the budget's last step."""
    spec = tmp_path / "wkill.yaml"
    spec.write_text(WORKER_KILL_SPEC)
    storage = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "platform.sweep", str(spec), "--storage", str(storage),
                             "--no-report"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "DRL_DATA_DIR": data_dir})
    lines, killed = [], None
    try:
        deadline = time.time() + 900
        for line in proc.stdout:
            lines.append(line)
            assert time.time() < deadline, "".join(lines[-40:])
            if killed is None and " step 20: eval/normalized_score=" in line:  # checkpoint 20 is registered
                workers = [p for p in descendants(proc.pid) if "RayTrainWorker" in _cmdline(p)]
                assert len(workers) == 1, [(p, _cmdline(p)) for p in descendants(proc.pid)]
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    assert killed is not None, out[-4000:]
    # the console's line (the worker's own output stays in Ray's logs without --verbose)
    resumed = [int(re.search(r"resumed from step (\d+)", l).group(1)) for l in lines if "resumed from step" in l]
    assert resumed and resumed[0] >= 20 and resumed[0] % 20 == 0, out[-4000:]
    df = pd.read_parquet(storage / "wkill" / "metrics.parquet")
    assert df["trial_id"].nunique() == 1 and (df["status"] == "TERMINATED").all(), df
    assert df["step"].tolist() == [20, 40, 60, 80, 100]  # sorted by (trial, seed, step): no gap, no duplicate
    assert df["eval/return_mean"].notna().all() and df["step"].max() == 100
    history = [json.loads(l) for l in open(next((storage / "wkill" / "_history").glob("*.jsonl")))]
    assert sorted({h["step"] for h in history}) == [20, 40, 60, 80, 100]
    print(f"killed worker pid {killed}; resumed from step {resumed[0]}; JSONL steps {[h['step'] for h in history]}")


# ----------------------------------------------------------------------------- Ray start-up on a busy machine


def test_local_ray_start_timeout_is_retried(monkeypatch, capsys):
    """Ray waits a fixed 30 s for its raylet; on an overloaded machine the local start can time out.  init_ray
    tears down and retries that one error (seen in a full test run at load average 60), and no other."""
    import ray

    from platform import sweep

    calls = []

    def flaky_init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", flaky_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for var in ("RAY_JOB_ID", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "unset")  # init_ray sets it; monkeypatch restores it
    sweep.init_ray(num_cpus=1)
    assert len(calls) == 2 and calls[1]["num_cpus"] == 1
    assert "retrying (1/2)" in capsys.readouterr().out

    def broken_init(**kwargs):
        calls.append(kwargs)
        raise ValueError("some other problem")

    monkeypatch.setattr(ray, "init", broken_init)
    calls.clear()
    with pytest.raises(ValueError, match="some other problem"):
        sweep.init_ray(num_cpus=1)
    assert len(calls) == 1
