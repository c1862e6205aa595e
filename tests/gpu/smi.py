"""nvidia-smi's view, parsed: the reference the real-driver tests compare the agent with."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

GPU_FIELDS = (
    "index,uuid,pci.bus_id,name,memory.total,memory.used,utilization.gpu,temperature.gpu,"
    "fan.speed,power.draw,power.limit,clocks.sm,clocks.mem,mig.mode.current,driver_version"
)
APP_FIELDS = "pid,used_memory,gpu_uuid"
# Fields older nvidia-smi versions lack: asked one at a time, None where refused.
OPTIONAL_FIELDS = (
    "memory.reserved",
    "enforced.power.limit",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
)


def smi(*args: str) -> str:
    result = subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"nvidia-smi {' '.join(args)}: {result.stderr or result.stdout}")
    return result.stdout


def value(text: str) -> str | None:
    """A CSV cell; None for "[N/A]", "[Not Supported]", "N/A" and the like."""
    text = text.strip()
    return None if not text or text.startswith("[") or text in {"N/A", "Not Supported"} else text


def number(text: str | None) -> float | None:
    return None if text is None else float(text)


def rows(query: str, *extra: str) -> list[list[str | None]]:
    out = smi(f"--query-{query}", "--format=csv,noheader,nounits", *extra)
    return [[value(c) for c in line.split(",")] for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class SmiGpu:
    index: int
    uuid: str
    pci_bus_id: str
    name: str
    mem_total_mib: int
    mem_used_mib: int
    utilization: float | None
    temp: float | None
    fan: float | None
    power_w: float | None
    power_limit_w: float | None
    sm_clock: float | None
    mem_clock: float | None
    mig_mode: str | None  # "Enabled", "Disabled", None without MIG
    driver: str
    optional: dict[str, float | None]


def gpus() -> list[SmiGpu]:
    optional: dict[str, list[float | None]] = {}
    for field in OPTIONAL_FIELDS:
        try:
            optional[field] = [number(r[0]) for r in rows(f"gpu={field}")]
        except RuntimeError:
            optional[field] = []
    found = []
    for i, r in enumerate(rows(f"gpu={GPU_FIELDS}")):
        assert len(r) == 15, r
        found.append(
            SmiGpu(
                index=int(r[0] or -1),
                uuid=r[1] or "",
                pci_bus_id=r[2] or "",
                name=r[3] or "",
                mem_total_mib=int(r[4] or 0),
                mem_used_mib=int(r[5] or 0),
                utilization=number(r[6]),
                temp=number(r[7]),
                fan=number(r[8]),
                power_w=number(r[9]),
                power_limit_w=number(r[10]),
                sm_clock=number(r[11]),
                mem_clock=number(r[12]),
                mig_mode=r[13],
                driver=r[14] or "",
                optional={f: (v[i] if i < len(v) else None) for f, v in optional.items()},
            )
        )
    return found


@dataclass(frozen=True)
class SmiApp:
    pid: int
    used_mib: int | None
    gpu_uuid: str


def apps() -> list[SmiApp]:
    return [
        SmiApp(int(r[0] or -1), None if r[1] is None else int(r[1]), r[2] or "")
        for r in rows(f"compute-apps={APP_FIELDS}")
    ]


def cuda_version() -> str | None:
    """The "CUDA Version: 12.4" of nvidia-smi's banner."""
    found = re.search(r"CUDA Version:\s*([0-9.]+)", smi())
    return found.group(1) if found else None


def mig_devices() -> dict[str, str]:
    """MIG device UUID -> profile, from `nvidia-smi -L`."""
    found = re.findall(r"MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)", smi("-L"))
    return {uuid: profile for profile, uuid in found}
