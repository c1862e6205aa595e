"""Real cgroups for tests: where the hierarchies are mounted, and directories made and processes
moved into them by one test, undone afterwards (bottom-up, after the processes are gone).

Needs root and a writable cgroup mount; the tests using it skip otherwise. Its fixture
(``cgroups``) is registered by ``pytest_plugins`` in tests/conftest.py."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Mounts:
    v2: Path | None  # the cgroup2 mount: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified
    v1: dict[str, Path]  # v1 controller (or name=...) -> its mount


def cgroup_mounts() -> Mounts:
    v2: Path | None = None
    v1: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2" and v2 is None:
            v2 = mountpoint
        elif fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in {"memory", "pids", "cpu", "cpuacct", "freezer", "name=systemd"}:
                    v1.setdefault(option, mountpoint)
    return Mounts(v2, v1)


MOUNTS = cgroup_mounts()


def writable(mount: Path | None) -> bool:
    return mount is not None and os.access(mount / "cgroup.procs", os.W_OK)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups")


@dataclass
class Cgroups:
    """Directories made and processes started by one test; undone by the fixture."""

    made: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def make(self, mount: Path, relative: str) -> Path:
        path = mount
        for part in relative.strip("/").split("/"):
            path = path / part
            try:
                path.mkdir()
            except FileExistsError:
                continue  # someone else's (a real slurmstepd.scope): never removed by us
            except OSError as exc:
                pytest.skip(f"cannot create cgroup {path}: {exc}")
            self.made.append(path)
        return path

    def start(self, *argv: str, comm: str = "sleep") -> int:
        proc = subprocess.Popen(list(argv))
        self.procs.append(proc)
        path = Path(f"/proc/{proc.pid}/comm")
        deadline = time.monotonic() + 5
        # Wait for the exec: the kernel sets the name, then the arguments.
        while path.read_text().rstrip("\n") != comm or not (path.parent / "cmdline").read_bytes():
            assert proc.poll() is None, f"{argv!r} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{argv!r} did not start"
            time.sleep(0.005)
        return proc.pid

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for path in reversed(self.made):
            # A killed process leaves its cgroup a moment after it is reaped.
            deadline = time.monotonic() + 5
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno not in {errno.EBUSY, errno.ENOTEMPTY} or (
                        time.monotonic() > deadline
                    ):
                        break  # shared with a concurrent run, or left for the host to see
                    time.sleep(0.05)


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    made = Cgroups()
    try:
        yield made
    finally:
        made.cleanup()


def move(cgroup: Path, pid: int) -> None:
    (cgroup / "cgroup.procs").write_text(f"{pid}\n")


def v1_hierarchy() -> Path | None:
    for controller in ("memory", "pids", "cpu", "freezer", "name=systemd"):
        mount = MOUNTS.v1.get(controller)
        if writable(mount):
            return mount
    return None


def docker_hierarchy() -> Path | None:
    return v1_hierarchy() or (MOUNTS.v2 if writable(MOUNTS.v2) else None)


