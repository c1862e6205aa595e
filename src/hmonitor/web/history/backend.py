"""The seam between the dashboard and whatever keeps its history.

``HistoryBackend`` is what pages, API, reports and the spec's History gRPC service read;
``HistoryWriter`` is what the recorder feeds every polling round. ``SqliteHistory`` (the
embedded default) is both; a backend that keeps history elsewhere (Prometheus, which scrapes the
agents itself) implements the first only. Times are Unix seconds; windows are [since, until).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from hmonitor.web.hoststate import HostSample

__all__ = [
    "GPU_METRICS",
    "Agg",
    "GpuMetric",
    "HistoryBackend",
    "HistoryWriter",
    "IdleHog",
    "JobUsage",
    "MaintainReport",
    "UsageTotals",
]

GpuMetric = Literal["util", "mem", "mem_total", "temp", "fan"]
GPU_METRICS: tuple[str, ...] = ("util", "mem", "mem_total", "temp", "fan")
Agg = Literal["avg", "max"]


@dataclass(frozen=True)
class UsageTotals:
    gpu_hours: float  # a GPU shared by k users in a sample counts 1/k for each
    gpu_mem_gib_hours: float  # the user's own GPU memory, GiB times hours


@dataclass(frozen=True)
class JobUsage:
    """A Slurm job's use of GPUs in a window (one per job and user: a job has one owner)."""

    job: int  # the Slurm job id
    user: str
    gpu_hours: float  # in the window; a GPU shared by k jobs (and their users) is split, see
    gpu_mem_gib_hours: float  # ...`job_usage`; the job's own GPU memory, GiB times hours
    first_seen: float  # Unix time of its first and last sample in the history kept (not cut to
    last_seen: float  # ...the window)
    hosts: tuple[str, ...]  # where it ran, sorted


@dataclass(frozen=True)
class IdleHog:
    host: str
    gpu: int
    pid: int
    user: str
    basename: str
    mem: int  # bytes, in the latest sample
    since: float  # Unix time of the first sample of the idle run
    idle_seconds: float  # latest sample minus `since`


@dataclass(frozen=True)
class MaintainReport:
    rolled_minutes: int
    compacted_slices: int
    deleted_rows: int
    seconds: float
    done: bool  # False when the time budget ran out with work left (call again)
    pieces: int = 0  # transactions taken
    longest_s: float = 0.0  # the longest of them: the longest the write lock was held
    compacted_rows: int = 0  # head rows moved into chunks (slices finish over several calls)
    kind_seconds: tuple[float, float, float] = (0.0, 0.0, 0.0)  # roll-up, compaction, retention


class HistoryBackend(Protocol):
    """The history as pages, API, reports and the History gRPC service read it."""

    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]: ...
    def sparklines(
        self, window: float, now: float, points: int = 60, hosts: Iterable[str] | None = None,
    ) -> dict[tuple[str, int], dict[str, list[float]]]: ...
    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]: ...
    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]: ...
    def job_usage(self, now: float, window: float, limit: int = 200) -> list[JobUsage]: ...
    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]: ...
    def host_uptime(self, host: str, since: float, until: float) -> float | None: ...
    def gpus(self) -> list[tuple[str, int, str]]: ...
    def close(self) -> None: ...


class HistoryWriter(Protocol):
    """What the recorder hands every polling round to, and asks to maintain itself."""

    def ingest(self, states: Sequence[HostSample], t: float) -> None: ...
    def maintain(self, now: float, *, budget_s: float | None = None) -> MaintainReport: ...
