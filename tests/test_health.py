"""Health of a run: actions clipped at the env and counted, non-finite losses counted, Q divergence spotted,
and the report and the console flag an unhealthy run next to its score (platform/health.py)."""
import json

import numpy as np
import pandas as pd
import torch

from algorithms import EnvSpec
from algorithms.common import Algorithm
from platform import health
from platform.console import ProgressPrinter
from platform.envs import make_env
from platform.evaluation import clip_to_box, run_episodes, summarize
from platform.report import build_report
from platform.results import rows_from_history
from platform.training import means, nonfinite_error

SEEDS = [100000, 100001]


class ConstantPolicy(Algorithm):
    """Acts ``value`` in every dimension: a deliberately broken policy when ``value`` is beyond the box."""

    def __init__(self, value: float, act_dim: int):
        self.value, self.act_dim = value, act_dim

    def act(self, obs):
        return torch.full((obs.shape[0], 1, self.act_dim), self.value)


def rollout(value: float, env_id: str = "Pendulum-v1", act_dim: int = 1, **kwargs) -> dict:
    episodes = run_episodes(ConstantPolicy(value, act_dim), [lambda: make_env(env_id, **kwargs)] * 2, SEEDS)
    return summarize(episodes, env_id, ref_min=-1200.0, ref_max=-150.0)


def test_clip_to_box_measures_the_excess_in_half_widths():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 512.0])
    a = np.array([[1.0, 10.0], [6.0, 300.0], [-2.02, 768.0], [np.nan, 0.0]])
    clipped, excess = clip_to_box(a, low, high)
    assert np.allclose(clipped, [[1.0, 10.0], [2.0, 300.0], [-2.0, 512.0], [0.0, 0.0]])
    assert np.allclose(excess[:3], [0.0, 2.0, 1.0]) and np.isinf(excess[3])  # [-2.02 is 0.01, 768 is 1.0]


def test_the_rollout_clips_out_of_box_actions_and_counts_them():
    # HalfCheetah charges 0.1 sum(a^2) on the action it is given: only a clip before env.step makes the broken
    # policy (3 in every dimension) play exactly like one acting at the bound
    cheetah = dict(env_id="HalfCheetah-v5", act_dim=6, max_episode_steps=50)
    broken, at_bound, inside = rollout(3.0, **cheetah), rollout(1.0, **cheetah), rollout(0.5, **cheetah)
    assert broken["eval/return_mean"] == at_bound["eval/return_mean"]
    assert broken["eval/action_out_of_box"] == 1.0 and broken["eval/action_excess_max"] == 2.0
    assert at_bound["eval/action_out_of_box"] == 0.0 and at_bound["eval/action_excess_max"] == 0.0
    assert inside["eval/action_out_of_box"] == 0.0 and inside["eval/return_mean"] != at_bound["eval/return_mean"]
    assert health.report_flags(broken) and not health.report_flags(inside)
    # EDP's faithful sampler: many actions a few hundredths over (measured 7%, 0.025 half-widths): not a flag
    assert not health.report_flags({"eval/action_out_of_box": 0.07, "eval/action_excess_max": 0.025})
    assert health.report_flags({"eval/action_out_of_box": 0.07, "eval/action_excess_max": 0.2})
    # Pendulum's box is [-2, 2]: 6 is 2 half-widths beyond it
    assert rollout(6.0)["eval/action_excess_max"] == 2.0


def test_nonfinite_losses_are_counted_then_fail_the_trial_in_one_line():
    sums = {"train/loss": torch.tensor(float("nan")), "train/q_mean": torch.tensor(3.0)}
    m = means(sums, 1)
    assert m["train/nonfinite_losses"] == 1.0 and m["train/q_mean"] == 3.0
    err = nonfinite_error({0: means({"train/loss": torch.tensor(1.0)}, 1), 1: m}, 7)
    assert isinstance(err, FloatingPointError) and str(err) == "seed 1: train/loss became non-finite before step 7"
    assert nonfinite_error({0: means({"train/loss": torch.tensor(1.0)}, 1)}, 7) is None


def test_q_divergence():
    steps = [500, 1000, 1500, 2000, 2500]
    assert health.q_diverges(steps, [5, 40, 120, 200, 260]) is None      # learning: growth from ~0
    assert health.q_diverges(steps, [-50, -300, -800, -1200, -1400]) is None  # Pendulum's negative returns
    assert health.q_diverges(steps, [5, 40, 150, 900, 2e4]) is not None  # beyond the absolute bound
    assert health.q_diverges(steps, [5, 40, 150, 900, 4000]) is not None  # 27x over the second half


def _trial_rows(trial_id: str, value: float) -> list[dict]:
    """A trial of two seeds whose evaluations are real rollouts of ``ConstantPolicy(value)``."""
    ev = rollout(value)
    reports = [{"step": step, "time/total_s": float(step), "is_eval": 1,
                **{f"seed{s}/{k}": v for s in (0, 1) for k, v in
                   {**ev, "train/loss": 0.1, "train/nonfinite_losses": 0.0, "train/q_mean": 10.0 * step}.items()}}
               for step in (10, 20)]
    return rows_from_history(reports, sweep="health", trial_id=trial_id, algorithm="bc",
                             dataset="generated:pendulum-medium", env="Pendulum-v1", seeds=[0, 1],
                             params={"hidden_dim": 32}, status="TERMINATED", error=None)


def test_report_flags_the_broken_policy_next_to_its_score(tmp_path):
    df = pd.DataFrame(_trial_rows("broken01", 6.0) + _trial_rows("healthy1", 0.5))
    d = tmp_path / "health"
    d.mkdir()
    df.to_parquet(d / "metrics.parquet", index=False)
    (d / "spec.json").write_text(json.dumps({"name": "health", "search": {"metric": "eval/normalized_score"}}))
    build_report(str(d), str(tmp_path / "report"))
    text = (tmp_path / "report" / "README.md").read_text()
    section = text.split("## Health", 1)[1].split("\n## ", 1)[0]
    assert "⚠ 1 of 2 trial(s) flagged" in section and "actions out of the box in 2 of 2 runs" in section, section
    assert "up to 100%" in section and "largest excess 2 half-widths" in section, section
    table = [line for line in text.splitlines() if line.startswith("| bc ")]
    flagged = [line for line in table if "⚠" in line]
    assert any("all 2 trials" in line and "1 of 2 trials flagged" in line for line in flagged), table
    healthy = text.split("Trials of health", 1)[0]
    assert "actions out of the box" in healthy


def test_console_says_a_health_flag_once_per_trial(capsys):
    printer = ProgressPrinter("eval/normalized_score", total=2, steps=20)

    class Trial:  # what Tune's callback hands over: an id and the trial's searched config
        trial_id, config = "abc123", {}

    broken = {"step": 10, "is_eval": 1, "eval/normalized_score": 5.0, "eval/action_out_of_box": 0.62,
              "eval/action_excess_max": 10.7}
    for step in (10, 20):
        printer.callback.on_trial_result(0, [], Trial(), {**broken, "step": step})
    printer.callback.on_trial_result(0, [], Trial(), {"step": 20, "is_eval": 0, "train/q_mean": 3e5})
    out = capsys.readouterr().out.splitlines()
    actions = [line for line in out if "health" in line and "out of the action box" in line]
    assert actions == ["[sweep] abc123 health at step 10: 62% of actions out of the action box (largest excess 11 "
                       "half-widths; clipped at the env)"], out
    assert sum("Q scale diverges" in line for line in out) == 1, out
