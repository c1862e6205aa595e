"""The MIG devices of a GPU in MIG mode, through NVML.

Which instances exist changes rarely (an admin makes or destroys them, with no process on
them), so the layout of a GPU (handles, ids, profile, UUID, SM count) is kept for
LAYOUT_TTL_S; memory is read every time.  A kept layout that no longer answers is read again at
once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import pynvml

from hmonitor.agent.sources.gpu import MigInstanceReading
from hmonitor.agent.sources.nvml_query import Device, text

LAYOUT_TTL_S = 30.0


@dataclass(frozen=True)
class MigDevice:
    """One MIG device as enumerated: what does not change while the instance exists."""

    device: Device
    gpu_instance: int
    compute_instance: int
    profile: str
    uuid: str
    sm_count: int | None


def profile_of(name: str) -> str:
    """ "NVIDIA H200 MIG 1g.18gb" -> "1g.18gb"."""
    _, sep, profile = name.rpartition("MIG ")
    return profile.strip() if sep else name


class MigLayouts:
    """Enumerates and keeps the MIG devices of each GPU (by UUID)."""

    def __init__(
        self, unsupported: set[tuple[Hashable, ...]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._unsupported = unsupported
        self._clock = clock
        self._layouts: dict[str, tuple[float, list[MigDevice]]] = {}

    def clear(self) -> None:
        """Forgets every layout (the handles die with the library)."""
        self._layouts.clear()

    def read(self, gpu: Device, uuid: str) -> tuple[list[MigDevice], list[MigInstanceReading]]:
        """The MIG devices of `gpu` and their readings, memory read now."""
        now = self._clock()
        kept = self._layouts.get(uuid) if uuid else None
        if kept is not None and now - kept[0] < LAYOUT_TTL_S:
            readings = self._readings(kept[1])
            if readings is not None:
                return kept[1], readings
        devices = self._enumerate(gpu)
        readings = self._readings(devices)
        if readings is None:  # a device vanished between enumerating and reading: none kept
            self._layouts.pop(uuid, None)
            return devices, [_reading(d, None) for d in devices]
        if uuid:
            self._layouts[uuid] = (now, devices)
        return devices, readings

    def _readings(self, devices: list[MigDevice]) -> list[MigInstanceReading] | None:
        """None when a device no longer answers its memory query."""
        out = []
        for d in devices:
            mem = d.device.get(pynvml.nvmlDeviceGetMemoryInfo, default=None)
            if mem is None:
                return None
            out.append(_reading(d, mem))
        return out

    def _enumerate(self, gpu: Device) -> list[MigDevice]:
        most = gpu.get(pynvml.nvmlDeviceGetMaxMigDeviceCount, default=0)
        found: list[MigDevice] = []
        for index in range(int(most)):
            # An index without a device answers NOT_FOUND: indexes need not be contiguous.
            handle = gpu.get(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, index, default=None)
            if handle is None:
                continue
            probe = Device(handle, f"{gpu.key}/mig{index}", set(), lenient=True)
            uuid = text(probe.get(pynvml.nvmlDeviceGetUUID, default=""))
            dev = Device(handle, uuid or probe.key, self._unsupported, lenient=True)
            gi = dev.get(pynvml.nvmlDeviceGetGpuInstanceId, default=None)
            ci = dev.get(pynvml.nvmlDeviceGetComputeInstanceId, default=None)
            if gi is None or ci is None:
                continue  # being made or destroyed right now
            attrs: Any = dev.get(pynvml.nvmlDeviceGetAttributes, default=None)
            found.append(
                MigDevice(
                    device=dev,
                    gpu_instance=int(gi),
                    compute_instance=int(ci),
                    profile=profile_of(text(dev.get(pynvml.nvmlDeviceGetName, default=""))),
                    uuid=uuid,
                    sm_count=int(attrs.multiprocessorCount) if attrs is not None else None,
                )
            )
        found.sort(key=lambda d: (d.gpu_instance, d.compute_instance))
        return found


def _reading(d: MigDevice, mem: Any) -> MigInstanceReading:
    return MigInstanceReading(
        gpu_instance=d.gpu_instance,
        compute_instance=d.compute_instance,
        profile=d.profile,
        uuid=d.uuid,
        mem_used=int(mem.used) if mem is not None else 0,
        mem_total=int(mem.total) if mem is not None else 0,
        sm_count=d.sm_count,
    )
