"""The project's package is named ``platform``, like the standard-library module.

Run from the repo root (``python -m platform.sweep``, Ray's ``working_dir``), this package
shadows the standard library's ``platform``, which ray, torch, pandas and many others import
(``platform.system()``, ``platform.python_version()``...).  So this file loads the standard
library's ``platform.py`` by file path and re-exports every name it defines: importers of the
stdlib module keep working, and ``platform.sweep`` & co. stay importable as subpackages.
Keep this file free of anything else.
"""
import importlib.util as _ilu
import os as _os
import sysconfig as _sysconfig

_stdlib_path = _os.path.join(_sysconfig.get_paths()["stdlib"], "platform.py")
_spec = _ilu.spec_from_file_location("_stdlib_platform", _stdlib_path)
_stdlib = _ilu.module_from_spec(_spec)
_spec.loader.exec_module(_stdlib)

for _name in dir(_stdlib):
    if not (_name.startswith("__") and _name.endswith("__")):
        globals()[_name] = getattr(_stdlib, _name)
del _name
