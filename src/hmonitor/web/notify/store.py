"""The notifications' state in SQLite (``alerts.sqlite`` in the data dir): alerts and what was
sent about them, silences, the outbox of deliveries with their attempts, and subscriptions.

Kept on disk so a restart neither sends again what was sent nor forgets what is firing. One
connection, used under a lock by the round listener, the outbox's workers and the pages.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AlertRow", "AlertStore", "Delivery", "Subscription"]

KEEP_RESOLVED_S = 7 * 86400
KEEP_DELIVERIES_S = 30 * 86400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,        -- rule:host:...: one condition
    rule TEXT NOT NULL,
    host TEXT NOT NULL,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL,         -- pending (waiting for its minutes), firing, resolved
    first_seen REAL NOT NULL,
    started REAL,                -- when it fired
    ended REAL,                  -- when it was resolved
    last_sent REAL,              -- its last message (start or reminder); NULL: none yet
    acked_by TEXT,
    acked_at REAL
);
CREATE TABLE IF NOT EXISTS silences (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL,
    by TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    channel TEXT NOT NULL,       -- email, webhook:N, apprise:N
    recipients TEXT NOT NULL,    -- JSON list (e-mail only)
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    payload TEXT NOT NULL,       -- JSON
    status TEXT NOT NULL,        -- pending, sent, failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_try);
CREATE TABLE IF NOT EXISTS subscriptions (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    by TEXT NOT NULL,            -- who asked (login name or API)
    email TEXT NOT NULL,         -- where to tell
    gpus INTEGER NOT NULL,       -- K GPUs ...
    min_free REAL NOT NULL,      -- ... each with at least this many bytes free ...
    host TEXT NOT NULL           -- ... on one host: this one, or any ("")
);
"""


@dataclass(frozen=True)
class AlertRow:
    key: str
    rule: str
    host: str
    user: str
    text: str
    state: str
    first_seen: float
    started: float | None
    ended: float | None
    last_sent: float | None
    acked_by: str | None
    acked_at: float | None
    silenced_until: float | None = None
    silenced_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.key, "rule": self.rule, "host": self.host, "user": self.user,
                "text": self.text, "state": self.state, "first_seen": self.first_seen,
                "started": self.started, "ended": self.ended, "last_sent": self.last_sent,
                "acked_by": self.acked_by, "acked_at": self.acked_at,
                "silenced_until": self.silenced_until, "silenced_by": self.silenced_by}


@dataclass(frozen=True)
class Delivery:
    id: int
    created: float
    channel: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_try: float
    last_error: str
    sent_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "channel": self.channel,
                "recipients": list(self.recipients), "subject": self.subject,
                "status": self.status, "attempts": self.attempts, "next_try": self.next_try,
                "last_error": self.last_error, "sent_at": self.sent_at}


@dataclass(frozen=True)
class Subscription:
    id: int
    created: float
    by: str
    email: str
    gpus: int
    min_free: float
    host: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "by": self.by, "email": self.email,
                "gpus": self.gpus, "min_free_bytes": int(self.min_free), "host": self.host}


_ALERT_COLS = ("a.key, a.rule, a.host, a.user, a.text, a.state, a.first_seen, a.started, "
               "a.ended, a.last_sent, a.acked_by, a.acked_at, s.until, s.by")
_DELIVERY_COLS = ("id, created, channel, recipients, subject, body, payload, status, attempts, "
                  "next_try, last_error, sent_at")


def _alert(row: Sequence[Any], now: float) -> AlertRow:
    until = row[12] if row[12] is not None and row[12] > now else None
    return AlertRow(key=row[0], rule=row[1], host=row[2], user=row[3], text=row[4],
                    state=row[5], first_seen=row[6], started=row[7], ended=row[8],
                    last_sent=row[9], acked_by=row[10], acked_at=row[11],
                    silenced_until=until, silenced_by=row[13] if until else None)


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5],
                    json.loads(row[6]), row[7], row[8], row[9], row[10], row[11])


class AlertStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, under the store's lock."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- alerts -------------------------------------------------------------------------------

    def open_alerts(self, conn: sqlite3.Connection, now: float) -> dict[str, AlertRow]:
        """Pending and firing alerts, with their silences."""
        rows = conn.execute(f"SELECT {_ALERT_COLS} FROM alerts a LEFT JOIN silences s "
                            "ON s.key = a.key WHERE a.state != 'resolved'")
        return {r[0]: _alert(r, now) for r in rows}

    def alerts(self, now: float, since: float | None = None) -> list[AlertRow]:
        """Firing alerts, then those resolved since ``since`` (default a week), newest first."""
        since = now - KEEP_RESOLVED_S if since is None else since
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ALERT_COLS} FROM alerts a LEFT JOIN silences s ON s.key = a.key "
                "WHERE a.state = 'firing' OR (a.state = 'resolved' AND a.ended >= ?) "
                "ORDER BY a.state = 'resolved', COALESCE(a.ended, a.started) DESC", (since,))
            return [_alert(r, now) for r in rows]

    def alert(self, key: str, now: float) -> AlertRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_ALERT_COLS} FROM alerts a LEFT JOIN silences s ON s.key = a.key "
                "WHERE a.key = ?", (key,)).fetchone()
        return None if row is None else _alert(row, now)

    @staticmethod
    def silenced(conn: sqlite3.Connection, key: str, now: float) -> float | None:
        """Until when ``key`` is silenced, None if it is not."""
        row = conn.execute("SELECT until FROM silences WHERE key = ? AND until > ?",
                           (key, now)).fetchone()
        return None if row is None else float(row[0])

    def silences(self, now: float) -> list[tuple[str, float, str]]:
        """(key, until, by) of every silence in force, soonest to end first."""
        with self._lock:
            rows = self._conn.execute("SELECT key, until, by FROM silences WHERE until > ? "
                                      "ORDER BY until", (now,)).fetchall()
        return [(str(k), float(u), str(b)) for k, u, b in rows]

    def silence(self, key: str, until: float, by: str, now: float) -> None:
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?)",
                         (key, until, by, now))

    def unsilence(self, key: str) -> bool:
        with self.tx() as conn:
            return conn.execute("DELETE FROM silences WHERE key = ?", (key,)).rowcount > 0

    def ack(self, key: str, by: str, now: float) -> bool:
        with self.tx() as conn:
            return conn.execute("UPDATE alerts SET acked_by = ?, acked_at = ? WHERE key = ? "
                                "AND state = 'firing'", (by, now, key)).rowcount > 0

    def prune(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM alerts WHERE state = 'resolved' AND ended < ?",
                     (now - KEEP_RESOLVED_S,))
        conn.execute("DELETE FROM silences WHERE until < ?", (now,))
        conn.execute("DELETE FROM deliveries WHERE status != 'pending' AND created < ?",
                     (now - KEEP_DELIVERIES_S,))

    # --- deliveries ---------------------------------------------------------------------------

    @staticmethod
    def enqueue(conn: sqlite3.Connection, now: float, channel: str, recipients: Sequence[str],
                subject: str, body: str, payload: dict[str, Any]) -> int:
        cur = conn.execute(
            "INSERT INTO deliveries (created, channel, recipients, subject, body, payload, "
            "status, next_try) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
            (now, channel, json.dumps(list(recipients)), subject, body, json.dumps(payload),
             now))
        return int(cur.lastrowid or 0)

    def due(self, now: float, busy: set[str]) -> tuple[list[Delivery], float | None]:
        """Pending deliveries due now, the oldest first per channel not ``busy``; and when the
        next one not due yet is (None: none)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE status = 'pending' "
                "ORDER BY next_try, id").fetchall()
        out: list[Delivery] = []
        taken = set(busy)
        later = None
        for row in rows:
            d = _delivery(row)
            if d.next_try > now:
                later = d.next_try if later is None else min(later, d.next_try)
            elif d.channel not in taken:
                taken.add(d.channel)
                out.append(d)
        return out, later

    def delivered(self, id_: int, now: float) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE deliveries SET status = 'sent', sent_at = ?, "
                         "attempts = attempts + 1, last_error = '' WHERE id = ?", (now, id_))

    def failed(self, id_: int, error: str, next_try: float | None) -> None:
        """A failed attempt: tried again at ``next_try``, or given up (None)."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, "
                "status = ?, next_try = COALESCE(?, next_try) WHERE id = ?",
                (error, "pending" if next_try is not None else "failed", next_try, id_))

    def deliveries(self, limit: int = 100) -> list[Delivery]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_DELIVERY_COLS} FROM deliveries "
                                      "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_delivery(r) for r in rows]

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(self, now: float, by: str, email: str, gpus: int, min_free: float,
                  host: str) -> Subscription:
        with self.tx() as conn:
            cur = conn.execute("INSERT INTO subscriptions (created, by, email, gpus, min_free, "
                               "host) VALUES (?, ?, ?, ?, ?, ?)",
                               (now, by, email, gpus, min_free, host))
            return Subscription(int(cur.lastrowid or 0), now, by, email, gpus, min_free, host)

    def subscriptions(self, conn: sqlite3.Connection | None = None) -> list[Subscription]:
        with self._lock:
            rows = (conn or self._conn).execute(
                "SELECT id, created, by, email, gpus, min_free, host FROM subscriptions "
                "ORDER BY id").fetchall()
        return [Subscription(*r) for r in rows]

    def unsubscribe(self, id_: int, conn: sqlite3.Connection | None = None) -> bool:
        if conn is not None:
            return conn.execute("DELETE FROM subscriptions WHERE id = ?", (id_,)).rowcount > 0
        with self.tx() as c:
            return c.execute("DELETE FROM subscriptions WHERE id = ?", (id_,)).rowcount > 0
