"""One contract test over every registered algorithm (algorithms/common.py's ``Algorithm``).

Each algorithm, built the one way the platform builds it (``algorithms.build``) at a tiny size: it
subclasses ``Algorithm``; ``update`` returns finite ``train/`` floats; ``act`` has the shapes its
``data_kind`` promises and stays inside the action bounds; ``state_dict`` and ``policy_state_dict`` hold
plain tensors only (``torch.load(weights_only=True)`` reads them) and a fresh instance loaded from either
acts identically; two instances built and trained from the same seed give identical metrics and weights.
"""
import io

import numpy as np
import pytest
import torch

import algorithms
from algorithms import EnvSpec
from algorithms.common import Algorithm

torch.set_num_threads(1)

# Ranges that are not [-1, 1], so that every normalization is exercised.
SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=(-2.0, -1.0), act_high=(2.0, 1.0), obs_low=(-3.0, -6.0, -20.0),
               obs_high=(3.0, 2.0, 30.0), act_min=(-1.8, -0.9), act_max=(1.9, 1.0))
# Each algorithm's small configuration, declared by its class (``Algorithm.tiny_config``): a new algorithm needs no
# edit here (tests/test_gpu_ready.py reads the same table).
TINY = {name: algorithms.get(name)[1].tiny_config for name in algorithms.names()}


class Data:
    """A tiny offline dataset in the platform's ``OfflineDataset`` fields (episodes of 16 steps)."""

    name = "contract-tiny"
    all_actions = None  # OfflineDataset's: the source's actions beyond the training rows (Push-T)

    def __init__(self, n=128, seed=0):
        g = np.random.default_rng(seed)
        self.observations = g.uniform(SPEC.obs_low, SPEC.obs_high, size=(n, 3)).astype(np.float32)
        self.actions = g.uniform(SPEC.act_min, SPEC.act_max, size=(n, 2)).astype(np.float32)
        self.next_observations = np.roll(self.observations, -1, axis=0)
        self.rewards = (-(self.actions ** 2).sum(1) + self.observations[:, 0]).astype(np.float32)
        self.episode_ends = np.arange(16, n + 1, 16, dtype=np.int64)
        self.terminals = np.zeros(n, dtype=np.float32)
        self.terminals[self.episode_ends - 1] = 1.0


DATA = Data()


def batch(algo, n=32, seed=0) -> dict:
    """A batch of the kind ``algo.data_kind`` names, drawn from DATA."""
    idx = torch.as_tensor(np.random.default_rng(seed).integers(0, 100, n))
    t = lambda x: torch.as_tensor(x)  # noqa: E731
    if algo.data_kind == "transitions":
        return {k: t(getattr(DATA, k))[idx] for k in
                ("observations", "actions", "rewards", "next_observations", "terminals")}
    assert algo.data_kind == "sequences"
    span = torch.arange(algo.pred_horizon)
    return {"obs": t(DATA.observations)[idx[:, None] + span[:algo.obs_horizon]],
            "action": t(DATA.actions)[idx[:, None] + span]}


def observations(algo, n=5) -> torch.Tensor:
    """``(n, 1, obs_dim)`` for transitions, ``(n, To, obs_dim)`` for sequences."""
    horizon = 1 if algo.data_kind == "transitions" else algo.obs_horizon
    return torch.as_tensor(DATA.observations[: n * horizon]).reshape(n, horizon, 3)


def make(name, seed=0):
    torch.manual_seed(seed)
    algo = algorithms.build(name, algorithms.get(name)[1].tiny_config, SPEC)
    algo.fit_dataset(DATA)
    return algo


def tensors(d) -> list[torch.Tensor]:
    """Every tensor in a nested state dict, in order."""
    return [v for v in (d.values() if isinstance(d, dict) else d) for v in
            (tensors(v) if isinstance(v, (dict, list, tuple)) else [v]) if torch.is_tensor(v)]


def act(algo, obs, seed=123):
    torch.manual_seed(seed)  # stochastic policies draw from torch's global generator
    return algo.act(obs)


def test_every_registered_algorithm_has_a_tiny_config():
    assert sorted(TINY) == algorithms.names()


@pytest.mark.parametrize("name", algorithms.names())
def test_contract(name):
    check_contract(name)


def check_contract(name):
    """The contract checks of one registered algorithm (also run on tests/test_add_algorithm.py's example)."""
    algo = make(name)
    assert isinstance(algo, Algorithm) and type(algo) is algorithms.get(name)[1]
    assert algo.data_kind in ("transitions", "sequences")

    for step in range(2):
        metrics = algo.update(batch(algo, seed=step))
        # 0-d tensors (never read on the host inside update: no per-step sync) or host-side floats (the lr)
        assert metrics and all(k.startswith("train/") and (type(v) is float or torch.is_tensor(v) and v.dim() == 0)
                               and np.isfinite(float(v)) for k, v in metrics.items()), metrics
        assert any(torch.is_tensor(v) for v in metrics.values())

    obs = observations(algo)
    out = act(algo, obs)
    ta = 1 if algo.data_kind == "transitions" else algo.action_horizon
    assert out.shape == (5, ta, 2) and out.dtype == torch.float32 and torch.isfinite(out).all()
    low, high = torch.tensor(SPEC.act_low), torch.tensor(SPEC.act_high)
    # in the box; an algorithm whose sampler leaves its last step unclipped (acts_in_box False): within 10% of
    # the half-width (the rollout clips at the env and counts what is beyond 1%)
    tol = 1e-5 if algo.acts_in_box else 0.1 * (high - low) / 2
    assert ((out >= low - tol) & (out <= high + tol)).all(), out

    for state in (algo.state_dict(), algo.policy_state_dict()):
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)  # plain tensors and numbers only: no pickled objects
        other = make(name, seed=7)
        other.load_state_dict(loaded)
        assert torch.equal(act(other, obs), out)


@pytest.mark.parametrize("name", algorithms.names())
def test_seeded_determinism(name):
    check_seeded_determinism(name)


def check_seeded_determinism(name):
    """Same seed, same calls -> same metrics and weights (the platform keeps one RNG state per seed, so
    seeds trained side by side in one worker do not draw from each other's stream)."""
    def run(seed):
        algo = make(name, seed=seed)
        return algo, [algo.update(batch(algo, seed=step)) for step in range(2)]

    (a, ma), (b, mb) = run(3), run(3)
    assert [{k: float(v) for k, v in m.items()} for m in ma] == [{k: float(v) for k, v in m.items()} for m in mb]
    sa, sb = a.state_dict(), b.state_dict()
    ta, tb = tensors(sa), tensors(sb)
    assert len(ta) == len(tb) > 0 and all(torch.equal(x, y) for x, y in zip(ta, tb))
    # and a different seed is a different model
    c, _ = run(4)
    assert not all(torch.equal(x, y) for x, y in zip(tensors(c.state_dict()), ta))


@pytest.mark.parametrize("name", ["dql", "bet"])  # draw from torch's RNG in update (sampling, k-means)
def test_seed_run_is_independent_of_the_seeds_beside_it(name):
    """The train loop steps a worker's seeds in turn: seed 0 beside seed 1 ends where seed 0 alone does."""
    from platform.datasets import OfflineDataset
    from platform.spec import SweepSpec
    from platform.training import SeedRun

    spec = SweepSpec(name="contract", algorithm=name, dataset="contract-tiny")
    config = algorithms.build_config(name, TINY[name])
    data = OfflineDataset(observations=DATA.observations, actions=DATA.actions, rewards=DATA.rewards,
                          next_observations=DATA.next_observations, terminals=DATA.terminals,
                          timeouts=np.zeros_like(DATA.terminals), episode_ends=DATA.episode_ends,
                          env_id="none", name="contract-tiny", act_low=SPEC.act_low, act_high=SPEC.act_high,
                          ref_min_score=None, ref_max_score=None)  # no env, no reference: never evaluated
    cpu = torch.device("cpu")
    alone = SeedRun(0, spec, config, SPEC, data, cpu)
    pair = [SeedRun(s, spec, config, SPEC, data, cpu) for s in (0, 1)]
    for step in range(3):
        alone.step(16, step)
        for run in pair:
            run.step(16, step)
    wa, wp = tensors(alone.algo.state_dict()), tensors(pair[0].algo.state_dict())
    assert len(wa) == len(wp) > 0 and all(torch.equal(x, y) for x, y in zip(wa, wp))
    assert not all(torch.equal(x, y) for x, y in zip(wp, tensors(pair[1].algo.state_dict())))


# every compilable algorithm, in each variant its class names (``Algorithm.compile_variants``: EDP's backbones)
COMPILABLE = [(n, o) for n in algorithms.names() if algorithms.get(n)[1].compile_modules
              for o in algorithms.get(n)[1].compile_variants]


@pytest.mark.parametrize("name,overrides", COMPILABLE, ids=["-".join([n, *map(str, o.values())]) for n, o in COMPILABLE])
def test_compiled_update_matches_eager(name, overrides):
    """``train.compile`` (``algo.compile()``) trains like the eager algorithm: same metrics and weights after a few
    steps up to fused kernels' round-off, from the same seed (a compiled graph that cannot backward as the step
    does, e.g. both critic heads in one graph with separate Q1 / Q2 backwards, fails here).  Dynamo compiled
    graphs for the update (an inert ``compile()`` passes the comparison, not this), and the state dict keeps its
    keys (checkpoints of compiled and eager runs load into each other: no ``_orig_mod.`` prefix)."""
    from torch._dynamo.utils import counters

    def run(compiled: bool):
        torch.manual_seed(0)
        algo = algorithms.build(name, {**TINY[name], **overrides}, SPEC)
        algo.fit_dataset(DATA)
        if compiled:
            algo.compile()
        return algo, [{k: float(v) for k, v in algo.update(batch(algo, seed=step)).items()} for step in range(3)]

    eager, me = run(False)
    torch._dynamo.reset()  # no graph of an earlier test is reused: this algorithm's compile must make its own
    counters.clear()
    comp, mc = run(True)
    assert counters["stats"]["unique_graphs"] > 0, dict(counters["stats"])   # graphs were compiled for the update
    for a, b in zip(me, mc):
        assert a.keys() == b.keys() and all(np.isclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a), (a, b)
    te, tc = tensors(eager.state_dict()), tensors(comp.state_dict())
    assert len(te) == len(tc) > 0
    assert max(float((x.float() - y.float()).abs().max()) for x, y in zip(te, tc)) < 1e-4
    assert keys(comp.state_dict()) == keys(eager.state_dict())


def keys(d, prefix="") -> list[str]:
    """Every key path of a nested state dict (``actor.net.0.weight``, ``actor_opt.state.0.exp_avg``)."""
    out = []
    for k, v in d.items():
        out += keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out
