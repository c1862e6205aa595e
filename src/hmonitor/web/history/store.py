"""Durable history of the cluster: what the poller saw each round, kept in SQLite.

Layout (details in schema.sql):

* **head**: each round appends its raw rows (time-first keys, so a round writes a few pages);
* **chunks**: `maintain` moves closed 10-minute slices of the head into one compressed blob per
  series (a GPU-sample costs a few bytes there), kept `raw_days`;
* **rollups**: `maintain` folds every closed minute of the head into 1-minute, 10-minute and
  1-hour buckets (sum, count and max per metric, plus per-user GPU-seconds and GiB-seconds) as
  it goes, so long windows are answered from a few rows and nothing is rolled up twice: one
  watermark per step, advanced in the same transaction as the work it covers.

Queries pick the resolution from the window (`series`: raw up to ~10 samples per point, then the
finest bucket level that keeps the work small) and stitch coarser levels in where the finer one
has been deleted. Windows are half-open: [since, until).

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
from functools import partial
from importlib import resources
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from hmonitor.web.hoststate import HostSample
from hmonitor.web.owner import owner_label

from . import _codec

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1

MIB = 1 << 20
GIB = 1 << 30
_I64_MAX = (1 << 63) - 1  # SQLite integers are signed; a garbage uint64 must not abort a round

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

_K_HOST, _K_GPU, _K_PROC, _K_DISK = 0, 1, 2, 3
# Per chunk kind: head table, key column, the other columns (the blob's columns), blob order.
_LAYOUT: dict[int, tuple[str, str, str, str]] = {
    _K_HOST: ("h_host", "hid", "t, up, rtt, dt", "hid, t"),
    _K_GPU: ("h_gpu", "gid", "t, util, mem, total, temp, fan", "gid, t"),
    # Ordered by pid within a GPU: a process's rows then differ by little, which compresses well.
    _K_PROC: ("h_proc", "gid", "t, pid, uid, bid, mem, util", "gid, pid, t"),
    _K_DISK: ("h_disk", "did", "t, used, total", "did, t"),
}

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

    roll_wm: int | None  # rollups cover everything before this
    chunk_wm: int | None  # chunks hold everything before this; the head the rest
    raw_floor: int | None  # raw samples before this are gone (never above roll_wm)
    floors: dict[int, int]  # per rollup level: buckets ending at or before this are gone


def _floor_to(t: int, step: int) -> int:
    return t - t % step


def _ceil_to(t: int, step: int) -> int:
    return -((-t) // step) * step


def _ms(t: float) -> int:
    return round(t * 1000)


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


# (t, gid, pid, uid, bid, mem, util, dt, share): see h_proc in schema.sql
_ProcRow = tuple[int, int, int, int, int, int, int, int, float]

# Upserts that add a SELECT's buckets into the rollup rows (partial buckets grow).
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
_USER_ROLL = (
    "INSERT INTO user_roll {src} ON CONFLICT (lvl, t, uid) DO UPDATE"
    " SET gpu_s = gpu_s + excluded.gpu_s, gib_s = gib_s + excluded.gib_s"
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
        for label, value in (("raw_days", raw_days), ("keep_days", keep_days),
                             ("minute_days", minute_days), ("ten_minute_days", ten_minute_days),
                             ("interval", interval)):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        if disk_interval < 0:
            raise ValueError(f"disk_interval must not be negative, not {disk_interval!r}")
        self._path = Path(path)
        self._interval_ms = _ms(interval)
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
        self._w = self._connect(readonly=False)
        try:
            self._init_schema()
            self._load_state()
        except BaseException:
            self._w.close()
            raise

    # ---------------------------------------------------------------- connections and state

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 30000")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a kill -9 loses nothing committed
            conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA cache_size = -32768")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    def _init_schema(self) -> None:
        w = self._w
        w.execute("BEGIN IMMEDIATE")  # another process may be creating it right now
        try:
            version = w.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _schema_statements():
                    w.execute(statement)
                w.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path}: history schema {version} is newer than this program's "
                    f"({SCHEMA_VERSION})"
                )
            # Migrations from older versions go here, one step per version.
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    def _load_state(self) -> None:
        """Writer caches, from the database (at open, and after a failed transaction)."""
        w = self._w
        self._hosts: dict[str, int] = dict(w.execute("SELECT name, hid FROM host"))
        self._gpus: dict[tuple[int, int], tuple[int, str]] = {
            (hid, idx): (gid, name)
            for gid, hid, idx, name in w.execute("SELECT gid, hid, idx, name FROM gpu")
        }
        self._gpu_host: dict[int, int] = {gid: hid for (hid, _), (gid, _) in self._gpus.items()}
        self._users: dict[str, int] = dict(w.execute("SELECT name, uid FROM user"))
        self._bnames: dict[str, int] = dict(w.execute("SELECT name, bid FROM bname"))
        self._disks: dict[tuple[int, str], tuple[int, str]] = {
            (hid, mount): (did, device)
            for did, hid, mount, device in w.execute("SELECT did, hid, mount, device FROM disk")
        }
        self._last_t: int | None = w.execute("SELECT MAX(t) FROM h_round").fetchone()[0]
        self._disk_t = self._meta(w, "disk_t")
        self._lhost: dict[int, list[int | None]] = {
            hid: [t, run] for hid, t, run in w.execute("SELECT hid, t, run_start FROM live_host")
        }
        self._lproc: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._host_procs: dict[int, set[tuple[int, int]]] = {}
        for gid, pid, uid, bid, start in w.execute(
            "SELECT gid, pid, uid, bid, start FROM live_proc"
        ):
            self._lproc[(gid, pid)] = (uid, bid, start)
            self._host_procs.setdefault(self._gpu_host[gid], set()).add((gid, pid))
        self._stacks = self._stacks_for(w, None)

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
            raw_floor = meta.get("floor_raw")
            if raw_floor is not None and roll_wm is not None:
                raw_floor = min(raw_floor, roll_wm)  # never hide what is not rolled up yet
            snap = _Snap(
                roll_wm=roll_wm,
                chunk_wm=meta.get("chunk_wm"),
                raw_floor=raw_floor,
                floors={lvl: meta[f"floor_{lvl}"] for lvl in GPU_LEVELS if f"floor_{lvl}" in meta},
            )
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
            cur = self._w.execute(f"INSERT INTO {table} (name) VALUES (?)", (name,))
            found = cache[name] = int(cur.lastrowid or 0)
        return found

    def _gpu_id(self, hid: int, idx: int, name: str) -> int:
        found = self._gpus.get((hid, idx))
        if found is None:
            cur = self._w.execute(
                "INSERT INTO gpu (hid, idx, name) VALUES (?, ?, ?)", (hid, idx, name)
            )
            gid = int(cur.lastrowid or 0)
            self._gpus[(hid, idx)] = (gid, name)
            self._gpu_host[gid] = hid
            return gid
        gid, known = found
        if name != known:
            self._w.execute("UPDATE gpu SET name = ? WHERE gid = ?", (name, gid))
            self._gpus[(hid, idx)] = (gid, name)
        return gid

    def _disk_id(self, hid: int, mount: str, device: str) -> int:
        found = self._disks.get((hid, mount))
        if found is None:
            cur = self._w.execute(
                "INSERT INTO disk (hid, mount, device) VALUES (?, ?, ?)", (hid, mount, device)
            )
            did = int(cur.lastrowid or 0)
            self._disks[(hid, mount)] = (did, device)
            return did
        did, known = found
        if device != known:
            self._w.execute("UPDATE disk SET device = ? WHERE did = ?", (device, did))
            self._disks[(hid, mount)] = (did, device)
        return did

    def ingest(self, states: Sequence[HostSample], t: float) -> None:
        """Store one polling round (one transaction). Rounds must come in time order."""
        tm = _ms(t)
        with self._wlock:
            if self._closed:
                raise RuntimeError("history store is closed")
            if self._last_t is not None and tm <= self._last_t:
                log.warning("history: round at %.3f is not after the last one (%.3f); skipped",
                            t, self._last_t / 1000)
                return
            self._w.execute("BEGIN IMMEDIATE")
            try:
                self._ingest(states, tm)
                self._w.execute("COMMIT")
            except BaseException:
                if self._w.in_transaction:
                    self._w.execute("ROLLBACK")
                self._load_state()  # the caches may hold ids and runs that were rolled back
                raise
            self._last_t = tm

    def _ingest(self, states: Sequence[HostSample], tm: int) -> None:
        w = self._w
        cap = self._cap_ms
        disks_due = self._disk_t is None or tm - self._disk_t >= self._disk_ms
        r_host: list[tuple[int, int, int, int, int]] = []
        r_gpu: list[tuple[int, int, int, int, int, int, int]] = []
        r_proc: list[_ProcRow] = []
        r_disk: list[tuple[int, int, int, int]] = []
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
            rtt = round(rtt_ms * 1000) if state.up and rtt_ms is not None else -1
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
                per_user: dict[int, int] = {}
                for v in procs.values():
                    per_user[v[0]] = per_user.get(v[0], 0) + 1
                nusers = len(per_user)
                for pid, (uid, bid, mem, putil) in procs.items():
                    share = 1.0 / (nusers * per_user[uid])
                    r_proc.append((tm, gid, pid, uid, bid, mem, putil, dt, share))
                    key = (gid, pid)
                    new_keys.add(key)
                    old = lproc.get(key)
                    if (cont and old is not None and old[0] == uid and old[1] == bid
                            and key in old_keys):
                        continue  # the same process, still there: nothing to write
                    lproc[key] = (uid, bid, tm)
                    lp_put.append((gid, pid, uid, bid, tm))
            for key in old_keys - new_keys:
                lproc.pop(key, None)
                lp_del.append(key)
            self._host_procs[hid] = new_keys
            if disks_due:
                for d in info.disks:
                    did = self._disk_id(hid, d.mount, d.device)
                    r_disk.append((tm, did, min(d.used, _I64_MAX), min(d.total, _I64_MAX)))
        self._write_head([tm], r_host, r_gpu, r_proc, r_disk)
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
        r_host: Sequence[tuple[int, int, int, int, int]],
        r_gpu: Sequence[tuple[int, int, int, int, int, int, int]],
        r_proc: Sequence[_ProcRow],
        r_disk: Sequence[tuple[int, int, int, int]],
    ) -> None:
        w = self._w
        w.executemany("INSERT INTO h_round (t) VALUES (?)", [(t,) for t in rounds])
        w.executemany("INSERT INTO h_host VALUES (?, ?, ?, ?, ?)", r_host)
        w.executemany("INSERT INTO h_gpu VALUES (?, ?, ?, ?, ?, ?, ?)", r_gpu)
        w.executemany("INSERT INTO h_proc VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", r_proc)
        if r_disk:
            w.executemany("INSERT OR REPLACE INTO h_disk VALUES (?, ?, ?, ?)", r_disk)
            self._disk_t = max(r[0] for r in r_disk)
            self._set_meta(w, "disk_t", self._disk_t)
        if self._last_t is None and self._meta(w, "roll_wm") is None:
            self._set_meta(w, "roll_wm", _floor_to(rounds[0], MINUTE))
            self._set_meta(w, "chunk_wm", _floor_to(rounds[0], CHUNK))

    def _bulk_append(
        self,
        rounds: Sequence[int],
        r_host: Sequence[tuple[int, int, int, int, int]],
        r_gpu: Sequence[tuple[int, int, int, int, int, int, int]],
        r_proc: Sequence[_ProcRow],
        r_disk: Sequence[tuple[int, int, int, int]] = (),
    ) -> None:
        """Append ready-made head rows of many rounds in one transaction.

        For benchmarks and importers that synthesize years of samples: rows are in the head
        tables' formats (ids, times in ms, rounds ascending and after the last one) and go
        through the same rollup, compaction and retention as ingested ones. The idle-process
        state is not updated.
        """
        with self._wlock:
            if not rounds:
                return
            if self._last_t is not None and rounds[0] <= self._last_t:
                raise ValueError("rounds must come after the last stored one")
            self._tx(lambda: self._write_head(rounds, r_host, r_gpu, r_proc, r_disk))
            self._last_t = rounds[-1]

    # ---------------------------------------------------------------- maintenance

    def maintain(self, now: float, *, budget_s: float | None = None) -> MaintainReport:
        """Roll up closed minutes, compress closed 10-minute slices, apply retention.

        Each step is its own transaction and advances its watermark with its work, so an
        interruption repeats nothing and loses nothing. With `budget_s`, stops between steps once
        the budget is spent (`done` is then False).
        """
        started = time.perf_counter()
        deadline = None if budget_s is None else started + budget_s
        rolled = compacted = deleted = 0
        done = True
        with self._wlock:
            if self._closed:
                raise RuntimeError("history store is closed")
            w = self._w
            if self._last_t is not None:
                horizon = _floor_to(self._last_t, MINUTE)  # the latest minute is still open
                while True:
                    roll_wm = self._meta(w, "roll_wm")
                    if roll_wm is None or roll_wm >= horizon:
                        break
                    if deadline is not None and time.perf_counter() > deadline:
                        done = False
                        break
                    # Skip stretches without rounds (the dashboard was down) in one step.
                    start = max(roll_wm, _floor_to(self._next_round(roll_wm), MINUTE))
                    end = min(_floor_to(start, TEN_MINUTES) + TEN_MINUTES, horizon)
                    if start >= end:
                        self._tx(partial(self._set_meta, w, "roll_wm", horizon))
                        break
                    self._tx(partial(self._roll, start, end))
                    rolled += (end - start) // MINUTE
                while done:
                    chunk_wm = self._meta(w, "chunk_wm")
                    roll_wm = self._meta(w, "roll_wm")
                    if chunk_wm is None or roll_wm is None:
                        break
                    if deadline is not None and time.perf_counter() > deadline:
                        done = False
                        break
                    start = max(chunk_wm, _floor_to(self._next_round(chunk_wm), CHUNK))
                    if start + CHUNK > roll_wm:
                        if start > chunk_wm:
                            self._tx(partial(self._set_meta, w, "chunk_wm", start))
                        break
                    self._tx(partial(self._compact, start, start + CHUNK))
                    compacted += 1
            deleted = self._tx(partial(self._retain, _ms(now)))
        return MaintainReport(rolled, compacted, deleted, time.perf_counter() - started, done)

    def _next_round(self, t: int) -> int:
        """The first round at or after t; the latest round is always in the head."""
        row = self._w.execute("SELECT MIN(t) FROM h_round WHERE t >= ?", (t,)).fetchone()
        return t if row[0] is None else int(row[0])

    def _tx(self, work: Callable[[], _T]) -> _T:
        w = self._w
        w.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            w.execute("COMMIT")
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK")
            self._load_state()
            raise
        return result

    def _roll(self, a: int, b: int) -> None:
        """Fold head rows with a <= t < b into every rollup level (partial buckets accumulate).

        [a, b) lies within one 10-minute bucket, hence one hour: the minute rows are built from
        the head, and one sum of those fresh rows per series is added to both coarser levels.
        """
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
        coarse = ((TEN_MINUTES, _floor_to(a, TEN_MINUTES)), (HOUR, _floor_to(a, HOUR)))
        rows = w.execute(
            "SELECT r.gid, SUM(r.n), SUM(r.util_sum), MAX(r.util_max), SUM(r.mem_sum),"
            " MAX(r.mem_max), MAX(r.total), SUM(r.temp_sum), MAX(r.temp_max), SUM(r.fan_sum),"
            " MAX(r.fan_max) FROM gpu g CROSS JOIN gpu_roll r ON r.lvl = ? AND r.gid = g.gid"
            " AND r.t >= ? AND r.t < ? GROUP BY r.gid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_GPU_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        rows = w.execute(
            "SELECT r.hid, SUM(r.n), SUM(r.up_sum), SUM(r.rtt_sum), MAX(r.rtt_max)"
            " FROM host h CROSS JOIN host_roll r ON r.lvl = ? AND r.hid = h.hid"
            " AND r.t >= ? AND r.t < ? GROUP BY r.hid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_HOST_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        for lvl in DISK_LEVELS:
            w.execute(
                "INSERT INTO disk_roll SELECT ?, did, t - t % ?, COUNT(*),"
                " SUM((used + 524288) >> 20), MAX((used + 524288) >> 20),"
                " MAX((total + 524288) >> 20)"
                " FROM h_disk WHERE t >= ? AND t < ? GROUP BY did, t - t % ?"
                " ON CONFLICT (lvl, did, t) DO UPDATE SET n = n + excluded.n,"
                " used_sum = used_sum + excluded.used_sum,"
                " used_max = max(used_max, excluded.used_max), total = max(total, excluded.total)",
                (lvl, lvl, a, b, lvl),
            )
        # Accounting; ingest gave each process row its share of the GPU and the time it covers.
        w.execute(_USER_ROLL.format(
            src="SELECT ?, t - t % ?, uid, SUM(dt * share) / 1000.0,"
                " SUM(mem * (dt / 1000.0)) / 1073741824.0 FROM h_proc"
                " WHERE t >= ? AND t < ? GROUP BY 2, 3"),
            (MINUTE, MINUTE, a, b))
        w.execute(_USER_ROLL.format(
            src="SELECT ?, t - t % ?, uid, SUM(gpu_s), SUM(gib_s) FROM user_roll"
                " WHERE lvl = ? AND t >= ? AND t < ? GROUP BY 2, 3"),
            (HOUR, HOUR, MINUTE, a, b))
        rows = w.execute(
            "SELECT gid, uid, SUM((mem + 524288) >> 20) FROM h_proc WHERE t >= ? AND t < ?"
            " GROUP BY gid, uid",
            (a, b),
        ).fetchall()
        w.executemany(
            "INSERT INTO gpu_user_roll VALUES (?, ?, ?, ?, ?) ON CONFLICT (lvl, gid, t, uid)"
            " DO UPDATE SET mem_sum = mem_sum + excluded.mem_sum",
            [(lvl, gid, start, uid, mib) for lvl, start in coarse for gid, uid, mib in rows],
        )
        self._set_meta(w, "roll_wm", b)

    def _compact(self, a: int, b: int) -> None:
        """Move head rows with a <= t < b into one blob per series."""
        w = self._w
        self._save_stacks()  # readers replay the head after these; it is about to shrink
        for kind, (table, key, cols, order) in _LAYOUT.items():
            rows = w.execute(
                f"SELECT {key}, {cols} FROM {table} WHERE t >= ? AND t < ? ORDER BY {order}",
                (a, b),
            )
            blobs = []
            for k, group in groupby(rows, key=itemgetter(0)):
                columns = list(zip(*group, strict=True))[1:]
                blobs.append((kind, k, a, max(columns[0]), _codec.encode(columns)))
            w.executemany("INSERT INTO chunk VALUES (?, ?, ?, ?, ?)", blobs)
            w.execute(f"DELETE FROM {table} WHERE t >= ? AND t < ?", (a, b))
        w.execute("DELETE FROM h_round WHERE t >= ? AND t < ?", (a, b))
        self._set_meta(w, "chunk_wm", b)

    def _save_stacks(self) -> None:
        if self._last_t is None:
            return
        as_of = self._last_t
        self._w.executemany(
            "INSERT OR REPLACE INTO live_gpu VALUES (?, ?, ?)",
            [(gid, as_of, _dump_stack(stack)) for gid, stack in self._stacks.items()],
        )

    def _retain(self, now_ms: int) -> int:
        """Delete what has aged out. A raw sample lives while t >= now - raw_days; a bucket
        while any of it does (it goes once t + length <= now - days)."""
        w = self._w
        floors: dict[str, int] = {}
        for name, lvl in (("raw", 0), *((str(lvl), lvl) for lvl in GPU_LEVELS)):
            old = self._meta(w, f"floor_{name}")
            new = now_ms - self._keep_ms[lvl]
            floors[name] = new if old is None else max(old, new)
            self._set_meta(w, f"floor_{name}", floors[name])
        gids = [gid for gid, _ in self._gpus.values()]
        hids = list(self._hosts.values())
        dids = [did for did, _ in self._disks.values()]
        raw_cut = floors["raw"] - CHUNK  # whole slices only; reads hide the rest
        deleted = w.executemany(
            "DELETE FROM chunk WHERE kind = ? AND key = ? AND t0 <= ?",
            [(_K_GPU, gid, raw_cut) for gid in gids] + [(_K_PROC, gid, raw_cut) for gid in gids]
            + [(_K_HOST, hid, raw_cut) for hid in hids] + [(_K_DISK, did, raw_cut) for did in dids],
        ).rowcount
        for lvl in GPU_LEVELS:
            cut = floors[str(lvl)] - lvl
            deleted += w.executemany("DELETE FROM gpu_roll WHERE lvl = ? AND gid = ? AND t <= ?",
                                     [(lvl, gid, cut) for gid in gids]).rowcount
            deleted += w.executemany("DELETE FROM host_roll WHERE lvl = ? AND hid = ? AND t <= ?",
                                     [(lvl, hid, cut) for hid in hids]).rowcount
            if lvl in DISK_LEVELS:
                deleted += w.executemany(
                    "DELETE FROM disk_roll WHERE lvl = ? AND did = ? AND t <= ?",
                    [(lvl, did, cut) for did in dids]).rowcount
            if lvl in USER_LEVELS:
                deleted += w.execute(
                    "DELETE FROM user_roll WHERE lvl = ? AND t <= ?", (lvl, cut)).rowcount
            if lvl in GPU_USER_LEVELS:
                deleted += w.executemany(
                    "DELETE FROM gpu_user_roll WHERE lvl = ? AND gid = ? AND t <= ?",
                    [(lvl, gid, cut) for gid in gids]).rowcount
        self._save_stacks()  # keeps the head replay of readers short
        return deleted

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
        level. Newest first: the finest source where it still has data, coarser ones before."""
        if snap.roll_wm is None:
            return []
        roll = snap.roll_wm
        chosen = (0, *levels)[finest:]
        segs: list[tuple[int, int, int]] = []
        hi = until
        if chosen[0] != 0 and hi > roll:
            lo = max(since, roll)  # not rolled up yet: only the raw head has it
            segs.append((0, lo, hi))
            hi = lo
        for i, src in enumerate(chosen):
            if hi <= since:
                break
            if src != 0:
                hi = min(hi, roll)
            lo = since
            if i + 1 < len(chosen):
                floor = snap.raw_floor if src == 0 else snap.floors.get(src)
                if floor is not None:
                    avail = floor if src == 0 else _floor_to(floor, src)
                    # Split where the next level's buckets start, so no bucket is half-counted
                    # (raw: or where the roll-ups end, whichever is first).
                    split = _ceil_to(avail, chosen[i + 1])
                    lo = max(since, min(split, roll) if src == 0 else split)
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
        if snap.chunk_wm is not None and lo < snap.chunk_wm:
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
                src == 0 and snap.chunk_wm is not None
                and max(lo, snap.raw_floor or lo) < snap.chunk_wm for src, lo, _ in plan
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
                for gid, blob in conn.execute(
                    "SELECT key, data FROM chunk WHERE kind = ? AND t0 > ? AND t0 < ?",
                    (_K_GPU, raw_lo - CHUNK, head_lo),
                ):
                    cols = _codec.decode(blob)
                    absorb(
                        (gid, int((t - since) / width), 1, util, mem / MIB, tot / MIB)
                        for t, util, mem, tot in zip(cols[0], cols[1], cols[2], cols[3],
                                                     strict=True)
                        if raw_lo <= t < head_lo
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
        the window.
        """
        now_ms = _ms(now)
        with self._read() as (conn, snap):
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
            totals: dict[int, dict[float, list[float]]] = {}
            for window in windows:
                since = now_ms - _ms(window)
                pieces: list[tuple[int, int, int]] = []
                for src, lo, hi in self._plan(snap, USER_LEVELS, since, now_ms, 1):
                    whole_lo, whole_hi = _ceil_to(lo, HOUR), _floor_to(hi, HOUR)
                    if src == MINUTE and whole_lo < whole_hi:
                        # Whole hours from the hour rows (complete once rolled up): 60x fewer.
                        pieces += [(MINUTE, whole_hi, hi), (HOUR, whole_lo, whole_hi),
                                   (MINUTE, lo, whole_lo)]
                    else:
                        pieces.append((src, lo, hi))
                for src, lo, hi in pieces:
                    if lo >= hi:
                        continue
                    if src == 0:  # not rolled up yet: from the head rows
                        query = (
                            "SELECT uid, SUM(dt * share) / 1000.0,"
                            " SUM(mem * (dt / 1000.0)) / 1073741824.0 FROM h_proc"
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
