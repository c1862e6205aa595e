"""What one dashboard app owns (settings, poller, stores, history) and its one accessor.

``get_state()`` is how pages and API reach it; the state itself knows nothing of Flask beyond
where it is kept (``app.extensions``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import Flask, current_app

from hmonitor.web.history import Agg, HistoryBackend, IdleHog, JobUsage, UsageTotals
from hmonitor.web.history.prometheus import HistoryUnavailable, PrometheusHistory
from hmonitor.web.history.recorder import HistoryRecorder
from hmonitor.web.hoststate import PollerLike
from hmonitor.web.notes import NotesStore
from hmonitor.web.notify.engine import Notifier
from hmonitor.web.notify.outbox import Outbox
from hmonitor.web.reports import Alert, UserReport, alerts_report, users_report
from hmonitor.web.sessions import SessionStore
from hmonitor.web.settings import Settings, load_settings

__all__ = ["GuardedHistory", "ReloadResult", "WebState", "get_state", "prometheus_history"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_KEY = "hmonitor"
HOGS_TTL = 5.0  # seconds: the overview, its alerts and the users page share one query


@dataclass(frozen=True)
class ReloadResult:
    servers: list[str]
    added: list[str]
    removed: list[str]
    changed: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        parts = [f"{len(self.servers)} hosts"]
        for label, names in (("added", self.added), ("removed", self.removed),
                             ("changed", self.changed)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        if len(parts) == 1:
            parts.append("no change")
        return "; ".join(parts)


def prometheus_history(settings: Settings) -> PrometheusHistory:
    """The Prometheus backend that settings.py configures (history_backend = "prometheus")."""
    return PrometheusHistory(
        settings.prometheus_url or "", timeout=settings.prometheus_timeout,
        bearer_token_file=settings.prometheus_bearer_token_file,
        username=settings.prometheus_username, password=settings.prometheus_password,
        job=settings.prometheus_job,
    )


class GuardedHistory:
    """A remote history behind the pages: a query it cannot answer (unreachable, slow, an
    error) gives the empty answer, so every page still renders, and is kept as a fault (shown
    with the storage faults: "history unavailable") until that kind of query succeeds again.

    A store that did not answer at all is left alone for ``BACKOFF`` seconds: a page asks
    several queries, and each would wait its whole deadline on a store that is gone."""

    BACKOFF = 30.0

    def __init__(self, inner: PrometheusHistory) -> None:
        self.inner = inner
        self._faults: dict[str, str] = {}  # query kind -> why it failed last
        self._quiet_until = 0.0  # monotonic: no queries before, after an unreachable store

    @property
    def fault(self) -> str | None:
        return next(iter(self._faults.values()), None)

    def _guarded(self, call: Callable[..., T], empty: T, *args: Any) -> T:
        """``call(*args)`` (a method of the remote history), or ``empty`` when it fails."""
        kind = call.__name__
        if time.monotonic() < self._quiet_until:
            return empty
        try:
            out = call(*args)
        except HistoryUnavailable as err:
            if self._faults.get(kind) != str(err):
                log.warning("history unavailable: %s", err)
            self._faults[kind] = str(err)
            if err.unreachable:
                self._quiet_until = time.monotonic() + self.BACKOFF
            return empty
        self._faults.pop(kind, None)
        return out

    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        empty: tuple[list[float], list[float]] = ([], [])
        return self._guarded(self.inner.series, empty, host, gpu, metric, since, until,
                             max_points, agg)

    def sparklines(
        self, window: float, now: float, points: int = 60, hosts: Iterable[str] | None = None,
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        return self._guarded(self.inner.sparklines, {}, window, now, points, hosts)

    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]:
        empty: tuple[list[float], dict[str, list[float]]] = ([], {})
        return self._guarded(self.inner.process_series, empty, host, gpu, since, until, max_points)

    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]:
        return self._guarded(self.inner.user_usage, {}, now, windows)

    def job_usage(self, now: float, window: float, limit: int = 200) -> list[JobUsage]:
        return self._guarded(self.inner.job_usage, [], now, window, limit)

    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]:
        return self._guarded(self.inner.idle_hogs, [], now, util_threshold, min_seconds)

    def host_uptime(self, host: str, since: float, until: float) -> float | None:
        return self._guarded(self.inner.host_uptime, None, host, since, until)

    def gpus(self) -> list[tuple[str, int, str]]:
        return self._guarded(self.inner.gpus, [])

    def close(self) -> None:
        self.inner.close()


@dataclass
class WebState:
    """Everything one app instance owns; reached from pages and API through ``get_state()``."""

    settings: Settings
    poller: PollerLike
    notes: NotesStore
    sessions: SessionStore
    data_dir: Path
    recorder: HistoryRecorder  # feeds the history every polling round
    started_poller: bool = False
    #: Called after the recorder with each polling round's states and start time, on the
    #: poller's notifier thread (off the polling loop): work that follows the rounds.
    round_listeners: list[Callable[[list[Any], float], None]] = field(default_factory=list)
    notifier: Notifier | None = None  # alerts told by e-mail and webhooks
    outbox: Outbox | None = None  # sends the notifier's messages
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hogs: tuple[float, list[IdleHog]] | None = field(default=None, repr=False)
    _remote: GuardedHistory | None = field(default=None, repr=False)

    def install(self, app: Flask) -> None:
        app.extensions[_KEY] = self

    @property
    def backend(self) -> HistoryBackend:
        """Where pages, API, reports and the History gRPC service read the history: SQLite,
        or Prometheus with ``history_backend = "prometheus"``.

        With Prometheus the SQLite recorder still records: it is what finds idle GPU hogs after
        every round with their pid and process name (the agents' families carry neither), and
        the local copy to fall back on. A Prometheus that cannot answer gives empty answers and
        a storage fault ("history unavailable"), never a broken page.
        """
        if self.settings.history_backend != "prometheus":
            return self.recorder.store
        if self._remote is None:
            self._remote = GuardedHistory(prometheus_history(self.settings))
        return self._remote

    def idle_hogs(self, now: float) -> list[IdleHog]:
        """Processes holding an idle GPU for long, except on GPUs in MIG mode, whose
        utilization NVML does not report (every process there would look idle)."""
        hogs = self._idle_hogs(now)
        if not hogs:
            return hogs
        mig = {(h.name, g.id) for h in self.poller.hosts() if h.info is not None
               for g in h.info.gpus if g.mig_enabled}
        return [h for h in hogs if (h.host, h.gpu) not in mig] if mig else hogs

    def _idle_hogs(self, now: float) -> list[IdleHog]:
        """As the recorder found them after the last round, else asked of the history at most
        once per HOGS_TTL."""
        if self.recorder.idle_hogs is not None:
            return self.recorder.idle_hogs
        cached = self._hogs
        if cached is not None and 0 <= now - cached[0] < HOGS_TTL:
            return cached[1]
        hogs = self.backend.idle_hogs(now, util_threshold=self.settings.idle_util_threshold,
                                      min_seconds=self.settings.idle_minutes * 60)
        self._hogs = (now, hogs)
        return hogs

    def users(self, now: float) -> list[UserReport]:
        return users_report(self.poller.hosts(), self.backend, self.idle_hogs(now), now)

    def alerts(self, now: float) -> list[Alert]:
        return alerts_report(self.poller.hosts(), self.idle_hogs(now), self.storage_faults())

    def storage_faults(self) -> dict[str, str]:
        """Data files that cannot be written now (full disk, read-only): path -> one line."""
        faults = {}
        if self.recorder.fault:
            faults[str(self.recorder.path)] = self.recorder.fault
        if self._remote is not None and self._remote.fault:
            faults[self._remote.inner.url] = f"history unavailable: {self._remote.fault}"
        for store in (self.notes.faults, self.sessions.faults):
            if store.problem:
                faults[str(store.path)] = f"{store.path}: {store.problem}"
        return faults

    def reload_servers(self) -> ReloadResult:
        """Re-reads settings.py and hands its ``servers`` to the poller.

        Used by SIGHUP (cli) and the admin button/API alike. Only ``servers`` is applied: the
        token, secret and data dir of a running app stay as they were started. Raises
        ``SettingsError`` for a malformed file, leaving the running hosts untouched.
        """
        with self._reload_lock:
            fresh = load_settings(self.settings.path)
            old = self.settings.servers
            new = dict(fresh.servers)
            self.poller.set_servers(new)
            self.settings = dataclasses.replace(self.settings, servers=new)
        return ReloadResult(
            servers=list(new),
            added=[n for n in new if n not in old],
            removed=[n for n in old if n not in new],
            changed=[n for n in new if n in old and old[n] != new[n]],
        )

    def close(self) -> None:
        if self.started_poller:
            self.poller.stop()
        if self.outbox is not None:
            self.outbox.close()
        if self.notifier is not None:
            self.notifier.store.close()
        self.notes.close()
        self.sessions.close()
        self.recorder.close()
        if self._remote is not None:
            self._remote.close()


def get_state(app: Flask | None = None) -> WebState:
    return cast(WebState, (app or current_app).extensions[_KEY])
