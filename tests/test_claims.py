"""The claims report (platform/report/claims.py) and the EDP speed-up analysis (platform/report/speedup.py): the verdict
rule on synthetic evidence, each claim's test on hand-made Parquet rows, the clocks on rows with known step rates, the
builder on the checked-in Parquet files, and that reports/claims/README.md is what the builder makes from the repo.
Seconds."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from platform.report import claims, speedup as sp
from platform.report.claims import CONTRADICTED, HOLDS, NOT_SHOWN, Evidence, verdict

REPO = claims.REPO_ROOT


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("met, opposite, conclusive, expected", [
    (True, False, False, HOLDS),            # shown below the paper's budget: holds
    (True, False, True, HOLDS),
    (False, True, True, CONTRADICTED),      # the opposite, at the budget the claim presupposes
    (False, True, False, NOT_SHOWN),        # the opposite, under-trained: no evidence against the claim
    (False, False, True, NOT_SHOWN),        # neither way
    (False, False, False, NOT_SHOWN),
])
def test_verdict_rule(met, opposite, conclusive, expected):
    assert verdict(Evidence("x", met, opposite, conclusive)) == expected


def test_no_results_is_not_shown():
    assert verdict(None) == NOT_SHOWN


# ----------------------------------------------------------------------------- each claim's test on hand-made rows


def _toy(rows: list[tuple[str, int, int, dict]], dataset: str) -> pd.DataFrame:
    """rows: (algorithm, seed, step, eval metrics) -> Parquet-like rows, one trial per algorithm."""
    return pd.DataFrame([{"trial_id": f"t_{a}", "algorithm": a, "dataset": dataset, "seed": s, "step": step,
                          "eval/normalized_score": 50.0, **m} for a, s, step, m in rows])


def _modes(cov_dp: float, off_dp: float, step: int) -> pd.DataFrame:
    good = {"eval/modes_covered": cov_dp, "eval/off_support": off_dp}
    return _toy([(a, s, step, good) for a in ("diffusion_policy", "dql") for s in (0, 1)]
                + [("bc", s, step, {"eval/modes_covered": 0.0, "eval/off_support": 1.0}) for s in (0, 1)], "toy:modes8")


def test_modes_claim():
    assert verdict(claims.modes_evidence({"modes": _modes(1.0, 0.05, 1000)})) == HOLDS
    assert verdict(claims.modes_evidence({"modes": _modes(1.0, 0.5, 1000)})) == NOT_SHOWN    # all modes, off support
    assert verdict(claims.modes_evidence({"modes": _modes(0.25, 0.1, 1000)})) == NOT_SHOWN   # collapse, under-trained
    assert verdict(claims.modes_evidence({"modes": _modes(0.25, 0.1, claims.TOY_PAPER_STEPS)})) == CONTRADICTED
    ev = claims.modes_evidence({"modes": _modes(1.0, 0.05, 1000)})
    assert "diffusion_policy 8.0/8, 5%" in ev.measured and "bc 0.0/8, 100%" in ev.measured
    assert claims.modes_evidence({}) is None


def test_bandit_claim():
    def frame(best, off, step):
        return {"bandit": _toy([("dql", s, step, {"eval/best_mode_share": b, "eval/off_support": o})
                                for s, (b, o) in enumerate(zip(best, off))], "toy:bandit")}
    assert verdict(claims.bandit_evidence(frame([0.95, 0.99], [0.0, 0.02], 1000))) == HOLDS
    assert verdict(claims.bandit_evidence(frame([0.95, 0.5], [0.0, 0.02], 10**6))) == NOT_SHOWN  # one seed misses
    assert verdict(claims.bandit_evidence(frame([0.0, 0.0], [1.0, 1.0], 1000))) == NOT_SHOWN
    assert verdict(claims.bandit_evidence(frame([0.0, 0.0], [1.0, 1.0], claims.TOY_PAPER_STEPS))) == CONTRADICTED


def _run(trial: str, algorithm: str, seed: int, sps: float, scores: list[float], k: int = 100,
         every: int = 100, eval_s: float = 0.0) -> list[dict]:
    """One seed's rows: an evaluation every ``every`` steps at ``sps`` steps/s, each evaluation costing ``eval_s``."""
    rows, wall = [], 0.0
    for i, score in enumerate(scores, 1):
        wall += every / sps + eval_s
        rows.append({"trial_id": trial, "algorithm": algorithm, "dataset": "generated:pendulum-medium", "seed": seed,
                     "step": i * every, "time_s": wall, "time/steps_per_s": sps, "config/n_timesteps": k,
                     "eval/normalized_score": score})
    return rows


def _speedup_frame(dql_scores: list[list[float]], edp_scores: list[list[float]]) -> pd.DataFrame:
    rows = []
    for seed, s in enumerate(dql_scores):
        rows += _run("t_dql", "dql", seed, 1.0, s, eval_s=50.0)
    for seed, s in enumerate(edp_scores):
        rows += _run("t_edp", "edp", seed, 10.0, s, eval_s=5.0)
    return pd.DataFrame(rows)


def _sides(df: pd.DataFrame) -> dict:
    """The two studies of the comparison: EDP's and Diffusion-QL's."""
    return {"edp_speedup": df[df["algorithm"] == "edp"], "edp_speedup_dql": df[df["algorithm"] == "dql"]}


def test_speedup_clocks_and_claim():
    # EDP: 10 steps/s, evaluations every 100 steps cost 5 s; DQL: 1 step/s, 50 s per evaluation
    df = _speedup_frame([[0, 40, 85], [0, 30, 60]], [[0, 90, 95], [50, 82, 90]])
    s = sp.speedup(df)
    edp, dql = s.reach["edp"], s.reach["dql"]
    assert [(r.step, r.train_s, r.wall_s, r.reached) for r in edp] == [(200, 20.0, 30.0, True), (200, 20.0, 30.0, True)]
    assert (dql[0].step, dql[0].train_s, dql[0].wall_s, dql[0].reached) == (300, 300.0, 450.0, True)
    assert (dql[1].step, dql[1].train_s, dql[1].reached) == (300, 300.0, False)      # never at 80: a lower bound
    assert s.ratio_bounds() == (15.0, False)                                            # 300 / 20, DQL seed 1 a bound
    assert s.equal_s == 30.0                                                            # EDP's whole run
    assert s.at_equal["dql"][0] == (float("nan"), 0, 30.0) or np.isnan(s.at_equal["dql"][0][0])
    assert s.at_equal["edp"][1][:2] == (90.0, 300)
    assert s.cost["dql"] == pytest.approx(1.0) and s.cost["edp"] == pytest.approx(0.1)
    assert sp.implied_at(dql, 10.0) == [(3000.0, True), (3000.0, False)]
    ev = claims.speedup_evidence(_sides(df))
    assert verdict(ev) == HOLDS and "EDP 20 s / 20 s, DQL 300 s / > 300 s" in ev.measured
    assert "≥ 15.0x" in ev.measured
    assert claims.speedup_evidence({"edp_speedup": _sides(df)["edp_speedup"]}) is None    # one side only: no row
    # DQL first on every seed, every run at 80: contradicted; EDP short of 80 on a seed: not shown
    slow_edp = [[0.0] * 11 + [81.0], [0.0] * 12 + [85.0]]               # 120 s and 130 s against DQL's 100 s
    assert verdict(claims.speedup_evidence(_sides(_speedup_frame([[90], [85]], slow_edp)))) == CONTRADICTED
    assert verdict(claims.speedup_evidence(_sides(_speedup_frame([[0, 0, 0]], [[0, 90], [0, 0]])))) \
        == NOT_SHOWN


def test_speedup_prefers_the_cpu_clock():
    """With time/steps_per_cpu_s recorded, the training clock is CPU seconds: a run slowed on the wall clock by other
    work on the cores (here EDP at 5 wall steps/s but 10 per CPU s) keeps its CPU time."""
    df = _speedup_frame([[0, 40, 85]], [[0, 90, 95]])
    df["time/steps_per_cpu_s"] = df["time/steps_per_s"]
    df.loc[df["algorithm"] == "edp", "time/steps_per_s"] = 5.0
    s = sp.speedup(df)
    assert s.reach["edp"][0].train_s == 20.0 and s.cost["edp"] == pytest.approx(0.1)
    assert sp.speedup(df.drop(columns="time/steps_per_cpu_s")).reach["edp"][0].train_s == 40.0  # the wall clock


def test_k1000_cost_leaves_out_the_warm_up_window():
    rows = _run("t", "dql", 0, 0.1, [0.0, 0.0, 0.0, 0.0], k=1000, every=10)
    rows[0]["time/steps_per_s"] = 0.01                                 # the first window: warm-up, 10x slower
    assert claims._costs(pd.DataFrame(rows)) == {"dql": pytest.approx(10.0)}


def test_beats_per_benchmark():
    def frame(dql):
        return pd.DataFrame([{"trial_id": f"t_{a}", "algorithm": a, "dataset": "generated:hopper-medium", "seed": s,
                              "step": 2500, "eval/normalized_score": v}
                             for a, vals in (("dql", dql), ("iql", [50, 60]), ("bc", [40, 40])) for s, v in enumerate(vals)])
    assert claims._beats(frame([61, 70]), ["dql"], ["bc", "iql"])[1:] == (True, False)   # every seed above IQL's 55
    assert claims._beats(frame([54, 70]), ["dql"], ["bc", "iql"])[1:] == (False, False)
    assert claims._beats(frame([10, 20]), ["dql"], ["bc", "iql"])[1:] == (False, True)


# ----------------------------------------------------------------------------- the checked-in results


def test_builder_reads_the_checked_in_parquet():
    found = {c.studies[0]: (ev, v) for c, ev, v in claims.rows(REPO)}
    assert len(found) == len(claims.CLAIMS) == 6
    modes = pd.read_parquet(os.path.join(REPO, "reports", "modes", "metrics.parquet"))
    last = claims.last_evals(modes)
    bet = last[last["algorithm"] == "bet"]["eval/modes_covered"].mean() * 8
    ev, v = found["modes"]
    assert f"bet {bet:.1f}/8" in ev.measured and "1,000 steps x 2 seeds" in ev.measured
    loco = pd.read_parquet(os.path.join(REPO, "reports", "locomotion_table", "metrics.parquet"))
    hop = claims.last_evals(loco)
    hop = hop[(hop["dataset"] == "generated:hopper-medium") & (hop["algorithm"] == "td3bc")]
    assert f"best baseline td3bc {hop['eval/normalized_score'].mean():.1f}" in found["locomotion_table"][0].measured
    assert found["dp_horizon"] == (None, NOT_SHOWN) or found["dp_horizon"][0] is not None
    for c in claims.CLAIMS:  # rows that need a GPU name the command that runs them
        if c.studies[0] in ("locomotion_table", "pusht_table_cpu", "dp_horizon"):
            assert "python -m platform.sweep search_spaces/" in c.gpu
    # the speed-up's two checked-in halves make its per-seed table: one row per (algorithm, seed)
    dfs = {s: claims.load(s, REPO) for s in claims.SPEEDUP_STUDIES}
    table = claims.speedup_table(dfs)
    assert table is not None and sorted((r[0], r[1]) for r in table.rows) == \
        [("dql", "0"), ("dql", "1"), ("dql", "2"), ("edp", "0"), ("edp", "1"), ("edp", "2")]


def test_checked_in_claims_report_is_what_the_builder_makes(tmp_path):
    checked_in = os.path.join(REPO, "reports", "claims", "README.md")
    assert os.path.exists(checked_in), "reports/claims/README.md: run `python -m platform.report.claims`"
    claims.write(str(tmp_path), REPO)
    with open(checked_in) as a, open(tmp_path / "README.md") as b:
        assert a.read() == b.read(), "reports/claims is stale: rebuild it with `python -m platform.report.claims`"
    html = (tmp_path / "index.html").read_text()
    assert '<a href="../modes/index.html#modes-of-the-evaluated-actions">' in html and "](" not in html
