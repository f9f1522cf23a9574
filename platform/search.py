"""What a study asks of Tune: the search space, the TPE start-up and the paper point, the evaluation count
ASHA's rungs count in, and how many trials fit at once (every CPU a trial creates, counted)."""
from __future__ import annotations

import math

from platform.spec import SweepSpec


def param_space(spec: SweepSpec) -> dict:
    """The Tune search space: the searched parameters, flat, keyed by config field name."""
    from ray import tune

    out = {"algorithm": tune.grid_search(spec.algorithms)} if spec.algorithms else {}
    if spec.datasets:
        out["dataset"] = tune.grid_search(spec.datasets)
    for key, dist in spec.search.space.items():
        if not isinstance(dist, dict):
            out[key] = dist
            continue
        (kind, args), = dist.items()
        if kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        elif kind == "int":
            out[key] = tune.randint(args[0], args[1] + 1)  # inclusive high, as users expect
        elif kind == "logint":
            out[key] = tune.lograndint(args[0], args[1] + 1)
        elif kind == "choice":
            out[key] = tune.choice(args)
        else:
            out[key] = tune.grid_search(args)
    return out


def startup_trials(spec: SweepSpec) -> int:
    """TPE's random start-up trials: the YAML's, else a quarter of the budget, at least 2 (Optuna's default
    of 10 made every study of 10 or fewer samples a random search)."""
    s = spec.search
    return s.n_startup_trials if s.n_startup_trials >= 0 else max(2, s.num_samples // 4)


def paper_point(spec: SweepSpec) -> dict | None:
    """The algorithm's defaults (the paper's setting) for every searched parameter, if all lie in the space.

    Evaluated first (``points_to_evaluate``) so a study can only improve on the published configuration.
    None for multi-algorithm studies, grids, or a default outside the searched range.
    """
    import algorithms

    if spec.algorithms or spec.datasets or not spec.search.space or not spec.search.paper_default_first:
        return None
    fields = algorithms.config_fields(spec.algorithm)
    point = {}
    for key, dist in spec.search.space.items():
        if not isinstance(dist, dict) or key not in fields or key in spec.config:
            return None
        default = fields[key].default
        (kind, args), = dist.items()
        if kind in ("uniform", "loguniform", "int", "logint"):
            if not isinstance(default, (int, float)) or isinstance(default, bool) or not args[0] <= default <= args[1]:
                return None
        elif kind == "choice":
            if default not in args:
                return None
        else:  # grid: every value is run anyway
            return None
        point[key] = default
    return point


def num_grid_points(spec: SweepSpec) -> int:
    n = max(1, len(spec.algorithms)) * max(1, len(spec.datasets))
    for dist in spec.search.space.values():
        if isinstance(dist, dict) and "grid" in dist:
            n *= len(dist["grid"])
    return n


def evaluations_until(step: int, eval_every: int) -> int:
    """How many evaluations a run has made by ``step``: every ``eval_every`` steps, and once more at a last
    step off that grid (the train loop's schedule; ASHA's clock)."""
    return step // eval_every + int(step % eval_every != 0)


TRAINABLE_CPU = 0.01  # the Tune function of a trial only launches its Train run, but must ask for something


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """CPU/GPU one trial holds while it runs: Train workers, evaluation actors and its Tune function."""
    r = spec.resources  # workers >= 1 (spec.py)
    # each worker that splits the seeds evaluates its own with at least one actor; data-parallel replicas
    # evaluate on rank 0 only (training.train_loop)
    actors = r.eval_actors if spec.train.data_parallel else max(r.eval_actors, r.workers)
    return {"CPU": r.workers * r.cpus_per_worker + actors * r.cpus_per_eval_actor + TRAINABLE_CPU,
            "GPU": r.workers * r.gpus_per_worker}


def max_concurrent_trials(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """How many trials fit at once, counting everything a trial holds (``trial_resources``): Train worker
    groups are not Tune-managed, so a trial started beyond this would wait on its workers."""
    if spec.search.max_concurrent:
        return spec.search.max_concurrent
    need = trial_resources(spec)
    fits = [math.floor(cluster.get(k, 0) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(1, min(fits) if fits else 1)
