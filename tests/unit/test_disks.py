"""Disk usage from mount tables: escapes, bind mounts, filesystem types, hung and failing mounts."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hmonitor.agent.sources.disks import (
    DEFAULT_FSTYPES,
    DiskSource,
    DiskUsage,
    MountEntry,
    parse_mounts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mounts"
MIXED = FIXTURES / "mixed.txt"


def fake_result(blocks: int, free: int, frsize: int = 4096) -> os.statvfs_result:
    # Field order: f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_flag
    # f_namemax. f_bavail is lower than f_bfree (root's reserve) so a wrong formula shows.
    return os.statvfs_result((frsize, frsize, blocks, free, free // 2, 1000, 500, 500, 0, 255))


class FakeStatvfs:
    """Answers from a table, counts calls, and blocks on chosen mounts until released."""

    def __init__(self, hang: set[str] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.hang = hang or set()
        self.release = threading.Event()
        self.fail: dict[str, OSError] = {}

    def __call__(self, path: str) -> os.statvfs_result:
        self.calls[path] += 1
        if path in self.hang:
            self.release.wait(30)
        if path in self.fail:
            raise self.fail[path]
        return fake_result(blocks=1000, free=250)


@pytest.fixture
def fake() -> Iterator[FakeStatvfs]:
    fake = FakeStatvfs()
    yield fake
    fake.release.set()  # never leave threads blocked behind the test


def test_parse_mounts_decodes_escapes() -> None:
    entries = parse_mounts(MIXED.read_text())
    mounts = [e.mount for e in entries]
    assert "/mnt/my data" in mounts
    assert "/data/tab\tand\\backslash" in mounts
    assert "/mnt/café" in mounts  # escaped UTF-8 bytes rejoin into one character
    assert entries[0] == MountEntry("sysfs", "/sys", "sysfs")
    assert len(entries) == 15


def test_parse_mounts_skips_short_lines() -> None:
    text = "\n/dev/sda1 /\n/dev/sda2 /x\\012y ext4 rw 0 0\n"
    assert parse_mounts(text) == [MountEntry("/dev/sda2", "/x\ny", "ext4")]


def test_default_types_binds_and_sizes(fake: FakeStatvfs) -> None:
    scan = DiskSource(MIXED, statvfs=fake).read()
    assert scan.errors == []
    assert [(d.device, d.mount) for d in scan.disks] == [
        ("/dev/nvme0n1p2", "/"),  # its bind mount below is not listed again
        ("/dev/nvme0n1p1", "/boot"),
        ("/dev/sda1", "/mnt/my data"),
        ("/dev/sdb1", "/data/tab\tand\\backslash"),
        ("/dev/sdc1", "/scratch2"),  # btrfs subvolume mount of the same device skipped
        ("tank/datasets", "/tank/datasets"),
        ("/dev/sdd1", "/mnt/café"),
    ]
    # tmpfs, nfs, nfs4, overlay, proc, sysfs are never asked.
    assert set(fake.calls) == {d.mount for d in scan.disks}
    assert scan.disks[0] == DiskUsage("/dev/nvme0n1p2", "/", used=750 * 4096, total=1000 * 4096)


def test_configured_types(fake: FakeStatvfs) -> None:
    scan = DiskSource(MIXED, fstypes={"tmpfs", "nfs4"}, statvfs=fake).read()
    assert [d.mount for d in scan.disks] == ["/run", "/home"]
    assert "overlay" not in DEFAULT_FSTYPES and "ext4" in DEFAULT_FSTYPES


def test_real_statvfs_matches_disk_usage(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/root / ext4 rw 0 0\n")
    scan = DiskSource(mounts).read()
    expected = shutil.disk_usage("/")
    assert scan.errors == []
    (disk,) = scan.disks
    assert disk.total == expected.total
    assert abs(disk.used - expected.used) < 64 * 2**20  # other writers between the two calls


def test_statvfs_error_skips_mount(fake: FakeStatvfs) -> None:
    fake.fail["/boot"] = PermissionError(13, "Permission denied")
    scan = DiskSource(MIXED, statvfs=fake).read()
    assert "/boot" not in [d.mount for d in scan.disks]
    assert "/" in [d.mount for d in scan.disks]
    assert scan.errors == ["statvfs /boot: Permission denied"]


def test_unreadable_mounts_file(tmp_path: Path, fake: FakeStatvfs) -> None:
    scan = DiskSource(tmp_path / "absent", statvfs=fake).read()
    assert scan.disks == []
    assert len(scan.errors) == 1
    assert str(tmp_path / "absent") in scan.errors[0]


def test_hung_mount_is_bounded_and_not_asked_again(fake: FakeStatvfs) -> None:
    fake.hang = {"/mnt/my data"}
    source = DiskSource(MIXED, timeout=0.3, statvfs=fake)

    started = time.monotonic()
    scan = source.read()
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5
    assert scan.errors == ["statvfs /mnt/my data: no answer within 0.3 s (hung mount?)"]
    assert "/mnt/my data" not in [d.mount for d in scan.disks]
    assert len(scan.disks) == 6  # the others are reported normally

    started = time.monotonic()
    scan = source.read()
    assert time.monotonic() - started < 0.25  # no second wait for the stuck mount
    assert fake.calls["/mnt/my data"] == 1  # and no second thread piled up behind it
    assert len(scan.errors) == 1 and "/mnt/my data" in scan.errors[0]
    assert "still hung" in scan.errors[0]

    hung_threads = [t for t in threading.enumerate() if t.name == "statvfs /mnt/my data"]
    assert len(hung_threads) == 1 and hung_threads[0].daemon
    fake.hang = set()
    fake.release.set()
    hung_threads[0].join(5)

    scan = source.read()
    assert scan.errors == []
    assert "/mnt/my data" in [d.mount for d in scan.disks]
    assert fake.calls["/mnt/my data"] == 2


def test_hung_mounts_cost_one_timeout_together(tmp_path: Path, fake: FakeStatvfs) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("".join(f"/dev/sd{c}1 /mnt/{c} ext4 rw 0 0\n" for c in "abcd"))
    fake.hang = {"/mnt/a", "/mnt/b", "/mnt/c"}
    started = time.monotonic()
    scan = DiskSource(mounts, timeout=0.4, statvfs=fake).read()
    elapsed = time.monotonic() - started
    assert elapsed < 0.8  # three hung mounts: one timeout, not three
    assert [d.mount for d in scan.disks] == ["/mnt/d"]
    assert len(scan.errors) == 3
