"""What a Train worker sets up when it trains on a CUDA device; nothing at all on the CPU.

* ``configure_math``: TF32 matmuls and convolutions (``train.tf32``) and cuDNN's autotuner
  (``train.cudnn_benchmark``).  Both default on: on Ampere and later (A100, H100, H200) TF32 runs float32
  matmuls on the tensor cores (10-bit mantissa products, float32 accumulation), several times faster
  than IEEE float32 and within the noise of RL training; the autotuner picks the fastest convolution
  for Diffusion Policy's U-Net, whose shapes never change during a run.  On the CPU they would change
  nothing useful (``set_float32_matmul_precision`` also lets oneDNN use bfloat16 on some CPUs), so a CPU
  worker leaves torch's defaults alone.
* ``memory_fraction`` / ``cap_memory``: trials that share a GPU (``resources.gpus_per_worker`` < 1) each
  get that fraction of its memory (``torch.cuda.set_per_process_memory_fraction``), so one trial's
  caching allocator cannot starve the others into out-of-memory errors: the failure lands in the trial
  that overran its share.
"""
from __future__ import annotations

import torch


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def configure_math(device, tf32: bool = True, cudnn_benchmark: bool = True) -> dict[str, object]:
    """Set TF32 and cuDNN benchmark for a CUDA ``device``; a no-op elsewhere.  Returns what it set."""
    if not _is_cuda(device):
        return {}
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = cudnn_benchmark
    return {"tf32": tf32, "cudnn_benchmark": cudnn_benchmark}


def memory_fraction(device, gpus_per_worker: float) -> float | None:
    """The share of the GPU's memory this process may take: ``gpus_per_worker`` when the device is CUDA and
    the GPU is shared (0 < fraction < 1); None when there is nothing to cap (CPU, a whole GPU or more)."""
    if not _is_cuda(device) or not 0.0 < gpus_per_worker < 1.0:
        return None
    return float(gpus_per_worker)


def cap_memory(device, gpus_per_worker: float) -> float | None:
    """Apply ``memory_fraction`` to ``device`` (torch's caching allocator); returns the cap set, if any."""
    fraction = memory_fraction(device, gpus_per_worker)
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))
    return fraction
