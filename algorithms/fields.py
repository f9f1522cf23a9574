"""Scalar config values, checked one way for the whole project (algorithm configs and study files).

Torch-free, so that the study validator (``platform/spec.py``) uses it without loading torch.
"""
from __future__ import annotations

import numbers

_WHAT = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def coerce_value(value, type_name: str, strict: bool = False):
    """``value`` as a plain ``int``/``float``/``bool``/``str`` for the annotation ``type_name``.

    Raises ``ValueError("an integer" | "a number" | "true or false" | "a string")``: what was expected.
    ``strict`` (a YAML study file): an int field takes only an integer literal.  Lenient (what search
    spaces hand over): ``numpy.int64``, integral floats (``5.0``) and numpy bools are accepted.  Other
    annotations (lists, dicts, ``X | None`` with a None value) pass through unchanged.
    """
    t = type_name.replace(" ", "")
    if value is None and "None" in t:
        return None
    base = t.split("|")[0]
    is_bool = isinstance(value, bool) or type(value).__name__ in ("bool", "bool_")  # numpy.bool(_) too
    if base == "bool":
        if not is_bool:
            raise ValueError(_WHAT["bool"])
        return bool(value)
    if base == "int":
        ok = isinstance(value, int) if strict else isinstance(value, numbers.Real) and int(value) == value
        if is_bool or not ok:
            raise ValueError(_WHAT["int"])
        return int(value)
    if base == "float":
        if is_bool or not isinstance(value, numbers.Real):
            raise ValueError(_WHAT["float"])
        return float(value)
    if base == "str" and not isinstance(value, str):
        raise ValueError(_WHAT["str"])
    return value
