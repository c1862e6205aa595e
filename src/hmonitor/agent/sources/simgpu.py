"""Simulated GPUs for demos on machines without an NVIDIA GPU.

Every name starts with "Simulated " so the dashboard can label the host plainly. The load
follows smooth, seeded curves so a demo dashboard moves like a real lab: jobs start, run at
varying utilization and end; some hold memory while idle. The last GPU of a host with two or
more is "parked": a forgotten session holds memory on it, idle, day after day, so the idle-hog
alert always has something to show.

The simulation is a pure function of time (`read_at`), so a demo can fill the dashboard's
history with the past that the live agent's present continues.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from hmonitor.agent.sources.gpu import GpuProcess, GpuReading, GpuSystem
from hmonitor.wire import SIMULATED_PREFIX as SIM_PREFIX

_GIB = 1 << 30
_USERS = ("alice", "bob", "chen", "dmitri", "eva", "farah", "guo", "hana")
_PROGRAMS = ("python", "python3", "torchrun", "train.py", "jupyter-kernel", "ollama")
_DAY = 86400
# Parked GPU: session k starts in [k days + phase, + _PARK_JITTER) and lasts until _PARK_OVERLAP
# after session k+1 starts, so at every moment one of them has been idle longer than the
# idle rule's default 2 hours.
_PARK_JITTER = 4 * 3600.0
_PARK_OVERLAP = 3 * 3600.0
_SLOT = 3600.0  # jobs are drawn per hour slot
_MEMO_MAX = 4096  # memoized draws per source; the agent needs a few per GPU and hour


def host_seed(host_id: str) -> int:
    """The seed of a simulated host: what `hmonitor --simulate N --id host_id` uses (the agent's
    cli computes the same), so a demo can reproduce an agent's GPUs without asking it."""
    return zlib.crc32(host_id.encode())


@dataclass(frozen=True)
class _Job:
    user: str
    uid: int
    program: str
    pid: int
    start: float
    length: float
    mem: int
    idle: bool  # holds memory without computing: what the idle-hog alert is for
    expiration: int


@dataclass(frozen=True)
class _Draw:
    """What the seeded RNG drew for one (gpu, hour slot); only the expiry is relative to the
    reading's day."""

    start: float
    length: float
    user_no: int
    expiry_days: int | None  # None: never expires
    program: str
    mem: int
    idle: bool


class SimulatedGpuSource:
    """A deterministic, time-driven simulation of `count` GPUs."""

    def __init__(
        self,
        count: int = 4,
        *,
        model: str = "NVIDIA H200",
        mem_total: int = 141 * _GIB,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._count = count
        self._model = model
        self._mem_total = mem_total
        self._seed = seed
        self._clock = clock
        self._draws: dict[tuple[int, int], _Draw | None] = {}
        self._parks: dict[tuple[int, int], tuple[float, int, int]] = {}

    def close(self) -> None:
        pass

    def system(self) -> GpuSystem:
        return GpuSystem(driver_version="simulated", cuda_version="")

    def read(self) -> list[GpuReading]:
        return self.read_at(self._clock())

    def read_at(self, now: float) -> list[GpuReading]:
        """The GPUs at Unix time `now`, past or present: what `read` returned, or will return,
        then (a pure function of the time, the seed and the count)."""
        return [self._gpu(i, now) for i in range(self._count)]

    def _parked(self, index: int) -> bool:
        return self._count >= 2 and index == self._count - 1

    def _parked_jobs(self, index: int, now: float) -> list[_Job]:
        """The forgotten sessions on a parked GPU at `now`: one, or two while they overlap."""
        phase = (self._seed % 24) * 3600.0  # hosts park at different hours
        jobs = []
        day = int((now - phase) // _DAY)
        for k in (day - 1, day):
            start, user_no, mem = self._park(index, k, phase)
            end = self._park(index, k + 1, phase)[0] + _PARK_OVERLAP
            if not start <= now < end:
                continue
            jobs.append(
                _Job(
                    user=_USERS[user_no],
                    uid=2000 + user_no,
                    program="jupyter-kernel",
                    pid=910000 + (k * 4099 + index * 17 + self._seed) % 89000,  # not a job pid
                    start=start,
                    length=end - start,
                    mem=mem,
                    idle=True,
                    expiration=1,
                )
            )
        return jobs

    def _park(self, index: int, k: int, phase: float) -> tuple[float, int, int]:
        """Start, user number and memory of parked session k (memoized, as `_draw`)."""
        key = (index, k)
        found = self._parks.get(key)
        if found is None:
            rng = random.Random(hash((self._seed, index, k, 1)) & 0xFFFFFFFF)
            found = (k * _DAY + phase + rng.uniform(0, _PARK_JITTER),
                     rng.randrange(len(_USERS)), int(rng.uniform(8, 40) * _GIB))
            if len(self._parks) >= _MEMO_MAX:
                self._parks.clear()
            self._parks[key] = found
        return found

    def _draw(self, index: int, slot: int) -> _Draw | None:
        """The job drawn for (gpu, hour slot), None for none. Memoized: seeding an RNG is most
        of a reading's cost, and a backfill reads each slot hundreds of times."""
        key = (index, slot)
        if key in self._draws:
            return self._draws[key]
        rng = random.Random(hash((self._seed, index, slot)) & 0xFFFFFFFF)
        draw = None
        if rng.random() >= 0.6:  # most hour slots start no job: some GPUs stay free
            start = slot * _SLOT + rng.uniform(0, _SLOT)
            length = rng.uniform(0.3, 6.0) * 3600
            user_no = rng.randrange(len(_USERS))
            expiry_kind = rng.random()
            if expiry_kind < 0.6:
                expiry_days = None  # never expires
            elif expiry_kind < 0.93:
                expiry_days = rng.randrange(10, 400)
            else:
                expiry_days = -rng.randrange(1, 30)  # expired
            draw = _Draw(start, length, user_no, expiry_days, rng.choice(_PROGRAMS),
                         int(rng.uniform(2, 60) * _GIB), rng.random() < 0.15)
        if len(self._draws) >= _MEMO_MAX:
            self._draws.clear()
        self._draws[key] = draw
        return draw

    def _jobs(self, index: int, now: float) -> list[_Job]:
        # Jobs are drawn per (gpu, hour slot) from a seeded RNG, so every caller at the same
        # time sees the same jobs and a job keeps its pid for its whole life.
        jobs = []
        current = int(now // _SLOT)
        for slot in range(current - 6, current + 1):
            d = self._draw(index, slot)
            if d is None or not d.start <= now < d.start + d.length:
                continue
            expiration = 1 if d.expiry_days is None else (int(now // _DAY) + d.expiry_days) * _DAY
            jobs.append(
                _Job(
                    user=_USERS[d.user_no],
                    uid=2000 + d.user_no,
                    program=d.program,
                    pid=10000 + (slot * 7919 + index * 131) % 900000,
                    start=d.start,
                    length=d.length,
                    mem=d.mem,
                    idle=d.idle,
                    expiration=expiration,
                )
            )
        return jobs[-2:]

    def _gpu(self, index: int, now: float) -> GpuReading:
        jobs = self._parked_jobs(index, now) if self._parked(index) else self._jobs(index, now)
        procs = []
        total_util = 0.0
        for job in jobs:
            wave = 0.5 + 0.5 * math.sin((now - job.start) / 97.0 + job.pid)
            util = 0 if job.idle else int(40 + 55 * wave)
            total_util += util
            procs.append(
                GpuProcess(
                    pid=job.pid,
                    used_memory=min(job.mem, self._mem_total // max(len(jobs), 1)),
                    sm_util=util,
                    uid=job.uid,
                    username=job.user,
                    basename=job.program,
                    expiration=job.expiration,
                )
            )
        utilization = min(100, int(total_util))
        mem_used = sum(p.used_memory for p in procs) + (512 << 20 if procs else 0)
        return GpuReading(
            index=index,
            name=f"{SIM_PREFIX}{self._model}",
            utilization=utilization,
            temp=int(32 + utilization * 0.45 + math.sin(now / 300 + index) * 2),
            fan=0,  # datacenter GPUs have no fan
            mem_used=mem_used,
            mem_total=self._mem_total,
            processes=procs,
        )
