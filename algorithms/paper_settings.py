"""The papers' per-task settings: one home for each public code's per-dataset table.  No Ray in here.

A study that does not set a field gets it from the table of its algorithm for the dataset's task, else the
config class's default; the study's own value always wins (``algorithms.resolve_params``).  Tables, read from
the authors' public code (values only, the code is not copied):

* ``DIFFUSION_QL``: Diffusion-QL's ``main.py`` ``hyperparameters`` (Zhendong-Wang/Diffusion-Policies-for-Offline-RL,
  commit d871f5c).  EDP's ``diffusion/hps.py`` (sail-sg/edp, commit b019648) is the same table, of which EDP's
  trainer reads only ``gn`` (``max_grad_norm``).  ``top_k`` (the code's offline model selection) and
  ``eval_freq`` (50 everywhere) are not training settings and are not resolved.
* ``IQL_DOMAINS``: IQL's ``configs/{mujoco,antmaze,kitchen}_config.py`` and ``train_offline.py``'s reward handling
  (ikostrikov/implicit_q_learning, commit 09d7002): locomotion tau 0.7 / beta 3 with rewards scaled by
  1000 / (max - min episode return); AntMaze 0.9 / 10 with r - 1; Kitchen and Adroit (the README runs both
  with kitchen_config) 0.7 / 0.5, actor dropout 0.1, rewards unchanged.
* TD3+BC (sfujim/TD3_BC) runs one setting on every task (alpha 2.5, normalized states): no table.
* Diffusion Policy's per-task YAMLs differ in horizons and network sizes by observation kind; the platform's
  defaults are its Push-T low-dim ones, and the studies set the others: no table here yet.

Tasks are named as D4RL names them without the version (``hopper-medium``); ``task_key`` maps the platform's
dataset names onto them: ``generated:hopper-medium``, ``d4rl:hopper-medium-v2``, ``minari:D4RL/kitchen/mixed-v2``.
"""
from __future__ import annotations

import re

# name: (lr, eta, max_q_backup, reward_tune, num_epochs, gn), the code's columns in its order
_DQL_ROWS = {
    "halfcheetah-medium":        (3e-4, 1.0,   False, "no",          2000, 9.0),
    "hopper-medium":             (3e-4, 1.0,   False, "no",          2000, 9.0),
    "walker2d-medium":           (3e-4, 1.0,   False, "no",          2000, 1.0),
    "halfcheetah-medium-replay": (3e-4, 1.0,   False, "no",          2000, 2.0),
    "hopper-medium-replay":      (3e-4, 1.0,   False, "no",          2000, 4.0),
    "walker2d-medium-replay":    (3e-4, 1.0,   False, "no",          2000, 4.0),
    "halfcheetah-medium-expert": (3e-4, 1.0,   False, "no",          2000, 7.0),
    "hopper-medium-expert":      (3e-4, 1.0,   False, "no",          2000, 5.0),
    "walker2d-medium-expert":    (3e-4, 1.0,   False, "no",          2000, 5.0),
    "antmaze-umaze":             (3e-4, 0.5,   False, "cql_antmaze", 1000, 2.0),
    "antmaze-umaze-diverse":     (3e-4, 2.0,   True,  "cql_antmaze", 1000, 3.0),
    "antmaze-medium-play":       (1e-3, 2.0,   True,  "cql_antmaze", 1000, 2.0),
    "antmaze-medium-diverse":    (3e-4, 3.0,   True,  "cql_antmaze", 1000, 1.0),
    "antmaze-large-play":        (3e-4, 4.5,   True,  "cql_antmaze", 1000, 10.0),
    "antmaze-large-diverse":     (3e-4, 3.5,   True,  "cql_antmaze", 1000, 7.0),
    "pen-human":                 (3e-5, 0.15,  False, "normalize",   1000, 7.0),
    "pen-cloned":                (3e-5, 0.1,   False, "normalize",   1000, 8.0),
    "kitchen-complete":          (3e-4, 0.005, False, "no",          250,  9.0),
    "kitchen-partial":           (3e-4, 0.005, False, "no",          1000, 10.0),
    "kitchen-mixed":             (3e-4, 0.005, False, "no",          1000, 10.0),
}
DIFFUSION_QL = {task: dict(zip(("lr", "eta", "max_q_backup", "reward_tune", "num_epochs", "gn"), row))
                for task, row in _DQL_ROWS.items()}
_REWARD_TUNE = {"no": "none", "cql_antmaze": "antmaze", "normalize": "normalize"}  # -> DQLConfig.reward_shaping

IQL_DOMAINS = {
    "locomotion": {"expectile": 0.7, "temperature": 3.0, "reward_scaling": "returns", "actor_dropout": 0.0},
    "antmaze": {"expectile": 0.9, "temperature": 10.0, "reward_scaling": "antmaze", "actor_dropout": 0.0},
    "kitchen": {"expectile": 0.7, "temperature": 0.5, "reward_scaling": "none", "actor_dropout": 0.1},
    "adroit": {"expectile": 0.7, "temperature": 0.5, "reward_scaling": "none", "actor_dropout": 0.1},
}

SOURCES = {
    "dql": "Diffusion-QL main.py",
    "edp": "EDP diffusion/hps.py",
    "iql": "IQL configs + train_offline.py",
}


def task_key(name: str) -> str:
    """``"generated:hopper-medium"``, ``"d4rl:hopper-medium-v2"``, ``"minari:D4RL/kitchen/mixed-v2"``,
    ``"antmaze:umaze"`` -> the table's key (``hopper-medium``, ``kitchen-mixed``, ``antmaze-umaze``)."""
    kind, _, name = name.lower().rpartition(":")
    if kind in ("antmaze", "kitchen") and not name.startswith(kind):  # the platform's "antmaze:umaze"
        name = f"{kind}-{name}"
    if name.endswith(".hdf5"):  # a file: its name
        name = name.rsplit("/", 1)[-1][:-5]
    else:  # Minari ids: "D4RL/kitchen/mixed-v2" -> "kitchen-mixed"
        name = "-".join(p for p in name.split("/") if p not in ("d4rl", "mujoco", ""))
    return re.sub(r"-v\d+$", "", name)


def domain(name: str) -> str:
    """``"antmaze"``, ``"kitchen"``, ``"adroit"``, ``"locomotion"`` or ``"other"``, from the task's first word
    (``pendulum`` is not ``pen``)."""
    first = task_key(name).split("-")[0]
    if first in ("antmaze", "kitchen"):
        return first
    if first in ("pen", "door", "hammer", "relocate"):
        return "adroit"
    return "locomotion" if first in ("halfcheetah", "hopper", "walker2d") else "other"


def diffusion_ql(dataset: str) -> dict:
    """``DQLConfig`` fields of the code's row for ``dataset`` ({} for a task the table does not list)."""
    row = DIFFUSION_QL.get(task_key(dataset))
    if row is None:
        return {}
    return {"lr": row["lr"], "eta": row["eta"], "max_q_backup": row["max_q_backup"],
            "reward_shaping": _REWARD_TUNE[row["reward_tune"]], "grad_norm": row["gn"], "lr_maxt": row["num_epochs"]}


def edp(dataset: str) -> dict:
    """``EDPConfig`` fields EDP's trainer takes from ``hps.py`` (its ``gn``)."""
    row = DIFFUSION_QL.get(task_key(dataset))
    return {} if row is None else {"grad_norm": row["gn"]}


def iql(dataset: str) -> dict:
    """``IQLConfig`` fields of the IQL code's config for the dataset's domain ({} outside its domains)."""
    return dict(IQL_DOMAINS.get(domain(dataset), {}))
