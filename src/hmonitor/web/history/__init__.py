"""The dashboard's history: one package.

* ``backend.py``: ``HistoryBackend``, the seam pages, API, reports and the gRPC service read
  through, and ``HistoryWriter``, what the recorder feeds;
* ``store.py``: ``SqliteHistory``, the embedded backend, in parts: ``_core.py`` (connections,
  schema, transactions), ``ingest.py``, ``maintenance.py`` (roll-ups, compaction, retention),
  ``queries.py`` (series, sparklines), ``accounting.py`` (usage per user and per Slurm job,
  idle processes);
* ``recorder.py``: what the poller calls every round (ingest, maintenance at its cadence,
  storage faults in one line a minute);
* ``service.py``: the spec's ``gpu.History/GetHistory`` gRPC service;
* ``windows.py``: the named windows people pick from.
"""

from __future__ import annotations

from .backend import (
    GPU_METRICS,
    Agg,
    GpuMetric,
    HistoryBackend,
    HistoryWriter,
    IdleHog,
    JobUsage,
    MaintainReport,
    UsageTotals,
)
from .store import SqliteHistory

__all__ = [
    "GPU_METRICS",
    "Agg",
    "GpuMetric",
    "HistoryBackend",
    "HistoryWriter",
    "IdleHog",
    "JobUsage",
    "MaintainReport",
    "SqliteHistory",
    "UsageTotals",
]
