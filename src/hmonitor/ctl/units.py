"""Sizes and durations as people type and read them (sizes and ages written as the
dashboard's pages write them: ``hmonitor.units``)."""

from __future__ import annotations

import math
import re
import time

from hmonitor.units import GIB, MIB, ago, size_text

__all__ = ["GIB", "MIB", "ago", "parse_duration", "parse_size", "seconds_text", "size_text",
           "when_text"]


# Binary units throughout, as nvidia-smi and the dashboard count GPU memory: 40G is 40 GiB.
_SIZE_UNITS = {"": GIB, "b": 1, "k": 1 << 10, "m": MIB, "g": GIB, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw]?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``40G``, ``40GiB``, ``40GB``, ``512M``, ``1.5T`` -> bytes (binary units; a plain number
    is GiB, since nobody asks for a GPU by the byte). Raises ValueError."""
    found = _SIZE.fullmatch(text)
    if not found:
        raise ValueError(f"not a size: {text!r} (e.g. 40G, 512M, 1.5T)")
    number, unit, suffix = found.groups()
    key = unit.lower()
    if not key and suffix:  # "100B": bytes
        key = "b"
    return int(float(number) * _SIZE_UNITS[key])


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h``, ``2d``, ``1h30m`` -> seconds. Raises ValueError."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 30m, 6h, 2d)")
    seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return seconds


def seconds_text(seconds: float) -> str:
    """A duration as the user typed it, roughly: 90 s, 30 min, 6 h."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def when_text(t: float, now: float) -> str:
    """A local time: ``14:03`` within a day of ``now``, else ``2025-06-01 14:03``."""
    fmt = "%H:%M" if abs(t - now) < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(t))
