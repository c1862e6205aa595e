"""The store's core: the SQLite connections (one writer, a reader per thread), the schema and
its migrations, the writer's caches, and transactions. The other parts of ``SqliteHistory``
(ingest, maintenance, queries, accounting) build on it."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hmonitor.web.storage import StorageError, storage_error

from ._layout import (
    _DAY,
    _FEW_ROWS,
    _JOB_SCHEMA,
    _MIGRATE_2,
    _OVERSAMPLE,
    _T,
    _UNREAD,
    CHUNK,
    GPU_LEVELS,
    HOUR,
    MINUTE,
    SCHEMA_VERSION,
    TEN_MINUTES,
    _ceil_to,
    _dump_stack,
    _floor_to,
    _load_stack,
    _ms,
    _push,
    _schema_statements,
    _Snap,
)

log = logging.getLogger(__name__)


class _Core:
    """Connections, schema, caches and transactions of ``SqliteHistory``."""

    def __init__(
        self,
        path: Path,
        *,
        raw_days: float = 10,
        keep_days: float = 365,
        disk_interval: float = 60,
        minute_days: float = 30,
        ten_minute_days: float = 90,
        interval: float = 10,
    ) -> None:
        """Open (or create) the history at `path`; a file that cannot be used raises
        `StorageError`, one line naming it and what to do."""
        for label, value in (("raw_days", raw_days), ("keep_days", keep_days),
                             ("minute_days", minute_days), ("ten_minute_days", ten_minute_days),
                             ("interval", interval)):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        if disk_interval < 0:
            raise ValueError(f"disk_interval must not be negative, not {disk_interval!r}")
        self._path = Path(path)
        self._interval_ms = max(1, _ms(interval))
        self._cap_ms = 3 * self._interval_ms  # a longer gap between samples counts as this much
        self._disk_ms = _ms(disk_interval)
        # Every level is also bounded by keep_days.
        self._keep_ms = {
            0: round(min(raw_days, keep_days) * _DAY),
            MINUTE: round(min(minute_days, keep_days) * _DAY),
            TEN_MINUTES: round(min(ten_minute_days, keep_days) * _DAY),
            HOUR: round(keep_days * _DAY),
        }
        self._wlock = threading.RLock()
        self._tls = threading.local()
        self._rlock = threading.Lock()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        self._stale = False  # the writer's caches could not be reloaded after a failure
        # Maintenance state kept in memory only (a restart recomputes it).
        self._bounds: dict[tuple[int, int], list[int]] = {}  # (kind, slice) -> piece key limits
        self._stacks_as_of: int | None = None  # live_gpu holds stacks as of this (None: unknown)
        self._retain_next: int | None = None  # next retention target in this call's pass
        self._retain_cuts: dict[int, int] = {}
        self._retain_levels: set[int] = set()  # levels this pass deletes at (0: raw chunks)
        # Per level, the cut its last finished pass deleted up to, and the levels that got rows
        # at or below that since (a backlog rolled up or compacted late): a level is deleted
        # at again only when its cut passes a new bucket, or it is dirty.
        self._retain_done: dict[int, int] = {}
        self._retain_dirty: set[int] = set()
        try:
            self._w = self._connect(readonly=False)
        except (sqlite3.Error, OSError) as err:
            raise storage_error(self._path, err) from err
        try:
            self._init_schema()
            self._load_state()
        except BaseException as err:
            self._w.close()
            if isinstance(err, sqlite3.Error | OSError):
                raise storage_error(self._path, err) from err
            raise

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if readonly:
                conn.execute("PRAGMA query_only = ON")
            else:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":  # e.g. read-only: SQLite keeps the old mode
                    raise sqlite3.OperationalError("attempt to write a readonly database")
                # WAL: a kill -9 loses nothing committed.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA cache_size = -32768")
            conn.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self) -> None:
        w = self._w
        w.execute("BEGIN IMMEDIATE")  # another process may be creating it right now
        try:
            version = w.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _schema_statements():
                    w.execute(statement)
            elif version > SCHEMA_VERSION:
                raise StorageError(
                    self._path,
                    f"was written by a newer hmonitor (history schema {version}; this one reads"
                    f" up to {SCHEMA_VERSION})",
                    "upgrade hmonitor, or move the file aside to start a new history",
                )
            if version == 1:
                self._migrate_2()
            if 0 < version < 3:
                self._migrate_3()
            w.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            w.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _migrate_2(self) -> None:
        w = self._w
        new = {s.split()[2]: s for s in _schema_statements() if s.startswith("CREATE TABLE")}
        w.execute(new["h_user"])
        w.execute(new["h_gpu_user"])
        wm = self._meta(w, "roll_wm")
        for statement in _MIGRATE_2:
            w.execute(statement, {"wm": -1 if wm is None else wm} if ":wm" in statement else ())
        if wm is not None:
            # Version 1 kept every level complete up to roll_wm.
            self._set_meta(w, "coarse_wm", wm)

    def _migrate_3(self) -> None:
        for statement in _schema_statements():
            if statement.split()[2] in _JOB_SCHEMA:
                self._w.execute(statement.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1)
                                .replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))

    def _rollback(self) -> None:
        """Roll back whatever is open; a failing rollback must not hide the first error."""
        if self._w.in_transaction:
            try:
                self._w.execute("ROLLBACK")
            except sqlite3.Error as err:
                log.debug("history: rollback failed: %s", err)

    def _load_state(self) -> None:
        """Writer caches, from the database (at open, and after a failed transaction)."""
        w = self._w
        hosts: dict[str, int] = dict(w.execute("SELECT name, hid FROM host"))
        gpus: dict[tuple[int, int], tuple[int, str]] = {
            (hid, idx): (gid, name)
            for gid, hid, idx, name in w.execute("SELECT gid, hid, idx, name FROM gpu")
        }
        users: dict[str, int] = dict(w.execute("SELECT name, uid FROM user"))
        bnames: dict[str, int] = dict(w.execute("SELECT name, bid FROM bname"))
        disks: dict[tuple[int, str], tuple[int, str]] = {
            (hid, mount): (did, device)
            for did, hid, mount, device in w.execute("SELECT did, hid, mount, device FROM disk")
        }
        last_t: int | None = w.execute("SELECT MAX(t) FROM h_round").fetchone()[0]
        disk_t = self._meta(w, "disk_t")
        lhost: dict[int, list[int | None]] = {
            hid: [t, run] for hid, t, run in w.execute("SELECT hid, t, run_start FROM live_host")
        }
        gpu_host = {gid: hid for (hid, _), (gid, _) in gpus.items()}
        lproc: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        host_procs: dict[int, set[tuple[int, int]]] = {}
        for gid, pid, uid, bid, start in w.execute(
            "SELECT gid, pid, uid, bid, start FROM live_proc"
        ):
            lproc[(gid, pid)] = (uid, bid, start, _UNREAD)  # the Slurm job: read next round
            host_procs.setdefault(gpu_host[gid], set()).add((gid, pid))
        stacks = self._stacks_for(w, None)
        as_of = w.execute("SELECT MIN(as_of) FROM live_gpu").fetchone()[0]
        # All or nothing: a failure above leaves the old caches (and _stale) as they were.
        self._hosts, self._gpus, self._gpu_host = hosts, gpus, gpu_host
        self._users, self._bnames, self._disks = users, bnames, disks
        self._last_t, self._disk_t, self._lhost = last_t, disk_t, lhost
        self._lproc, self._host_procs, self._stacks = lproc, host_procs, stacks
        self._stacks_as_of = as_of
        # Rows a round adds to the tables rolling up reads; ingest keeps it current.
        self._round_rows = len(gpus) + len(hosts) + len(users) + len(disks)
        self._bounds.clear()
        self._stale = False

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> int | None:
        row = conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            (key, value),
        )

    @staticmethod
    def _stacks_for(
        conn: sqlite3.Connection, gids: set[int] | None
    ) -> dict[int, list[list[int]]]:
        """Utilization stacks as of the latest round: stored ones plus the head rows after them."""
        stacks: dict[int, list[list[int]]] = {}
        as_of: dict[int, int] = {}
        for gid, t, text in conn.execute("SELECT gid, as_of, stack FROM live_gpu"):
            if gids is None or gid in gids:
                stacks[gid] = _load_stack(text)
                as_of[gid] = t
        start = min(as_of.values(), default=-1)
        if gids is not None and len(as_of) < len(gids):
            start = -1  # a GPU without a stored stack replays the whole head
        for t, gid, util in conn.execute(
            "SELECT t, gid, util FROM h_gpu WHERE t > ? ORDER BY t", (start,)
        ):
            if (gids is None or gid in gids) and t > as_of.get(gid, -1):
                _push(stacks.setdefault(gid, []), t, util)
        return stacks

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._tls.conn = conn
            with self._rlock:
                # Servers that start a thread per request would otherwise pile them up.
                for thread, old in [r for r in self._readers if not r[0].is_alive()]:
                    old.close()
                    self._readers.remove((thread, old))
                self._readers.append((threading.current_thread(), conn))
        return conn

    @contextmanager
    def _read(self) -> Iterator[tuple[sqlite3.Connection, _Snap]]:
        """One read transaction: every query in it sees the same committed state."""
        if self._closed:
            raise RuntimeError("history store is closed")
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            meta = dict(conn.execute("SELECT k, v FROM meta"))
            roll_wm = meta.get("roll_wm")
            coarse_wm = meta.get("coarse_wm", roll_wm)
            chunk_wm = meta.get("chunk_wm")
            chunk_hi = chunk_wm
            if chunk_wm is not None and "chunk_kind" in meta:
                chunk_hi = chunk_wm + CHUNK  # part of this slice is in chunks already
            floors = {lvl: meta[f"floor_{lvl}"] for lvl in GPU_LEVELS if f"floor_{lvl}" in meta}
            raw_floor = meta.get("floor_raw")
            if coarse_wm is not None:
                # Never hide what the coarse levels do not hold yet: the raw samples and 1-minute
                # buckets after coarse_wm are kept until it passes them.
                if raw_floor is not None:
                    raw_floor = min(raw_floor, coarse_wm)
                if MINUTE in floors:
                    floors[MINUTE] = min(floors[MINUTE], coarse_wm)
            snap = _Snap(roll_wm=roll_wm, coarse_wm=coarse_wm, chunk_wm=chunk_wm,
                         chunk_hi=chunk_hi, raw_floor=raw_floor, floors=floors)
            yield conn, snap
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            self._w.close()
        with self._rlock:
            for _, conn in self._readers:
                conn.close()
            self._readers.clear()

    def _writable(self) -> None:
        """Checks before a write: open, and the caches trustworthy."""
        if self._closed:
            raise RuntimeError("history store is closed")
        if self._stale:
            self._load_state()

    def _tx(self, work: Callable[[], _T], *, reload: bool = True) -> _T:
        """Run `work` in one write transaction. On failure roll back, and make the in-memory
        state match the database again: reload the caches (`reload`), or forget what
        maintenance keeps in memory."""
        w = self._w
        w.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            w.execute("COMMIT")
        except BaseException:
            self._rollback()
            self._bounds.clear()
            self._stacks_as_of = None
            if reload:
                try:
                    self._load_state()
                except (sqlite3.Error, OSError) as err:
                    # Try again before the next write; report the first error, not this one.
                    log.debug("history: could not reload the writer's state: %s", err)
                    self._stale = True
            raise
        return result

    def _save_stacks(self) -> None:
        if self._last_t is None:
            return
        as_of = self._last_t
        self._w.executemany(
            "INSERT OR REPLACE INTO live_gpu VALUES (?, ?, ?)",
            [(gid, as_of, _dump_stack(stack)) for gid, stack in self._stacks.items()],
        )
        self._stacks_as_of = as_of

    def _finest(self, levels: Sequence[int], span: float, max_points: int) -> int:
        """Index into (raw, *levels) of the finest source with few enough rows for the window."""
        steps = (self._interval_ms, *levels)
        for i, step in enumerate(steps):
            if span / step <= max(_OVERSAMPLE * max_points, _FEW_ROWS):
                return i
        return len(steps) - 1

    @classmethod
    def _acct_pieces(
        cls, snap: _Snap, levels: Sequence[int], since: int, until: int
    ) -> list[tuple[int, int, int]]:
        """Accounting's (source, lo, hi) for [since, until): `_plan` at the finest source, with
        the hours that minute rows would cover whole read from the hour rows (60x fewer)."""
        pieces: list[tuple[int, int, int]] = []
        for src, lo, hi in cls._plan(snap, levels, since, until, 1):
            # Hour rows are complete once they end before coarse_wm.
            whole_lo = _ceil_to(lo, HOUR)
            whole_hi = _floor_to(min(hi, snap.coarse_wm or hi), HOUR)
            if src == MINUTE and whole_lo < whole_hi:
                pieces += [(MINUTE, whole_hi, hi), (HOUR, whole_lo, whole_hi),
                           (MINUTE, lo, whole_lo)]
            else:
                pieces.append((src, lo, hi))
        return [piece for piece in pieces if piece[1] < piece[2]]

    @staticmethod
    def _plan(
        snap: _Snap, levels: Sequence[int], since: int, until: int, finest: int
    ) -> list[tuple[int, int, int]]:
        """Non-overlapping (source, lo, hi) covering [since, until): source 0 is raw, else a
        level. Newest first: the finest source where it still has data, coarser ones before,
        finer ones after where the coarser is not filled yet (the last minutes: raw; the last
        10-minute stretch: 1-minute buckets, where the metric has them, else raw)."""
        if snap.roll_wm is None:
            return []
        roll = snap.roll_wm
        coarse = roll if snap.coarse_wm is None else snap.coarse_wm

        def filled(src: int) -> int:  # the level holds everything before this
            return roll if src == MINUTE else coarse

        chosen = (0, *levels)[finest:]
        segs: list[tuple[int, int, int]] = []
        hi = until
        if chosen[0] != 0:
            raw_from = roll if MINUTE in levels else coarse
            if hi > raw_from:
                lo = max(since, raw_from)  # not rolled up yet: only the raw head has it
                segs.append((0, lo, hi))
                hi = lo
            if chosen[0] != MINUTE and MINUTE in levels and hi > coarse and hi > since:
                lo = max(since, coarse)  # rolled into minutes, not folded into coarser levels
                segs.append((MINUTE, lo, hi))
                hi = lo
        for i, src in enumerate(chosen):
            if hi <= since:
                break
            if src != 0:
                hi = min(hi, filled(src))
            lo = since
            if i + 1 < len(chosen):
                floor = snap.raw_floor if src == 0 else snap.floors.get(src)
                if floor is not None:
                    avail = floor if src == 0 else _floor_to(floor, src)
                    # Split where the next level's buckets start, so no bucket is half-counted
                    # (raw: or where the next level ends, whichever is first).
                    split = _ceil_to(avail, chosen[i + 1])
                    lo = max(since, min(split, filled(chosen[i + 1])) if src == 0 else split)
            if lo < hi:
                segs.append((src, lo, hi))
                hi = lo
        return segs
