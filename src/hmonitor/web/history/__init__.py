"""The dashboard's durable history: storage, queries and accounting (see store.py)."""

from __future__ import annotations

from .store import (
    GPU_METRICS,
    Agg,
    GpuMetric,
    HistoryStore,
    IdleHog,
    MaintainReport,
    SqliteHistory,
    UsageTotals,
)

__all__ = [
    "GPU_METRICS",
    "Agg",
    "GpuMetric",
    "HistoryStore",
    "IdleHog",
    "MaintainReport",
    "SqliteHistory",
    "UsageTotals",
]
