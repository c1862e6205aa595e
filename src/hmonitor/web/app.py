"""``create_app(settings)``: the one place the dashboard is wired together.

Nothing lives at module level, so tests (and a future multi-app process) can build as many apps
as they like. The order: the data dir and its stores, the history and the poller that feeds it,
the state that holds them, then the gate (auth), the pages and the API.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from flask import Flask
from flask_compress import Compress

from hmonitor.web import api, auth, pages
from hmonitor.web.history.recorder import HistoryRecorder
from hmonitor.web.hoststate import PollerLike
from hmonitor.web.notes import NotesStore
from hmonitor.web.notify.engine import Notifier
from hmonitor.web.notify.outbox import Outbox
from hmonitor.web.notify.store import AlertStore
from hmonitor.web.sessions import SessionStore
from hmonitor.web.settings import Settings
from hmonitor.web.state import WebState
from hmonitor.web.storage import storage_error

__all__ = ["MAX_BODY_BYTES", "create_app", "data_dir_of"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # the largest request body taken, by waitress and by Flask


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir if settings.data_dir is not None else settings.path.parent


def _poller_from_settings(
    settings: Settings, on_round: Callable[[list[Any], float], None] | None
) -> PollerLike:
    # Imported here: only a real run needs gRPC; tests and tools inject their own poller.
    from hmonitor.web.channels import credentials_from_settings  # noqa: PLC0415
    from hmonitor.web.poller import Poller  # noqa: PLC0415

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
    on_round: Callable[[list[Any], float], None] | None = None,
) -> Flask:
    """Builds the dashboard app for ``settings``.

    Without ``poller`` one is built from the settings (TLS, agent token, interval, timeout),
    recording every round in the history (and handing it to ``on_round`` too, if given). With
    ``start_poller`` it is started: a first round at once in the background, then one per
    interval. A data file that cannot be used raises ``StorageError`` naming it.
    """
    data_dir = data_dir_of(settings)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(data_dir, err) from None
    try:
        secret = auth.load_or_create_secret(settings.secret, data_dir)
    except OSError as err:
        raise storage_error(data_dir / auth.SECRET_FILE, err) from None

    app = Flask("hmonitor.web")
    app.config.update(
        SECRET_KEY=secret,
        # Notes are a few KB; nothing here needs a big body, and Flask would read it whole.
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
        SESSION_COOKIE_NAME="hmonitor_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime),
        # CSRF is checked by the gate (auth), which knows when a Bearer token replaces it.
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

    recorder = HistoryRecorder(settings, data_dir)
    listeners: list[Callable[[list[Any], float], None]] = []

    def record_round(states: list[Any], started: float) -> None:
        recorder.on_round(states, started)
        for listener in listeners:
            try:
                listener(states, started)
            except Exception:  # one listener's bug must not starve the others
                log.exception("a round listener failed: %r", listener)
        if on_round is not None:
            on_round(states, started)

    if poller is None:
        poller = _poller_from_settings(settings, record_round)
    notes = NotesStore.in_dir(data_dir)
    state = WebState(
        settings=settings, poller=poller, notes=notes, sessions=SessionStore(notes.path),
        data_dir=data_dir, recorder=recorder, round_listeners=listeners,
    )
    state.install(app)
    _notifications(state, listeners)

    auth.init_app(app, state.sessions, settings.failed_login_limit)
    pages.register(app)
    api.register(app)
    Compress(app)

    if start_poller:
        if state.outbox is not None:
            state.outbox.start()
        poller.start()
        state.started_poller = True
    return app


def _notifications(state: WebState, listeners: list[Callable[[list[Any], float], None]]) -> None:
    """The notifier after every round (after the recorder, whose idle hogs it reads) and the
    outbox that sends its messages; the state kept in alerts.sqlite in the data dir."""
    path = state.data_dir / "alerts.sqlite"
    try:
        store = AlertStore(path)
    except sqlite3.Error as err:
        raise storage_error(path, err) from None
    config = state.settings.notify
    outbox = Outbox(store, config.sender, first_retry=config.retry_seconds)

    def expirations(now: float) -> list[tuple[str, int]]:
        return [(u.user, u.expiration) for u in state.users(now)]

    notifier = Notifier(store, config, hogs=state.idle_hogs, expirations=expirations,
                        wake=outbox.wake)
    state.notifier, state.outbox = notifier, outbox
    listeners.append(notifier.on_round)
