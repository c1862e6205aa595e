"""The dashboard: polls the agents, keeps history, serves pages and APIs.

``create_app(settings)`` builds a fresh Flask app; nothing lives at module level, so tests (and a
future multi-app process) can create as many as they like. Blueprints are registered from one list
in ``create_app``; a new part (e.g. history) adds its blueprint there.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from flask import Flask, current_app
from flask_compress import Compress

from hmonitor.web.history_feature import HistoryFeature
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.jsonview import PollerLike
from hmonitor.web.notes import NotesStore
from hmonitor.web.sessions import SessionStore
from hmonitor.web.settings import Settings, load_settings
from hmonitor.web.storage import storage_error

__all__ = ["HostStateLike", "PollerLike", "ReloadResult", "WebState", "create_app", "get_state"]


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
    """Everything one app instance owns; reached from views through ``get_state()``."""

    settings: Settings
    poller: PollerLike
    notes: NotesStore
    sessions: SessionStore
    data_dir: Path
    history: HistoryFeature | None = None
    started_poller: bool = False
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        if self.history is not None:
            self.history.close()


MAX_BODY_BYTES = 64 * 1024  # the largest request body taken, by waitress and by Flask


def get_state(app: Flask | None = None) -> WebState:
    return cast(WebState, (app or current_app).extensions["hmonitor"])


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir if settings.data_dir is not None else settings.path.parent


def _poller_from_settings(
    settings: Settings, on_round: Callable[[list[Any], float], None] | None
) -> PollerLike:
    # Imported here: only a real run needs gRPC; tests and tools inject their own poller.
    from hmonitor.web.poller import Poller, credentials_from_settings  # noqa: PLC0415

    return cast(
        PollerLike,
        Poller(
            dict(settings.servers),
            interval=settings.interval,
            timeout=settings.timeout,
            credentials=credentials_from_settings(settings),
            server_name=settings.tls_server_name,
            agent_token=settings.agent_token,
            on_round=on_round,
        ),
    )


def create_app(
    settings: Settings,
    *,
    poller: PollerLike | None = None,
    start_poller: bool = True,
    blueprints: list[Callable[[Flask], Any]] | None = None,
    on_round: Callable[[list[Any], float], None] | None = None,
) -> Flask:
    """Builds the dashboard app for ``settings``.

    Without ``poller`` one is built from the settings (TLS, agent token, interval, timeout).
    With ``start_poller`` it is started: a first round at once in the background, then one per
    interval. ``blueprints`` are extra ``register(app)`` callables run after the built-in ones;
    ``on_round(states, started)`` is handed to a poller built here (e.g. to record history).
    """
    # They import get_state from here.
    from hmonitor.web import api, auth, history_api, views  # noqa: PLC0415

    data_dir = data_dir_of(settings)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(data_dir, err) from None
    try:
        secret = auth.load_or_create_secret(settings.secret, data_dir)
    except OSError as err:
        raise storage_error(data_dir / auth.SECRET_FILE, err) from None

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret,
        # Notes are a few KB; nothing here needs a big body, and Flask would read it whole.
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
        SESSION_COOKIE_NAME="hmonitor_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime),
        # CSRF is checked by auth's before_request, which knows when a Bearer token replaces it.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        COMPRESS_MIMETYPES=[
            "text/html", "text/css", "application/javascript", "text/javascript",
            "application/json",
        ],
        COMPRESS_MIN_SIZE=1024,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]

    history = HistoryFeature(settings, data_dir)
    app.extensions["hmonitor_history"] = history

    def record_round(states: list[Any], started: float) -> None:
        history.on_round(states, started)
        if on_round is not None:
            on_round(states, started)

    if poller is None:
        poller = _poller_from_settings(settings, record_round)
    notes = NotesStore.in_dir(data_dir)
    state = WebState(
        settings=settings, poller=poller, notes=notes,
        sessions=SessionStore(notes.path), data_dir=data_dir, history=history,
    )
    app.extensions["hmonitor"] = state

    auth.init_app(app, state.sessions, settings.failed_login_limit)
    views.init_app(app)
    api.init_app(app)
    history_api.init_app(app)
    for register in blueprints or []:
        register(app)

    Compress(app)

    if start_poller:
        poller.start()
        state.started_poller = True
    return app
