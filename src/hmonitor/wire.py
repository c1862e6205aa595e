"""Conventions both programs add to the proto: what some wire values mean beyond their type.

Imported by the agent and the dashboard alike, so it imports neither.

GPU names: a GPU the driver lost is reported, not dropped, with a name starting ``GPU lost:``
and the reason; simulated GPUs (demos) have names starting ``Simulated ``.

Expiry: ``ProcInfo.expiration`` is 0 when unknown, 1 when the account never expires, otherwise the
expiry as Unix seconds (2 for "expired on day 0", as 0 and 1 are taken).

uids: ``ProcInfo.uid`` is ``int32`` in the spec's proto, but Linux uids are unsigned 32-bit
(``uid_t``), and container runtimes hand out uids above 2^31 (user-namespace ranges). The spec's Go
agent sends ``int32(uid)``, the 32-bit two's complement; we do the same, losslessly, and the
dashboard decodes it. ``(uid_t)-1`` (4294967295) is reserved by POSIX ("no uid"), so the wire's
-1 keeps meaning "unknown owner" (the agent could not look the process up).
"""

from __future__ import annotations

LOST_PREFIX = "GPU lost:"
SIMULATED_PREFIX = "Simulated "

EXPIRATION_UNKNOWN = 0
EXPIRATION_NEVER = 1
EXPIRED_AT_EPOCH = 2

UNKNOWN_UID = -1
"""``ProcInfo.uid`` when the agent could not find the process's owner."""


def lost_gpu_name(reason: str) -> str:
    return f"{LOST_PREFIX} {reason}"


def is_lost(name: str) -> bool:
    return name.startswith(LOST_PREFIX)


def is_simulated(name: str) -> bool:
    return name.startswith(SIMULATED_PREFIX)

_UID_SPAN = 1 << 32  # uid_t is unsigned 32-bit on Linux
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def encode_uid(uid: int) -> int:
    """A uid (0..2^32-1, or -1 for unknown) as the int32 the proto carries (two's complement).

    Raises ValueError for anything else: no uid_t has that value, and protobuf would refuse it.
    """
    if uid == UNKNOWN_UID:
        return UNKNOWN_UID
    if not 0 <= uid < _UID_SPAN:
        raise ValueError(f"not a uid: {uid}")
    return uid - _UID_SPAN if uid > _INT32_MAX else uid


def decode_uid(wire: int) -> int:
    """The uid an int32 ``ProcInfo.uid`` stands for: 0..2^32-2, or -1 (unknown).

    Raises ValueError for a value outside int32 (it cannot have come off the wire).
    """
    if not _INT32_MIN <= wire <= _INT32_MAX:
        raise ValueError(f"not an int32 uid: {wire}")
    return wire + _UID_SPAN if wire < UNKNOWN_UID else wire


def owner_label(username: str, uid: int) -> str:
    """One name for a process owner everywhere (overview, users page, history, API).

    ``uid`` is the wire value. The username; an owner without one (no passwd entry, a
    container's uid) by uid, never hidden; "unknown" when the agent could not look the process
    up at all (uid -1)."""
    if username:
        return username
    real = decode_uid(uid)
    return f"uid {real}" if real != UNKNOWN_UID else "unknown"
