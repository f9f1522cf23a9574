"""The diffusion core shared by every diffusion method: schedules, samplers, networks.

* ``schedules``: ``make_betas(kind, K)``, ``DiffusionSchedule`` (DDPM tables as buffers; ``q_sample``,
  ``x0_from_eps``, ``q_posterior``).
* ``samplers``: ``ddpm_sample`` (Diffusion-QL's chain, optionally differentiable), ``ddim_sample``,
  ``ddpm_loss``, ``clip_to``.
* ``nets``: ``SinusoidalPosEmb``, ``NoiseMLP`` (Diffusion-QL's noise MLP), ``mlp``, ``FastMish``.
* ``dpm_solver``: ``dpm_solver_sample`` (DPM-Solver++(2M), EDP's evaluation sampler).
"""
from algorithms.diffusion.dpm_solver import dpm_solver_sample
from algorithms.diffusion.nets import FastMish, NoiseMLP, SinusoidalPosEmb, mlp
from algorithms.diffusion.samplers import clip_to, ddim_sample, ddim_timesteps, ddpm_loss, ddpm_sample
from algorithms.diffusion.schedules import BETA_SCHEDULES, DiffusionSchedule, make_betas

__all__ = ["BETA_SCHEDULES", "DiffusionSchedule", "make_betas", "ddpm_sample", "ddim_sample", "ddim_timesteps",
           "ddpm_loss", "clip_to", "dpm_solver_sample", "NoiseMLP", "SinusoidalPosEmb", "FastMish",
           "mlp"]
