"""Rollout videos: the best policy of each study rolls out a few fixed test seeds with rendering on -> GIFs.

    python -m platform.report results/<study> --videos      # in-process, then the report embeds them
    python -m platform.sweep SPEC.yaml --videos              # at the end of the sweep, in Ray CPU tasks

For every (study, algorithm, benchmark) of a results directory the report's best trial (``best_trial``:
highest mean score among the trials that ran the full budget) is taken, with its best-scoring seed, from
its checkpoint at the trial's final step (``<results>/_train/train_<trial>/checkpoint_<step>``, written by
``platform.training``; the latest one kept when that one is gone).  The policy is rebuilt from the
checkpoint's ``meta.json`` and rolls out ``episodes`` env seeds from the study's ``train.eval_seed`` (the
first test seeds) through ``platform.evaluation.run_episodes`` (the evaluation's own loop: observation
windows, action horizons, ``reset`` of stateful policies), batched like one rollout actor, rendering every
``every``-th step.  Each episode becomes one animated GIF, played at the env's real-time rate
(``render_fps``), downscaled to ``size`` pixels, in ``<report>/videos/`` with ``videos.json`` (file, trial,
seed, step, env seed, score, the renderer) that the report reads: a report rebuild never renders, it embeds
the GIFs already beside it.

Renderers: Push-T draws with pygame on an off-screen surface (no display needed).  MuJoCo tasks need an
off-screen GL backend: ``MUJOCO_GL=egl`` then ``osmesa`` are probed in a subprocess; with neither the study
gets one line saying so instead of a video.  Nothing is downloaded.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

MANIFEST = "videos.json"
VIDEO_DIR = "videos"
DEFAULT_EPISODES = 3
DEFAULT_EVERY = 2         # every 2nd control step is a frame
DEFAULT_SIZE = 160        # pixels, the longer side of a frame
MAX_FRAMES = 200          # per episode (a 1000-step MuJoCo episode: its first 400 steps at every=2)
GL_BACKENDS = ("egl", "osmesa")
_GL_PROBE = "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); c.free(); print('ok')"
_gl_cache: dict[str, bool] = {}


# ============================================================================ renderers


def gl_works(backend: str) -> bool:
    """Whether MuJoCo can make an off-screen GL context with ``MUJOCO_GL=backend`` (probed in a subprocess,
    so a failing backend cannot break this process; cached)."""
    if backend not in _gl_cache:
        try:
            out = subprocess.run([sys.executable, "-c", _GL_PROBE], env={**os.environ, "MUJOCO_GL": backend},
                                 capture_output=True, text=True, timeout=120)
            _gl_cache[backend] = out.returncode == 0 and out.stdout.strip().endswith("ok")
        except (OSError, subprocess.SubprocessError):
            _gl_cache[backend] = False
    return _gl_cache[backend]


def offscreen_gl() -> str | None:
    """The first working off-screen GL backend for MuJoCo (the user's ``MUJOCO_GL`` if it is one of them,
    then egl, osmesa), or None."""
    asked = os.environ.get("MUJOCO_GL", "")
    for backend in dict.fromkeys(([asked] if asked in GL_BACKENDS else []) + list(GL_BACKENDS)):
        if gl_works(backend):
            return backend
    return None


def _needs_gl(env_id: str) -> bool:
    from platform.envs import PUSHT_IDS

    if env_id in PUSHT_IDS:
        return False
    if env_id.split("-")[0] in ("kitchen", "antmaze", "pen") or env_id.startswith("robosuite"):
        return True  # MuJoCo simulators behind platform/envs/robotics.py
    import gymnasium as gym

    try:
        return "mujoco" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return False


def make_render_env(env_id: str, size: int):
    """One env of ``env_id`` that renders RGB arrays (about ``size`` pixels where the env takes a size)."""
    from platform.envs import PUSHT_IDS, make_env

    if env_id in PUSHT_IDS:
        return make_env(env_id, render_mode="rgb_array", visualization_width=size, visualization_height=size)
    if _needs_gl(env_id) and env_id.split("-")[0] not in ("kitchen", "antmaze", "pen"):
        try:
            return make_env(env_id, render_mode="rgb_array", width=size, height=size)
        except (TypeError, ValueError):
            pass
    return make_env(env_id, render_mode="rgb_array")


# ============================================================================ one checkpoint -> GIFs


def encode_gif(frames: list, fps: float, every: int, size: int) -> bytes:
    """RGB frames -> an animated GIF (looping) at the env's real-time rate, longer side at most ``size``."""
    from PIL import Image

    images = []
    for f in frames:
        im = Image.fromarray(f[..., :3]).convert("RGB")
        if max(im.size) > size:
            scale = size / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
        images.append(im)
    # one palette for the whole clip (from 8 frames across it) keeps colours steady and true (within a few levels)
    picks = sorted({round(i * (len(images) - 1) / 7) for i in range(8)})
    montage = Image.new("RGB", (images[0].width * len(picks), images[0].height))
    for k, i in enumerate(picks):
        montage.paste(images[i], (k * images[0].width, 0))
    palette = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    buf = io.BytesIO()
    quantized[0].save(buf, format="GIF", save_all=True, append_images=quantized[1:], loop=0, optimize=True,
                      duration=max(20, round(1000.0 * every / fps)))
    return buf.getvalue()


def render_rollouts(meta: dict, state: dict, env_seeds: list[int], *, every: int = DEFAULT_EVERY,
                    size: int = DEFAULT_SIZE, max_frames: int = MAX_FRAMES) -> dict:
    """Rebuild the policy of ``meta`` (a checkpoint's meta.json) with ``state`` (its algo state dict), roll out
    ``env_seeds`` (one batch, as a rollout actor would) with rendering on.

    Returns ``{"renderer": str, "episodes": [{seed, return, max_reward, length, success, frames, gif}]}``
    (``gif``: the GIF's bytes), or ``{"skipped": "<one line why>"}`` when the env cannot render here.
    """
    import algorithms
    import torch

    from platform.envs import PUSHT_IDS
    from platform.evaluation import run_episodes

    env_id = meta["env"]
    renderer = "pygame (off-screen surface)" if env_id in PUSHT_IDS else "the env's rgb_array renderer"
    if _needs_gl(env_id):
        backend = offscreen_gl()
        if backend is None:
            return {"skipped": f"{env_id} is a MuJoCo task and no off-screen GL backend works here "
                               f"(MUJOCO_GL={' and '.join(GL_BACKENDS)} both fail): no video"}
        if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") != backend:
            return {"skipped": f"{env_id}: MuJoCo was imported in this process before MUJOCO_GL={backend} "
                               f"could be set; run with MUJOCO_GL={backend}"}
        os.environ["MUJOCO_GL"] = backend
        renderer = f"MuJoCo off-screen GL, MUJOCO_GL={backend}"
    torch.set_num_threads(1)
    algo = algorithms.build(meta["algorithm"], meta["config"], meta["env_spec"], "cpu")
    algo.load_state_dict(state)
    try:
        probe = make_render_env(env_id, size)
        fps = float(probe.metadata.get("render_fps") or 30)
        probe.close()
        episodes = run_episodes(algo, [lambda: make_render_env(env_id, size) for _ in env_seeds], list(env_seeds),
                                render_every=every, max_frames=max_frames)
    except Exception as e:  # noqa: BLE001 - an env that cannot render costs its video, said in one line
        why = (str(e).strip().splitlines() or [""])[0][:200]
        return {"skipped": f"{env_id} could not render ({type(e).__name__}{': ' + why if why else ''}): no video"}
    for e in episodes:
        frames = e.pop("frames")
        e["frames"] = len(frames)
        e["frame_size"] = list(frames[0].shape[:2]) if frames else [0, 0]
        e["gif"] = encode_gif(frames, fps, every, size) if frames else b""
    return {"renderer": renderer, "fps": fps, "every": every, "episodes": episodes}


def episode_score(env_id: str, e: dict) -> tuple[float, str]:
    """The number a caption shows: Push-T's test score (100 x the episode's best reward), else the return."""
    from platform.envs import PUSHT_IDS

    if env_id in PUSHT_IDS:
        return 100.0 * e["max_reward"], "score (100 × max reward)"
    return e["return"], "return"


# ============================================================================ results -> best policies


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()[:60] or "x"


def _checkpoints(results_dir: str, trial_id: str) -> dict[int, str]:
    d = os.path.join(results_dir, "_train", f"train_{trial_id}")
    out = {}
    if os.path.isdir(d):
        for name in os.listdir(d):
            m = re.fullmatch(r"checkpoint_(\d+)", name)
            if m and os.path.exists(os.path.join(d, name, "meta.json")):
                out[int(m.group(1))] = os.path.join(d, name)
    return out


def best_policies(path: str, protocol: str | None = None) -> list[dict]:
    """Per (study, algorithm, benchmark) of one results directory: the best trial's checkpoint to film.

    Each item: ``sweep, algorithm, bench, trial_id, seed, score`` and ``checkpoint`` (a directory) + ``step``,
    or ``skipped`` (one line) when no checkpoint of the trial is left."""
    from platform.report.stats import PROTOCOLS, best_trial, load_results, parquet_path, trials

    df, specs, files = load_results([path])
    if protocol is None:
        asked = {(s.get("report") or {}).get("protocol", "final") for s in specs.values()} or {"final"}
        protocol = asked.pop() if len(asked) == 1 else "final"
    protocol = protocol if protocol in PROTOCOLS else "final"
    results_dir = os.path.dirname(os.path.abspath(parquet_path(path)))
    studies: dict[tuple, list] = {}
    for t in trials(df, protocol):
        studies.setdefault((t.sweep, t.algorithm, t.bench), []).append(t)
    out = []
    for (sweep, algo, bench), ts in studies.items():
        best = best_trial(ts)
        if best is None:
            continue
        seed = best.seeds[int(best.scores.argmax())]
        item = {"sweep": sweep, "algorithm": algo, "bench": bench, "trial_id": best.trial_id, "seed": seed,
                "score": float(best.scores.max()),
                "eval_seed": int(((specs.get(sweep) or {}).get("train") or {}).get("eval_seed", 100_000))}
        ckpts = _checkpoints(results_dir, best.trial_id)
        if not ckpts:
            item["skipped"] = f"no checkpoint of trial {best.trial_id} beside the results (`_train/` is not there)"
        else:
            step = best.final_step if best.final_step in ckpts else max(ckpts)
            item.update(checkpoint=ckpts[step], step=step)
        out.append(item)
    return out


def _load(item: dict) -> tuple[dict, dict]:
    from platform.checkpoint import load_meta, load_seed_state, seed_state_path

    meta = load_meta(item["checkpoint"])
    seed = item["seed"]
    if not os.path.exists(seed_state_path(item["checkpoint"], seed)):  # e.g. another worker's seeds: any kept one
        seed = next(s for s in meta["seeds"] if os.path.exists(seed_state_path(item["checkpoint"], s)))
        item["seed"] = seed
    return meta, load_seed_state(item["checkpoint"], seed)["algo"]


def make_videos(paths: list[str], out_dir: str, *, episodes: int = DEFAULT_EPISODES, use_ray: bool = False,
                protocol: str | None = None, log=print) -> list[dict]:
    """Film the best policy of every study in ``paths`` (results directories with their ``_train/``
    checkpoints) into ``<out_dir>/videos/``; returns the manifest entries (also written to videos.json,
    merged with what is there: a study filmed again replaces its old GIFs).  ``use_ray``: each study's
    rollouts run in a Ray CPU task (the sweep); else in this process."""
    items = []
    for p in [paths] if isinstance(paths, str) else paths:
        found = best_policies(p, protocol)
        if not any("checkpoint" in i for i in found):
            log(f"[videos] no checkpoints beside {_shown(p)}: no new videos (videos already in the report are kept)")
        items += found
    jobs = []
    for item in items:
        if "checkpoint" not in item:
            continue
        meta, state = _load(item)
        item["env"] = meta["env"]
        env_seeds = list(range(item["eval_seed"], item["eval_seed"] + episodes))
        if use_ray:
            import ray

            task = ray.remote(num_cpus=1, max_retries=2, max_calls=1)(render_rollouts)  # a fresh worker: MUJOCO_GL
            jobs.append((item, task.remote(meta, state, env_seeds)))
        else:
            jobs.append((item, render_rollouts(meta, state, env_seeds)))
    video_dir = os.path.join(out_dir, VIDEO_DIR)
    os.makedirs(video_dir, exist_ok=True)
    old = load_manifest(out_dir)
    new: list[dict] = []
    for item, job in jobs:
        if use_ray:
            import ray

            job = ray.get(job)
        base = {k: item[k] for k in ("sweep", "algorithm", "bench", "trial_id", "seed", "env")}
        base.update(step=item["step"], checkpoint=os.path.relpath(item["checkpoint"], os.path.dirname(
            os.path.dirname(os.path.dirname(item["checkpoint"])))))
        if "skipped" in job:
            log(f"[videos] {item['sweep']}: {item['algorithm']} on {item['bench']}: {job['skipped']}")
            new.append({**base, "skipped": job["skipped"]})
            continue
        for e in job["episodes"]:
            score, score_name = episode_score(item["env"], e)
            name = f"{slug(item['sweep'])}_{slug(item['algorithm'])}_{slug(item['bench'])}_seed{e['seed']}.gif"
            with open(os.path.join(video_dir, name), "wb") as f:
                f.write(e["gif"])
            new.append({**base, "file": f"{VIDEO_DIR}/{name}", "env_seed": e["seed"], "score": score,
                        "score_name": score_name, "return": e["return"], "max_reward": e["max_reward"],
                        "length": e["length"], "success": e["success"], "frames": e["frames"],
                        "frame_size": e["frame_size"], "every": job["every"], "fps": job["fps"],
                        "renderer": job["renderer"], "bytes": len(e["gif"])})
        log(f"[videos] {item['sweep']}: {item['algorithm']} on {item['bench']}: {len(job['episodes'])} GIF(s) "
            f"in {_shown(video_dir)} ({job['renderer']})")
    for item in items:  # studies without a checkpoint: said once, their old videos kept
        if "skipped" in item and not any(_key(o) == _key(item) for o in old):
            new.append({k: item[k] for k in ("sweep", "algorithm", "bench", "trial_id", "seed", "skipped")})
    redone = {_key(e) for e in new}
    kept = [e for e in old if _key(e) not in redone]
    for e in old:
        if _key(e) in redone and e.get("file") and e["file"] not in {n.get("file") for n in new}:
            stale = os.path.join(out_dir, e["file"])
            if os.path.exists(stale):
                os.remove(stale)
    manifest = kept + new
    from platform.checkpoint import save_json

    save_json(os.path.join(video_dir, MANIFEST), {"videos": manifest})
    return manifest


def _key(e: dict) -> tuple:
    return e["sweep"], e["algorithm"], e["bench"]


def _shown(path: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo
    rel = os.path.relpath(os.path.abspath(path), root)
    return rel if not rel.startswith("..") else os.path.basename(os.path.abspath(path))


# ============================================================================ the report's side


def load_manifest(report_dir: str) -> list[dict]:
    """The videos.json entries whose GIF is present (skip lines included); [] when there is none."""
    path = os.path.join(report_dir, VIDEO_DIR, MANIFEST)
    try:
        with open(path) as f:
            entries = json.load(f).get("videos", [])
    except (OSError, ValueError):
        return []
    return [e for e in entries if "skipped" in e or os.path.exists(os.path.join(report_dir, e.get("file", "")))]


def adopt_videos(sources: list[str], out_dir: str) -> None:
    """A report rebuilt elsewhere (``--out``) takes the videos beside its results (copied), unless it has its own."""
    if load_manifest(out_dir):
        return
    for src in sources:
        src_dir = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
        if os.path.abspath(src_dir) == os.path.abspath(out_dir) or not load_manifest(src_dir):
            continue
        shutil.copytree(os.path.join(src_dir, VIDEO_DIR), os.path.join(out_dir, VIDEO_DIR), dirs_exist_ok=True)
        return
