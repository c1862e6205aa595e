"""What one dashboard app owns (settings, poller, stores, history) and its one accessor.

``get_state()`` is how pages and API reach it; the state itself knows nothing of Flask beyond
where it is kept (``app.extensions``).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from flask import Flask, current_app

from hmonitor.web.history import HistoryBackend, IdleHog
from hmonitor.web.history.recorder import HistoryRecorder
from hmonitor.web.hoststate import PollerLike
from hmonitor.web.notes import NotesStore
from hmonitor.web.reports import Alert, UserReport, alerts_report, users_report
from hmonitor.web.sessions import SessionStore
from hmonitor.web.settings import Settings, load_settings

__all__ = ["ReloadResult", "WebState", "get_state"]

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
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hogs: tuple[float, list[IdleHog]] | None = field(default=None, repr=False)

    def install(self, app: Flask) -> None:
        app.extensions[_KEY] = self

    @property
    def backend(self) -> HistoryBackend:
        """Where pages, API, reports and the History gRPC service read the history."""
        return self.recorder.store

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
        self.notes.close()
        self.sessions.close()
        self.recorder.close()


def get_state(app: Flask | None = None) -> WebState:
    return cast(WebState, (app or current_app).extensions[_KEY])
