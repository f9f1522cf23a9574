"""The EDP equivalence twin (benchmarks/twins_edp.py).

Without JAX: the weight mapping, checked on Flax-shaped parameter trees of numpy arrays against a numpy forward
pass written in the code's layout (``[s, a, t_emb]``, ``[cos, sin]`` sinusoid, ``x @ kernel + bias``), and the
scripted draws.  With ``PUBLIC_EDP`` pointing at a checkout of github.com/sail-sg/edp and JAX installed
(``benchmarks/requirements-twins-edp.txt``): the whole twin, every check within its tolerance.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from algorithms import EnvSpec
from algorithms.edp import EDP, EDPConfig
from benchmarks.twins_edp import flax_to_platform, load_public_weights, scripted_draws

OBS, ACT, HIDDEN, T_DIM = 11, 3, 32, 16


def dense(rng, n_in, n_out):
    return {"kernel": rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32),
            "bias": rng.normal(0, 0.1, n_out).astype(np.float32)}


def flax_trees(seed=0):
    """Param trees shaped as the code's ``DiffusionPolicy``, ``Critic`` and ``Value`` ``init`` returns them."""
    rng = np.random.default_rng(seed)
    policy = {"params": {"base_net": {
        "TimeEmbedding_0": {"Dense_0": dense(rng, T_DIM, 2 * T_DIM), "Dense_1": dense(rng, 2 * T_DIM, T_DIM)},
        "Dense_0": dense(rng, OBS + ACT + T_DIM, HIDDEN), "Dense_1": dense(rng, HIDDEN, HIDDEN),
        "Dense_2": dense(rng, HIDDEN, HIDDEN), "Dense_3": dense(rng, HIDDEN, ACT)}}}

    def mlp(n_in):
        return {"params": {"Dense_0": dense(rng, n_in, HIDDEN), "Dense_1": dense(rng, HIDDEN, HIDDEN),
                           "Dense_2": dense(rng, HIDDEN, HIDDEN), "Dense_3": dense(rng, HIDDEN, 1)}}

    return {"policy": policy, "qf1": mlp(OBS + ACT), "qf2": mlp(OBS + ACT), "vf": mlp(OBS)}


def mish(x):
    return x * np.tanh(np.logaddexp(x, 0.0))


def code_dense_stack(tree, x):
    """The code's MLP: ``Dense_0..Dense_{n-1}``, Mish between."""
    n = len(tree)
    for i in range(n):
        x = x @ tree[f"Dense_{i}"]["kernel"] + tree[f"Dense_{i}"]["bias"]
        if i < n - 1:
            x = mish(x)
    return x


def code_policy(tree, s, a, t):
    """The code's ``PolicyNet`` in numpy: ``[cos, sin]`` at ``10000^(-i/half)``, input ``[s, a, t_emb]``."""
    net = tree["params"]["base_net"]
    half = T_DIM // 2
    args = t[:, None] * np.exp(-np.log(10000.0) * np.arange(half) / half)[None, :]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    emb = code_dense_stack(net["TimeEmbedding_0"], emb)
    return code_dense_stack({k: v for k, v in net.items() if k.startswith("Dense_")},
                            np.concatenate([s, a, emb], axis=-1))


def platform_edp(backbone="iql"):
    return EDP(EDPConfig(backbone=backbone, hidden_dim=HIDDEN, n_timesteps=100),
               EnvSpec(obs_dim=OBS, act_dim=ACT))


def test_weight_mapping_reproduces_the_codes_networks():
    trees, target = flax_trees(0), flax_trees(1)
    algo = platform_edp()
    load_public_weights(algo, trees, target, OBS, ACT)           # strict: every key once, every shape right
    rng = np.random.default_rng(2)
    s, a = rng.normal(size=(64, OBS)).astype(np.float32), rng.normal(size=(64, ACT)).astype(np.float32)
    t = rng.integers(0, 100, 64)
    with torch.no_grad():
        eps = algo.actor(torch.from_numpy(a), torch.from_numpy(t), torch.from_numpy(s)).numpy()
        ema = algo.ema_actor(torch.from_numpy(a), torch.from_numpy(t), torch.from_numpy(s)).numpy()
        q1, q2 = (x.numpy() for x in algo.critic(torch.from_numpy(s), torch.from_numpy(a)))
        qt1, _ = (x.numpy() for x in algo.critic_target(torch.from_numpy(s), torch.from_numpy(a)))
        v = algo.value(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(eps, code_policy(trees["policy"], s, a, t.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(ema, code_policy(target["policy"], s, a, t.astype(np.float64)), atol=1e-5)
    sa = np.concatenate([s, a], axis=-1)
    np.testing.assert_allclose(q1, code_dense_stack(trees["qf1"]["params"], sa), atol=1e-5)
    np.testing.assert_allclose(q2, code_dense_stack(trees["qf2"]["params"], sa), atol=1e-5)
    np.testing.assert_allclose(qt1, code_dense_stack(target["qf1"]["params"], sa), atol=1e-5)
    np.testing.assert_allclose(v, code_dense_stack(trees["vf"]["params"], s), atol=1e-5)


def test_weight_mapping_transposes_and_names():
    sd = flax_to_platform(flax_trees(0), OBS, ACT)
    assert set(sd["actor"]) == set(platform_edp().actor.state_dict())
    assert set(sd["critic"]) == set(platform_edp().critic.state_dict())
    kernel = flax_trees(0)["qf2"]["params"]["Dense_1"]["kernel"]
    assert torch.equal(sd["critic"]["q2_model.2.weight"], torch.from_numpy(kernel.T))
    first = flax_trees(0)["policy"]["params"]["base_net"]["Dense_0"]["kernel"]      # rows [s, a, t_emb]
    w = sd["actor"]["mid_layer.0.weight"]                                            # columns [a, t_emb, s]
    assert torch.equal(w[:, :ACT], torch.from_numpy(first[OBS:OBS + ACT].T))
    assert torch.equal(w[:, ACT + T_DIM:], torch.from_numpy(first[:OBS].T))
    with pytest.raises(ValueError):
        flax_to_platform(flax_trees(0), OBS + 20, ACT)


def test_scripted_draws_hand_out_the_values_in_order_and_refuse_others():
    k, noise = torch.tensor([3, 1]), torch.ones(2, ACT)
    with scripted_draws([("randint", k), ("randn_like", noise)]):
        assert torch.equal(torch.randint(0, 10, (2,)), k)
        assert torch.equal(torch.randn_like(torch.zeros(2, ACT)), noise)
    with pytest.raises(AssertionError, match="scripted"):
        with scripted_draws([("randn", noise)]):
            torch.randn(3, ACT)                                  # wrong shape
    with pytest.raises(AssertionError, match="never made"):
        with scripted_draws([("rand", torch.tensor(0.3))]):
            pass
    assert torch.randn(2).shape == (2,)                          # torch's own functions are back


def _twin_skip_reason() -> str | None:
    path = os.environ.get("PUBLIC_EDP")
    if not path or not os.path.isfile(os.path.join(path, "diffusion", "dql.py")):
        return "PUBLIC_EDP does not point to a checkout of github.com/sail-sg/edp"
    if any(importlib.util.find_spec(m) is None for m in ("jax", "flax", "optax", "distrax", "ml_collections")):
        return "JAX is not installed here (benchmarks/requirements-twins-edp.txt)"
    return None


@pytest.mark.skipif(_twin_skip_reason() is not None, reason=str(_twin_skip_reason()))
def test_edp_twin_every_check_within_tolerance(tmp_path):
    import argparse

    from benchmarks.twins_edp import edp_twin

    result = edp_twin(argparse.Namespace(public_edp=os.environ["PUBLIC_EDP"], out=str(tmp_path), threads=1))
    rows = result["rows"]
    checks = {(r["backbone"], r["check"].split(":")[0]) for r in rows}
    for letter in "abcde":
        assert any(c.startswith(f"({letter})") for _, c in checks), letter
    assert {b for b, _ in checks} == {"policy", "td3", "iql"}
    failed = [f"{r['backbone']} {r['check']}: {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}" for r in rows
              if not r["passed"]]
    assert not failed, "\n".join(failed)
    assert all(r["max_abs_diff"] <= r["tolerance"] for r in rows if "weights after one step" not in r["check"])
    assert (tmp_path / "twins_edp.md").is_file() and (tmp_path / "twins_edp.parquet").is_file()
