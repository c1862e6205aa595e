"""What every reader of the data decides the same way: when a GPU is free, when an account
expires soon. The dashboard (``hmonitor.web.rules``) and the terminal client (``hmonitor.ctl``)
must agree on these, and the client may not import the dashboard, so they live here, on plain
values rather than messages: the client reads them from JSON as well as from gRPC.

Like ``hmonitor.wire``, it imports neither program.
"""

from __future__ import annotations

from typing import Literal

from hmonitor.wire import EXPIRATION_NEVER, EXPIRATION_UNKNOWN, is_lost

__all__ = [
    "EXPIRY_SOON_S",
    "FREE_MEM_PCT",
    "FREE_UTIL_PCT",
    "ExpiryState",
    "expiry_state",
    "gpu_is_free",
]

# A GPU is free when nobody runs anything on it and it is idle.
FREE_UTIL_PCT = 5
FREE_MEM_PCT = 5
EXPIRY_SOON_S = 14 * 86400

ExpiryState = Literal["unknown", "never", "expired", "soon", "later"]


def gpu_is_free(*, name: str, processes: int, utilization: float, mem_used: int,
                mem_total: int, mig_enabled: bool | None = None,
                max_util: float = FREE_UTIL_PCT) -> bool:
    """No process, utilization under ``max_util`` %, under ``FREE_MEM_PCT`` % of memory used.

    A lost GPU is never free. Neither is a GPU in MIG mode: NVML reports no utilization for it
    (0), and a job handed the whole GPU's index could not use its instances as one device.
    """
    if is_lost(name) or mig_enabled or processes or utilization >= max_util:
        return False
    return mem_total > 0 and mem_used * 100 < FREE_MEM_PCT * mem_total


def expiry_state(expiration: int, now: float) -> ExpiryState:
    """What ``ProcInfo.expiration`` means at ``now``."""
    if expiration == EXPIRATION_UNKNOWN:
        return "unknown"
    if expiration == EXPIRATION_NEVER:
        return "never"
    if expiration <= now:
        return "expired"
    return "soon" if expiration - now < EXPIRY_SOON_S else "later"
