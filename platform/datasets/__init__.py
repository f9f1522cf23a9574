"""Offline datasets by name, as written in a study's ``dataset:`` key.

* ``d4rl:<file.hdf5>`` or ``d4rl:<D4RL name>`` (e.g. ``d4rl:halfcheetah-medium-v2``): a D4RL HDF5 file,
  loaded with ``qlearning_dataset`` semantics (``platform/datasets/d4rl.py``).  Names are looked up as
  ``<dir>/<name>.hdf5`` or D4RL's own file name ``<dir>/halfcheetah_medium-v2.hdf5``, with ``<dir>``
  the ``cache_dir`` argument, else ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets`` (d4rl's defaults).
* ``minari:<dataset id>``: a dataset in the local Minari store (needs ``pip install minari``).
* ``generated:<env>-<quality>`` (e.g. ``generated:pendulum-medium``, ``generated:hopper-medium-replay``):
  made by ``python -m platform.datasets.generate`` and cached as ``<dir>/<env>-<quality>.hdf5`` with
  ``<dir>`` the ``cache_dir`` argument, else ``$DRL_DATA_DIR``, else ``~/.cache/diffusion-rl/datasets``.
  Missing Pendulum datasets are generated on first use (about a second); MuJoCo ones take hours, so
  they raise an error with the command to run unless ``allow_generate=True``.
* ``pusht:<path to pusht_cchi_v7_replay.zarr>``: the Diffusion Policy paper's Push-T demonstrations
  (``platform/datasets/pusht.py``).
* ``robomimic:<file.hdf5>``, ``scripted:<blockpush|lift>``, ``kitchen:<name>``, ``antmaze:<name>``,
  ``adroit:<pen-quality>``: the robot benchmarks (``platform/datasets/robotics.py``).
* ``toy:<bandit|modes8|modes-state>``: small tasks with a known multimodal behaviour (the Diffusion-QL paper's
  bandit, modes on a circle), made in memory from a fixed seed (``platform/datasets/toy.py``).

Nothing is downloaded: the machines this runs on may be offline.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

from platform.datasets import collect  # the generated datasets' names and costs (generating imports generate.py)
from platform.datasets import toy  # toy:<task>, made in memory (numpy only)
from platform.datasets.base import OfflineDataset, d4rl_dir, data_dir


def d4rl_path(value: str, cache_dir: str | None = None) -> str:
    """Resolve ``d4rl:<value>`` to a file; FileNotFoundError saying how to provide it if absent."""
    if value.endswith((".hdf5", ".h5")) or "/" in value or os.sep in value:
        path = os.path.expanduser(value)
        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset d4rl:{value}: no such file {path}")
        return path
    root = d4rl_dir(cache_dir)
    env, _, rest = value.partition("-")
    candidates = [os.path.join(root, value + ".hdf5")]
    if rest:  # d4rl saves downloads under the URL's name: halfcheetah_medium-v2.hdf5
        candidates.append(os.path.join(root, f"{env}_{rest}.hdf5"))
    for path in candidates:
        if os.path.exists(path):
            return path
    quality = rest.rsplit("-v", 1)[0] if rest else ""
    hint = ""
    if env in collect.ENVS and quality in collect.QUALITIES:
        hint = (f" or use a D4RL-style dataset made here: dataset: generated:{env}-{quality} after "
                f"`python -m platform.datasets.generate {env} {quality}`")
    raise FileNotFoundError(
        f"dataset d4rl:{value}: not found at {' or '.join(candidates)}. This machine cannot download it: copy the "
        f"D4RL file there (or set D4RL_DATASET_DIR / give d4rl:<path.hdf5>){hint}")


def generated_path(value: str, cache_dir: str | None = None) -> str:
    env, quality = collect.parse_name(value)
    return os.path.join(data_dir(cache_dir), f"{env}-{quality}.hdf5")


# ----------------------------------------------------------------------------- the sources, one row each
# check(value, cache_dir, validate) -> evaluation env id (reads and validates files, generates nothing)
# load(value, cache_dir, allow_generate) -> OfflineDataset


def _check_d4rl(value, cache_dir, validate):
    from platform.datasets.d4rl import read_arrays, read_env_id

    path = d4rl_path(value, cache_dir)
    if validate:
        read_arrays(path)
    return read_env_id(path)


def _load_d4rl(value, cache_dir, allow_generate):
    from platform.datasets.d4rl import load_d4rl

    return load_d4rl(d4rl_path(value, cache_dir))


def _check_generated(value, cache_dir, validate):
    from platform.datasets.d4rl import read_arrays

    env, quality = collect.parse_name(value)
    path = generated_path(value, cache_dir)
    if not os.path.exists(path) and not collect.is_cheap(env, quality):
        raise FileNotFoundError(f"dataset 'generated:{value}' is not generated yet: "
                                f"{collect.missing_message(env, quality, path)}")
    if validate and os.path.exists(path):
        read_arrays(path)
    return collect.ENVS[env].env_id


def _load_generated(value, cache_dir, allow_generate):
    from platform.datasets.d4rl import load_d4rl

    env, quality = collect.parse_name(value)
    path = generated_path(value, cache_dir)
    if not os.path.exists(path):
        if allow_generate is False or (allow_generate is None and not collect.is_cheap(env, quality)):
            raise FileNotFoundError(f"dataset 'generated:{value}' is not generated yet: "
                                    f"{collect.missing_message(env, quality, path)}")
        from platform.datasets.generate import generate as make

        make(env, quality, path)
    data = load_d4rl(path)
    data.name = f"generated:{env}-{quality}"
    return data


def _check_pusht(value, cache_dir, validate):
    from platform.datasets.pusht import read_pusht_zarr

    path = os.path.expanduser(value)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset 'pusht:{value}': no Push-T zarr store at {path}")
    if validate:
        read_pusht_zarr(path)  # not a zarr store, missing arrays, wrong shapes
    return "pusht"


def _load_pusht(value, cache_dir, allow_generate):
    from platform.datasets.pusht import load_pusht

    return load_pusht(os.path.expanduser(value))


def _check_minari(value, cache_dir, validate):
    from platform.datasets.minari import minari_env_id

    return minari_env_id(value)


def _load_minari(value, cache_dir, allow_generate):
    from platform.datasets.minari import load_minari

    return load_minari(value)


def _robotics(kind: str, paths: bool) -> "Source":
    """robomimic:, scripted:, kitchen:, antmaze:, adroit: (``platform/datasets/robotics.py``)."""
    from platform.datasets import robotics

    return Source(check=lambda value, cache_dir, validate: robotics.check(kind, value, cache_dir),
                  load=lambda value, cache_dir, allow_generate: robotics.load(kind, value, cache_dir, allow_generate),
                  paths=paths)


def _prepare_generated(value: str, cache_dir: str | None) -> None:
    env, quality = collect.parse_name(value)
    path = generated_path(value, cache_dir)
    if not os.path.exists(path) and collect.is_cheap(env, quality):
        if not collect.ENVS[env].cheap:
            print(f"[data] generated:{value} is not in {os.path.dirname(path)} yet: collecting it from "
                  f"{'a random policy' if quality == 'random' else 'the shipped behaviour policy'} (minutes)",
                  flush=True)
        from platform.datasets.generate import generate as make

        make(env, quality, path)


@dataclass(frozen=True)
class Source:
    """One kind of dataset, ``<kind>:<value>`` in a study.

    ``check(value, cache_dir, validate) -> env id``: the pre-flight check, before any training (reads and
    validates files with ``validate``, generates nothing); raises ValueError / FileNotFoundError / ImportError
    with one message naming the dataset.  ``load(value, cache_dir, allow_generate) -> OfflineDataset``.
    ``paths``: the value may be a file path, which a study makes absolute (Ray workers run in a copy of the
    working dir).  ``prepare(value, cache_dir)``: makes what is cheap to make once, before a sweep's trials start
    (None: nothing to make).
    """
    check: Callable[[str, str | None, bool], str]
    load: Callable[[str, str | None, bool | None], OfflineDataset]
    paths: bool = False
    prepare: Callable[[str, str | None], None] | None = None


# the one table of dataset sources: a study's ``<kind>:<value>`` names its kind here, every list of kinds comes from it
# (sources defined outside this package join it with ``register_source``)
SOURCES: dict[str, Source] = {
    "d4rl": Source(_check_d4rl, _load_d4rl, paths=True),
    "minari": Source(_check_minari, _load_minari),
    "generated": Source(_check_generated, _load_generated, prepare=_prepare_generated),
    "pusht": Source(_check_pusht, _load_pusht, paths=True),
    "robomimic": _robotics("robomimic", paths=True),
    "scripted": _robotics("scripted", paths=False),
    "kitchen": _robotics("kitchen", paths=True),
    "antmaze": _robotics("antmaze", paths=True),
    "adroit": _robotics("adroit", paths=True),
    "toy": Source(toy.check_toy, toy.load_toy),
}
# sources registered outside this package (``register_source``): ``kind=module:check:load[:paths]``, comma-separated;
# processes started later (a sweep's subprocess, a local Ray's workers) read it
ENV_VAR = "DRL_DATASET_SOURCES"


def _registered() -> dict[str, Source]:
    out = {}
    for item in filter(None, os.environ.get(ENV_VAR, "").split(",")):
        kind, _, entry = item.partition("=")
        parts = entry.split(":")
        if len(parts) not in (3, 4) or parts[3:] not in ([], ["paths"]) or kind in SOURCES:
            raise ValueError(f"${ENV_VAR}: {item!r} is not kind=module:check:load[:paths] with a new kind")
        module = importlib.import_module(parts[0])
        out[kind] = Source(getattr(module, parts[1]), getattr(module, parts[2]), paths=parts[3:] == ["paths"])
    return out


def sources() -> dict[str, Source]:
    """Every dataset source by kind: ``SOURCES`` and the registered ones."""
    return {**SOURCES, **_registered()}


def register_source(kind: str, check: Callable, load: Callable, paths: bool = False) -> None:
    """Make ``<kind>:`` a dataset source beside ``SOURCES`` (``Source`` says what ``check``, ``load`` and ``paths``
    are).  ``check`` and ``load`` are top-level functions of one importable module, imported again by name wherever
    the data is read: set in ``$DRL_DATASET_SOURCES``, so processes started afterwards (a sweep's subprocess, a
    local Ray's workers) know it; a cluster that is already running does not: there, add a row to ``SOURCES``.
    ``unregister_source`` undoes it."""
    module = check.__module__
    if load.__module__ != module or "." in check.__qualname__ + load.__qualname__:
        raise ValueError(f"register_source({kind!r}): check and load must be top-level functions of one module")
    if not kind.isidentifier() or kind in sources():
        raise ValueError(f"register_source({kind!r}): an identifier that is not a dataset kind yet is needed")
    entry = f"{kind}={module}:{check.__qualname__}:{load.__qualname__}" + (":paths" if paths else "")
    os.environ[ENV_VAR] = ",".join(filter(None, [os.environ.get(ENV_VAR, ""), entry]))


def unregister_source(kind: str) -> None:
    """Forget a source ``register_source`` added (the built-in ones stay)."""
    if kind in SOURCES:
        raise ValueError(f"unregister_source({kind!r}): a built-in source (platform/datasets/__init__.py's SOURCES)")
    kept = [item for item in os.environ.get(ENV_VAR, "").split(",") if item and item.partition("=")[0] != kind]
    os.environ[ENV_VAR] = ",".join(kept)


def absolute_path(name: str) -> str:
    """``<kind>:<relative path>`` -> ``<kind>:<absolute path>`` for the kinds whose value may be a path
    (``Source.paths``: a file name, or a value with a ``/``); other names unchanged."""
    kind, _, value = name.partition(":")
    source = sources().get(kind)
    if source is not None and source.paths and ("/" in value or value.endswith((".hdf5", ".h5", ".zarr"))):
        return f"{kind}:{os.path.abspath(os.path.expanduser(value))}"
    return name


def split_name(name: str) -> tuple[str, str]:
    """``"generated:pendulum-medium"`` -> ``("generated", "pendulum-medium")``; ValueError if malformed."""
    known = ", ".join(sources())
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(f"dataset {name!r}: expected <kind>:<value> with kind one of {known} "
                         f"(e.g. generated:pendulum-medium)")
    kind, value = name.split(":", 1)
    if kind not in sources():
        raise ValueError(f"dataset {name!r}: unknown kind {kind!r}; use one of {known}")
    if not value.strip():
        raise ValueError(f"dataset {name!r}: nothing after '{kind}:'")
    return kind, value.strip()


# ----------------------------------------------------------------------------- the facade


def check_dataset(name: str, cache_dir: str | None = None, validate: bool = True) -> str:
    """Pre-flight check before any training (nothing generated): returns the evaluation env id.

    HDF5 files (``d4rl:`` and existing ``generated:`` ones) are read and validated in full (missing
    arrays, shapes, row counts, NaN/inf), and a Push-T store's arrays are read, so a bad file fails here,
    in seconds, rather than in every Ray worker (``validate=False``: resolve the env id only).
    Raises ValueError (``DatasetError``) / FileNotFoundError / ImportError, one message naming the file.
    """
    kind, value = split_name(name)
    return sources()[kind].check(value, cache_dir, validate)


def dataset_env_id(name: str, cache_dir: str | None = None) -> str:
    """The evaluation env id of a dataset name, or "" if it cannot be resolved."""
    try:
        return check_dataset(name, cache_dir, validate=False)
    except (ValueError, FileNotFoundError, ImportError, KeyError, OSError):
        return ""


def ensure_dataset(name: str, cache_dir: str | None = None) -> None:
    """Make what the source makes cheaply now (``Source.prepare``: a missing ``generated:`` dataset of Pendulum,
    ``random`` or a shipped behaviour policy): a sweep calls this before its trials start, so they do not each
    wait on it."""
    kind, value = split_name(name)
    prepare = sources()[kind].prepare
    if prepare is not None:
        prepare(value, cache_dir)


def load_dataset(name: str, cache_dir: str | None = None, allow_generate: bool | None = None) -> OfflineDataset:
    """Resolve a study's ``dataset:`` name to an ``OfflineDataset``.

    ``cache_dir``: directory of ``generated:`` (and ``d4rl:<name>``) files, see the module doc.
    ``allow_generate``: None generates missing cheap datasets only (Pendulum, MuJoCo ``random`` and the
    qualities with a shipped behaviour policy: seconds to minutes); True also the others (SAC training,
    hours); False never generates.
    """
    kind, value = split_name(name)
    return sources()[kind].load(value, cache_dir, allow_generate)


__all__ = ["OfflineDataset", "Source", "SOURCES", "sources", "register_source", "unregister_source", "load_dataset",
           "ensure_dataset", "check_dataset", "dataset_env_id", "absolute_path", "data_dir", "d4rl_dir", "split_name",
           "d4rl_path", "generated_path"]
