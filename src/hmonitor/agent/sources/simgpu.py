"""Simulated GPUs for demos on machines without an NVIDIA GPU.

Every name starts with "Simulated " so the dashboard can label the host plainly. The load
follows smooth, seeded curves so a demo dashboard moves like a real lab: jobs start, run at
varying utilization and end; some hold memory while idle.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from hmonitor.agent.sources.gpu import GpuProcess, GpuReading
from hmonitor.wire import SIMULATED_PREFIX as SIM_PREFIX

_GIB = 1 << 30
_USERS = ("alice", "bob", "chen", "dmitri", "eva", "farah", "guo", "hana")
_PROGRAMS = ("python", "python3", "torchrun", "train.py", "jupyter-kernel", "ollama")
_DAY = 86400


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

    def close(self) -> None:
        pass

    def read(self) -> list[GpuReading]:
        now = self._clock()
        return [self._gpu(i, now) for i in range(self._count)]

    def _jobs(self, index: int, now: float) -> list[_Job]:
        # Jobs are drawn per (gpu, hour slot) from a seeded RNG, so every caller at the same
        # time sees the same jobs and a job keeps its pid for its whole life.
        jobs = []
        slot_len = 3600.0
        current = int(now // slot_len)
        for slot in range(current - 6, current + 1):
            rng = random.Random(hash((self._seed, index, slot)) & 0xFFFFFFFF)
            if rng.random() < 0.6:  # most hour slots start no job: some GPUs stay free
                continue
            start = slot * slot_len + rng.uniform(0, slot_len)
            length = rng.uniform(0.3, 6.0) * 3600
            if not start <= now < start + length:
                continue
            user_no = rng.randrange(len(_USERS))
            expiry_kind = rng.random()
            if expiry_kind < 0.6:
                expiration = 1  # never expires
            elif expiry_kind < 0.93:
                expiration = (int(now // _DAY) + rng.randrange(10, 400)) * _DAY
            else:
                expiration = (int(now // _DAY) - rng.randrange(1, 30)) * _DAY  # expired
            jobs.append(
                _Job(
                    user=_USERS[user_no],
                    uid=2000 + user_no,
                    program=rng.choice(_PROGRAMS),
                    pid=10000 + (slot * 7919 + index * 131) % 900000,
                    start=start,
                    length=length,
                    mem=int(rng.uniform(2, 60) * _GIB),
                    idle=rng.random() < 0.15,
                    expiration=expiration,
                )
            )
        return jobs[-2:]

    def _gpu(self, index: int, now: float) -> GpuReading:
        jobs = self._jobs(index, now)
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
