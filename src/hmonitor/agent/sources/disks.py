"""Disk usage of local filesystems listed in /proc/mounts, every statvfs bounded by a timeout."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DEFAULT_FSTYPES: frozenset[str] = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs"})

# The kernel writes space, tab, newline and backslash in mount fields as \ooo.
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")
_FIELD_SEP = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class MountEntry:
    device: str
    mount: str
    fstype: str


@dataclass(frozen=True)
class DiskUsage:
    device: str
    mount: str
    used: int  # bytes, (f_blocks - f_bfree) * f_frsize, as df
    total: int  # bytes, f_blocks * f_frsize


@dataclass(frozen=True)
class DiskFailure:
    """A mount whose usage could not be read: ``reason`` stays the same while the failure lasts
    (a hung mount's is the same on the read that timed out and on the reads that skip it), so
    it can be a label."""

    device: str
    mount: str
    reason: str


@dataclass(frozen=True)
class DiskScan:
    disks: list[DiskUsage]
    errors: list[str]  # one line per failing mount (or an unreadable mount table)
    failed: list[DiskFailure] = field(default_factory=list)


def _unescape(text: str) -> str:
    # Work on bytes so an escaped non-ASCII byte rejoins the UTF-8 sequence around it.
    raw = os.fsencode(text)
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw))


def parse_mounts(text: str) -> list[MountEntry]:
    """Parse /proc/mounts (fstab format); lines with fewer than three fields are skipped."""
    entries: list[MountEntry] = []
    # The kernel escapes only space, tab, newline and backslash, so fields end at those alone:
    # str.split() would also cut a mount point at U+00A0, \x1c, \x85 ... and lose the rest.
    for line in text.split("\n"):
        fields = _FIELD_SEP.split(line.strip(" \t"))
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        entries.append(MountEntry(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return entries


def _describe(exc: Exception | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) if exc is not None else "failed"


@dataclass
class _Call:
    """One statvfs running in its own daemon thread."""

    done: threading.Event = field(default_factory=threading.Event)
    result: os.statvfs_result | None = None
    error: Exception | None = None


class DiskSource:
    """Reads disk usage; a hung mount costs one timeout per read and at most one stuck thread."""

    def __init__(
        self,
        mounts_path: str | os.PathLike[str] = "/proc/mounts",
        fstypes: Iterable[str] = DEFAULT_FSTYPES,
        timeout: float = 2.0,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self._mounts_path = os.fspath(mounts_path)
        self._fstypes = frozenset(fstypes)
        self._timeout = float(timeout)
        self._statvfs = statvfs
        # Mount point -> the call that did not answer in time and may still be stuck.
        self._hung: dict[str, _Call] = {}
        self._lock = threading.Lock()

    def _run(self, mount: str, call: _Call) -> None:
        try:
            call.result = self._statvfs(mount)
        except (OSError, ValueError) as exc:  # ValueError: a path the OS cannot take (NUL)
            call.error = exc
        finally:
            call.done.set()

    def _start(self, mount: str) -> _Call:
        call = _Call()
        # Daemon: a thread stuck in the kernel on a dead NFS server must not block exit.
        threading.Thread(
            target=self._run, args=(mount, call), name=f"statvfs {mount}", daemon=True
        ).start()
        return call

    def _select(self, entries: list[MountEntry]) -> list[MountEntry]:
        selected: list[MountEntry] = []
        seen: set[str] = set()
        for entry in entries:
            if entry.fstype not in self._fstypes or entry.device in seen:
                continue
            # A bind mount shows the same device again; report its first mount only.
            seen.add(entry.device)
            selected.append(entry)
        return selected

    def read(self) -> DiskScan:
        """Usage of each selected filesystem, plus one error line per mount that failed."""
        try:
            with open(self._mounts_path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            return DiskScan([], [f"cannot read {self._mounts_path}: {exc.strerror or exc}"])
        entries = self._select(parse_mounts(text))

        errors: list[str] = []
        failed: list[DiskFailure] = []
        hung = f"no answer within {self._timeout} s (hung mount?)"
        with self._lock:  # concurrent reads must not both start a call for the same mount
            calls: list[tuple[MountEntry, _Call]] = []
            for entry in entries:
                stuck = self._hung.get(entry.mount)
                if stuck is not None:
                    if not stuck.done.is_set():
                        errors.append(
                            f"statvfs {entry.mount}: still hung from an earlier read "
                            "(not asked again until it answers)"
                        )
                        failed.append(DiskFailure(entry.device, entry.mount, hung))
                        continue
                    del self._hung[entry.mount]
                # All calls start before any wait, so N hung mounts cost one timeout.
                calls.append((entry, self._start(entry.mount)))

            deadline = time.monotonic() + self._timeout
            disks: list[DiskUsage] = []
            for entry, call in calls:
                if not call.done.wait(max(0.0, deadline - time.monotonic())):
                    self._hung[entry.mount] = call
                    message = f"statvfs {entry.mount}: {hung}"
                    log.warning("%s", message)
                    errors.append(message)
                    failed.append(DiskFailure(entry.device, entry.mount, hung))
                    continue
                if call.result is None:
                    reason = _describe(call.error)
                    errors.append(f"statvfs {entry.mount}: {reason}")
                    failed.append(DiskFailure(entry.device, entry.mount, reason))
                    continue
                st = call.result
                total = st.f_blocks * st.f_frsize
                # Clamped: a filesystem that reports more free blocks than blocks must not
                # make a negative uint64 and fail the whole reply.
                used = max(0, (st.f_blocks - st.f_bfree) * st.f_frsize)
                disks.append(DiskUsage(entry.device, entry.mount, used=used, total=total))
            # Forget stuck calls for mounts that are gone from the table and have since ended.
            mounted = {entry.mount for entry in entries}
            for mount in [m for m, c in self._hung.items() if m not in mounted and c.done.is_set()]:
                del self._hung[mount]
        return DiskScan(disks, errors, failed)
