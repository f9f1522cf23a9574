"""``train.compile``: what it needs and the step that does it, imported by the driver and by the train loop.

torch.compile's CPU backend (inductor) builds C++ kernels, so a CPU trial needs a C++ compiler on the node
that trains it: the driver checks its own machine before anything starts (``platform.sweep``), each worker
checks its node before compiling (``compile_algorithms``), and both say so in one line.  On CUDA Triton
builds the kernels and no C++ compiler is needed.
"""
from __future__ import annotations

import os
import shutil


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would find ($CXX, else g++ / c++ / clang++ on PATH), or None."""
    found = (shutil.which(name) for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")))
    return next(filter(None, found), None)


def compile_algorithms(algos, device, node: str) -> None:
    """``algo.compile()`` each algorithm (the networks of its ``compile_modules``, in place) after checking that
    a CPU ``device`` has a C++ compiler on ``node`` (the worker's node id, for the message)."""
    if device.type == "cpu" and not cxx_compiler():  # the driver checked its own machine; this is the worker's
        raise RuntimeError(f"train.compile: node {node[:8]} has no C++ compiler ($CXX, g++, c++, clang++) for "
                           f"torch.compile's CPU kernels: install one there or set train.compile: false")
    for algo in algos:
        algo.compile()
