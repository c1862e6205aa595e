"""Server-side login sessions: the cookie names a session, the server decides whether it lives.

A signed cookie alone cannot be taken back: a copy made before logout would work for its whole
lifetime. So each login creates a record here (a random id, its expiry, the name given at login
and a fingerprint of the token it was made with); the cookie carries only the id. Logout deletes
the record, a changed token invalidates every record made with the old one, and expiry is
enforced here, not by the browser.

Records live in memory and are written through to ``hmonitor.db`` so sessions survive a restart.
A failed write (full disk) is logged once a minute and the session still works until restart:
logging in must not depend on free disk space.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hmonitor.web.storage import FaultLog, storage_error

log = logging.getLogger(__name__)

MAX_SESSIONS = 10_000  # beyond this the oldest are dropped: memory stays bounded

_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_session (
    sid      TEXT PRIMARY KEY,
    expires  REAL NOT NULL,
    name     TEXT NOT NULL DEFAULT '',
    token_fp TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Session:
    sid: str
    expires: float
    name: str
    token_fp: str


class SessionStore:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self.faults = FaultLog(path, log)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(_SCHEMA)
            self._db.execute("DELETE FROM login_session WHERE expires <= ?", (clock(),))
            rows = self._db.execute(
                "SELECT sid, expires, name, token_fp FROM login_session ORDER BY expires"
            ).fetchall()
        except sqlite3.Error as err:
            raise storage_error(path, err) from None
        self._live: dict[str, Session] = {row[0]: Session(*row) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, *, name: str, lifetime: float, token_fp: str) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), now + lifetime, name, token_fp)
        with self._lock:
            expired = [s.sid for s in self._live.values() if s.expires <= now]
            for sid in expired:
                del self._live[sid]
            while len(self._live) >= MAX_SESSIONS:  # dicts keep insertion order: oldest first
                expired.append(next(iter(self._live)))
                del self._live[expired[-1]]
            self._live[session.sid] = session
            self._write(
                "login",
                [("DELETE FROM login_session WHERE sid = ?", [(sid,) for sid in expired]),
                 ("INSERT INTO login_session VALUES (?, ?, ?, ?)",
                  [(session.sid, session.expires, session.name, session.token_fp)])],
            )
        return session

    def get(self, sid: object, token_fp: str) -> Session | None:
        """The live session ``sid`` made with the current token, else None."""
        if not isinstance(sid, str):
            return None
        session = self._live.get(sid)
        if session is None or session.token_fp != token_fp or session.expires <= self._clock():
            return None
        return session

    def end(self, sid: object) -> None:
        if not isinstance(sid, str):
            return
        with self._lock:
            if self._live.pop(sid, None) is not None:
                self._write("logout", [("DELETE FROM login_session WHERE sid = ?", [(sid,)])])

    def __len__(self) -> int:
        return len(self._live)

    def _write(self, what: str, statements: list[tuple[str, list[tuple[object, ...]]]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self.faults.failed(f"saving a {what}", err)
        else:
            self.faults.worked()
