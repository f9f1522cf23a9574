"""Parquet results -> a report directory: ``index.html``, ``README.md`` and ``figures/``.

    python -m platform.report RESULTS [RESULTS ...] [--out reports/NAME]

``RESULTS`` is a ``metrics.parquet`` file or a sweep directory holding one (a ``spec.json`` beside
it is picked up).  Several results are compared in one report.  The report holds:

* the budget actually run (steps, seeds, evaluation episodes), stated at the top;
* per benchmark (dataset/env): final normalized score per algorithm, mean +- std over seeds and the
  IQM with a 95% stratified-bootstrap CI (computed by rliable, 2000 seeded resamples), next to the
  paper's published number (the paper's table, cited below) where the task matches; rliable's
  probability of improvement for every pair of algorithms, and its performance profiles across benchmarks;
* learning curves (mean over seeds, 95% bootstrap band), sensitivity plots for every searched
  parameter, Optuna parameter importances and the best configuration per study;
* rollout videos (GIFs) of each study's best policy, when made with ``--videos`` (see ``platform.report.videos``);
* cost (trial wall time, reserved CPU/GPU hours, steps/s), failed trials and run metadata.

Every number comes from the Parquet (the spec only adds what the Parquet cannot know, marked as
such).  ``index.html`` is self-contained (figures embedded as PNG data URIs); ``README.md`` has the
same content with the figures as relative files; figures are also written as SVG.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import shutil
import sys

import numpy as np
import pandas as pd

from platform.report.document import (Doc, Table, fiqm, fmean_std, fnum, fsigned, render_html,
                                      render_markdown)
from platform.report.figures import Plots, fig_algorithms, fig_pareto, fig_profiles, fig_sensitivity, fig_trials
from platform.report.accounting import (REPO_ROOT, budget_section, cost_section, failures_section, health_section,
                                        metadata_section)
from platform.report.papers import paper_budget, paper_reference
from platform.report.toy import toy_section
from platform.report.stats import (BOOT_SEED, LAST_K, METRIC, MIN_RUNS_BAND, MIN_RUNS_IQM, N_BOOT, PROTOCOLS,
                                   ReportError, Trial, _normalize,
                                   best_trial, final_metric, final_scores, fmt_param, fmt_params, iqm_ci, load_results,
                                   mean_ci, pareto_front,
                                   param_importances, parquet_path, probability_of_improvement, score_profile, trials,
                                   varying_params)


# ============================================================================ the report


def _results_section(doc: Doc, by_bench: dict[str, list[Trial]], protocol: str = "final") -> dict[str, dict[str, Trial]]:
    doc.h(2, "Results")
    doc.p(f"Score = `eval/normalized_score` (0..100), protocol `{protocol}`: {PROTOCOLS[protocol].format(k=LAST_K)}. "
          "The papers' columns say which protocol each paper used. A run is one seed of one "
          "trial. mean ± sample std (ddof=1) over runs; IQM = interquartile mean over runs (trim 25% each end) with "
          f"a 95% percentile stratified-bootstrap CI ({N_BOOT} resamples, numpy seed {BOOT_SEED}), both computed by "
          "rliable (`metrics.aggregate_iqm`, `library.get_interval_estimates`), shown "
          f"from {MIN_RUNS_IQM} runs on (e.g. {MIN_RUNS_IQM} seeds); curves get bootstrap bands from "
          f"{MIN_RUNS_BAND} seeds on. "
          "\"best config\" is the trial with the highest mean final score among those that ran the full budget; "
          "it is selected on the same seeds it is scored on, so its numbers are optimistic. "
          "Δ = mean − paper.")
    best_by_bench: dict[str, dict[str, Trial]] = {}
    for bench, ts in by_bench.items():
        rows = []
        best_by_bench[bench] = {}
        for algo in sorted({t.algorithm for t in ts}):
            ats = [t for t in ts if t.algorithm == algo]
            best = best_trial(ats)
            if best is None:
                rows.append([algo, "no evaluated trial", str(len(ats)), "0", "—", "—", "—", "", "", ""])
                continue
            best_by_bench[bench][algo] = best
            ref = paper_reference(algo, best.dataset, best.env, best.params)
            paper = f"{ref.value:g} ({ref.label})" if ref.value is not None else ref.label
            varying = varying_params(ats)
            groups = [(f"best config: {best.trial_id}" + (f" ({fmt_params(best.params, varying)})" if varying else ""),
                       [best])]
            evald = [t for t in ats if t.scores.size]
            if len(evald) > 1:
                groups.append((f"all {len(evald)} trials" if len(evald) == len(ats)
                               else f"all {len(evald)} evaluated trials (of {len(ats)})", evald))
            for label, members in groups:
                scores = [t.scores for t in members if t.scores.size]
                allx = np.concatenate(scores) if scores else np.array([])
                steps = sorted({t.final_step for t in members if t.scores.size})
                step = str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
                delta = fsigned(float(allx.mean()) - ref.value) if ref.value is not None and allx.size else ""
                flagged = [t for t in members if t.flags]
                health_cell = ("ok" if not flagged else "⚠ " + "; ".join(flagged[0].flags) if len(members) == 1
                               else f"⚠ {len(flagged)} of {len(members)} trials flagged")
                rows.append([algo, label, str(len(members)), str(allx.size), step, fmean_std(allx),
                             fiqm([allx]), paper, delta, health_cell])
        doc.h(3, bench)
        doc.table(Table(["algorithm", "configuration", "trials", "runs", "final step", "mean ± std",
                         "IQM [95% CI]", "paper", "Δ vs paper", "health"], rows,
                        caption=f"Final normalized score on {bench}"))
    # Across benchmarks: rliable's aggregate IQM, resampling runs within each task (stratified).
    if len(by_bench) > 1:
        rows = []
        for algo in sorted({a for b in best_by_bench.values() for a in b}):
            tasks = {b: best_by_bench[b][algo].scores for b in best_by_bench if algo in best_by_bench[b]}
            allx = np.concatenate(list(tasks.values()))
            rows.append([algo, str(len(tasks)), str(allx.size), fmean_std(allx), fiqm(list(tasks.values())),
                         ", ".join(tasks)])
        doc.h(3, "Across benchmarks")
        doc.p("Best configuration per benchmark; IQM over all runs with a stratified bootstrap (runs resampled "
              "within each benchmark). Only comparable between algorithms that cover the same benchmarks.")
        doc.table(Table(["algorithm", "benchmarks", "runs", "mean ± std", "IQM [95% CI]", "benchmarks used"], rows,
                        caption="Aggregate over benchmarks"))
    _improvement_table(doc, best_by_bench)
    return best_by_bench


def _improvement_table(doc: Doc, best_by_bench: dict[str, dict[str, Trial]]) -> None:
    """rliable's probability of improvement for every pair of algorithms, on the benchmarks both ran (best
    configuration per benchmark); one table per report, each pair once with the likelier better one first."""
    algos = sorted({a for best in best_by_bench.values() for a, t in best.items() if t.scores.size})
    if len(algos) < 2:
        return
    rows = []
    for x, y in itertools.combinations(algos, 2):
        benches = [b for b, best in best_by_bench.items()
                   if x in best and y in best and best[x].scores.size and best[y].scores.size]
        if not benches:
            rows.append((-1.0, [x, y, "0", "—", "— (no benchmark in common)"]))
            continue
        xs = [best_by_bench[b][x].scores for b in benches]
        ys = [best_by_bench[b][y].scores for b in benches]
        runs = f"{sum(a.size for a in xs)} / {sum(a.size for a in ys)}"
        if min(a.size for a in xs + ys) < MIN_RUNS_BAND:
            rows.append((-1.0, [x, y, str(len(benches)), runs,
                                f"— (needs ≥ {MIN_RUNS_BAND} runs of each per benchmark)"]))
            continue
        p, lo, hi = probability_of_improvement(xs, ys)
        if p < 0.5:  # the likelier better one first: P(Y > X) = 1 - P(X > Y) in every resample (ties count half)
            x, y, p, lo, hi = y, x, 1 - p, 1 - hi, 1 - lo
            runs = " / ".join(reversed(runs.split(" / ")))
        rows.append((p, [x, y, str(len(benches)), runs, f"{fnum(p, 2)} [{fnum(lo, 2)}, {fnum(hi, 2)}]"]))
    doc.h(3, "Probability of improvement")
    doc.p("rliable's probability of improvement (`metrics.probability_of_improvement`): on each benchmark, the "
          "probability that a run of X scores above a run of Y (ties count half: the Mann-Whitney U statistic over "
          "n_X × n_Y pairs), averaged over the benchmarks both algorithms ran; best configuration per benchmark (selected "
          f"on these seeds); 95% stratified-bootstrap CI from `library.get_interval_estimates` ({N_BOOT} resamples, "
          f"numpy seed {BOOT_SEED}; runs of X and of Y resampled independently within each benchmark). Each pair once, "
          "the algorithm more likely to be better first; a CI that reaches 0.5 does not separate the two. Computed "
          f"from {MIN_RUNS_BAND} runs per algorithm and benchmark on; with few runs a resample holds few distinct "
          "runs, so the CI is coarse.")
    rows.sort(key=lambda r: (-r[0], r[1][0], r[1][1]))
    doc.table(Table(["X", "Y", "benchmarks", "runs (X / Y)", "P(X > Y) [95% CI]"], [r for _, r in rows],
                    caption="Probability of improvement, every pair of algorithms"))


def _paper_default_line(ts: list[Trial], best: Trial) -> str | None:
    """Best found against the paper's setting (run first, same seeds), when the study ran it."""
    paper = next((t for t in ts if t.paper_default and t.scores.size), None)
    if paper is None:
        return None
    if paper is best:
        return (f"The paper's setting (trial `{paper.trial_id}`, run first) is also the best found: "
                f"{fmean_std(paper.scores)}.")
    same = paper.seeds == best.seeds
    return (f"Best found {fmean_std(best.scores)} against the paper's setting (trial `{paper.trial_id}`, run first) "
            f"{fmean_std(paper.scores)}" + (f" on the same seeds {paper.seeds}" if same else "") +
            f": Δ = {fsigned(best.mean - paper.mean)} (selected on these seeds, so optimistic).")


def _pareto(doc: Doc, plots: Plots, df: pd.DataFrame, title: str, ts: list[Trial], params: list[str],
            objectives: dict, metric: str) -> None:
    """The Pareto front of a two-objective study (``search.objectives``): figure and table.  ``metric``: the first
    objective (spec.json stores the objectives with sorted keys, so their order is not the study's); ``params``:
    the searched (varying) parameters that label the front."""
    m0 = metric if metric in objectives else next(iter(objectives))
    m1 = next(k for k in objectives if k != m0)
    mode0, mode1 = objectives[m0], objectives[m1]
    pts = [(t, final_metric(df, t, m0), final_metric(df, t, m1)) for t in ts if t.scores.size]
    pts = [(t, a, b) for t, a, b in pts if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 2:
        doc.p(f"Pareto front of {m0} and {m1}: fewer than two trials have both.")
        return
    front = pareto_front([(a, b) for _, a, b in pts], (mode0, mode1))
    doc.fig(fig_pareto(plots, title, pts, front, (m0, m1), params))
    rows = [[t.trial_id, *[fmt_param(t.params.get(k, "")) for k in params], fnum(a), fnum(b, 2)]
            for (t, a, b), f in sorted(zip(pts, front), key=lambda x: x[0][2]) if f]
    doc.table(Table(["trial", *params, f"{m0} ({mode0})", f"{m1} ({mode1})"], rows,
                    caption=f"Pareto front of {title}: trials no other trial beats in both objectives"))


def _studies_section(doc: Doc, plots: Plots, df: pd.DataFrame, studies: dict[tuple, list[Trial]],
                     specs: dict[str, dict] | None = None) -> None:
    doc.h(2, "Hyperparameter studies")
    for (sweep, algo, bench), ts in studies.items():
        title = f"{sweep}: {algo} on {bench}"
        doc.h(3, title)
        best = best_trial(ts)
        params = varying_params(ts)
        if best is None:
            doc.p("No trial of this study reached an evaluation.")
            continue
        doc.p(f"Best configuration: trial `{best.trial_id}`, final score {fmean_std(best.scores)} over "
              f"{best.scores.size} seed(s) at step {best.final_step}.")
        line = _paper_default_line(ts, best)
        if line:
            doc.p(line)
        doc.table(Table(["parameter", "value", "searched"],
                        [[k, fmt_param(v), "yes" if k in params else "paper, per task" if k in best.per_task
                          else "fixed"] for k, v in sorted(best.params.items())],
                        caption=f"Best configuration of {title}"))
        ranked = sorted([t for t in ts if t.scores.size], key=lambda t: -t.mean)
        ranked += [t for t in ts if not t.scores.size]   # never evaluated: listed last, unranked
        doc.table(Table(["rank", "trial", *params, "seeds", "final step", "mean ± std", "status"],
                        [[str(i + 1) if t.scores.size else "—", t.trial_id,
                          *[fmt_param(t.params.get(k, "")) for k in params], str(t.scores.size),
                          str(t.final_step) if t.scores.size else "—", fmean_std(t.scores), t.status]
                         for i, t in enumerate(ranked)], caption=f"Trials of {title}, best first"))
        doc.fig(fig_trials(plots, df, title, ts, best, params))
        search = ((specs or {}).get(sweep) or {}).get("search", {})
        objectives = search.get("objectives") or {}
        if len(objectives) >= 2:
            _pareto(doc, plots, df, title, ts, params, objectives, search.get("metric", METRIC))
        if not params:
            doc.p("No searched parameter varies between trials: no sensitivity plot or importances.")
            continue
        doc.fig(fig_sensitivity(plots, title, ts, params, best))
        imp, note = param_importances(ts, params)
        if imp is None:
            doc.p(f"Parameter importances: {note}.")
        else:
            doc.table(Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()],
                            caption=f"Parameter importances ({note})"))


def _videos_section(doc: Doc, out_dir: str, paths: list[str]) -> None:
    """Rollout GIFs of each study's best policy, made once by ``--videos`` (platform/report/videos.py) and kept beside the
    report in ``videos/``; a rebuild embeds what is there and renders nothing.  No videos: no section."""
    from platform.report.document import Video
    from platform.report.videos import adopt_videos, load_manifest

    adopt_videos(paths, out_dir)
    entries = load_manifest(out_dir)
    if not entries:
        return
    doc.h(2, "Rollout videos")
    shown = [e for e in entries if "file" in e]
    first = min((e["env_seed"] for e in shown), default=None)
    doc.p("The best configuration of each study (the trial named above), its best-scoring seed, from its checkpoint, "
          "rolling out the first test environment seeds"
          + (f" (from {first})" if first is not None else "") + " with rendering on"
          + (f", one frame every {shown[0]['every']} control steps, played at the environment's real-time rate"
             if shown else "") + ". Made once with `--videos` (`python -m platform.report RESULTS --videos`, "
          "`python -m platform.sweep SPEC --videos`) and kept in `videos/`; rebuilding the report reuses them. "
          "The episodes of a study are batched like one rollout actor's, so the policy's sampling noise, and an "
          "episode's score, may differ from the evaluation's episode of the same seed.")
    studies: dict[tuple, list[dict]] = {}
    for e in entries:
        studies.setdefault((e["sweep"], e["algorithm"], e["bench"]), []).append(e)
    for (sweep, algo, bench), es in studies.items():
        skipped = next((e["skipped"] for e in es if "skipped" in e), None)
        head = f"`{sweep}`: {algo} on {bench}"
        if skipped:
            doc.p(f"{head}: {skipped}.")
            continue
        e0 = es[0]
        doc.p(f"{head}: trial `{e0['trial_id']}`, seed {e0['seed']}, checkpoint of step {e0['step']} "
              f"(`{e0['checkpoint']}`), rendered with {e0['renderer']}.")
        doc.videos([Video(e["file"], f"{algo}, env seed {e['env_seed']}: {e['score_name']} {fnum(e['score'])}, "
                                     f"{'success' if e['success'] else 'no success'}, {e['length']} steps")
                    for e in es])


def build_report(paths: list[str], out_dir: str, protocol: str | None = None) -> str:
    """Write the report for ``paths`` (metrics.parquet files or sweep directories) to ``out_dir``.

    ``protocol``: how a run's score is read off its evaluations (``PROTOCOLS``); None: the studies' own
    ``report.protocol`` when they agree, else ``final``.  Returns the path of ``index.html``.  Raises
    :class:`ReportError` (one-line message) on bad input.
    """
    df, specs, files = load_results([paths] if isinstance(paths, str) else list(paths))
    if protocol is None:
        asked = {(s.get("report") or {}).get("protocol", "final") for s in specs.values()} or {"final"}
        protocol = asked.pop() if len(asked) == 1 else "final"
    if protocol not in PROTOCOLS:
        raise ReportError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    fig_dir = os.path.join(out_dir, "figures")
    if os.path.isdir(fig_dir):  # stale figures from an earlier report of the same name would mislead
        shutil.rmtree(fig_dir)
    os.makedirs(fig_dir, exist_ok=True)
    plots = Plots(fig_dir)

    all_trials = trials(df, protocol)
    by_bench: dict[str, list[Trial]] = {}
    studies: dict[tuple, list[Trial]] = {}
    for t in all_trials:
        by_bench.setdefault(t.bench, []).append(t)
        studies.setdefault((t.sweep, t.algorithm, t.bench), []).append(t)

    sweeps = sorted(df["sweep"].unique())
    doc = Doc(f"Report: {', '.join(sweeps)}")
    budget_section(doc, df, studies, specs)

    best_by_bench = _results_section(doc, by_bench, protocol)
    health_section(doc, studies)
    if len(best_by_bench) > 1:  # several tasks: the whole distribution of runs, not only their IQM
        tasks_by_algo: dict[str, dict[str, np.ndarray]] = {}
        for bench, best in best_by_bench.items():
            for algo, t in best.items():
                if t.scores.size:
                    tasks_by_algo.setdefault(algo, {})[bench] = t.scores
        if tasks_by_algo:
            doc.fig(fig_profiles(plots, tasks_by_algo))

    toy_section(doc, plots, df, best_by_bench)  # toy:<task> studies: actions over the true modes (report/toy.py)
    _videos_section(doc, out_dir, [paths] if isinstance(paths, str) else list(paths))
    doc.h(2, "Learning curves")
    for bench, best in best_by_bench.items():
        if len(best) > 1:  # one algorithm alone: its per-trial figure below says it all
            doc.fig(fig_algorithms(plots, df, bench, best))
    doc.p("Per-trial curves are in the study sections below." if len(studies) else "")
    _studies_section(doc, plots, df, studies, specs)
    cost_section(doc, df, all_trials, specs)
    failures_section(doc, all_trials)
    metadata_section(doc, df, all_trials, specs, files)
    doc.blocks = [b for b in doc.blocks if not (b[0] == "p" and not b[1])]

    os.makedirs(out_dir, exist_ok=True)
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(render_html(doc))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(doc))
    return index


def _default_out(paths: list[str]) -> str:
    """reports/<sweep name> for one sweep, reports/<a>+<b>... for a comparison."""
    names = []
    for p in paths:
        file = parquet_path(p)
        try:
            names += sorted(pd.read_parquet(file, columns=["sweep"])["sweep"].astype(str).unique())
        except Exception:  # unreadable: build_report gives the proper error; name it after the directory
            names.append(os.path.basename(os.path.dirname(os.path.abspath(file))))
    name = "+".join(dict.fromkeys(names))[:100] or "report"
    return os.path.join(REPO_ROOT, "reports", re.sub(r"[^A-Za-z0-9._+-]+", "_", name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="metrics.parquet files or sweep directories holding one")
    parser.add_argument("--out", help="output directory (default: reports/<sweep name>)")
    parser.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                        help="score of a run: its last evaluation, its best, or the mean of its last "
                             f"{LAST_K} (default: the studies' report.protocol, else final); the papers' own "
                             "protocols are named next to their columns")
    parser.add_argument("--videos", action="store_true",
                        help="first film the best policy of each study from the checkpoints beside RESULTS "
                             "(Push-T; MuJoCo where an off-screen GL backend works) into OUT/videos/, which the "
                             "report embeds; without it the videos already in OUT are kept and embedded")
    parser.add_argument("--video-episodes", type=int, default=3, metavar="N",
                        help="with --videos: episodes (test env seeds from the study's train.eval_seed) per study "
                             "(default 3)")
    args = parser.parse_args(argv)
    try:
        out = args.out or _default_out(args.results)
        if args.videos:
            from platform.report.videos import make_videos

            make_videos(args.results, out, episodes=args.video_episodes, protocol=args.protocol,
                        log=lambda m: print(m, file=sys.stderr))
        index = build_report(args.results, out, args.protocol)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(index)
    return 0


# the report's public names (tests and the sweep use them through ``platform.report``)
__all__ = ["build_report", "main", "ReportError", "METRIC", "PROTOCOLS", "LAST_K", "iqm_ci", "mean_ci", "score_profile",
           "probability_of_improvement",
           "final_scores", "trials", "best_trial", "varying_params", "load_results", "paper_reference",
           "paper_budget", "_normalize"]
