"""The study's schema: the typed sections of a study file (``SweepSpec`` and its parts) and ``SpecError``.

Plain dataclasses, their defaults and what each field means; ``platform.spec`` reads a YAML study into them
and validates it (every check, with the file, key and line), ``platform.search`` turns one into Tune's search
space.  Nothing here imports Ray, torch or the algorithms.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A study file is invalid.  ``str(err)`` is the one line shown to the user."""

    def __init__(self, file: str, key: str, reason: str, line: int | None = None):
        # One line whatever the input: a key or YAML error text with newlines/control characters is escaped.
        key = key if key.isprintable() else repr(key)[1:-1]
        reason = " ".join(part.strip() for part in str(reason).splitlines() if part.strip())
        self.file, self.key, self.reason, self.line = file, key, reason, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


# ----------------------------------------------------------------------------- sections


@dataclass
class TrainSpec:
    steps: int = 2000              # gradient steps per seed (the paper's DQL budget is 2M; state yours)
    batch_size: int = 256          # paper value for DQL / EDP / DP
    eval_every: int = 500          # gradient steps between evaluations (paper: 50k for DQL)
    eval_episodes: int = 10        # episodes per evaluation and seed (paper: 10 for D4RL, 50 for Push-T)
    seeds: list[int] = field(default_factory=lambda: [0])  # trained inside one trial, one model each
    checkpoint_every: int = 0      # 0 -> checkpoint at every evaluation
    eval_seed: int = 100_000       # first environment seed of evaluation episodes (Push-T protocol)
    log_every: int = 0             # 0 -> report train metrics only at evaluations
    vectorize_seeds: bool = False  # a worker's seeds in one vmapped update (Algorithm.vectorized_seeds: dql)
    overlap_eval: bool = False     # evaluate step s's snapshot while training on; reported as step s later
    tf32: bool = True              # CUDA only: TF32 matmuls/convolutions (platform/gpu.py); false: IEEE float32
    cudnn_benchmark: bool = True   # CUDA only: cuDNN picks the fastest convolution for the run's fixed shapes
    data_parallel: bool = False    # diffusion_policy: every worker a DDP replica of each seed, batch_size split
    compile: bool = False          # dql/edp: torch.compile the networks (same math; ~1.5x on CPU, seconds to compile)


@dataclass
class SearchSpec:
    metric: str = "eval/normalized_score"
    mode: str = "max"
    searcher: str = "optuna"
    num_samples: int = 1
    scheduler: str = "fifo"
    seed: int = 0                  # the searcher's seed: the same study proposes the same trials
    max_concurrent: int = 0        # 0 -> as many as the cluster's resources allow
    grace_period: int = 1          # ASHA: evaluations before a trial may be stopped
    reduction_factor: int = 2      # ASHA
    n_startup_trials: int = -1     # TPE's random start-up trials; -1: a quarter of num_samples, at least 2
    paper_default_first: bool = True  # trial 0 = the algorithm's defaults (the paper's setting) when in the space
    space: dict[str, Any] = field(default_factory=dict)
    # Two or more objectives, {metric: max|min} in order (e.g. score and eval/act_ms): Optuna's multi-objective
    # TPE searches the front (searcher optuna, scheduler fifo); the first is also `metric`/`mode`.
    objectives: dict[str, str] = field(default_factory=dict)


@dataclass
class ResourcesSpec:
    workers: int = 1               # Ray Train workers per trial; seeds are split across them (data_parallel: replicas)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0   # fractional is fine: 0.25 puts 4 trials on one GPU
    eval_actors: int = 2           # CPU actors that roll out the policy in gymnasium vector envs
    cpus_per_eval_actor: float = 0.5
    envs_per_actor: int = 0        # 0 -> ceil(eval_episodes / eval_actors)
    eval_resources: dict[str, float] = field(default_factory=dict)  # custom resources, e.g. {rollout: 1}


@dataclass
class FailureSpec:
    max_failures: int = 2          # worker restarts (from the last checkpoint) before a trial fails
    trial_max_failures: int = 0    # Tune-level retries of a whole trial


@dataclass
class WandbSpec:
    enabled: bool = False
    project: str = "diffusion-rl"
    mode: str = "offline"          # offline unless WANDB_MODE says otherwise


REPORT_PROTOCOLS = ("final", "best", "last_k_mean")  # platform/report/stats.py's PROTOCOLS


@dataclass
class ReportSpec:
    # how the report reads a run's score off its evaluations: final (the honest default), best, or last_k_mean
    # (Diffusion Policy's and EDP's mean of the last 10 evaluations: the Push-T table's protocol)
    protocol: str = "final"


@dataclass
class SweepSpec:
    name: str
    algorithm: str
    dataset: str
    env: str | None = None                      # evaluation env id; default: the dataset's
    config: dict[str, Any] = field(default_factory=dict)
    train: TrainSpec = field(default_factory=TrainSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    failure: FailureSpec = field(default_factory=FailureSpec)
    wandb: WandbSpec = field(default_factory=WandbSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    storage: str | None = None
    path: str = "<dict>"                        # the file it came from
    algorithms: list[str] = field(default_factory=list)  # several: a grid dimension; config keyed by name
    datasets: list[str] = field(default_factory=list)    # several: a grid dimension (dataset: {grid: [...]})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def for_trial(self, params: dict) -> tuple["SweepSpec", dict]:
        """The single-algorithm study and searched parameters of one trial.

        In a multi-algorithm study the trial's algorithm travels in its Tune params; its fixed
        parameters are ``config[algorithm]``.  A single-algorithm study is returned unchanged.
        """
        params = dict(params)
        algorithm = params.pop("algorithm", None)
        dataset = params.pop("dataset", None)
        if self.datasets:
            dataset = self.dataset if dataset is None else dataset  # validation views: the first dataset
            if dataset not in self.datasets:
                raise ValueError(f"trial dataset {dataset!r} is not one of the study's {self.datasets}")
            view = dataclasses.replace(self, dataset=dataset, datasets=[])
            return view.for_trial({**params, **({"algorithm": algorithm} if algorithm else {})})
        if not self.algorithms:
            return self, params
        if algorithm not in self.algorithms:
            raise ValueError(f"trial algorithm {algorithm!r} is not one of the study's {self.algorithms}")
        return dataclasses.replace(self, algorithm=algorithm, algorithms=[],
                                   config=dict(self.config.get(algorithm) or {})), params

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        d = dict(d)
        for key, sub in SECTIONS.items():
            if isinstance(d.get(key), dict):
                d[key] = sub(**d[key])
        return cls(**d)


# the study file's sections, by key
SECTIONS = {"train": TrainSpec, "search": SearchSpec, "resources": ResourcesSpec,
             "failure": FailureSpec, "wandb": WandbSpec, "report": ReportSpec}
