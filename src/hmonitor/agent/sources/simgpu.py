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

from hmonitor.agent.sources.gpu import GpuProcess, GpuReading, GpuSystem, MigInstanceReading
from hmonitor.agent.sources.procfacts import ContainerRef, ProcFacts, SlurmJobRef
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
_GB = 1_000_000_000
# How a simulated MIG GPU is split: an H200's profiles (GPU instance id, profile, memory, SMs).
_MIG_LAYOUT = ((1, "3g.71gb", 71 * _GB, 60), (5, "2g.35gb", 35 * _GB, 32),
               (13, "1g.18gb", 18 * _GB, 16), (14, "1g.18gb", 18 * _GB, 16))
# What each simulated program's command line reads like, and how it runs.
_ARGS = {
    "python": "python finetune.py --config configs/lora.yaml",
    "python3": "python3 -m vllm.entrypoints.openai.api_server --model /data/models/qwen2-7b",
    "torchrun": "torchrun --nproc_per_node=1 train.py --epochs 90 --batch-size 256",
    "train.py": "python train.py --data /data/imagenet --lr 3e-4",
    "jupyter-kernel": "python -m ipykernel_launcher -f /run/user/jupyter/kernel-7a1e.json",
    "ollama": "/bin/ollama serve",
}
_SLURM_PROGRAMS = ("torchrun", "train.py")  # batch jobs: submitted through Slurm
_CONTAINER_PROGRAMS = ("ollama",)  # served from a docker container, as root inside it


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
    job: int | None = None  # its Slurm job id, for batch programs


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
        mig: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._count = count
        self._mig = mig  # the first `mig` GPUs run in MIG mode
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
                    job=(810000 + (slot * 37 + index * 7 + self._seed) % 90000
                         if d.program in _SLURM_PROGRAMS else None),
                )
            )
        return jobs[-2:]

    def _facts(self, job: _Job) -> ProcFacts:
        container = None
        if job.program in _CONTAINER_PROGRAMS:
            digest = random.Random(job.pid * 2654435761 + self._seed).getrandbits(256)
            container = ContainerRef(id=f"{digest:064x}", runtime="docker", name="ollama")
        return ProcFacts(
            cmdline=_ARGS[job.program],
            start_time=int(job.start),
            container=container,
            job=None if job.job is None else SlurmJobRef(job.job, "batch"),
        )

    def _gpu(self, index: int, now: float) -> GpuReading:
        jobs = self._parked_jobs(index, now) if self._parked(index) else self._jobs(index, now)
        mig = index < self._mig
        procs = []
        total_util = 0.0
        for job in jobs:
            wave = 0.5 + 0.5 * math.sin((now - job.start) / 97.0 + job.pid)
            util = 0 if job.idle else int(40 + 55 * wave)
            total_util += util
            boxed = job.program in _CONTAINER_PROGRAMS
            slot = _MIG_LAYOUT[job.pid % len(_MIG_LAYOUT)] if mig else None
            procs.append(
                GpuProcess(
                    pid=job.pid,
                    used_memory=min(job.mem, (slot[2] if slot else self._mem_total)
                                    // max(len(jobs), 1)),
                    # Like NVML, no per-process or device utilization on a MIG GPU.
                    sm_util=0 if mig else util,
                    gpu_instance=slot[0] if slot else None,
                    compute_instance=0 if slot else None,
                    uid=0 if boxed else job.uid,
                    username="root" if boxed else job.user,
                    basename=job.program,
                    expiration=1 if boxed else job.expiration,
                    facts=self._facts(job),
                )
            )
        utilization = min(100, int(total_util))
        mem_used = sum(p.used_memory for p in procs) + (512 << 20 if procs else 0)
        power = 90_000 + utilization * 5_500
        return GpuReading(
            index=index,
            name=f"{SIM_PREFIX}{self._model}",
            utilization=0 if mig else utilization,
            temp=int(32 + utilization * 0.45 + math.sin(now / 300 + index) * 2),
            fan=0,  # datacenter GPUs have no fan
            mem_used=mem_used,
            mem_total=self._mem_total,
            processes=procs,
            uuid=f"GPU-{self._seed & 0xFFFFFFFF:08x}-5100-4000-8000-{index:012x}",
            pci_bus_id=f"00000000:{0x18 + index * 0x10:02X}:00.0",
            power_mw=power,
            power_limit_mw=700_000,
            sm_clock_mhz=1980 if utilization else 345,
            mem_clock_mhz=2619,
            throttle_reasons=0 if utilization else 1,  # 1: GPU idle
            ecc_corrected=0,
            ecc_uncorrected=0,
            remapped_rows=0,
            mig_enabled=mig,
            mig=self._mig_instances(index, procs) if mig else [],
        )

    def _mig_instances(self, index: int, procs: list[GpuProcess]) -> list[MigInstanceReading]:
        return [
            MigInstanceReading(
                gpu_instance=gi,
                compute_instance=0,
                profile=profile,
                uuid=f"MIG-{self._seed & 0xFFFFFFFF:08x}-{index:04x}-4000-8000-{gi:012x}",
                mem_used=min(total, sum(p.used_memory for p in procs if p.gpu_instance == gi)
                             + (64 << 20)),
                mem_total=total,
                sm_count=sms,
            )
            for gi, profile, total, sms in _MIG_LAYOUT
        ]
