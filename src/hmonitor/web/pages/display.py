"""How values read on the pages: sizes, ages, expiry texts, model names. The one copy of each
rule; the browser shows what the server renders with these and computes none of them.

No Flask here: plain functions over numbers and strings.
"""

from __future__ import annotations

import math
import time

from hmonitor.web.rules import GIB, MIB, ExpiryState, expiry_state

__all__ = [
    "MODEL_PREFIXES",
    "ago",
    "clock",
    "day",
    "expiry",
    "hours",
    "idle_text",
    "moment",
    "r0",
    "r1",
    "short_model",
    "size_text",
]

MODEL_PREFIXES = ("Simulated ", "NVIDIA ", "GeForce ", "Tesla ")

# expiry_state -> the css class of the expiry text ("" for a plain date)
_EXPIRY_CLASS: dict[ExpiryState, str] = {
    "unknown": "exp-unknown", "never": "exp-never", "expired": "exp-expired",
    "soon": "exp-soon", "later": "",
}


def r1(x: float) -> str:
    """One decimal, rounded half up (format() rounds half to even)."""
    return f"{math.floor(x * 10 + 0.5) / 10:.1f}"


def r0(x: float) -> str:
    return str(math.floor(x + 0.5))


def size_text(n: int) -> str:
    """Memory of a process or disk: whole GiB from 10 GiB up, where a decimal is noise."""
    if n >= 10 * GIB:
        return f"{r0(n / GIB)} GiB"
    if n >= GIB:
        return f"{r1(n / GIB)} GiB"
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


def day(t: float) -> str:
    """A UTC date, as expiry dates are (shadow counts whole days)."""
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def clock(t: float) -> str:
    """Local time of day, for "as of"."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def moment(t: float, now: float) -> str:
    """When something happened: the time of day today, else the date and time. A fixed text
    (not "5 min ago"), so a page fragment changes only when its data does."""
    fmt = "%H:%M" if time.localtime(t)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(t))


def expiry(exp: int, now: float) -> tuple[str, str]:
    """An account expiry as (text, css class): unknown, never, expired, or its date."""
    state = expiry_state(exp, now)
    text = day(exp) if state in ("soon", "later") else state
    return text, _EXPIRY_CLASS[state]


def short_model(name: str) -> str:
    for prefix in MODEL_PREFIXES:
        name = name.removeprefix(prefix)
    return name


def idle_text(seconds: float) -> str:
    """How long a process has been idle: whole hours from an hour up, else minutes."""
    s = max(0, int(seconds))
    return f"{s // 3600}h" if s >= 3600 else f"{s // 60}m"


def hours(x: float) -> str:
    """GPU-hours: one decimal, whole hours from 100 up."""
    return r0(x) if x >= 100 else r1(x)
