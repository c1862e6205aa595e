"""Runs the sources, isolates and times each one, and builds one HostInfo snapshot.

A snapshot is collected at most once per `ttl` seconds however many clients ask, and only when
someone asks. A caller who finds the snapshot only slightly stale (younger than `stale_limit`)
gets it at once while one background collection refreshes it, so frequent callers never wait
for a collection; a caller after a long quiet spell (the dashboard every 10 s) waits for a fresh
one. Concurrent callers that must wait share the one collection under way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hmonitor._pb import hm_pb2
from hmonitor.agent.sources.accounts import ShadowExpiry
from hmonitor.agent.sources.disks import DiskScan, DiskSource
from hmonitor.agent.sources.gpu import GpuReading, GpuSource, GpuUnavailable
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


@dataclass
class Sources:
    gpus: GpuSource
    disks: DiskSource
    procs: ProcReader = field(default_factory=ProcReader)
    users: UserNames = field(default_factory=UserNames)
    shadow: ShadowExpiry = field(default_factory=ShadowExpiry)
    hostname: Callable[[], str] = lambda: ""
    ip: Callable[[], str] = lambda: ""


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
        no_gpus: list[GpuReading] = []
        gpus = self._run("gpus", self._src.gpus.read, no_gpus, errors)
        self._run("accounts", self._src.shadow.refresh, None, errors)
        for gpu in gpus:
            info.gpus.append(self._gpu_info(gpu))
        scan = self._run("disks", self._src.disks.read, DiskScan([], []), errors)
        errors.extend(scan.errors)
        for disk in scan.disks:
            info.disks.add(device=disk.device, mount=disk.mount, used=disk.used, total=disk.total)
        info.err = "; ".join(errors)
        return info

    def _gpu_info(self, gpu: GpuReading) -> hm_pb2.GPUInfo:
        msg = hm_pb2.GPUInfo(
            id=gpu.index,
            name=gpu.name,
            utilization=gpu.utilization,
            temp=gpu.temp,
            fanspeed=gpu.fan,
            mem_used=gpu.mem_used,
            mem_total=gpu.mem_total,
        )
        for proc in gpu.processes:
            if proc.username is not None:  # simulated: the owner comes with the reading
                uid, name, basename = proc.uid or 0, proc.username, proc.basename or ""
                expiration = proc.expiration or 0
            else:
                owner = self._src.procs.owner(proc.pid)
                if owner is None:
                    # Exited between NVML's listing and our lookup, or hidden from us (another
                    # PID namespace): still shown, with what NVML told us.
                    uid, name, basename, expiration = UNKNOWN_UID, "", "", 0
                else:
                    uid, basename = owner.uid, owner.name
                    name = self._src.users.name(uid)
                    expiration = self._src.shadow.expiration(name)
            msg.procs.add(
                pid=proc.pid,
                uid=encode_uid(uid),  # uids above 2^31 (containers) overflow a plain int32
                username=name,
                basename=basename,
                expiration=expiration,
                utilization=proc.sm_util,
                mem=proc.used_memory,
            )
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
