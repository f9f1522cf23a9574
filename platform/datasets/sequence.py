"""Fixed-length windows cut from episodes, as Diffusion Policy trains on them.

Same windows and padding as the public code (``diffusion_policy/common/sampler.py``,
``create_indices`` + ``SequenceSampler.sample_sequence``): every window of ``Tp`` (``pred_horizon``)
consecutive steps of one episode, where the window may start up to ``pad_before = To - 1`` steps
before the episode and end up to ``pad_after = Ta - 1`` steps after it; out-of-episode steps repeat
the episode's first (resp. last) element.  So the first window of an episode sees its first
observation twice (as at test time, where the observation history is padded with the first
observation), and the last windows ask for "hold the last action".

Instead of building each window with Python slicing, the sampler precomputes, once, the buffer row
of every step of every window: ``rows`` is ``(n_windows, Tp)``, so a batch is one fancy index
``observations[rows[idx, :To]]``, ``actions[rows[idx]]`` (numpy arrays or torch tensors, on any
device).
"""
from __future__ import annotations

import numpy as np


def window_rows(episode_ends: np.ndarray, sequence_length: int, pad_before: int = 0, pad_after: int = 0,
                episode_mask: np.ndarray | None = None) -> np.ndarray:
    """Buffer rows of every padded window: ``(n_windows, sequence_length)`` int64.

    ``episode_ends``: ``(n_episodes,)`` exclusive end index of each episode (zarr ``meta/episode_ends``).
    Window ``w`` covers episode steps ``s .. s + sequence_length - 1`` for every start
    ``s in [-pad_before, L - sequence_length + pad_after]``; steps outside ``[0, L)`` are clamped to
    the first / last step (DP's edge padding).  Episodes with ``episode_mask[i] == False`` are skipped.
    """
    episode_ends = np.asarray(episode_ends, dtype=np.int64)
    if episode_ends.ndim != 1:
        raise ValueError(f"episode_ends must be 1-D, got shape {episode_ends.shape}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    if len(episode_ends) and (np.any(np.diff(episode_ends) <= 0) or episode_ends[0] <= 0):
        raise ValueError("episode_ends must be strictly increasing and positive (exclusive ends)")
    if episode_mask is None:
        episode_mask = np.ones(len(episode_ends), dtype=bool)
    episode_mask = np.asarray(episode_mask, dtype=bool)
    if episode_mask.shape != episode_ends.shape:
        raise ValueError(f"episode_mask has shape {episode_mask.shape}, episode_ends {episode_ends.shape}")
    # Same clamping as DP's create_indices: padding never exceeds a whole window.
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)

    offsets = np.arange(sequence_length, dtype=np.int64)
    starts = np.concatenate([[0], episode_ends[:-1]])
    chunks = []
    for start, end, keep in zip(starts, episode_ends, episode_mask):
        if not keep:
            continue
        length = end - start
        first = np.arange(-pad_before, length - sequence_length + pad_after + 1, dtype=np.int64)  # window starts
        steps = np.clip(first[:, None] + offsets[None, :], 0, length - 1)  # edge padding = clamping
        chunks.append(steps + start)
    if not chunks:
        return np.zeros((0, sequence_length), dtype=np.int64)
    return np.concatenate(chunks, axis=0)


class SequenceSampler:
    """All ``(To, Tp)`` training windows of a set of episodes, and fast batched access to them.

    ``sampler = SequenceSampler(episode_ends, obs_horizon=2, pred_horizon=16, action_horizon=8)``
    ``batch = sampler.get(sampler.sample(256, rng), observations, actions)``
    -> ``{"obs": (B, To, obs_dim), "action": (B, Tp, act_dim)}``.

    The observation window is the first ``To`` steps of the action window (DP's convention: the
    policy sees observations ``t-To+1 .. t`` and predicts actions ``t-To+1 .. t-To+Tp``).
    """

    def __init__(self, episode_ends, obs_horizon: int, pred_horizon: int, action_horizon: int,
                 episode_mask=None, pad_before: int | None = None):
        if not 1 <= obs_horizon <= pred_horizon:
            raise ValueError(f"need 1 <= obs_horizon <= pred_horizon, got To={obs_horizon}, Tp={pred_horizon}")
        if not 1 <= action_horizon <= pred_horizon:
            raise ValueError(f"need 1 <= action_horizon <= pred_horizon, got Ta={action_horizon}, Tp={pred_horizon}")
        self.obs_horizon, self.pred_horizon, self.action_horizon = obs_horizon, pred_horizon, action_horizon
        self.pad_before = obs_horizon - 1 if pad_before is None else pad_before  # DP: n_obs_steps - 1
        self.pad_after = action_horizon - 1
        self.rows = window_rows(episode_ends, pred_horizon, self.pad_before, self.pad_after, episode_mask)
        self.obs_rows = np.ascontiguousarray(self.rows[:, :obs_horizon])  # (n_windows, To)
        self._torch_rows: dict = {}  # device -> (rows, obs_rows) as torch tensors, built on first use

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, batch_size: int, rng) -> np.ndarray:
        """``(batch_size,)`` window indices drawn uniformly with replacement."""
        if len(self) == 0:
            raise ValueError("SequenceSampler has no windows (all episodes masked or shorter than a window)")
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        return rng.integers(0, len(self), size=batch_size)

    def epoch(self, batch_size: int, rng, drop_last: bool = False):
        """Yield index batches covering every window once, in random order (DP's shuffled DataLoader)."""
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        order = rng.permutation(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            yield order[i:i + batch_size]

    def get(self, indices, observations, actions) -> dict:
        """Gather windows ``indices`` from per-step arrays.

        ``observations``: ``(N, obs_dim)``, ``actions``: ``(N, act_dim)`` -- numpy arrays or torch
        tensors (the result has the same type and device).  Returns ``{"obs": (B, To, obs_dim),
        "action": (B, Tp, act_dim)}``.
        """
        if isinstance(observations, np.ndarray):
            return {"obs": observations[self.obs_rows[indices]], "action": actions[self.rows[indices]]}
        import torch

        device = observations.device
        if device not in self._torch_rows:
            self._torch_rows[device] = (torch.as_tensor(self.rows, device=device),
                                        torch.as_tensor(self.obs_rows, device=device))
        rows, obs_rows = self._torch_rows[device]
        idx = torch.as_tensor(indices, device=device, dtype=torch.long)
        return {"obs": observations[obs_rows[idx]], "action": actions[rows[idx]]}
