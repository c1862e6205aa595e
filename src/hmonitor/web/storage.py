"""Faults of the dashboard's data files, in one line a person can act on.

Start-up: a data file that cannot be opened (not a database, damaged, unreadable, read-only, a
folder in its place) stops ``hmonitor-web`` with one line naming the file and what to do
(``StorageError``). Run time: a full disk or a damaged file makes writes fail; the dashboard keeps
serving pages, answers writes with 507, logs one line a minute (``FaultLog``) and resumes by
itself when a write succeeds again.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FaultLog", "StorageError", "describe", "is_disk_full", "storage_error"]

# SQLite's primary result codes (sqlite3 names them only from Python 3.11 on).
_PERM, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 8, 10, 11, 13, 14, 26
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class StorageError(Exception):
    """A data file the dashboard cannot use; ``str()`` is one line naming the file."""

    def __init__(self, path: Path, problem: str, advice: str) -> None:
        super().__init__(f"{path}: {problem}; {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice


def is_disk_full(err: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or ENOSPC/EDQUOT from the OS."""
    if isinstance(err, sqlite3.Error):
        return _sqlite_code(err) == _FULL or (
            "database or disk is full" in str(err)
        )
    return isinstance(err, OSError) and err.errno in _FULL_ERRNOS


def _sqlite_code(err: BaseException) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # the primary code of an extended one


def describe(path: Path, err: BaseException) -> tuple[str, str]:
    """(what is wrong with ``path``, what to do), for an error raised while using it."""
    text = str(err)
    code = _sqlite_code(err)
    folder = path.parent
    if is_disk_full(err):
        return "the disk is full", f"free space on the disk holding {folder}"
    if path.is_dir():
        return "is a folder, not a database file", "move it aside or point --data-dir elsewhere"
    if code == _NOTADB or "file is not a database" in text:
        return ("is not an SQLite database (damaged, or another file)",
                "move it aside to start with an empty one, or restore it from a backup")
    if code == _CORRUPT or "malformed" in text:
        return ("is damaged (SQLite reports a malformed database)",
                f"stop the dashboard and run: sqlite3 {path} '.recover' | sqlite3 {path}.recovered"
                f" (then move {path.name}.recovered in its place), or move it aside")
    if code == _READONLY or "readonly database" in text:
        return ("cannot be written (read-only file, folder or file system)",
                f"give the dashboard's user write access to {path} and {folder}")
    if isinstance(err, OSError) and err.errno in _READ_ONLY_ERRNOS:
        return (f"cannot be written ({os.strerror(err.errno)})",
                f"give the dashboard's user write access to {folder}, or use another --data-dir")
    if code in (_CANTOPEN, _PERM) or "unable to open" in text:
        # Most specific first: SQLite says only "unable to open" for all of these.
        if not folder.is_dir():
            return ("cannot be created (its folder does not exist)",
                    f"create {folder}, or point --data-dir elsewhere")
        if _read_only_fs(folder):
            return ("cannot be written (read-only file system)",
                    f"remount the file system holding {folder} read-write, or use another"
                    " --data-dir")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            return ("cannot be opened (permission denied)",
                    f"give the dashboard's user read and write access to {path}")
        if not os.access(folder, os.W_OK):
            return ("cannot be created or opened (its folder is not writable)",
                    f"give the dashboard's user write access to {folder}, or use another"
                    " --data-dir")
        return ("cannot be opened (permission denied or unreadable)",
                f"give the dashboard's user read and write access to {path}")
    if code == _IOERR or isinstance(err, OSError):
        return f"input/output error ({text})", f"check the disk holding {folder}"
    return f"unusable ({type(err).__name__}: {text})", "move it aside or restore it from a backup"


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def storage_error(path: Path, err: BaseException) -> StorageError:
    problem, advice = describe(path, err)
    return StorageError(path, problem, advice)


class FaultLog:
    """One log line per ``every`` seconds while a data file keeps failing, one when it recovers.

    A full disk makes every polling round fail; a traceback per round would bury everything else
    in the log (and fill the disk holding the log).
    """

    def __init__(
        self,
        path: Path,
        logger: logging.Logger,
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._log = logger
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._suppressed = 0
        #: The current fault in words ("" when the last write worked); pages show it.
        self.problem = ""

    def failed(self, what: str, err: BaseException) -> str:
        """Record a failed write; returns the one-line message (for a 507 answer)."""
        problem, advice = describe(self.path, err)
        message = f"{self.path}: {what} failed: {problem}; {advice}"
        now = self._clock()
        with self._lock:
            self.problem = problem
            if self._last_logged is None or now - self._last_logged >= self._every:
                more = f" ({self._suppressed} more failures since)" if self._suppressed else ""
                self._log.error("%s%s", message, more)
                self._last_logged, self._suppressed = now, 0
            else:
                self._suppressed += 1
        return message

    def worked(self) -> None:
        """Record a successful write; logs the recovery once."""
        if not self.problem:  # the common case, without the lock
            return
        with self._lock:
            if self.problem:
                self._log.warning("%s: writes work again (was: %s)", self.path, self.problem)
            self.problem = ""
            self._last_logged, self._suppressed = None, 0
