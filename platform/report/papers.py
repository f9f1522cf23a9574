"""The papers' published numbers and budgets a report puts next to what was run."""
from __future__ import annotations

import re
from dataclasses import dataclass


# The papers' published numbers and budgets are declared by each algorithm class (``Algorithm.paper_scores``,
# ``Algorithm.paper_budget``; the tables in algorithms/paper_scores.py): the report only reads them.


def _algorithm_class(name: str):
    """The registered class of ``name``, or None for a name the registry does not know (older results)."""
    import algorithms

    try:
        return algorithms.get(name)[1]
    except KeyError:
        return None


def paper_budget(algo: str, dataset: str, env: str = "") -> str:
    """The paper's training budget of ``algo`` on this benchmark ('' when the paper states none)."""
    cls = _algorithm_class(algo)
    if cls is None:
        return ""
    source = _dataset_source(dataset, env)[0]
    return cls.paper_budget.get(source, cls.paper_budget.get("*", ""))


@dataclass
class Reference:
    value: float | None      # on the report's 0..100 scale
    label: str               # what the cell shows when there is no value, or the source


def _dataset_source(dataset: str, env: str) -> tuple[str, str]:
    """'d4rl:hopper-medium-v2' -> ('d4rl', 'hopper-medium-v2'); guesses the source when unprefixed."""
    if ":" in dataset:
        src, name = dataset.split(":", 1)
        return src.lower(), name
    if "pusht" in f"{dataset} {env}".lower():
        return "pusht", dataset
    return "d4rl", dataset


def paper_reference(algorithm: str, dataset: str, env: str = "", params: dict | None = None) -> Reference:
    """The paper's published number for this algorithm on this benchmark (its class's ``paper_scores``), if any;
    ``params``: the trial's config values (a score may hold for some of them only, e.g. a backbone)."""
    src, name = _dataset_source(dataset, env)
    if src == "generated":
        # a generated D4RL-format locomotion dataset: the papers' number on D4RL's file of that name, said so
        ref = paper_reference(algorithm, f"d4rl:{name}-v2", env, params)
        if ref.value is not None:
            return Reference(ref.value, ref.label + "; on D4RL's file, not this generated data")
        return Reference(None, "n/a (generated data)")
    if src == "d4rl":
        m = re.match(r"^(.*?)(?:-v(\d+))?$", name.lower())
        task, version = m.group(1), m.group(2)
    elif src == "pusht":
        task, version = name, None
    else:
        return Reference(None, "")
    cls = _algorithm_class(algorithm)
    for ref in cls.paper_scores if cls is not None else ():
        value = ref.score(src, task, version, params or {})
        if value is not None:
            return Reference(value, ref.label)
    return Reference(None, "")
