"""The README's "Add an algorithm" example, kept true: an algorithm defined here, in the test file, and registered for
the test only (``algorithms.register``), goes through ``algorithms.build``, the shared contract checks of
tests/test_contract.py and a one-trial sweep through the real CLI, with no edit anywhere else.

The module stays light (torch and the contract only): a sweep's Ray workers import it to build the algorithm.
"""
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import algorithms
from algorithms.common import Algorithm, coerce_field_types


# ---------------------------------------------------------------- the README's example (keep the two in step)


@dataclass
class MSEBCConfig:
    hidden_dim: int = 256   # the paper's width
    lr: float = 3e-4        # Adam

    def __post_init__(self):
        coerce_field_types(self)  # search spaces hand over numpy numbers; a wrong type names the field


class MSEBC(Algorithm):
    """Deterministic behaviour cloning: an MLP regresses the dataset's actions (MSE), squashed into the action box."""

    data_kind = "transitions"
    tiny_config = {"hidden_dim": 32}  # what the contract tests build

    def __init__(self, config: MSEBCConfig, spec, device):
        self.device = device
        self.low = torch.tensor(spec.act_low, device=device)
        self.high = torch.tensor(spec.act_high, device=device)
        self.net = nn.Sequential(nn.Linear(spec.obs_dim, config.hidden_dim), nn.ReLU(),
                                 nn.Linear(config.hidden_dim, spec.act_dim)).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)

    def _policy(self, obs: torch.Tensor) -> torch.Tensor:  # (B, obs_dim) -> (B, act_dim) inside [low, high]
        return self.low + (self.high - self.low) * (torch.tanh(self.net(obs)) + 1) / 2

    def update(self, batch):
        obs, actions = (batch[k].to(self.device, torch.float32) for k in ("observations", "actions"))
        loss = F.mse_loss(self._policy(obs), actions)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"train/loss": loss.detach()}  # a 0-d tensor: the platform reads it once per report

    @torch.no_grad()
    def act(self, obs):  # (B, 1, obs_dim) -> (B, 1, act_dim)
        return self._policy(obs[:, -1].to(self.device, torch.float32)).unsqueeze(1)

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, d):
        self.net.load_state_dict(d["net"])
        self.opt.load_state_dict(d["opt"])


# ---------------------------------------------------------------- the tests


NAME = "mse_bc"


@pytest.fixture
def registered():
    algorithms.register(NAME, MSEBCConfig, MSEBC)
    yield NAME
    algorithms.unregister(NAME)


def test_register_is_for_the_test_only(registered):
    assert NAME in algorithms.names() and algorithms.get(NAME) == (MSEBCConfig, MSEBC)
    with pytest.raises(ValueError):
        algorithms.register("bc", MSEBCConfig, MSEBC)  # a built-in name stays the built-in algorithm
    algorithms.unregister(NAME)
    assert NAME not in algorithms.names() and NAME not in algorithms.REGISTRY
    algorithms.register(NAME, MSEBCConfig, MSEBC)  # the fixture unregisters it


def test_build_and_the_contract_checks(registered):
    from tests.test_contract import SPEC, check_contract, check_seeded_determinism

    algo = algorithms.build(NAME, {"hidden_dim": 8}, SPEC)
    assert type(algo) is MSEBC and algo.net[0].out_features == 8
    check_contract(NAME)
    check_seeded_determinism(NAME)


STUDY = """\
name: add_algorithm
algorithm: mse_bc
dataset: generated:pendulum-medium
config: {hidden_dim: 32}
train: {steps: 20, batch_size: 64, eval_every: 20, eval_episodes: 2, seeds: [0]}
search: {searcher: random, num_samples: 1, scheduler: fifo, space: {lr: {loguniform: [0.0001, 0.001]}}}
resources: {workers: 1, cpus_per_worker: 0.5, eval_actors: 1, cpus_per_eval_actor: 0.5}
failure: {max_failures: 0}
"""


@pytest.mark.timeout(900)
def test_one_trial_sweep(registered, tmp_path, data_dir):
    """``python -m platform.sweep`` in a subprocess (which inherits the registration, as its Ray workers do)."""
    import pandas as pd

    from tests.test_sweep import run_cli

    spec = tmp_path / "add_algorithm.yaml"
    spec.write_text(STUDY)
    out = run_cli([str(spec), "--storage", str(tmp_path / "results"), "--no-report"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / "add_algorithm" / "metrics.parquet")
    assert set(df["algorithm"]) == {NAME} and (df["status"] == "TERMINATED").all()
    assert list(df["step"]) == [20] and df["eval/normalized_score"].notna().all() and df["train/loss"].notna().all()


def test_the_readme_shows_this_code():
    """README's "Add an algorithm" code and study are this file's, verbatim (so the test above keeps them true)."""
    import inspect
    import os
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme[readme.index("**Add an algorithm**"):]
    code, study = re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S)[:2]
    assert code in inspect.getsource(inspect.getmodule(MSEBC)) and study == STUDY
