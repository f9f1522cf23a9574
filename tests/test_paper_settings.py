"""The papers' per-task settings, resolved by the platform, against the public code's tables.

The expected values below are typed from the public code (not read from ``algorithms/paper_settings.py``):
Diffusion-QL's ``main.py`` ``hyperparameters`` (lr, eta, max_q_backup, reward_tune, num_epochs, gn), EDP's
``diffusion/hps.py`` (the same table; EDP's trainer reads ``gn``), IQL's ``configs/*_config.py`` and
``train_offline.py``.  TD3+BC, BC and Diffusion Policy have no per-task table.
"""
import subprocess
import sys

import pytest

import algorithms
from algorithms import EnvSpec
from algorithms.edp import EDP, EDPConfig

# dataset name as a study gives it -> the public row, in the platform's field names
DQL = {
    "d4rl:hopper-medium-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_shaping="none", lr_maxt=2000, grad_norm=9.0),
    "generated:halfcheetah-medium": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_shaping="none", lr_maxt=2000,
                                         grad_norm=9.0),
    "generated:walker2d-medium": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_shaping="none", lr_maxt=2000,
                                      grad_norm=1.0),
    "d4rl:hopper-medium-replay-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_shaping="none", lr_maxt=2000,
                                         grad_norm=4.0),
    "d4rl:halfcheetah-medium-expert-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_shaping="none",
                                              lr_maxt=2000, grad_norm=7.0),
    "antmaze:umaze": dict(lr=3e-4, eta=0.5, max_q_backup=False, reward_shaping="antmaze", lr_maxt=1000, grad_norm=2.0),
    "antmaze:medium-play": dict(lr=1e-3, eta=2.0, max_q_backup=True, reward_shaping="antmaze", lr_maxt=1000,
                                grad_norm=2.0),
    "minari:D4RL/antmaze/large-diverse-v1": dict(lr=3e-4, eta=3.5, max_q_backup=True, reward_shaping="antmaze",
                                                 lr_maxt=1000, grad_norm=7.0),
    "adroit:pen-human": dict(lr=3e-5, eta=0.15, max_q_backup=False, reward_shaping="normalize", lr_maxt=1000,
                             grad_norm=7.0),
    "kitchen:complete": dict(lr=3e-4, eta=0.005, max_q_backup=False, reward_shaping="none", lr_maxt=250, grad_norm=9.0),
    "minari:D4RL/kitchen/mixed-v2": dict(lr=3e-4, eta=0.005, max_q_backup=False, reward_shaping="none", lr_maxt=1000,
                                         grad_norm=10.0),
}
EDP_GN = {"generated:hopper-medium": 9.0, "d4rl:walker2d-medium-v2": 1.0, "d4rl:walker2d-medium-replay-v2": 4.0,
          "adroit:pen-cloned": 8.0, "minari:D4RL/kitchen/partial-v2": 10.0, "antmaze:large-play": 10.0}
IQL = {
    "generated:hopper-medium": dict(expectile=0.7, temperature=3.0, reward_scaling="returns", actor_dropout=0.0),
    "antmaze:medium-diverse": dict(expectile=0.9, temperature=10.0, reward_scaling="antmaze", actor_dropout=0.0),
    "kitchen:partial": dict(expectile=0.7, temperature=0.5, reward_scaling="none", actor_dropout=0.1),
    "adroit:pen-human": dict(expectile=0.7, temperature=0.5, reward_scaling="none", actor_dropout=0.1),
}
NO_TABLE = ["generated:pendulum-medium", "pusht:x/pusht_cchi_v7_replay.zarr", "scripted:lift"]


@pytest.mark.parametrize("dataset,row", DQL.items())
def test_diffusion_ql_resolves_main_py(dataset, row):
    params, per_task = algorithms.resolve_params("dql", dataset, {})
    assert params == row and per_task == sorted(row)
    algorithms.build_config("dql", params)  # the resolved configuration is valid


@pytest.mark.parametrize("dataset,gn", EDP_GN.items())
def test_edp_resolves_hps_gn(dataset, gn):
    params, per_task = algorithms.resolve_params("edp", dataset, {})
    assert params == {"grad_norm": gn} and per_task == ["grad_norm"]

    class Data:  # the library path (no platform): grad_norm None looks the same table up in fit_dataset
        name, rewards, episode_ends = dataset, [0.0, 1.0], [1, 2]

    algo = EDP(EDPConfig(n_timesteps=20, sampler="ddpm"), EnvSpec(3, 2))
    algo.fit_dataset(Data())
    assert algo.grad_norm == gn


@pytest.mark.parametrize("dataset,row", IQL.items())
def test_iql_resolves_its_domain_config(dataset, row):
    params, per_task = algorithms.resolve_params("iql", dataset, {})
    assert params == row and per_task == sorted(row)
    algorithms.build_config("iql", params)


@pytest.mark.parametrize("algorithm", ["dql", "edp", "iql", "td3bc", "bc", "diffusion_policy"])
@pytest.mark.parametrize("dataset", NO_TABLE)
def test_tasks_without_a_row_keep_the_class_defaults(algorithm, dataset):
    assert algorithms.resolve_params(algorithm, dataset, {"x": 1}) == ({"x": 1}, [])


@pytest.mark.parametrize("algorithm", ["td3bc", "bc", "diffusion_policy", "ibc", "lstm_gmm", "bet"])
def test_algorithms_with_one_setting_for_every_task(algorithm):
    assert algorithms.resolve_params(algorithm, "d4rl:hopper-medium-v2", {}) == ({}, [])


def test_the_study_value_always_wins():
    params, per_task = algorithms.resolve_params("dql", "generated:hopper-medium", {"grad_norm": 2.0, "eta": 0.3})
    assert params["grad_norm"] == 2.0 and params["eta"] == 0.3 and params["lr"] == 3e-4
    assert "grad_norm" not in per_task and "eta" not in per_task and "lr" in per_task


def test_dry_run_lists_what_it_resolves():
    out = subprocess.run([sys.executable, "-m", "platform.sweep", "search_spaces/locomotion_table.yaml", "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("dql on generated:hopper-medium" in x and "grad_norm=9.0" in x for x in lines), out.stdout
    assert any("dql on generated:walker2d-medium" in x and "grad_norm=1.0" in x for x in lines), out.stdout
    assert any("edp on generated:halfcheetah-medium" in x and "grad_norm=9.0" in x for x in lines), out.stdout
