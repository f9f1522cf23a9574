"""The papers' published scores and training budgets, which each algorithm class declares (``Algorithm.paper_scores``,
``Algorithm.paper_budget``) and the report puts next to what was run.  Plain data; no Ray, no torch in here.

Tables (values on the report's 0..100 scale):

* ``DQL_D4RL_LOCOMOTION``, ``DQL_D4RL_ANTMAZE``: Wang et al. 2023 (Diffusion-QL), Table 1, D4RL v2 normalized
  scores (the AntMaze numbers are kept for any version of the AntMaze files).
* ``IQL_TABLE``: Kostrikov et al. 2022 (IQL), Table 1, D4RL v2 (reprinted by Diffusion-QL): BC / TD3+BC / IQL.
* ``PUSHT_AVG``, ``PUSHT_MAX``: Chi et al. 2023 (Diffusion Policy), Table I, Push-T state observations, average
  of the last checkpoints and max (x100).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

DQL_D4RL_LOCOMOTION = {
    "halfcheetah-medium": 51.1, "halfcheetah-medium-replay": 47.8, "halfcheetah-medium-expert": 96.8,
    "hopper-medium": 90.5, "hopper-medium-replay": 101.3, "hopper-medium-expert": 111.1,
    "walker2d-medium": 87.0, "walker2d-medium-replay": 95.5, "walker2d-medium-expert": 110.1,
}
DQL_D4RL_ANTMAZE = {
    "antmaze-umaze": 93.4, "antmaze-umaze-diverse": 66.2, "antmaze-medium-play": 76.6,
    "antmaze-medium-diverse": 78.6, "antmaze-large-play": 46.4, "antmaze-large-diverse": 57.3,
}
IQL_TABLE = {
    "halfcheetah-medium": (42.6, 48.3, 47.4), "halfcheetah-medium-replay": (36.6, 44.6, 44.2),
    "halfcheetah-medium-expert": (55.2, 90.7, 86.7), "hopper-medium": (52.9, 59.3, 66.3),
    "hopper-medium-replay": (18.1, 60.9, 94.7), "hopper-medium-expert": (52.5, 98.0, 91.5),
    "walker2d-medium": (75.3, 83.7, 78.3), "walker2d-medium-replay": (26.0, 81.8, 73.9),
    "walker2d-medium-expert": (107.5, 110.1, 109.6),
}
PUSHT_AVG = {"DP-CNN": 91.0, "DP-Transformer": 79.0, "LSTM-GMM": 61.0, "IBC": 84.0, "BET": 70.0}
PUSHT_MAX = {"DP-CNN": 95.0, "DP-Transformer": 95.0, "LSTM-GMM": 67.0, "IBC": 90.0, "BET": 79.0}

ANY_TASK = "*"


@dataclass(frozen=True)
class PaperScore:
    """A paper's published scores of one algorithm on one benchmark source.

    ``source``: the dataset source the numbers are on (``"d4rl"``, ``"pusht"``; a ``generated:`` copy of a D4RL
    task is shown D4RL's number, said so).  ``scores``: task (D4RL's name without the version) -> score, or
    ``{ANY_TASK: score}`` for a benchmark with one task.  ``versions``: the dataset versions the numbers are on
    (an unversioned name counts as the paper's); ``None``: any.  ``when``: config values the trial must have
    (e.g. ``{"backbone": "transformer"}``); an algorithm's scores are tried in order, the first match wins.
    """

    source: str
    scores: Mapping[str, float]
    label: str
    versions: tuple[str, ...] | None = ("2",)
    when: Mapping[str, object] = field(default_factory=dict)

    def score(self, source: str, task: str, version: str | None, params: Mapping) -> float | None:
        """This paper's number for ``task`` of ``source`` at ``version`` for a trial of ``params``, or None."""
        if source != self.source or any(params.get(k) != v for k, v in self.when.items()):
            return None
        if self.versions is not None and version not in (None, *self.versions):
            return None
        return self.scores.get(task, self.scores.get(ANY_TASK))


def iql_table(column: int) -> PaperScore:
    """The IQL paper's Table 1 column ``column`` (0 BC, 1 TD3+BC, 2 IQL)."""
    return PaperScore("d4rl", {task: row[column] for task, row in IQL_TABLE.items()},
                      "IQL paper (ICLR 2022) Table 1 (protocol: final)")


def pusht_table(key: str, **when) -> PaperScore:
    """The Diffusion Policy paper's Table I row ``key`` (``"DP-CNN"``, ``"IBC"``, ...) for Push-T."""
    return PaperScore("pusht", {ANY_TASK: PUSHT_AVG[key]}, f"{key}, Diffusion Policy (RSS 2023) Table I avg (protocol: "
                      f"last_k_mean, last 10 checkpoints; max {PUSHT_MAX[key]:g})", versions=None, when=when)


DIFFUSION_QL = (
    PaperScore("d4rl", DQL_D4RL_LOCOMOTION, "Diffusion-QL, ICLR 2023 (protocol: best, online model selection)"),
    PaperScore("d4rl", DQL_D4RL_ANTMAZE, "Diffusion-QL, ICLR 2023 (protocol: best, online model selection)",
               versions=None),
)
