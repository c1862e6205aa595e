"""Prints what the pynvml binding reads, as JSON lines.  Tests run it in a subprocess.

    python probe.py [--rounds N] [--keep-init]

Run it with `fakenvml.nvml_env(...)` as the environment (and, to test another binding, that
binding's directory first on PYTHONPATH).  Each round prints one JSON object on a line; between
rounds it waits for a line on stdin, so the test can rewrite the config meanwhile.  By default
each round is init, read, shutdown; with --keep-init it initialises once and each round only
reads, as a long-running agent does.

Every value read is either the value or {"error": "<NVMLError subclass name>"}.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pynvml


def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except pynvml.NVMLError as e:
        return {"error": type(e).__name__}


def processes(fn: Callable[[Any], Any], handle: Any) -> Any:
    procs = attempt(fn, handle)
    if isinstance(procs, dict):
        return procs
    return [[p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId] for p in procs]


def samples(handle: Any, last_seen_us: int) -> Any:
    got = attempt(pynvml.nvmlDeviceGetProcessUtilization, handle, last_seen_us)
    if isinstance(got, dict):
        return got
    return [[s.pid, s.smUtil, s.memUtil, s.timeStamp > last_seen_us] for s in got]


def text(value: Any) -> Any:
    """Bindings hand out char arrays as bytes (older) or str (newer)."""
    return value.decode() if isinstance(value, bytes) else value


def common(handle: Any) -> dict[str, Any]:
    """What both a whole GPU and a MIG device answer."""
    util = attempt(pynvml.nvmlDeviceGetUtilizationRates, handle)
    mem = attempt(pynvml.nvmlDeviceGetMemoryInfo, handle)
    mem2 = attempt(pynvml.nvmlDeviceGetMemoryInfo, handle, pynvml.nvmlMemory_v2)
    return {
        "name": text(attempt(pynvml.nvmlDeviceGetName, handle)),
        "uuid": text(attempt(pynvml.nvmlDeviceGetUUID, handle)),
        "util": util if isinstance(util, dict) else [util.gpu, util.memory],
        "mem": mem if isinstance(mem, dict) else [mem.total, mem.used, mem.free],
        "mem_v2": mem2
        if isinstance(mem2, dict)
        else [mem2.total, mem2.reserved, mem2.used, mem2.free],
        "compute": processes(pynvml.nvmlDeviceGetComputeRunningProcesses, handle),
        "graphics": processes(pynvml.nvmlDeviceGetGraphicsRunningProcesses, handle),
        # From the start of time (the future is asked in read_gpu).
        "samples": samples(handle, 0),
    }


def pci(handle: Any) -> Any:
    got = attempt(pynvml.nvmlDeviceGetPciInfo, handle)
    if isinstance(got, dict):
        return got
    return [text(got.busId), got.domain, got.bus, got.device, text(got.busIdLegacy)]


def ecc(handle: Any) -> list[Any]:
    return [
        attempt(pynvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
        for kind in (
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        )
        for counter in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC)
    ]


def mig_devices(handle: Any) -> Any:
    """Every MIG device by index, up to the maximum; an index without one reads as its error."""
    most = attempt(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)
    if isinstance(most, dict):
        return most
    out: list[Any] = []
    for i in range(most):
        mig = attempt(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
        if isinstance(mig, dict):
            out.append(mig)
            continue
        attrs = attempt(pynvml.nvmlDeviceGetAttributes, mig)
        parent = attempt(pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, mig)
        out.append(
            {
                **common(mig),
                "gi": attempt(pynvml.nvmlDeviceGetGpuInstanceId, mig),
                "ci": attempt(pynvml.nvmlDeviceGetComputeInstanceId, mig),
                "is_mig": int(attempt(pynvml.nvmlDeviceIsMigDeviceHandle, mig).value),
                "parent": parent if isinstance(parent, dict) else pynvml.nvmlDeviceGetIndex(parent),
                "attributes": attrs
                if isinstance(attrs, dict)
                else [attrs.multiprocessorCount, attrs.memorySizeMB],
            }
        )
    return out


def read_gpu(index: int) -> dict[str, Any]:
    handle = attempt(pynvml.nvmlDeviceGetHandleByIndex, index)
    if isinstance(handle, dict):
        return {"handle": handle}
    now_us = time.time_ns() // 1000
    retired = [
        attempt(pynvml.nvmlDeviceGetRetiredPages, handle, cause)
        for cause in (
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
    ]
    remapped = attempt(pynvml.nvmlDeviceGetRemappedRows, handle)
    return {
        "handle": "ok",
        **common(handle),
        "temp": attempt(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        "fan": attempt(pynvml.nvmlDeviceGetFanSpeed, handle),
        # From a minute ahead (nothing can be newer than that).
        "samples_future": samples(handle, now_us + 60_000_000),
        "pci": pci(handle),
        "power": attempt(pynvml.nvmlDeviceGetPowerUsage, handle),
        "power_limit": attempt(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle),
        "clocks": [
            attempt(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
            attempt(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM),
        ],
        "events": attempt(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle),
        "throttle": attempt(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle),
        "ecc": ecc(handle),
        # Retired pages as a count per cause (the addresses are made up).
        "retired": [r if isinstance(r, dict) else len(r) for r in retired],
        "remapped": remapped if isinstance(remapped, dict) else list(remapped),
        "mig_mode": attempt(pynvml.nvmlDeviceGetMigMode, handle),
        "mig_devices": mig_devices(handle),
    }


def read_all() -> dict[str, Any]:
    count = attempt(pynvml.nvmlDeviceGetCount)
    gpus = [] if isinstance(count, dict) else [read_gpu(i) for i in range(count)]
    return {
        "driver": text(attempt(pynvml.nvmlSystemGetDriverVersion)),
        "cuda": [
            attempt(pynvml.nvmlSystemGetCudaDriverVersion),
            attempt(pynvml.nvmlSystemGetCudaDriverVersion_v2),
        ],
        "count": count,
        "gpus": gpus,
    }


def raw_count_before_init() -> int:
    """The library's own answer to a call before init (the binding would not even call it)."""
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    count = ctypes.c_uint(0)
    return int(lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep-init", action="store_true")
    args = parser.parse_args()
    header = {
        "binding_file": pynvml.__file__,
        "binding_version": importlib.metadata.version("nvidia-ml-py"),
        "raw_count_before_init": raw_count_before_init(),
    }
    if args.keep_init:
        header["init"] = attempt(pynvml.nvmlInit)
    for round_no in range(args.rounds):
        if round_no > 0 and not sys.stdin.readline():
            return  # the test went away
        out: dict[str, Any] = dict(header) if round_no == 0 else {}
        if args.keep_init:
            out.update(read_all())
        else:
            out["init"] = attempt(pynvml.nvmlInit)
            if out["init"] is None:
                out.update(read_all())
                out["shutdown"] = attempt(pynvml.nvmlShutdown)
                out["count_after_shutdown"] = attempt(pynvml.nvmlDeviceGetCount)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
