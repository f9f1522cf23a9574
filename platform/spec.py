"""YAML study -> typed, validated ``SweepSpec`` (the schema: ``platform.schema``; Tune's space: ``platform.search``).

Everything is checked before Ray starts; a bad file gives one line naming the file, the key,
its line and the reason, e.g.::

    search_spaces/x.yaml:7: train.stepz: unknown key (did you mean 'steps'?)

A study (see ``search_spaces/*.yaml``)::

    name: dql_eta
    algorithm: dql
    dataset: generated:pendulum-medium
    config: {n_timesteps: 5}                # fixed algorithm parameters
    train: {steps: 2000, batch_size: 256, eval_every: 500, eval_episodes: 10, seeds: [0, 1]}
    search:
      metric: eval/normalized_score
      mode: max
      searcher: optuna                      # optuna (TPE) | random | grid
      num_samples: 8
      scheduler: asha                       # asha | fifo
      space:
        eta: {loguniform: [0.1, 10.0]}      # uniform | loguniform | int | logint | choice | grid | a fixed value
    resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0, eval_actors: 2}

Score against cost (the trade K makes): ``objectives: {eval/normalized_score: max, eval/act_ms: min}``
instead of metric/mode searches the Pareto front with Optuna's multi-objective TPE; the report draws it.

A study that compares algorithms on the same data, seeds and evaluation makes the algorithm a grid
dimension and keys the fixed parameters by algorithm (searched parameters must then be shared by all)::

    algorithm: {grid: [bc, td3bc, iql, dql]}
    config: {dql: {n_timesteps: 5}, iql: {expectile: 0.7}}

This module imports neither Ray nor torch at module level, so validation is instant.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os

import yaml

from algorithms.fields import coerce_value
# the schema, re-exported: callers import the study's types from here or from platform.schema
from platform.schema import (REPORT_PROTOCOLS, SECTIONS, FailureSpec, ReportSpec, ResourcesSpec,  # noqa: F401
                             SearchSpec, SpecError, SweepSpec, TrainSpec, WandbSpec)


def did_you_mean(word, choices, fallback: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else ``fallback`` (e.g. the valid values)."""
    near = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else fallback


_DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice", "grid")
_SEARCHERS = ("optuna", "random", "grid")
_SCHEDULERS = ("asha", "fifo")


# ----------------------------------------------------------------------------- YAML with lines


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each mapping key's path (tuple of keys) to its 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
    except yaml.YAMLError:
        pass
    return lines


class _Checker:
    """Type checks with file/key/line context."""

    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file, self.lines = file, lines

    def fail(self, path: tuple, reason: str):
        line = None
        for n in range(len(path), 0, -1):  # nearest key that has a line
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        raise SpecError(self.file, ".".join(map(str, path)), reason, line)

    def check_keys(self, path: tuple, data: dict, allowed: list[str]):
        for key in data:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed, f" (valid keys: {', '.join(allowed)})")
                self.fail(path + (key,), f"unknown key{hint}")

    def coerce(self, path: tuple, value, typ):
        """Check ``value`` against a dataclass field type given as a string annotation."""
        t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
        t = t.replace(" ", "")
        try:
            value = coerce_value(value, t, strict=True)
        except ValueError as e:
            self.fail(path, f"expected {e}, got {value!r}")
        if t.startswith("list[int]"):
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                self.fail(path, f"expected a list of integers, got {value!r}")
        elif t.startswith("dict"):
            if not isinstance(value, dict):
                self.fail(path, f"expected a mapping, got {value!r}")
        return value

    def section(self, path: tuple, data, cls):
        if data is None:
            return cls()
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {data!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        self.check_keys(path, data, list(fields))
        return cls(**{k: self.coerce(path + (k,), v, fields[k].type) for k, v in data.items()})


# ----------------------------------------------------------------------------- loading


def load_spec(path: str, overrides: dict | None = None) -> SweepSpec:
    """Read and validate a study file.  Raises ``SpecError`` (one clear line) on any problem."""
    if not os.path.exists(path):
        raise SpecError(path, "", "no such file")
    with open(path) as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SpecError(path, "", f"malformed YAML: {getattr(e, 'problem', e)}",
                        mark.line + 1 if mark else None) from None
    return parse_spec(data, path, _key_lines(text), overrides)


def parse_spec(data, file: str = "<dict>", lines: dict | None = None, overrides: dict | None = None) -> SweepSpec:
    c = _Checker(file, lines or {})
    if not isinstance(data, dict):
        c.fail((), f"a study must be a mapping with keys name, algorithm, dataset, ...; got {type(data).__name__}")
    top = ["name", "algorithm", "dataset", "env", "config", "train", "search", "resources", "failure",
           "wandb", "report", "storage"]
    c.check_keys((), data, top)
    for req in ("name", "algorithm", "dataset"):
        if req not in data:
            c.fail((req,), "missing required key")
        if req not in ("algorithm", "dataset") or (req == "dataset" and not isinstance(data[req], dict)):
            c.coerce((req,), data[req], "str")
    algorithm, algos = _parse_algorithm(c, data["algorithm"])
    name = data["name"]
    if not name.replace("_", "").replace("-", "").isalnum():
        c.fail(("name",), f"use letters, digits, '-' and '_' only (it names directories), got {name!r}")
    if "env" in data and data["env"] is not None:
        c.coerce(("env",), data["env"], "str")
    if "storage" in data and data["storage"] is not None:
        c.coerce(("storage",), data["storage"], "str")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        c.fail(("config",), f"expected a mapping of algorithm parameters, got {config!r}")

    sections = {key: c.section((key,), data.get(key), cls) for key, cls in SECTIONS.items()}
    overrides = dict(overrides or {})
    for key, value in overrides.items():  # CLI overrides, e.g. {"search.num_samples": 3}
        if "." not in key:
            continue
        sec, attr = key.split(".")
        setattr(sections[sec], attr, value)
    dataset = overrides.pop("dataset", None) if overrides else None
    datasets = [] if dataset else _parse_datasets(c, data["dataset"])
    spec = SweepSpec(name=name, algorithm=algorithm, algorithms=algos,
                     dataset=_absolute_paths(dataset or (datasets[0] if datasets else data["dataset"])),
                     datasets=[_absolute_paths(d) for d in datasets], env=data.get("env"),
                     config=config, storage=data.get("storage"), path=file, **sections)
    if datasets and spec.search.searcher == "optuna":
        c.fail(("dataset", "grid"), "a grid over datasets needs searcher: grid or random")
    if algos:
        _validate_multi(spec, c)
    else:
        _validate(spec, c)
    return spec


REPORTED_PREFIXES = ("eval/", "train/", "time/")


def _validate_objectives(s: SearchSpec, c: _Checker) -> None:
    """``objectives: {metric: mode, ...}``: at least two reported metrics, modes max/min, Optuna without ASHA;
    ``metric``/``mode`` become the first objective (the one the console's "best" and ``--protocol`` rank by)."""
    path = ("search", "objectives")
    if len(s.objectives) < 2:
        c.fail(path, f"give two or more {{metric: max|min}} (one objective is metric/mode), got {s.objectives!r}")
    for metric, mode in s.objectives.items():
        if not isinstance(metric, str) or not metric.startswith(REPORTED_PREFIXES):
            c.fail(path + (str(metric),), "must be a reported metric such as eval/normalized_score or eval/act_ms")
        if mode not in ("max", "min"):
            c.fail(path + (metric,), f"must be 'max' or 'min', got {mode!r}")
    if s.searcher != "optuna":
        c.fail(("search", "searcher"), f"several objectives need searcher: optuna, got {s.searcher!r}")
    if s.scheduler != "fifo":
        c.fail(("search", "scheduler"), "several objectives need scheduler: fifo (ASHA stops on one metric)")
    s.metric, s.mode = next(iter(s.objectives.items()))


def _parse_datasets(c: _Checker, value) -> list[str]:
    """``dataset: name`` -> []; ``dataset: {grid: [a, b]}`` -> [a, b] (a grid dimension, like algorithms)."""
    if isinstance(value, str):
        return []
    if isinstance(value, dict) and list(value) == ["grid"]:
        names = value["grid"]
        if (not isinstance(names, list) or not names or not all(isinstance(d, str) for d in names)
                or len(set(names)) != len(names)):
            c.fail(("dataset", "grid"), f"expected a list of distinct dataset names, got {names!r}")
        return list(names)
    c.fail(("dataset",), f"expected a dataset name or {{grid: [name, ...]}}, got {value!r}")


def _parse_algorithm(c: _Checker, value) -> tuple[str, list[str]]:
    """``algorithm: dql`` -> ("dql", []); ``algorithm: {grid: [bc, dql]}`` -> ("bc+dql", ["bc", "dql"])."""
    if isinstance(value, str):
        return value, []
    if isinstance(value, dict) and list(value) == ["grid"]:
        algos = value["grid"]
        if (not isinstance(algos, list) or not algos or not all(isinstance(a, str) for a in algos)
                or len(set(algos)) != len(algos)):
            c.fail(("algorithm", "grid"), f"expected a list of distinct algorithm names, got {algos!r}")
        return "+".join(algos), list(algos)
    c.fail(("algorithm",), f"expected an algorithm name or {{grid: [name, ...]}}, got {value!r}")


def _validate_multi(spec: SweepSpec, c: _Checker):
    """A multi-algorithm study: every algorithm's view must be valid, config keys must be its algorithms."""
    import algorithms

    for algo in spec.algorithms:
        if algo not in algorithms.REGISTRY:
            hint = did_you_mean(algo, algorithms.names())
            c.fail(("algorithm", "grid"), f"unknown algorithm {algo!r}{hint}; known: {', '.join(algorithms.names())}")
    for key, value in spec.config.items():
        if key not in spec.algorithms:
            hint = did_you_mean(str(key), spec.algorithms)
            c.fail(("config", key), f"not one of the study's algorithms{hint}: a multi-algorithm study keys its "
                                    f"config by algorithm, e.g. config: {{{spec.algorithms[0]}: {{...}}}}")
        if not isinstance(value, dict):
            c.fail(("config", key), f"expected a mapping of {key} parameters, got {value!r}")
    if "algorithm" in spec.search.space:
        c.fail(("search", "space", "algorithm"), "the algorithms are given by the top-level algorithm: {grid: [...]}")
    if spec.search.searcher == "optuna":
        c.fail(("search", "searcher"), "a grid over algorithms needs searcher: grid or random")
    for algo in spec.algorithms:
        view, _ = spec.for_trial({"algorithm": algo})
        _validate(view, c, config_path=("config", algo))


def _absolute_paths(dataset: str) -> str:
    """File paths of the sources that take them (``Source.paths``) become absolute: Ray workers run in a copy of the
    working dir."""
    from platform.datasets import absolute_path  # the one table of dataset sources says which kinds take paths

    return absolute_path(dataset)


def _needs_support(spec: SweepSpec, c: _Checker, option: str, supports) -> None:
    """``train.<option>`` is on: fail unless the study's algorithm class ``supports`` it (naming those that do)."""
    import algorithms

    if spec.algorithm in algorithms.REGISTRY and not supports(algorithms.REGISTRY[spec.algorithm][1]):
        able = [n for n in algorithms.names() if supports(algorithms.REGISTRY[n][1])]
        c.fail(("train", option), f"{spec.algorithm} does not support it; algorithms that do: {', '.join(able)}")


def _validate(spec: SweepSpec, c: _Checker, config_path: tuple = ("config",)):
    import algorithms  # light: the registry imports algorithm modules lazily

    t, s, r = spec.train, spec.search, spec.resources
    for key, value, low in (("steps", t.steps, 1), ("batch_size", t.batch_size, 1), ("eval_every", t.eval_every, 1),
                            ("eval_episodes", t.eval_episodes, 1), ("checkpoint_every", t.checkpoint_every, 0),
                            ("log_every", t.log_every, 0)):
        if value < low:
            c.fail(("train", key), f"must be >= {low}, got {value}")
    if not t.seeds:
        c.fail(("train", "seeds"), "give at least one seed")
    if t.vectorize_seeds:
        _needs_support(spec, c, "vectorize_seeds", lambda cls: cls.vectorized_seeds() is not None)
    if t.data_parallel:
        if t.vectorize_seeds:
            c.fail(("train", "data_parallel"), "cannot be combined with vectorize_seeds: choose one")
        if r.workers > 1 and t.batch_size % r.workers:
            c.fail(("train", "batch_size"), f"data_parallel splits the batch across the {r.workers} workers: "
                                            f"{t.batch_size} is not a multiple of {r.workers}")
        _needs_support(spec, c, "data_parallel", lambda cls: cls.data_parallel)
    if t.compile:
        if t.vectorize_seeds or t.data_parallel:
            c.fail(("train", "compile"), "cannot be combined with vectorize_seeds or data_parallel (untested pairs)")
        _needs_support(spec, c, "compile", lambda cls: bool(cls.compile_modules))
    if len(set(t.seeds)) != len(t.seeds):
        c.fail(("train", "seeds"), f"seeds must be distinct, got {t.seeds}")
    if s.objectives:
        _validate_objectives(s, c)
    if spec.report.protocol not in REPORT_PROTOCOLS:
        c.fail(("report", "protocol"), f"must be one of {', '.join(REPORT_PROTOCOLS)}, got {spec.report.protocol!r}")
    if s.mode not in ("max", "min"):
        c.fail(("search", "mode"), f"must be 'max' or 'min', got {s.mode!r}")
    if s.searcher not in _SEARCHERS:
        c.fail(("search", "searcher"), f"must be one of {', '.join(_SEARCHERS)}, got {s.searcher!r}")
    if s.scheduler not in _SCHEDULERS:
        c.fail(("search", "scheduler"), f"must be one of {', '.join(_SCHEDULERS)}, got {s.scheduler!r}")
    if not s.metric.startswith(REPORTED_PREFIXES):
        c.fail(("search", "metric"), f"must be a reported metric such as eval/normalized_score, got {s.metric!r}")
    if s.num_samples < 1:
        c.fail(("search", "num_samples"), f"must be >= 1, got {s.num_samples}")
    if s.n_startup_trials < -1:
        c.fail(("search", "n_startup_trials"), f"must be >= 0, or -1 for a quarter of num_samples, got {s.n_startup_trials}")
    if s.max_concurrent < 0:
        c.fail(("search", "max_concurrent"), f"must be >= 0, got {s.max_concurrent}")
    if r.workers < 1:  # a Train run needs a worker; with none, nothing would hold (or be limited to) the trial's GPU
        c.fail(("resources", "workers"), f"must be >= 1 (each Train worker trains some of the seeds), got {r.workers}")
    if r.cpus_per_worker < 0 or r.gpus_per_worker < 0 or r.cpus_per_eval_actor <= 0:
        c.fail(("resources",), "resource amounts must be non-negative (cpus_per_eval_actor > 0)")
    if r.eval_actors < 1:
        c.fail(("resources", "eval_actors"), f"must be >= 1, got {r.eval_actors}")
    if r.workers > len(t.seeds) and not t.data_parallel:
        c.fail(("resources", "workers"), f"{r.workers} workers but only {len(t.seeds)} seeds: seeds are split across workers")

    if spec.algorithm not in algorithms.REGISTRY:
        hint = did_you_mean(spec.algorithm, algorithms.names())
        c.fail(("algorithm",), f"unknown algorithm {spec.algorithm!r}{hint}; known: {', '.join(algorithms.names())}")
    try:
        fields = algorithms.config_fields(spec.algorithm)
    except ImportError as e:
        c.fail(("algorithm",), f"cannot import algorithm {spec.algorithm!r}: {e}")

    def check_param(section, key):
        if key not in fields:
            hint = did_you_mean(key, list(fields))
            c.fail(section + (key,), f"{spec.algorithm} has no parameter {key!r}{hint}")

    for key in spec.config:
        check_param(config_path, key)
    grid_used = False
    for key, dist in s.space.items():
        if key not in fields:
            hint = did_you_mean(key, list(fields))
            c.fail(("search", "space", key), f"{spec.algorithm} has no parameter {key!r}{hint}")
        if key in spec.config:
            c.fail(("search", "space", key), "also fixed in config: choose one")
        grid_used |= _check_distribution(c, ("search", "space", key), dist)
    if grid_used and s.searcher == "optuna":
        c.fail(("search", "searcher"), "grid parameters need searcher: grid (or use choice with optuna)")

    # Build the config at a few points of the space so that __post_init__ errors surface now.
    for point in _corner_points(s.space):
        params = {**spec.config, **point}
        try:
            algorithms.build_config(spec.algorithm, params)
        except (TypeError, ValueError) as e:
            bad = next((k for k in point if k in str(e)), None)
            path = ("search", "space", bad) if bad else config_path
            if bad is None:  # the fixed config itself is invalid
                c.fail(path, f"invalid {spec.algorithm} config {params}: {e}")
            combo = ", ".join(f"{k}={v}" for k, v in point.items())
            c.fail(path, f"the space contains an impossible {spec.algorithm} config ({combo}): {e}; restrict the "
                         f"space so that every combination is valid")


def _check_distribution(c: _Checker, path: tuple, dist) -> bool:
    """Validate one search-space entry; return True if it is a grid."""
    if not isinstance(dist, dict):
        return False  # a fixed value
    if len(dist) != 1:
        c.fail(path, f"give exactly one of {', '.join(_DISTRIBUTIONS)}, got {list(dist)}")
    (kind, args), = dist.items()
    if kind not in _DISTRIBUTIONS:
        hint = did_you_mean(str(kind), _DISTRIBUTIONS, f" (one of {', '.join(_DISTRIBUTIONS)})")
        c.fail(path + (kind,), f"unknown distribution{hint}")
    if not isinstance(args, list) or not args:
        c.fail(path + (kind,), f"expected a non-empty list, got {args!r}")
    if kind in ("uniform", "loguniform", "int", "logint"):
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            c.fail(path + (kind,), f"expected [low, high] numbers, got {args!r}")
        lo, hi = args
        if not lo < hi:
            c.fail(path + (kind,), f"low must be < high, got {args!r}")
        if kind in ("loguniform", "logint") and lo <= 0:
            c.fail(path + (kind,), f"loguniform needs low > 0, got {args!r}")
        if kind in ("int", "logint") and not all(isinstance(a, int) for a in args):
            c.fail(path + (kind,), f"{kind} needs integer bounds, got {args!r}")
    return kind == "grid"


MAX_CHECKED_POINTS = 4096


def _corner_points(space: dict) -> list[dict]:
    """Every combination of the space's choices (and grids) with each continuous range's two ends, so that a
    constraint between parameters (e.g. Diffusion Policy's horizons) fails before any trial is spent on it.
    Past ``MAX_CHECKED_POINTS`` combinations: all lows, all highs and each choice alone."""
    import itertools

    axes: dict[str, list] = {}
    for key, dist in space.items():
        if not isinstance(dist, dict):
            axes[key] = [dist]
            continue
        (kind, args), = dist.items()
        axes[key] = list(args) if kind in ("choice", "grid") else [args[0], args[1]]
    if math.prod(len(v) for v in axes.values()) <= MAX_CHECKED_POINTS:
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    lows = {k: v[0] for k, v in axes.items()}
    return [lows, {k: v[-1] for k, v in axes.items()}] + [{**lows, k: a} for k, v in axes.items() for a in v[1:-1]]
