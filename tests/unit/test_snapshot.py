"""The collector: isolation of failing sources, the short cache, one collection for many callers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

import hmonitor
from hmonitor._pb import hm_pb2
from hmonitor.agent.cli import build_parser
from hmonitor.agent.snapshot import Collector, Sources
from hmonitor.agent.sources.accounts import ShadowExpiry
from hmonitor.agent.sources.disks import DiskScan, DiskSource
from hmonitor.agent.sources.gpu import GpuProcess, GpuReading, GpuSystem, GpuUnavailable
from hmonitor.agent.sources.hostload import HostLoadReader
from hmonitor.agent.sources.procs import ProcReader
from hmonitor.agent.sources.simgpu import SimulatedGpuSource
from hmonitor.agent.sources.users import UserNames
from hmonitor.wire import UNKNOWN_UID, decode_uid, owner_label


class CountingGpus:
    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    def read(self) -> list[GpuReading]:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [GpuReading(index=0, name="X", processes=[GpuProcess(pid=999999999, used_memory=5)])]

    def system(self) -> GpuSystem:
        return GpuSystem("560.35.03", "12.6")

    def close(self) -> None:
        pass


def _collector(tmp_path: Path, gpus: CountingGpus, ttl: float = 1.0) -> Collector:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    sources = Sources(
        gpus=gpus,
        disks=DiskSource(mounts),
        procs=ProcReader(tmp_path),
        hostname=lambda: "node7",
        ip=lambda: "10.0.0.7",
    )
    return Collector(sources, ttl=ttl)


def test_many_callers_share_one_collection(tmp_path: Path) -> None:
    gpus = CountingGpus(delay=0.05)
    collector = _collector(tmp_path, gpus, ttl=5.0)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(collector.snapshot())) for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(100):
        collector.snapshot()
    assert gpus.calls == 1 and len(results) == 16
    assert results[0].hostname == "node7" and results[0].id == "node7"


def test_cache_expires(tmp_path: Path) -> None:
    gpus = CountingGpus()
    collector = _collector(tmp_path, gpus, ttl=0.05)
    collector.snapshot()
    time.sleep(0.08)
    collector.snapshot()
    time.sleep(0.05)  # the refresh runs in the background
    assert gpus.calls == 2


def test_unknown_owner_is_kept(tmp_path: Path) -> None:
    info = _collector(tmp_path, CountingGpus()).collect()
    (proc,) = info.gpus[0].procs
    assert (proc.pid, proc.mem, proc.uid, proc.username) == (999999999, 5, -1, "")


def test_a_failing_source_is_isolated_and_recorded(tmp_path: Path) -> None:
    collector = _collector(tmp_path, CountingGpus(fail=RuntimeError("boom")))
    info = collector.collect()
    assert "gpus: RuntimeError: boom" in info.err
    assert info.hostname == "node7" and info.ip == "10.0.0.7"
    assert not collector.stats["gpus"].ok and collector.stats["gpus"].failures == 1
    assert collector.stats["hostname"].ok and collector.stats["gpus"].seconds >= 0


def test_gpu_unavailable_is_the_hosts_err(tmp_path: Path) -> None:
    collector = _collector(tmp_path, CountingGpus(fail=GpuUnavailable("NVML library not found")))
    info = collector.collect()
    assert info.err == "NVML library not found" and list(info.gpus) == []


def test_simulated_gpus_are_labelled_and_carry_owners(tmp_path: Path) -> None:
    sim = SimulatedGpuSource(8, seed=3, clock=lambda: 1_800_000_000.0)
    first = sim.read()
    assert first == SimulatedGpuSource(8, seed=3, clock=lambda: 1_800_000_000.0).read()
    assert all(g.name.startswith("Simulated ") for g in first)
    procs = [p for g in first for p in g.processes]
    assert procs and all(p.username and p.expiration is not None for p in procs)
    assert all(g.mem_used <= g.mem_total for g in first)


def test_slightly_stale_snapshot_is_served_while_refreshing(tmp_path: Path) -> None:
    gpus = CountingGpus(delay=0.2)
    collector = _collector(tmp_path, gpus, ttl=0.05)
    first = collector.snapshot()
    time.sleep(0.06)
    started = time.monotonic()
    again = collector.snapshot()  # stale but young: no waiting for the 0.2 s collection
    assert time.monotonic() - started < 0.1
    assert again is first
    for _ in range(20):
        collector.snapshot()
    time.sleep(0.3)
    assert gpus.calls == 2  # one background refresh, however many callers
    assert collector.snapshot() is not first


def test_long_quiet_spell_waits_for_fresh_data(tmp_path: Path) -> None:
    gpus = CountingGpus()
    collector = Collector(_collector(tmp_path, gpus)._src, ttl=0.01, stale_limit=0.05)
    first = collector.snapshot()
    time.sleep(0.08)
    assert collector.snapshot() is not first and gpus.calls == 2


class OneProcess:
    """One GPU with one process, `pid`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self) -> list[GpuReading]:
        return [GpuReading(index=0, name="X", processes=[GpuProcess(pid=self.pid, used_memory=9)])]

    def system(self) -> GpuSystem:
        return GpuSystem()

    def close(self) -> None:
        pass


def _proc_tree(root: Path, pid: int, uid: str) -> Path:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "status").write_text(f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    return root


def _one_process_collector(tmp_path: Path, pid: int, uid: str) -> Collector:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    sources = Sources(
        gpus=OneProcess(pid),
        disks=DiskSource(mounts),
        procs=ProcReader(_proc_tree(tmp_path / "proc", pid, uid)),
        users=UserNames(getent=None),  # uid 3000000000 has no name here; no subprocess
        shadow=ShadowExpiry(tmp_path / "no-shadow"),
    )
    return Collector(sources)


def test_uid_above_2_31_fits_the_int32_field(tmp_path: Path) -> None:
    """Issue 7 item 4: a container uid broke every GetInfo with "Value out of range"."""
    info = _one_process_collector(tmp_path, 4242, "3000000000").collect()
    info = hm_pb2.HostInfo.FromString(info.SerializeToString())  # what the dashboard receives
    (proc,) = info.gpus[0].procs
    assert (proc.pid, proc.username, proc.basename) == (4242, "3000000000", "python3")
    assert proc.uid == 3000000000 - (1 << 32)  # the Go agent's int32(uid)
    assert decode_uid(proc.uid) == 3000000000
    assert owner_label("", proc.uid) == "uid 3000000000"


def test_impossible_uid_in_proc_is_an_unknown_owner(tmp_path: Path) -> None:
    info = _one_process_collector(tmp_path, 4243, "4294967296").collect()
    (proc,) = info.gpus[0].procs
    assert (proc.uid, proc.username, info.err) == (UNKNOWN_UID, "", "")


def _real_process_collector(tmp_path: Path, *, cmdline: bool) -> Collector:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    return Collector(Sources(gpus=OneProcess(os.getpid()), disks=DiskSource(mounts),
                             users=UserNames(getent=None), cmdline=cmdline))


def test_a_process_comes_with_its_command_line_and_start_time(tmp_path: Path) -> None:
    info = _real_process_collector(tmp_path, cmdline=True).collect()
    (proc,) = info.gpus[0].procs
    assert "pytest" in proc.cmdline
    assert abs(proc.start_time - psutil.Process().create_time()) < 2


def test_no_cmdline_sends_no_command_lines(tmp_path: Path) -> None:
    info = _real_process_collector(tmp_path, cmdline=False).collect()
    (proc,) = info.gpus[0].procs
    assert proc.cmdline == "" and proc.start_time > 0 and proc.basename


def test_the_host_reports_versions_load_and_memory(tmp_path: Path) -> None:
    info = _collector(tmp_path, CountingGpus()).collect()
    assert (info.driver_version, info.cuda_version) == ("560.35.03", "12.6")
    assert info.agent_version == hmonitor.__version__
    assert info.HasField("load1") and info.cpus == os.cpu_count()
    assert 0 < info.mem_used < info.mem_total == psutil.virtual_memory().total


def test_no_driver_is_one_error_and_no_driver_version(tmp_path: Path) -> None:
    gpus = CountingGpus(fail=GpuUnavailable("NVML library libnvidia-ml.so.1 not found"))
    info = _collector(tmp_path, gpus).collect()
    assert info.err == "NVML library libnvidia-ml.so.1 not found"
    assert info.driver_version == "" and info.agent_version  # the rest of the host still reports


def test_a_failing_load_source_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    broken = HostLoadReader(tmp_path / "no-proc")
    info = Collector(Sources(gpus=CountingGpus(), disks=DiskSource(mounts),
                             load=broken.read)).collect()
    assert info.err.startswith("load: FileNotFoundError") and not info.HasField("load1")
    assert len(info.gpus) == 1


def test_the_no_cmdline_flag_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args([]).cmdline is True
    assert build_parser().parse_args(["--no-cmdline"]).cmdline is False
    monkeypatch.setenv("GOHM_NO_CMDLINE", "1")
    assert build_parser().parse_args([]).cmdline is False


class HungMount(DiskSource):
    """One mount answers, one hangs: the scan goes on and says which."""

    def read(self) -> DiskScan:
        return DiskScan([], ["disk /mnt/nfs: no answer within 2 s (hung mount?)"])


def test_a_hung_mount_marks_the_disks_source_failed_until_it_answers(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    sources = Sources(gpus=CountingGpus(), disks=HungMount(mounts))
    collector = Collector(sources)
    info = collector.collect()
    assert "/mnt/nfs: no answer" in info.err and len(info.gpus) == 1
    assert not collector.stats["disks"].ok
    assert collector.stats["disks"].error.startswith("disk /mnt/nfs")
    sources.disks = DiskSource(mounts)  # the mount answers again
    collector.collect()
    assert collector.stats["disks"].ok and collector.stats["disks"].error == ""
