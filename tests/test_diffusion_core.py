"""The diffusion core (algorithms/diffusion): schedules, DDPM / DDIM samplers, networks.

The samplers are checked against a 1-D Gaussian mixture whose optimal eps-predictor is known in
closed form (its score), so any error is the sampler's.
"""
import math

import pytest
import torch

from algorithms.diffusion import (DiffusionSchedule, FastMish, NoiseMLP, SinusoidalPosEmb, clip_to, ddim_sample,
                                  ddim_timesteps, ddpm_loss, ddpm_sample, make_betas)

torch.set_num_threads(1)

MEANS, STD, WEIGHTS = torch.tensor([-0.6, 0.5]), 0.1, torch.tensor([0.3, 0.7])


def mixture_eps(x, k, schedule):
    """Optimal eps for data ~ sum_m w_m N(mu_m, STD^2): ``-sqrt(1 - abar_k) * score_k(x)``; x (B, 1), k (B,)."""
    abar = schedule.alphas_cumprod[k].unsqueeze(-1)                 # (B, 1)
    m = abar.sqrt() * MEANS                                         # (B, M)
    var = abar * STD**2 + (1 - abar)                                # (B, 1)
    post = torch.softmax(torch.log(WEIGHTS) - 0.5 * (x - m) ** 2 / var, dim=-1)
    score = (post * (m - x) / var).sum(-1, keepdim=True)
    return -(1 - abar).sqrt() * score


def mixture_stats(x):
    right = x > 0
    return (right.float().mean().item(), x[right].mean().item(), x[~right].mean().item(),
            x[right].std().item(), x[~right].std().item())


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("kind", ["linear", "cosine", "vp"])
@pytest.mark.parametrize("K", [1, 5, 20, 100])
def test_abar_in_unit_interval_and_decreasing(kind, K):
    s = DiffusionSchedule(K, kind)
    abar = s.alphas_cumprod
    assert abar.shape == (K,) and abar.dtype == torch.float32
    assert torch.all(abar > 0) and torch.all(abar < 1)
    assert torch.all(abar[1:] < abar[:-1])
    assert torch.all(s.betas > 0) and torch.all(s.betas <= 0.999)
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], abar[:-1])
    assert s.alphas_cumprod_prev[0].item() == 1.0 and s.posterior_variance[0].item() == 0.0


def test_schedule_values_match_the_papers_formulas():
    # Diffusion-QL's VP schedule at K = 5 (vp_beta_schedule): beta_t = 1 - exp(-0.1/5 - 0.5*9.9*(2t-1)/25)
    vp = make_betas("vp", 5)
    expected = [1 - math.exp(-0.1 / 5 - 0.5 * 9.9 * (2 * t - 1) / 25) for t in range(1, 6)]
    torch.testing.assert_close(vp, torch.tensor(expected))
    torch.testing.assert_close(make_betas("linear", 3), torch.tensor([1e-4, 0.01005, 2e-2]))
    # squared cosine (diffusers' squaredcos_cap_v2): first beta and the 0.999 cap at the end
    cos = make_betas("cosine", 100)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert cos[0].item() == pytest.approx(1 - f(0.01) / f(0.0), rel=1e-5)
    assert cos[-1].item() == pytest.approx(0.999)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic", 5)


def test_schedule_buffers_follow_the_module_and_stay_out_of_state_dict():
    s = DiffusionSchedule(5).to(torch.float64)
    assert s.alphas_cumprod.dtype == torch.float64
    assert s.state_dict() == {}


def test_q_sample_moments():
    torch.manual_seed(0)
    s = DiffusionSchedule(10, "cosine")
    x0 = torch.tensor([0.7, -1.3])
    n = 200_000
    for k in (0, 4, 9):
        kk = torch.full((n,), k)
        xk = s.q_sample(x0.expand(n, 2), kk, torch.randn(n, 2))
        abar = s.alphas_cumprod[k]
        torch.testing.assert_close(xk.mean(0), abar.sqrt() * x0, atol=0.01, rtol=0)
        torch.testing.assert_close(xk.var(0), (1 - abar).expand(2), atol=0.01, rtol=0.02)


@pytest.mark.parametrize("kind", ["linear", "cosine", "vp"])
def test_x0_from_eps_inverts_q_sample(kind):
    torch.manual_seed(0)
    s = DiffusionSchedule(20, kind)
    x0, eps = torch.randn(64, 3, 2), torch.randn(64, 3, 2)
    k = torch.randint(0, 20, (64,))
    err = (s.x0_from_eps(s.q_sample(x0, k, eps), k, eps) - x0).abs()
    # float32 round-off, amplified by 1/sqrt(abar_k) at the noisiest steps (abar ~ 1e-5 for cosine's last)
    tol = 1e-5 * s.sqrt_recip_alphas_cumprod[k].reshape(-1, 1, 1)
    assert torch.all(err <= tol), f"max error {err.max().item():.2e}"


def test_q_posterior_is_the_gaussian_posterior():
    """Mean/variance of q(x_{k-1} | x_k, x0) from the closed form of two Gaussians."""
    s = DiffusionSchedule(5, "vp")
    x0, xk, k = torch.tensor([[0.3]]), torch.tensor([[-0.8]]), torch.tensor([3])
    a, abar, abar_prev = s.alphas[3], s.alphas_cumprod[3], s.alphas_cumprod_prev[3]
    # x_{k-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev); x_k | x_{k-1} ~ N(sqrt(a) x_{k-1}, 1 - a)
    prec = 1 / (1 - abar_prev) + a / (1 - a)
    mean = (abar_prev.sqrt() * x0 / (1 - abar_prev) + a.sqrt() * xk / (1 - a)) / prec
    got_mean, got_logvar = s.q_posterior(x0, xk, k)
    torch.testing.assert_close(got_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_logvar.exp().reshape(()), 1 / prec, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- samplers


def test_ddpm_with_the_optimal_eps_recovers_the_mixture():
    s = DiffusionSchedule(100, "cosine")
    g = torch.Generator().manual_seed(0)
    x = ddpm_sample(lambda x, k: mixture_eps(x, k, s), s, (20_000, 1), generator=g)
    w, m_right, m_left, sd_right, sd_left = mixture_stats(x)
    assert w == pytest.approx(0.7, abs=0.02)
    assert m_right == pytest.approx(0.5, abs=0.02) and m_left == pytest.approx(-0.6, abs=0.02)
    assert sd_right == pytest.approx(STD, abs=0.02) and sd_left == pytest.approx(STD, abs=0.02)


def test_ddpm_at_diffusion_ql_settings_finds_both_modes():
    """K = 5 VP is a coarse sampler even with the exact eps (it shrinks each mode toward the middle),
    but the mode weights survive, which is what Diffusion-QL needs from it."""
    s = DiffusionSchedule(5, "vp")
    g = torch.Generator().manual_seed(1)
    x = ddpm_sample(lambda x, k: mixture_eps(x, k, s), s, (20_000, 1), generator=g, clip=1.0)
    w, m_right, m_left, _, _ = mixture_stats(x)
    assert w == pytest.approx(0.7, abs=0.05)
    assert 0.3 < m_right < 0.55 and -0.65 < m_left < -0.25
    assert x.abs().max() <= 1.0


def test_ddim_with_the_optimal_eps_recovers_mixture_moments():
    s = DiffusionSchedule(100, "cosine")
    g = torch.Generator().manual_seed(0)
    x = ddim_sample(lambda x, k: mixture_eps(x, k, s), s, (20_000, 1), 50, generator=g)
    w, m_right, m_left, sd_right, sd_left = mixture_stats(x)
    mean = (WEIGHTS * MEANS).sum().item()
    var = STD**2 + (WEIGHTS * MEANS**2).sum().item() - mean**2
    assert x.mean().item() == pytest.approx(mean, abs=0.02)
    assert x.var().item() == pytest.approx(var, abs=0.02)
    assert w == pytest.approx(0.7, abs=0.02)
    assert m_right == pytest.approx(0.5, abs=0.02) and m_left == pytest.approx(-0.6, abs=0.02)
    assert sd_right == pytest.approx(STD, abs=0.02) and sd_left == pytest.approx(STD, abs=0.02)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    s = DiffusionSchedule(100, "cosine")
    fn = lambda x, k: mixture_eps(x, k, s)  # noqa: E731
    x_T = torch.randn(256, 1)
    a = ddim_sample(fn, s, (256, 1), 10, x_T=x_T)
    b = ddim_sample(fn, s, (256, 1), 10, x_T=x_T)
    c = ddim_sample(fn, s, (256, 1), 10, eta=1.0, x_T=x_T)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert ddim_timesteps(100, 10) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
    assert ddim_timesteps(5, 16) == [4, 3, 2, 1, 0]


# diffusers 0.11.1 DDIMScheduler.set_timesteps(n) with num_train_timesteps=K, steps_offset=0: step_ratio = K // n,
# timesteps = (arange(n) * step_ratio)[::-1], written out by hand
LEADING = {(100, 8): [84, 72, 60, 48, 36, 24, 12, 0],
           (100, 16): [90, 84, 78, 72, 66, 60, 54, 48, 42, 36, 30, 24, 18, 12, 6, 0],
           (1000, 10): [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]}


@pytest.mark.parametrize("K,n", sorted(LEADING))
def test_ddim_leading_timesteps_are_diffusers_and_the_sampler_runs_on_them(K, n):
    assert ddim_timesteps(K, n, "leading") == LEADING[K, n]
    s = DiffusionSchedule(K, "cosine")
    seen = []

    def fn(x, k):
        seen.append(int(k[0]))
        return mixture_eps(x, k, s)

    x = ddim_sample(fn, s, (4000, 1), n, clip=1.0, generator=torch.Generator().manual_seed(0), spacing="leading")
    assert seen == LEADING[K, n]  # one network call per timestep, in this order
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    w, m_right, m_left, _, _ = mixture_stats(x)  # 8-16 steps pull the modes in a little (measured: by <= 0.051)
    assert w == pytest.approx(0.7, abs=0.05)
    assert m_right == pytest.approx(0.5, abs=0.08) and m_left == pytest.approx(-0.6, abs=0.08)


def test_ddim_spacings_differ_and_unknown_ones_are_refused():
    assert ddim_timesteps(100, 8, "linspace") == [99, 85, 71, 57, 42, 28, 14, 0]
    assert ddim_timesteps(100, 100, "leading") == ddim_timesteps(100, 100, "linspace") == list(range(99, -1, -1))
    assert ddim_timesteps(5, 16, "leading") == [4, 3, 2, 1, 0]  # n clamped to K
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(100, 8, "trailing")


def test_ddpm_grad_true_reaches_the_network_through_every_step():
    """A per-step scale on the eps net: with grad=True every step's scale gets a gradient."""
    K = 5
    s = DiffusionSchedule(K, "vp")
    net = NoiseMLP(obs_dim=3, act_dim=2, hidden=32)
    scale = torch.nn.Parameter(torch.ones(K))
    obs = torch.randn(16, 3)
    inputs = []

    def denoise(x, k):
        inputs.append(x)
        return net(x, k, obs) * scale[k].unsqueeze(-1)

    torch.manual_seed(0)
    out = ddpm_sample(denoise, s, (16, 2), grad=True)
    assert out.requires_grad and len(inputs) == K
    grads = torch.autograd.grad(out.pow(2).sum(), [scale, *net.parameters()])
    assert torch.all(grads[0] != 0), f"some step is cut from the graph: {grads[0]}"
    assert all(g.abs().sum() > 0 for g in grads[1:])
    assert all(x.requires_grad for x in inputs[1:])  # every step after x_K depends on the net

    inputs.clear()
    torch.manual_seed(0)
    out_nograd = ddpm_sample(denoise, s, (16, 2), grad=False)
    assert not out_nograd.requires_grad and not any(x.requires_grad for x in inputs)
    torch.testing.assert_close(out_nograd, out.detach())  # same noise, same chain


def test_ddpm_clips_x0_to_per_dimension_bounds():
    s = DiffusionSchedule(5, "vp")
    low, high = torch.tensor([-0.2, 0.0]), torch.tensor([0.1, 3.0])
    x = ddpm_sample(lambda x, k: -10 * torch.ones_like(x), s, (100, 2), clip=(low, high))  # pushes x0 to +inf
    assert torch.all(x >= low) and torch.all(x <= high)
    torch.testing.assert_close(x, high.expand(100, 2))
    torch.testing.assert_close(clip_to(torch.tensor([-3.0, 3.0]), 1.0), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(clip_to(torch.tensor([-3.0, 3.0]), (-0.5, 2.0)), torch.tensor([-0.5, 2.0]))


def test_ddpm_generator_makes_samples_reproducible():
    s = DiffusionSchedule(5, "vp")
    fn = lambda x, k: mixture_eps(x, k, s)  # noqa: E731
    a = ddpm_sample(fn, s, (64, 1), generator=torch.Generator().manual_seed(3))
    b = ddpm_sample(fn, s, (64, 1), generator=torch.Generator().manual_seed(3))
    c = ddpm_sample(fn, s, (64, 1), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddpm_loss_is_the_eps_mse_and_zero_for_the_optimal_predictor_of_a_point_mass():
    s = DiffusionSchedule(5, "vp")
    x0 = torch.randn(32, 2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    loss = ddpm_loss(lambda x, k: torch.zeros_like(x), s, x0, generator=g1)
    k = torch.randint(0, 5, (32,), generator=g2)
    noise = torch.randn(32, 2, generator=g2)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)
    # For data = the single point x0, the optimal eps is (x_k - sqrt(abar) x0) / sqrt(1 - abar): zero loss.
    def exact(x, k):
        return (x - s.sqrt_alphas_cumprod[k, None] * x0) / s.sqrt_one_minus_alphas_cumprod[k, None]

    assert ddpm_loss(exact, s, x0).item() < 1e-9


# ----------------------------------------------------------------------------- networks


def test_sinusoidal_embedding_matches_diffusion_ql():
    emb = SinusoidalPosEmb(16)(torch.tensor([0, 3]))
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    freqs = torch.exp(torch.arange(8) * (-math.log(10000) / 7))
    torch.testing.assert_close(emb[1], torch.cat([(3 * freqs).sin(), (3 * freqs).cos()]))


def test_noise_mlp_shapes_and_parameter_count():
    net = NoiseMLP(obs_dim=17, act_dim=6)
    assert sum(p.numel() for p in net.parameters()) == 144_438  # the public code's MLP for HalfCheetah
    out = net(torch.randn(5, 6), torch.randint(0, 5, (5,)), torch.randn(5, 17))
    assert out.shape == (5, 6)
    assert {n.split(".")[0] for n, _ in net.named_parameters()} == {"time_mlp", "mid_layer", "final_layer"}


def test_fast_mish_matches_torch_mish_values_and_gradients():
    x = torch.cat([torch.linspace(-120, 120, 4001), torch.randn(1000) * 3]).requires_grad_()
    y = FastMish()(x)
    ref = torch.nn.functional.mish(x)
    torch.testing.assert_close(y, ref, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gref, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(gx).all() and torch.isfinite(y).all()
    xd = (torch.randn(20, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(FastMish(), (xd,))
