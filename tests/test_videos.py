"""Rollout videos (platform/report/videos.py): real Push-T rollouts of a checkpoint written with platform.checkpoint,
recorded to GIFs through the evaluation's own loop, embedded by the report, and seen in headless Chromium.

The study here is written by hand in the layout a sweep leaves (``<results>/metrics.parquet``, ``spec.json``,
``_train/train_<trial>/checkpoint_<step>/`` with ``meta.json`` + ``seed_<s>.pt``): two Diffusion Policy trials
(untrained, tiny U-Net, 3 denoising steps, so a rollout costs seconds), the second one scoring higher.  The
Push-T env needs gym_pusht only (no demonstrations): the policy's env spec is Push-T's, written out.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from platform import checkpoint
from platform.report import videos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY, ALGO, STEP = "vid_study", "diffusion_policy", 2
TRIALS = {"aaaa0000": 10.0, "bbbb1111": 60.0}   # trial -> its final score; the second is the best
BEST = "bbbb1111"
EVAL_SEED, EPISODES = 100_000, 2
CONFIG = dict(backbone="cnn", down_dims=[16, 32], diffusion_step_embed_dim=16, n_timesteps=3, n_inference_steps=3)
ENV_SPEC = dict(obs_dim=20, act_dim=2, obs_low=[0.0] * 20, obs_high=[512.0] * 20, act_min=[12.0, 25.0],
                act_max=[511.0, 511.0], act_low=[0.0, 0.0], act_high=[512.0, 512.0])
# gym_pusht's fills as pymunk draws them: goal T (LightGreen), block T (lightened LightSlateGray), agent
GOAL, BLOCK, AGENT = (144, 238, 144), (143, 163, 184), (78, 126, 255)


def _policy_state(seed: int) -> dict:
    import algorithms

    torch.manual_seed(seed)
    return algorithms.build(ALGO, CONFIG, ENV_SPEC, "cpu").state_dict()


def _write_study(results: str) -> None:
    rows = []
    for i, (trial, score) in enumerate(TRIALS.items()):
        for step in (1, STEP):
            rows.append({"sweep": STUDY, "trial_id": trial, "algorithm": ALGO, "dataset": "pusht", "env": "pusht",
                         "seed": 0, "step": step, "eval/normalized_score": score * step / STEP,
                         "status": "TERMINATED", "config/n_timesteps": 3, "config/down_dims": "[16, 32]"})
        d = os.path.join(results, "_train", f"train_{trial}", f"checkpoint_{STEP:09d}")
        checkpoint.save_seed_state(d, 0, _policy_state(i), STEP, None)
        checkpoint.save_meta(d, algorithm=ALGO, config=CONFIG, env_spec=ENV_SPEC, seeds=[0], step=STEP,
                             dataset="pusht", env="pusht")
    pd.DataFrame(rows).to_parquet(os.path.join(results, "metrics.parquet"), index=False)
    with open(os.path.join(results, "spec.json"), "w") as f:
        json.dump({"name": STUDY, "algorithm": ALGO, "dataset": "pusht",
                   "train": {"steps": STEP, "eval_every": 1, "eval_episodes": 2, "seeds": [0], "eval_seed": EVAL_SEED}},
                  f)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The study's results and the report made from them with ``python -m platform.report RESULTS --videos``."""
    base = tmp_path_factory.mktemp("videos")
    results, out = str(base / "results" / STUDY), str(base / "report")
    os.makedirs(results)
    _write_study(results)
    proc = subprocess.run([sys.executable, "-m", "platform.report", results, "--videos", "--video-episodes",
                           str(EPISODES), "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"results": results, "out": out, "stdout": proc.stdout, "stderr": proc.stderr}


def _gif_frames(path: str) -> tuple[list[np.ndarray], int]:
    """All frames of a GIF as RGB arrays, and the total duration (ms)."""
    from PIL import Image

    im = Image.open(path)
    frames, total = [], 0
    for i in range(im.n_frames):
        im.seek(i)
        total += im.info["duration"]
        frames.append(np.asarray(im.convert("RGB")))
    return frames, total


def _near(img: np.ndarray, colour: tuple, tol: int = 12) -> np.ndarray:
    return (np.abs(img[..., :3].astype(int) - np.array(colour)) <= tol).all(-1)


def test_best_trial_filmed_and_episodes_are_the_evaluations(made):
    """The best trial's checkpoint is filmed on EPISODES seeds from eval_seed; rendering leaves each episode as
    the evaluation loop plays it (same returns as run_episodes without rendering, same batch)."""
    import algorithms
    from platform.envs import make_env
    from platform.evaluation import run_episodes

    entries = json.load(open(os.path.join(made["out"], "videos", "videos.json")))["videos"]
    assert [e["env_seed"] for e in entries] == [EVAL_SEED + i for i in range(EPISODES)]
    assert {e["trial_id"] for e in entries} == {BEST} and {e["step"] for e in entries} == {STEP}
    assert {e["checkpoint"] for e in entries} == {f"_train/train_{BEST}/checkpoint_{STEP:09d}"}  # relative
    assert all(e["renderer"].startswith("pygame") for e in entries)
    torch.set_num_threads(1)  # as the rollout (and every rollout actor) runs: the same float sums, the same episode
    algo = algorithms.build(ALGO, CONFIG, ENV_SPEC, "cpu")
    algo.load_state_dict(_policy_state(list(TRIALS).index(BEST)))
    plain = run_episodes(algo, [lambda: make_env("pusht") for _ in range(EPISODES)],
                         [EVAL_SEED + i for i in range(EPISODES)])
    for e, p in zip(entries, plain):
        assert e["return"] == pytest.approx(p["return"]) and e["length"] == p["length"]
        assert e["score"] == pytest.approx(100 * p["max_reward"]) and e["score_name"].startswith("score")
        assert e["frames"] == p["length"] // 2 + 1       # the reset, then every 2nd step (300 steps: 151)
    assert "[videos]" in made["stderr"] and made["stdout"].strip() == os.path.join(made["out"], "index.html")


def test_gifs_show_pusht_and_the_agent_moves(made):
    entries = json.load(open(os.path.join(made["out"], "videos", "videos.json")))["videos"]
    total_bytes = 0
    for e in entries:
        path = os.path.join(made["out"], e["file"])
        assert re.fullmatch(rf"videos/vid-study_diffusion-policy_pusht[a-z0-9-]*_seed{e['env_seed']}\.gif", e["file"])
        total_bytes += os.path.getsize(path)
        frames, total_ms = _gif_frames(path)
        # identical consecutive frames are merged by the GIF writer, their durations summed: the clip still
        # lasts frames x 2 steps / 10 Hz
        assert total_ms == e["frames"] * 200 and 10 < len(frames) <= e["frames"]
        assert all(f.shape == (videos.DEFAULT_SIZE, videos.DEFAULT_SIZE, 3) for f in frames)
        first, last = frames[0], frames[-1]
        assert _near(first, GOAL).sum() > 150 and _near(first, BLOCK).sum() > 200  # goal and block (~470 px each)
        agent = [np.argwhere(_near(f, AGENT)).mean(0) for f in (first, last)]
        assert _near(first, AGENT).sum() > 10
        assert np.abs(agent[0] - agent[1]).sum() > 5          # the agent moved (pixels)
        assert np.abs(first.astype(int) - last).mean() > 0.5  # and the picture changed
    assert total_bytes < 1_000_000, total_bytes


def test_report_embeds_and_links_the_videos(made):
    out = made["out"]
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    md = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    entries = json.load(open(os.path.join(out, "videos", "videos.json")))["videos"]
    assert 'id="rollout-videos"' in html and "## Rollout videos" in md
    for e in entries:
        assert f'<img src="{e["file"]}"' in html
        assert f"]({e['file']})]({e['file']})" in md                     # an image linked to its file
        caption = f"env seed {e['env_seed']}: score (100 × max reward) {e['score']:.1f}"
        assert caption in html and caption in md
    assert f"trial `{BEST}`, seed 0, checkpoint of step {STEP}" in md
    for text in (html, md, open(os.path.join(out, "videos", "videos.json")).read()):
        assert "/tmp/" not in text and "/root/" not in text and "/home/" not in text and "/work/" not in text


def test_rebuild_keeps_videos_without_rendering(made, tmp_path):
    """A report rebuilt from its own directory (results copied beside it, as a sweep does) embeds the videos
    already there; rebuilt elsewhere it takes them along; a report without videos has no such section."""
    from platform import report

    own = tmp_path / "own"
    shutil.copytree(made["out"], own)
    for f in ("metrics.parquet", "spec.json"):
        shutil.copy(os.path.join(made["results"], f), own / f)
    before = {p: os.path.getmtime(own / "videos" / p) for p in os.listdir(own / "videos")}
    report.build_report([str(own)], str(own))
    assert {p: os.path.getmtime(own / "videos" / p) for p in os.listdir(own / "videos")} == before
    assert (own / "README.md").read_text().count("](videos/") == 2 * EPISODES
    elsewhere = tmp_path / "elsewhere"
    report.build_report([str(own)], str(elsewhere))
    assert (elsewhere / "README.md").read_text().count("](videos/") == 2 * EPISODES
    assert sorted(os.listdir(elsewhere / "videos")) == sorted(before)
    # --videos on a report directory (no checkpoints): says so, keeps the videos, exit 0
    proc = subprocess.run([sys.executable, "-m", "platform.report", str(own), "--videos", "--out", str(own)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no checkpoints beside" in proc.stderr and (own / "README.md").read_text().count("](videos/") == 4
    plain = tmp_path / "plain"
    report.build_report([made["results"]], str(plain))
    assert "Rollout videos" not in (plain / "README.md").read_text() and not (plain / "videos").exists()


def test_mujoco_without_offscreen_gl_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(videos, "gl_works", lambda backend: False)
    meta = {"algorithm": "bc", "config": {}, "env_spec": {}, "env": "HalfCheetah-v5"}
    out = videos.render_rollouts(meta, {}, [0])
    assert out == {"skipped": "HalfCheetah-v5 is a MuJoCo task and no off-screen GL backend works here "
                              "(MUJOCO_GL=egl and osmesa both fail): no video"}
    assert videos._needs_gl("Hopper-v5") and not videos._needs_gl("pusht") and not videos._needs_gl("Pendulum-v1")


def _screenshot(chromium: str, html: str, png, profile) -> np.ndarray:
    from PIL import Image

    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,3000",
                    "--virtual-time-budget=5000", "file://" + os.path.abspath(html)],
                   capture_output=True, text=True, timeout=180)
    assert os.path.exists(png) and os.path.getsize(png) > 10_000
    return np.asarray(Image.open(png).convert("RGB"))


def test_video_visible_in_headless_chromium(made, tmp_path, chromium):
    """The report's page, opened by a real browser, shows the Push-T rollout: goal (light green), block (slate
    grey) and agent (royal blue) pixels where the same report without videos has none."""
    with_videos = _screenshot(chromium, os.path.join(made["out"], "index.html"), tmp_path / "v.png", tmp_path / "p1")
    from platform import report

    plain = tmp_path / "plain"
    report.build_report([made["results"]], str(plain))
    without = _screenshot(chromium, str(plain / "index.html"), tmp_path / "n.png", tmp_path / "p2")
    green, gray, blue = (_near(with_videos, c, 10) for c in (GOAL, BLOCK, AGENT))
    assert _near(without, GOAL, 10).sum() < 50 and _near(without, BLOCK, 10).sum() < 50
    # EPISODES clips side by side, each shown 240 px wide (1.5 x 160): a goal T, a block T and the agent in each
    assert green.sum() > 600 * EPISODES and gray.sum() > 300 * EPISODES and blue.sum() > 20 * EPISODES
    rows, cols = np.nonzero(green)
    assert cols.max() - cols.min() > 240          # seen in more than one clip
    assert np.abs(np.nonzero(gray)[0].mean() - rows.mean()) < 150   # the T's and the goal in the same band


def test_checked_in_pusht_report_shows_the_diffusion_policy_rollout(tmp_path, chromium):
    """reports/dp_pusht_cnn (Diffusion Policy on the real Push-T demonstrations), opened by a real browser, shows
    its rollout GIFs: the goal, block and agent pixels of each clip on the page."""
    from platform import report

    d = os.path.join(report.REPO_ROOT, "reports", "dp_pusht_cnn")
    listed = json.load(open(os.path.join(d, "videos", "videos.json")))["videos"]
    assert listed and {v["algorithm"] for v in listed} == {"diffusion_policy"} and {v["env"] for v in listed} == {"pusht"}
    page = _screenshot(chromium, os.path.join(d, "index.html"), tmp_path / "dp.png", tmp_path / "p")
    green, gray, blue = (_near(page, c, 10) for c in (GOAL, BLOCK, AGENT))
    assert green.sum() > 600 * len(listed) and gray.sum() > 300 * len(listed) and blue.sum() > 20 * len(listed)
