"""Shared fixtures.  Tests run from the repo root so that `platform` is the project's package."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A per-session dataset cache (generated datasets land here, never in the user's cache)."""
    d = os.environ.get("DRL_DATA_DIR") or str(tmp_path_factory.mktemp("datasets"))
    os.environ["DRL_DATA_DIR"] = d
    return d


@pytest.fixture(scope="session")
def ray_local(data_dir):
    """One real local Ray instance for the whole test session (2 CPUs, the repo as working_dir)."""
    import ray

    from platform.sweep import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
