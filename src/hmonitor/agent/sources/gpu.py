"""What a GPU source reports, independent of where it comes from (NVML or the simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hmonitor.agent.sources.procfacts import ProcFacts


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int  # bytes
    sm_util: int = 0  # percent; 0 when NVML has no sample
    # The MIG instance the process runs on; None when MIG is off (NVML says 0xFFFFFFFF).
    gpu_instance: int | None = None
    compute_instance: int | None = None
    # Filled only by the simulator, whose pids do not exist in /proc.
    uid: int | None = None
    username: str | None = None
    basename: str | None = None
    expiration: int | None = None
    facts: ProcFacts | None = None


@dataclass(frozen=True)
class MigInstanceReading:
    """One MIG device (a compute instance inside a GPU instance)."""

    gpu_instance: int
    compute_instance: int
    profile: str  # e.g. "1g.18gb", from the MIG device's name
    uuid: str  # "MIG-..."
    mem_used: int = 0  # bytes
    mem_total: int = 0  # bytes
    sm_count: int | None = None


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization: int = 0  # percent
    temp: int = 0  # degrees C
    fan: int = 0  # percent; 0 where the GPU has no fan
    mem_used: int = 0  # bytes
    mem_total: int = 0  # bytes
    processes: list[GpuProcess] = field(default_factory=list)
    lost: bool = False  # the GPU fell off the bus or failed; `name` then says why
    uuid: str = ""
    pci_bus_id: str = ""  # "00000000:3B:00.0"
    # None where the GPU or driver does not report the value.
    power_mw: int | None = None
    power_limit_mw: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    throttle_reasons: int | None = None  # NVML clocks-event reason bits
    ecc_corrected: int | None = None  # volatile counters, since the driver loaded
    ecc_uncorrected: int | None = None
    retired_pages: int | None = None
    remapped_rows: int | None = None
    mig_enabled: bool | None = None  # None: the GPU has no MIG
    mig: list[MigInstanceReading] = field(default_factory=list)


@dataclass(frozen=True)
class GpuSystem:
    """Facts about the driver rather than one GPU."""

    driver_version: str = ""
    cuda_version: str = ""  # the newest CUDA the driver supports, "12.4"


class GpuUnavailable(Exception):
    """No GPU library or a failing init: the host has no GPU data at all right now."""


class GpuSource(Protocol):
    def read(self) -> list[GpuReading]:
        """All GPUs of the host; raises GpuUnavailable when none can be read."""
        ...

    def system(self) -> GpuSystem:
        """Driver and CUDA versions; raises GpuUnavailable when the library cannot be read."""
        ...

    def close(self) -> None: ...
