"""The report's budget section (platform/report/accounting.py): one table row per (study, algorithm, dataset), what
every row shares said once above it, and data without reference returns named as such instead of a silent NaN.

The Parquet is tests/test_report.py's hand-made one (2 algorithms x 3 trials x 3 seeds x 4 evaluations + a failed
trial), read here, not changed.
"""
from __future__ import annotations

import json

import numpy as np

from platform import report
from tests.test_report import SPEC, cell, make_frame, parse, table


def build(tmp_path, frame) -> tuple[str, object]:
    results = tmp_path / "results" / "toy"
    results.mkdir(parents=True)
    frame.to_parquet(results / "metrics.parquet", index=False, engine="pyarrow")
    (results / "spec.json").write_text(json.dumps(SPEC))
    html = report.build_report([str(results)], str(tmp_path / "report"))
    return (tmp_path / "report" / "README.md").read_text(), parse(html)


def test_budget_is_one_table(tmp_path):
    markdown, c = build(tmp_path, make_frame())
    budget = table(c, "What was run")
    # batch and evaluation episodes are the same for every row: said once, not a column
    assert budget["header"] == ["study", "algorithm", "dataset", "runs", "evaluations per run", "paper budget"]
    assert "Every run: batch 256 (spec.json); 10 evaluation episodes per evaluation." in markdown
    rows = {cell(budget, r, "algorithm"): r for r in budget["rows"]}
    assert sorted(rows) == ["dql", "edp"] and len(budget["rows"]) == 2
    dql, edp = rows["dql"], rows["edp"]
    assert cell(budget, dql, "study") == "toy" and cell(budget, dql, "dataset") == "d4rl:hopper-medium-v2 (Hopper-v5)"
    assert cell(budget, dql, "runs") == "3 trial(s) × 3 seed(s) (0, 1, 2) × up to 4000 gradient steps"
    assert cell(budget, edp, "runs") == "4 trial(s) × 3 seed(s) (0, 1, 2) × up to 4000 gradient steps"  # + the failed one
    assert cell(budget, dql, "evaluations per run") == "4" and cell(budget, dql, "paper budget") == "2M gradient steps"
    section = markdown[markdown.index("## Budget"):markdown.index("## Results")]
    assert "\n- " not in section  # no line per (algorithm, dataset) any more


def test_budget_names_data_without_reference_returns(tmp_path):
    """Runs on data with no reference returns evaluate (raw returns) with eval/normalized_score NaN: the budget
    table and the sentence under it say so, rather than 'no run reached an evaluation'."""
    frame = make_frame()
    frame["eval/normalized_score"] = np.nan
    markdown, c = build(tmp_path, frame)
    budget = table(c, "What was run")
    for row in budget["rows"]:
        assert cell(budget, row, "evaluations per run") == "4 (no reference returns: no normalized score)"
    assert ("The runs evaluated, but d4rl:hopper-medium-v2 (Hopper-v5) has no reference returns (random and expert) "
            "to normalize by") in markdown
    assert "No run reached an evaluation" not in markdown
    # nothing evaluated at all is still said as before
    frame = frame.drop(columns=["eval/return_mean"])
    markdown, _ = build(tmp_path / "none", frame)
    assert "No run reached an evaluation: there are no scores to report." in markdown
