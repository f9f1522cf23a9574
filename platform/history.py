"""A trial's metric history: the one owner of its two formats.

* **Reports** (what the train loop hands to Tune, one flat dict per evaluation): the mean over seeds
  under each metric's name, and one record per seed, flattened as ``seed<s>/<metric>`` because Tune
  takes flat scalars.  ``flatten`` writes that form; ``seed_records`` reads it back.
* **The durable log** ``<storage>/<study>/_history/<trial_id>.jsonl``: every report, appended and
  fsynced.  Tune's own result files of a trial can be rewritten when a killed sweep is resumed; this
  log is only ever appended to (``read`` keeps the last record of a step repeated after a restart).
"""
from __future__ import annotations

import json
import os
import re

_SEED_KEY = re.compile(r"^seed(-?\d+)/(.+)$")


def flatten(per_seed: dict[int, dict]) -> dict:
    """``{seed: {metric: value}}`` -> the flat report: per-metric means (numbers only), ``seed<s>/<metric>``,
    ``num_seeds``."""
    out: dict = {}
    for k in sorted({k for m in per_seed.values() for k in m}):
        values = [float(m[k]) for m in per_seed.values() if k in m and not isinstance(m[k], str)]
        if values:  # a text value (eval/actions_sample's JSON) is kept per seed only
            out[k] = sum(values) / len(values)
    for s, m in per_seed.items():
        for k, v in m.items():
            out[f"seed{s}/{k}"] = v
    out["num_seeds"] = len(per_seed)
    return out


def seed_records(report: dict) -> dict[int, dict]:
    """The flat report -> ``{seed: {metric: value}}`` (the inverse of ``flatten``'s per-seed part)."""
    per_seed: dict[int, dict] = {}
    for k, v in report.items():
        m = _SEED_KEY.match(k)
        if m:
            per_seed.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return dict(sorted(per_seed.items()))


def history_dir(storage: str, study: str) -> str:
    return os.path.join(storage, study, "_history")


def append(directory: str | None, trial_id: str | None, report: dict) -> None:
    """Append one report to ``<directory>/<trial_id>.jsonl`` (local or shared paths only; else nothing)."""
    if not directory or not trial_id or "://" in directory:
        return
    os.makedirs(directory, exist_ok=True)
    line = json.dumps({k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}, allow_nan=True)
    with open(os.path.join(directory, f"{trial_id}.jsonl"), "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(directory: str | None, trial_id: str | None) -> list[dict] | None:
    """The trial's reports in step order (the last of a repeated step), or None if it has no log."""
    if not directory or not trial_id:
        return None
    path = os.path.join(directory, f"{trial_id}.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    by_step = {r.get("step"): r for r in records}
    return [by_step[k] for k in sorted(by_step, key=lambda x: (x is None, x))]
