"""The agent's Prometheus metrics: a custom collector over the cached HostInfo snapshot, read at
scrape time (client_python's "custom collectors"), so a process that exits leaves no stale series.

The HostInfo families (DCGM-compatible and native) are ``hmonitor.metricfamilies``'s, shared with
the dashboard; here the agent adds its own health: its sources' stats, ``nvml_up`` and the build
info. Nothing here raises out of ``collect``: a failing source is ``hmonitor_source_success 0``,
a lost GPU ``hmonitor_gpu_up 0`` with its reason, never a failed scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from hmonitor import __version__
from hmonitor._pb import hm_pb2
from hmonitor.agent.snapshot import SourceStat
from hmonitor.metricfamilies import HostFamilies

log = logging.getLogger(__name__)

__all__ = ["SnapshotMetrics", "build_registry", "families"]

MAX_ERROR_CHARS = 200  # an error label's length at most: a label is not a log
# In the GPU source's error when libnvidia-ml.so.1 is not installed (sources/nvml.py; the
# agent's integration test of /metrics without the library keeps the two in step).
NO_DRIVER = "libnvidia-ml.so.1 not found"


def families(
    info: hm_pb2.HostInfo | None, stats: Mapping[str, SourceStat], *, pids: bool = False
) -> list[Metric]:
    """Every metric family for one snapshot (None: the snapshot failed) and the sources' stats."""
    host = HostFamilies(pids=pids)
    if info is not None:
        host.add(info)

    def n(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"hmonitor_{name}", doc, labels=labels)

    duration = n("source_duration_seconds", "How long the last run of each agent source took.",
                 ["source"])
    success = n("source_success", "Whether the last run of each agent source succeeded.",
                ["source"])
    nvml = n("nvml_up", "1 when the GPU library (NVML) answered on the last collection, else 0 "
             "(none where the NVIDIA driver is not installed).", [])
    stats = dict(stats)  # a collection may add sources meanwhile
    for name, stat in sorted(stats.items()):
        duration.add_metric([name], stat.seconds)
        success.add_metric([name], 1 if stat.ok else 0)
    disk_up = n("disk_up", "1 for a disk whose usage was read, 0 for a mount that hung or failed "
                "(reason in error; it has no size series).", ["mount", "device", "error"])
    if info is not None:
        for d in info.disks:
            disk_up.add_metric([d.mount, d.device, ""], 1)
    disks = stats.get("disks")
    for f in disks.failed_disks if disks is not None else ():
        disk_up.add_metric([f.mount, f.device, f.reason[:MAX_ERROR_CHARS]], 0)
    gpus = stats.get("gpus")
    # The GPU source's own outcome, whatever became of the rest; none where the driver's library
    # is not installed (a host without NVIDIA GPUs: nothing is failing there).
    if gpus is not None and (gpus.ok or NO_DRIVER not in gpus.error):
        nvml.add_metric([], 1 if gpus.ok else 0)
    build = InfoMetricFamily(
        "hmonitor_build",
        "The agent's version and the GPU driver's (1); the driver's empty where unknown.",
        value={
            "version": (info.agent_version if info is not None else "") or __version__,
            "driver_version": info.driver_version if info is not None else "",
            "cuda_version": info.cuda_version if info is not None else "",
        },
    )
    return [*host.metrics(), *(m for m in (disk_up, duration, success, nvml) if m.samples), build]


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
