"""Policy evaluation in a pool of Ray CPU actors, each holding a gymnasium vector env.

Each actor rebuilds the algorithm on CPU from plain-state weights, and the policy acts batched
over all envs of the actor: one ``act`` call per control step for ``envs_per_actor`` episodes.
Episode ``i`` of an evaluation always uses environment seed ``eval_seed + i`` (whatever actor
runs it), and the policy's own sampling (diffusion noise, candidate picks) draws from the torch RNG
seeded with the first episode seed of each batch of episodes, so scores are reproducible and a task
retried on a restarted actor (``max_restarts``/``max_task_retries``) gives the same numbers.

Metrics (per evaluated model): ``eval/return_mean``, ``eval/return_std``, ``eval/normalized_score``
(D4RL's ``100 * (R - random) / (expert - random)`` when the task has reference returns; for
Push-T, 100 x the mean over episodes of each episode's best reward, the paper's test score),
``eval/success_rate``, ``eval/max_reward_mean``, ``eval/length_mean``, ``eval/act_ms`` (mean wall time of one
batched ``act`` call: a policy's sampling cost, e.g. K or the solver's steps), and the health metrics
``eval/action_out_of_box`` (share of the policy's actions beyond the env's action box by more than 1% of its
half-width) and ``eval/action_excess_max`` (the largest excess, in half-widths).  Every action is clipped to the
box before ``env.step``, as every public evaluation loop does (by clamp or wrapper).  On the toy tasks
(``platform/envs/toy_tasks.py``, one-step episodes) the episodes' first executed actions also give
``eval/modes_covered``, ``eval/off_support``, ``eval/mmd``, ``eval/best_mode_share`` (bandit) and
``eval/actions_sample`` (a JSON string of the first actions, for the report's scatter).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import ray
import torch

from platform.checkpoint import to_cpu

ROLLOUT_ACTOR_OPTIONS = dict(max_restarts=2, max_task_retries=2)  # a killed actor is restarted, its task retried


def run_episodes(algo, env_fns, seeds: list[int], render_every: int = 0, max_frames: int | None = None) -> list[dict]:
    """Roll out ``algo`` for ``len(seeds)`` episodes, ``len(env_fns)`` at a time, batched.

    ``algo.act``: ``(B, To, obs_dim) -> (B, Ta, act_dim)``; the first ``Ta`` actions are executed
    before replanning (receding horizon; To = Ta = 1 for single-step policies).  The policy's random
    draws are seeded per batch of episodes (``torch.manual_seed(first seed of the batch)``), so the result
    depends on ``seeds`` and ``len(env_fns)`` only, not on what the process ran before; the caller's torch
    RNG state is restored afterwards.

    ``render_every > 0`` (the envs made with ``render_mode="rgb_array"``): each episode's record also holds
    ``"frames"``, the env's ``render()`` after the reset and after every ``render_every``-th step of the episode
    (its last step included), at most ``max_frames`` of them; the episode itself (actions, scores) is the same as
    without rendering (platform/report/videos.py).
    """
    import gymnasium as gym

    import time

    To = algo.obs_horizon
    out: list[dict] = []
    n_envs = len(env_fns)
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    low, high = action_box(envs.single_action_space)
    rng_state = torch.get_rng_state()
    try:
        for start in range(0, len(seeds), n_envs):
            chunk = seeds[start:start + n_envs]
            n = len(chunk)
            # Pad the last chunk with repeats of its seeds; their episodes are discarded.
            obs, _ = envs.reset(seed=[int(s) for s in chunk] + [int(chunk[0])] * (n_envs - n))
            torch.manual_seed(int(chunk[0]))
            algo.reset(n_envs)  # new episodes: stateful policies (LSTM-GMM) forget the previous ones
            history = deque([obs] * To, maxlen=To)  # DP pads the start by repeating the first obs
            ret = np.zeros(n_envs)
            best = np.full(n_envs, -np.inf)
            length = np.zeros(n_envs, dtype=int)
            success = np.zeros(n_envs, dtype=bool)
            done = np.zeros(n_envs, dtype=bool)
            done[n:] = True
            n_actions, n_out = np.zeros(n_envs, dtype=int), np.zeros(n_envs, dtype=int)
            excess_max = np.zeros(n_envs)
            act_s, act_calls = 0.0, 0
            first_action = np.full((n_envs, int(np.prod(envs.single_action_space.shape or (1,)))), np.nan)
            first_obs = [None] * n_envs  # each episode's first executed action and the observation it acted on
            frames: list[list] = [[] for _ in range(n_envs)]

            def record(live: np.ndarray, last: np.ndarray) -> None:
                for i in np.flatnonzero(live[:n]):
                    if (length[i] % render_every == 0 or last[i]) and len(frames[i]) < (max_frames or 1 << 30):
                        frames[i].append(np.asarray(envs.envs[i].render()))

            if render_every:
                record(~done, done)
            while not done.all():
                obs_seq = torch.as_tensor(np.stack(history, axis=1), dtype=torch.float32)  # (B, To, obs_dim)
                tick = time.perf_counter()
                with torch.no_grad():
                    actions = algo.act(obs_seq).cpu().numpy()  # (B, Ta, act_dim)
                act_s, act_calls = act_s + time.perf_counter() - tick, act_calls + 1
                for t in range(actions.shape[1]):
                    action, excess = clip_to_box(actions[:, t], low, high)
                    for i in np.flatnonzero(~done & (length == 0)):
                        first_action[i] = np.asarray(action[i], dtype=np.float64).reshape(-1)
                        first_obs[i] = obs[i].tolist() if isinstance(obs, np.ndarray) else None
                    obs, reward, term, trunc, info = envs.step(action)
                    live = ~done
                    n_actions[live] += 1
                    n_out[live] += excess[live] > OUT_OF_BOX_TOLERANCE
                    excess_max[live] = np.maximum(excess_max[live], excess[live])
                    ret[live] += reward[live]
                    best[live] = np.maximum(best[live], reward[live])
                    length[live] += 1
                    if "is_success" in info:
                        success[live] |= np.asarray(info["is_success"], dtype=bool)[live]
                    done |= term | trunc
                    if render_every:  # the frame of the state this step reached (the terminal one too)
                        record(live, done)
                    history.append(obs)
                    if done.all():
                        break
            for i in range(n):
                out.append({"seed": int(chunk[i]), "return": float(ret[i]), "max_reward": float(best[i]),
                            "length": int(length[i]), "success": bool(success[i]),
                            "act_ms": 1000.0 * act_s / max(1, act_calls),  # one act call for the batch of envs
                            "actions": int(n_actions[i]), "actions_out": int(n_out[i]),
                            "excess_max": float(excess_max[i]),
                            "first_action": first_action[i].tolist(), "first_obs": first_obs[i]})
                if render_every:
                    out[-1]["frames"] = frames[i]
    finally:
        envs.close()
        torch.set_rng_state(rng_state)
    return out


# An action counts as out of the box when some coordinate is beyond its bound by more than this fraction of the
# box's half-width: EDP's faithful sampler leaves its last step unclipped, a few hundredths over is normal.
OUT_OF_BOX_TOLERANCE = 0.01


def action_box(space) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The finite bounds ``(low, high)`` of a Box action space, ``(None, None)`` for any other space."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None, None
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def clip_to_box(actions: np.ndarray, low, high) -> tuple[np.ndarray, np.ndarray]:
    """``actions (B, act_dim)`` clipped to the box (what every public evaluation loop steps), and each action's
    largest excess beyond it in units of the box's half-width ``(B,)`` (0 inside; a non-finite action: inf)."""
    if low is None:
        return actions, np.zeros(len(actions))
    half = np.maximum((high - low) / 2, 1e-12)
    a = np.asarray(actions, dtype=np.float64)
    excess = np.max(np.maximum(a - high, low - a) / half, axis=-1).clip(min=0.0)
    excess = np.where(np.all(np.isfinite(a), axis=-1), excess, np.inf)
    clipped = np.clip(np.nan_to_num(a, nan=0.0), low, high).astype(np.asarray(actions).dtype, copy=False)
    return clipped, excess


def summarize(episodes: list[dict], env_id: str, ref_min: float | None, ref_max: float | None) -> dict:
    """Per-episode records -> the ``eval/...`` metrics of one model."""
    from platform.datasets.scores import normalized_score
    from platform.envs import PUSHT_IDS

    returns = np.array([e["return"] for e in episodes], dtype=np.float64)
    best = np.array([e["max_reward"] for e in episodes], dtype=np.float64)
    m = {
        "eval/return_mean": float(returns.mean()),
        "eval/return_std": float(returns.std()),
        "eval/success_rate": float(np.mean([e["success"] for e in episodes])),
        "eval/max_reward_mean": float(best.mean()),
        "eval/length_mean": float(np.mean([e["length"] for e in episodes])),
        "eval/episodes": len(episodes),
        # wall time of one act call (all of an actor's envs at once, on its CPU share): the sampling cost
        "eval/act_ms": float(np.mean([e.get("act_ms", float("nan")) for e in episodes])),
        # health: the policy's actions beyond the env's box (before the clip at the env), share and largest excess
        "eval/action_out_of_box": (sum(e.get("actions_out", 0) for e in episodes)
                                   / max(1, sum(e.get("actions", 0) for e in episodes))),
        "eval/action_excess_max": float(max((e.get("excess_max", 0.0) for e in episodes), default=0.0)),
    }
    if env_id in PUSHT_IDS:
        m["eval/normalized_score"] = 100.0 * float(best.mean())
    elif ref_min is not None and ref_max is not None and ref_max != ref_min:
        m["eval/normalized_score"] = float(normalized_score(env_id, returns.mean(), ref=(ref_min, ref_max)))
    else:
        m["eval/normalized_score"] = float("nan")
    m.update(toy_metrics(episodes, env_id))
    return m


def toy_metrics(episodes: list[dict], env_id: str) -> dict:
    """The toy tasks' mode metrics of the episodes' first actions (``platform/envs/toy_tasks.py``); {} elsewhere."""
    from platform.envs.toy_tasks import ENV_TASKS, actions_sample, mode_metrics

    task = ENV_TASKS.get(env_id)
    if task is None or not episodes or any(e.get("first_obs") is None for e in episodes):
        return {}
    actions = np.array([e["first_action"] for e in episodes], dtype=np.float64)
    obs = np.array([e["first_obs"] for e in episodes], dtype=np.float64)
    return {**mode_metrics(task, actions, obs), "eval/actions_sample": actions_sample(actions, obs, task)}


@ray.remote(**ROLLOUT_ACTOR_OPTIONS)
class RolloutActor:
    """Holds ``n_envs`` environments and a CPU copy of the policy."""

    def __init__(self, env_id: str, n_envs: int, algorithm: str, config: dict, env_spec: dict):
        import algorithms
        from platform.envs import make_env

        torch.set_num_threads(1)
        self.algo = algorithms.build(algorithm, config, env_spec, "cpu")
        self.env_fns = [lambda: make_env(env_id) for _ in range(n_envs)]

    def evaluate(self, state: dict, seeds: list[int]) -> list[dict]:
        self.algo.load_state_dict(state)
        return run_episodes(self.algo, self.env_fns, seeds)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class PendingEvaluation:
    """An evaluation in flight on the rollout actors: one list of episode-chunk futures per evaluated model."""

    def __init__(self, futures: list[list], env_id: str, ref_min, ref_max):
        self.futures, self.env_id, self.ref_min, self.ref_max = futures, env_id, ref_min, ref_max

    def result(self) -> list[dict]:
        out = []
        for fs in self.futures:
            episodes = [e for chunk in ray.get(fs) for e in chunk]
            episodes.sort(key=lambda e: e["seed"])
            out.append(summarize(episodes, self.env_id, self.ref_min, self.ref_max))
        return out


class EvalPool:
    """A pool of ``n_actors`` rollout actors; evaluates several models' weights in parallel."""

    def __init__(self, env_id: str, algorithm: str, config: dict, env_spec: dict, *, n_actors: int,
                 envs_per_actor: int, num_cpus: float = 0.5, resources: dict | None = None,
                 ref_min: float | None = None, ref_max: float | None = None):
        self.env_id, self.ref_min, self.ref_max = env_id, ref_min, ref_max
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # Train workers live in a placement group that captures child actors by default; rollout
        # actors must escape it (its bundle is the worker's own CPU) to be placed anywhere in the cluster.
        opts = dict(num_cpus=num_cpus, scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        if resources:
            opts["resources"] = dict(resources)
        self.actors = [RolloutActor.options(**opts).remote(env_id, envs_per_actor, algorithm, config, env_spec)
                       for _ in range(n_actors)]
        # Asked now, read later: the actors start (imports, env construction) while training goes on.
        self._node_refs = [a.node_id.remote() for a in self.actors]

    def evaluate(self, states: list[dict], n_episodes: int, first_seed: int) -> list[dict]:
        """Evaluate each state dict on episodes ``first_seed .. first_seed + n_episodes - 1``.

        Returns one ``eval/...`` metrics dict per state.  Work is spread over all actors.
        """
        return self.submit(states, n_episodes, first_seed).result()

    def submit(self, states: list[dict], n_episodes: int, first_seed: int) -> "PendingEvaluation":
        """Start the evaluation and return at once; the weights are copied into Ray's object store here, so
        training may go on changing them.  ``.result()`` waits for the metrics (the same as ``evaluate``'s)."""
        seeds = list(range(first_seed, first_seed + n_episodes))
        per_actor = math.ceil(n_episodes / len(self.actors))
        futures = []
        for state in states:
            ref = ray.put(to_cpu(state))
            futures.append([a.evaluate.remote(ref, seeds[i * per_actor:(i + 1) * per_actor])
                            for i, a in enumerate(self.actors) if seeds[i * per_actor:(i + 1) * per_actor]])
        return PendingEvaluation(futures, self.env_id, self.ref_min, self.ref_max)

    def node_ids(self) -> list[str]:
        """The nodes the actors run on (waits for them to have started)."""
        return ray.get(self._node_refs)

    def shutdown(self):
        for a in self.actors:
            ray.kill(a)
        self.actors = []
