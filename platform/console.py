"""The sweep's console: one line per evaluation and per finished trial, a status line with the best score and an
ETA, one line per trial the first time a health flag goes up (``platform/health.py``), and a filter that keeps Ray's own noise off the console (its log files keep everything)."""
from __future__ import annotations

import math
import time

from platform import health


class ProgressPrinter:
    """The console: one line per evaluation, per finished / stopped / failed trial, and every
    ``status_every`` seconds a status line (trials running / done / pending, best so far, elapsed, ETA)."""

    def __init__(self, metric: str, total: int, steps: int = 0, mode: str = "max", status_every: float = 30.0):
        from ray.tune import Callback
        from ray.tune.stopper import Stopper

        self.done, self.import_error = 0, None
        self.t0, self.last_status = time.time(), time.time()
        self.started: dict[str, float] = {}  # trial id -> when it started
        self.reports: dict[str, list[tuple[float, int]]] = {}  # trial id -> its last two (time, step) reports
        self.best: tuple[float, str] | None = None
        self.flagged: set[tuple[str, str]] = set()  # (trial id, health flag) already said
        printer = self
        sign = 1.0 if mode == "max" else -1.0

        class _CB(Callback):
            def on_trial_start(cb, iteration, trials, trial, **info):
                printer.started.setdefault(trial.trial_id, time.time())

            def on_trial_result(cb, iteration, trials, trial, result):
                seen = printer.reports.setdefault(trial.trial_id, [])
                seen[:] = seen[-1:] + [(time.time(), int(result.get("step") or 0))]
                for kind, reason in health.report_flags(result).items():  # once per trial and kind
                    if (trial.trial_id, kind) not in printer.flagged:
                        printer.flagged.add((trial.trial_id, kind))
                        print(f"[sweep] {trial.trial_id} health at step {result.get('step')}: {reason}", flush=True)
                if result.get("resumed_from_step") is not None:  # a worker restarted (a failure, or --resume)
                    print(f"[sweep] {trial.trial_id} resumed from step {result['resumed_from_step']} (its "
                          f"checkpoint: a worker restarted, Ray's logs say why)", flush=True)
                if not result.get("is_eval", 1):
                    return
                score = result.get(metric)
                if isinstance(score, (int, float)) and math.isfinite(score) and (
                        printer.best is None or sign * score > sign * printer.best[0]):
                    printer.best = (float(score), trial.trial_id)
                params = ", ".join(f"{k}={fmt_value(v)}" for k, v in trial.config.items())
                print(f"[sweep] {trial.trial_id} step {result.get('step')}: {metric}="
                      f"{fmt_value(score)}" + (f" ({params})" if params else ""), flush=True)

            def on_trial_complete(cb, iteration, trials, trial):
                printer.done += 1
                last_step = printer.reports.get(trial.trial_id, [(0.0, steps)])[-1][1]
                stopped = last_step < steps  # a scheduler (ASHA) stopped it
                print(f"[sweep] {trial.trial_id} {'stopped early by the scheduler' if stopped else 'finished'} "
                      f"({printer.done}/{total} trials done)", flush=True)

            def on_trial_error(cb, iteration, trials, trial):
                printer.done += 1
                line = last_line(trial.error_file)
                print(f"[sweep] {trial.trial_id} FAILED ({printer.done}/{total} trials done): {line}", flush=True)
                if line.startswith(("ModuleNotFoundError", "ImportError")) and printer.import_error is None:
                    # every later trial would fail the same way: stop launching them
                    printer.import_error = line
                    print("[sweep] an import error fails every trial alike: stopping the sweep", flush=True)

            def on_step_end(cb, iteration, trials, **info):
                now = time.time()
                if now - printer.last_status >= status_every:
                    printer.last_status = now
                    print(printer.status_line(trials), flush=True)

        class _StopOnImportError(Stopper):
            def __call__(self, trial_id, result):
                return False

            def stop_all(self):
                return printer.import_error is not None

        self.total, self.steps = total, steps
        self.callback, self.stopper = _CB(), _StopOnImportError()

    def status_line(self, trials) -> str:
        states = [t.status for t in trials]
        running = states.count("RUNNING")
        pending = states.count("PENDING") + max(0, self.total - len(trials))
        elapsed = time.time() - self.t0
        line = f"[sweep] {running} running, {self.done} done, {pending} pending"
        if self.best is not None:
            line += f" | best {fmt_value(self.best[0])} ({self.best[1]})"
        line += f" | {duration(elapsed)} elapsed"
        eta = self.eta(trials, pending)
        if eta is not None:
            line += f", ETA {duration(eta)}"
        return line

    def eta(self, trials, pending: int) -> float | None:
        """Seconds until the study ends, from the trials' seconds per step over their latest report interval
        (the first one also holds start-up and compilation: a trial with two reports or more is timed by its
        latest one).  A trial without a latest interval of its own is timed like those that have one; trials
        run at once share the machine, and pending trials follow in waves of the running ones."""
        if not self.steps:
            return None
        now, latest, first = time.time(), {}, {}
        for i, seen in self.reports.items():
            (t1, s1) = seen[-1]
            (t0, s0) = seen[-2] if len(seen) > 1 else (self.started.get(i, self.t0), 0)
            if s1 > s0:
                (latest if len(seen) > 1 else first)[i] = (t1 - t0) / (s1 - s0)
        pool = list(latest.values()) or list(first.values())
        if not pool:
            return None
        typical = sorted(pool)[len(pool) // 2]  # seconds per step
        left = []
        for t in trials:
            if t.status != "RUNNING" or t.trial_id not in self.started:
                continue
            if t.trial_id in self.reports:
                t_last, step = self.reports[t.trial_id][-1]
                rate = latest.get(t.trial_id, typical if latest else first.get(t.trial_id, typical))
                left.append(max(0.0, (self.steps - step) * rate - (now - t_last)))
            else:
                left.append(max(0.0, self.steps * typical - (now - self.started[t.trial_id])))
        running = len(left)
        return max(left, default=0.0) + math.ceil(pending / max(1, running)) * self.steps * typical


def duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# Ray's own console lines that bury the sweep's (the raylet's worker-start warnings on a small machine, Train's
# preemption watcher, Tune's pointers to its files): dropped from the console unless --verbose; Ray's log
# files keep them.
RAY_NOISE = ("worker processes have been started", "PreemptionWatcher", "To visualize your results with TensorBoard",
             "View detailed results here", "Reporting training result", "Token authentication is enabled",
             "is now ignored by default when packaging", "A new study created in memory")
# Tune's "Configuration for experiment" box (printed even at verbose=0): its lines start with box-drawing characters
BOX_LINE = ("\u256d", "\u2502", "\u251c", "\u2570")


def _noise(line: str) -> bool:
    return any(p in line for p in RAY_NOISE) or line.lstrip().startswith(BOX_LINE)


class QuietStream:
    """A text stream that drops whole lines containing any of ``RAY_NOISE`` and passes the rest on."""

    def __init__(self, stream):
        self.stream, self.buffer = stream, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if not _noise(line):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.buffer and not _noise(self.buffer):
            self.stream.write(self.buffer)
            self.buffer = ""
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def fmt_value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def last_line(path) -> str:
    try:
        with open(path) as f:
            lines = [l.strip() for l in f if l.strip()]
        return lines[-1] if lines else "?"
    except (OSError, TypeError):
        return "?"
