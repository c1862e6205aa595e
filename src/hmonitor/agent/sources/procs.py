"""Owner (real uid) and executable name of a process, read from /proc."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The kernel keeps 15 bytes of the command name (TASK_COMM_LEN - 1).
_COMM_LEN = 15
_UID_MAX = (1 << 32) - 1  # uid_t is unsigned 32-bit


@dataclass(frozen=True)
class ProcOwner:
    uid: int
    name: str


def _unescape_comm(raw: bytes) -> bytes:
    # /proc/<pid>/status escapes "\n" and "\\" in Name: (seq_escape_str with only="\n\\").
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 2] == b"\\n":
            out += b"\n"
            i += 2
        elif raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _uid(field: bytes) -> int:
    # The kernel writes a plain decimal uid_t; int() alone would also take "+5", "5_0", "-1".
    if not (field.isdigit() and len(field) <= 10):
        raise ValueError(f"bad uid {field!r}")
    uid = int(field)
    if uid > _UID_MAX:
        raise ValueError(f"uid {uid} out of range")
    return uid


def _decode(raw: bytes) -> str:
    # "replace", not "surrogateescape": the name goes into a protobuf string, which must be UTF-8.
    return raw.decode("utf-8", errors="replace")


class ProcReader:
    """Reads process owners under a proc root (tests pass a fake tree)."""

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self._root = os.fspath(proc_root)

    def owner(self, pid: int) -> ProcOwner | None:
        """Real uid and executable basename, or None when the process is gone or unreadable."""
        if pid <= 0:
            return None
        base = os.path.join(self._root, str(pid))
        try:
            with open(os.path.join(base, "status"), "rb") as f:
                status = f.read()
            comm: bytes | None = None
            uid: int | None = None
            # Lines end at "\n" only: the kernel escapes "\n" in Name but not "\r", so a process
            # named "x\rUid:\t0" would pose as root to bytes.splitlines().
            for line in status.split(b"\n"):
                key, _, value = line.partition(b":")
                if key == b"Name" and comm is None:
                    comm = _unescape_comm(value.removeprefix(b"\t"))
                elif key == b"Uid" and uid is None:
                    uid = _uid(value.split()[0])  # real, effective, saved, filesystem
                if comm is not None and uid is not None:
                    break
            if comm is None or uid is None:
                log.debug("pid %d: no Name/Uid in %s/status", pid, base)
                return None
            name = comm
            if len(comm) >= _COMM_LEN:
                # comm may be truncated; argv[0]'s basename gives the full name when it agrees.
                with open(os.path.join(base, "cmdline"), "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
                extended = os.path.basename(argv0)
                if extended.startswith(comm):
                    name = extended
        except (FileNotFoundError, ProcessLookupError):
            return None  # exited after NVML listed it
        except (OSError, ValueError, IndexError) as exc:
            log.debug("pid %d: cannot read %s: %s", pid, base, exc)
            return None
        return ProcOwner(uid=uid, name=_decode(name))
