"""The agent's Prometheus metrics: a custom collector over the cached HostInfo snapshot.

Read at scrape time (client_python's "custom collectors"), so a process that exits leaves no stale
series, and a scrape costs no NVML work beyond the snapshot's short cache. Two families:

- DCGM-compatible (``DCGM_FI_DEV_*``, labels ``gpu``, ``UUID``, ``device``, ``modelName``,
  ``hostname``) so dashboards made for NVIDIA's dcgm-exporter (Grafana 12239) fill in unchanged;
  units as dcgm-exporter has them (%, °C, MiB, W, MHz).
- Native (``hmonitor_*``) by the Prometheus naming guide: base units, ratios, ``_bytes``,
  ``_seconds``; no host label (Prometheus adds the target's labels).

Nothing here raises out of ``collect``: a failing source is ``hmonitor_source_success 0``, a lost
GPU ``hmonitor_gpu_up 0`` with its reason, never a failed scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from hmonitor import __version__
from hmonitor._pb import hm_pb2
from hmonitor.agent.snapshot import SourceStat
from hmonitor.wire import EXPIRED_AT_EPOCH, is_lost, proc_owner

log = logging.getLogger(__name__)

MIB = 1 << 20
MAX_USERS_PER_GPU = 64
OTHER_USER = "(other)"  # no account name has parentheses, so it never hides a real user

# dcgm-exporter renamed its host label from "Hostname" to "hostname" (NVIDIA/dcgm-exporter#655);
# we follow the current name, so dashboards and rules written for today's exporter work.
DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "hostname"]
GPU_LABELS = ["gpu", "uuid", "model"]


@dataclass
class _Families:
    """The metric families of one scrape, made once, filled by the functions below."""

    pids: bool
    dcgm: dict[str, GaugeMetricFamily] = field(default_factory=dict)
    native: dict[str, GaugeMetricFamily] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def d(name: str, doc: str) -> None:
            self.dcgm[name] = GaugeMetricFamily(name, doc, labels=DCGM_LABELS)

        d("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")
        d("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")
        d("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).")
        d("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).")
        d("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).")
        d("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).")
        d("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")
        d("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).")

        def n(name: str, doc: str, labels: list[str]) -> None:
            self.native[name] = GaugeMetricFamily(f"hmonitor_{name}", doc, labels=labels)

        n("gpu_up", "1 for a working GPU, 0 for one the driver lost (reason in error).",
          ["gpu", "error"])
        n("gpu_utilization_ratio", "GPU utilization, 0 to 1 (not on a MIG GPU).", GPU_LABELS)
        n("gpu_memory_used_bytes", "GPU memory in use.", GPU_LABELS)
        n("gpu_memory_total_bytes", "GPU memory, total.", GPU_LABELS)
        n("gpu_temperature_celsius", "GPU temperature.", GPU_LABELS)
        n("gpu_fan_speed_ratio", "Fan speed, 0 to 1 (0 where the GPU has no fan).", GPU_LABELS)
        n("gpu_power_watts", "Power draw.", GPU_LABELS)
        n("gpu_power_limit_watts", "Enforced power limit.", GPU_LABELS)
        n("gpu_sm_clock_hertz", "SM clock frequency.", GPU_LABELS)
        n("gpu_user_memory_bytes", "GPU memory held by one user's processes (at most "
          f"{MAX_USERS_PER_GPU} users per GPU, the rest as user=\"{OTHER_USER}\").",
          ["gpu", "user"])
        n("gpu_user_processes", "Processes of one user on the GPU (bounded as the memory).",
          ["gpu", "user"])
        if self.pids:
            n("process_gpu_memory_bytes", "GPU memory held by one process (--metrics-pids).",
              ["gpu", "pid", "user", "command"])
        n("account_expiry_timestamp_seconds",
          "When the account of a user holding a GPU expires (accounts with an expiry date only).",
          ["user"])
        n("disk_used_bytes", "Disk space in use.", ["mount", "device"])
        n("disk_total_bytes", "Disk size.", ["mount", "device"])
        n("host_load1", "One-minute load average.", [])
        n("host_memory_used_bytes", "Host memory in use (total - available).", [])
        n("host_memory_total_bytes", "Host memory, total.", [])
        n("source_duration_seconds", "How long the last run of each agent source took.",
          ["source"])
        n("source_success", "Whether the last run of each agent source succeeded.", ["source"])
        n("nvml_up", "1 when the GPU library (NVML) answered on the last collection, else 0.", [])

    def all(self) -> list[Metric]:
        return [*self.dcgm.values(), *self.native.values()]


def _gpu(f: _Families, g: hm_pb2.GPUInfo, hostname: str) -> None:
    index = str(g.id)
    if is_lost(g.name):  # only its index and reason are known: no readings, no DCGM series
        f.native["gpu_up"].add_metric([index, g.name], 0)
        return
    f.native["gpu_up"].add_metric([index, ""], 1)
    dcgm = [index, g.uuid, f"nvidia{g.id}", g.name, hostname]
    own = [index, g.uuid, g.name]
    mig = g.HasField("mig_enabled") and g.mig_enabled
    if not mig:  # NVML reports no utilization for a GPU in MIG mode
        f.dcgm["DCGM_FI_DEV_GPU_UTIL"].add_metric(dcgm, g.utilization)
        f.native["gpu_utilization_ratio"].add_metric(own, g.utilization / 100)
    f.dcgm["DCGM_FI_DEV_GPU_TEMP"].add_metric(dcgm, g.temp)
    # Whole MiB, truncated, as dcgm-exporter reports them.
    f.dcgm["DCGM_FI_DEV_FB_USED"].add_metric(dcgm, g.mem_used // MIB)
    f.dcgm["DCGM_FI_DEV_FB_FREE"].add_metric(dcgm, max(g.mem_total - g.mem_used, 0) // MIB)
    f.dcgm["DCGM_FI_DEV_FB_TOTAL"].add_metric(dcgm, g.mem_total // MIB)
    f.dcgm["DCGM_FI_DEV_FAN_SPEED"].add_metric(dcgm, g.fanspeed)
    f.native["gpu_memory_used_bytes"].add_metric(own, g.mem_used)
    f.native["gpu_memory_total_bytes"].add_metric(own, g.mem_total)
    f.native["gpu_temperature_celsius"].add_metric(own, g.temp)
    f.native["gpu_fan_speed_ratio"].add_metric(own, g.fanspeed / 100)
    if g.HasField("power_mw"):
        f.dcgm["DCGM_FI_DEV_POWER_USAGE"].add_metric(dcgm, g.power_mw / 1000)
        f.native["gpu_power_watts"].add_metric(own, g.power_mw / 1000)
    if g.HasField("power_limit_mw"):
        f.native["gpu_power_limit_watts"].add_metric(own, g.power_limit_mw / 1000)
    if g.HasField("sm_clock_mhz"):
        f.dcgm["DCGM_FI_DEV_SM_CLOCK"].add_metric(dcgm, g.sm_clock_mhz)
        f.native["gpu_sm_clock_hertz"].add_metric(own, g.sm_clock_mhz * 1_000_000)
    _users(f, index, g.procs)


def _users(f: _Families, index: str, procs: Iterable[hm_pb2.ProcInfo]) -> None:
    """Per-user memory and process counts on one GPU, at most MAX_USERS_PER_GPU users."""
    held: dict[str, list[int]] = {}  # user -> [bytes, processes]
    for p in procs:
        user = proc_owner(p)
        entry = held.setdefault(user, [0, 0])
        entry[0] += p.mem
        entry[1] += 1
        if f.pids:
            f.native["process_gpu_memory_bytes"].add_metric(
                [index, str(p.pid), user, p.basename], p.mem
            )
    ranked = sorted(held.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    if len(ranked) > MAX_USERS_PER_GPU:
        kept, rest = ranked[: MAX_USERS_PER_GPU - 1], ranked[MAX_USERS_PER_GPU - 1 :]
        ranked = [*kept, (OTHER_USER, [sum(v[0] for _, v in rest), sum(v[1] for _, v in rest)])]
    for user, (mem, count) in ranked:
        f.native["gpu_user_memory_bytes"].add_metric([index, user], mem)
        f.native["gpu_user_processes"].add_metric([index, user], count)


def _expiry(f: _Families, info: hm_pb2.HostInfo) -> None:
    """Expiry of the accounts holding a GPU now, where the account has a date (not unknown or
    never); "expired on day 0" is the date 0. The earliest where one user's processes differ."""
    when: dict[str, int] = {}
    for g in info.gpus:
        for p in g.procs:
            if p.expiration >= EXPIRED_AT_EPOCH:
                date = 0 if p.expiration == EXPIRED_AT_EPOCH else p.expiration
                user = proc_owner(p)
                when[user] = min(when.get(user, date), date)
    for user, date in sorted(when.items()):
        f.native["account_expiry_timestamp_seconds"].add_metric([user], date)


def families(
    info: hm_pb2.HostInfo | None, stats: Mapping[str, SourceStat], *, pids: bool = False
) -> list[Metric]:
    """Every metric family for one snapshot (None: the snapshot failed) and the sources' stats."""
    f = _Families(pids)
    nat = f.native
    stats = dict(stats)  # a collection may add sources meanwhile
    for name, stat in sorted(stats.items()):
        nat["source_duration_seconds"].add_metric([name], stat.seconds)
        nat["source_success"].add_metric([name], 1 if stat.ok else 0)
    gpus = stats.get("gpus")
    nat["nvml_up"].add_metric([], 1 if info is not None and gpus is not None and gpus.ok else 0)
    out: list[Metric] = []
    if info is not None:
        for g in info.gpus:
            _gpu(f, g, info.hostname)
        _expiry(f, info)
        for d in info.disks:
            nat["disk_used_bytes"].add_metric([d.mount, d.device], d.used)
            nat["disk_total_bytes"].add_metric([d.mount, d.device], d.total)
        if info.HasField("load1"):
            nat["host_load1"].add_metric([], info.load1)
        if info.mem_total:
            nat["host_memory_used_bytes"].add_metric([], info.mem_used)
            nat["host_memory_total_bytes"].add_metric([], info.mem_total)
        build = InfoMetricFamily(
            "hmonitor_build",
            "The agent's version and the GPU driver's (1).",
            value={
                "version": info.agent_version or __version__,
                "driver_version": info.driver_version,
                "cuda_version": info.cuda_version,
            },
        )
        out.append(build)
    # A family with no samples says nothing: leave it out of the exposition.
    return [m for m in f.all() if m.samples] + out


class SnapshotMetrics(Collector):
    """A prometheus_client collector over the agent's snapshot (cached) and source stats."""

    def __init__(
        self,
        snapshot: Callable[[], hm_pb2.HostInfo],
        stats: Mapping[str, SourceStat],
        *,
        pids: bool = False,
    ) -> None:
        self._snapshot = snapshot
        self._stats = stats
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        try:
            info: hm_pb2.HostInfo | None = self._snapshot()
        except Exception:  # never a failed scrape: the stats still tell what went wrong
            log.exception("metrics: the snapshot failed")
            info = None
        yield from families(info, self._stats, pids=self._pids)


def build_registry(
    snapshot: Callable[[], hm_pb2.HostInfo],
    stats: Mapping[str, SourceStat],
    *,
    pids: bool = False,
) -> CollectorRegistry:
    """A private registry (no default process or platform collectors) holding our collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotMetrics(snapshot, stats, pids=pids))
    return registry
