"""benchmarks/twins.py: the bootstrap CI of a difference of means (always), and the Diffusion-QL twin end to end at
a tiny budget when a checkout of the public Diffusion-QL code is given (``PUBLIC_DQL=/path/to/checkout``; it is
never downloaded here, so without it that test skips)."""
import math
import os
import subprocess
from itertools import product

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmarks import twins


def _exact_diff_distribution(a, b):
    """The exact bootstrap distribution of mean(b*) - mean(a*) (all n^n resamples of each side): atoms, probs."""
    probs: dict[float, float] = {}
    ra, rb = list(product(a, repeat=len(a))), list(product(b, repeat=len(b)))
    w = 1.0 / (len(ra) * len(rb))
    for xa in ra:
        for xb in rb:
            d = round(float(np.mean(xb) - np.mean(xa)), 9)
            probs[d] = probs.get(d, 0.0) + w
    atoms = np.array(sorted(probs))
    return atoms, np.array([probs[x] for x in atoms])


def _inverse_cdf(atoms, probs, p):
    return float(atoms[np.searchsorted(np.cumsum(probs), p - 1e-12)])


def test_bootstrap_ci_by_hand():
    # both sides [0, 10], resampled independently: mean(b*) - mean(a*) takes -10, -5, 0, 5, 10 with probabilities
    # 1/16, 4/16, 6/16, 4/16, 1/16; the 2.5% and 97.5% quantiles fall inside the end atoms (6.25% each).
    # (Resampling both sides with the same indices would give (0, 0).)
    assert twins.bootstrap_diff_ci([0, 10], [0, 10]) == (-10.0, 10.0)
    # no spread: the CI is the difference itself
    assert twins.bootstrap_diff_ci([2.0, 2.0, 2.0], [5.0, 5.0]) == (3.0, 3.0)
    # against the exact bootstrap distribution (enumerated): each end within the 1.5%-3.5% (96.5%-98.5%) quantiles
    # (10000 resamples: the Monte Carlo error of a 2.5% quantile is about 0.16%)
    a, b = [0.0, 1.0, 4.0], [10.0, 13.0]
    lo, hi = twins.bootstrap_diff_ci(a, b)
    atoms, probs = _exact_diff_distribution(a, b)
    assert abs(probs.sum() - 1) < 1e-9
    eps = 1e-6  # the atoms are rounded to 9 decimals
    assert _inverse_cdf(atoms, probs, 0.015) - eps <= lo <= _inverse_cdf(atoms, probs, 0.035) + eps
    assert _inverse_cdf(atoms, probs, 0.965) - eps <= hi <= _inverse_cdf(atoms, probs, 0.985) + eps
    assert lo < np.mean(b) - np.mean(a) < hi
    # the sign: platform (b) - public (a); fixed seed: the same numbers every time
    assert twins.bootstrap_diff_ci(b, a) == pytest.approx((-hi, -lo), abs=1.0)
    assert twins.bootstrap_diff_ci(a, b) == (lo, hi)
    assert twins.contains_zero((-1.0, 2.0)) and twins.contains_zero((0.0, 1.0))
    assert not twins.contains_zero((0.5, 2.0)) and not twins.contains_zero((-3.0, -0.1))
    # the figure's bands: the CI of one side's mean, [0, 10] -> 0 and 10 at the ends (1/4 each)
    assert twins.bootstrap_mean_ci([0, 10]) == (0.0, 10.0)
    assert all(math.isnan(x) for x in twins.bootstrap_diff_ci([], [1.0]))


PUBLIC_DQL = os.environ.get("PUBLIC_DQL", "")


@pytest.mark.skipif(not os.path.isfile(os.path.join(PUBLIC_DQL, "agents", "ql_diffusion.py")),
                    reason="set PUBLIC_DQL to a checkout of github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL "
                           "to run the Diffusion-QL twin (it is never downloaded by the tests)")
def test_dql_twin_tiny(tmp_path, data_dir):
    """Generated Pendulum, 2 seeds, evaluations at 5 and 10 steps, 2 episodes: the equivalence numbers at float32
    round-off, one row per side x seed x step, and the report files with the public commit."""
    res = twins.main(["--public-dql", PUBLIC_DQL, "--dataset", "generated:pendulum-medium", "--seeds", "0", "1",
                      "--eval-steps", "5", "10", "--eval-episodes", "2", "--out", str(tmp_path)])["dql"]
    eq = res["equivalence"]
    assert eq["weights after the mapping"] == 0.0
    assert eq["act picks the same candidate (of 8)"] == 8
    for k, v in eq.items():
        if "of 8" not in k and "initial" not in k:
            assert v < 1e-4, (k, v)
    commit = subprocess.run(["git", "-C", PUBLIC_DQL, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    table = pq.read_table(tmp_path / "twins_dql_pendulum-medium.parquet").to_pandas()
    assert len(table) == 2 * 2 * 2
    assert sorted(set(table["side"])) == ["platform", "public"] and sorted(set(table["step"])) == [5, 10]
    assert (table["public_commit"] == commit).all()
    assert table["score"].map(math.isfinite).all() and (table["train_steps_per_s"] > 0).all()
    md = (tmp_path / "twins_dql_pendulum-medium.md").read_text()
    assert commit in md and "contains 0" in md and "smoke run" in md
    assert (tmp_path / "twins_dql_pendulum-medium.png").stat().st_size > 1000
    rates = res["meta"]["step_rates"]  # one batch, same process: public, eager (and compiled with a C++ compiler)
    assert {"public", "platform eager"} <= set(rates) and all(v > 0 for v in rates.values())
    assert "One batch of the dataset" in md and "| platform eager |" in md
    assert [s["step"] for s in res["summary"]] == [5, 10]
    for s in res["summary"]:
        assert s["ci_lo"] <= s["diff"] <= s["ci_hi"]


def _fake_run(out, seeds, public_commit="abc", eval_steps=(5, 10)):
    """A twin result as ``twins.write`` makes it, from made-up scores: seed s scores s + step/10 (public) and
    s + step/10 + 1 (platform)."""
    rows = []
    for seed in seeds:
        for step in eval_steps:
            for side, bump in (("public", 0.0), ("platform", 1.0)):
                rows.append({"side": side, "seed": seed, "step": step, "score": seed + step / 10 + bump,
                             "segment_steps": 5, "train_s": 1.0 + bump, "train_cpu_s": 1.0, "eval_s": 2.0,
                             "eval_cpu_s": 2.0, "eval_episodes_per_s": 1.0, "bc_loss": 0.1, "train_steps_per_s": 5.0})
    meta = {"dataset": "generated:pendulum-medium", "public_commit": public_commit, "platform_commit": "def",
            "resolved": {"eta": 1.0}, "batch_size": 256, "eval_steps": list(eval_steps), "eval_episodes": 2,
            "eval_seed": 100000, "public_act": "batched", "threads": 1, "torch": "x", "seeds": list(seeds),
            "wall_s": 60.0 * len(seeds), "load_1m_start": 1.0, "load_1m_end": 2.0, "public_repo": "r", "env_id": "e",
            "n_timesteps": 5, "beta_schedule": "vp", "reward_tune": "no", "cpus": 2,
            "command": f"twins --seeds {' '.join(map(str, seeds))}"}
    summary = twins.per_step_summary(rows, list(eval_steps))
    twins.write(rows, meta, {"weights after the mapping": 0.0}, summary, twins.throughput(rows), str(out),
                "twins_dql")
    return rows


def test_merge_seeds_run_apart(tmp_path):
    """Seeds 0 1 and 2 3 run as two processes, merged: the same summary and throughput as one run of all four
    seeds would give; runs that differ in a setting or repeat a seed are refused."""
    rows = _fake_run(tmp_path / "a", [0, 1]) + _fake_run(tmp_path / "b", [2, 3])
    res = twins.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])["dql"]
    assert res["meta"]["seeds"] == [0, 1, 2, 3] and res["meta"]["wall_s"] == 120.0
    want = twins.per_step_summary(rows, [5, 10])
    assert [s["public_scores"] for s in res["summary"]] == [[0.5, 1.5, 2.5, 3.5], [1.0, 2.0, 3.0, 4.0]]
    for got, exp in zip(res["summary"], want):
        assert got["diff"] == pytest.approx(1.0) and (got["ci_lo"], got["ci_hi"]) == (exp["ci_lo"], exp["ci_hi"])
    assert res["throughput"]["platform"]["train_steps_per_s"] == pytest.approx(2.5)  # 5 steps per 2 s
    table = pq.read_table(tmp_path / "m" / "twins_dql.parquet").to_pandas()
    assert len(table) == 16 and sorted(set(table["seed"])) == [0, 1, 2, 3]
    md = (tmp_path / "m" / "twins_dql.md").read_text()
    assert "2 processes side by side" in md and "seeds [0, 1] in 2 min; seeds [2, 3] in 2 min" in md
    _fake_run(tmp_path / "c", [4], public_commit="other")
    with pytest.raises(SystemExit, match="public_commit"):
        twins.main(["--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "m2")])
    with pytest.raises(SystemExit, match="repeated"):
        twins.main(["--merge", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "m2")])
