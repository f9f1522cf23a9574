"""``python -m platform.sweep SPEC.yaml``: run a study with Ray Tune + Optuna, write Parquet.

    python -m platform.sweep search_spaces/quickstart.yaml
    python -m platform.sweep search_spaces/dql_eta.yaml --num-samples 4 --storage /shared/results
    python -m platform.sweep search_spaces/dql_eta.yaml --resume      # finish an interrupted sweep
    python -m platform.sweep search_spaces/dql_eta.yaml --dry-run     # validate and print the plan
    python -m platform.sweep search_spaces/dp_pusht_cnn.yaml --videos  # + rollout GIFs of the best policies
    ray job submit -- python -m platform.sweep search_spaces/dql_eta.yaml   # on a cluster (see below)
    python -m platform.sweep search_spaces/dql_eta.yaml --address auto  # join this machine's `ray start` head

Without ``--address`` or ``$RAY_ADDRESS`` (outside a submitted job) the sweep starts a local Ray of its own,
whatever else runs, or ran, on the machine.

Exit codes: 0 the sweep ran (trials that failed are listed with their reasons in its last lines);
1 every trial failed, or the cluster's workers cannot import the project; 2 bad input (the study file,
its dataset, the results directory), with one line naming the file and the problem, or something that
does not answer within its bound (an explicit Ray address, the results directory, a dataset lock), in one
line naming it.

Each Tune trial is a small function trainable that launches a Ray Train ``TorchTrainer``
(``platform.training.train_loop``); the Train run reports every evaluation to Tune through
``TuneReportCallback``.  Results land in ``<storage>/<name>/metrics.parquet`` (see
``platform.results``) and a report in ``reports/<name>/``.  This is the only module that knows Tune.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import algorithms
from platform import history
from platform.cluster import (PROBE_TIMEOUT_S, REPO_ROOT, ProjectImportError, Unavailable,  # noqa: F401 (re-exported)
                              check_ray_address, check_workers_import, cluster_address, init_ray, on_cluster)
from platform.compiling import cxx_compiler
from platform.console import ProgressPrinter, QuietStream
from platform.search import (TRAINABLE_CPU, evaluations_until, max_concurrent_trials, num_grid_points, paper_point,
                             param_space, startup_trials, trial_resources)
from platform.spec import SpecError, SweepSpec, load_spec


def default_storage() -> str:
    return os.environ.get("DRL_RESULTS_DIR", os.path.join(REPO_ROOT, "results"))


def _run_trial(params: dict, spec_dict: dict, storage: str) -> None:
    """Tune function trainable: one Ray Train run for this trial's parameters."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from platform.training import train_loop

    spec = SweepSpec.from_dict(spec_dict)
    r = spec.resources
    trial_id = tune.get_context().get_trial_id()
    per_worker = {"CPU": r.cpus_per_worker}
    if r.gpus_per_worker:
        per_worker["GPU"] = r.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec_dict, "params": params, "trial_id": trial_id,
                           "history_dir": history.history_dir(storage, spec.name)},
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0,
                                               resources_per_worker=per_worker),
        # Same name on a resumed sweep -> Train restores its checkpoint manager and the loop resumes.
        run_config=ray.train.RunConfig(
            name=f"train_{trial_id}", storage_path=os.path.join(storage, spec.name, "_train"),
            failure_config=ray.train.FailureConfig(max_failures=spec.failure.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    trainer.fit()


def wandb_callback(spec: SweepSpec):
    """Weights & Biases logging of every trial, offline unless the user's WANDB_MODE says otherwise.

    Online, the W&B server (``$WANDB_BASE_URL``, default api.wandb.ai) is probed with a bounded TCP connect
    first: one that does not answer gets one line and offline logging (``wandb sync`` uploads it later)
    instead of every trial's logger waiting on it."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = os.environ.get("WANDB_MODE") or spec.wandb.mode
    if mode == "online":
        problem = _wandb_unreachable()
        if problem:
            print(f"[sweep] W&B {problem}: logging offline instead (`wandb sync` uploads the runs later)", flush=True)
            mode = os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_MODE", mode)  # Ray's callback skips the API-key check only via this variable
    return WandbLoggerCallback(project=spec.wandb.project, group=spec.name, mode=mode)


def _wandb_unreachable() -> str | None:
    """Why the W&B server does not answer a TCP connect within ``PROBE_TIMEOUT_S``, or None if it does."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    try:
        host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except (OSError, ValueError) as e:
        why = "no answer" if isinstance(e, socket.timeout) else (getattr(e, "strerror", None) or str(e)).lower()
        return f"server {url.geturl()} does not answer ({why} within {PROBE_TIMEOUT_S:g} s)"


def tpe_sampler(seed: int, n_startup_trials: int):
    """The studies' Optuna sampler (see ``build_tuner``); tests compare it with random search."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate, constant_liar
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True,
                                      constant_liar=True)


def build_tuner(spec: SweepSpec, storage: str, resume: bool):
    import ray
    from ray import tune

    s = spec.search
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, spec_dict=spec.to_dict(), storage=storage),
        {"cpu": TRAINABLE_CPU},   # counted in trial_resources, so max_concurrent_trials leaves no trial starving
    )
    exp_path = os.path.join(storage, spec.name)
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise SpecError(spec.path, "", f"--resume: no sweep to resume at {exp_path}")
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)

    cluster = ray.cluster_resources()
    concurrent = max_concurrent_trials(spec, cluster)
    if s.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # TPE that learns at this study's size: start-up trials scaled to the budget, a joint (multivariate)
        # model of knobs that interact (eta with K; To/Tp/Ta), constant liar for trials running concurrently.
        sampler = tpe_sampler(s.seed, startup_trials(spec))
        point = paper_point(spec)
        objectives = dict(metric=list(s.objectives), mode=list(s.objectives.values())) if s.objectives else {}
        search_alg = OptunaSearch(sampler=sampler, points_to_evaluate=[point] if point else None, **objectives)
    else:
        from ray.tune.search import BasicVariantGenerator

        # Tune applies max_concurrent_trials only to a Searcher (Optuna); the basic generator takes it itself.
        search_alg = BasicVariantGenerator(random_state=s.seed, max_concurrent=concurrent)
    if s.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # rungs counted in evaluations (reports without one carry no eval/count and are ignored by ASHA)
        n_evals = max(1, evaluations_until(spec.train.steps, spec.train.eval_every))
        grace = min(s.grace_period, n_evals)
        if grace < s.grace_period:  # e.g. --steps shortened the study: ASHA then only stops at the last evaluation
            print(f"[sweep] ASHA: search.grace_period {s.grace_period} is more than the {n_evals} evaluation(s) of "
                  f"{spec.train.steps} steps; using {grace}", flush=True)
        scheduler = ASHAScheduler(time_attr="eval/count", grace_period=grace,
                                  reduction_factor=s.reduction_factor, max_t=n_evals)
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    printer = ProgressPrinter(s.metric, s.num_samples * num_grid_points(spec), spec.train.steps, s.mode)
    callbacks = [printer.callback]
    if spec.wandb.enabled:
        callbacks.append(wandb_callback(spec))
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        # several objectives: the searcher holds them (Tune's own metric would replace its list)
        tune_config=tune.TuneConfig(metric=None if s.objectives else s.metric, mode=None if s.objectives else s.mode,
                                    search_alg=search_alg, scheduler=scheduler,
                                    num_samples=s.num_samples,
                                    max_concurrent_trials=concurrent if s.searcher == "optuna" else None),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage, callbacks=callbacks, verbose=0, stop=printer.stopper,
            failure_config=tune.FailureConfig(max_failures=spec.failure.trial_max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def run_sweep(spec: SweepSpec, storage: str | None = None, resume: bool = False, report: bool = True,
              verbose: bool = False, videos: bool = False, address: str | None = None) -> str:
    """Run (or resume) a study; return the path of its Parquet dataset.

    ``address``: a Ray cluster to join (``--address``; see ``cluster_address``), else a local Ray of our own.

    ``videos``: before the report, the best policy of each (study, algorithm) rolls out a few test seeds with
    rendering on, in Ray CPU tasks, into ``reports/<name>/videos/`` (``platform.report.videos``); the report embeds them."""
    from platform import results

    storage = os.path.abspath(storage or spec.storage or default_storage())
    _check_storage(spec, storage)
    target = cluster_address(address)
    if target is not None:
        check_ray_address(*target)  # a dead address fails now, not after minutes of dataset collection
    from platform.datasets import ensure_dataset
    from platform.datasets.generate import DatasetLockTimeout

    for dataset in spec.datasets or [spec.dataset]:
        try:
            ensure_dataset(dataset)  # e.g. generated:halfcheetah-medium from its shipped policy, once, here
        except DatasetLockTimeout as e:
            raise Unavailable(str(e)) from None
    local = target is None
    init_ray(trial_cpus=trial_resources(spec)["CPU"], verbose=verbose, address=address)
    spec = _without_missing_gpus(spec, local)
    check_workers_import(spec.algorithms or spec.algorithm)
    os.makedirs(os.path.join(storage, spec.name), exist_ok=True)
    results.save_spec(spec, storage)
    t0 = time.time()
    tuner = build_tuner(spec, storage, resume)
    print(f"[sweep] {spec.name}: {spec.algorithm} on {' + '.join(spec.datasets) or spec.dataset}, "
          f"{spec.search.num_samples} sample(s) x "
          f"{len(spec.train.seeds)} seed(s), {spec.train.steps} steps each; storage {storage}", flush=True)
    grid = tuner.fit()
    path = results.write_results(grid, spec, storage)
    wall = time.time() - t0
    df = results.read_results(path)
    print(f"[sweep] done in {wall:.0f}s: {df['trial_id'].nunique()} trials, {len(df)} rows -> {path}", flush=True)
    best = results.best_trials(df, spec.search.metric, spec.search.mode)
    if best is not None:
        print(best.to_string(index=False), flush=True)
    failed = failed_trials(df)
    n_trials = df["trial_id"].nunique()
    if failed:
        print(f"[sweep] {len(failed)} of {n_trials} trials failed:", flush=True)
        for trial_id, reason in failed.items():
            print(f"[sweep]   {trial_id}: {reason}", flush=True)
    if report:
        try:
            from platform.report import build_report

            out_dir = os.path.join(REPO_ROOT, "reports", spec.name)
            os.makedirs(out_dir, exist_ok=True)
            # the results beside the report (small, dataset paths as labels): `python -m platform.report
            # reports/<name>` rebuilds it anywhere
            results.write_portable(path, out_dir)
            if videos:
                try:
                    from platform.report.videos import make_videos

                    make_videos([os.path.dirname(path)], out_dir, use_ray=True,
                                log=lambda m: print(m.replace("[videos]", "[sweep] videos:", 1), flush=True))
                except Exception as e:  # a video problem must not cost the report
                    print(f"[sweep] videos failed: {type(e).__name__}: {e}", flush=True)
            out = build_report([out_dir], out_dir)
            print(f"[sweep] report: {out}", flush=True)
        except Exception as e:  # the results are written; a report problem must not fail the sweep
            print(f"[sweep] report failed: {type(e).__name__}: {e}", flush=True)
    if n_trials == 0 or len(failed) == n_trials:
        raise SweepFailed(f"every trial failed ({len(failed)} of {n_trials}); results kept at {path}")
    return path


def _without_missing_gpus(spec: SweepSpec, local: bool) -> SweepSpec:
    """GPU when present: a study that asks for GPUs, run on a local Ray with none, trains on CPU (said in one
    line) instead of waiting forever for a GPU.  A cluster may still add GPU nodes (autoscaling): kept."""
    import dataclasses

    import ray

    if not local or spec.resources.gpus_per_worker <= 0 or ray.cluster_resources().get("GPU", 0) > 0:
        return spec
    print(f"[sweep] this machine has no GPU: training on CPU (resources.gpus_per_worker "
          f"{spec.resources.gpus_per_worker:g} -> 0)", flush=True)
    return dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, gpus_per_worker=0.0))


class SweepFailed(RuntimeError):
    """No trial of the sweep finished (the results, with each trial's error, are still written)."""


def failed_trials(df) -> dict[str, str]:
    """``{trial_id: one-line reason}`` of the trials whose last status is ERROR."""
    out = {}
    for trial_id, rows in df.groupby("trial_id", sort=True):
        if rows["status"].iloc[-1] == "ERROR":
            errors = rows["error"].dropna() if "error" in rows else []
            out[str(trial_id)] = str(errors.iloc[-1]) if len(errors) else "?"
    return out


def _storage_timeout_s() -> float:
    return float(os.environ.get("DRL_STORAGE_TIMEOUT_S", 20))


def _check_storage(spec: SweepSpec, storage: str) -> None:
    """Fail before training if results cannot be written: a parent is a file, the directory is not writable
    (probed by creating a file), or less than ``$DRL_MIN_FREE_MB`` (default 50) MiB are free.  The probe runs
    in a thread bounded by ``$DRL_STORAGE_TIMEOUT_S`` (default 20 s): a network share whose server is gone
    blocks file calls for ever, and the sweep says so in one line instead."""
    if "://" in storage:
        return  # remote storage (s3://, gs://) is checked by pyarrow when Tune writes
    import threading

    outcome: list = []

    def probe():
        try:
            _probe_storage(spec, storage)
            outcome.append(None)
        except BaseException as e:  # handed to the caller's thread
            outcome.append(e)

    timeout_s = _storage_timeout_s()
    thread = threading.Thread(target=probe, name="storage-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise SpecError(spec.path, "storage", f"results directory {storage} did not answer within {timeout_s:g} s "
                                              f"(a network share that is not mounted, or whose server is down?)")
    if outcome[0] is not None:
        raise outcome[0]


def _probe_storage(spec: SweepSpec, storage: str) -> None:
    import shutil
    import tempfile

    probe_dir = storage
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir) or "."
    if not os.path.isdir(probe_dir):
        raise SpecError(spec.path, "storage", f"results directory {storage} cannot be created: {probe_dir} is a file")
    try:  # really create a file: os.access says yes to root even on a read-only file system
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as e:
        raise SpecError(spec.path, "storage", f"results directory {storage} is not writable ({e.strerror})") from None
    need_mb = float(os.environ.get("DRL_MIN_FREE_MB", 50))  # checkpoints + Parquet of a small study
    free_mb = shutil.disk_usage(probe_dir).free / 2**20
    if free_mb < need_mb:
        raise SpecError(spec.path, "storage", f"only {free_mb:.0f} MiB free at {storage}, need {need_mb:.0f} MiB "
                                              f"(DRL_MIN_FREE_MB)")


def _preflight(spec: SweepSpec, address: str | None = None) -> None:
    """Cheap checks that need imports but no Ray: the dataset resolves, the env id exists."""
    from platform.datasets import check_dataset
    from platform.envs import check_env_id

    for dataset in spec.datasets or [spec.dataset]:
        try:
            env_id = check_dataset(dataset)
        except (ValueError, OSError, KeyError, ImportError) as e:  # OSError: FileNotFoundError, unreadable files
            raise SpecError(spec.path, "dataset", str(e)) from None
        try:
            check_env_id(spec.env or env_id)
        except ValueError as e:
            raise SpecError(spec.path, "env" if spec.env else "dataset", str(e)) from None
    if spec.train.compile and not spec.resources.gpus_per_worker and not on_cluster(address) and not cxx_compiler():
        # inductor builds C++ kernels for the CPU: without a compiler every trial would fail at its first step
        raise SpecError(spec.path, "train.compile", "needs a C++ compiler on the CPU (torch.compile builds C++ "
                        "kernels): none of $CXX, g++, c++, clang++ is on PATH; install one (e.g. `apt install g++`) "
                        "or set train.compile: false")


def per_task_lines(spec: SweepSpec) -> list[str]:
    """What the platform fills in from the papers' per-task tables, per (algorithm, dataset) of the study."""
    from algorithms.paper_settings import SOURCES

    lines = []
    for algorithm in spec.algorithms or [spec.algorithm]:
        for dataset in spec.datasets or [spec.dataset]:
            tspec, _ = spec.for_trial({"algorithm": algorithm, "dataset": dataset} if spec.algorithms else
                                      {"dataset": dataset} if spec.datasets else {})
            searched = set(spec.search.space) if not spec.algorithms else set()
            params, per_task = algorithms.resolve_params(tspec.algorithm, dataset, dict(tspec.config))
            shown = [f"{k}={params[k]!r}" for k in per_task if k not in searched]
            if shown:
                lines.append(f"paper, per task ({SOURCES.get(tspec.algorithm, tspec.algorithm)}) for "
                             f"{tspec.algorithm} on {dataset}: {', '.join(shown)}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="study YAML, e.g. search_spaces/quickstart.yaml")
    p.add_argument("--num-samples", type=int, help="override search.num_samples")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--dataset", help="override dataset, e.g. generated:pendulum-medium")
    p.add_argument("--storage", help="results directory (default: ./results, or the spec's storage)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep; finished trials are kept")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and print the plan; start nothing")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--videos", action="store_true",
                   help="at the end, roll out each study's best policy on a few test seeds with rendering on (Ray CPU "
                        "tasks) and embed the GIFs in the report (off by default: it costs a few rollouts)")
    p.add_argument("--address", metavar="ADDR",
                   help="join this running Ray cluster (its GCS host:port, or `auto`: the one `ray start` last "
                        "started on this machine) instead of starting a local Ray; default: $RAY_ADDRESS if set")
    p.add_argument("--verbose", action="store_true",
                   help="also show the workers' own output (Train's per-step lines, Ray's worker warnings)")
    args = p.parse_args(argv)
    overrides = {}
    if args.num_samples is not None:
        overrides["search.num_samples"] = args.num_samples
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    if args.dataset:
        overrides["dataset"] = args.dataset
    try:
        spec = load_spec(args.spec, overrides)
        target = None if args.dry_run else cluster_address(args.address)
        if target is not None:
            check_ray_address(*target)  # a dead explicit address: one line in seconds, before the slow checks
        _preflight(spec, args.address)
        storage = os.path.abspath(args.storage or spec.storage or default_storage())
        _check_storage(spec, storage)
    except (SpecError, Unavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{spec.path}: OK\n  algorithm {spec.algorithm}, dataset {spec.dataset}, env {spec.env or '(dataset)'}\n"
              f"  fixed config {spec.config}\n  search {spec.search.searcher}/{spec.search.scheduler} over "
              f"{spec.search.space} x {spec.search.num_samples}\n  train {spec.train}\n  resources {spec.resources}\n"
              f"  storage {storage}")
        for line in per_task_lines(spec):
            print(f"  {line}")
        return 0
    if not args.verbose:
        sys.stdout, sys.stderr = QuietStream(sys.stdout), QuietStream(sys.stderr)
    try:
        if args.videos and args.no_report:
            print("[sweep] --videos goes into the report: skipped with --no-report", flush=True)
        run_sweep(spec, storage, resume=args.resume, report=not args.no_report, verbose=args.verbose,
                  videos=args.videos, address=args.address)
    except (SpecError, Unavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (SweepFailed, ProjectImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
