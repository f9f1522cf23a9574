"""Plain-state checkpoints: a directory of ``torch.save``-d tensors/ints plus a JSON config.

The one owner of the layout: ``meta.json`` (algorithm, config, env spec, seeds, step, dataset, env) and
``seed_<s>.pt`` per seed (``{"algo": state_dict, "step": int, "rng": torch RNG state}``).  The train loop
writes it with ``save_seed_state``/``save_meta`` and resumes with ``load_seed_state``; ``load_policy``
rebuilds a trained algorithm from it.

Never a pickled object: everything is loaded back with ``torch.load(weights_only=True)``, and the
algorithm is rebuilt from ``meta.json`` (algorithm name, config, env spec) before loading weights.
Files are written to a temporary name and renamed, so a crash mid-write leaves the old file intact.
"""
from __future__ import annotations

import json
import os
import tempfile


def to_cpu(tree):
    """Recursively move tensors in nested dicts/lists to CPU (for shipping weights to actors)."""
    import torch  # lazy: results/report import this module and should stay torch-free

    if torch.is_tensor(tree):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def atomic_write(path: str, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename the result onto ``path`` (atomic on POSIX)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_state(path: str, state: dict) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(to_cpu(state), tmp))


def load_state(path: str, device="cpu") -> dict:
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def save_json(path: str, data: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)

    atomic_write(path, write)


def load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def seed_state_path(checkpoint_dir: str, seed: int) -> str:
    return os.path.join(checkpoint_dir, f"seed_{seed}.pt")


def save_seed_state(checkpoint_dir: str, seed: int, algo_state: dict, step: int, rng) -> None:
    save_state(seed_state_path(checkpoint_dir, seed), {"algo": algo_state, "step": step, "rng": rng})


def load_seed_state(checkpoint_dir: str, seed: int, device="cpu") -> dict:
    """``{"algo", "step", "rng"}`` of one seed (``rng`` is None in checkpoints older than per-seed streams)."""
    state = load_state(seed_state_path(checkpoint_dir, seed), device)
    return {"algo": state["algo"], "step": int(state["step"]), "rng": state.get("rng")}


def save_meta(checkpoint_dir: str, *, algorithm: str, config: dict, env_spec: dict, seeds: list[int], step: int,
              dataset: str, env: str) -> None:
    save_json(os.path.join(checkpoint_dir, "meta.json"), {
        "algorithm": algorithm, "config": config, "env_spec": env_spec, "seeds": seeds, "step": step,
        "dataset": dataset, "env": env})


def load_meta(checkpoint_dir: str) -> dict:
    return load_json(os.path.join(checkpoint_dir, "meta.json"))


def load_policy(checkpoint_dir: str, seed: int | None = None, device: str = "cpu"):
    """Rebuild a trained algorithm from a checkpoint directory written by ``platform.training``."""
    import algorithms

    meta = load_meta(checkpoint_dir)
    seed = meta["seeds"][0] if seed is None else seed
    algo = algorithms.build(meta["algorithm"], meta["config"], meta["env_spec"], device)
    algo.load_state_dict(load_seed_state(checkpoint_dir, seed, device)["algo"])
    return algo
