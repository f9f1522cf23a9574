"""Push-T human demonstrations (the Diffusion Policy paper's ``pusht_cchi_v7_replay.zarr``).

``load_pusht(path)`` reads the zarr store (``data/state``, ``data/keypoint``, ``data/action``,
``meta/episode_ends``; the 2.8 GB of images are never read) and returns an ``OfflineDataset``:

* ``observations (N, 20)``: the paper's low-dim observation, 9 block keypoints (x, y) then the agent
  x, y, exactly ``PushTLowdimDataset._sample_to_data`` (``concat(keypoint.reshape(18), state[:, :2])``);
* ``actions (N, 2)``: agent target positions in pixels;
* ``episode_ends``: exclusive ends of the kept episodes, renumbered after selection;
* D4RL-style extras for transition-based algorithms: ``rewards[t] = clip(coverage(s_{t+1}) / 0.95, 0, 1)``
  (the env's reward for action t), ``next_observations``; the last step of each episode has no
  recorded successor: it reuses its own state and is marked ``timeouts = True`` (``terminals`` are
  all False: the data does not show whether the episode ended in success).

Training episodes, as the public config (``task/pusht_lowdim.yaml``: ``val_ratio=0.02, seed=42,
max_train_episodes=90``) and ``PushTLowdimDataset``: ``get_val_mask`` holds out round(206 * 0.02) = 4
episodes at random (``default_rng(42)``), then ``downsample_mask`` keeps 90 of the rest at random
(``default_rng(42)``); that gives 42 batches of 256 windows per epoch, the paper's step count.
``episode_selection="first"`` keeps the first ``max_train_episodes`` instead (40 batches per epoch).
The public code fits its normalizer on all 206 episodes (train and held-out) and BeT's k-means on all
their actions: the dataset's ``obs_range``/``act_range`` (what ``env_spec()`` gives the normalizers) and
``all_actions`` are those of every episode (``normalizer_episodes="all"``, the default; ``"train"``: the
kept episodes').
"""
from __future__ import annotations

import os

import numpy as np

PUSHT_ENV_ID = "pusht"


def dp_train_mask(n_episodes: int, max_train_episodes: int | None, val_ratio: float = 0.02,
                  seed: int = 42) -> np.ndarray:
    """``(n_episodes,)`` bool: the public code's training episodes (``get_val_mask`` then ``downsample_mask``)."""
    val_mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio > 0:
        n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
        val_mask[np.random.default_rng(seed=seed).choice(n_episodes, size=n_val, replace=False)] = True
    train_mask = ~val_mask
    if max_train_episodes is not None and train_mask.sum() > max_train_episodes:
        idx = np.nonzero(train_mask)[0]
        keep = idx[np.random.default_rng(seed=seed).choice(len(idx), size=int(max_train_episodes), replace=False)]
        train_mask = np.zeros(n_episodes, dtype=bool)
        train_mask[keep] = True
    return train_mask


def read_pusht_zarr(path: str) -> dict[str, np.ndarray]:
    """The raw arrays: ``state (N, 5)``, ``keypoint (N, 9, 2)``, ``action (N, 2)``, ``episode_ends (E,)``."""
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path) or not (os.path.exists(os.path.join(path, ".zgroup"))
                                       or os.path.exists(os.path.join(path, "zarr.json"))):
        raise FileNotFoundError(f"pusht: no zarr store at {path!r} (expected the Diffusion Policy paper's "
                                f"pusht_cchi_v7_replay.zarr directory)")
    import zarr

    root = zarr.open(path, mode="r")
    try:
        out = {"state": np.asarray(root["data/state"][:], dtype=np.float32),
               "keypoint": np.asarray(root["data/keypoint"][:], dtype=np.float32),
               "action": np.asarray(root["data/action"][:], dtype=np.float32),
               "episode_ends": np.asarray(root["meta/episode_ends"][:], dtype=np.int64)}
    except KeyError as e:
        raise ValueError(f"pusht: zarr store at {path!r} lacks {e}; need data/state, data/keypoint, data/action "
                         f"and meta/episode_ends") from None
    n = len(out["action"])
    if out["state"].shape != (n, 5) or out["keypoint"].shape != (n, 9, 2) or out["action"].shape != (n, 2):
        raise ValueError(f"pusht: unexpected shapes in {path!r}: state {out['state'].shape}, keypoint "
                         f"{out['keypoint'].shape}, action {out['action'].shape}")
    if len(out["episode_ends"]) == 0 or out["episode_ends"][-1] != n:
        raise ValueError(f"pusht: meta/episode_ends must end at the number of steps {n}")
    return out


def load_pusht(path: str, max_train_episodes: int | None = 90, episode_selection: str = "dp",
               val_ratio: float = 0.02, seed: int = 42, with_rewards: bool = True, normalizer_episodes: str = "all"):
    """Load the Push-T demonstrations as an ``OfflineDataset`` (``env_id = "pusht"``).

    ``max_train_episodes``: episodes kept for training (paper: 90; None: all but the held-out ones).
    ``episode_selection``: ``"dp"`` (the public code's seeded random choice, the default) or ``"first"``.
    ``with_rewards``: compute the coverage rewards (about 1 s); False leaves them at 0.
    ``normalizer_episodes``: ``"all"`` (the paper's normalizer and BeT bins: every episode) or ``"train"``.
    """
    if normalizer_episodes not in ("all", "train"):
        raise ValueError(f"pusht: normalizer_episodes must be 'all' or 'train', got {normalizer_episodes!r}")
    from platform.datasets.base import OfflineDataset
    from platform.envs.pusht import block_coverage, coverage_reward

    if max_train_episodes is not None and max_train_episodes < 1:
        raise ValueError(f"pusht: max_train_episodes must be >= 1 or None, got {max_train_episodes}")
    raw = read_pusht_zarr(path)
    ends = raw["episode_ends"]
    n_episodes = len(ends)
    if episode_selection == "dp":
        mask = dp_train_mask(n_episodes, max_train_episodes, val_ratio, seed)
    elif episode_selection == "first":
        mask = np.zeros(n_episodes, dtype=bool)
        mask[:n_episodes if max_train_episodes is None else max_train_episodes] = True
    else:
        raise ValueError(f"pusht: episode_selection must be 'dp' or 'first', got {episode_selection!r}")

    starts = np.concatenate([[0], ends[:-1]])
    rows = np.concatenate([np.arange(s, e) for s, e, keep in zip(starts, ends, mask) if keep])
    lengths = (ends - starts)[mask]
    new_ends = np.cumsum(lengths).astype(np.int64)
    is_last = np.zeros(len(rows), dtype=bool)
    is_last[new_ends - 1] = True

    all_obs = np.concatenate([raw["keypoint"].reshape(-1, 18), raw["state"][:, :2]], axis=1).astype(np.float32)
    state = raw["state"][rows]
    obs = all_obs[rows]
    actions = raw["action"][rows]
    nxt = np.where(is_last, np.arange(len(rows)), np.arange(len(rows)) + 1)  # successor row (self at episode end)
    next_obs = obs[nxt]
    if with_rewards:
        rewards = coverage_reward(block_coverage(state[nxt, 2:5])).astype(np.float32)
    else:
        rewards = np.zeros(len(rows), dtype=np.float32)

    return OfflineDataset(
        observations=obs,
        actions=actions,
        rewards=rewards,
        next_observations=next_obs,
        terminals=np.zeros(len(rows), dtype=bool),
        timeouts=is_last,
        episode_ends=new_ends,
        env_id=PUSHT_ENV_ID,
        ref_min_score=0.0,   # Push-T's score is the best coverage reward of an episode, already in [0, 1]
        ref_max_score=1.0,
        name="pusht",
        act_low=(0.0, 0.0),  # the env's action space: agent targets in [0, 512]^2 pixels
        act_high=(512.0, 512.0),
        obs_range=(all_obs.min(0), all_obs.max(0)) if normalizer_episodes == "all" else None,
        act_range=(raw["action"].min(0), raw["action"].max(0)) if normalizer_episodes == "all" else None,
        all_actions=raw["action"].astype(np.float32) if normalizer_episodes == "all" else None,
        attrs={
            "source": os.path.abspath(os.path.expanduser(str(path))),
            "episode_indices": np.nonzero(mask)[0].tolist(),
            "episode_selection": episode_selection,
            "normalizer_episodes": normalizer_episodes,
            "all_episodes_obs_low": all_obs.min(0).tolist(), "all_episodes_obs_high": all_obs.max(0).tolist(),
            "all_episodes_act_min": raw["action"].min(0).tolist(),
            "all_episodes_act_max": raw["action"].max(0).tolist(),
        },
    )
