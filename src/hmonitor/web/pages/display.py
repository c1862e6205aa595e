"""How values read on the pages: sizes, ages, expiry texts, model names. The one copy of each
rule; the browser shows what the server renders with these and computes none of them.

No Flask here: plain functions over numbers and strings.
"""

from __future__ import annotations

import math
import time

from hmonitor._pb import hm_pb2
from hmonitor.units import ago, size_text
from hmonitor.web.rules import ExpiryState, expiry_state

__all__ = [
    "MODEL_PREFIXES",
    "ago",
    "clock",
    "day",
    "expiry",
    "gpu_facts",
    "host_facts",
    "hours",
    "idle_text",
    "moment",
    "r0",
    "r1",
    "short_model",
    "size_text",
    "throttle_text",
]

MODEL_PREFIXES = ("Simulated ", "NVIDIA ", "GeForce ", "Tesla ")

# expiry_state -> the css class of the expiry text ("" for a plain date)
_EXPIRY_CLASS: dict[ExpiryState, str] = {
    "unknown": "exp-unknown", "never": "exp-never", "expired": "exp-expired",
    "soon": "exp-soon", "later": "",
}


def r1(x: float) -> str:
    """One decimal, rounded half up (format() rounds half to even)."""
    return f"{math.floor(x * 10 + 0.5) / 10:.1f}"


def r0(x: float) -> str:
    return str(math.floor(x + 0.5))


def day(t: float) -> str:
    """A UTC date, as expiry dates are (shadow counts whole days)."""
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def clock(t: float) -> str:
    """Local time of day, for "as of"."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def moment(t: float, now: float) -> str:
    """When something happened: the time of day today, else the date and time. A fixed text
    (not "5 min ago"), so a page fragment changes only when its data does."""
    fmt = "%H:%M" if time.localtime(t)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(t))


def expiry(exp: int, now: float) -> tuple[str, str]:
    """An account expiry as (text, css class): unknown, never, expired, or its date."""
    state = expiry_state(exp, now)
    text = day(exp) if state in ("soon", "later") else state
    return text, _EXPIRY_CLASS[state]


def short_model(name: str) -> str:
    for prefix in MODEL_PREFIXES:
        name = name.removeprefix(prefix)
    return name


def idle_text(seconds: float) -> str:
    """How long a process has been idle: whole hours from an hour up, else minutes."""
    s = max(0, int(seconds))
    return f"{s // 3600}h" if s >= 3600 else f"{s // 60}m"


def hours(x: float) -> str:
    """GPU-hours: one decimal, whole hours from 100 up."""
    return r0(x) if x >= 100 else r1(x)


# NVML's clocks-event (throttle) reason bits, as nvidia-smi names them.
THROTTLE_REASONS = (
    (0x1, "idle"), (0x2, "application clocks"), (0x4, "power cap"), (0x8, "hardware slowdown"),
    (0x10, "sync boost"), (0x20, "software thermal"), (0x40, "hardware thermal"),
    (0x80, "power brake"), (0x100, "display clocks"),
)


def throttle_text(mask: int) -> str:
    """What holds the clocks down: "none", "power cap, software thermal", ..."""
    names = [name for bit, name in THROTTLE_REASONS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in THROTTLE_REASONS)
    if rest:
        names.append(f"other (0x{rest:x})")
    return ", ".join(names) or "none"


def gpu_facts(g: hm_pb2.GPUInfo) -> list[tuple[str, str]]:
    """A GPU's identity, power, clocks and health as (label, text), what the agent reported."""
    out: list[tuple[str, str]] = []
    if g.uuid:
        out.append(("UUID", g.uuid))
    if g.pci_bus_id:
        out.append(("PCI bus", g.pci_bus_id))
    if g.HasField("power_mw"):
        limit = f" of {r0(g.power_limit_mw / 1000)} W" if g.HasField("power_limit_mw") else ""
        out.append(("Power", f"{r0(g.power_mw / 1000)} W{limit}"))
    clocks = [f"{what} {getattr(g, field)} MHz" for what, field in
              (("SM", "sm_clock_mhz"), ("memory", "mem_clock_mhz")) if g.HasField(field)]
    if clocks:
        out.append(("Clocks", ", ".join(clocks)))
    if g.HasField("throttle_reasons"):
        out.append(("Throttling", throttle_text(g.throttle_reasons)))
    if g.HasField("ecc_corrected") or g.HasField("ecc_uncorrected"):
        out.append(("ECC errors", f"{g.ecc_corrected} corrected, {g.ecc_uncorrected} "
                                  "uncorrected (since the driver loaded)"))
    if g.HasField("remapped_rows"):
        out.append(("Remapped rows", str(g.remapped_rows)))
    if g.HasField("retired_pages"):
        out.append(("Retired pages", str(g.retired_pages)))
    if g.HasField("mig_enabled"):
        out.append(("MIG", f"on, {len(g.mig)} instances" if g.mig_enabled else "off"))
    return out


def host_facts(info: hm_pb2.HostInfo) -> list[tuple[str, str]]:
    """The host's driver, CUDA and agent versions, load and memory, as the agent reported."""
    out: list[tuple[str, str]] = []
    if info.driver_version:
        cuda = f", CUDA {info.cuda_version}" if info.cuda_version else ""
        out.append(("Driver", info.driver_version + cuda))
    if info.HasField("load1"):
        cpus = f" on {info.cpus} CPUs" if info.cpus else ""
        out.append(("Load", f"{info.load1:.2f}{cpus}"))
    if info.mem_total:
        out.append(("Memory", f"{size_text(info.mem_used)} of {size_text(info.mem_total)}"))
    if info.agent_version:
        out.append(("Agent", f"hmonitor {info.agent_version}"))
    return out
