"""Durable history of the cluster: what the poller saw each round, kept in SQLite.

Layout (details in schema.sql):

* **head**: each round appends its raw rows (time-first keys, so a round writes a few pages),
  and what accounting needs of it, already summed per user and per GPU and user;
* **rollups**: `maintain` folds every closed minute of the head into 1-minute buckets, then every
  10-minute stretch of those into 10-minute and 1-hour buckets (sum, count and max per metric,
  plus per-user GPU-seconds and GiB-seconds), so long windows are answered from a few rows and
  nothing is rolled up twice: one watermark per step, advanced in the same transaction as the
  work it covers;
* **chunks**: `maintain` moves closed 10-minute slices of the head into one compressed blob per
  series, kept `raw_days`.

Queries pick the resolution from the window (`series`: raw up to ~10 samples per point, then the
finest bucket level that keeps the work small) and stitch coarser levels in where the finer one
has been deleted, finer ones where the coarser one is not filled yet. Windows are half-open:
[since, until).

Maintenance is done in pieces, each one short transaction bounded by rows, not by time: a piece
rolls up at most about `_ROLL_ROWS` head rows (but at least one minute), folds one 10-minute
stretch (one row per GPU, host, user and GPU-user pair), compacts the series of one slice whose
rows add up to about `_COMPACT_ROWS` (at least one series), or deletes at most `_RETAIN_ROWS`
aged-out rows. A `maintain` call takes one piece of each kind of work that is due in turn
(roll-up, compaction, retention) until its budget is spent, so no kind starves another however
big the rounds are; `done` is False while work is left, and the caller comes back sooner.

Size bound (measured on 2 cores by bench/history.py, 1,000 hosts x 8 GPUs x 12-13 processes =
100,000 processes a round at 10 s, and bench/history_soak.py, a month of 25 hosts x 8 GPUs):

* Head: the open 10-minute slice plus what maintenance has not caught up with, at most about
  15 minutes of rounds while it keeps up (at 100,000 processes a round: at most 77 rounds,
  12.8 minutes, with `HistoryFeature` maintaining at every round while behind). A round costs
  there ~32 bytes per process and ~38 per GPU (3.5 MB at 100,000 processes, so ~270 MB at the
  worst moment); compacted pages are reused, so the file does not grow by it.
* Raw samples in chunks, kept `raw_days`: about 3 bytes per GPU-sample and 0.4-1 per
  process-sample (a series compresses to what changes in it).
* Roll-ups: about 44 bytes per bucket row; with the default retention (1-minute buckets 30
  days, 10-minute 90, hours 365) ~65,000 rows, ~2.9 MB, per GPU, ~2 MB per host, and ~20 %
  more for per-user and per-GPU-user accounting.

So a GPU costs about 3 MB after a year with the defaults (0.25 MB of it raw samples at 10 s),
plus ~35 KB per process running at a time (its 10 days of raw samples): a lab of 100 hosts x 8
GPUs ends near 3 GB, 1,000 hosts with 100,000 processes near 35 GB. The file stops growing once
the longest-kept level starts cutting (the soak, with retention of 5/10/15/20 days: flat at
~240 MB from day 20).

At 100,000 processes a round, ingest (~1.1 s a round on one core) is the limit, not
maintenance (compaction moves ~150,000 process rows a second); past some 500,000 processes a
round at 10 s the poller would skip rounds. Few huge hosts give the same rows as many small
ones (the poller caps an agent at 64 GPUs and 256 processes per GPU).

Concurrency: one writer (the poller thread calls `ingest` and `maintain`), any number of readers;
each reading thread gets its own connection and reads one consistent snapshot per call (WAL).
A kill -9 loses at most the round being written: every round is one transaction.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from hmonitor.web.hoststate import HostSample
from hmonitor.web.owner import owner_label
from hmonitor.web.storage import StorageError, storage_error

from . import _codec

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 2

MIB = 1 << 20
GIB = 1 << 30
_HALF_MIB = 1 << 19  # bytes -> MiB rounds to nearest
_I64_MAX = (1 << 63) - 1  # SQLite integers are signed; a garbage uint64 must not abort a round
_MAX_NAME = 1024  # longer names (hosts, users, programs, mounts) are cut: an agent's garbage

# Bucket lengths in milliseconds; a rollup row's `lvl` is its bucket length.
MINUTE = 60_000
TEN_MINUTES = 600_000
HOUR = 3_600_000
_DAY = 86_400_000
CHUNK = TEN_MINUTES  # raw slice per compressed blob
GPU_LEVELS = (MINUTE, TEN_MINUTES, HOUR)
HOST_LEVELS = (MINUTE, TEN_MINUTES, HOUR)
DISK_LEVELS = (HOUR,)  # disks are sampled once a minute already
USER_LEVELS = (MINUTE, HOUR)
GPU_USER_LEVELS = (TEN_MINUTES, HOUR)
# A source is fine enough for a window when it has at most this many rows per output point,
# or at most _FEW_ROWS in all (cheap whatever max_points is).
_OVERSAMPLE = 10
_FEW_ROWS = 20_000

# Maintenance pieces (one transaction each). Sized so a piece takes about 0.1-0.3 s on one core
# of a small server (bench/history.py): the write lock is never held for long, and a budget is
# overrun by at most one piece.
_ROLL_ROWS = 100_000  # head rows rolled up per piece (at least one minute of rounds)
_COMPACT_ROWS = 50_000  # head rows compacted per piece (at least one series' slice)
_RETAIN_ROWS = 50_000  # aged-out rows deleted per piece
_STACKS_EVERY = 2 * 60_000  # save the idle rule's stacks at most this often (of data time)

_K_HOST, _K_GPU, _K_PROC, _K_DISK = 0, 1, 2, 3
# Per chunk kind: head table, key column, the other columns (the blob's columns), blob order.
_LAYOUT: dict[int, tuple[str, str, str, str]] = {
    _K_HOST: ("h_host", "hid", "t, up, rtt, dt", "hid, t"),
    _K_GPU: ("h_gpu", "gid", "t, util, mem, total, temp, fan", "gid, t"),
    # Ordered by pid within a GPU: a process's rows then differ by little, which compresses well.
    _K_PROC: ("h_proc", "gid", "t, pid, uid, bid, mem, util", "gid, pid, t"),
    _K_DISK: ("h_disk", "did", "t, used, total", "did, t"),
}
_KINDS = tuple(_LAYOUT)  # compaction order within a slice
_KEY_TABLE = {_K_HOST: ("host", "hid"), _K_GPU: ("gpu", "gid"), _K_PROC: ("gpu", "gid"),
              _K_DISK: ("disk", "did")}

GpuMetric = Literal["util", "mem", "mem_total", "temp", "fan"]
GPU_METRICS: tuple[str, ...] = ("util", "mem", "mem_total", "temp", "fan")
Agg = Literal["avg", "max"]


@dataclass(frozen=True)
class UsageTotals:
    gpu_hours: float  # a GPU shared by k users in a sample counts 1/k for each
    gpu_mem_gib_hours: float  # the user's own GPU memory, GiB times hours


@dataclass(frozen=True)
class IdleHog:
    host: str
    gpu: int
    pid: int
    user: str
    basename: str
    mem: int  # bytes, in the latest sample
    since: float  # Unix time of the first sample of the idle run
    idle_seconds: float  # latest sample minus `since`


@dataclass(frozen=True)
class MaintainReport:
    rolled_minutes: int
    compacted_slices: int
    deleted_rows: int
    seconds: float
    done: bool  # False when the time budget ran out with work left (call again)
    pieces: int = 0  # transactions taken
    longest_s: float = 0.0  # the longest of them: the longest the write lock was held
    compacted_rows: int = 0  # head rows moved into chunks (slices finish over several calls)
    kind_seconds: tuple[float, float, float] = (0.0, 0.0, 0.0)  # roll-up, compaction, retention


class HistoryStore(Protocol):
    """The dashboard's history, whatever keeps it.

    Times are Unix seconds; windows are [since, until).
    """

    def ingest(self, states: Sequence[HostSample], t: float) -> None: ...
    def maintain(self, now: float, *, budget_s: float | None = None) -> MaintainReport: ...
    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]: ...
    def sparklines(
        self, window: float, now: float, points: int = 60
    ) -> dict[tuple[str, int], dict[str, list[float]]]: ...
    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]: ...
    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]: ...
    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]: ...
    def host_uptime(self, host: str, since: float, until: float) -> float | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Metric:
    kind: int  # chunk kind of the raw samples
    head: str
    key: str  # key column in head and rollup table
    col: int  # index in the blob's columns (0 is t)
    roll: str
    levels: tuple[int, ...]
    n: str  # SQL over rollup columns: samples behind the value
    sum: str
    max: str
    scale_raw: float  # raw value -> output unit
    scale_roll: float  # rollup value -> output unit
    only_up: bool = False  # raw: use samples of rounds where the host answered


_GPU_SPECS: dict[str, _Metric] = {
    name: _Metric(_K_GPU, "h_gpu", "gid", col, "gpu_roll", GPU_LEVELS, "n", s, m, 1.0, scale)
    for name, col, s, m, scale in (
        ("util", 1, "util_sum", "util_max", 1.0),
        ("mem", 2, "mem_sum", "mem_max", float(MIB)),
        ("mem_total", 3, "total * n", "total", float(MIB)),
        ("temp", 4, "temp_sum", "temp_max", 1.0),
        ("fan", 5, "fan_sum", "fan_max", 1.0),
    )
}
_HOST_SPECS: dict[str, _Metric] = {
    "up": _Metric(_K_HOST, "h_host", "hid", 1, "host_roll", HOST_LEVELS, "n", "up_sum",
                  "up_sum > 0", 1.0, 1.0),
    # Round trip in ms, over the rounds the host answered.
    "rtt": _Metric(_K_HOST, "h_host", "hid", 2, "host_roll", HOST_LEVELS, "up_sum", "rtt_sum",
                   "rtt_max", 1e-3, 1e-3, only_up=True),
}
_DISK_SPECS: dict[str, _Metric] = {
    "used": _Metric(_K_DISK, "h_disk", "did", 1, "disk_roll", DISK_LEVELS, "n", "used_sum",
                    "used_max", 1.0, float(MIB)),
    "total": _Metric(_K_DISK, "h_disk", "did", 2, "disk_roll", DISK_LEVELS, "n", "total * n",
                     "total", 1.0, float(MIB)),
}


@dataclass(frozen=True)
class _Snap:
    """Watermarks read at the start of a read transaction."""

    roll_wm: int | None  # the 1-minute level covers everything before this
    coarse_wm: int | None  # the 10-minute and 1-hour levels do (never above roll_wm)
    chunk_wm: int | None  # chunks hold everything before this; the head the rest...
    chunk_hi: int | None  # ...except a slice being compacted: chunks may hold samples up to here
    raw_floor: int | None  # raw samples before this are gone (never above coarse_wm)
    floors: dict[int, int]  # per rollup level: buckets ending at or before this are gone


def _floor_to(t: int, step: int) -> int:
    return t - t % step


def _ceil_to(t: int, step: int) -> int:
    return -((-t) // step) * step


def _ms(t: float) -> int:
    return round(t * 1000)


def _clean(name: str) -> str:
    """A name as stored: at most _MAX_NAME characters, valid UTF-8 (lone surrogates replaced)."""
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 1] + "…"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "replace").decode("utf-8")
    return name


def _push(stack: list[list[int]], t: int, util: int) -> None:
    """Add a sample to a GPU's suffix-maxima stack [t, util, t_next].

    A sample no busier than a later one can never be "the last sample at or above X%", so it is
    dropped; what is left has strictly falling utilization, at most 101 entries.
    """
    if stack and stack[-1][2] < 0:
        stack[-1][2] = t
    while stack and stack[-1][1] <= util:
        stack.pop()
    stack.append([t, util, -1])


def _idle_since(stack: list[list[int]], threshold: float) -> int | None:
    """First sample after the last one at or above `threshold`; -1 if none was; None if busy now."""
    for _, util, t_next in reversed(stack):
        if util >= threshold:
            return t_next if t_next >= 0 else None
    return -1


def _dump_stack(stack: list[list[int]]) -> str:
    return ";".join(f"{t},{u},{n}" for t, u, n in stack)


def _load_stack(text: str) -> list[list[int]]:
    return [[int(x) for x in item.split(",")] for item in text.split(";")] if text else []


# What `_bulk_append` takes for a process: (t, gid, pid, uid, bid, mem, util, dt, share), dt as
# in h_host and share = 1 / (users on the GPU x this user's processes on it), for accounting.
_ProcRow = tuple[int, int, int, int, int, int, int, int, float]
# Head rows, as in schema.sql.
_HostRow = tuple[int, int, int, int, int]
_GpuRow = tuple[int, int, int, int, int, int, int]
_HeadProc = tuple[int, int, int, int, int, int, int]
_DiskRow = tuple[int, int, int, int]
_UserRow = tuple[int, int, float, float]
_GpuUserRow = tuple[int, int, int, int]

# Upserts that add a SELECT's buckets into the rollup rows (partial buckets grow). A SELECT
# feeding an upsert needs a WHERE clause (SQLite's parser), hence the "WHERE 1" in some.
_GPU_ROLL = (
    "INSERT INTO gpu_roll {src} ON CONFLICT (lvl, gid, t) DO UPDATE SET n = n + excluded.n,"
    " util_sum = util_sum + excluded.util_sum, util_max = max(util_max, excluded.util_max),"
    " mem_sum = mem_sum + excluded.mem_sum, mem_max = max(mem_max, excluded.mem_max),"
    " total = max(total, excluded.total), temp_sum = temp_sum + excluded.temp_sum,"
    " temp_max = max(temp_max, excluded.temp_max), fan_sum = fan_sum + excluded.fan_sum,"
    " fan_max = max(fan_max, excluded.fan_max)"
)
_HOST_ROLL = (
    "INSERT INTO host_roll {src} ON CONFLICT (lvl, hid, t) DO UPDATE SET n = n + excluded.n,"
    " up_sum = up_sum + excluded.up_sum, rtt_sum = rtt_sum + excluded.rtt_sum,"
    " rtt_max = max(rtt_max, excluded.rtt_max)"
)
_DISK_ROLL = (
    "INSERT INTO disk_roll {src} ON CONFLICT (lvl, did, t) DO UPDATE SET n = n + excluded.n,"
    " used_sum = used_sum + excluded.used_sum, used_max = max(used_max, excluded.used_max),"
    " total = max(total, excluded.total)"
)
_USER_ROLL = (
    "INSERT INTO user_roll {src} ON CONFLICT (lvl, t, uid) DO UPDATE"
    " SET gpu_s = gpu_s + excluded.gpu_s, gib_s = gib_s + excluded.gib_s"
)
_GPU_USER_ROLL = (
    "INSERT INTO gpu_user_roll {src} ON CONFLICT (lvl, gid, t, uid) DO UPDATE"
    " SET mem_sum = mem_sum + excluded.mem_sum"
)

# Schema version 1 -> 2: the process rows lose dt and share (ingest sums accounting per user and
# per GPU and user instead, into h_user and h_gpu_user), and the coarse levels get their own
# watermark. What version 1 had not rolled up yet is summed from its process rows.
_MIGRATE_2 = (
    "INSERT INTO h_user SELECT t, uid, SUM(dt * share) / 1000.0,"
    " SUM(mem * (dt / 1000.0)) / 1073741824.0 FROM h_proc WHERE t >= :wm GROUP BY t, uid",
    "INSERT INTO h_gpu_user SELECT t - t % 600000, gid, uid, SUM((mem + 524288) >> 20)"
    " FROM h_proc WHERE t >= :wm GROUP BY 1, gid, uid",
    "CREATE TABLE h_proc_2 (t INTEGER NOT NULL, gid INTEGER NOT NULL, pid INTEGER NOT NULL,"
    " uid INTEGER NOT NULL, bid INTEGER NOT NULL, mem INTEGER NOT NULL, util INTEGER NOT NULL,"
    " PRIMARY KEY (t, gid, pid)) WITHOUT ROWID",
    "INSERT INTO h_proc_2 SELECT t, gid, pid, uid, bid, mem, util FROM h_proc",
    "DROP TABLE h_proc",
    "ALTER TABLE h_proc_2 RENAME TO h_proc",
)


def _schema_statements() -> list[str]:
    text = resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
    statements, buf = [], ""
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return statements


@dataclass
class _Piece:
    """What one maintenance piece did."""

    units: int = 0  # minutes rolled, slices finished or rows deleted
    more: bool = False  # it did something: there may be more of its kind
    seconds: float = 0.0  # its transaction(s)
    transactions: int = 0
    rows: int = 0  # head rows compacted


class SqliteHistory:
    """`HistoryStore` in one SQLite file (WAL). See the module docstring for the layout."""

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

    # ---------------------------------------------------------------- connections and state

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
        lproc: dict[tuple[int, int], tuple[int, int, int]] = {}
        host_procs: dict[int, set[tuple[int, int]]] = {}
        for gid, pid, uid, bid, start in w.execute(
            "SELECT gid, pid, uid, bid, start FROM live_proc"
        ):
            lproc[(gid, pid)] = (uid, bid, start)
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

    def __enter__(self) -> SqliteHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- writing

    def _id(self, cache: dict[str, int], table: str, name: str) -> int:
        found = cache.get(name)
        if found is None:
            # Two odd names may clean to the same text: then they share the row.
            stored = _clean(name)
            self._w.execute(f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                            (stored,))
            row = self._w.execute(f"SELECT rowid FROM {table} WHERE name = ?", (stored,))
            found = cache[name] = int(row.fetchone()[0])
        return found

    def _gpu_id(self, hid: int, idx: int, name: str) -> int:
        found = self._gpus.get((hid, idx))
        if found is None:
            cur = self._w.execute(
                "INSERT INTO gpu (hid, idx, name) VALUES (?, ?, ?)", (hid, idx, _clean(name))
            )
            gid = int(cur.lastrowid or 0)
            self._gpus[(hid, idx)] = (gid, name)
            self._gpu_host[gid] = hid
            return gid
        gid, known = found
        if name != known:
            self._w.execute("UPDATE gpu SET name = ? WHERE gid = ?", (_clean(name), gid))
            self._gpus[(hid, idx)] = (gid, name)
        return gid

    def _disk_id(self, hid: int, mount: str, device: str) -> int:
        found = self._disks.get((hid, mount))
        if found is None:
            w = self._w
            stored = _clean(mount)
            w.execute("INSERT INTO disk (hid, mount, device) VALUES (?, ?, ?)"
                      " ON CONFLICT (hid, mount) DO NOTHING", (hid, stored, _clean(device)))
            did = int(w.execute("SELECT did FROM disk WHERE hid = ? AND mount = ?",
                                (hid, stored)).fetchone()[0])
            self._disks[(hid, mount)] = (did, device)
            return did
        did, known = found
        if device != known:
            self._w.execute("UPDATE disk SET device = ? WHERE did = ?", (_clean(device), did))
            self._disks[(hid, mount)] = (did, device)
        return did

    def _writable(self) -> None:
        """Checks before a write: open, and the caches trustworthy."""
        if self._closed:
            raise RuntimeError("history store is closed")
        if self._stale:
            self._load_state()

    def ingest(self, states: Sequence[HostSample], t: float) -> None:
        """Store one polling round (one transaction). Rounds must come in time order."""
        tm = _ms(t)
        with self._wlock:
            self._writable()
            if self._last_t is not None and tm <= self._last_t:
                log.warning("history: round at %.3f is not after the last one (%.3f); skipped",
                            t, self._last_t / 1000)
                return
            self._tx(lambda: self._ingest(states, tm))
            self._last_t = tm

    def _ingest(self, states: Sequence[HostSample], tm: int) -> None:
        w = self._w
        cap = self._cap_ms
        disks_due = self._disk_t is None or tm - self._disk_t >= self._disk_ms
        r_host: list[_HostRow] = []
        r_gpu: list[_GpuRow] = []
        r_proc: list[_HeadProc] = []
        r_disk: list[_DiskRow] = []
        r_gpu_user: list[_GpuUserRow] = []
        stretch = _floor_to(tm, TEN_MINUTES)
        # Per user: GPU-milliseconds (a GPU's dt split equally between its users), byte-ms.
        acct: dict[int, list[float]] = {}
        lh_put: list[tuple[int, int | None, int | None]] = []
        lp_put: list[tuple[int, int, int, int, int]] = []
        lp_del: list[tuple[int, int]] = []
        users, bnames, stacks, lproc = self._users, self._bnames, self._stacks, self._lproc
        seen_hosts: set[int] = set()
        for state in states:
            hid = self._id(self._hosts, "host", state.name)
            if hid in seen_hosts:
                continue
            seen_hosts.add(hid)
            info = state.info if state.up else None
            rtt_ms = state.rtt_ms
            rtt = -1
            if state.up and rtt_ms is not None and math.isfinite(rtt_ms):
                rtt = min(max(round(rtt_ms * 1000), 0), _I64_MAX)
            lh = self._lhost.get(hid)
            if info is None:
                # Down (or up without a snapshot): only the up/down row; the runs are broken.
                r_host.append((tm, hid, 1 if state.up else 0, rtt, 0))
                if lh is not None and lh[1] is not None:
                    lh[1] = None
                    lh_put.append((hid, lh[0], None))
                continue
            prev_t = lh[0] if lh is not None else None
            dt = 0 if prev_t is None else min(tm - prev_t, cap)
            cont = (lh is not None and prev_t is not None and lh[1] is not None
                    and tm - prev_t <= cap)
            run_start = lh[1] if cont and lh is not None else tm
            self._lhost[hid] = [tm, run_start]
            lh_put.append((hid, tm, run_start))
            r_host.append((tm, hid, 1, rtt, dt))
            old_keys = self._host_procs.get(hid, set())
            new_keys: set[tuple[int, int]] = set()
            seen_idx: set[int] = set()
            for g in info.gpus:
                idx = g.id
                if idx in seen_idx:
                    continue
                seen_idx.add(idx)
                gid = self._gpu_id(hid, idx, g.name)
                util = g.utilization
                r_gpu.append((tm, gid, util, min(g.mem_used, _I64_MAX),
                              min(g.mem_total, _I64_MAX), g.temp, g.fanspeed))
                stack = stacks.get(gid)
                if stack is None:
                    stack = stacks[gid] = []
                _push(stack, tm, util)
                if not g.procs:
                    continue
                procs: dict[int, list[int]] = {}
                for p in g.procs:
                    pid = p.pid
                    mem = min(p.mem, _I64_MAX)
                    cur = procs.get(pid)
                    if cur is not None:  # listed twice (e.g. compute and graphics): one process
                        cur[2] = min(cur[2] + mem, _I64_MAX)
                        cur[3] = max(cur[3], p.utilization)
                        continue
                    uname = owner_label(p.username, p.uid)
                    uid = users.get(uname)
                    if uid is None:
                        uid = self._id(users, "user", uname)
                    bid = bnames.get(p.basename)
                    if bid is None:
                        bid = self._id(bnames, "bname", p.basename)
                    procs[pid] = [uid, bid, mem, p.utilization]
                by_user: dict[int, list[int]] = {}  # uid -> [bytes, MiB rounded per process]
                for pid, (uid, bid, mem, putil) in procs.items():
                    r_proc.append((tm, gid, pid, uid, bid, mem, putil))
                    mib = (mem + _HALF_MIB) >> 20
                    mine = by_user.get(uid)
                    if mine is None:
                        by_user[uid] = [mem, mib]
                    else:
                        mine[0] += mem
                        mine[1] += mib
                    key = (gid, pid)
                    new_keys.add(key)
                    old = lproc.get(key)
                    if (cont and old is not None and old[0] == uid and old[1] == bid
                            and key in old_keys):
                        continue  # the same process, still there: nothing to write
                    lproc[key] = (uid, bid, tm)
                    lp_put.append((gid, pid, uid, bid, tm))
                share = dt / len(by_user)  # users sharing a GPU split it equally
                for uid, (mem, mib) in by_user.items():
                    r_gpu_user.append((stretch, gid, uid, mib))
                    acc = acct.get(uid)
                    if acc is None:
                        acct[uid] = [share, mem * dt]
                    else:
                        acc[0] += share
                        acc[1] += mem * dt
            for key in old_keys - new_keys:
                lproc.pop(key, None)
                lp_del.append(key)
            self._host_procs[hid] = new_keys
            if disks_due:
                for d in info.disks:
                    did = self._disk_id(hid, d.mount, d.device)
                    r_disk.append((tm, did, min(d.used, _I64_MAX), min(d.total, _I64_MAX)))
        r_user = [(tm, uid, ms / 1000.0, byte_ms / 1000.0 / GIB)
                  for uid, (ms, byte_ms) in acct.items()]
        self._write_head([tm], r_host, r_gpu, r_proc, r_disk, r_user, r_gpu_user)
        w.executemany(
            "INSERT INTO live_host (hid, t, run_start) VALUES (?, ?, ?) ON CONFLICT (hid)"
            " DO UPDATE SET t = excluded.t, run_start = excluded.run_start",
            lh_put,
        )
        w.executemany("INSERT OR REPLACE INTO live_proc VALUES (?, ?, ?, ?, ?)", lp_put)
        w.executemany("DELETE FROM live_proc WHERE gid = ? AND pid = ?", lp_del)

    def _write_head(
        self,
        rounds: Sequence[int],
        r_host: Sequence[_HostRow],
        r_gpu: Sequence[_GpuRow],
        r_proc: Sequence[_HeadProc],
        r_disk: Sequence[_DiskRow],
        r_user: Sequence[_UserRow],
        r_gpu_user: Sequence[_GpuUserRow],
    ) -> None:
        w = self._w
        w.executemany("INSERT INTO h_round (t) VALUES (?)", [(t,) for t in rounds])
        w.executemany("INSERT INTO h_host VALUES (?, ?, ?, ?, ?)", r_host)
        w.executemany("INSERT INTO h_gpu VALUES (?, ?, ?, ?, ?, ?, ?)", r_gpu)
        w.executemany("INSERT INTO h_proc VALUES (?, ?, ?, ?, ?, ?, ?)", r_proc)
        w.executemany("INSERT INTO h_user VALUES (?, ?, ?, ?)", r_user)
        w.executemany("INSERT INTO h_gpu_user VALUES (?, ?, ?, ?) ON CONFLICT (t, gid, uid)"
                      " DO UPDATE SET mem = mem + excluded.mem", r_gpu_user)
        if r_disk:
            w.executemany("INSERT OR REPLACE INTO h_disk VALUES (?, ?, ?, ?)", r_disk)
            self._disk_t = max(r[0] for r in r_disk)
            self._set_meta(w, "disk_t", self._disk_t)
        if self._last_t is None and self._meta(w, "roll_wm") is None:
            first = rounds[0]
            self._set_meta(w, "roll_wm", _floor_to(first, MINUTE))
            self._set_meta(w, "coarse_wm", _floor_to(first, TEN_MINUTES))
            self._set_meta(w, "chunk_wm", _floor_to(first, CHUNK))
        # What rolling up a round reads (not the processes; per-GPU-user pairs wait for _fold).
        self._round_rows = (len(r_host) + len(r_gpu) + len(r_user) + len(r_disk)) // len(rounds)

    def _bulk_append(
        self,
        rounds: Sequence[int],
        r_host: Sequence[_HostRow],
        r_gpu: Sequence[_GpuRow],
        r_proc: Sequence[_ProcRow],
        r_disk: Sequence[_DiskRow] = (),
    ) -> None:
        """Append ready-made head rows of many rounds in one transaction.

        For benchmarks and importers that synthesize years of samples: rows are in the head
        tables' formats (ids, times in ms, each row's t one of `rounds`, rounds ascending and
        after the last one; a process row also carries its dt and share, see `_ProcRow`) and go
        through the same rollup, compaction and retention as ingested ones. The idle-process
        state is not updated.
        """
        with self._wlock:
            if not rounds:
                return
            self._writable()
            if self._last_t is not None and rounds[0] <= self._last_t:
                raise ValueError("rounds must come after the last stored one")
            known = set(rounds)
            if any(r[0] not in known for rows in (r_host, r_gpu, r_proc, r_disk) for r in rows):
                raise ValueError("a row's t is not one of the rounds")  # compaction needs it
            procs: list[_HeadProc] = []
            acct: dict[tuple[int, int], list[float]] = {}
            pairs: dict[tuple[int, int, int], int] = {}
            for t, gid, pid, uid, bid, mem, util, dt, share in r_proc:
                procs.append((t, gid, pid, uid, bid, mem, util))
                acc = acct.get((t, uid))
                if acc is None:
                    acc = acct[(t, uid)] = [0.0, 0.0]
                acc[0] += dt * share / 1000.0
                acc[1] += mem * dt / 1000.0 / GIB
                key = (_floor_to(t, TEN_MINUTES), gid, uid)
                pairs[key] = pairs.get(key, 0) + ((mem + _HALF_MIB) >> 20)
            r_user = [(t, uid, g, m) for (t, uid), (g, m) in sorted(acct.items())]
            r_gpu_user = [(*k, mib) for k, mib in sorted(pairs.items())]
            self._tx(lambda: self._write_head(rounds, r_host, r_gpu, procs, r_disk, r_user,
                                              r_gpu_user))
            self._last_t = rounds[-1]

    # ---------------------------------------------------------------- maintenance

    def maintain(self, now: float, *, budget_s: float | None = None) -> MaintainReport:
        """Roll up closed minutes, compress closed 10-minute slices, apply retention.

        Work is done in pieces, each its own short transaction that advances its watermark with
        its work, so an interruption repeats nothing and loses nothing. The kinds of work take
        turns, a piece each: every call advances each kind that is due at least once, then goes
        on while `budget_s` lasts (no budget: until all is done). `done` is False when work is
        left. Retention cuts at `now` as of the call's start: what the call compacts past the
        floor goes at the next call (readers hide it already).
        """
        started = time.perf_counter()
        deadline = None if budget_s is None else started + budget_s
        now_ms = _ms(now)
        with self._wlock:
            self._writable()
            steps: dict[str, Callable[[], _Piece]] = {
                "roll": self._roll_piece,
                "compact": self._compact_piece,
                "retain": lambda: self._retain_piece(now_ms),
            }
            units = dict.fromkeys(steps, 0)
            spent = dict.fromkeys(steps, 0.0)
            compacted_rows = 0
            pending = list(steps)
            self._retain_next = 0  # a retention pass per call: the floors move with `now`
            pieces = 0
            longest = 0.0
            first_turn, out_of_time = True, False
            while pending and not out_of_time:
                for name in list(pending):
                    if (not first_turn and deadline is not None
                            and time.perf_counter() >= deadline):
                        out_of_time = True
                        break
                    began = time.perf_counter()
                    piece = steps[name]()
                    spent[name] += time.perf_counter() - began
                    units[name] += piece.units
                    compacted_rows += piece.rows
                    pieces += piece.transactions
                    longest = max(longest, piece.seconds)
                    if not piece.more:
                        pending.remove(name)
                    if name == "roll" and piece.more and "compact" not in pending:
                        pending.insert(1, "compact")  # rolled-up slices can be compacted now
                first_turn = False
        return MaintainReport(units["roll"], units["compact"], units["retain"],
                              time.perf_counter() - started, not pending, pieces, longest,
                              compacted_rows, (spent["roll"], spent["compact"], spent["retain"]))

    def _next_round(self, t: int) -> int:
        """The first round at or after t; the latest round is always in the head."""
        row = self._w.execute("SELECT MIN(t) FROM h_round WHERE t >= ?", (t,)).fetchone()
        return t if row[0] is None else int(row[0])

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

    def _timed_tx(self, work: Callable[[], _T]) -> tuple[_T, float]:
        started = time.perf_counter()
        result = self._tx(work, reload=False)
        return result, time.perf_counter() - started

    def _roll_piece(self) -> _Piece:
        """One piece of rolling up: fold a finished 10-minute stretch into the coarse levels if
        there is one, else roll closed minutes of the head into the 1-minute level."""
        w = self._w
        roll_wm = self._meta(w, "roll_wm")
        if roll_wm is None or self._last_t is None:
            return _Piece()
        coarse = self._meta(w, "coarse_wm")
        coarse = roll_wm if coarse is None else coarse
        if coarse < roll_wm:
            # Skip stretches without rounds (the dashboard was down) in one step.
            start = max(coarse, _floor_to(self._next_round(coarse), TEN_MINUTES))
            end = _floor_to(start, TEN_MINUTES) + TEN_MINUTES
            if end <= roll_wm:
                _, secs = self._timed_tx(lambda: self._fold(start, end))
                return _Piece(0, True, secs, 1)
            if start > coarse:
                _, secs = self._timed_tx(
                    lambda: self._set_meta(w, "coarse_wm", min(start, roll_wm)))
                return _Piece(0, True, secs, 1)
        horizon = _floor_to(self._last_t, MINUTE)  # the latest minute is still open
        if roll_wm >= horizon:
            return _Piece()
        start = max(roll_wm, _floor_to(self._next_round(roll_wm), MINUTE))
        if start >= horizon:
            _, secs = self._timed_tx(lambda: self._set_meta(w, "roll_wm", horizon))
            return _Piece(0, True, secs, 1)
        # As many whole minutes as about _ROLL_ROWS head rows, up to the next 10-minute edge.
        per_minute = max(1, self._round_rows) * max(1, MINUTE // self._interval_ms)
        minutes = max(1, _ROLL_ROWS // per_minute)
        end = min(_floor_to(start, TEN_MINUTES) + TEN_MINUTES, horizon,
                  start + minutes * MINUTE)
        _, secs = self._timed_tx(lambda: self._roll(start, end))
        return _Piece((end - start) // MINUTE, True, secs, 1)

    def _roll(self, a: int, b: int) -> None:
        """Fold head rows with a <= t < b (whole minutes) into the 1-minute buckets, disks into
        1-minute staging rows (their hour level is filled by `_fold`). The rounds' accounting
        sums are then no longer needed."""
        w = self._w
        w.execute(_GPU_ROLL.format(
            src="SELECT ?, gid, t - t % ?, COUNT(*), SUM(util), MAX(util),"
                " SUM((mem + 524288) >> 20), MAX((mem + 524288) >> 20),"
                " MAX((total + 524288) >> 20), SUM(temp), MAX(temp), SUM(fan), MAX(fan)"
                " FROM h_gpu WHERE t >= ? AND t < ? GROUP BY gid, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_HOST_ROLL.format(
            src="SELECT ?, hid, t - t % ?, COUNT(*), SUM(up), SUM(max(rtt, 0)), MAX(max(rtt, 0))"
                " FROM h_host WHERE t >= ? AND t < ? GROUP BY hid, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_DISK_ROLL.format(
            src="SELECT ?, did, t - t % ?, COUNT(*), SUM((used + 524288) >> 20),"
                " MAX((used + 524288) >> 20), MAX((total + 524288) >> 20)"
                " FROM h_disk WHERE t >= ? AND t < ? GROUP BY did, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_USER_ROLL.format(
            src="SELECT ?, t - t % ?, uid, SUM(gpu_s), SUM(gib_s) FROM h_user"
                " WHERE t >= ? AND t < ? GROUP BY 2, 3"),
            (MINUTE, MINUTE, a, b))
        w.execute("DELETE FROM h_user WHERE t >= ? AND t < ?", (a, b))
        self._set_meta(w, "roll_wm", b)
        self._dirty(MINUTE, a)

    def _fold(self, a: int, b: int) -> None:
        """Add the 1-minute buckets with a <= t < b (within one 10-minute bucket, hence one
        hour) to the 10-minute and 1-hour levels, and the stretch's per-GPU-user memory: one
        sum per series, read through each key in key order (the tables are keyed level,
        series, time), so nothing is sorted."""
        w = self._w
        coarse = ((TEN_MINUTES, _floor_to(a, TEN_MINUTES)), (HOUR, _floor_to(a, HOUR)))
        rows = w.execute(
            "SELECT g.gid, SUM(r.n), SUM(r.util_sum), MAX(r.util_max), SUM(r.mem_sum),"
            " MAX(r.mem_max), MAX(r.total), SUM(r.temp_sum), MAX(r.temp_max), SUM(r.fan_sum),"
            " MAX(r.fan_max) FROM gpu g NOT INDEXED CROSS JOIN gpu_roll r ON r.lvl = ?"
            " AND r.gid = g.gid AND r.t >= ? AND r.t < ? GROUP BY g.gid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_GPU_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        rows = w.execute(
            "SELECT h.hid, SUM(r.n), SUM(r.up_sum), SUM(r.rtt_sum), MAX(r.rtt_max)"
            " FROM host h NOT INDEXED CROSS JOIN host_roll r ON r.lvl = ? AND r.hid = h.hid"
            " AND r.t >= ? AND r.t < ? GROUP BY h.hid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_HOST_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        hour = _floor_to(a, HOUR)
        rows = w.execute(
            "SELECT d.did, SUM(r.n), SUM(r.used_sum), MAX(r.used_max), MAX(r.total)"
            " FROM disk d NOT INDEXED CROSS JOIN disk_roll r ON r.lvl = ? AND r.did = d.did"
            " AND r.t >= ? AND r.t < ? GROUP BY d.did",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_DISK_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?)"),
                      [(HOUR, r[0], hour, *r[1:]) for r in rows])
        w.execute("DELETE FROM disk_roll WHERE lvl = ? AND did IN (SELECT did FROM disk)"
                  " AND t >= ? AND t < ?", (MINUTE, a, b))
        w.execute(_USER_ROLL.format(
            src="SELECT ?, ?, uid, SUM(gpu_s), SUM(gib_s) FROM user_roll"
                " WHERE lvl = ? AND t >= ? AND t < ? GROUP BY uid"),
            (HOUR, hour, MINUTE, a, b))
        stretch = _floor_to(a, TEN_MINUTES)  # h_gpu_user holds this stretch's rounds only
        for lvl, start in coarse:
            w.execute(_GPU_USER_ROLL.format(
                src="SELECT ?, gid, ?, uid, mem FROM h_gpu_user WHERE t = ?"),
                (lvl, start, stretch))
        w.execute("DELETE FROM h_gpu_user WHERE t = ?", (stretch,))
        self._set_meta(w, "coarse_wm", b)
        self._dirty(TEN_MINUTES, stretch)
        self._dirty(HOUR, hour)

    def _compact_piece(self) -> _Piece:
        """One piece of compaction: the next series of the oldest closed slice, as many as come
        to about _COMPACT_ROWS head rows, into blobs. Progress within the slice is kept in meta
        (chunk_kind, chunk_key), so a piece is never repeated."""
        w = self._w
        chunk_wm = self._meta(w, "chunk_wm")
        coarse = self._meta(w, "coarse_wm")
        if chunk_wm is None or coarse is None:
            return _Piece()
        start = max(chunk_wm, _floor_to(self._next_round(chunk_wm), CHUNK))
        end = start + CHUNK
        if end > coarse:  # not rolled up yet (readers need the head rows until then)
            if start > chunk_wm:  # skip a stretch without rounds
                _, secs = self._timed_tx(lambda: self._set_meta(w, "chunk_wm", start))
                return _Piece(0, True, secs, 1)
            return _Piece()

        def work() -> tuple[int, int]:
            kind = self._meta(w, "chunk_kind")
            kind = _KINDS[0] if kind is None else kind
            lo = self._meta(w, "chunk_key")
            rows = 0
            while True:
                limits = [k for k in self._key_bounds(kind, start, end)
                          if lo is None or k > lo]
                hi = limits[0] if limits else None
                rows += self._compact(start, end, kind, lo, hi)
                if hi is not None:
                    self._set_meta(w, "chunk_kind", kind)
                    self._set_meta(w, "chunk_key", hi)
                    lo = hi
                else:
                    w.execute("DELETE FROM meta WHERE k = 'chunk_key'")
                    lo = None
                    if kind == _KINDS[-1]:
                        self._finish_slice(start, end)
                        return 1, rows
                    kind = _KINDS[_KINDS.index(kind) + 1]
                    self._set_meta(w, "chunk_kind", kind)
                if rows >= _COMPACT_ROWS:
                    return 0, rows

        (finished, rows), secs = self._timed_tx(work)
        return _Piece(finished, True, secs, 1, rows)

    def _key_bounds(self, kind: int, a: int, b: int) -> list[int]:
        """Upper key limits (exclusive) that cut a slice's rows of one kind into pieces of about
        _COMPACT_ROWS: from the per-key row counts of the slice's last round with rows of that
        kind, times its rounds (cheap: one round, read in key order)."""
        cached = self._bounds.get((kind, a))
        if cached is not None:
            return cached
        w = self._w
        table, key, _, _ = _LAYOUT[kind]
        limits: list[int] = []
        t_ref = w.execute(f"SELECT MAX(t) FROM {table} WHERE t >= ? AND t < ?",
                          (a, b)).fetchone()[0]
        if t_ref is not None:
            rounds = w.execute("SELECT COUNT(*) FROM h_round WHERE t >= ? AND t < ?",
                               (a, b)).fetchone()[0]
            acc = 0
            for k, n in w.execute(f"SELECT {key}, COUNT(*) FROM {table} WHERE t = ?"
                                  f" GROUP BY {key}", (t_ref,)):
                acc += n * rounds
                if acc >= _COMPACT_ROWS:
                    limits.append(int(k) + 1)
                    acc = 0
        self._bounds = {k: v for k, v in self._bounds.items() if k[1] == a}  # this slice only
        self._bounds[(kind, a)] = limits
        return limits

    def _compact(self, a: int, b: int, kind: int, lo: int | None, hi: int | None) -> int:
        """Move one kind's head rows with a <= t < b and lo <= key < hi into one blob per
        series; returns the rows moved. Rows are found round by round ((t, key) seeks), so a
        piece costs its own rows, not the slice's."""
        w = self._w
        table, key, cols, order = _LAYOUT[kind]
        if kind == _K_GPU and (self._stacks_as_of is None or self._stacks_as_of < b):
            self._save_stacks()  # readers replay the head after these; it is about to shrink
        keys = ""
        args: list[int] = []
        if lo is not None:
            keys += f" AND {key} >= ?"
            args.append(lo)
        if hi is not None:
            keys += f" AND {key} < ?"
            args.append(hi)

        def x(names: str) -> str:  # columns of the head table in the join
            return ", ".join(f"x.{c.strip()}" for c in names.split(","))

        rows = w.execute(
            f"SELECT x.{key}, {x(cols)} FROM h_round r CROSS JOIN {table} x ON x.t = r.t"
            f"{keys.replace(' AND ', ' AND x.')} WHERE r.t >= ? AND r.t < ? ORDER BY {x(order)}",
            (*args, a, b),
        )
        blobs = []
        moved = 0
        for k, group in groupby(rows, key=itemgetter(0)):
            series = list(zip(*group, strict=True))[1:]
            moved += len(series[0])
            blobs.append((kind, k, a, max(series[0]), _codec.encode(series)))
        w.executemany("INSERT INTO chunk VALUES (?, ?, ?, ?, ?)", blobs)
        self._dirty(0, a)
        w.execute(f"DELETE FROM {table} WHERE t IN (SELECT t FROM h_round WHERE t >= ? AND t < ?)"
                  f"{keys}", (a, b, *args))
        return moved

    def _finish_slice(self, a: int, b: int) -> None:
        w = self._w
        w.execute("DELETE FROM h_round WHERE t >= ? AND t < ?", (a, b))
        w.execute("DELETE FROM meta WHERE k IN ('chunk_kind', 'chunk_key')")
        self._set_meta(w, "chunk_wm", b)

    def _save_stacks(self) -> None:
        if self._last_t is None:
            return
        as_of = self._last_t
        self._w.executemany(
            "INSERT OR REPLACE INTO live_gpu VALUES (?, ?, ?)",
            [(gid, as_of, _dump_stack(stack)) for gid, stack in self._stacks.items()],
        )
        self._stacks_as_of = as_of

    def _dirty(self, level: int, t: int) -> None:
        """Rows at `level` starting at t were just written: if t is at or below the cut the
        level was last deleted up to, retention must look again (harmless if rolled back)."""
        done = self._retain_done.get(level)
        if done is not None and t <= done:
            self._retain_dirty.add(level)

    def _retain_piece(self, now_ms: int) -> _Piece:
        """One piece of retention. The first of a call moves the floors (always: readers hide
        what is below them) and picks the levels with something new to delete; then each
        piece deletes up to _RETAIN_ROWS aged-out rows, target after target."""
        i = self._retain_next
        if i is None:
            return _Piece()

        def work() -> tuple[int, int, int]:
            w = self._w
            j = i
            if j == 0:
                self._retain_cuts = cuts = self._set_floors(now_ms)
                self._retain_levels = {
                    lvl for lvl, cut in cuts.items()
                    if lvl in self._retain_dirty or lvl not in self._retain_done
                    or _floor_to(cut, lvl or CHUNK)
                    > _floor_to(self._retain_done[lvl], lvl or CHUNK)
                }
                if (self._last_t is not None and (self._stacks_as_of is None
                        or self._last_t - self._stacks_as_of >= _STACKS_EVERY)):
                    self._save_stacks()  # keeps the head replay of readers short
            targets = self._retain_targets(self._retain_cuts, self._retain_levels)
            left = _RETAIN_ROWS
            deleted = 0
            while j < len(targets):
                sql, args = targets[j]
                n = w.execute(sql, (*args, left)).rowcount
                deleted += n
                left -= n
                if left <= 0:
                    break  # this target may have more
                j += 1
            return deleted, j, len(targets)

        (deleted, j, total), secs = self._timed_tx(work)
        if j < total:
            self._retain_next = j
            return _Piece(deleted, True, secs, 1)
        self._retain_next = None
        self._retain_done.update({lvl: self._retain_cuts[lvl] for lvl in self._retain_levels})
        self._retain_dirty -= self._retain_levels
        return _Piece(deleted, False, secs, 1)

    def _set_floors(self, now_ms: int) -> dict[int, int]:
        """Move the retention floors (never back); returns per level (0: raw) the cut: a raw
        slice, or bucket, starting at or before it has aged out."""
        w = self._w
        floors: dict[int, int] = {}
        for name, lvl in (("raw", 0), *((str(lvl), lvl) for lvl in GPU_LEVELS)):
            old = self._meta(w, f"floor_{name}")
            new = now_ms - self._keep_ms[lvl]
            floors[lvl] = new if old is None else max(old, new)
            self._set_meta(w, f"floor_{name}", floors[lvl])
        coarse = self._meta(w, "coarse_wm")
        if coarse is not None:  # what the coarse levels do not hold yet stays (see _read)
            floors[0] = min(floors[0], coarse)
            floors[MINUTE] = min(floors[MINUTE], coarse)
        # Raw: whole slices only (reads hide the rest); buckets once they end at the floor.
        return {0: floors[0] - CHUNK, **{lvl: floors[lvl] - lvl for lvl in GPU_LEVELS}}

    @staticmethod
    def _retain_targets(
        cuts: dict[int, int], levels: set[int]
    ) -> list[tuple[str, tuple[int, ...]]]:
        """Deletes of aged-out rows at `levels` (0: raw chunks), each taking a row limit as its
        last argument. Each reaches its rows through the series keys (the tables are keyed
        kind or level, series, time), so finding nothing costs one seek per series."""
        out: list[tuple[str, tuple[int, ...]]] = []
        if 0 in levels:
            for kind in _KINDS:
                keys, col = _KEY_TABLE[kind]
                out.append((
                    "DELETE FROM chunk WHERE rowid IN (SELECT c.rowid FROM"
                    f" {keys} k CROSS JOIN chunk c ON c.kind = ? AND c.key = k.{col}"
                    " AND c.t0 <= ? LIMIT ?)", (kind, cuts[0])))
        for lvl in GPU_LEVELS:
            if lvl not in levels:
                continue
            cut = cuts[lvl]
            for table, keys, col in (("gpu_roll", "gpu", "gid"), ("host_roll", "host", "hid"),
                                     ("disk_roll", "disk", "did")):
                if table == "disk_roll" and lvl not in DISK_LEVELS:
                    continue
                out.append((
                    f"DELETE FROM {table} WHERE lvl = ? AND ({col}, t) IN (SELECT r.{col}, r.t"
                    f" FROM {keys} k CROSS JOIN {table} r ON r.lvl = ? AND r.{col} = k.{col}"
                    " AND r.t <= ? LIMIT ?)", (lvl, lvl, cut)))
            if lvl in USER_LEVELS:
                out.append((
                    "DELETE FROM user_roll WHERE lvl = ? AND (t, uid) IN (SELECT t, uid FROM"
                    " user_roll WHERE lvl = ? AND t <= ? LIMIT ?)", (lvl, lvl, cut)))
            if lvl in GPU_USER_LEVELS:
                out.append((
                    "DELETE FROM gpu_user_roll WHERE lvl = ? AND (gid, t, uid) IN"
                    " (SELECT r.gid, r.t, r.uid FROM gpu g CROSS JOIN gpu_user_roll r"
                    " ON r.lvl = ? AND r.gid = g.gid AND r.t <= ? LIMIT ?)", (lvl, lvl, cut)))
        return out

    # ---------------------------------------------------------------- reading: planning

    def _finest(self, levels: Sequence[int], span: float, max_points: int) -> int:
        """Index into (raw, *levels) of the finest source with few enough rows for the window."""
        steps = (self._interval_ms, *levels)
        for i, step in enumerate(steps):
            if span / step <= max(_OVERSAMPLE * max_points, _FEW_ROWS):
                return i
        return len(steps) - 1

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

    def _raw(
        self, conn: sqlite3.Connection, snap: _Snap, kind: int, key: int, *, lo: int, hi: int
    ) -> list[tuple[int, ...]]:
        """Raw rows (the blob's columns, t first) of one series with lo <= t < hi."""
        out: list[tuple[int, ...]] = []
        if snap.raw_floor is not None:
            lo = max(lo, snap.raw_floor)
        if lo >= hi:
            return out
        if snap.chunk_hi is not None and lo < snap.chunk_hi:
            for (blob,) in conn.execute(
                "SELECT data FROM chunk WHERE kind = ? AND key = ? AND t0 > ? AND t0 < ?"
                " ORDER BY t0",
                (kind, key, lo - CHUNK, hi),
            ):
                for row in zip(*_codec.decode(blob), strict=True):
                    if lo <= row[0] < hi:
                        out.append(row)
        table, keycol, cols, _ = _LAYOUT[kind]
        out.extend(conn.execute(
            f"SELECT {cols} FROM {table} WHERE t IN"
            f" (SELECT t FROM h_round WHERE t >= ? AND t < ?) AND {keycol} = ?",
            (lo, hi, key),
        ))
        return out

    # ---------------------------------------------------------------- reading: series

    @staticmethod
    def _first_t(
        conn: sqlite3.Connection, roll: str, keycol: str, coarsest: int, kind: int, key: int
    ) -> int | None:
        """About when a series' data starts (at worst the start of its first hour bucket)."""
        firsts = [
            conn.execute(f"SELECT MIN(t) FROM {roll} WHERE lvl = ? AND {keycol} = ?",
                         (coarsest, key)).fetchone()[0],
            conn.execute("SELECT MIN(t0) FROM chunk WHERE kind = ? AND key = ?",
                         (kind, key)).fetchone()[0],
            conn.execute("SELECT MIN(t) FROM h_round").fetchone()[0],
        ]
        known = [int(t) for t in firsts if t is not None]
        return min(known) if known else None

    @staticmethod
    def _gid(conn: sqlite3.Connection, host: str, gpu: int) -> int | None:
        row = conn.execute(
            "SELECT g.gid FROM gpu g JOIN host h ON h.hid = g.hid WHERE h.name = ? AND g.idx = ?",
            (host, gpu),
        ).fetchone()
        return None if row is None else int(row[0])

    def _series(
        self, conn: sqlite3.Connection, snap: _Snap, m: _Metric, key: int, *,
        since: int, until: int, max_points: int, agg: Agg,
    ) -> tuple[list[float], list[float]]:
        first = self._first_t(conn, m.roll, m.key, m.levels[-1], m.kind, key)
        if first is not None and first > since:
            since = first  # the window starts before the data: spread the points over the data
        if until <= since or max_points < 1:
            return [], []
        npts = max_points
        width = (until - since) / npts
        cnt = [0] * npts
        total = [0.0] * npts
        top = [-math.inf] * npts
        tsum = [0.0] * npts
        finest = self._finest(m.levels, until - since, max_points)
        for src, lo, hi in self._plan(snap, m.levels, since, until, finest):
            if src == 0:
                col = m.col
                scale = m.scale_raw
                for row in self._raw(conn, snap, m.kind, key, lo=lo, hi=hi):
                    if m.only_up and row[1] != 1:
                        continue
                    b = min(int((row[0] - since) / width), npts - 1)
                    v = row[col] * scale
                    cnt[b] += 1
                    total[b] += v
                    top[b] = max(top[b], v)
                    tsum[b] += row[0]
                continue
            for b, n, s, mx, ts in conn.execute(
                f"SELECT CAST((t - ?) / ? AS INTEGER), SUM({m.n}), SUM({m.sum}), MAX({m.max}),"
                f" SUM(min(t + ?, ?) * ({m.n})) FROM {m.roll}"
                f" WHERE lvl = ? AND {m.key} = ? AND t >= ? AND t < ? GROUP BY 1",
                (since, width, src // 2, until - 1, src, key, lo, hi),
            ):
                if not n:
                    continue
                i = min(b, npts - 1)
                cnt[i] += n
                total[i] += s * m.scale_roll
                top[i] = max(top[i], mx * m.scale_roll)
                tsum[i] += ts
        times: list[float] = []
        values: list[float] = []
        for b in range(npts):
            if cnt[b]:
                times.append(tsum[b] / cnt[b] / 1000)
                values.append(total[b] / cnt[b] if agg == "avg" else top[b])
        return times, values

    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """One GPU metric over [since, until): (times, values), time-ordered, <= max_points.

        Units: util %, mem and mem_total bytes (1 MiB resolution once rolled up), temp °C, fan %.
        The window (from where the data starts, if later than `since`) is cut into max_points
        equal stretches; a point is the average (or maximum) of the samples in one, at their
        mean time. Empty stretches give no point.
        """
        spec = _GPU_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(GPU_METRICS)}")
        if agg not in ("avg", "max"):
            raise ValueError(f"agg {agg!r} is not avg or max")
        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return [], []
            return self._series(conn, snap, spec, gid, since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def host_series(
        self, host: str, metric: Literal["up", "rtt"], since: float, until: float, *,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """`up`: fraction of rounds the host answered (0-1); `rtt`: round trip in ms."""
        spec = _HOST_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"host metric {metric!r} is not up or rtt")
        with self._read() as (conn, snap):
            row = conn.execute("SELECT hid FROM host WHERE name = ?", (host,)).fetchone()
            if row is None:
                return [], []
            return self._series(conn, snap, spec, row[0], since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def host_uptime(self, host: str, since: float, until: float) -> float | None:
        """Fraction of the rounds in [since, until) in which the host answered; None if none."""
        _, values = self.host_series(host, "up", since, until, max_points=1)
        return values[0] if values else None

    def disk_series(
        self, host: str, mount: str, since: float, until: float, *, max_points: int = 1000,
        metric: Literal["used", "total"] = "used", agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """Disk usage in bytes (1 MiB resolution once rolled up)."""
        spec = _DISK_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"disk metric {metric!r} is not used or total")
        with self._read() as (conn, snap):
            row = conn.execute(
                "SELECT d.did FROM disk d JOIN host h ON h.hid = d.hid"
                " WHERE h.name = ? AND d.mount = ?", (host, mount),
            ).fetchone()
            if row is None:
                return [], []
            return self._series(conn, snap, spec, row[0], since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def raw_samples(
        self, host: str, gpu: int, since: float, until: float
    ) -> list[tuple[float, int, int, int, int, int]]:
        """Every raw sample still kept: (t, util, mem, mem_total, temp, fan), time-ordered."""
        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return []
            rows = self._raw(conn, snap, _K_GPU, gid, lo=_ms(since), hi=_ms(until))
        rows.sort()
        return [(r[0] / 1000, r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def gpus(self) -> list[tuple[str, int, str]]:
        """(host, GPU index, GPU name) of every GPU ever seen."""
        with self._read() as (conn, _):
            return [(str(h), int(i), str(n)) for h, i, n in conn.execute(
                "SELECT h.name, g.idx, g.name FROM gpu g JOIN host h ON h.hid = g.hid"
                " ORDER BY h.name, g.idx")]

    def sparklines(
        self, window: float, now: float, points: int = 60
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        """Per GPU with data in [now - window, now): `util` (%) and `mem` (fraction of total,
        0-1), one value per equal stretch of the window, NaN where there is no data.

        One grouped query over all GPUs: the coarsest bucket level not longer than a stretch
        (10-minute buckets for 24 h), and the raw head for what is not rolled up yet.
        """
        until = _ms(now)
        since = until - _ms(window)
        if points < 1 or until <= since:
            return {}
        width = (until - since) / points
        finest = 0
        for i, lvl in enumerate(GPU_LEVELS, start=1):
            if lvl <= width:
                finest = i
        # Per GPU, flat per stretch: sample count, util sum, memory sum (MiB), total max (MiB).
        acc: dict[int, tuple[list[float], list[float], list[float], list[float]]] = {}
        last = points - 1
        zero = [0.0] * points

        def absorb(rows: Iterable[tuple[int, int, float, float, float, float]]) -> None:
            for gid, stretch, n, util, mem, total in rows:
                cells = acc.get(gid)
                if cells is None:
                    cells = acc[gid] = (zero[:], zero[:], zero[:], zero[:])
                b = min(stretch, last)
                cells[0][b] += n
                cells[1][b] += util
                cells[2][b] += mem
                cells[3][b] = max(cells[3][b], total)

        with self._read() as (conn, snap):
            names = {
                int(gid): (str(host), int(idx)) for gid, host, idx in conn.execute(
                    "SELECT g.gid, h.name, g.idx FROM gpu g JOIN host h ON h.hid = g.hid")
            }
            plan = self._plan(snap, GPU_LEVELS, since, until, finest)
            chunked = any(
                src == 0 and snap.chunk_hi is not None
                and max(lo, snap.raw_floor or lo) < snap.chunk_hi for src, lo, _ in plan
            )
            if not chunked:
                return self._sparklines_sql(conn, plan, names, since, width, points)
            for src, lo, hi in plan:  # with stretches under a minute: raw samples, in Python
                if src:
                    absorb(conn.execute(
                        "SELECT r.gid, CAST((r.t - ?) / ? AS INTEGER), SUM(r.n), SUM(r.util_sum),"
                        " SUM(r.mem_sum), MAX(r.total) FROM gpu g CROSS JOIN gpu_roll r"
                        " ON r.lvl = ? AND r.gid = g.gid AND r.t >= ? AND r.t < ?"
                        " GROUP BY r.gid, 2",
                        (since, width, src, lo, hi),
                    ))
                    continue
                raw_lo = lo if snap.raw_floor is None else max(lo, snap.raw_floor)
                head_lo = raw_lo if snap.chunk_wm is None else max(raw_lo, snap.chunk_wm)
                if head_lo < hi:
                    absorb(conn.execute(
                        "SELECT gid, CAST((t - ?) / ? AS INTEGER), COUNT(*), SUM(util),"
                        " SUM(mem) / 1048576.0, MAX(total) / 1048576.0 FROM h_gpu"
                        " WHERE t >= ? AND t < ? GROUP BY gid, 2",
                        (since, width, head_lo, hi),
                    ))
                # Each sample is in the head or in a chunk, never both (a slice being compacted
                # has some series in each).
                chunk_hi = min(hi, snap.chunk_hi or hi)
                for gid, blob in conn.execute(
                    "SELECT key, data FROM chunk WHERE kind = ? AND t0 > ? AND t0 < ?",
                    (_K_GPU, raw_lo - CHUNK, chunk_hi),
                ):
                    cols = _codec.decode(blob)
                    absorb(
                        (gid, int((t - since) / width), 1, util, mem / MIB, tot / MIB)
                        for t, util, mem, tot in zip(cols[0], cols[1], cols[2], cols[3],
                                                     strict=True)
                        if raw_lo <= t < chunk_hi
                    )
        out: dict[tuple[str, int], dict[str, list[float]]] = {}
        nan = math.nan
        for gid, (cnt, util, mem, total) in acc.items():
            if gid in names:
                out[names[gid]] = {
                    "util": [u / c if c else nan for c, u in zip(cnt, util, strict=True)],
                    "mem": [m / c / t if c and t else nan
                            for c, m, t in zip(cnt, mem, total, strict=True)],
                }
        return out

    @staticmethod
    def _sparklines_sql(
        conn: sqlite3.Connection, plan: Sequence[tuple[int, int, int]],
        names: dict[int, tuple[str, int]], since: int, width: float, points: int,
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        """Sparklines in one statement: every source's rows per (GPU, stretch), merged, and one
        row per GPU with its stretches as text (parsing that beats 50,000 Python rows)."""
        parts: list[str] = []
        args: list[float] = []
        for src, lo, hi in plan:
            if src:
                parts.append(
                    "SELECT r.gid AS gid, CAST((r.t - ?) / ? AS INTEGER) AS b, r.n AS n,"
                    " r.util_sum AS u, r.mem_sum AS m, r.total AS tot FROM gpu g"
                    " CROSS JOIN gpu_roll r ON r.lvl = ? AND r.gid = g.gid AND r.t >= ? AND r.t < ?"
                )
                args += (since, width, src, lo, hi)
            else:  # not rolled up yet: the head
                parts.append(
                    "SELECT gid AS gid, CAST((t - ?) / ? AS INTEGER) AS b, 1 AS n, util AS u,"
                    " mem / 1048576.0 AS m, total / 1048576.0 AS tot FROM h_gpu"
                    " WHERE t >= ? AND t < ?"
                )
                args += (since, width, lo, hi)
        if not parts:
            return {}
        last = points - 1
        rows = conn.execute(
            "SELECT gid, group_concat(b), group_concat(u), group_concat(f) FROM ("
            f" SELECT gid, min(b, {last}) AS b, SUM(u) * 1.0 / SUM(n) AS u,"
            " coalesce(SUM(m) * 1.0 / SUM(n) / nullif(MAX(tot), 0), 'NaN') AS f"
            f" FROM ({' UNION ALL '.join(parts)}) GROUP BY gid, min(b, {last}))"
            " GROUP BY gid",
            args,
        )
        nan = math.nan
        full = list(range(points))
        out: dict[tuple[str, int], dict[str, list[float]]] = {}
        for gid, b_text, u_text, f_text in rows:
            if gid not in names:
                continue
            stretches = list(map(int, b_text.split(",")))
            util = list(map(float, u_text.split(",")))
            mem = list(map(float, f_text.split(",")))  # "NaN" where the total is unknown
            if stretches != full:  # gaps (or another order): place each value
                util_line, mem_line = [nan] * points, [nan] * points
                for b, u, m in zip(stretches, util, mem, strict=True):
                    util_line[b], mem_line[b] = u, m
                util, mem = util_line, mem_line
            out[names[gid]] = {"util": util, "mem": mem}
        return out

    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Per-user GPU memory (bytes) on one GPU over [since, until), for a stacked chart:
        (times, {user: values aligned with times}); a user absent in a stretch has 0 there."""
        lo_ms, hi_ms = _ms(since), _ms(until)
        npts = max_points
        mem: dict[int, list[float]] = {}

        def user_line(uid: int) -> list[float]:
            line = mem.get(uid)
            if line is None:
                line = mem[uid] = [0.0] * npts
            return line

        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return [], {}
            first = self._first_t(conn, "gpu_roll", "gid", HOUR, _K_GPU, gid)
            if first is not None and first > lo_ms:
                lo_ms = first
            if hi_ms <= lo_ms or max_points < 1:
                return [], {}
            width = (hi_ms - lo_ms) / npts
            cnt = [0] * npts  # GPU samples per stretch: the denominator of each user's average
            tsum = [0.0] * npts
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
            finest = self._finest(GPU_USER_LEVELS, hi_ms - lo_ms, max_points)
            for src, lo, hi in self._plan(snap, GPU_USER_LEVELS, lo_ms, hi_ms, finest):
                if src == 0:
                    for row in self._raw(conn, snap, _K_GPU, gid, lo=lo, hi=hi):
                        b = min(int((row[0] - lo_ms) / width), npts - 1)
                        cnt[b] += 1
                        tsum[b] += row[0]
                    for t, _pid, uid, _bid, pmem, _util in self._raw(
                        conn, snap, _K_PROC, gid, lo=lo, hi=hi
                    ):
                        user_line(uid)[min(int((t - lo_ms) / width), npts - 1)] += pmem
                    continue
                for b, n, ts in conn.execute(
                    "SELECT CAST((t - ?) / ? AS INTEGER), SUM(n), SUM(min(t + ?, ?) * n)"
                    " FROM gpu_roll WHERE lvl = ? AND gid = ? AND t >= ? AND t < ? GROUP BY 1",
                    (lo_ms, width, src // 2, hi_ms - 1, src, gid, lo, hi),
                ):
                    i = min(b, npts - 1)
                    cnt[i] += n
                    tsum[i] += ts
                for b, uid, s in conn.execute(
                    "SELECT CAST((t - ?) / ? AS INTEGER), uid, SUM(mem_sum) FROM gpu_user_roll"
                    " WHERE lvl = ? AND gid = ? AND t >= ? AND t < ? GROUP BY 1, 2",
                    (lo_ms, width, src, gid, lo, hi),
                ):
                    user_line(uid)[min(b, npts - 1)] += s * MIB
        keep = [b for b in range(npts) if cnt[b]]
        times = [tsum[b] / cnt[b] / 1000 for b in keep]
        per_user = {
            users.get(uid, f"#{uid}"): [line[b] / cnt[b] for b in keep]
            for uid, line in sorted(mem.items())
        }
        return times, per_user

    # ---------------------------------------------------------------- reading: accounting

    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]:
        """Per user, per window w: GPU-hours and GiB-hours over [now - w, now).

        A sample counts the time since its host's previous sample, capped at 3 intervals (so a
        gap adds at most that); users sharing a GPU in a sample split it equally. Rolled-up
        history counts whole minutes (hours, past the minute level's retention) that start in
        the window; the last minutes, not rolled up yet, count their rounds in the window.
        """
        now_ms = _ms(now)
        with self._read() as (conn, snap):
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
            totals: dict[int, dict[float, list[float]]] = {}
            for window in windows:
                since = now_ms - _ms(window)
                pieces: list[tuple[int, int, int]] = []
                for src, lo, hi in self._plan(snap, USER_LEVELS, since, now_ms, 1):
                    # Hour rows are complete once they end before coarse_wm.
                    whole_lo = _ceil_to(lo, HOUR)
                    whole_hi = _floor_to(min(hi, snap.coarse_wm or hi), HOUR)
                    if src == MINUTE and whole_lo < whole_hi:
                        # Whole hours from the hour rows: 60x fewer.
                        pieces += [(MINUTE, whole_hi, hi), (HOUR, whole_lo, whole_hi),
                                   (MINUTE, lo, whole_lo)]
                    else:
                        pieces.append((src, lo, hi))
                for src, lo, hi in pieces:
                    if lo >= hi:
                        continue
                    if src == 0:  # not rolled up yet: the head's per-round sums
                        query = (
                            "SELECT uid, SUM(gpu_s), SUM(gib_s) FROM h_user"
                            " WHERE t >= ? AND t < ? GROUP BY uid"
                        )
                        args: tuple[int, ...] = (lo, hi)
                    else:
                        query = (
                            "SELECT uid, SUM(gpu_s), SUM(gib_s) FROM user_roll"
                            " WHERE lvl = ? AND t >= ? AND t < ? GROUP BY uid"
                        )
                        args = (src, lo, hi)
                    for uid, g, m in conn.execute(query, args):
                        acc = totals.setdefault(uid, {}).setdefault(window, [0.0, 0.0])
                        acc[0] += g
                        acc[1] += m
        return {
            users.get(uid, f"#{uid}"): {
                w: UsageTotals(*(x / 3600 for x in per.get(w, (0.0, 0.0)))) for w in windows
            }
            for uid, per in sorted(totals.items())
        }

    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]:
        """Processes present in every sample of their host for more than `min_seconds` while
        their GPU's utilization stayed below `util_threshold`, up to the latest sample.

        Idle means util < threshold (a sample at exactly the threshold is busy); a hog needs
        latest - since > min_seconds (exactly min_seconds is not yet one). The run starts at the
        first sample after the last busy one, or at the process's first sample, whichever is
        later; a down round or a gap over 3 intervals restarts it. The host's latest sample must
        be within 3 intervals of `now`.
        """
        now_ms = _ms(now)
        min_ms = min_seconds * 1000
        with self._read() as (conn, _):
            procs = conn.execute(
                "SELECT lp.gid, lp.pid, lp.start, lh.t, h.name, g.idx, u.name, b.name,"
                " coalesce(p.mem, 0) FROM live_proc lp JOIN gpu g ON g.gid = lp.gid"
                " JOIN live_host lh ON lh.hid = g.hid JOIN host h ON h.hid = g.hid"
                " JOIN user u ON u.uid = lp.uid JOIN bname b ON b.bid = lp.bid"
                " LEFT JOIN h_proc p ON p.t = lh.t AND p.gid = lp.gid AND p.pid = lp.pid"
                " WHERE lh.run_start IS NOT NULL AND lh.t >= ? AND lh.t - lp.start > ?",
                (now_ms - self._cap_ms, min_ms),
            ).fetchall()
            if not procs:
                return []
            stacks = self._stacks_for(conn, {int(r[0]) for r in procs})
        hogs = []
        for gid, pid, start, last, host, idx, user, bname, mem in procs:
            gpu_since = _idle_since(stacks.get(gid, []), util_threshold)
            if gpu_since is None:
                continue
            since = max(start, gpu_since)
            if last - since > min_ms:
                hogs.append(IdleHog(host, idx, pid, user, bname, mem, since / 1000,
                                    (last - since) / 1000))
        hogs.sort(key=lambda h: (h.since, h.host, h.gpu, h.pid))
        return hogs
