"""What a GPU source reports, independent of where it comes from (NVML or the simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int  # bytes
    sm_util: int = 0  # percent; 0 when NVML has no sample
    # Filled only by the simulator, whose pids do not exist in /proc.
    uid: int | None = None
    username: str | None = None
    basename: str | None = None
    expiration: int | None = None


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


class GpuUnavailable(Exception):
    """No GPU library or a failing init: the host has no GPU data at all right now."""


class GpuSource(Protocol):
    def read(self) -> list[GpuReading]:
        """All GPUs of the host; raises GpuUnavailable when none can be read."""
        ...

    def close(self) -> None: ...
