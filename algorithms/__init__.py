"""Algorithms: one readable file each, behind one small interface.  No Ray in here.

An algorithm is a config dataclass (validated in ``__post_init__``, paper values as defaults)
plus a subclass of ``algorithms.common.Algorithm`` (the written contract; its docstring lists every
method the platform calls)::

    algo = algorithms.build(name, config, spec, device)
    algo.fit_dataset(data)                # dataset statistics (default: none needed)
    metrics = algo.update(batch)          # one gradient step -> {"train/...": float}
    actions = algo.act(obs)               # (B, To, obs_dim) -> (B, Ta, act_dim), no grad
    algo.state_dict() / algo.load_state_dict(d)   # plain tensors only
    algo.policy_state_dict()              # what a rollout worker needs (default: state_dict())

``data_kind`` tells the platform which data an algorithm eats:

* ``data_kind = "transitions"``: batches of ``observations (B, obs_dim)``, ``actions (B, act_dim)``,
  ``rewards (B,)``, ``next_observations (B, obs_dim)``, ``terminals (B,)`` (D4RL qlearning format).
  ``act`` receives ``(B, 1, obs_dim)`` and returns ``(B, 1, act_dim)``.
* ``data_kind = "sequences"``: batches of ``obs (B, To, obs_dim)`` and ``action (B, Tp, act_dim)``
  windows cut from episodes; the instance exposes ``obs_horizon`` (To), ``pred_horizon`` (Tp) and
  ``action_horizon`` (Ta, the actions executed before replanning).

``REGISTRY`` maps the name used in YAML studies to ``(ConfigClass, AlgorithmClass)``; the
platform looks algorithms up there, so adding one never touches ``platform/``: a new algorithm is one line in
``_ENTRIES`` below (its module in ``algorithms/``), or, for one that lives elsewhere (a test, a plug-in),
``register(name, ConfigClass, AlgorithmClass)``, which the processes started after it inherit (a sweep's
subprocess, its local Ray workers) through ``$DRL_ALGORITHMS``.  What the class declares (the capabilities the
platform and the tests read) is listed in ``algorithms/common.py``'s ``Algorithm``.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field

# name -> "module:ConfigClass:AlgorithmClass"; imported lazily so that listing names is cheap.
_ENTRIES: dict[str, str] = {
    "bc": "algorithms.bc:BCConfig:BC",
    "dql": "algorithms.dql:DQLConfig:DiffusionQL",
    "edp": "algorithms.edp:EDPConfig:EDP",
    "td3bc": "algorithms.td3bc:TD3BCConfig:TD3BC",
    "iql": "algorithms.iql:IQLConfig:IQL",
    "diffusion_policy": "algorithms.diffusion_policy:DiffusionPolicyConfig:DiffusionPolicy",
    "ibc": "algorithms.ibc:IBCConfig:IBC",
    "lstm_gmm": "algorithms.lstm_gmm:LSTMGMMConfig:LSTMGMM",
    "bet": "algorithms.bet:BETConfig:BET",
}
# algorithms registered outside this file (``register``): ``name=module:ConfigClass:AlgorithmClass``, comma-separated
ENV_VAR = "DRL_ALGORITHMS"


def _registered() -> dict[str, str]:
    """``$DRL_ALGORITHMS``'s entries, by name."""
    out = {}
    for item in filter(None, os.environ.get(ENV_VAR, "").split(",")):
        name, _, entry = item.partition("=")
        if entry.count(":") != 2 or name in _ENTRIES:
            raise ValueError(f"${ENV_VAR}: {item!r} is not name=module:ConfigClass:AlgorithmClass with a new name")
        out[name] = entry
    return out


def _entries() -> dict[str, str]:
    return {**_ENTRIES, **_registered()}


@dataclass(frozen=True)
class EnvSpec:
    """What an algorithm needs to know about the task, derived from the dataset.

    ``act_low``/``act_high`` are the action bounds (used for clipping, e.g. DQL's x0 clip);
    ``obs_low``/``obs_high`` and ``act_min``/``act_max`` are the dataset's per-dimension ranges
    (used for [-1, 1] normalization by Diffusion Policy).  All plain floats so that the spec is
    JSON-serializable and travels inside checkpoints.
    """

    obs_dim: int
    act_dim: int
    act_low: tuple[float, ...] = ()
    act_high: tuple[float, ...] = ()
    obs_low: tuple[float, ...] = ()
    obs_high: tuple[float, ...] = ()
    act_min: tuple[float, ...] = ()
    act_max: tuple[float, ...] = ()

    def __post_init__(self):
        if self.obs_dim <= 0 or self.act_dim <= 0:
            raise ValueError(f"EnvSpec needs positive dims, got obs_dim={self.obs_dim}, act_dim={self.act_dim}")
        for name, dim in (("act_low", self.act_dim), ("act_high", self.act_dim), ("obs_low", self.obs_dim),
                          ("obs_high", self.obs_dim), ("act_min", self.act_dim), ("act_max", self.act_dim)):
            value = getattr(self, name)
            if value and len(value) != dim:
                raise ValueError(f"EnvSpec.{name} has {len(value)} entries, expected {dim}")
        # Default action bounds: [-1, 1], D4RL locomotion's and Push-T-normalized convention.
        if not self.act_low:
            object.__setattr__(self, "act_low", (-1.0,) * self.act_dim)
        if not self.act_high:
            object.__setattr__(self, "act_high", (1.0,) * self.act_dim)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnvSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def names() -> list[str]:
    return sorted(_entries())


def get(name: str):
    """Return ``(ConfigClass, AlgorithmClass)`` for a registered algorithm name."""
    entries = _entries()
    if name not in entries:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(names())}")
    module, config_cls, algo_cls = entries[name].split(":")
    mod = importlib.import_module(module)
    return getattr(mod, config_cls), getattr(mod, algo_cls)


class _Registry(dict):
    """``REGISTRY[name] -> (ConfigClass, AlgorithmClass)``, importing the module on first use."""

    def __missing__(self, name):
        value = get(name)
        self[name] = value
        return value

    def __contains__(self, name):
        return name in _entries()

    def __iter__(self):
        return iter(names())

    def keys(self):
        return names()


REGISTRY = _Registry()


def register(name: str, config_cls: type, algo_cls: type) -> None:
    """Make ``name`` an algorithm outside ``_ENTRIES``: ``config_cls`` and ``algo_cls`` are top-level classes of one
    importable module (``tests.test_add_algorithm``), imported again by name wherever the algorithm runs.  Set in
    ``$DRL_ALGORITHMS``, so processes started afterwards (a sweep's subprocess, a local Ray's workers) know it;
    a cluster that is already running does not: there, add the line to ``_ENTRIES``.  ``unregister`` undoes it."""
    module = algo_cls.__module__
    if config_cls.__module__ != module or "." in config_cls.__qualname__ + algo_cls.__qualname__:
        raise ValueError(f"register({name!r}): the config and algorithm classes must be top-level classes of one module")
    if name in _entries() or not name.isidentifier():
        raise ValueError(f"register({name!r}): an identifier that is not a registered algorithm name is needed")
    entry = f"{name}={module}:{config_cls.__qualname__}:{algo_cls.__qualname__}"
    os.environ[ENV_VAR] = ",".join(filter(None, [os.environ.get(ENV_VAR, ""), entry]))


def unregister(name: str) -> None:
    """Forget an algorithm ``register`` added (the built-in ones stay)."""
    if name in _ENTRIES:
        raise ValueError(f"unregister({name!r}): a built-in algorithm (algorithms/__init__.py's _ENTRIES)")
    kept = [item for item in os.environ.get(ENV_VAR, "").split(",") if item and item.partition("=")[0] != name]
    os.environ[ENV_VAR] = ",".join(kept)
    REGISTRY.pop(name, None)


def config_fields(name: str) -> dict[str, dataclasses.Field]:
    """The config dataclass fields of an algorithm, by name (used to validate YAML studies)."""
    config_cls, _ = get(name)
    return {f.name: f for f in dataclasses.fields(config_cls)}


def build_config(name: str, params: dict):
    config_cls, _ = get(name)
    return config_cls(**params)


def resolve_params(name: str, dataset: str, params: dict) -> tuple[dict, list[str]]:
    """A study's config fields for one trial: ``params`` (the study's fixed and searched values) over the paper's
    per-task values for ``dataset`` (``Algorithm.paper_settings``) over the class defaults.  Returns the merged
    fields and the sorted names of those that came from the paper's per-task table."""
    _, algo_cls = get(name)
    per_task = {k: v for k, v in algo_cls.paper_settings(dataset).items() if k not in params}
    return {**per_task, **params}, sorted(per_task)


def build(name: str, config, spec, device="cpu"):
    """The one way to make an algorithm: ``config`` a config instance or a dict of its fields, ``spec`` an
    ``EnvSpec`` or its dict (as stored in checkpoints), ``device`` a torch device or its name."""
    import torch

    from algorithms.common import Algorithm

    config_cls, algo_cls = get(name)
    if not issubclass(algo_cls, Algorithm):
        raise TypeError(f"algorithm {name!r}: {algo_cls.__name__} does not subclass algorithms.common.Algorithm")
    if isinstance(config, dict):
        config = config_cls(**config)
    if isinstance(spec, dict):
        spec = EnvSpec.from_dict(spec)
    return algo_cls(config, spec, torch.device(device))


__all__ = ["EnvSpec", "REGISTRY", "names", "get", "register", "unregister", "config_fields", "build_config",
           "resolve_params", "build", "field"]
