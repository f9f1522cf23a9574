"""The project's `platform` package must stand in for the standard library's `platform`."""
import subprocess
import sys


def test_stdlib_names_reexported():
    import platform

    assert platform.__file__.endswith("platform/__init__.py")
    assert platform.system() == "Linux"
    assert platform.python_version() == ".".join(map(str, sys.version_info[:3]))
    assert platform.machine()
    assert callable(platform.uname)


def test_heavy_libraries_import_through_shim():
    # A fresh interpreter from the repo root: ray, torch and pandas all import `platform` themselves.
    code = ("import platform, platform.spec; import ray, torch, pandas; "
            "assert platform.spec.__name__ == 'platform.spec'; "
            "print(platform.system(), platform.python_version(), torch.__version__, ray.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_root(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Linux 3.")


def _root():
    import os

    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
