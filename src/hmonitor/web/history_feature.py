"""Wires the history store into the dashboard: ingest every polling round, maintain the store
now and then, answer the spec's History gRPC service, and derive users and alerts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from hmonitor.web.history import IdleHog, SqliteHistory
from hmonitor.web.history_service import HistoryService, start_history_server
from hmonitor.web.hoststate import HostSample
from hmonitor.web.settings import Settings

log = logging.getLogger(__name__)

MAINTAIN_EVERY_S = 120.0  # rollups and retention: cheap, incremental, off the request path
MAINTAIN_BUDGET_S = 2.0
DISK_WARN = 0.90
USAGE_WINDOWS = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


@dataclass(frozen=True)
class Alert:
    kind: str  # host_down | disk_full | idle_hog
    host: str
    message: str
    since: float | None = None
    detail: dict[str, object] = field(default_factory=dict)  # the kind's own fields

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "host": self.host,
            "message": self.message,
            "since": self.since,
            **self.detail,
        }


class HistoryFeature:
    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = SqliteHistory(
            data_dir / "history.sqlite",
            raw_days=settings.history_raw_days,
            keep_days=settings.history_keep_days,
            interval=settings.interval,
        )
        self._clock = clock
        self._last_maintain = 0.0
        self._grpc: grpc.Server | None = None
        self._lock = threading.Lock()

    def on_round(self, states: Sequence[HostSample], started: float) -> None:
        """The poller's callback (its own thread): one transaction per round."""
        try:
            self.store.ingest(states, started)
            if started - self._last_maintain >= MAINTAIN_EVERY_S:
                self._last_maintain = started
                self.store.maintain(started, budget_s=MAINTAIN_BUDGET_S)
        except Exception:
            log.exception("history: could not store the round of %s", time.ctime(started))

    def idle_hogs(self) -> list[IdleHog]:
        return self.store.idle_hogs(
            self._clock(),
            util_threshold=self.settings.idle_util_threshold,
            min_seconds=self.settings.idle_minutes * 60,
        )

    def start_grpc(self, known_hosts: Callable[[], set[str]]) -> int:
        """Serve `gpu.History` at settings.history_addr; returns the bound port."""
        service = HistoryService(self.store, known_hosts, clock=self._clock)
        self._grpc, port = start_history_server(self.settings.history_addr, service)
        return port

    def close(self) -> None:
        with self._lock:
            if self._grpc is not None:
                self._grpc.stop(grace=1.0).wait()
                self._grpc = None
            self.store.close()
