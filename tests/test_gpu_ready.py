"""GPU-readiness checks that a CPU machine can make (the `gpu` marker has the ones that need CUDA)."""
import ast
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM_FACTORIES = {"randperm", "randint", "rand", "randn", "randn_like", "rand_like"}


def test_no_seeded_random_call_without_a_device():
    """``torch.randperm(n, generator=g)`` without ``device=`` raises on CUDA ("Expected a 'cpu' device type for
    generator"); every seeded draw in algorithms/ must say where it runs."""
    bad = []
    for name in sorted(os.listdir(os.path.join(ROOT, "algorithms"))) + [
            os.path.join("diffusion", f) for f in sorted(os.listdir(os.path.join(ROOT, "algorithms", "diffusion")))]:
        if not name.endswith(".py"):
            continue
        path = os.path.join(ROOT, "algorithms", name)
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in RANDOM_FACTORIES - {"randn_like", "rand_like"}):
                kws = {k.arg for k in node.keywords}
                if "generator" in kws and "device" not in kws:
                    bad.append(f"algorithms/{name}:{node.lineno}")
    assert not bad, f"seeded random draws without device=: {bad}"


def test_bet_bins_are_the_same_whatever_the_generator_device():
    from algorithms.bet import kmeans

    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    a = kmeans(x, 8, 5, torch.Generator().manual_seed(0))
    b = kmeans(x, 8, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)


def test_resumed_optimizer_keeps_step_counters_on_cpu():
    """Checkpoints are loaded to CPU and Adam moves its state to the parameters: `step` stays a CPU tensor."""
    from platform.checkpoint import load_state, save_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"opt_{os.getpid()}.pt")
    save_state(path, {"opt": opt.state_dict()})
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(load_state(path, "cpu")["opt"])
    os.remove(path)
    steps = [s["step"] for s in fresh.state.values()]
    assert steps and all(t.device.type == "cpu" and float(t) == 1.0 for t in steps)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_algorithm_updates_and_acts_on_cuda():
    import algorithms
    from algorithms import EnvSpec

    spec = EnvSpec(obs_dim=5, act_dim=2)
    for name in algorithms.names():
        algo = algorithms.build(name, {}, spec, "cuda")
        assert algo is not None
