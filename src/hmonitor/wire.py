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

Owners in containers: a process in a container often runs as root or as a uid with no account on
the host; ``proc_owner`` names it by its container (or, rootless, by the host user who owns the
container) instead, and ``proc_label`` adds the container and Slurm job where they say more.
"""

from __future__ import annotations

from hmonitor._pb import hm_pb2

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


def container_label(box: hm_pb2.Container) -> str:
    """"container trainer (docker)", or by its short id: "container 3f2a9c81d0e4… (docker)"."""
    shown = box.name or (box.id[:12] + "…" if len(box.id) > 12 else box.id)
    return f"container {shown} ({box.runtime})" if box.runtime else f"container {shown}"


def proc_owner(p: hm_pb2.ProcInfo) -> str:
    """Who a process belongs to, as pages, reports and the history's accounting name it.

    ``owner_label``, except in a container: a rootless container's host user; else the container
    itself when the process runs as root or as a uid no host account has (the agent then sends
    the uid as its name), since "root" or "uid 100999" would say nothing of whose it is."""
    if not p.HasField("container"):
        return owner_label(p.username, p.uid)
    box = p.container
    if box.host_user:
        return box.host_user
    uid = decode_uid(p.uid)
    if uid == 0 or not p.username or p.username == str(uid):
        return container_label(box)
    return owner_label(p.username, p.uid)


def proc_label(p: hm_pb2.ProcInfo) -> str:
    """The owner as a process row shows it: "alice · job 81234", "container 3f2a… (docker)",
    "bob · container web (podman)"."""
    owner = proc_owner(p)
    parts = [owner]
    if p.HasField("container"):
        box = container_label(p.container)
        if box != owner:
            parts.append(box)
    if p.HasField("job"):
        parts.append(f"job {p.job.id}")
    return " · ".join(parts)
