"""What the dashboard decides about the data, whatever shows it: when a GPU is free, a disk is
full, an account expires soon. Pages, reports (alerts, users) and the API read these; how each
looks is the pages' business (pages/display.py). The free-GPU and expiry rules are
``hmonitor.rules``'s, shared with the terminal client.

Domain code: no Flask.
"""

from __future__ import annotations

from hmonitor._pb import hm_pb2
from hmonitor.rules import (
    EXPIRY_SOON_S,
    FREE_MEM_PCT,
    FREE_UTIL_PCT,
    ExpiryState,
    expiry_state,
)
from hmonitor.rules import gpu_is_free as _gpu_is_free
from hmonitor.units import GIB, MIB

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

DISK_WARN_PCT = 90  # a disk this full is flagged on the page and raises an alert


def gpu_is_free(g: hm_pb2.GPUInfo) -> bool:
    """The shared rule (``hmonitor.rules``, which hmonitor-ctl applies too) on a GPU message."""
    return _gpu_is_free(name=g.name, processes=len(g.procs), utilization=g.utilization,
                        mem_used=g.mem_used, mem_total=g.mem_total,
                        mig_enabled=g.mig_enabled if g.HasField("mig_enabled") else None)


def disk_percent(d: hm_pb2.DiskInfo) -> int:
    """Used space in whole percent, rounded half up."""
    return int(d.used * 100 / d.total + 0.5) if d.total else 0


def disk_is_full(d: hm_pb2.DiskInfo) -> bool:
    return disk_percent(d) >= DISK_WARN_PCT
