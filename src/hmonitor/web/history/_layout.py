"""The history's layout in SQLite: bucket levels, chunk kinds, what each metric reads, the
roll-up statements, and the small helpers every part uses (times in ms, the idle rule's stacks).
Shared by the store's parts; not for use outside the package."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import TypeVar

_T = TypeVar("_T")

SCHEMA_VERSION = 3

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
USER_LEVELS = (MINUTE, HOUR)  # also Slurm jobs'
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
_JobRow = tuple[int, int, int, int, float, float]  # t, job, uid, hid, gpu_s, gib_s
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
_JOB_ROLL = (
    "INSERT INTO job_roll {src} ON CONFLICT (lvl, t, job, uid) DO UPDATE"
    " SET gpu_s = gpu_s + excluded.gpu_s, gib_s = gib_s + excluded.gib_s"
)
# Rolling up jobs' head rows of whole minutes a <= t < b: into 1-minute buckets (:lvl), and
# where each job ran (job_seen: its first and last round per user, host and :hour).
_JOB_MINUTES = (
    _JOB_ROLL.format(src="SELECT :lvl, t - t % :lvl, job, uid, SUM(gpu_s), SUM(gib_s) FROM h_job"
                         " WHERE t >= :a AND t < :b GROUP BY 2, 3, 4"),
    "INSERT INTO job_seen SELECT job, uid, hid, t - t % :hour, MIN(t), MAX(t) FROM h_job"
    " WHERE t >= :a AND t < :b GROUP BY 1, 2, 3, 4 ON CONFLICT (job, uid, hid, t) DO UPDATE"
    " SET first = min(first, excluded.first), last = max(last, excluded.last)",
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


_UNREAD = -2  # a live process's Slurm job, not read yet (-1: none)

# Schema version 2 -> 3: Slurm job accounting, in tables of its own (all empty at first); nothing
# else changes. The statements are schema.sql's, run "IF NOT EXISTS".
_JOB_SCHEMA = ("h_job", "job_roll", "job_seen", "job_seen_t")


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

