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
from prometheus_client import generate_latest
from promtext import Samples, of, one, samples

from hmonitor._pb import hm_pb2
from hmonitor.agent.metrics import build_registry
from hmonitor.agent.snapshot import Collector, Sources
from hmonitor.agent.sources.disks import (
    DEFAULT_FSTYPES,
    DiskFailure,
    DiskSource,
    DiskUsage,
    MountEntry,
    parse_mounts,
)
from hmonitor.agent.sources.gpu import GpuReading, GpuSystem
from hmonitor.agent.sources.procs import ProcReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mounts"
MIXED = FIXTURES / "mixed.txt"
LATIN1 = FIXTURES / "latin1.txt"  # a mount point and a device name that are not UTF-8


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


class NoGpus:
    """A GPU source with no GPUs (the disks are what these tests look at)."""

    def read(self) -> list[GpuReading]:
        return []

    def system(self) -> GpuSystem:
        return GpuSystem("560.35.03", "12.6")

    def close(self) -> None:
        pass


def _collector(tmp_path: Path, disks: DiskSource) -> Collector:
    return Collector(Sources(gpus=NoGpus(), disks=disks, procs=ProcReader(tmp_path),
                             hostname=lambda: "node7"), ttl=0)


def _scrape(collector: Collector) -> Samples:
    return samples(generate_latest(build_registry(collector.snapshot, collector.stats)).decode())


def test_a_mount_point_that_is_not_utf8_is_escaped_on_the_wire(
    tmp_path: Path, fake: FakeStatvfs,
) -> None:
    # /proc/mounts holds bytes: a mount point made by a Latin-1 tool is not UTF-8, and protobuf
    # strings (and Prometheus labels) must be.
    scan = DiskSource(LATIN1, statvfs=fake).read()
    assert [d.mount for d in scan.disks] == ["/", "/mnt/caf\udce9", "/mnt/ok"]
    assert fake.calls["/mnt/caf\udce9"] == 1  # statvfs gets the very bytes back
    collector = _collector(tmp_path, DiskSource(LATIN1, statvfs=fake))
    info = collector.snapshot()
    assert [(d.device, d.mount) for d in info.disks] == [
        ("/dev/nvme0n1p2", "/"), ("/dev/sde1", "/mnt/caf\\xe9"), ("/dev/sdf\\xff", "/mnt/ok")]
    assert hm_pb2.HostInfo.FromString(info.SerializeToString()) == info
    found = _scrape(collector)
    assert one(found, "hmonitor_disk_total_bytes", mount="/mnt/caf\\xe9",
               device="/dev/sde1") == 1000 * 4096
    assert one(found, "hmonitor_source_success", source="disks") == 1


def test_a_hung_mount_is_disk_up_0_with_a_steady_reason(tmp_path: Path, fake: FakeStatvfs) -> None:
    fake.hang = {"/mnt/my data"}
    collector = _collector(tmp_path, DiskSource(MIXED, timeout=0.2, statvfs=fake))
    steady = "no answer within 0.2 s (hung mount?)"
    for _ in range(2):  # the first read times out; the next finds it still hung: same label
        found = _scrape(collector)
        assert one(found, "hmonitor_disk_up", mount="/mnt/my data", device="/dev/sda1",
                   error=steady) == 0
        assert one(found, "hmonitor_disk_up", mount="/", device="/dev/nvme0n1p2", error="") == 1
        assert not any(dict(labels).get("mount") == "/mnt/my data" for labels in
                       of(found, "hmonitor_disk_total_bytes"))  # no size: not a false 0
        assert one(found, "hmonitor_source_success", source="disks") == 0
    fake.hang = set()
    fake.release.set()
    deadline = time.monotonic() + 5
    while 0 in of(found, "hmonitor_disk_up").values():  # the stuck call ends, then a new read
        assert time.monotonic() < deadline, of(found, "hmonitor_disk_up")
        time.sleep(0.05)
        found = _scrape(collector)
    assert one(found, "hmonitor_disk_up", mount="/mnt/my data", device="/dev/sda1",
               error="") == 1


def test_a_failing_statvfs_is_disk_up_0_with_its_reason(tmp_path: Path, fake: FakeStatvfs) -> None:
    fake.fail["/boot"] = PermissionError(13, "Permission denied")
    scan = DiskSource(MIXED, statvfs=fake).read()
    assert scan.failed == [DiskFailure("/dev/nvme0n1p1", "/boot", "Permission denied")]
    found = _scrape(_collector(tmp_path, DiskSource(MIXED, statvfs=fake)))
    assert one(found, "hmonitor_disk_up", mount="/boot", device="/dev/nvme0n1p1",
               error="Permission denied") == 0
