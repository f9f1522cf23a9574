"""platform/report/ on a small Parquet file written here with known values (real pyarrow, no mocks).

The study: 2 algorithms x 3 trials x 3 seeds x 4 evaluations on d4rl:hopper-medium-v2, searched
parameter ``eta`` (0.1, 1, 10: two decades, so a log axis), a fixed ``n_timesteps``, train-only rows
between evaluations (NaN eval columns), and one extra EDP trial that failed before reporting.
Expected numbers are computed here with numpy from the arrays below, not with the report's code.
"""
from __future__ import annotations

import json
import glob
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from platform import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET, ENV = "d4rl:hopper-medium-v2", "Hopper-v5"
BENCH = f"{DATASET} ({ENV})"
ETAS = [0.1, 1.0, 10.0]
SEEDS = [0, 1, 2]
STEPS = [1000, 2000, 3000, 4000]
# Final normalized score per (algorithm, trial, seed); earlier evaluations are final * step / 4000.
FINAL = {
    "dql": np.array([[40.0, 44.0, 48.0], [60.0, 62.0, 67.0], [30.0, 35.0, 20.0]]),
    "edp": np.array([[50.0, 52.0, 57.0], [55.0, 58.0, 50.0], [10.0, 12.0, 14.0]]),
}
FAILED_ERROR = "RuntimeError: CUDA error: out of memory"
SPEC = {"name": "toy", "algorithm": "dql", "dataset": DATASET, "env": ENV, "config": {"n_timesteps": 5},
        "train": {"steps": 4000, "batch_size": 256, "eval_every": 1000, "eval_episodes": 10, "seeds": SEEDS},
        "search": {"metric": "eval/normalized_score", "mode": "max", "space": {"eta": {"loguniform": [0.1, 10.0]}}},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "eval_actors": 2,
                      "cpus_per_eval_actor": 0.5}}


def trial_id(algo: str, i: int) -> str:
    return f"{algo}{i:03d}_0000{i}"


def make_frame() -> pd.DataFrame:
    rows = []
    for algo, finals in FINAL.items():
        for i, eta in enumerate(ETAS):
            base = {"sweep": "toy", "trial_id": trial_id(algo, i), "algorithm": algo, "dataset": DATASET, "env": ENV,
                    "config/eta": eta, "config/n_timesteps": 5, "status": "TERMINATED", "error": None}
            for s, seed in enumerate(SEEDS):
                for step in STEPS:
                    score = finals[i, s] * step / 4000
                    timing = {"time_s": step / 100, "time/total_s": step / 100,
                              "time/steps_per_s": 100.0 + 10 * (algo == "edp"), "node/train": "n1", "node/eval": "n1"}
                    # a train-only log between evaluations: eval columns NaN, must be ignored
                    rows.append({**base, **timing, "time/eval_s": 0.0, "seed": seed, "step": step - 500,
                                 "train/loss": 1.0})
                    rows.append({**base, **timing, "time/eval_s": 1.0, "seed": seed, "step": step, "train/loss": 0.5,
                                 "eval/return_mean": 30 * score, "eval/return_std": 1.0,
                                 "eval/normalized_score": score, "eval/success_rate": 0.0,
                                 "eval/max_reward_mean": 1.0, "eval/length_mean": 1000.0, "eval/episodes": 10})
    for seed in SEEDS:  # a trial that died before its first report: one row per seed with the reason
        rows.append({"sweep": "toy", "trial_id": "edp999_00099", "algorithm": "edp", "dataset": DATASET, "env": ENV,
                     "config/eta": 3.0, "config/n_timesteps": 5, "seed": seed, "step": 0, "status": "ERROR",
                     "error": FAILED_ERROR})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("results") / "toy"
    d.mkdir()
    make_frame().to_parquet(d / "metrics.parquet", index=False, engine="pyarrow")
    (d / "spec.json").write_text(json.dumps(SPEC))
    return str(d)


@pytest.fixture(scope="module")
def built(results_dir, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("report") / "toy")
    return report.build_report([results_dir], out)


# ----------------------------------------------------------------------------- HTML helpers

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Checker(HTMLParser):
    """Collects structure problems, <img> sources and tables (caption, header, rows of cell text)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}
        self.imgs: list[str] = []
        self.tables: list[dict] = []
        self.doctype = False
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._row: list[str] | None = None

    def handle_decl(self, decl):
        self.doctype |= decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag == "caption":
            self.tables[-1]["caption"] = "".join(self._caption).strip()
            self._caption = None
        elif tag in ("td", "th"):
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            t = self.tables[-1]
            if not t["header"]:
                t["header"] = self._row
            else:
                t["rows"].append(self._row)

    def handle_data(self, data):
        for buf in (self._cell, self._caption):
            if buf is not None:
                buf.append(data)


def parse(path: str) -> Checker:
    c = Checker()
    with open(path, encoding="utf-8") as f:
        c.feed(f.read())
    c.close()
    return c


def table(c: Checker, caption_start: str) -> dict:
    found = [t for t in c.tables if t["caption"].startswith(caption_start)]
    assert len(found) == 1, [t["caption"] for t in c.tables]
    return found[0]


def cell(t: dict, row: list[str], column: str) -> str:
    return row[t["header"].index(column)]


def hand_iqm(x) -> float:
    """rliable's IQM, written independently: drop floor(n/4) runs at each end."""
    x = sorted(np.asarray(x, dtype=float).ravel())
    k = len(x) // 4
    return float(np.mean(x[k:len(x) - k]))


# ----------------------------------------------------------------------------- (b) statistics


def test_iqm_hand_computed():
    """rliable's aggregate IQM through the report's adapter: the runs of every task pooled, 25% cut at each end."""
    # sorted: -50 0 | 3 4 5 6 | 10 100 -> middle half 3, 4, 5, 6
    assert report.iqm_ci([[10, 0, 3, 100, 4, 5, -50, 6]])[0] == pytest.approx(4.5)
    assert report.iqm_ci([[1, 2, 9]])[0] == pytest.approx(4.0)            # n < 4: nothing trimmed
    assert report.iqm_ci([[1, 2, 3, 4, 1000]])[0] == pytest.approx(3.0)   # trims one each end
    # two tasks of different sizes are pooled: 1 2 | 3 4 5 6 | 7 100 (8 runs, 2 cut each end)
    assert report.iqm_ci([[100, 1, 7], [2, 3, 4, 5, 6]])[0] == pytest.approx(4.5)
    rng = np.random.default_rng(0)
    for n in (4, 7, 9, 30):
        x = rng.normal(size=n)
        assert report.iqm_ci([x])[0] == pytest.approx(hand_iqm(x))
    assert all(np.isnan(v) for v in report.iqm_ci([[]]))


def test_bootstrap_ci_is_rliables_percentile_interval():
    """The CI is rliable's: indices drawn with numpy's global RNG (seeded with BOOT_SEED for the call, then
    restored), np.random.choice(runs, (runs, tasks)) per replicate, percentiles 2.5 / 97.5 of the replicates' IQM.
    Redone here by hand for one task; the old implementation (numpy Generator draws) gave other bounds."""
    x = np.array([40.0, 44.0, 48.0, 60.0, 62.0, 67.0, 30.0, 35.0, 20.0])
    np.random.seed(123)
    before = np.random.rand()
    np.random.seed(123)
    point, lo, hi = report.iqm_ci([x], reps=500)
    assert np.random.rand() == before   # the caller's global RNG stream is untouched
    np.random.seed(report.BOOT_SEED)
    reps = [hand_iqm(x[np.random.choice(x.size, (x.size, 1), replace=True)]) for _ in range(500)]
    assert point == pytest.approx(hand_iqm(x))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    assert report.iqm_ci([x], reps=500) == (point, lo, hi)            # deterministic
    assert report.iqm_ci([x], reps=500, seed=1) != (point, lo, hi)
    # stratified over two tasks: each replicate keeps 9 runs of each, so the pooled mean stays between the two
    # tasks' ranges (an unstratified resample could draw all 18 runs from one task)
    tasks = [x, x + 100]
    ci = report.iqm_ci(tasks)
    assert ci[1] <= hand_iqm(np.concatenate(tasks)) <= ci[2]
    mlo, mhi = report.mean_ci(x)
    assert x.min() <= mlo < x.mean() < mhi <= x.max()
    assert report.iqm_ci([[5.0]]) == (5.0, 5.0, 5.0) and report.mean_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)


def test_probability_of_improvement_hand_computed():
    """rliable's P(X > Y): per task the share of (x, y) run pairs with x > y, ties counting half; mean over tasks."""
    def hand(xs, ys):
        return np.mean([np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y]) for x, y in zip(xs, ys)])

    x = np.array([40.0, 44.0, 48.0, 60.0, 62.0, 67.0, 30.0, 35.0, 20.0])
    y = x + 5   # 31.5 of the 81 pairs: 30 wins, 3 ties (35, 40 and 67 are in both)
    p, lo, hi = report.probability_of_improvement([x], [y])
    assert p == pytest.approx(31.5 / 81) == pytest.approx(hand([x], [y]))
    assert lo < p < hi
    # the complement: P(Y > X) = 1 - P(X > Y)
    assert report.probability_of_improvement([y], [x])[0] == pytest.approx(1 - p)
    # two tasks, different numbers of runs per task and per algorithm: the tasks weigh the same
    a, b = np.array([10.0, 20.0, 30.0, 40.0]), np.array([15.0, 50.0])
    p2 = report.probability_of_improvement([x, a], [y, b])[0]
    assert p2 == pytest.approx(hand([x, a], [y, b])) == pytest.approx((31.5 / 81 + 3 / 8) / 2)
    # separated: X always better, in every resample too
    assert report.probability_of_improvement([[5.0, 6.0, 7.0]], [[1.0, 2.0, 3.0]]) == (1.0, 1.0, 1.0)
    assert report.probability_of_improvement([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]])[0] == 0.5   # equal runs: 0.5
    assert np.isnan(report.probability_of_improvement([x, []], [y, b])[0])   # a task without runs of X


def test_performance_profile_hand_computed():
    """rliable's score distribution: fraction of runs above tau, each task weighing the same."""
    a, b = np.array([10.0, 20.0, 30.0, 40.0]), np.array([50.0, 60.0])
    taus = np.array([0.0, 15.0, 35.0, 55.0, 100.0])
    frac, lo, hi = report.score_profile([a, b], taus)
    # task a: 4/4, 3/4, 1/4, 0, 0; task b: 2/2, 2/2, 2/2, 1/2, 0
    np.testing.assert_allclose(frac, [1.0, (0.75 + 1) / 2, (0.25 + 1) / 2, (0 + 0.5) / 2, 0.0])
    assert np.all(lo <= frac + 1e-12) and np.all(frac <= hi + 1e-12)
    assert lo[0] == hi[0] == 1.0 and lo[-1] == hi[-1] == 0.0  # every resample is above 0 and below 100
    assert lo[2] < hi[2]
    # equal runs per task: the same as rliable's mean(scores > tau) over the runs x tasks array
    c = np.array([5.0, 45.0, 65.0, 70.0])
    scores = np.stack([a, c], axis=1)
    np.testing.assert_allclose(report.score_profile([a, c], taus)[0], [(scores > t).mean() for t in taus])


def test_statistics_need_enough_runs(tmp_path):
    """IQM and its CI from 5 runs on; with fewer the cell says so (not a 1-run "CI" of 80.4 [80.4, 80.4])."""
    from platform.report.document import fiqm

    assert fiqm([np.array([80.4])]) == "— (1 run; needs ≥ 5)"
    assert fiqm([np.array([1.0, 2.0]), np.array([3.0, 4.0])]) == "— (4 runs; needs ≥ 5)"
    assert re.match(r"^3\.0 \[[\d.]+, [\d.]+\]$", fiqm([np.array([1.0, 2.0, 3.0, 4.0, 5.0])]))


# ----------------------------------------------------------------------------- (a) tables


def test_best_trial_and_summaries(results_dir):
    df, specs, _ = report.load_results([results_dir])
    assert specs["toy"]["train"]["steps"] == 4000
    ts = report.trials(df)
    assert len(ts) == 7
    for algo, finals in FINAL.items():
        ats = [t for t in ts if t.algorithm == algo]
        best = report.best_trial(ats)
        i = int(np.argmax(finals.mean(axis=1)))
        assert best.trial_id == trial_id(algo, i) and best.params["eta"] == ETAS[i]
        np.testing.assert_allclose(best.scores, finals[i])
        assert report.varying_params(ats) == ["eta"]


def test_results_table_values(built):
    c = parse(built)
    t = table(c, f"Final normalized score on {BENCH}")
    rows = {(r[0], r[1].split(":")[0].split(" ")[0]): r for r in t["rows"]}
    for algo, finals in FINAL.items():
        i = int(np.argmax(finals.mean(axis=1)))
        best_row, all_row = rows[(algo, "best")], rows[(algo, "all")]
        assert trial_id(algo, i) in cell(t, best_row, "configuration")
        assert f"eta={ETAS[i]:.3g}" in cell(t, best_row, "configuration")
        b = finals[i]
        assert cell(t, best_row, "mean ± std") == f"{b.mean():.1f} ± {b.std(ddof=1):.1f}"
        assert cell(t, best_row, "IQM [95% CI]") == "— (3 runs; needs ≥ 5)"  # 3 seeds: no IQM, no CI
        a = finals.ravel()
        assert cell(t, all_row, "runs") == "9" and cell(t, all_row, "final step") == "4000"
        assert cell(t, all_row, "mean ± std") == f"{a.mean():.1f} ± {a.std(ddof=1):.1f}"
        iqm_cell = cell(t, all_row, "IQM [95% CI]")
        point, lo, hi = map(float, re.match(r"^([\d.]+) \[([\d.]+), ([\d.]+)\]$", iqm_cell).groups())
        assert point == pytest.approx(hand_iqm(a), abs=0.05) and lo <= point <= hi
    # the failed EDP trial is counted but has no runs
    assert rows[("edp", "all")][1] == "all 3 evaluated trials (of 4)"
    # Diffusion-QL's published hopper-medium-v2 score is 90.5; the report has none for EDP
    dql_mean = FINAL["dql"][1].mean()
    assert cell(t, rows[("dql", "best")], "paper").startswith("90.5")
    assert cell(t, rows[("dql", "best")], "Δ vs paper") == f"\u2212{90.5 - dql_mean:.1f}"
    assert cell(t, rows[("edp", "best")], "paper") == "" and cell(t, rows[("edp", "best")], "Δ vs paper") == ""
    # best configurations: dql [60, 62, 67] against edp [55, 58, 50]: every run pair and every resample favours dql
    poi = table(c, "Probability of improvement")
    assert poi["rows"] == [["dql", "edp", "1", "3 / 3", "1.00 [1.00, 1.00]"]]


def test_probability_of_improvement_table(tmp_path):
    """One table per report: every pair of algorithms on the benchmarks both ran (best configuration each), the
    likelier better one first (its CI the complement of the other order's), too few runs or no common benchmark
    said in the cell."""
    runs = {("aaa", "b1"): [1.0, 2.0, 3.0], ("bbb", "b1"): [2.0, 3.0, 4.0], ("ccc", "b1"): [9.0, 9.5],
            ("aaa", "b2"): [10.0, 20.0, 30.0, 40.0], ("bbb", "b2"): [25.0, 35.0, 45.0], ("ddd", "b3"): [1.0, 2.0, 3.0]}
    rows = [{"sweep": "pairs", "trial_id": f"{algo}-{bench}", "algorithm": algo, "dataset": f"generated:{bench}",
             "env": "", "seed": seed, "step": 100, "eval/normalized_score": score, "status": "TERMINATED"}
            for (algo, bench), scores in runs.items() for seed, score in enumerate(scores)]
    d = tmp_path / "pairs"
    d.mkdir()
    pd.DataFrame(rows).to_parquet(d / "metrics.parquet", index=False)
    c = parse(report.build_report([str(d)], str(tmp_path / "out")))
    poi = table(c, "Probability of improvement")
    assert [r[:4] for r in poi["rows"]] == [
        ["bbb", "aaa", "2", "6 / 7"],          # bbb first: it is the likelier better one
        ["aaa", "ccc", "1", "3 / 2"], ["aaa", "ddd", "0", "—"], ["bbb", "ccc", "1", "3 / 2"],
        ["bbb", "ddd", "0", "—"], ["ccc", "ddd", "0", "—"]]
    # b1: bbb beats aaa in 6 of 9 pairs and ties 2 -> 7/9; b2: 9 of 12 -> 3/4; averaged over the two benchmarks
    p, lo, hi = map(float, re.match(r"^([\d.]+) \[([\d.]+), ([\d.]+)\]$", poi["rows"][0][4]).groups())
    assert p == pytest.approx((7 / 9 + 3 / 4) / 2, abs=0.005)
    _, lo_ab, hi_ab = report.probability_of_improvement([runs[("aaa", "b1")], runs[("aaa", "b2")]],
                                                        [runs[("bbb", "b1")], runs[("bbb", "b2")]])
    assert (lo, hi) == (round(1 - hi_ab, 2), round(1 - lo_ab, 2)) and lo < p < hi
    assert poi["rows"][1][4] == "— (needs ≥ 3 runs of each per benchmark)"
    assert poi["rows"][2][4] == "— (no benchmark in common)"


def test_best_config_importances_cost_failures_metadata(built):
    c = parse(built)
    best = table(c, "Best configuration of toy: dql")
    assert ["eta", "1", "yes"] in best["rows"] and ["n_timesteps", "5", "fixed"] in best["rows"]
    ranked = table(c, "Trials of toy: dql")
    order = np.argsort(-FINAL["dql"].mean(axis=1))
    assert [r[1] for r in ranked["rows"]] == [trial_id("dql", i) for i in order]
    imp = [t for t in c.tables if t["caption"].startswith("Parameter importances")]
    assert len(imp) == 2 and all(t["rows"][0][0] == "eta" for t in imp)
    cost = table(c, "Compute cost")
    dql = next(r for r in cost["rows"] if r[0] == "dql")
    # 3 trials x 40 s wall, 2 reserved CPUs each (1 worker x 1 + 2 eval actors x 0.5)
    assert cell(cost, dql, "trial wall time") == "0:02:00"
    assert cell(cost, dql, "CPU-hours") == f"{3 * 40 / 3600 * 2:.3f}"
    assert cell(cost, dql, "GPU-hours") == "0.000"
    assert cell(cost, dql, "mean steps/s (time/steps_per_s)") == "100.0"
    assert cell(cost, dql, "eval time") == "0:00:12"   # 3 trials x 4 evaluations x 1 s
    failed = table(c, "1 of 7 trials failed")
    assert failed["rows"][0][1] == "edp999_00099" and failed["rows"][0][-1] == FAILED_ERROR
    text = open(built, encoding="utf-8").read()
    assert "3 trial(s) × 3 seed(s) (0, 1, 2) × up to 4000 gradient steps" in text     # budget at the top
    assert text.index("Budget") < text.index("Results")
    assert "10 evaluation episodes per evaluation" in text
    assert "optuna" in text and "pandas" in text and "Git commit" in text and '"batch_size": 256' in text


def test_generated_and_pusht_references():
    assert report.paper_reference("dql", "generated:pendulum-medium").label == "n/a (generated data)"
    assert report.paper_reference("dql", "d4rl:walker2d-medium-expert-v2").value == 110.1
    assert report.paper_reference("dql", "d4rl:hopper-medium-v0").value is None   # other data than the paper's
    assert report.paper_reference("edp", "d4rl:hopper-medium-v2").value is None
    # the IQL paper's baselines (REFERENCE.md), and a generated locomotion dataset shows D4RL's number, said so
    assert [report.paper_reference(a, "d4rl:hopper-medium-v2").value for a in ("bc", "td3bc", "iql")] == [52.9, 59.3, 66.3]
    gen = report.paper_reference("bc", "generated:walker2d-medium")
    assert gen.value == 75.3 and "not this generated data" in gen.label
    assert report.paper_reference("dql", "generated:hopper-medium").value == 90.5
    assert report.paper_reference("edp", "generated:hopper-medium").label == "n/a (generated data)"
    assert report.paper_reference("diffusion_policy", "pusht:datasets/pusht/x.zarr").value == 91.0
    assert report.paper_reference("diffusion_policy", "pusht:x.zarr", params={"backbone": "transformer"}).value == 79.0
    # the paper budget is the algorithm's own: Diffusion Policy's step count is not shown next to IBC
    assert "210k" in report.paper_budget("diffusion_policy", "pusht:x.zarr")
    assert report.paper_budget("ibc", "pusht:x.zarr") == "" and report.paper_budget("bet", "pusht:x.zarr") == ""
    assert report.paper_budget("dql", "generated:pendulum-medium") == "2M gradient steps"


def test_comparison_of_two_sweeps_generated_data_and_failures(results_dir, tmp_path):
    """Two sweeps in one report: generated data (no paper number), a categorical parameter, a trial
    stopped early, and a sweep where every trial failed before evaluating (no eval columns at all)."""
    rows = []
    for i, (eta, sched) in enumerate([(0.5, "vp"), (2.0, "cosine"), (8.0, "vp"), (1.0, "cosine")]):
        for step in (100, 200) if i != 3 else (100,):   # trial 3 was stopped early by ASHA at step 100
            rows.append({"sweep": "gen", "trial_id": f"g{i}", "algorithm": "dql", "dataset": "generated:pendulum-medium",
                         "env": "Pendulum-v1", "seed": 0, "step": step, "config/eta": eta, "config/schedule": sched,
                         "eval/normalized_score": 10.0 * i + step / 10, "status": "TERMINATED"})
    gen = tmp_path / "gen.parquet"
    pd.DataFrame(rows).to_parquet(gen, index=False)
    dead = tmp_path / "dead.parquet"
    pd.DataFrame([{"sweep": "dead", "trial_id": "d0", "algorithm": "bc", "dataset": "generated:pendulum-medium",
                   "seed": 0, "step": 0, "status": "ERROR", "error": "ValueError: boom"}]).to_parquet(dead, index=False)
    index = report.build_report([results_dir, str(gen), str(dead)], str(tmp_path / "cmp"))
    c = parse(index)
    assert c.problems == [] and c.stack == []
    t = table(c, "Final normalized score on generated:pendulum-medium (Pendulum-v1)")
    best = next(r for r in t["rows"] if r[1].startswith("best config"))
    # g3 scored higher at step 100 than g0 did, but only full-budget trials compete: g2 (40) wins
    assert "g2" in best[1] and cell(t, best, "mean ± std") == "40.0 (1 seed)"
    assert cell(t, best, "paper") == "n/a (generated data)" and cell(t, best, "Δ vs paper") == ""
    agg = table(c, "Aggregate over benchmarks")
    dql = next(r for r in agg["rows"] if r[0] == "dql")
    # best config per benchmark, pooled: 3 + 1 runs
    assert cell(agg, dql, "benchmarks") == "2" and cell(agg, dql, "runs") == "4"
    assert cell(agg, dql, "IQM [95% CI]") == "— (4 runs; needs ≥ 5)"
    # two benchmarks: the performance profiles of the best configurations
    assert os.path.isfile(tmp_path / "cmp" / "figures" / "performance-profiles.png")
    assert "Performance profiles" in open(index).read()
    assert table(c, "Best configuration of gen: dql")["rows"] == [["eta", "8", "yes"], ["schedule", "vp", "yes"]]
    failed = table(c, "2 of 12 trials failed")
    assert ["dead", "d0", "bc", "0", "ValueError: boom"] in failed["rows"]


def test_reads_what_results_writes(tmp_path):
    """The platform's own writer (platform.results) -> report: the schemas agree."""
    from platform import results

    history = [{"step": step, "time/total_s": step / 10, "time/eval_s": 0.5, "time/steps_per_s": 20.0,
                "node/train": "n1", "node/eval": "n1",
                **{f"seed{s}/{k}": v for s in (0, 1) for k, v in
                   (("train/loss", 1.0 / step), ("eval/normalized_score", step / 10 + s), ("eval/episodes", 2))}}
               for step in (20, 40)]
    rows = [r for i, lr in enumerate((1e-4, 1e-3, 1e-2)) for r in results.rows_from_history(
        history, sweep="w", trial_id=f"t{i}", algorithm="bc", dataset="generated:pendulum-medium", env="Pendulum-v1",
        seeds=[0, 1], params={"lr": lr}, status="TERMINATED", error=None)]
    path = results.write_frame(pd.DataFrame(rows), str(tmp_path / "w" / "metrics.parquet"))
    c = parse(report.build_report([str(tmp_path / "w")], str(tmp_path / "out")))
    t = table(c, "Final normalized score on generated:pendulum-medium (Pendulum-v1)")
    assert cell(t, t["rows"][0], "mean ± std") == f"{np.mean([4.0, 5.0]):.1f} ± {np.std([4.0, 5.0], ddof=1):.1f}"
    assert "2 evaluation episodes per evaluation" in open(os.path.join(tmp_path, "out", "index.html")).read()
    assert os.path.exists(path)


# ----------------------------------------------------------------------------- (c) HTML, (d) figures


def test_html_well_formed_and_self_contained(built):
    c = parse(built)
    assert c.doctype
    assert c.problems == [] and c.stack == []
    for tag in ("html", "head", "body", "title"):
        assert c.counts.get(tag) == 1, tag
    assert c.imgs and all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in c.imgs)
    md = open(os.path.join(os.path.dirname(built), "README.md"), encoding="utf-8").read()
    for m in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert os.path.exists(os.path.join(os.path.dirname(built), m)), m
    assert len(re.findall(r"!\[", md)) == len(c.imgs)


def test_figures_png_and_svg(built):
    fig_dir = os.path.join(os.path.dirname(built), "figures")
    pngs = sorted(f for f in os.listdir(fig_dir) if f.endswith(".png"))
    # algorithm comparison + per-study curves (2) + sensitivity (2)
    assert len(pngs) == 5, pngs
    for f in pngs:
        data = open(os.path.join(fig_dir, f), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f
        svg = open(os.path.join(fig_dir, f[:-4] + ".svg"), encoding="utf-8").read()
        assert "<svg" in svg and len(svg) > 10_000, f


# ----------------------------------------------------------------------------- (e) errors


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "platform.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_clear_errors(tmp_path):
    missing = str(tmp_path / "nope" / "metrics.parquet")
    with pytest.raises(report.ReportError, match=f"^no results at {re.escape(missing)}$"):
        report.build_report([missing], str(tmp_path / "out"))
    with pytest.raises(report.ReportError, match="^no results at .*no metrics.parquet"):
        report.build_report([str(tmp_path)], str(tmp_path / "out"))
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"this is not parquet\n" * 10)
    with pytest.raises(report.ReportError, match=f"^{re.escape(str(garbage))}: not a readable Parquet file$"):
        report.build_report([str(garbage)], str(tmp_path / "out"))
    partial = tmp_path / "partial.parquet"
    make_frame().drop(columns=["seed", "step"]).to_parquet(partial, index=False)
    with pytest.raises(report.ReportError, match="missing required column\\(s\\): seed, step$"):
        report.build_report([str(partial)], str(tmp_path / "out"))


def test_cli_exit_codes(tmp_path, results_dir):
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"\x00garbage")
    for path, msg in ((str(tmp_path / "missing.parquet"), "no results at"),
                      (str(garbage), "not a readable Parquet file")):
        out = run_cli(path, "--out", str(tmp_path / "out"))
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], out.stderr
    out = run_cli(results_dir, "--out", str(tmp_path / "ok"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "ok" / "index.html")


# ----------------------------------------------------------------------------- (f) headless Chromium


def test_renders_in_headless_chromium(built, tmp_path, chromium):
    shot = tmp_path / "shot.png"
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
                          "--enable-logging=stderr", "--v=0", "file://" + os.path.abspath(built)],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, out.stderr[-2000:]
    # Chromium logs page console output as "[...:INFO:CONSOLE:1] "msg", source: ..." (checked by hand
    # with a page that calls console.error and an undefined function); dbus noise does not match.
    bad = [line for line in out.stderr.splitlines() if re.search(r"uncaught|console", line, re.IGNORECASE)]
    assert bad == [], bad


def test_protocols_read_each_run_as_named():
    """final = last evaluation; best = max over evaluations; last_k_mean = mean of the last k."""
    rows = [{"sweep": "p", "trial_id": "t0", "algorithm": "dql", "dataset": "generated:pendulum-medium", "env": "",
             "seed": 0, "step": step, "eval/normalized_score": score, "status": "TERMINATED"}
            for step, score in zip(range(1, 13), [5.0, 90.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 85.0, 1.0])]
    df = report._normalize(pd.DataFrame(rows))
    assert report.final_scores(df, "final")["score"].tolist() == [1.0]
    assert report.final_scores(df, "best")["score"].tolist() == [90.0]
    assert report.final_scores(df, "last_k_mean", k=10)["score"].tolist() == [np.mean([10, 20, 30, 40, 50, 60, 70, 80, 85, 1])]
    assert report.final_scores(df, "best")["final_step"].tolist() == [12]
    with pytest.raises(report.ReportError, match="unknown protocol"):
        report.final_scores(df, "median")
    assert "best, online model selection" in report.paper_reference("dql", "d4rl:hopper-medium-v2").label


CHECKED_IN = sorted(d for d in glob.glob(os.path.join(report.REPO_ROOT, "reports", "*"))
                    if os.path.exists(os.path.join(d, "metrics.parquet")))


def _tables(markdown: str) -> list[str]:
    """The Markdown table lines of a report (numbers and labels; not the run-metadata prose)."""
    return [line for line in markdown.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("report_dir", CHECKED_IN, ids=os.path.basename)
def test_checked_in_reports_rebuild_from_the_repo(report_dir, tmp_path):
    """Each checked-in report carries its results; rebuilding it gives the same tables, with no machine's paths."""
    out = tmp_path / "rebuilt"
    report.build_report([report_dir], str(out))
    rebuilt = (out / "README.md").read_text()
    assert _tables(rebuilt) == _tables(open(os.path.join(report_dir, "README.md")).read())
    assert "/root/" not in rebuilt and "/home/" not in rebuilt and "/tmp/" not in rebuilt
    # nor in the results beside it: datasets there are labels too (platform.results.write_portable)
    df = pd.read_parquet(os.path.join(report_dir, "metrics.parquet"))
    assert not any(":/" in str(v) or str(v).startswith("/") for v in df["dataset"].unique()), df["dataset"].unique()
    if os.path.exists(os.path.join(report_dir, "spec.json")):
        spec = json.load(open(os.path.join(report_dir, "spec.json")))
        assert not os.path.isabs(spec.get("path", "")) and ":/" not in str(spec.get("dataset", "")), spec


def test_pareto_front_and_paper_default(tmp_path):
    """A two-objective study (search.objectives) gets a Pareto figure and table; the trial that ran the paper's
    setting is compared with the best found on the same seeds."""
    # (K, score per seed, act ms): K=5 fast and good, K=20 better and slower, K=50 worse and slowest (dominated),
    # K=10 slower than K=5 and worse (dominated)
    trials = {5: ([80.0, 84.0], 2.0), 10: ([70.0, 72.0], 4.0), 20: ([90.0, 94.0], 8.0), 50: ([60.0, 64.0], 20.0)}
    rows = []
    for i, (k, (scores, ms)) in enumerate(trials.items()):
        for seed, score in zip([0, 1], scores):
            rows.append({"sweep": "front", "trial_id": f"t{k}", "algorithm": "edp", "dataset": DATASET, "env": ENV,
                         "config/n_timesteps": k, "status": "TERMINATED", "error": None, "seed": seed, "step": 1000,
                         "eval/normalized_score": score, "eval/act_ms": ms + 0.1 * seed, "paper_default": k == 10})
    d = tmp_path / "front"
    d.mkdir()
    pd.DataFrame(rows).to_parquet(d / "metrics.parquet", index=False)
    spec = {**SPEC, "name": "front", "algorithm": "edp",
            "search": {"metric": "eval/normalized_score", "mode": "max", "space": {"n_timesteps": {"logint": [5, 50]}},
                       # as spec.json stores it: keys sorted, so the first objective comes second here
                       "objectives": {"eval/act_ms": "min", "eval/normalized_score": "max"}}}
    (d / "spec.json").write_text(json.dumps(spec))
    out = str(tmp_path / "out")
    c = parse(report.build_report([str(d)], out))
    front = table(c, "Pareto front of front")
    assert [r[0] for r in front["rows"]] == ["t5", "t20"]  # cheapest first
    assert cell(front, front["rows"][1], "eval/normalized_score (max)") == "92.0"
    md = open(os.path.join(out, "README.md")).read()
    assert "against the paper's setting (trial `t10`, run first) 71.0 ± 1.4 on the same seeds [0, 1]" in md
    assert "Δ = +21.0" in md
    assert any(f.startswith("pareto-") and f.endswith(".svg") for f in os.listdir(os.path.join(out, "figures")))
    from platform.report.stats import pareto_front
    assert pareto_front([(1, 5), (2, 5), (2, 4), (0, 1)], ("max", "min")) == [False, False, True, True]


def test_study_protocol_is_the_reports_default(tmp_path, results_dir):
    """A study's report.protocol (the Push-T table: last_k_mean, the paper's) is what its report uses by default;
    --protocol overrides it."""
    d = tmp_path / "proto"
    d.mkdir()
    shutil.copy(os.path.join(results_dir, "metrics.parquet"), d / "metrics.parquet")
    (d / "spec.json").write_text(json.dumps({**SPEC, "report": {"protocol": "last_k_mean"}}))
    md = open(os.path.join(os.path.dirname(report.build_report([str(d)], str(tmp_path / "a"))), "README.md")).read()
    assert "protocol `last_k_mean`" in md
    md = open(os.path.join(os.path.dirname(report.build_report([str(d)], str(tmp_path / "b"), "final")),
                           "README.md")).read()
    assert "protocol `final`" in md


def test_labels_name_datasets_not_paths(tmp_path):
    """No report carries a path of the machine that made it: datasets are named by what they are."""
    from platform.report.stats import dataset_label

    assert dataset_label("pusht:/data/x/pusht_cchi_v7_replay.zarr") == "pusht"
    assert dataset_label("d4rl:/home/me/d4rl/hopper_medium-v2.hdf5") == "d4rl:hopper_medium-v2"
    assert dataset_label("generated:pendulum-medium") == "generated:pendulum-medium"
    d = tmp_path / "pt"
    d.mkdir()
    secret = "/very/private/place"
    df = make_frame().assign(dataset=f"pusht:{secret}/pusht_cchi_v7_replay.zarr", env="pusht")
    df.to_parquet(d / "metrics.parquet", index=False)
    (d / "spec.json").write_text(json.dumps({**SPEC, "dataset": f"pusht:{secret}/pusht_cchi_v7_replay.zarr",
                                             "path": f"{secret}/study.yaml"}))
    out = report.build_report([str(d)], str(tmp_path / "out"))
    for root, _, files in os.walk(os.path.dirname(out)):
        for f in files:
            assert secret not in f
            if f.endswith((".md", ".html")):
                assert secret not in open(os.path.join(root, f), encoding="utf-8").read(), f


def test_results_beside_a_report_carry_labels_not_paths(tmp_path):
    """platform.results.write_portable (what a sweep copies beside its report): dataset paths become labels in the
    Parquet and in spec.json, everything else is unchanged, and the report built from the copy is the same."""
    from platform.results import write_portable

    secret = "/very/private/place"
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    df = make_frame().assign(dataset=f"pusht:{secret}/pusht_cchi_v7_replay.zarr", env="pusht")
    df.to_parquet(src / "metrics.parquet", index=False)
    (src / "spec.json").write_text(json.dumps({**SPEC, "dataset": f"pusht:{secret}/pusht_cchi_v7_replay.zarr",
                                               "path": f"{secret}/study.yaml"}))
    write_portable(str(src / "metrics.parquet"), str(dst))
    got = pd.read_parquet(dst / "metrics.parquet")
    assert list(got["dataset"].unique()) == ["pusht"]
    pd.testing.assert_frame_equal(got.drop(columns="dataset"), df.drop(columns="dataset"))
    assert secret not in (dst / "spec.json").read_text() and json.loads((dst / "spec.json").read_text())["dataset"] == "pusht"
    a = report.build_report([str(src)], str(tmp_path / "a"))
    b = report.build_report([str(dst)], str(tmp_path / "b"))
    assert _tables(open(a.replace("index.html", "README.md")).read()) == _tables(open(b.replace("index.html", "README.md")).read())
