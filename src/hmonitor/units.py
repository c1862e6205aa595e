"""Sizes and ages in words, written the same on the dashboard's pages and by hmonitor-ctl.

Like ``hmonitor.wire`` and ``hmonitor.rules``, it imports neither program.
"""

from __future__ import annotations

import math

__all__ = ["GIB", "MIB", "ago", "size_text"]

MIB = 1 << 20
GIB = 1 << 30


def size_text(n: int) -> str:
    """Memory of a process or disk: whole GiB from 10 GiB up (a decimal there is noise), one
    decimal below, MiB under 1 GiB."""
    if n >= 10 * GIB:
        return f"{math.floor(n / GIB + 0.5)} GiB"
    if n >= GIB:
        return f"{math.floor(n / GIB * 10 + 0.5) / 10:.1f} GiB"
    return f"{n // MIB} MiB"


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"
