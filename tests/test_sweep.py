"""End-to-end sweeps through the real CLI: YAML -> Tune/Optuna -> Ray Train -> eval actors -> Parquet.

Each test runs `python -m platform.sweep` in a subprocess (a real local Ray per run), as a user
would.  Small budgets: BC on the generated Pendulum dataset, a few steps per trial.
"""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.raycluster import kill_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """\
name: {name}
algorithm: bc
dataset: generated:pendulum-medium
train: {{steps: {steps}, batch_size: 64, eval_every: {eval_every}, eval_episodes: 2, seeds: [0, 1]{train_extra}}}
search:
  searcher: {searcher}
  num_samples: {num_samples}
  scheduler: fifo
  space:
    lr: {space}
resources: {{workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}}
failure: {{max_failures: 0}}
"""


def make_spec(tmp_path, name="tiny", steps=40, eval_every=20, searcher="optuna", num_samples=3,
              space="{loguniform: [0.0001, 0.01]}", train_extra=""):
    p = tmp_path / f"{name}.yaml"
    p.write_text(TINY.format(name=name, steps=steps, eval_every=eval_every, searcher=searcher,
                             num_samples=num_samples, space=space, train_extra=train_extra))
    return str(p)


def run_cli(args, env=None, timeout=600):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "platform.sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_three_trial_sweep_writes_parquet(tmp_path, data_dir):
    # log_every 10 between the evaluations at 20 and 40: training-only reports, which carry the study's metric as
    # NaN (Tune refuses a result without it, and Optuna reads it from every result)
    spec = make_spec(tmp_path, train_extra=", log_every: 10")
    storage = tmp_path / "results"
    out = run_cli([spec, "--storage", str(storage), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(storage / "tiny" / "metrics.parquet")
    logs = df[df["step"] % 20 != 0]
    assert set(logs["step"]) == {10, 30} and logs["train/loss"].notna().all()
    assert logs["eval/normalized_score"].isna().all() and logs["eval/return_mean"].isna().all()
    df = df[df["step"] % 20 == 0]
    for col in ["sweep", "trial_id", "algorithm", "dataset", "seed", "config/lr", "step", "time_s", "train/loss",
                "eval/return_mean", "eval/return_std", "eval/normalized_score", "eval/success_rate", "status"]:
        assert col in df.columns, col
    assert df["trial_id"].nunique() == 3
    assert (df["status"] == "TERMINATED").all()
    # every trial: both seeds at both evaluation points, no duplicates
    assert sorted(df.groupby("trial_id").size().unique()) == [4]
    assert set(df["step"]) == {20, 40} and set(df["seed"]) == {0, 1}
    assert not df.duplicated(["trial_id", "seed", "step"]).any()
    assert df["eval/return_mean"].notna().all() and (df["eval/return_mean"] < 0).all()  # Pendulum returns < 0
    lrs = df.groupby("trial_id")["config/lr"].first()
    assert lrs.nunique() == 3 and ((lrs >= 1e-4) & (lrs <= 1e-2)).all()
    # training speed per wall second and per CPU second of the worker (the load-robust one): both set, and a
    # one-thread step cannot use more CPU than wall time (a little slack for the clocks' resolution)
    wall, cpu = df["time/steps_per_s"], df["time/steps_per_cpu_s"]
    assert (wall > 0).all() and (cpu > 0).all() and (cpu >= 0.8 * wall).all()
    assert "[sweep] done" in out.stdout


def test_failing_trial_does_not_stop_sweep(tmp_path, data_dir):
    # lr = 1e30 makes the weights explode on the first Adam step: the loss becomes inf -> the trial fails.
    spec = make_spec(tmp_path, name="crash", steps=20, eval_every=10, searcher="grid", num_samples=1,
                     space="{grid: [0.001, 1.0e+30]}")
    storage = tmp_path / "results"
    out = run_cli([spec, "--storage", str(storage), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(storage / "crash" / "metrics.parquet")
    by_status = df.groupby("status")["config/lr"].first()
    assert by_status["ERROR"] == pytest.approx(1e30) and by_status["TERMINATED"] == pytest.approx(1e-3)
    err = df[df["status"] == "ERROR"]["error"].iloc[0]
    assert "non-finite" in err, err
    # the diverged report is kept (health: train/nonfinite_losses counted) before the trial fails
    bad = df[df["status"] == "ERROR"]
    assert (bad["train/nonfinite_losses"] > 0).all() and set(bad["seed"]) == {0, 1}, bad
    ok = df[df["status"] == "TERMINATED"]
    assert set(ok["step"]) == {10, 20} and ok["eval/return_mean"].notna().all()
    # the last lines list the failed trial with its one-line reason (exit 0: one trial finished)
    tail = out.stdout.strip().splitlines()[-3:]
    failed_id = df[df["status"] == "ERROR"]["trial_id"].iloc[0]
    assert "[sweep] 1 of 2 trials failed:" in tail[-2] and failed_id in tail[-1] and "non-finite" in tail[-1], tail


def test_bad_spec_exits_2_and_starts_nothing(tmp_path):
    spec = make_spec(tmp_path).replace(".yaml", ".yaml")
    text = open(spec).read().replace("num_samples", "num_sample")
    open(spec, "w").write(text)
    out = run_cli([spec, "--storage", str(tmp_path / "r")])
    assert out.returncode == 2
    assert "search.num_sample" in out.stderr and "did you mean 'num_samples'" in out.stderr
    assert not (tmp_path / "r").exists()


def test_compile_without_a_cxx_compiler_exits_2_and_starts_nothing(tmp_path, monkeypatch, capsys):
    """train.compile on the CPU needs a C++ compiler: without one, one line at the start, not a failure per trial."""
    from platform.sweep import cxx_compiler, main

    assert cxx_compiler()  # this machine has one (the compiled-trial test below uses it)
    spec = tmp_path / "q.yaml"
    spec.write_text(open("search_spaces/quickstart.yaml").read())
    assert "compile: true" in spec.read_text()
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on PATH
    monkeypatch.delenv("CXX", raising=False)
    assert cxx_compiler() is None
    assert main([str(spec), "--storage", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.compile: needs a C++ compiler" in err and str(spec) in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.timeout(1500)  # two sweeps with their own Ray starts: minutes on 2 busy cores
def test_resume_after_driver_killed(tmp_path, data_dir):
    spec = make_spec(tmp_path, name="resume", steps=60, eval_every=20, num_samples=2)
    open(spec, "a").write("# one trial at a time, so that one has finished and one has not when the driver dies\n")
    text = open(spec).read().replace("  space:", "  max_concurrent: 1\n  space:")
    open(spec, "w").write(text)
    storage = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "platform.sweep", spec, "--storage", str(storage), "--no-report"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    finished, lines, deadline = [], [], time.time() + 900
    for line in proc.stdout:
        lines.append(line)
        if "finished (" in line:
            finished.append(line.split()[1])
            break
        assert time.time() < deadline, "".join(lines[-50:])
    kill_tree(proc.pid)  # the driver and its local Ray die mid-sweep (only this test's processes)
    proc.wait()
    assert finished, "".join(lines[-50:])
    out = run_cli([spec, "--storage", str(storage), "--no-report", "--resume"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(storage / "resume" / "metrics.parquet")
    assert df["trial_id"].nunique() == 2
    assert (df["status"] == "TERMINATED").all()
    assert not df.duplicated(["trial_id", "seed", "step"]).any()
    assert df.groupby("trial_id").size().tolist() == [6, 6]  # 2 seeds x 3 evaluations each, no gap
    assert set(df["step"]) == {20, 40, 60}
    # the trial that had finished before the kill was not run again
    assert f"{finished[0]} step" not in out.stdout, out.stdout[-3000:]


def test_multi_algorithm_study_one_parquet(tmp_path, data_dir):
    """algorithm: {grid: [...]} -> one trial per algorithm, same data/seeds/eval, one Parquet for the table."""
    p = tmp_path / "multi.yaml"
    p.write_text(textwrap.dedent("""\
        name: multi
        algorithm: {grid: [bc, dql]}
        dataset: generated:pendulum-medium
        config: {dql: {n_timesteps: 3, eta: 0.5}, bc: {hidden_dim: 32}}
        train: {steps: 20, batch_size: 32, eval_every: 10, eval_episodes: 2, seeds: [0]}
        search: {searcher: grid, num_samples: 1, scheduler: fifo}
        resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}
        failure: {max_failures: 0}
        """))
    storage = tmp_path / "results"
    out = run_cli([str(p), "--storage", str(storage), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(storage / "multi" / "metrics.parquet")
    assert sorted(df["algorithm"].unique()) == ["bc", "dql"] and df["trial_id"].nunique() == 2
    assert (df["status"] == "TERMINATED").all() and set(df["step"]) == {10, 20}
    by_algo = df.groupby("algorithm")
    # each trial got its own fixed config, not the other algorithm's
    assert by_algo["config/eta"].first()["dql"] == 0.5 and pd.isna(by_algo["config/eta"].first()["bc"])
    assert by_algo["config/hidden_dim"].first()["bc"] == 32
    assert df["eval/return_mean"].notna().all()
    # health columns in every results file: both policies act inside Pendulum's box, no loss went non-finite
    assert (df["eval/action_out_of_box"] == 0).all() and (df["eval/action_excess_max"] == 0).all()
    assert (df["train/nonfinite_losses"] == 0).all()
    assert df.loc[df["algorithm"] == "dql", "train/q_mean"].notna().all()
    assert (df["per_task"] == "").all()  # no paper lists per-task settings for Pendulum


def test_workers_that_cannot_import_the_project_fail_fast(tmp_path):
    """A Ray whose workers lack the project on their path (a job without working_dir): one line, before any trial."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import platform, ray
        from platform.sweep import ProjectImportError, check_workers_import
        ray.init(num_cpus=1, include_dashboard=False)  # no runtime env: workers import the stdlib's platform
        try:
            check_workers_import("dql", timeout_s=120)
            print("IMPORTED")
        except ProjectImportError as e:
            print("ERROR", e)
        """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert "ERROR Ray workers cannot import the project" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "--working-dir ." in out.stdout and "platform" in out.stdout


@pytest.mark.timeout(900)
def test_two_concurrent_trials_really_overlap(tmp_path, data_dir):
    """Two trials that fit a 2-CPU machine together (0.96 CPU each, everything counted) train at the same time."""
    spec = tmp_path / "overlap.yaml"
    spec.write_text(textwrap.dedent("""\
        name: overlap
        algorithm: dql
        dataset: generated:pendulum-medium
        train: {steps: 300, batch_size: 64, eval_every: 150, eval_episodes: 2, seeds: [0]}
        search: {searcher: random, num_samples: 2, scheduler: fifo, space: {eta: {uniform: [0.5, 2.0]}}}
        resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.45}
        """))
    out = run_cli([str(spec), "--storage", str(tmp_path / "r"), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "r" / "overlap" / "metrics.parquet")
    spans = []
    for _, g in df.groupby("trial_id"):
        start = g["time/first_step_unix"].min()
        spans.append((start, start + g["time/total_s"].max()))
    assert len(spans) == 2
    (s0, e0), (s1, e1) = sorted(spans)
    assert s1 < e0, f"the second trial started training at +{s1 - s0:.0f}s, after the first ended at +{e0 - s0:.0f}s"
    # the console: no raw Ray result dumps without --verbose
    assert "TrainingReport(" not in out.stdout + out.stderr and "[sweep] done" in out.stdout


def test_quiet_console_drops_ray_noise_only():
    import io

    from platform.console import QuietStream

    out = io.StringIO()
    q = QuietStream(out)
    q.write("[sweep] a step 1: x=1\n(raylet) WARNING: 8 PYTHON worker processes have been started on node\n[sw")
    q.write("eep] done\n")
    q.write("2026-11-30 22:21:31,110\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled\n")
    q.write("[I 2026-11-30 22:21:42,836] A new study created in memory with name: optuna\n")
    q.write("\u256d\u2500\u2500\u256e\n\u2502 Configuration for experiment     quickstart      \u2502\n\u2570\u2500\u256f\n")
    q.write("[sweep] best 91.4 | eta \u2502 1.0\n")
    q.flush()
    assert out.getvalue() == "[sweep] a step 1: x=1\n[sweep] done\n[sweep] best 91.4 | eta \u2502 1.0\n"


def test_status_line_eta_waits_for_the_slowest_trial():
    from types import SimpleNamespace

    from platform.console import ProgressPrinter

    p = ProgressPrinter("eval/normalized_score", total=2, steps=3000)
    now = time.time()
    p.t0 = now - 600
    p.reports = {"a": [(now - 1, 3000)], "b": [(now, 1500)]}  # a finished; b is half-way after 10 minutes
    p.started = {"a": now - 600, "b": now - 600}
    p.done = 1
    line = p.status_line([SimpleNamespace(trial_id="a", status="TERMINATED"),
                          SimpleNamespace(trial_id="b", status="RUNNING")])
    assert line.startswith("[sweep] 1 running, 1 done, 0 pending") and abs(_eta_s(line) - 600) < 5, line
    # three trials at once, one reported half-way after 3 minutes: the other two are as far along (not 15 minutes)
    p = ProgressPrinter("eval/normalized_score", total=4, steps=3000)
    p.reports, p.started = {"a": [(now, 1500)]}, {i: now - 180 for i in "abc"}
    line = p.status_line([SimpleNamespace(trial_id=i, status="RUNNING") for i in "abc"])
    assert line.startswith("[sweep] 3 running, 0 done, 1 pending") and abs(_eta_s(line) - 540) < 5, line  # + a wave
    # the first interval holds start-up and compilation (150 s for 1500 steps), the second ran 1500 steps in 35 s:
    # c, half-way 30 s ago, is timed by the others' latest pace (5 s left), not by its own first interval (2.5 min)
    p = ProgressPrinter("eval/normalized_score", total=3, steps=3000)
    p.reports = {"a": [(now - 40, 1500), (now - 5, 3000)], "b": [(now - 41, 1500), (now - 6, 3000)],
                 "c": [(now - 30, 1500)]}
    p.started = {i: now - 190 for i in "abc"}
    line = p.status_line([SimpleNamespace(trial_id=i, status="RUNNING") for i in "abc"])
    assert abs(_eta_s(line) - 5) < 3, line


def _eta_s(line: str) -> int:
    m, s = line.split("ETA ")[1].split("m")
    return int(m) * 60 + int(s.rstrip("s"))


VEC = """\
name: {name}
algorithm: dql
dataset: generated:pendulum-medium
config: {{hidden_dim: 32, n_action_samples: 8}}
train: {{steps: {steps}, batch_size: 64, eval_every: {eval_every}, eval_episodes: 2, seeds: [0, 1], vectorize_seeds: {vec},
         overlap_eval: {overlap}, compile: {compile}}}
search:
  searcher: grid
  scheduler: fifo
  space:
    eta: {{grid: [1.0]}}
resources: {{workers: {workers}, cpus_per_worker: {cpus}, eval_actors: 1, cpus_per_eval_actor: 0.5}}
"""


def _vec_run(tmp_path, name: str, vec: str, overlap: str, compile: str = "false", workers: int = 1,
             env: dict | None = None) -> pd.DataFrame:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(VEC.format(name=name, vec=vec, overlap=overlap, compile=compile, steps=45, eval_every=15,
                               workers=workers, cpus=1 if workers == 1 else 0.5))
    out = run_cli([str(spec), "--storage", str(tmp_path / "results"), "--no-report"], env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / name / "metrics.parquet")
    df = df.set_index(["seed", "step"]).sort_index()
    df.attrs["results"] = str(tmp_path / "results" / name)  # its checkpoints
    return df


def _last_checkpoint_keys(results: str, seed: int) -> list[str]:
    """Every key path of seed ``seed``'s state in the trial's last checkpoint."""
    from platform.checkpoint import load_seed_state
    from tests.test_contract import keys

    last = sorted(p for p in Path(results).rglob("checkpoint_*") if p.is_dir())[-1]
    return keys(load_seed_state(str(last), seed)["algo"])


@pytest.fixture(scope="module")
def in_turn(tmp_path_factory, data_dir):
    """The reference: seeds stepped in turn, blocking evaluation, one worker (shared by the tests below)."""
    return _vec_run(tmp_path_factory.mktemp("in_turn"), "in_turn", "false", "false")


def test_vectorized_seeds_equal_seeds_trained_in_turn(tmp_path, in_turn):
    """train.vectorize_seeds: seed s of a vectorized trial = seed s trained by the ordinary loop, through the real
    train loop (same initial weights, batches and random streams; vmap round-off only)."""
    a, b = in_turn, _vec_run(tmp_path, "vec", "true", "false")
    assert list(a.index) == list(b.index) == [(s, k) for s in (0, 1) for k in (15, 30, 45)]
    for col in ("train/critic_loss", "train/bc_loss", "train/q_mean", "eval/return_mean"):
        assert b[col].to_numpy() == pytest.approx(a[col].to_numpy(), rel=1e-3, abs=1e-4), col
    assert a.loc[(0, 45), "train/critic_loss"] != pytest.approx(a.loc[(1, 45), "train/critic_loss"], rel=1e-3)


def test_overlapped_evaluation_scores_the_same_snapshots(tmp_path, in_turn):
    """train.overlap_eval: step s's snapshot is evaluated while training goes on and reported as step s, with the
    same scores as the blocking evaluation of the same snapshot (evaluation is seeded), and the checkpoints."""
    a, b = in_turn, _vec_run(tmp_path, "overlap", "false", "true")
    assert list(a.index) == list(b.index) == [(s, k) for s in (0, 1) for k in (15, 30, 45)]
    for col in ("eval/return_mean", "eval/normalized_score", "train/critic_loss"):
        assert (a[col] == b[col]).all(), (col, a[col].tolist(), b[col].tolist())
    ckpts = sorted(p.name for p in (tmp_path / "results" / "overlap").rglob("checkpoint_*") if p.is_dir())
    assert ckpts and ckpts[-1] == "checkpoint_000000045"


def test_compiled_training_matches_eager(tmp_path, in_turn):
    """train.compile: the same trial with torch.compile'd graphs gives the eager loop's numbers up to the round-off
    of fused kernels, through the real train loop; dynamo compiled the step's graphs in the Train worker (torch's
    structured trace, ``TORCH_TRACE``, records every graph it makes: an inert compile leaves none), and checkpoints
    keep their keys (no ``_orig_mod.`` prefix: compiled and eager checkpoints load into each other)."""
    trace = tmp_path / "torch_trace"
    a = in_turn
    b = _vec_run(tmp_path, "compiled", "false", "false", compile="true", env={"TORCH_TRACE": str(trace)})
    assert list(a.index) == list(b.index) == [(s, k) for s in (0, 1) for k in (15, 30, 45)]
    for col in ("train/critic_loss", "train/bc_loss", "train/q_mean"):
        assert b[col].to_numpy() == pytest.approx(a[col].to_numpy(), rel=1e-3, abs=1e-4), col
    assert b["eval/return_mean"].to_numpy() == pytest.approx(a["eval/return_mean"].to_numpy(), rel=0.05)
    logs = "".join(p.read_text(errors="replace") for p in trace.glob("*")) if trace.is_dir() else ""
    assert logs.count('{"dynamo_output_graph"') >= 2, "no graph compiled (Diffusion-QL's step has two)"
    for seed in (0, 1):
        assert _last_checkpoint_keys(b.attrs["results"], seed) == _last_checkpoint_keys(a.attrs["results"], seed)


def test_two_workers_split_the_seeds_and_gather_their_metrics(tmp_path, in_turn):
    """``resources.workers: 2`` without data_parallel: each Train worker trains its share of the seeds
    (``seeds[rank::2]``), and the per-seed metrics are gathered over gloo, so rank 0 reports both seeds: the
    same rows, to round-off, as one worker training both (each seed has its own random streams)."""
    a, b = in_turn, _vec_run(tmp_path, "two_workers", "false", "false", workers=2)
    assert list(a.index) == list(b.index) == [(s, k) for s in (0, 1) for k in (15, 30, 45)]
    for col in ("train/critic_loss", "train/bc_loss", "train/q_mean", "eval/return_mean"):
        assert b[col].to_numpy() == pytest.approx(a[col].to_numpy(), rel=1e-5, abs=1e-6), col
    assert a.loc[(0, 45), "train/critic_loss"] != pytest.approx(a.loc[(1, 45), "train/critic_loss"], rel=1e-3)
    assert (b["status"] == "TERMINATED").all()
