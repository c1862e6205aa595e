"""Query parameters checked before use: a bad value is a 400 that says what is wanted, never a 500.

Numbers are read with ASCII patterns, not ``int()``/``float()`` alone: those also take "²"'s
relatives ("٣" is 3 to ``int``), "nan", "inf", "1_000" and 4,300-digit strings (a CPU sink), and a
huge float turns into an OverflowError deep inside the history store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

__all__ = ["BadParam", "choice_param", "float_param", "int_param", "text_param"]

_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"[-+]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][-+]?[0-9]{1,3})?")


class BadParam(ValueError):
    """A query parameter that cannot be used; the message says which and what is wanted."""


def _raw(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name)
    return None if value is None or value == "" else value


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def int_param(args: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = _raw(args, name)
    if text is None:
        return default
    if not _INT.fullmatch(text) or not lo <= int(text) <= hi:
        raise BadParam(f"{name} must be a whole number from {lo} to {hi}, not {_shown(text)}")
    return int(text)


def float_param(
    args: Mapping[str, str], name: str, default: float, lo: float, hi: float
) -> float:
    text = _raw(args, name)
    if text is None:
        return default
    value = float(text) if _FLOAT.fullmatch(text) else math.nan
    if not lo <= value <= hi:  # NaN fails this too
        raise BadParam(f"{name} must be a number from {lo:g} to {hi:g}, not {_shown(text)}")
    return value


def choice_param(args: Mapping[str, str], name: str, default: str, choices: Sequence[str]) -> str:
    text = _raw(args, name)
    if text is None:
        return default
    if text not in choices:
        raise BadParam(f"{name} must be one of {', '.join(choices)}, not {_shown(text)}")
    return text


def text_param(args: Mapping[str, str], name: str, *, required: bool = False,
               limit: int = 256) -> str:
    text = _raw(args, name) or ""
    if required and not text:
        raise BadParam(f"{name} is required")
    if len(text) > limit or not text.isprintable():
        raise BadParam(f"{name} must be at most {limit} printable characters")
    return text
