"""CPU load and memory of the host, read from /proc/loadavg and /proc/meminfo."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    load1: float | None = None  # one-minute load average
    cpus: int = 0
    mem_used: int = 0  # bytes: total - available
    mem_total: int = 0  # bytes


def parse_loadavg(text: str) -> float:
    """The first field of /proc/loadavg ("0.36 0.80 1.15 3/90 27927")."""
    value = float(text.split(maxsplit=1)[0])
    if not (value >= 0.0 and value < 1e9):  # also rejects nan and inf
        raise ValueError(f"bad load average {text!r}")
    return value


def parse_meminfo(text: str) -> tuple[int, int]:
    """(used, total) bytes from /proc/meminfo; used = MemTotal - MemAvailable.

    Kernels before 3.14 have no MemAvailable: MemFree + Buffers + Cached stands in for it."""
    kib: dict[str, int] = {}
    for line in text.split("\n"):
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kib[key] = int(fields[0])
    total = kib["MemTotal"]
    available = kib.get("MemAvailable")
    if available is None:
        available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
    return max(total - available, 0) * 1024, total * 1024


class HostLoadReader:
    """Reads the load and memory under a proc root (tests pass a fake tree)."""

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self._root = os.fspath(proc_root)

    def read(self) -> HostLoad:
        with open(os.path.join(self._root, "loadavg"), encoding="ascii") as f:
            load1 = parse_loadavg(f.read(256))
        with open(os.path.join(self._root, "meminfo"), encoding="ascii") as f:
            used, total = parse_meminfo(f.read(16384))
        return HostLoad(load1=load1, cpus=os.cpu_count() or 0, mem_used=used, mem_total=total)
