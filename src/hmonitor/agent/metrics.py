"""The agent's Prometheus metrics: a custom collector over the cached HostInfo snapshot.

Read at scrape time (client_python's "custom collectors"), so a process that exits leaves no stale
series, and a scrape costs no NVML work beyond the snapshot's short cache. The HostInfo families
live in ``hmonitor.metricfamilies`` (the dashboard's /metrics uses them too); here the agent adds
its sources' stats, ``nvml_up`` and the build info. Two families:

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
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from hmonitor import __version__
from hmonitor._pb import hm_pb2
from hmonitor.agent.snapshot import SourceStat
from hmonitor.metricfamilies import MAX_USERS_PER_GPU, OTHER_USER, HostFamilies

log = logging.getLogger(__name__)

__all__ = ["MAX_USERS_PER_GPU", "OTHER_USER", "SnapshotMetrics", "build_registry", "families"]


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
    nvml = n("nvml_up", "1 when the GPU library (NVML) answered on the last collection, else 0.",
             [])
    stats = dict(stats)  # a collection may add sources meanwhile
    for name, stat in sorted(stats.items()):
        duration.add_metric([name], stat.seconds)
        success.add_metric([name], 1 if stat.ok else 0)
    gpus = stats.get("gpus")
    nvml.add_metric([], 1 if info is not None and gpus is not None and gpus.ok else 0)
    out: list[Metric] = [*host.metrics(), *(m for m in (duration, success) if m.samples), nvml]
    if info is not None:
        out.append(InfoMetricFamily(
            "hmonitor_build",
            "The agent's version and the GPU driver's (1).",
            value={
                "version": info.agent_version or __version__,
                "driver_version": info.driver_version,
                "cuda_version": info.cuda_version,
            },
        ))
    return out


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
