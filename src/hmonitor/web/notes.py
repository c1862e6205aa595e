"""Notes per ``user@host`` and the notice board, kept in SQLite in the data dir.

Text is stored as typed: escaping is the templates' job on output, never a filter on input. What is
refused is what no person means to type and what would let one note pass for another: control,
invisible and direction-changing characters in the keys, and direction overrides in the text
(U+202E makes "gpu01" read as "10upg").

A write that fails on the disk (full, read-only, damaged) raises ``WriteFailed`` with one line
naming the file; the page and the API answer it with 507 and nothing already saved is lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hmonitor.web.storage import FaultLog, storage_error

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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


# Embeddings, overrides and isolates: they reorder the text after them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_TEXT_CONTROLS_OK = frozenset("\n\t")


class NoteError(ValueError):
    """A note or notice that cannot be stored; the message is meant for the user."""


class WriteFailed(OSError):
    """The database could not be written (full disk, read-only, damaged); one line for the user."""


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
    if not value.isprintable():  # line breaks, zero-width and direction marks, controls
        bad = next(ch for ch in value if not ch.isprintable())
        raise NoteError(f"{what} must be one line of visible characters (it has U+{ord(bad):04X})")
    return value


def _clean_text(value: str, what: str, limit: int) -> str:
    value = value.replace("\r\n", "\n").strip()
    if len(value) > limit:
        raise NoteError(f"{what} is longer than {limit} characters")
    for ch in value:
        if ch in _BIDI_CONTROLS or (ch < " " and ch not in _TEXT_CONTROLS_OK) or ch == "\x7f":
            raise NoteError(f"{what} has a control character (U+{ord(ch):04X})")
    return value


class NotesStore:
    """Thread-safe store; waitress serves requests from several threads.

    One connection behind a lock is enough: notes are a handful of rows and writes are rare, and
    it avoids a connection per thread that would never be closed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.faults = FaultLog(path, log)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL plus NORMAL is durable against application crashes, which is what notes need.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            # Small enough to check whole at every start: damage shows now, not on a later save.
            problem = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({problem})")
        except (sqlite3.Error, OSError) as err:
            raise storage_error(path, err) from None

    @classmethod
    def in_dir(cls, data_dir: Path) -> NotesStore:
        return cls(data_dir / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, what: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                result = work(self._db)
            except sqlite3.Error as err:
                raise WriteFailed(self.faults.failed(what, err)) from None
        self.faults.worked()
        return result

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
        note = _clean_text(note, "note", MAX_NOTE)
        if not note:
            raise NoteError("note is empty")
        saved = Note(user, host, note, time.time(), by[:200])
        self._write("saving a note", lambda db: db.execute(
            "INSERT INTO notes (user, host, note, updated_at, updated_by)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user, host) DO UPDATE SET note = excluded.note,"
            " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (saved.user, saved.host, saved.note, saved.updated_at, saved.updated_by),
        ))
        return saved

    def delete(self, user: str, host: str) -> bool:
        """Removes the note of ``user@host``; False when there was none."""
        cur = self._write("deleting a note", lambda db: db.execute(
            "DELETE FROM notes WHERE user = ? AND host = ?", (user.strip(), host.strip())
        ))
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
        text = _clean_text(text, "notice", MAX_NOTICE)
        saved = Notice(text, time.time(), by[:200])
        self._write("saving the notice", lambda db: db.execute(
            "INSERT INTO notice (id, text, updated_at, updated_by) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET text = excluded.text,"
            " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (saved.text, saved.updated_at, saved.updated_by),
        ))
        return saved
