"""Push-T data path: window sampling, the zarr loader, and the low-dim env wrapper.

The real demonstrations are looked up at $PUSHT_ZARR, else ../shared/datasets/pusht/ next to the
repo; tests that need them skip with the reason when they are absent.
"""
import os

import numpy as np
import pytest

from platform.datasets.sequence import SequenceSampler, window_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pusht_zarr():
    path = os.environ.get("PUSHT_ZARR") or os.path.join(ROOT, "..", "shared", "datasets", "pusht",
                                                        "pusht_cchi_v7_replay.zarr")
    return os.path.abspath(path)


needs_zarr = pytest.mark.skipif(not os.path.isdir(_pusht_zarr()),
                                reason=f"Push-T demonstrations not found at {_pusht_zarr()} (set PUSHT_ZARR)")


# ----------------------------------------------------------------------------- windows


def _dp_reference_windows(episode_ends, sequence_length, pad_before, pad_after, data):
    """Literal port of the public create_indices + SequenceSampler.sample_sequence (one window at a time)."""
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)
    out = []
    for i in range(len(episode_ends)):
        start_idx = 0 if i == 0 else episode_ends[i - 1]
        episode_length = episode_ends[i] - start_idx
        for idx in range(-pad_before, episode_length - sequence_length + pad_after + 1):
            b0 = max(idx, 0) + start_idx
            b1 = min(idx + sequence_length, episode_length) + start_idx
            s0 = b0 - (idx + start_idx)
            s1 = sequence_length - ((idx + sequence_length + start_idx) - b1)
            sample = data[b0:b1]
            window = np.zeros((sequence_length,) + data.shape[1:], dtype=data.dtype)
            window[:s0] = sample[0]
            window[s1:] = sample[-1]
            window[s0:s1] = sample
            out.append(window)
    return np.stack(out) if out else np.zeros((0, sequence_length) + data.shape[1:], dtype=data.dtype)


def test_windows_hand_computed_two_episodes():
    # Episode 0 = rows 0..2 (length 3), episode 1 = rows 3..7 (length 5); To=2, Tp=4, Ta=2 -> pad 1 / 1.
    s = SequenceSampler(np.array([3, 8]), obs_horizon=2, pred_horizon=4, action_horizon=2)
    expected = np.array([
        [0, 0, 1, 2],  # starts one step before episode 0: first row repeated
        [0, 1, 2, 2],  # runs one step past its end: last row repeated
        [3, 3, 4, 5],
        [3, 4, 5, 6],
        [4, 5, 6, 7],
        [5, 6, 7, 7],
    ])
    np.testing.assert_array_equal(s.rows, expected)
    obs = np.arange(8, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)  # (8, 2)
    act = -np.arange(8, dtype=np.float32)[:, None]  # (8, 1)
    batch = s.get(np.array([0, 5, 2]), obs, act)
    assert batch["obs"].shape == (3, 2, 2) and batch["action"].shape == (3, 4, 1)
    np.testing.assert_array_equal(batch["obs"][:, :, 0], [[0, 0], [5, 6], [3, 3]])
    np.testing.assert_array_equal(batch["action"][:, :, 0], -expected[[0, 5, 2]])


def test_windows_match_public_code_on_random_episodes():
    rng = np.random.default_rng(0)
    lengths = np.array([1, 2, 5, 16, 17, 30, 3, 9])  # includes episodes shorter than a window
    ends = np.cumsum(lengths)
    data = rng.normal(size=(ends[-1], 3)).astype(np.float32)
    for To, Tp, Ta in [(2, 16, 8), (1, 4, 1), (3, 8, 6), (2, 16, 16)]:
        s = SequenceSampler(ends, To, Tp, Ta)
        ref = _dp_reference_windows(ends, Tp, To - 1, Ta - 1, data)
        got = s.get(np.arange(len(s)), data, data)
        np.testing.assert_array_equal(got["action"], ref)
        np.testing.assert_array_equal(got["obs"], ref[:, :To])


def test_windows_mask_sampling_and_torch():
    import torch

    ends = np.array([3, 8])
    s = SequenceSampler(ends, 2, 4, 2, episode_mask=np.array([False, True]))
    assert len(s) == 4 and s.rows.min() == 3
    idx = s.sample(1000, np.random.default_rng(0))
    assert idx.shape == (1000,) and idx.min() == 0 and idx.max() == 3
    assert sorted(np.concatenate(list(s.epoch(3, 0)))) == [0, 1, 2, 3]
    obs, act = torch.arange(16.0).reshape(8, 2), torch.arange(8.0).reshape(8, 1)
    b = s.get(torch.tensor([0, 3]), obs, act)
    assert torch.is_tensor(b["obs"]) and b["obs"].shape == (2, 2, 2) and b["action"].shape == (2, 4, 1)
    assert b["action"][:, :, 0].tolist() == [[3, 3, 4, 5], [5, 6, 7, 7]]
    assert window_rows(ends, 4, episode_mask=np.array([False, False])).shape == (0, 4)
    with pytest.raises(ValueError):
        SequenceSampler(ends, 5, 4, 2)
    with pytest.raises(ValueError):
        window_rows(np.array([3, 3]), 4)


# ----------------------------------------------------------------------------- env wrapper


def test_env_obs_reward_and_limits():
    from platform.envs.pusht import dp_initial_state, make_pusht_env

    env = make_pusht_env()
    obs, info = env.reset(seed=100000)
    assert obs.shape == (20,) and env.observation_space.shape == (20,) and env.action_space.shape == (2,)
    # The paper's seeded initial state: the (kinematic) agent is where RandomState(100000) puts it.
    np.testing.assert_allclose(obs[18:], dp_initial_state(100000)[:2])
    obs2, _ = env.reset(seed=100000)
    np.testing.assert_array_equal(obs, obs2)
    n, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        n += 1
        assert obs.shape == (20,) and 0.0 <= reward <= 1.0 and "is_success" in info
    assert truncated and n == 300  # random actions do not solve Push-T: the 300-step limit ends the episode
    env.close()


def test_env_success_from_goal_state():
    from platform.envs.pusht import GOAL_POSE, make_pusht_env

    env = make_pusht_env()
    state = np.array([100.0, 100.0, *GOAL_POSE])  # block exactly on the goal, agent far away
    obs, _ = env.reset(options={"reset_to_state": state})
    _, reward, terminated, _, info = env.step(np.array([100.0, 100.0]))
    assert reward == 1.0 and terminated and info["is_success"] and info["coverage"] > 0.95


@needs_zarr
def test_env_keypoints_match_dataset_after_reset_to_state():
    from platform.datasets.pusht import read_pusht_zarr
    from platform.envs.pusht import block_coverage, lowdim_obs, make_pusht_env

    raw = read_pusht_zarr(_pusht_zarr())
    stored = np.concatenate([raw["keypoint"].reshape(-1, 18), raw["state"][:, :2]], axis=1)
    # The keypoint formula reproduces the stored keypoints from the stored states.
    err = np.abs(lowdim_obs(raw["state"]) - stored).max(axis=1)
    assert np.median(err) < 1e-3 and np.mean(err < 0.05) > 0.99
    env = make_pusht_env()
    errs = []
    for i in range(0, len(stored), 1283):
        obs, _ = env.reset(options={"reset_to_state": raw["state"][i]})
        errs.append(np.abs(obs - stored[i]).max())
        assert abs(env.unwrapped._get_coverage() - block_coverage(raw["state"][i, 2:5])[0]) < 1e-9
    assert np.median(errs) < 1e-3 and max(errs) < 0.5, errs


# ----------------------------------------------------------------------------- loader


def test_loader_missing_path(tmp_path):
    from platform.datasets.pusht import read_pusht_zarr

    with pytest.raises(FileNotFoundError, match="pusht: no zarr store at"):
        read_pusht_zarr(str(tmp_path / "nope.zarr"))


@needs_zarr
def test_loader_real_zarr():
    try:
        from platform.datasets import OfflineDataset  # noqa: F401
    except ImportError:
        pytest.skip("platform/datasets/__init__.py (OfflineDataset) is missing")
    from platform.datasets.pusht import dp_train_mask, load_pusht
    from platform.envs.pusht import lowdim_obs

    data = load_pusht(_pusht_zarr())
    n = len(data.observations)
    assert data.env_id == "pusht" and data.observations.shape == (n, 20) and data.actions.shape == (n, 2)
    assert len(data.episode_ends) == 90 and data.episode_ends[-1] == n
    assert data.rewards.shape == (n,) and 0.0 <= data.rewards.min() and data.rewards.max() <= 1.0
    assert data.timeouts.sum() == 90 and not data.terminals.any()
    inside = data.timeouts[:-1] == 0  # within an episode the next observation is the next row
    np.testing.assert_array_equal(data.next_observations[:-1][inside], data.observations[1:][inside])
    np.testing.assert_array_equal(data.timeouts[data.episode_ends - 1], 1.0)
    assert np.abs(data.observations[:, :18] - lowdim_obs(np.zeros((1, 5)))[:, :18]).max() > 1  # not a placeholder
    # The public code's selection: 4 held-out episodes, then 90 of the other 202 -> 42 batches of 256 windows.
    mask = dp_train_mask(206, 90)
    assert mask.sum() == 90 and not mask[[18, 90, 134, 157]].any()
    assert -(-len(SequenceSampler(data.episode_ends, 2, 16, 8)) // 256) == 42
    first = load_pusht(_pusht_zarr(), episode_selection="first", with_rewards=False)
    assert len(first.episode_ends) == 90 and not first.rewards.any()
    spec = data.env_spec()
    assert spec.obs_dim == 20 and spec.act_dim == 2 and spec.act_high == (512.0, 512.0)
    assert len(data.attrs["episode_indices"]) == 90
    # The paper's normalizer (and BeT's k-means) use all 206 episodes: the action x-maximum is 511, not the 90
    # training episodes' 487, so a [-1, 1] policy can reach the right edge.
    assert round(spec.act_max[0]) == 511 and round(float(data.actions[:, 0].max())) == 487
    assert len(data.all_actions) == 25650
    train_only = load_pusht(_pusht_zarr(), normalizer_episodes="train", with_rewards=False).env_spec()
    assert round(train_only.act_max[0]) == 487
    # Through the platform's name resolution too
    from platform.datasets import load_dataset

    assert len(load_dataset(f"pusht:{_pusht_zarr()}").episode_ends) == 90
