"""Dataset kinds of the robot benchmarks, dispatched from ``platform/datasets/__init__.py``.

* ``robomimic:<file.hdf5>``: a robomimic HDF5 file (``robomimic.py``); evaluated in ``robosuite:<env_name>``.
* ``scripted:<task>`` (``blockpush``, ``lift``): demonstrations made here by scripted experts
  (``platform/datasets/demos.py``), cached as ``<data_dir>/scripted-<task>.hdf5``; ``blockpush`` is made
  on first use (200 demos, 189 s on 2 busy cores), ``lift`` needs ``python -m platform.datasets.demos lift --out FILE`` first.
* ``kitchen:<name|path>``, ``antmaze:<name|path>``, ``adroit:<name|path>``: Minari datasets read from
  the local store with h5py (``minari_files.py``).
"""
from __future__ import annotations

import os

SCRIPTED_ENV_IDS = {"blockpush": "blockpush", "lift": "robosuite:Lift"}
CHEAP_SCRIPTED = ("blockpush",)


def scripted_path(task: str, cache_dir: str | None = None) -> str:
    from platform.datasets.base import data_dir

    if task not in SCRIPTED_ENV_IDS:
        raise ValueError(f"dataset scripted:{task}: unknown task; use one of {', '.join(SCRIPTED_ENV_IDS)}")
    return os.path.join(data_dir(cache_dir), f"scripted-{task}.hdf5")


def _missing(task: str, path: str) -> str:
    return (f"dataset scripted:{task} is not generated yet: run `python -m platform.datasets.demos {task} "
            f"--out {path}`")


def check(kind: str, value: str, cache_dir: str | None = None) -> str:
    """Cheap pre-flight check (nothing loaded or generated); returns the evaluation env id."""
    if kind == "robomimic":
        from platform.datasets.robomimic import robomimic_env_id

        return robomimic_env_id(value)
    if kind == "scripted":
        path = scripted_path(value, cache_dir)
        if not os.path.exists(path) and value not in CHEAP_SCRIPTED:
            raise FileNotFoundError(_missing(value, path))
        return SCRIPTED_ENV_IDS[value]
    from platform.datasets.minari_files import resolve

    return resolve(kind, value)[1]


def load(kind: str, value: str, cache_dir: str | None = None, allow_generate: bool | None = None):
    if kind == "robomimic":
        from platform.datasets.robomimic import load_robomimic

        return load_robomimic(value)
    if kind == "scripted":
        from platform.datasets.robomimic import load_robomimic

        path = scripted_path(value, cache_dir)
        if not os.path.exists(path):
            if allow_generate is False or (allow_generate is None and value not in CHEAP_SCRIPTED):
                raise FileNotFoundError(_missing(value, path))
            from platform.datasets.demos import generate_demos

            generate_demos(value, path)
        data = load_robomimic(path)
        data.name = f"scripted:{value}"
        return data
    from platform.datasets.minari_files import load_minari_files

    return load_minari_files(kind, value)


__all__ = ["check", "load", "scripted_path"]
