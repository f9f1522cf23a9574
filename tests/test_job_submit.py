"""`ray start --head` on loopback + `ray job submit --working-dir . -- python -m platform.sweep ...`.

Token authentication stays on (RAY_AUTH_MODE=token with a per-test token), as it should on a real cluster.
The head runs in a session of its own and teardown kills only its processes (tests/raycluster.py).
"""
import json
import subprocess

import pandas as pd
import pytest

from tests.raycluster import RAY, ROOT, LocalCluster
from tests.test_sweep import make_spec


@pytest.mark.timeout(1200)  # a Ray head start plus a sweep: minutes on 2 busy cores
def test_job_submit_runs_sweep(tmp_path, data_dir):
    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        spec = make_spec(tmp_path, name="job", steps=20, eval_every=10, num_samples=1)
        storage = tmp_path / "results"
        runtime_env = {"env_vars": {"DRL_DATA_DIR": data_dir}, "excludes": [".git", "results", "reports"]}
        out = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
                              "--runtime-env-json", json.dumps(runtime_env), "--",
                              "python", "-m", "platform.sweep", spec, "--storage", str(storage), "--no-report"],
                             cwd=ROOT, capture_output=True, text=True, env=cluster.env, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "succeeded" in out.stdout + out.stderr
        df = pd.read_parquet(storage / "job" / "metrics.parquet")
        assert df["trial_id"].nunique() == 1 and set(df["step"]) == {10, 20} and set(df["seed"]) == {0, 1}
        assert df["eval/return_mean"].notna().all()
    finally:
        cluster.shutdown()
