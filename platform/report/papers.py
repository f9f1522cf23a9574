"""The papers' published numbers and budgets a report puts next to what was run."""
from __future__ import annotations

import re
from dataclasses import dataclass


# ============================================================================ paper references

# Wang et al. 2023 (Diffusion-QL), Table 1: D4RL v2 normalized scores.
DQL_D4RL = {
    "halfcheetah-medium": 51.1, "halfcheetah-medium-replay": 47.8, "halfcheetah-medium-expert": 96.8,
    "hopper-medium": 90.5, "hopper-medium-replay": 101.3, "hopper-medium-expert": 111.1,
    "walker2d-medium": 87.0, "walker2d-medium-replay": 95.5, "walker2d-medium-expert": 110.1,
    "antmaze-umaze": 93.4, "antmaze-umaze-diverse": 66.2, "antmaze-medium-play": 76.6,
    "antmaze-medium-diverse": 78.6, "antmaze-large-play": 46.4, "antmaze-large-diverse": 57.3,
}
# Kostrikov et al. 2022 (IQL), Table 1, D4RL v2 (reprinted by Diffusion-QL): BC / TD3+BC / IQL.
IQL_TABLE = {
    "halfcheetah-medium": (42.6, 48.3, 47.4), "halfcheetah-medium-replay": (36.6, 44.6, 44.2),
    "halfcheetah-medium-expert": (55.2, 90.7, 86.7), "hopper-medium": (52.9, 59.3, 66.3),
    "hopper-medium-replay": (18.1, 60.9, 94.7), "hopper-medium-expert": (52.5, 98.0, 91.5),
    "walker2d-medium": (75.3, 83.7, 78.3), "walker2d-medium-replay": (26.0, 81.8, 73.9),
    "walker2d-medium-expert": (107.5, 110.1, 109.6),
}
# Chi et al. 2023 (Diffusion Policy), Table I: Push-T state observations, average of the last checkpoints (x100).
PUSHT_AVG = {"DP-CNN": 91.0, "DP-Transformer": 79.0, "LSTM-GMM": 61.0, "IBC": 84.0, "BET": 70.0}
PUSHT_MAX = {"DP-CNN": 95.0, "DP-Transformer": 95.0, "LSTM-GMM": 67.0, "IBC": 90.0, "BET": 79.0}  # Table I max
# (benchmark source, algorithm) -> the paper's training budget, shown next to what was run: Diffusion-QL's 2M
# steps (Wang et al. 2023, Sec. 5) and Diffusion Policy's 3000-4500 epochs of Push-T (its released configs).
PAPER_BUDGET = {("*", "dql"): "2M gradient steps",
                ("pusht", "diffusionpolicy"): "about 210k (U-Net) / 336k (transformer) optimizer steps"}


def paper_budget(algo: str, dataset: str, env: str = "") -> str:
    """The paper's training budget of ``algo`` on this benchmark ('' when the paper states none)."""
    source = _dataset_source(dataset, env)[0]
    return PAPER_BUDGET.get((source, _canon(algo)), PAPER_BUDGET.get(("*", _canon(algo)), ""))


@dataclass
class Reference:
    value: float | None      # on the report's 0..100 scale
    label: str               # what the cell shows when there is no value, or the source


def _canon(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _dataset_source(dataset: str, env: str) -> tuple[str, str]:
    """'d4rl:hopper-medium-v2' -> ('d4rl', 'hopper-medium-v2'); guesses the source when unprefixed."""
    if ":" in dataset:
        src, name = dataset.split(":", 1)
        return src.lower(), name
    if "pusht" in f"{dataset} {env}".lower():
        return "pusht", dataset
    return "d4rl", dataset


def paper_reference(algorithm: str, dataset: str, env: str = "", backbone: str | None = None) -> Reference:
    """The paper's published number for this algorithm on this benchmark (the tables above), if any."""
    src, name = _dataset_source(dataset, env)
    algo = _canon(algorithm)
    if src == "generated":
        # a generated D4RL-format locomotion dataset: the papers' number on D4RL's file of that name, said so
        ref = paper_reference(algorithm, f"d4rl:{name}-v2", env, backbone) if name in DQL_D4RL else None
        if ref is not None and ref.value is not None:
            return Reference(ref.value, ref.label + "; on D4RL's file, not this generated data")
        return Reference(None, "n/a (generated data)")
    if src == "d4rl":
        m = re.match(r"^(.*?)(?:-v(\d+))?$", name.lower())
        task, version = m.group(1), m.group(2)
        locomotion = not task.startswith("antmaze")
        # The published locomotion numbers are on the v2 datasets; other versions are different data.
        if algo in ("dql", "diffusionql") and task in DQL_D4RL and not (locomotion and version not in (None, "2")):
            return Reference(DQL_D4RL[task], "Diffusion-QL, ICLR 2023 (protocol: best, online model selection)")
        i = {"bc": 0, "td3bc": 1, "iql": 2}.get(algo)
        if i is not None and task in IQL_TABLE and version in (None, "2"):
            return Reference(IQL_TABLE[task][i], "IQL paper (ICLR 2022) Table 1 (protocol: final)")
        return Reference(None, "")
    if src == "pusht":
        if algo in ("diffusionpolicy", "dp"):
            key = "DP-Transformer" if str(backbone or "cnn").lower().startswith("trans") else "DP-CNN"
        else:
            key = {"lstmgmm": "LSTM-GMM", "ibc": "IBC", "bet": "BET"}.get(algo, "")
        if key in PUSHT_AVG:
            return Reference(PUSHT_AVG[key], f"{key}, Diffusion Policy (RSS 2023) Table I avg (protocol: "
                                             f"last_k_mean, last 10 checkpoints; max {PUSHT_MAX[key]:g})")
        return Reference(None, "")
    return Reference(None, "")


