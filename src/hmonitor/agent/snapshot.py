"""Runs the sources, isolates and times each one, and builds one HostInfo snapshot.

A snapshot is collected at most once per `ttl` seconds however many clients ask, and only when
someone asks. A caller who finds the snapshot only slightly stale (younger than `stale_limit`)
gets it at once while one background collection refreshes it, so frequent callers never wait
for a collection; a caller after a long quiet spell (the dashboard every 10 s) waits for a fresh
one. Concurrent callers that must wait share the one collection under way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hmonitor import __version__
from hmonitor._pb import hm_pb2
from hmonitor.agent.sources.accounts import ShadowExpiry
from hmonitor.agent.sources.disks import DiskFailure, DiskScan, DiskSource
from hmonitor.agent.sources.gpu import (
    GpuProcess,
    GpuReading,
    GpuSource,
    GpuSystem,
    GpuUnavailable,
)
from hmonitor.agent.sources.hostload import HostLoad, HostLoadReader
from hmonitor.agent.sources.procfacts import ProcFacts
from hmonitor.agent.sources.procs import ProcReader
from hmonitor.agent.sources.users import UserNames
from hmonitor.wire import UNKNOWN_UID, encode_uid

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SourceStat:
    """How the last run of one source went (node_exporter's _duration_seconds / _success)."""

    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    runs: int = 0
    failures: int = 0
    # The disks source's only: the mounts it could not read (hung or failing), names escaped
    # as on the wire (``wire_text``).
    failed_disks: tuple[DiskFailure, ...] = ()


def wire_text(text: str) -> str:
    """A name read from the system (a mount point, a device) as valid UTF-8 for the wire and for
    Prometheus labels: bytes that are not UTF-8 (kept by ``surrogateescape``) as ``\\xNN``."""
    if text.isascii():
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


@dataclass
class Sources:
    gpus: GpuSource
    disks: DiskSource
    procs: ProcReader = field(default_factory=ProcReader)
    users: UserNames = field(default_factory=UserNames)
    shadow: ShadowExpiry = field(default_factory=ShadowExpiry)
    hostname: Callable[[], str] = lambda: ""
    ip: Callable[[], str] = lambda: ""
    load: Callable[[], HostLoad] = field(default_factory=lambda: HostLoadReader().read)
    # False: no command lines leave the host (--no-cmdline), for labs that keep them private.
    cmdline: bool = True


class Collector:
    def __init__(
        self,
        sources: Sources,
        *,
        host_id: str | None = None,
        ttl: float = 1.0,
        stale_limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._src = sources
        self._host_id = host_id
        self._ttl = ttl
        self._clock = clock
        self._stale_limit = 5 * ttl if stale_limit is None else stale_limit
        self._lock = threading.Lock()  # guards the fields below
        self._collecting = threading.Lock()  # one collection at a time
        self._refreshing = False
        self._cached: hm_pb2.HostInfo | None = None
        self._cached_at = 0.0
        self.stats: dict[str, SourceStat] = {}
        self.collections = 0

    def snapshot(self) -> hm_pb2.HostInfo:
        with self._lock:
            cached, age = self._cached, self._clock() - self._cached_at
            if cached is not None and age < self._ttl:
                return cached
            if cached is not None and age < self._stale_limit:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, name="refresh", daemon=True).start()
                return cached
        return self._refresh(wait=True)

    def _refresh(self, wait: bool = False) -> hm_pb2.HostInfo:
        with self._collecting:
            with self._lock:
                # Another caller may have collected while we waited for the lock.
                if wait and self._cached is not None and (
                    self._clock() - self._cached_at < self._ttl
                ):
                    return self._cached
            try:
                info = self.collect()
            finally:
                with self._lock:
                    self._refreshing = False
            with self._lock:
                self._cached, self._cached_at = info, self._clock()
            return info

    def close(self) -> None:
        self._src.gpus.close()

    def collect(self) -> hm_pb2.HostInfo:
        """One full collection, bypassing the cache."""
        self.collections += 1
        errors: list[str] = []
        hostname = self._run("hostname", self._src.hostname, "", errors)
        info = hm_pb2.HostInfo(
            id=self._host_id or hostname,
            hostname=hostname,
            ip=self._run("ip", self._src.ip, "", errors),
        )
        load = self._run("load", self._src.load, HostLoad(), errors)
        info.agent_version = __version__
        info.cpus, info.mem_used, info.mem_total = load.cpus, load.mem_used, load.mem_total
        if load.load1 is not None:
            info.load1 = load.load1
        no_gpus: list[GpuReading] = []
        gpus = self._run("gpus", self._src.gpus.read, no_gpus, errors)
        if self.stats["gpus"].ok:
            # Only with a working library: a missing driver is already the "gpus" error.
            system = self._run("driver", self._src.gpus.system, GpuSystem(), errors)
            info.driver_version, info.cuda_version = system.driver_version, system.cuda_version
        self._run("accounts", self._src.shadow.refresh, None, errors)
        for gpu in gpus:
            info.gpus.append(self._gpu_info(gpu))
        scan = self._run("disks", self._src.disks.read, DiskScan([], []), errors)
        errors.extend(map(wire_text, scan.errors))
        stat = self.stats["disks"]
        if scan.errors:
            # A hung or failing mount: the scan went on without it, but the source did not
            # fully work (hmonitor_source_success{source="disks"} reads 0).
            stat.ok, stat.error = False, wire_text("; ".join(scan.errors))
        stat.failed_disks = tuple(
            DiskFailure(wire_text(f.device), wire_text(f.mount), wire_text(f.reason))
            for f in scan.failed
        )
        for disk in scan.disks:
            info.disks.add(device=wire_text(disk.device), mount=wire_text(disk.mount),
                           used=disk.used, total=disk.total)
        info.err = "; ".join(errors)
        return info

    def _gpu_info(self, gpu: GpuReading) -> hm_pb2.GPUInfo:
        msg = gpu_message(gpu)
        for proc in gpu.processes:
            out = msg.procs.add()
            if proc.username is not None:  # simulated: the owner comes with the reading
                fill_process(out, proc, proc.uid or 0, proc.username, proc.basename or "",
                             proc.expiration or 0, proc.facts)
                continue
            owner = self._src.procs.owner(proc.pid)
            if owner is None:
                # Exited between NVML's listing and our lookup, or hidden from us (another
                # PID namespace): still shown, with what NVML told us.
                fill_process(out, proc, UNKNOWN_UID, "", "", 0, None)
                continue
            name = self._src.users.name(owner.uid)
            facts = self._src.procs.facts(proc.pid, cmdline=self._src.cmdline)
            fill_process(out, proc, owner.uid, name, owner.name,
                         self._src.shadow.expiration(name), facts)
        return msg

    def _run(self, name: str, fn: Callable[[], T], default: T, errors: list[str]) -> T:
        """Run one source, timing it; a failure becomes an error text, never an exception."""
        stat = self.stats.setdefault(name, SourceStat())
        start = time.perf_counter()
        try:
            result = fn()
        except GpuUnavailable as err:
            result, message = default, str(err)
        except Exception as err:
            result, message = default, f"{name}: {type(err).__name__}: {err}"
            if stat.error != message:
                log.exception("source %s failed", name)
        else:
            message = ""
        stat.seconds = time.perf_counter() - start
        stat.runs += 1
        if message:
            stat.failures += 1
            if stat.error != message:
                log.warning("%s", message)
            errors.append(message)
        elif not stat.ok:
            log.info("source %s recovered", name)
        stat.ok, stat.error = not message, message
        return result


def gpu_message(gpu: GpuReading) -> hm_pb2.GPUInfo:
    """One GPU's message, without its processes."""
    msg = hm_pb2.GPUInfo(
        id=gpu.index,
        name=gpu.name,
        utilization=gpu.utilization,
        temp=gpu.temp,
        fanspeed=gpu.fan,
        mem_used=gpu.mem_used,
        mem_total=gpu.mem_total,
        uuid=gpu.uuid,
        pci_bus_id=gpu.pci_bus_id,
        # None stays unset: "not reported" differs from 0 on the wire (proto3 optional).
        power_mw=gpu.power_mw,
        power_limit_mw=gpu.power_limit_mw,
        sm_clock_mhz=gpu.sm_clock_mhz,
        mem_clock_mhz=gpu.mem_clock_mhz,
        throttle_reasons=gpu.throttle_reasons,
        ecc_corrected=gpu.ecc_corrected,
        ecc_uncorrected=gpu.ecc_uncorrected,
        retired_pages=gpu.retired_pages,
        remapped_rows=gpu.remapped_rows,
        mig_enabled=gpu.mig_enabled,
    )
    for inst in gpu.mig:
        msg.mig.add(
            gpu_instance=inst.gpu_instance,
            compute_instance=inst.compute_instance,
            profile=inst.profile,
            uuid=inst.uuid,
            mem_used=inst.mem_used,
            mem_total=inst.mem_total,
            sm_count=inst.sm_count,
        )
    return msg


def fill_process(
    out: hm_pb2.ProcInfo,
    proc: GpuProcess,
    uid: int,
    username: str,
    basename: str,
    expiration: int,
    facts: ProcFacts | None,
) -> None:
    """One process's message: what NVML said of it, its owner, and what /proc told of it."""
    out.pid = proc.pid
    out.uid = encode_uid(uid)  # uids above 2^31 (containers) overflow a plain int32
    out.username = username
    out.basename = basename
    out.expiration = expiration
    out.utilization = proc.sm_util
    out.mem = proc.used_memory
    if proc.gpu_instance is not None:
        out.mig.gpu_instance = proc.gpu_instance
        out.mig.compute_instance = proc.compute_instance or 0
    if facts is None:
        return
    out.cmdline = facts.cmdline
    out.start_time = facts.start_time
    if facts.job is not None:
        out.job.id, out.job.step = facts.job.id, facts.job.step
    box = facts.container
    if box is not None:
        out.container.id, out.container.runtime = box.id, box.runtime
        out.container.name, out.container.pod = box.name, box.pod
        if box.host_uid is not None:
            out.container.host_uid = box.host_uid
            out.container.host_user = box.host_user
