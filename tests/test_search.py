"""Searches that search: the platform's Optuna settings against random search on a cheap synthetic objective,
start-up trials scaled to the budget, and the paper's setting as trial 0."""
import numpy as np
import optuna
import pytest

from platform.search import paper_point, startup_trials
from platform.spec import load_spec
from platform.sweep import tpe_sampler


def objective(trial):
    """A score surface over (log eta, log K) whose two knobs interact; best 100 at eta = 2, K = 20."""
    eta = trial.suggest_float("eta", 0.1, 10.0, log=True)
    k = trial.suggest_int("K", 5, 100, log=True)
    x, y = np.log10(eta) - np.log10(2.0), np.log10(k) - np.log10(20)
    return 100 - 60 * (x - 0.5 * y) ** 2 - 40 * y ** 2


def median_regret(make_sampler, n_trials: int, seeds=range(20)) -> float:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    regrets = []
    for seed in seeds:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
        study.optimize(objective, n_trials=n_trials)
        regrets.append(100 - study.best_value)
    return float(np.median(regrets))


def test_platform_tpe_beats_random_search_at_study_sizes():
    n = 12  # dql_eta's size
    ours = median_regret(lambda s: tpe_sampler(s, max(2, n // 4)), n)
    rand = median_regret(lambda s: optuna.samplers.RandomSampler(seed=s), n)
    optuna_default = median_regret(lambda s: optuna.samplers.TPESampler(seed=s), n)  # 10 random start-up trials
    print(f"median regret over 20 seeds, {n} trials: platform TPE {ours:.2f}, Optuna default {optuna_default:.2f}, "
          f"random {rand:.2f}")
    assert ours < 0.75 * rand and ours < optuna_default


def test_startup_trials_and_paper_point(tmp_path):
    spec = load_spec("search_spaces/dql_eta.yaml")
    assert startup_trials(spec) == 3 and paper_point(spec) == {"eta": 1.0}
    quick = load_spec("search_spaces/quickstart.yaml")
    assert startup_trials(quick) == 2 and paper_point(quick) == {"eta": 1.0}
    edp = load_spec("search_spaces/edp_steps.yaml")
    assert paper_point(edp) == {"n_timesteps": 1000, "sampler_steps": 15}
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(open("search_spaces/quickstart.yaml").read().replace("[0.1, 10.0]", "[2.0, 10.0]")
                      .replace("num_samples: 3", "num_samples: 3\n  n_startup_trials: 0"))
    spec = load_spec(str(narrow))
    assert paper_point(spec) is None and startup_trials(spec) == 0  # the paper's eta = 1.0 is outside [2, 10]


def test_objectives_validated_and_first_is_the_metric(tmp_path):
    from platform.spec import SpecError

    def study(search: str):
        f = tmp_path / "s.yaml"
        f.write_text(open("search_spaces/edp_steps.yaml").read().split("search:")[0] + "search:\n" + search +
                     "  space:\n    n_timesteps: {logint: [20, 1000]}\n")
        return load_spec(str(f))

    ok = study("  searcher: optuna\n  num_samples: 4\n  objectives: {eval/normalized_score: max, eval/act_ms: min}\n")
    assert (ok.search.metric, ok.search.mode) == ("eval/normalized_score", "max")
    assert list(ok.search.objectives) == ["eval/normalized_score", "eval/act_ms"]
    for bad, why in [("  objectives: {eval/normalized_score: max}\n", "two or more"),
                     ("  objectives: {eval/normalized_score: max, eval/act_ms: fast}\n", "'max' or 'min'"),
                     ("  objectives: {eval/normalized_score: max, act_ms: min}\n", "reported metric"),
                     ("  scheduler: asha\n  objectives: {eval/normalized_score: max, eval/act_ms: min}\n", "fifo"),
                     ("  searcher: random\n  objectives: {eval/normalized_score: max, eval/act_ms: min}\n", "optuna")]:
        with pytest.raises(SpecError, match=why):
            study(bad)


def hypervolume(points, ref=(0.0, 100.0)) -> float:
    """Area dominated by (score max, cost min) points above score ref[0] and below cost ref[1]."""
    pts = sorted((c, s) for s, c in points if s > ref[0] and c < ref[1])
    area, best = 0.0, ref[0]
    for i, (c, s) in enumerate(pts):
        best = max(best, s)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (nxt - c) * (best - ref[0])
    return area


MO_STUDY = """\
name: mo
algorithm: dql
dataset: generated:pendulum-medium
search:
  objectives: {eval/normalized_score: max, eval/act_ms: min}
  searcher: optuna
  num_samples: 30
  scheduler: fifo
  space:
    eta: {loguniform: [0.1, 10.0]}
    n_timesteps: {logint: [5, 100]}
"""


def test_multi_objective_tpe_covers_more_of_the_front_than_random(tmp_path, monkeypatch):
    """Score against cost (K): the searcher ``build_tuner`` makes for a two-objective study (multi-objective TPE,
    the paper's point first), driven through Tune's Searcher interface as Tune drives it, against Optuna's random
    sampler in the same searcher, seed by seed: 40 seeds of 30 trials, hypervolume of the points scoring above 60.

    Measured: TPE wins on 33 of 40 seeds (82%; medians 3665 vs 3593).  At 12 trials it is barely better (60-65% of
    seeds), and a median comparison there cannot tell TPE from random search with other seeds."""
    import dataclasses

    import ray
    from ray.tune.search.optuna import OptunaSearch

    from platform.search import param_space
    from platform.sweep import build_tuner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})  # no Ray needed to build the Tuner
    path = tmp_path / "mo.yaml"
    path.write_text(MO_STUDY)
    base = load_spec(str(path))
    metrics = list(base.search.objectives)

    def hv(searcher, spec) -> float:
        searcher.set_search_properties(None, None, param_space(spec))
        points = []
        for i in range(spec.search.num_samples):
            config = searcher.suggest(str(i))
            score = objective(optuna.trial.FixedTrial({"eta": config["eta"], "K": config["n_timesteps"]}))
            cost = float(config["n_timesteps"])  # sampling time grows with K
            searcher.on_trial_complete(str(i), {metrics[0]: score, metrics[1]: cost})
            points.append((score, cost))
        return hypervolume(points, ref=(60.0, 100.0))

    ours, rand = [], []
    for seed in range(40):
        spec = dataclasses.replace(base, search=dataclasses.replace(base.search, seed=seed))
        searcher = build_tuner(spec, str(tmp_path), resume=False)._local_tuner._tune_config.search_alg
        assert isinstance(searcher, OptunaSearch)
        ours.append(hv(searcher, spec))
        rand.append(hv(OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=seed), metric=metrics,
                                    mode=list(base.search.objectives.values())), spec))
    wins = float(np.mean(np.array(ours) > np.array(rand)))
    print(f"hypervolume above score 60, 30 trials, 40 seeds: platform TPE wins {wins:.0%}, medians "
          f"{np.median(ours):.0f} vs {np.median(rand):.0f}")
    assert wins >= 0.7 and np.median(ours) > np.median(rand)  # chance (random vs random) is 50% +- 8%
