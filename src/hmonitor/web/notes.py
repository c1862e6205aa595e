"""Notes per ``user@host`` and the notice board, kept in SQLite in the data dir.

Text is stored as typed: escaping is the templates' job on output, never a filter on input.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "hmonitor.db"
MAX_USER = 64
MAX_HOST = 128
MAX_NOTE = 2000
MAX_NOTICE = 4000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    user       TEXT NOT NULL,
    host       TEXT NOT NULL,
    note       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user, host)
);
CREATE TABLE IF NOT EXISTS notice (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    text       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL DEFAULT ''
);
"""


class NoteError(ValueError):
    """A note or notice that cannot be stored; the message is meant for the user."""


@dataclass(frozen=True)
class Note:
    user: str
    host: str
    note: str
    updated_at: float
    updated_by: str

    def as_dict(self) -> dict[str, str | float]:
        return {
            "user": self.user,
            "host": self.host,
            "note": self.note,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class Notice:
    text: str
    updated_at: float | None
    updated_by: str

    def as_dict(self) -> dict[str, str | float | None]:
        return {"notice": self.text, "updated_at": self.updated_at, "updated_by": self.updated_by}


def _clean_key(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise NoteError(f"{what} is required")
    if len(value) > limit:
        raise NoteError(f"{what} is longer than {limit} characters")
    if any(ch in value for ch in "\r\n\t\0"):
        raise NoteError(f"{what} must be a single line")
    return value


class NotesStore:
    """Thread-safe store; waitress serves requests from several threads.

    One connection behind a lock is enough: notes are a handful of rows and writes are rare, and
    it avoids a connection per thread that would never be closed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL plus NORMAL is durable against application crashes, which is what notes need.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path) -> NotesStore:
        return cls(data_dir / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- notes -------------------------------------------------------------------------------

    def notes(self, *, host: str | None = None) -> list[Note]:
        sql = "SELECT user, host, note, updated_at, updated_by FROM notes"
        args: tuple[str, ...] = ()
        if host is not None:
            sql += " WHERE host = ?"
            args = (host,)
        sql += " ORDER BY host, user"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Note(*row) for row in rows]

    def get(self, user: str, host: str) -> Note | None:
        with self._lock:
            row = self._db.execute(
                "SELECT user, host, note, updated_at, updated_by FROM notes"
                " WHERE user = ? AND host = ?",
                (user.strip(), host.strip()),
            ).fetchone()
        return Note(*row) if row else None

    def put(self, user: str, host: str, note: str, *, by: str = "") -> Note:
        """Adds or replaces the note of ``user@host``; an empty note is an error, not a delete."""
        user = _clean_key(user, "user", MAX_USER)
        host = _clean_key(host, "host", MAX_HOST)
        note = note.strip()
        if not note:
            raise NoteError("note is empty")
        if len(note) > MAX_NOTE:
            raise NoteError(f"note is longer than {MAX_NOTE} characters")
        saved = Note(user, host, note, time.time(), by[:200])
        with self._lock:
            self._db.execute(
                "INSERT INTO notes (user, host, note, updated_at, updated_by)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user, host) DO UPDATE SET note = excluded.note,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (saved.user, saved.host, saved.note, saved.updated_at, saved.updated_by),
            )
        return saved

    def delete(self, user: str, host: str) -> bool:
        """Removes the note of ``user@host``; False when there was none."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM notes WHERE user = ? AND host = ?", (user.strip(), host.strip())
            )
        return cur.rowcount > 0

    # -- notice ------------------------------------------------------------------------------

    def notice(self) -> Notice:
        with self._lock:
            row = self._db.execute(
                "SELECT text, updated_at, updated_by FROM notice WHERE id = 1"
            ).fetchone()
        return Notice(*row) if row else Notice("", None, "")

    def set_notice(self, text: str, *, by: str = "") -> Notice:
        """Replaces the notice; an empty text clears the banner."""
        text = text.strip()
        if len(text) > MAX_NOTICE:
            raise NoteError(f"notice is longer than {MAX_NOTICE} characters")
        saved = Notice(text, time.time(), by[:200])
        with self._lock:
            self._db.execute(
                "INSERT INTO notice (id, text, updated_at, updated_by) VALUES (1, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET text = excluded.text,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (saved.text, saved.updated_at, saved.updated_by),
            )
        return saved
