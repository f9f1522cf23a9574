"""DPM-Solvers for discrete-time eps-prediction models (Lu et al., 2022a; 2022b).

A diffusion model trained with K (e.g. 1000) steps is sampled in ``n_steps`` (about 15) model calls
on the probability-flow ODE, in log-SNR ``lambda_t = log(alpha_t / sigma_t)`` with ``alpha_t =
sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``.

* ``dpm_solver_eps_sample``: what EDP's code samples with (``diffusion/dpm_solver.py`` and
  ``nets.py`` of sail-sg/edp): DPM-Solver with *noise* prediction, singlestep, order 3
  ("DPM-Solver-fast": orders [3, 3, 3, 3, 2, 1] for 15 calls), time-uniform steps from t = 1 to
  ``t_end`` = 1e-3 (each step's intermediate points uniform in time too), on the discrete schedule's
  continuous-time interpolation (``NoiseScheduleVP('discrete')``: t_n = (n + 1) / K, log alpha piecewise
  linear in t), the network fed the continuous time ``(t - 1/K) K``, and eps clipped so that the implied x0
  stays within the action bounds; the final sample is not clipped.
* ``dpm_solver_sample``: DPM-Solver++(2M) (data prediction, multistep, log-SNR spacing), a named
  alternative (``sampler: dpm_solver_pp``): more accurate on narrow modes at the same cost.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def solver_timesteps(alphas_cumprod: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Decreasing integer timesteps from ``K-1`` to ``0``, uniform in log-SNR (DPM-Solver's "logSNR" skip).

    Uniform-in-time steps put one huge log-SNR jump next to the data and bias narrow modes (measured:
    a mode at 0.5 came out at 0.64 with 15 time-uniform steps on a K=1000 linear schedule, 0.504 log-SNR-uniform).
    At most ``n_steps + 1`` entries (fewer when several targets share a timestep).
    """
    abar = alphas_cumprod.double()
    lam = 0.5 * torch.log(abar) - 0.5 * torch.log1p(-abar)  # decreasing in t
    targets = torch.linspace(float(lam[-1]), float(lam[0]), max(1, n_steps) + 1, dtype=torch.float64,
                             device=lam.device)
    return (lam[None, :] - targets[:, None]).abs().argmin(dim=1).unique_consecutive()


def host_alphas_cumprod(schedule) -> torch.Tensor:
    """The schedule's ``alphas_cumprod`` as a CPU float64 tensor, bit-equal to its float32 buffer.

    Read from ``schedule.host`` (Python floats, rounded through float32 as the buffer is), never from the
    buffer: on a GPU that read would sync with the host.
    """
    return torch.tensor(schedule.host["alphas_cumprod"], dtype=torch.float64).float().double()


def dpm_solver_plan(schedule, n_steps: int) -> dict:
    """DPM-Solver++(2M)'s constants for ``(schedule, n_steps)``, as Python floats: made once, cached on the
    schedule (it depends on K and the schedule's kind alone), so a sampling call never syncs with a device.

    The constants are computed with the same float64 -> float32 torch operations the solver used to run on
    the device at every call, on the CPU, so the samples are the same (bit for bit on the CPU).
    """
    cache = schedule.__dict__.setdefault("_dpm_pp_plans", {})
    if n_steps in cache:
        return cache[n_steps]
    abar = host_alphas_cumprod(schedule)
    ts = solver_timesteps(abar, n_steps).tolist()
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    f32 = lambda v: float(v.float())  # noqa: E731  the float32 scalar the device op used
    plan = {"ts": ts, "x0": {t: (f32(sigma[t]), f32(alpha[t])) for t in ts}, "steps": []}
    h_prev = None
    for i in range(len(ts) - 1):
        s, t = ts[i], ts[i + 1]
        h = (lam[t] - lam[s]).float()
        if h_prev is None:
            c_new, c_prev = None, None  # first step: d = x0
        else:
            r = h_prev / h
            c_new, c_prev = float(1 + 1 / (2 * r)), float(1 / (2 * r))
        plan["steps"].append({"s": s, "t": t, "c_new": c_new, "c_prev": c_prev,
                              "x": f32(sigma[t] / sigma[s]), "d": float(alpha[t].float() * torch.expm1(-h))})
        h_prev = h
    cache[n_steps] = plan
    return plan


def dpm_solver_sample(denoise_fn, schedule, shape, n_steps: int = 15, *, clip=None, generator=None,
                      device=None, x_T: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``shape`` with DPM-Solver++(2M), no gradients.

    ``denoise_fn(x_k: (B, ...), k: (B,) long) -> eps``; ``schedule`` is a ``DiffusionSchedule``
    (only its ``alphas_cumprod`` is used, through ``dpm_solver_plan``: host floats, no device sync);
    ``clip`` is None, a float bound or a ``(low, high)`` pair applied to every x0 prediction.
    Returns the final x0 prediction, shape ``shape``.
    """
    device = device or schedule.alphas_cumprod.device
    plan = dpm_solver_plan(schedule, n_steps)
    with torch.no_grad():
        x = torch.randn(shape, device=device, generator=generator) if x_T is None else x_T
        batch = shape[0]

        def x0_of(x, t):
            k = torch.full((batch,), t, device=device, dtype=torch.long)
            eps = denoise_fn(x, k)
            sigma_t, alpha_t = plan["x0"][t]
            return _clip((x - sigma_t * eps) / alpha_t, clip)

        x0_prev = None
        for st in plan["steps"]:
            x0 = x0_of(x, st["s"])
            d = x0 if st["c_new"] is None else st["c_new"] * x0 - st["c_prev"] * x0_prev
            x = st["x"] * x - st["d"] * d
            x0_prev = x0
        return x0_of(x, plan["ts"][-1])


def _clip(x, clip):
    if clip is None:
        return x
    if isinstance(clip, (int, float)):
        return x.clamp(-clip, clip)
    low, high = clip
    return torch.maximum(torch.minimum(x, high), low)


# ----------------------------------------------------------------------------- noise-prediction DPM-Solver (EDP's)


def _interp(x: float, xp: np.ndarray, fp: np.ndarray) -> float:
    """Piecewise-linear ``f(x)`` through ``(xp, fp)`` (``xp`` increasing), extrapolated linearly at both ends."""
    i = int(np.clip(np.searchsorted(xp, x), 1, len(xp) - 1))
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return float(f0 + (f1 - f0) * (x - x0) / (x1 - x0))


def singlestep_orders(n_steps: int, order: int = 3) -> list[int]:
    """The orders of the outer steps of singlestep DPM-Solver for ``n_steps`` model calls (their sum)."""
    if order == 3:
        k = n_steps // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[n_steps % 3]
        return [3] * (k - 1 - (n_steps % 3 == 0)) + tail
    if order == 2:
        return [2] * (n_steps // 2) + [1] * (n_steps % 2)
    if order == 1:
        return [1] * n_steps
    raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order}")


def dpm_solver_eps_plan(alphas_cumprod, n_steps: int = 15, order: int = 3, t_end: float = 1e-3) -> list[dict]:
    """Host-side plan of singlestep noise-prediction DPM-Solver: one dict per outer step.

    ``t_end`` is raised to the schedule's first time 1/K when below it (K < 1000 with the code's 1e-3).

    Each step: ``order``, and for its times ``s, s1, s2, t`` (those used by its order) the continuous
    time, ``log_alpha``, ``sigma``, ``lambda``, the network's time input ``t_in = (t - 1/K) K`` and
    the discrete index used for eps clipping.  All Python floats: sampling never syncs with a device.
    """
    abar = np.asarray(torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu(), dtype=np.float64)
    n = len(abar)
    if n < 2:
        raise ValueError("DPM-Solver needs a schedule of at least 2 steps")
    t_grid, log_alpha_grid = np.linspace(0.0, 1.0, n + 1)[1:], 0.5 * np.log(abar)

    def point(t: float) -> dict:
        la = _interp(t, t_grid, log_alpha_grid)
        sigma = math.sqrt(-math.expm1(2 * la))
        t_in = (t - 1.0 / n) * n
        return {"t": t, "log_alpha": la, "sigma": sigma, "lam": la - math.log(sigma), "t_in": t_in,
                "index": min(n - 1, max(0, int(t_in)))}  # int() truncates toward zero, as the code's cast

    def at_lambda(lam: float) -> dict:  # inverse of lambda(t)
        la = -0.5 * float(np.logaddexp(0.0, -2.0 * lam))
        return point(_interp(la, log_alpha_grid[::-1].copy(), t_grid[::-1].copy()))

    orders = singlestep_orders(n_steps, order)
    # t_end below the first grid time 1/K extrapolates log alpha past 0 (sigma undefined: the code's K < 1000
    # with t_end 1e-3 yields NaN); stop at the first grid time instead (= t_end at K = 1000)
    t_end = max(t_end, 1.0 / n)
    grid = np.linspace(1.0, t_end, n_steps + 1)                   # time-uniform
    outer = grid[np.cumsum([0] + orders)]
    plan = []
    for o, s_t, t_t in zip(orders, outer[:-1], outer[1:]):
        s, t = point(float(s_t)), point(float(t_t))
        h = t["lam"] - s["lam"]
        step = {"order": o, "h": h, "s": s, "t": t}
        # the intermediate points split the step uniformly in *time* (the code's r_i = (lambda(t_i) - lambda_s) / h
        # over linspace(s, t, order + 1)), not at r1 = 1/3, 2/3 (or 1/2) of its log-SNR
        inner = [point(float(u))["lam"] for u in np.linspace(float(s_t), float(t_t), o + 1)]
        if o >= 2:
            r1 = (inner[1] - inner[0]) / h
            step["s1"], step["r1"] = at_lambda(s["lam"] + r1 * h), r1
        if o == 3:
            r2 = (inner[2] - inner[0]) / h
            step["s2"], step["r2"] = at_lambda(s["lam"] + r2 * h), r2
        plan.append(step)
    return plan


def dpm_solver_eps_sample(denoise_fn, schedule, shape, n_steps: int = 15, *, order: int = 3, t_end: float = 1e-3,
                          clip=None, generator=None, device=None, x_T: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``shape`` with EDP's DPM-Solver (noise prediction, singlestep, time-uniform), no gradients.

    ``denoise_fn(x: (B, ...), t_in: (B,) float) -> eps`` (the network takes a continuous step);
    ``clip``: None, a float bound or a ``(low, high)`` pair: eps is clipped so that the implied
    ``x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps`` stays inside it (at the discrete step below t).
    Returns the sample at ``t_end``, not clipped (as the code).
    """
    device = device or schedule.alphas_cumprod.device
    key = (n_steps, order, t_end)
    cache = schedule.__dict__.setdefault("_dpm_eps_plans", {})
    if key not in cache:
        # from the host copy of the schedule (the same float32 values): the device buffer's read would sync
        cache[key] = dpm_solver_eps_plan(host_alphas_cumprod(schedule), n_steps, order, t_end)
    plan, h_tab = cache[key], schedule.host
    if clip is not None and not isinstance(clip, (int, float)):
        low, high = (torch.as_tensor(b, dtype=torch.float32, device=device) for b in clip)
    elif clip is not None:
        low, high = -float(clip), float(clip)
    batch = shape[0]

    def eps_at(x, p):
        eps = denoise_fn(x, torch.full((batch,), p["t_in"], device=device, dtype=torch.float32))
        if clip is None:
            return eps
        x_w, e_w = h_tab["sqrt_recip_alphas_cumprod"][p["index"]], h_tab["sqrt_recipm1_alphas_cumprod"][p["index"]]
        return torch.clamp(eps, (x_w * x - high) / e_w, (x_w * x - low) / e_w)

    with torch.no_grad():
        x = torch.randn(shape, device=device, generator=generator) if x_T is None else x_T.to(device)
        for st in plan:
            s, t, h = st["s"], st["t"], st["h"]
            e_s = eps_at(x, s)
            phi_1 = math.expm1(h)
            x_t = math.exp(t["log_alpha"] - s["log_alpha"]) * x - (t["sigma"] * phi_1) * e_s
            if st["order"] == 2:
                s1, r1 = st["s1"], st["r1"]
                x_s1 = math.exp(s1["log_alpha"] - s["log_alpha"]) * x - (s1["sigma"] * math.expm1(r1 * h)) * e_s
                x_t = x_t - (0.5 / r1) * (t["sigma"] * phi_1) * (eps_at(x_s1, s1) - e_s)
            elif st["order"] == 3:
                s1, s2, r1, r2 = st["s1"], st["s2"], st["r1"], st["r2"]
                phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
                phi_2 = phi_1 / h - 1.0
                x_s1 = math.exp(s1["log_alpha"] - s["log_alpha"]) * x - (s1["sigma"] * math.expm1(r1 * h)) * e_s
                e_s1 = eps_at(x_s1, s1)
                x_s2 = (math.exp(s2["log_alpha"] - s["log_alpha"]) * x - (s2["sigma"] * math.expm1(r2 * h)) * e_s
                        - (r2 / r1) * (s2["sigma"] * phi_22) * (e_s1 - e_s))
                x_t = x_t - (1.0 / r2) * (t["sigma"] * phi_2) * (eps_at(x_s2, s2) - e_s)
            x = x_t
        return x


# ----------------------------------------------------------------------------- settings that break a sampler

MIN_EPS_SOLVER_K = 20      # below it the solver stops at t = 1/K, where abar is far from 1 (0.80 at K = 5)
MIN_EPS_SOLVER_CALLS = 10  # fewer: W1 to the data 0.07 - 0.31 (order 3, K = 1000), exact-predictor test below
MIN_PP_STEPS = 5           # DPM-Solver++(2M) at 3 steps: W1 0.18 at K = 1000 against 0.07 at 5
# DDIM, K = 100 cosine, W1 to the data at 3 / 5 / 8 steps (tests/test_sampler_settings.py's exact predictor;
# the full chain 0.012, the test's bound chain + 0.1):
# diffusers' "leading" timesteps 0.16 / 0.08 / 0.03, the old "linspace" ones 0.28 / 0.13 / 0.05.  One threshold
# for both spacings: 8 is the authors' DDIM setting, and "linspace" fails the bound up to 5 steps ("leading" from
# 5 on would pass it, with W1 still 2.4x that at 8).
MIN_DDIM_STEPS = 8


def sampler_problem(sampler: str, n_timesteps: int, n_steps: int, order: int = 3) -> str | None:
    """Why ``(sampler, K, n_steps, order)`` cannot sample its model's distribution, or None when it can.

    Measured with the exact noise predictor of a two-mode Gaussian mixture (``tests/test_sampler_settings.py``,
    modes -0.6 / 0.5, std 0.08, actions in [-1, 1]):

    * ``dpm_solver`` (noise prediction, singlestep) whose *last* step is of order >= 2: that step runs from about
      t = 0.4 (abar 0.19) to t_end and its correction doubles a difference of two noise predictions that the
      eps clip cannot bound; the sample there is not clipped.  At 5 calls (orders [3, 2]) 65% of samples left
      [-1, 1] (max 2.97, W1 to the data 0.73); at 8, 11, 14, 17 and 20 calls 67%, 51%, 34%, 20% and 12%.
    * ``dpm_solver`` below ``MIN_EPS_SOLVER_CALLS`` calls or at K < ``MIN_EPS_SOLVER_K``: too coarse (W1 0.07 - 0.31
      at 3 - 9 calls), or it stops on a noisy step (11% out of the box at K = 5).
    * ``dpm_solver_pp`` below ``MIN_PP_STEPS`` steps (W1 0.18 at 3 steps).
    * ``ddim`` below ``MIN_DDIM_STEPS`` steps when K is larger (W1 0.13 at 5 steps of K = 100, cosine, on the
      "linspace" timesteps; 0.16 at 3 on diffusers' "leading" ones).
    """
    if sampler == "dpm_solver":
        if n_timesteps < MIN_EPS_SOLVER_K:
            return (f"the noise-prediction DPM-Solver needs K >= {MIN_EPS_SOLVER_K} (at K = {n_timesteps} it stops at "
                    f"t = 1/K on a noisy step: 11% of samples out of the box at K = 5); use sampler: ddpm (the "
                    f"{n_timesteps}-step chain) or dpm_solver_pp")
        if n_steps < MIN_EPS_SOLVER_CALLS:
            return (f"the noise-prediction DPM-Solver at {n_steps} calls is too coarse (below {MIN_EPS_SOLVER_CALLS}: "
                    f"5 calls put 65% of samples out of the box); use sampler: dpm_solver_pp for few steps "
                    f"(sampler_steps >= {MIN_PP_STEPS}), or 15 calls as the authors' code")
        last = singlestep_orders(n_steps, order)[-1]
        if last >= 2:
            return (f"the noise-prediction DPM-Solver of order {order} at {n_steps} calls ends with a step of order "
                    f"{last} over the last large jump, which throws samples out of the box (12-67% measured); use "
                    f"{n_steps - 1} or {n_steps + 1} calls (a first-order last step; 15 as the authors' code) or "
                    f"sampler: dpm_solver_pp")
    if sampler == "dpm_solver_pp" and n_steps < MIN_PP_STEPS:
        return (f"DPM-Solver++ at {n_steps} steps is too coarse (W1 to the data 0.18 at 3 steps); use "
                f"sampler_steps >= {MIN_PP_STEPS}")
    if sampler == "ddim" and n_steps < min(MIN_DDIM_STEPS, n_timesteps):
        return (f"DDIM at {n_steps} of {n_timesteps} steps is too coarse (W1 to the data 0.13 at 5 of 100); use "
                f"n_inference_steps >= {MIN_DDIM_STEPS}")
    return None

