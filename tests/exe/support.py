"""What the exe tests share: the measurements report and the root filesystem record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Lines for the terminal summary (tests/exe/conftest.py), so CI logs carry the numbers.
REPORT: list[str] = []


def report(line: str) -> None:
    print(line)
    REPORT.append(line)


@dataclass(frozen=True)
class Rootfs:
    path: Path
    suite: str
    glibc: str  # as `getconf GNU_LIBC_VERSION` prints it, e.g. "glibc 2.31"


def passwd_uids(path: Path) -> set[int]:
    uids = set()
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            uids.add(int(fields[2]))
    return uids
