"""GPUs through NVML — with nvml_query.py and nvml_mig.py, all of the project that imports pynvml.

Every NVML call maps NVML's errors (nvml_query): a value the GPU does not support reads as None
(or 0 for the spec's fields), a lost GPU becomes a placeholder reading (the other GPUs still
report), and a failing library or init raises GpuUnavailable so the host reports `err` and
retries later.  A getter that answers NOT_SUPPORTED once is not asked again on that GPU until the
library is initialised again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypedDict

import pynvml

from hmonitor.agent.sources.gpu import (
    GpuProcess,
    GpuReading,
    GpuSystem,
    GpuUnavailable,
    MigInstanceReading,
)
from hmonitor.agent.sources.nvml_mig import MigDevice, MigLayouts
from hmonitor.agent.sources.nvml_query import (
    Device,
    GpuFailed,
    describe,
    instance_id,
    query,
    text,
)
from hmonitor.wire import lost_gpu_name

log = logging.getLogger(__name__)

# Process-utilization samples older than this are stale: the process is no longer computing.
SAMPLE_WINDOW_S = 10.0
# (pid, gpu instance, compute instance) -> bytes; the instance ids are None without MIG.
_ProcKey = tuple[int, int | None, int | None]


class _Facts(TypedDict):
    power_mw: int | None
    power_limit_mw: int | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    throttle_reasons: int | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    retired_pages: int | None
    remapped_rows: int | None


class NvmlSource:
    """Reads every GPU of the host; initialises NVML lazily and again after a failure."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._initialised = False
        # (device key, getter, args) the device answered NOT_SUPPORTED; until re-init.
        self._unsupported: set[tuple[Hashable, ...]] = set()
        # GPU UUID -> (name, PCI bus id): they do not change while the library is initialised.
        self._static: dict[str, tuple[str, str]] = {}
        self._mig = MigLayouts(self._unsupported)

    def read(self) -> list[GpuReading]:
        with self._lock:
            self._ensure_init()
            try:
                count = query(pynvml.nvmlDeviceGetCount, default=0)
            except (GpuFailed, GpuUnavailable) as err:
                self._shutdown()
                raise GpuUnavailable(f"NVML device count failed: {err}") from err
            try:
                return [self._read_gpu(i) for i in range(count)]
            except GpuUnavailable:
                self._shutdown()
                raise

    def system(self) -> GpuSystem:
        with self._lock:
            self._ensure_init()
            try:
                driver = query(pynvml.nvmlSystemGetDriverVersion, default="")
                cuda = query(pynvml.nvmlSystemGetCudaDriverVersion_v2, default=0)
            except (GpuFailed, GpuUnavailable) as err:
                self._shutdown()
                raise GpuUnavailable(f"NVML driver version failed: {err}") from err
        # NVML encodes CUDA 12.4 as 12040.
        return GpuSystem(
            driver_version=text(driver),
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "",
        )

    def close(self) -> None:
        with self._lock:
            self._shutdown()

    def _ensure_init(self) -> None:
        if self._initialised:
            return
        self._forget()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                raise GpuUnavailable(
                    "NVML library libnvidia-ml.so.1 not found: is the NVIDIA driver installed?"
                ) from err
            raise GpuUnavailable(f"NVML init failed: {describe(err)}") from err
        self._initialised = True
        log.info("NVML initialised")

    def _forget(self) -> None:
        """Drops what was learnt about the devices: a new driver may answer differently."""
        self._unsupported.clear()
        self._static.clear()
        self._mig.clear()

    def _shutdown(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        self._forget()
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as err:
            log.debug("nvmlShutdown: %s", describe(err))

    def _read_gpu(self, index: int) -> GpuReading:
        try:
            handle = query(pynvml.nvmlDeviceGetHandleByIndex, index, default=None)
            if handle is None:
                return GpuReading(index=index, name=lost_gpu_name("no handle"), lost=True)
            uuid = text(query(pynvml.nvmlDeviceGetUUID, handle, default=""))
            gpu = Device(handle, uuid or f"#{index}", self._unsupported)
            mode: Any = gpu.get(pynvml.nvmlDeviceGetMigMode, default=None)
            mig_enabled = None if mode is None else mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            gpu.key = f"{gpu.key}/mig={mig_enabled}"  # MIG mode changes what the GPU answers
            name, pci = self._name_and_pci(gpu, uuid)
            # Neither utilization is supported on a GPU in MIG mode: they read as absent.
            util = gpu.get(pynvml.nvmlDeviceGetUtilizationRates, default=None)
            mem = gpu.get(pynvml.nvmlDeviceGetMemoryInfo, default=None)
            temp = gpu.get(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU, default=0)
            fan = gpu.get(pynvml.nvmlDeviceGetFanSpeed, default=0)
            mig_devices: list[MigDevice] = []
            mig: list[MigInstanceReading] = []
            if mig_enabled:
                mig_devices, mig = self._mig.read(gpu, uuid)
            processes = self._processes(gpu, mig_devices)
            facts = _facts(gpu)
        except GpuFailed as err:
            log.warning("GPU %d: %s", index, err)
            return GpuReading(index=index, name=lost_gpu_name(str(err)), lost=True)
        return GpuReading(
            index=index,
            name=name,
            utilization=int(util.gpu) if util is not None else 0,
            temp=int(temp),
            fan=int(fan),
            mem_used=int(mem.used) if mem is not None else 0,
            mem_total=int(mem.total) if mem is not None else 0,
            processes=processes,
            uuid=uuid,
            pci_bus_id=pci,
            mig_enabled=mig_enabled,
            mig=mig,
            **facts,
        )

    def _name_and_pci(self, gpu: Device, uuid: str) -> tuple[str, str]:
        known = self._static.get(uuid) if uuid else None
        if known is not None:
            return known
        name = text(gpu.get(pynvml.nvmlDeviceGetName, default=""))
        pci: Any = gpu.get(pynvml.nvmlDeviceGetPciInfo, default=None)
        found = (name, text(pci.busId) if pci is not None else "")
        if uuid and name:
            self._static[uuid] = found
        return found

    def _processes(self, gpu: Device, mig_devices: list[MigDevice]) -> list[GpuProcess]:
        memory = _running(gpu)
        if memory is None:
            memory = {}
            # In MIG mode only root may list the whole GPU's processes; anyone may list each
            # MIG device's, which then stand for its instance where the entry names none.
            for mig in mig_devices:
                for (pid, gi, ci), used in (_running(mig.device) or {}).items():
                    key = (
                        pid,
                        mig.gpu_instance if gi is None else gi,
                        mig.compute_instance if ci is None else ci,
                    )
                    memory[key] = max(used, memory.get(key, 0))
        if not memory:
            return []
        since_us = int((self._clock() - SAMPLE_WINDOW_S) * 1_000_000)
        samples: list[Any] = gpu.get(
            pynvml.nvmlDeviceGetProcessUtilization, since_us, default=[], key="since"
        )
        pids = {pid for pid, _, _ in memory}
        sm: dict[int, tuple[int, int]] = {}  # pid -> (timestamp, smUtil) of its newest sample
        for sample in samples:
            pid, stamp = int(sample.pid), int(sample.timeStamp)
            if pid in pids and stamp >= sm.get(pid, (-1, 0))[0]:
                sm[pid] = (stamp, int(sample.smUtil))
        return [
            GpuProcess(
                pid=pid,
                used_memory=used,
                sm_util=sm.get(pid, (0, 0))[1],
                gpu_instance=gi,
                compute_instance=ci,
            )
            for (pid, gi, ci), used in sorted(memory.items(), key=_by_pid)
        ]


def _by_pid(item: tuple[_ProcKey, int]) -> tuple[int, int, int]:
    (pid, gi, ci), _ = item
    return (pid, -1 if gi is None else gi, -1 if ci is None else ci)


def _running(device: Device) -> dict[_ProcKey, int] | None:
    """Compute and graphics processes of a device; None when it lists neither to us."""
    memory: dict[_ProcKey, int] = {}
    answered = False
    for getter in (
        pynvml.nvmlDeviceGetComputeRunningProcesses,
        pynvml.nvmlDeviceGetGraphicsRunningProcesses,
    ):
        procs: list[Any] | None = device.get(getter, default=None)
        if procs is None:
            continue
        answered = True
        for proc in procs:
            # usedGpuMemory is None where the driver cannot tell (NVML_VALUE_NOT_AVAILABLE).
            used = int(proc.usedGpuMemory or 0)
            key = (
                int(proc.pid),
                instance_id(getattr(proc, "gpuInstanceId", None)),
                instance_id(getattr(proc, "computeInstanceId", None)),
            )
            # A process with both a compute and a graphics context is listed twice with the
            # same figure: keep one entry.
            memory[key] = max(used, memory.get(key, 0))
    return memory if answered else None


def _facts(gpu: Device) -> _Facts:
    """Power, clocks, throttling and memory errors: each None where the GPU has none."""
    events = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    reasons = gpu.get(events, default=None) if events is not None else None
    if reasons is None:  # the name before driver 535
        reasons = gpu.get(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, default=None)
    corrected, uncorrected = (
        gpu.get(pynvml.nvmlDeviceGetTotalEccErrors, kind, pynvml.NVML_VOLATILE_ECC, default=None)
        for kind in (
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        )
    )
    retired = [
        gpu.get(pynvml.nvmlDeviceGetRetiredPages, cause, default=None)
        for cause in (
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
    ]
    remapped: Any = gpu.get(pynvml.nvmlDeviceGetRemappedRows, default=None)
    return {
        "power_mw": _int(gpu.get(pynvml.nvmlDeviceGetPowerUsage, default=None)),
        "power_limit_mw": _int(gpu.get(pynvml.nvmlDeviceGetEnforcedPowerLimit, default=None)),
        "sm_clock_mhz": _int(
            gpu.get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM, default=None)
        ),
        "mem_clock_mhz": _int(
            gpu.get(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM, default=None)
        ),
        "throttle_reasons": _int(reasons),
        "ecc_corrected": _int(corrected),
        "ecc_uncorrected": _int(uncorrected),
        "retired_pages": None
        if all(r is None for r in retired)
        else sum(len(r) for r in retired if r is not None),
        "remapped_rows": int(remapped[0]) + int(remapped[1]) if remapped is not None else None,
    }


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
