"""The benchmark suite's --quick mode: every part it runs writes finite, positive numbers to Parquet.

The default run covers training and sampling (about a minute on 2 busy cores); the evaluation part
starts 1, 2 and 4 Ray rollout actors and took 9 minutes on a loaded machine, so it is ``slow``."""
import math

import pyarrow.parquet as pq
import pytest

from benchmarks import suite


@pytest.fixture(autouse=True)
def _restore_denormals():
    """suite.main turns on flush-to-zero for the process; leave the pytest process as it was."""
    yield
    import torch

    torch.set_flush_denormal(False)


def _check(tmp_path, rows, parts, cases):
    table = pq.read_table(tmp_path / "benchmarks.parquet").to_pandas()
    assert list(table.columns) == suite.COLUMNS
    assert len(table) == len(rows)
    assert set(table["part"]) == set(parts)
    assert table["value"].map(math.isfinite).all() and (table["value"] > 0).all()
    with_base = table[table["baseline"] != ""]
    assert (with_base["baseline_value"] > 0).all() and with_base["ratio"].map(math.isfinite).all()
    for case in cases:
        assert case in set(table["case"]), case
    assert table["quick"].all() and (table["threads"] == 1).all()
    md = (tmp_path / "benchmarks.md").read_text()
    assert md.count("\n|") == len(rows) + 2
    return table, md


def test_quick_training_and_sampling(tmp_path):
    rows = suite.main(["--quick", "--parts", "training,sampling", "--out", str(tmp_path), "--threads", "1"])
    table, md = _check(tmp_path, rows, {"training", "sampling"},
                       ("dql K=5", "edp K=1000", "dp_cnn", "dp_transformer", "ddpm K=5",
                        "dpm_solver 15 steps (K=1000)", "dql K=5, 2 seeds vmapped"))
    # every training case has its eager baseline and every DDPM case its plain chain
    assert len(table[table["baseline"] != ""]) >= 8
    assert "| training | dql K=5 |" in md


@pytest.mark.slow
def test_quick_suite_writes_parquet_and_markdown(tmp_path, ray_local):
    rows = suite.main(["--quick", "--parts", "training,sampling,evaluation", "--out", str(tmp_path),
                       "--threads", "1"])
    table = pq.read_table(tmp_path / "benchmarks.parquet").to_pandas()
    assert list(table.columns) == suite.COLUMNS
    assert len(table) == len(rows)
    assert set(table["part"]) == {"training", "sampling", "evaluation"}
    assert table["value"].map(math.isfinite).all() and (table["value"] > 0).all()
    # every measurement that has a baseline has a finite positive baseline and ratio
    with_base = table[table["baseline"] != ""]
    assert len(with_base) >= 10
    assert (with_base["baseline_value"] > 0).all() and with_base["ratio"].map(math.isfinite).all()
    cases = set(table["case"])
    for case in ("dql K=5", "edp K=1000", "dp_cnn", "dp_transformer", "ddpm K=5", "dpm_solver 15 steps (K=1000)",
                 "Pendulum-v1 2 rollout actor(s)", "dql K=5, 2 seeds vmapped"):
        assert case in cases, case
    assert table["quick"].all() and (table["threads"] == 1).all()
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| training | dql K=5 |" in md and md.count("\n|") == len(rows) + 2


def test_unknown_part_is_an_error(capsys):
    import pytest

    with pytest.raises(SystemExit):
        suite.main(["--parts", "trainig"])
    assert "unknown part" in capsys.readouterr().err


def test_public_dql_needs_a_checkout_of_the_public_code(tmp_path):
    """--public-dql imports the authors' code from a checkout the user fetched; a wrong path is one clear line."""
    import torch

    with pytest.raises(SystemExit, match="no agents/ql_diffusion.py there"):
        suite.public_dql_step(str(tmp_path), suite.transition_batch(4), torch.device("cpu"))


def test_quick_data_parallel_rows(tmp_path):
    """The DDP rows: 2 gloo replicas x B/2 against 1 process x B, and their weights agree to round-off."""
    rows = suite.main(["--quick", "--parts", "parallel", "--out", str(tmp_path), "--threads", "1"])
    table, _ = _check(tmp_path, rows, {"parallel"}, ("dp_cnn DDP 2 replicas x 16 rows", "dp_cnn DDP weights vs 1 process"))
    diff = table.set_index("case").loc["dp_cnn DDP weights vs 1 process", "value"]
    assert diff < 1e-5
