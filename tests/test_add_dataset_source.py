"""The README's "Add a dataset source" example, kept true: a source defined here, in the test file, and registered for
the test only (``platform.datasets.register_source``) is read by the dataset loader, validated with a study (its
relative path made absolute, as the table's ``paths`` says) and trained on in a one-trial sweep through the real CLI,
with no edit anywhere else.

The module stays light (numpy and the dataset package only): a sweep's Ray workers import it to read the data.
"""
import os

import numpy as np
import pytest

from platform.datasets import OfflineDataset
from platform.datasets.scores import PENDULUM_EXPERT_SCORE, PENDULUM_RANDOM_SCORE


# ---------------------------------------------------------------- the README's example (keep the two in step)


def check_npz(value: str, cache_dir, validate: bool) -> str:
    """``npz:<file.npz>``: Pendulum-v1 transitions saved with ``numpy.savez``; returns the env to evaluate in."""
    path = os.path.expanduser(value)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset npz:{value}: no such file {path}")
    if validate:
        load_npz(value, cache_dir, None)  # a bad file fails here, before any trial starts
    return "Pendulum-v1"


def load_npz(value: str, cache_dir, allow_generate) -> OfflineDataset:
    with np.load(os.path.expanduser(value)) as f:
        arrays = {k: f[k] for k in ("observations", "actions", "rewards", "next_observations", "terminals",
                                    "timeouts", "episode_ends")}
    return OfflineDataset(**arrays, env_id="Pendulum-v1", name=f"npz:{os.path.basename(value)}",
                          act_low=(-2.0,), act_high=(2.0,),  # Pendulum-v1's torque box
                          ref_min_score=PENDULUM_RANDOM_SCORE, ref_max_score=PENDULUM_EXPERT_SCORE)


# ---------------------------------------------------------------- the tests


KIND = "npz"


@pytest.fixture
def registered():
    from platform.datasets import register_source, unregister_source

    register_source(KIND, check_npz, load_npz, paths=True)
    yield KIND
    unregister_source(KIND)


@pytest.fixture
def npz_file(tmp_path, data_dir):
    """Pendulum transitions from the generated medium dataset, saved as the example's file."""
    from platform.datasets import load_dataset

    d = load_dataset("generated:pendulum-medium")
    n = int(d.episode_ends[9])  # its first 10 episodes
    path = tmp_path / "data" / "pendulum.npz"
    path.parent.mkdir()
    np.savez(path, observations=d.observations[:n], actions=d.actions[:n], rewards=d.rewards[:n],
             next_observations=d.next_observations[:n], terminals=d.terminals[:n], timeouts=d.timeouts[:n],
             episode_ends=d.episode_ends[:10])
    return path


def test_register_source_is_for_the_test_only(registered):
    from platform.datasets import SOURCES, register_source, sources, split_name, unregister_source

    assert KIND in sources() and KIND not in SOURCES and sources()[KIND].paths
    with pytest.raises(ValueError, match="not a dataset kind yet"):
        register_source("d4rl", check_npz, load_npz)  # a built-in kind stays the built-in source
    with pytest.raises(ValueError, match="top-level functions"):
        register_source("npz2", lambda v, c, x: "", load_npz)
    with pytest.raises(ValueError, match="built-in"):
        unregister_source("d4rl")
    unregister_source(KIND)
    assert KIND not in sources()
    with pytest.raises(ValueError, match="unknown kind 'npz'"):
        split_name("npz:x.npz")
    register_source(KIND, check_npz, load_npz, paths=True)  # the fixture unregisters it


def test_loader_and_study_validation(registered, npz_file, tmp_path, monkeypatch):
    """The facade reads the registered source like a built-in one; a study's relative path becomes absolute."""
    from platform.datasets import check_dataset, dataset_env_id, load_dataset
    from platform.spec import load_spec

    name = f"npz:{npz_file}"
    assert check_dataset(name) == dataset_env_id(name) == "Pendulum-v1"
    data = load_dataset(name)
    assert len(data) == int(np.load(npz_file)["episode_ends"][-1]) and data.n_episodes == 10
    assert data.env_spec().act_low == (-2.0,) and data.has_reference and data.name == "npz:pendulum.npz"
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_dataset(f"npz:{tmp_path}/missing.npz")
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "add_dataset_source.yaml"
    study.write_text(STUDY)
    assert load_spec(str(study)).dataset == f"npz:{tmp_path}/data/pendulum.npz"


STUDY = """\
name: add_dataset_source
algorithm: bc
dataset: npz:data/pendulum.npz
train: {steps: 20, batch_size: 64, eval_every: 20, eval_episodes: 2, seeds: [0]}
search: {searcher: random, num_samples: 1, scheduler: fifo, space: {lr: {loguniform: [0.0001, 0.001]}}}
resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}
failure: {max_failures: 0}
"""


@pytest.mark.timeout(900)
def test_one_trial_sweep(registered, npz_file, tmp_path):
    """``python -m platform.sweep`` in a subprocess (which inherits the registration, as its Ray workers do): the
    trial reads the .npz through the registered source, trains and reports a normalized score."""
    import pandas as pd

    from tests.test_sweep import run_cli

    study = tmp_path / "add_dataset_source.yaml"
    study.write_text(STUDY.replace("npz:data/pendulum.npz", f"npz:{npz_file}"))
    out = run_cli([str(study), "--storage", str(tmp_path / "results"), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "add_dataset_source" / "metrics.parquet")
    assert all(d.startswith("npz:") and d.endswith("pendulum.npz") for d in df["dataset"])
    assert set(df["algorithm"]) == {"bc"} and (df["status"] == "TERMINATED").all() and list(df["step"]) == [20]
    assert df["eval/normalized_score"].notna().all() and df["train/loss"].notna().all()


def test_the_readme_shows_this_code():
    """README's "Add a dataset source" code and study are this file's, verbatim (so the tests above keep them true)."""
    import inspect
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme[readme.index("**Add a dataset source**"):]
    code, study = re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S)[:2]
    assert code in inspect.getsource(inspect.getmodule(check_npz)) and study == STUDY
