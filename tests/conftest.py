"""Shared fixtures.  Tests run from the repo root so that `platform` is the project's package."""
import os
import shutil
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


@pytest.fixture
def chromium():
    """A headless Chromium's path for the pixel tests (tests/test_report.py, tests/test_videos.py).  Without one they
    skip, except under CI (``CI`` set and not false/0, as CI services set it for .ci/run): there they fail, so a
    CI run cannot go green without them."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}, and CI={os.environ['CI']} is set: CI must run the browser tests")
        pytest.skip(f"{why}; CI installs it")
    return path
