"""Study YAML validation: every bad input names the file, the key (and line) and the reason."""
import textwrap

import pytest

from platform.search import max_concurrent_trials, param_space, trial_resources
from platform.spec import SpecError, load_spec

GOOD = """\
name: t
algorithm: bc
dataset: generated:pendulum-medium
config: {hidden_dim: 64}
train: {steps: 10, batch_size: 32, eval_every: 5, eval_episodes: 2, seeds: [0, 1]}
search:
  searcher: optuna
  num_samples: 3
  space:
    lr: {loguniform: [0.0001, 0.01]}
resources: {workers: 1, eval_actors: 1}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_good_spec_parses(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.algorithm == "bc" and spec.train.seeds == [0, 1] and spec.train.steps == 10
    assert spec.search.space == {"lr": {"loguniform": [0.0001, 0.01]}}
    space = param_space(spec)
    assert type(space["lr"]).__name__ == "Float" and space["lr"].lower == 0.0001


def err(tmp_path, text) -> SpecError:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(e.value).startswith(path), str(e.value)
    return e.value


def test_unknown_top_level_key_suggests(tmp_path):
    e = err(tmp_path, GOOD + "serch: {}\n")
    assert e.key == "serch" and "did you mean 'search'" in e.reason and e.line == 12


def test_unknown_nested_key_names_path_and_line(tmp_path):
    e = err(tmp_path, GOOD.replace("steps: 10", "stepz: 10"))
    assert e.key == "train.stepz" and "did you mean 'steps'" in e.reason and e.line == 5


def test_wrong_type(tmp_path):
    e = err(tmp_path, GOOD.replace("steps: 10", "steps: ten"))
    assert e.key == "train.steps" and "integer" in e.reason


def test_out_of_range(tmp_path):
    e = err(tmp_path, GOOD.replace("eval_every: 5", "eval_every: 0"))
    assert e.key == "train.eval_every" and ">= 1" in e.reason


def test_unknown_algorithm(tmp_path):
    e = err(tmp_path, GOOD.replace("algorithm: bc", "algorithm: dqll"))
    assert e.key == "algorithm" and "dqll" in e.reason and "did you mean 'dql'" in e.reason


def test_parameter_not_in_config(tmp_path):
    e = err(tmp_path, GOOD.replace("lr: {log", "learning_rate: {log"))
    assert e.key == "search.space.learning_rate" and "bc has no parameter" in e.reason


def test_fixed_parameter_not_in_config(tmp_path):
    e = err(tmp_path, GOOD.replace("hidden_dim: 64", "hiden_dim: 64"))
    assert e.key == "config.hiden_dim" and "did you mean 'hidden_dim'" in e.reason


def test_bad_distribution(tmp_path):
    e = err(tmp_path, GOOD.replace("loguniform: [0.0001, 0.01]", "logunifrom: [0.0001, 0.01]"))
    assert "unknown distribution" in e.reason and "loguniform" in e.reason
    e = err(tmp_path, GOOD.replace("[0.0001, 0.01]", "[0.01, 0.0001]"))
    assert "low must be < high" in e.reason


def test_grid_needs_grid_searcher(tmp_path):
    e = err(tmp_path, GOOD.replace("{loguniform: [0.0001, 0.01]}", "{grid: [0.001, 0.01]}"))
    assert e.key == "search.searcher"


def test_invalid_config_value_caught_before_ray(tmp_path):
    e = err(tmp_path, GOOD.replace("hidden_dim: 64", "hidden_dim: -3"))
    assert "invalid bc config" in e.reason


def test_malformed_yaml_has_line(tmp_path):
    e = err(tmp_path, GOOD.replace("name: t", "name: [t"))
    assert "malformed YAML" in e.reason and e.line is not None


def test_missing_required_key(tmp_path):
    e = err(tmp_path, GOOD.replace("dataset: generated:pendulum-medium\n", ""))
    assert e.key == "dataset" and "missing" in e.reason


def test_missing_file():
    with pytest.raises(SpecError, match="no such file"):
        load_spec("/nonexistent/study.yaml")


def test_resources_and_concurrency(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    need = trial_resources(spec)
    assert need == {"CPU": 1 + 0.5 + 0.01, "GPU": 0.0}  # workers + rollout actors + the Tune function
    assert max_concurrent_trials(spec, {"CPU": 2.0}) == 1
    assert max_concurrent_trials(spec, {"CPU": 6.0}) == 3  # 4 x 1.51 > 6: the 4th trial would starve


def test_wandb_callback_is_offline_by_default(tmp_path, monkeypatch):
    from platform.sweep import wandb_callback

    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = load_spec(write(tmp_path, GOOD + "wandb: {enabled: true, project: p}\n"))
    cb = wandb_callback(spec)
    assert type(cb).__name__ == "WandbLoggerCallback"
    assert cb.kwargs["mode"] == "offline" and cb.project == "p"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_callback(spec).kwargs["mode"] == "disabled"


MULTI = """\
name: m
algorithm: {grid: [bc, dql]}
dataset: generated:pendulum-medium
config: {dql: {n_timesteps: 5, eta: 1.0}, bc: {hidden_dim: 64}}
train: {steps: 10, batch_size: 32, eval_every: 5, eval_episodes: 2, seeds: [0, 1]}
search: {searcher: grid, num_samples: 2}
"""


def test_multi_algorithm_study_gives_each_trial_its_algorithm_and_config(tmp_path):
    spec = load_spec(write(tmp_path, MULTI))
    assert spec.algorithms == ["bc", "dql"] and spec.algorithm == "bc+dql"
    assert param_space(spec)["algorithm"] == {"grid_search": ["bc", "dql"]}
    dql, params = spec.for_trial({"algorithm": "dql", "lr": 1e-3})
    assert dql.algorithm == "dql" and dql.algorithms == [] and dql.config == {"n_timesteps": 5, "eta": 1.0}
    assert params == {"lr": 1e-3}
    bc, _ = spec.for_trial({"algorithm": "bc"})
    assert bc.config == {"hidden_dim": 64} and bc.train == spec.train
    with pytest.raises(ValueError):
        spec.for_trial({"algorithm": "edp"})


@pytest.mark.parametrize("bad, key, reason", [
    ("algorithm: {grid: [bc, dq1]}", "algorithm.grid", "did you mean 'dql'"),
    ("config: {dq: {eta: 1.0}}", "config.dq", "did you mean 'dql'"),
    ("config: {dql: {etaa: 1.0}}", "config.dql.etaa", "did you mean 'eta'"),
    ("config: {dql: {n_timesteps: 0}}", "config.dql", "n_timesteps"),
    ("search: {searcher: optuna}", "search.searcher", "grid or random"),
    ("algorithm: {choice: [bc, dql]}", "algorithm", "grid"),
])
def test_multi_algorithm_errors_name_the_key(tmp_path, bad, key, reason):
    field = bad.split(":")[0]
    text = "\n".join(bad if line.startswith(field + ":") else line for line in MULTI.splitlines())
    e = err(tmp_path, text)
    assert e.key == key and reason in str(e), str(e)


def test_impossible_combinations_fail_before_any_trial(tmp_path):
    """Diffusion Policy's horizons: every combination of the space is checked, and the error names the line."""
    text = textwrap.dedent("""\
        name: horizons
        algorithm: diffusion_policy
        dataset: generated:pendulum-medium
        search:
          searcher: optuna
          num_samples: 4
          space:
            obs_horizon: {choice: [1, 2]}
            pred_horizon: {choice: [8, 16]}
            action_horizon: {choice: [4, 8]}
        """)
    with pytest.raises(SpecError, match=r"horizons.yaml:8: search.space.obs_horizon: the space contains an impossible "
                                        r"diffusion_policy config \(obs_horizon=2, pred_horizon=8, action_horizon=8\)"):
        load_spec(write(tmp_path, text, "horizons.yaml"))
    ok = text.replace("[8, 16]", "[16, 32]")
    assert load_spec(write(tmp_path, ok, "horizons.yaml")).search.space["pred_horizon"] == {"choice": [16, 32]}


def test_dataset_grid_is_a_trial_dimension(tmp_path):
    text = textwrap.dedent("""\
        name: table
        algorithm: {grid: [bc, dql]}
        dataset: {grid: [generated:pendulum-medium, generated:pendulum-random]}
        config: {dql: {n_timesteps: 5}}
        search: {searcher: grid, num_samples: 1}
        """)
    spec = load_spec(write(tmp_path, text))
    assert spec.datasets == ["generated:pendulum-medium", "generated:pendulum-random"]
    from platform.search import num_grid_points

    assert num_grid_points(spec) == 4
    view, params = spec.for_trial({"algorithm": "dql", "dataset": "generated:pendulum-random"})
    assert (view.algorithm, view.dataset, view.config, params) == ("dql", "generated:pendulum-random",
                                                                   {"n_timesteps": 5}, {})
    with pytest.raises(SpecError, match="needs searcher: grid or random"):
        load_spec(write(tmp_path, text.replace("searcher: grid", "searcher: optuna")))


def test_zero_workers_is_refused(tmp_path):
    """workers: 0 would start a trial that holds no GPU yet sees every GPU of its node: refused up front."""
    f = tmp_path / "zero.yaml"
    f.write_text(open("search_spaces/quickstart.yaml").read().replace("workers: 1,", "workers: 0,"))
    with pytest.raises(SpecError, match=r"resources.workers: must be >= 1"):
        load_spec(str(f))


def test_compile_needs_an_algorithm_that_supports_it(tmp_path):
    e = err(tmp_path, GOOD.replace("seeds: [0, 1]}", "seeds: [0, 1], compile: true}"))
    assert e.key == "train.compile" and "bc does not support it; algorithms that do: dql, edp" in e.reason, e
    e = err(tmp_path, GOOD.replace("algorithm: bc", "algorithm: dql").replace("config: {hidden_dim: 64}", "")
            .replace("lr:", "eta:").replace("seeds: [0, 1]}", "seeds: [0, 1], compile: true, vectorize_seeds: true}"))
    assert e.key == "train.compile" and "vectorize_seeds" in e.reason, e


def test_dataset_paths_become_absolute_for_the_sources_that_take_paths(tmp_path, monkeypatch):
    """Which kinds take a file path is the sources table's (``Source.paths``), not a list in spec.py: a relative
    path of those becomes absolute (Ray workers run in a copy of the working dir), the other kinds' values stay."""
    import os

    from platform.datasets import SOURCES

    monkeypatch.chdir(tmp_path)
    path_kinds = {kind for kind, source in SOURCES.items() if source.paths}
    assert path_kinds == {"d4rl", "pusht", "robomimic", "kitchen", "antmaze", "adroit"}  # as before the table
    for kind in SOURCES:
        spec = load_spec(write(tmp_path, GOOD.replace("generated:pendulum-medium", f"{kind}:data/x.hdf5")))
        expected = f"{kind}:{os.path.join(str(tmp_path), 'data', 'x.hdf5')}" if kind in path_kinds else f"{kind}:data/x.hdf5"
        assert spec.dataset == expected, kind
    grid = load_spec(write(tmp_path, GOOD.replace("dataset: generated:pendulum-medium",
                                                  "dataset: {grid: [d4rl:a.hdf5, generated:pendulum-medium]}")
                                      .replace("searcher: optuna", "searcher: grid")
                                      .replace("    lr: {loguniform: [0.0001, 0.01]}", "    lr: 0.001")))
    assert grid.datasets == [f"d4rl:{tmp_path}/a.hdf5", "generated:pendulum-medium"]
    assert load_spec(write(tmp_path, GOOD.replace("pendulum-medium", "hopper-medium"))).dataset == "generated:hopper-medium"
