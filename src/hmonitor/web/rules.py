"""What the dashboard decides about the data, whatever shows it: when a GPU is free, a disk is
full, an account expires soon. Pages, reports (alerts, users) and the API read these; how each
looks is the pages' business (pages/display.py).

Domain code: no Flask.
"""

from __future__ import annotations

from typing import Literal

from hmonitor._pb import hm_pb2
from hmonitor.wire import EXPIRATION_NEVER, EXPIRATION_UNKNOWN, is_lost

__all__ = [
    "DISK_WARN_PCT",
    "EXPIRY_SOON_S",
    "FREE_MEM_PCT",
    "FREE_UTIL_PCT",
    "GIB",
    "MIB",
    "ExpiryState",
    "disk_is_full",
    "disk_percent",
    "expiry_state",
    "gpu_is_free",
]

GIB = 1 << 30
MIB = 1 << 20
# A GPU is free when nobody runs anything on it and it is idle.
FREE_UTIL_PCT = 5
FREE_MEM_PCT = 5
DISK_WARN_PCT = 90  # a disk this full is flagged on the page and raises an alert
EXPIRY_SOON_S = 14 * 86400

ExpiryState = Literal["unknown", "never", "expired", "soon", "later"]


def gpu_is_free(g: hm_pb2.GPUInfo) -> bool:
    if is_lost(g.name) or len(g.procs) or g.utilization >= FREE_UTIL_PCT:
        return False
    return g.mem_total > 0 and g.mem_used * 100 < FREE_MEM_PCT * g.mem_total


def disk_percent(d: hm_pb2.DiskInfo) -> int:
    """Used space in whole percent, rounded half up."""
    return int(d.used * 100 / d.total + 0.5) if d.total else 0


def disk_is_full(d: hm_pb2.DiskInfo) -> bool:
    return disk_percent(d) >= DISK_WARN_PCT


def expiry_state(expiration: int, now: float) -> ExpiryState:
    """What ``ProcInfo.expiration`` means at ``now``."""
    if expiration == EXPIRATION_UNKNOWN:
        return "unknown"
    if expiration == EXPIRATION_NEVER:
        return "never"
    if expiration <= now:
        return "expired"
    return "soon" if expiration - now < EXPIRY_SOON_S else "later"
