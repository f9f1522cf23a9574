"""`ray start --head` on loopback + `ray job submit --working-dir . -- python -m platform.sweep ...`.

Token authentication stays on (RAY_AUTH_MODE=token with a per-test token), as it should on a real cluster.
"""
import json
import os
import secrets
import socket
import subprocess

import pandas as pd

from tests.test_sweep import ROOT, make_spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_job_submit_runs_sweep(tmp_path, data_dir):
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    start = subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        spec = make_spec(tmp_path, name="job", steps=20, eval_every=10, num_samples=1)
        storage = tmp_path / "results"
        runtime_env = {"env_vars": {"DRL_DATA_DIR": data_dir}, "excludes": [".git", "results", "reports"]}
        out = subprocess.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", ".",
                              "--runtime-env-json", json.dumps(runtime_env), "--",
                              "python", "-m", "platform.sweep", spec, "--storage", str(storage), "--no-report"],
                             cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "succeeded" in out.stdout + out.stderr
        df = pd.read_parquet(storage / "job" / "metrics.parquet")
        assert df["trial_id"].nunique() == 1 and set(df["step"]) == {10, 20} and set(df["seed"]) == {0, 1}
        assert df["eval/return_mean"].notna().all()
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, env=env, timeout=120)
