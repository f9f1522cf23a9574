"""`ray start --head` on loopback + `ray job submit [--working-dir .] -- python -m platform.sweep ...`.

Both forms of the card's command: with `--working-dir .` and without (the sweep then ships the checkout
to its trials itself).  Token authentication stays on (RAY_AUTH_MODE=token with a per-test token), as it should on a real cluster.
The head runs in a session of its own and teardown kills only its processes (tests/raycluster.py).
"""
import json
import subprocess

import pandas as pd
import pytest

from tests.raycluster import RAY, ROOT, LocalCluster
from tests.test_sweep import make_spec


def _submit(cluster, spec, storage, data_dir, working_dir: bool):
    runtime_env = {"env_vars": {"DRL_DATA_DIR": data_dir}}
    if working_dir:
        runtime_env["excludes"] = [".git", "results", "reports"]
    return subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard,
                           *(["--working-dir", "."] if working_dir else []),
                           "--runtime-env-json", json.dumps(runtime_env), "--",
                           "python", "-m", "platform.sweep", spec, "--storage", str(storage), "--no-report"],
                          cwd=ROOT, capture_output=True, text=True, env=cluster.env, timeout=600)


@pytest.mark.timeout(1800)  # a Ray head start plus three sweeps: minutes on 2 busy cores
def test_job_submit_runs_sweep(tmp_path, data_dir):
    """The card's `ray job submit -- python -m platform.sweep SPEC` as written, the `--working-dir .` form,
    and an all-failed sweep, whose job then fails."""
    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        for working_dir in (True, False):
            name = "job_wd" if working_dir else "job_plain"
            spec = make_spec(tmp_path, name=name, steps=20, eval_every=10, num_samples=1)
            storage = tmp_path / "results"
            out = _submit(cluster, spec, storage, data_dir, working_dir)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            assert "succeeded" in out.stdout + out.stderr
            assert ("shipping" in out.stdout) != working_dir  # the plain form ships the checkout to the trials
            df = pd.read_parquet(storage / name / "metrics.parquet")
            assert df["trial_id"].nunique() == 1 and set(df["step"]) == {10, 20} and set(df["seed"]) == {0, 1}
            assert (df["status"] == "TERMINATED").all() and df["eval/return_mean"].notna().all()
        # lr = 1e30: the only trial fails (non-finite loss) -> the sweep exits 1 -> Ray marks the job failed
        spec = make_spec(tmp_path, name="job_fail", steps=20, eval_every=10, searcher="grid", num_samples=1,
                         space="{grid: [1.0e+30]}")
        out = _submit(cluster, spec, tmp_path / "results", data_dir, working_dir=False)
        assert out.returncode != 0, out.stdout[-3000:]
        text = out.stdout + out.stderr
        assert "every trial failed (1 of 1)" in text and "succeeded" not in text, text[-3000:]
        assert (tmp_path / "results" / "job_fail" / "metrics.parquet").exists()  # results kept
    finally:
        cluster.shutdown()
