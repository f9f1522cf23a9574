"""VectorizedDQL: seed i of a vmapped run equals an ordinary DiffusionQL run of seed i."""
import pytest
import torch

from algorithms import EnvSpec
from algorithms.dql import DiffusionQL, DQLConfig
from algorithms.vectorized import VectorizedDQL, stack_batches

SPEC = EnvSpec(obs_dim=3, act_dim=2)


def batch(seed: int, step: int, n: int = 16) -> dict:
    g = torch.Generator().manual_seed(1000 * seed + step)
    return {"observations": torch.randn(n, 3, generator=g), "actions": torch.rand(n, 2, generator=g) * 2 - 1,
            "rewards": torch.randn(n, generator=g), "next_observations": torch.randn(n, 3, generator=g),
            "terminals": (torch.rand(n, generator=g) < 0.3).float()}


@pytest.mark.parametrize("fused", [True, False])
def test_vmapped_seeds_match_separate_runs(fused):
    # EMA from step 2 every step, so that the EMA actor (and through it the critic target) moves too
    cfg = DQLConfig(n_timesteps=3, hidden_dim=16, step_start_ema=2, update_ema_every=1, fused_critic=fused)
    seeds, steps = [0, 1, 7], 5
    torch.manual_seed(123)
    vec = VectorizedDQL(cfg, SPEC, seeds)
    vec_metrics = [vec.update(stack_batches([batch(s, t) for s in seeds])) for t in range(steps)]
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        ref = DiffusionQL(cfg, SPEC)
        ref_metrics = [ref.update(batch(s, t)) for t in range(steps)]
        got = vec.seed_state_dict(i)
        for m in ("actor", "ema_actor", "critic", "critic_target"):
            want = getattr(ref, m).state_dict()
            for k in want:
                torch.testing.assert_close(got[m][k], want[k], atol=2e-5, rtol=1e-4, msg=f"seed {s} {m}.{k}")
        for t in range(steps):
            for k, v in ref_metrics[t].items():
                assert float(vec_metrics[t][i][k]) == pytest.approx(float(v), rel=1e-3, abs=1e-4), (s, t, k)
    # the seeds really differ (a vmap that broadcast one seed would pass the loop above only by accident)
    a0, a1 = vec.seed_state_dict(0)["actor"], vec.seed_state_dict(1)["actor"]
    assert not torch.allclose(a0["final_layer.weight"], a1["final_layer.weight"])
    # and learning moved the weights
    torch.manual_seed(0)
    fresh = DiffusionQL(cfg, SPEC).actor.state_dict()
    assert not torch.allclose(a0["final_layer.weight"], fresh["final_layer.weight"])


def test_seed_state_round_trip_and_unsupported_options():
    cfg = DQLConfig(n_timesteps=2, hidden_dim=8)
    vec = VectorizedDQL(cfg, SPEC, [3, 4])
    vec.update(stack_batches([batch(3, 0), batch(4, 0)]))
    d = vec.seed_state_dict(1)
    other = VectorizedDQL(cfg, SPEC, [5, 6])
    other.load_seed_state_dict(0, d)
    for k, v in d["critic"].items():
        torch.testing.assert_close(other.seed_state_dict(0)["critic"][k], v)
    assert other.step == 1
    ref = DiffusionQL(cfg, SPEC)
    ref.load_state_dict({k: d[k] for k in ("actor", "ema_actor", "critic", "critic_target")})  # plain format
    with pytest.raises(ValueError, match="max_q_backup"):
        VectorizedDQL(DQLConfig(max_q_backup=True), SPEC, [0])
