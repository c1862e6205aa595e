"""GPUs through NVML — the only module of the project that imports pynvml.

Every NVML call goes through `_query`, which maps NVML's errors: a field the GPU does not
support reads as 0, a lost GPU becomes a placeholder reading (the other GPUs still report), and
a failing library or init raises GpuUnavailable so the host reports `err` and retries later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from hmonitor.agent.sources.gpu import GpuProcess, GpuReading, GpuSystem, GpuUnavailable
from hmonitor.wire import lost_gpu_name

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "this value does not exist here", not "this GPU is broken".
_ABSENT = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
}
# Errors after which the whole library must be initialised again (driver reloaded or gone).
_REINIT = {
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
}
# Process-utilization samples older than this are stale: the process is no longer computing.
SAMPLE_WINDOW_S = 10.0


class _GpuFailed(Exception):
    """A query on one GPU failed in a way that makes the GPU unusable (e.g. GPU_IS_LOST)."""


def _describe(err: pynvml.NVMLError) -> str:
    try:
        return str(err)
    except Exception:  # noqa: BLE001 - nvmlErrorString itself can fail when the library is gone
        return f"NVML error {getattr(err, 'value', '?')}"


def _query(fn: Callable[..., T], *args: Any, default: T) -> T:
    """One NVML getter: `default` for absent values, _GpuFailed for a broken GPU."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        if err.value in _ABSENT:
            return default
        if err.value in _REINIT:
            raise GpuUnavailable(_describe(err)) from err
        raise _GpuFailed(_describe(err)) from err


class NvmlSource:
    """Reads every GPU of the host; initialises NVML lazily and again after a failure."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._initialised = False

    def read(self) -> list[GpuReading]:
        with self._lock:
            self._ensure_init()
            try:
                count = _query(pynvml.nvmlDeviceGetCount, default=0)
            except (_GpuFailed, GpuUnavailable) as err:
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
                driver = _query(pynvml.nvmlSystemGetDriverVersion, default="")
                cuda = _query(pynvml.nvmlSystemGetCudaDriverVersion_v2, default=0)
            except (_GpuFailed, GpuUnavailable) as err:
                self._shutdown()
                raise GpuUnavailable(f"NVML driver version failed: {err}") from err
        # NVML encodes CUDA 12.4 as 12040.
        return GpuSystem(
            driver_version=driver if isinstance(driver, str) else driver.decode(errors="replace"),
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "",
        )

    def close(self) -> None:
        with self._lock:
            self._shutdown()

    def _ensure_init(self) -> None:
        if self._initialised:
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                raise GpuUnavailable(
                    "NVML library libnvidia-ml.so.1 not found: is the NVIDIA driver installed?"
                ) from err
            raise GpuUnavailable(f"NVML init failed: {_describe(err)}") from err
        self._initialised = True
        log.info("NVML initialised")

    def _shutdown(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as err:
            log.debug("nvmlShutdown: %s", _describe(err))

    def _read_gpu(self, index: int) -> GpuReading:
        try:
            handle = _query(pynvml.nvmlDeviceGetHandleByIndex, index, default=None)
            if handle is None:
                return GpuReading(index=index, name=lost_gpu_name("no handle"), lost=True)
            name = _query(pynvml.nvmlDeviceGetName, handle, default="")
            util = _query(pynvml.nvmlDeviceGetUtilizationRates, handle, default=None)
            mem = _query(pynvml.nvmlDeviceGetMemoryInfo, handle, default=None)
            temp = _query(
                pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU, default=0
            )
            fan = _query(pynvml.nvmlDeviceGetFanSpeed, handle, default=0)
            processes = self._processes(handle)
        except _GpuFailed as err:
            log.warning("GPU %d: %s", index, err)
            return GpuReading(index=index, name=lost_gpu_name(str(err)), lost=True)
        return GpuReading(
            index=index,
            name=name if isinstance(name, str) else name.decode(errors="replace"),
            utilization=int(util.gpu) if util is not None else 0,
            temp=int(temp),
            fan=int(fan),
            mem_used=int(mem.used) if mem is not None else 0,
            mem_total=int(mem.total) if mem is not None else 0,
            processes=processes,
        )

    def _processes(self, handle: object) -> list[GpuProcess]:
        memory: dict[int, int] = {}
        for getter in (
            pynvml.nvmlDeviceGetComputeRunningProcesses,
            pynvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            procs: list[Any] = _query(getter, handle, default=[])
            for proc in procs:
                # usedGpuMemory is None where the driver cannot tell (NVML_VALUE_NOT_AVAILABLE).
                used = int(proc.usedGpuMemory or 0)
                # A process with both a compute and a graphics context is listed twice with the
                # same figure: keep one entry.
                memory[int(proc.pid)] = max(used, memory.get(int(proc.pid), 0))
        if not memory:
            return []
        since_us = int((self._clock() - SAMPLE_WINDOW_S) * 1_000_000)
        samples: list[Any] = _query(
            pynvml.nvmlDeviceGetProcessUtilization, handle, since_us, default=[]
        )
        sm: dict[int, tuple[int, int]] = {}  # pid -> (timestamp, smUtil) of its newest sample
        for sample in samples:
            pid, stamp = int(sample.pid), int(sample.timeStamp)
            if pid in memory and stamp >= sm.get(pid, (-1, 0))[0]:
                sm[pid] = (stamp, int(sample.smUtil))
        return [
            GpuProcess(pid=pid, used_memory=used, sm_util=sm.get(pid, (0, 0))[1])
            for pid, used in sorted(memory.items())
        ]
