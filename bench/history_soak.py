"""History soak: a simulated month of a lab through ingest and maintenance, a row per day.

    python bench/history_soak.py [--quick] [--hosts N] [--days N] [--interval S]

The lab: 25 hosts x 8 GPUs (`--hosts`). A GPU runs a job 70 % of the time (jobs of 1-12 h, idle
spells of 0.5-5 h), a job has 1-4 processes (a main one and data-loader workers), one job in
four shares its GPU with a second user, and a host goes down for 2-15 minutes about once a
week. The first round goes through `ingest` (it names hosts, GPUs and disks); the rest go
through `_bulk_append`, the same head rows without protobuf decoding. Maintenance is the
store's real code: `maintain` as `HistoryRecorder` schedules it (`MaintainSchedule`: every 120 s
of simulated time, at every round while a call leaves work). Rounds reach the store in the
batches between two maintenance calls.

A round every 60 simulated seconds (`--interval`; the dashboard's default is 10 s: raw chunks
then hold 6x the samples, roll-ups the same). Maintenance costs per GPU and minute (roll-ups)
and per series and 10-minute slice (compaction), not per round, so the month takes about 15
minutes here on 2 cores, and 4x that with `--hosts 100`.

Retention is shortened so that every level starts cutting within the month: raw samples 5 days,
1-minute buckets 10, 10-minute buckets 15, hours 20 (the defaults are 10, 30, 90 and 365 days,
with which the file keeps growing, more slowly, for a year). The file grows until the last level
cuts, then stays flat: deleted rows free pages that later rows reuse (SQLite does not shrink
the file without VACUUM).

Baseline: the spec's history, per-GPU lists of t/util/mem/temp/fan pickled whole, without
processes, roll-ups or any retention: its pickle of one simulated day, measured in this run,
times the days so far.

--quick: one simulated day, a row every 2 hours, retention of 3/6/9/12 hours; about 25 s.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _table import print_table  # noqa: E402
from history import END, Lab  # noqa: E402

from hmonitor.web.history import MaintainReport, SqliteHistory  # noqa: E402
from hmonitor.web.history.recorder import MaintainSchedule  # noqa: E402

MB = 1e6
DAY_MS = 86_400_000


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0] or 0)

    return {
        "head_rounds": one("SELECT COUNT(*) FROM h_round"),
        "head_rows": sum(one(f"SELECT COUNT(*) FROM {t}") for t in
                         ("h_host", "h_gpu", "h_proc", "h_disk", "h_user", "h_gpu_user")),
        "chunks": one("SELECT COUNT(*) FROM chunk"),
        "rollups": sum(one(f"SELECT COUNT(*) FROM {t}") for t in
                       ("gpu_roll", "host_roll", "disk_roll", "user_roll", "gpu_user_roll")),
        "free": one("PRAGMA freelist_count") * one("PRAGMA page_size"),
    }


def breakdown(path: Path) -> list[list[str]]:
    """Bytes per table at the end (dbstat reads every page once)."""
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8").fetchall()
    conn.close()
    total = path.stat().st_size
    return [[name, f"{size / MB:.1f}", f"{100 * size / total:.0f} %"] for name, size in rows]


def spec_day_bytes(gpus: int, interval_ms: int) -> int:
    """The spec's pickle of one day of every GPU's lists (values as in our rows)."""
    n = DAY_MS // interval_ms
    t0 = END - 86_400
    series = [{"t": [t0 + i * interval_ms // 1000 for i in range(n)],
               "util": [(i * 7 + g) % 101 for i in range(n)],
               "mem": [(20 + (i + g) % 60) << 30 for i in range(n)],
               "temp": [35 + (i + g) % 30 for i in range(n)], "fan": [0] * n}
              for g in range(gpus)]
    return len(pickle.dumps({f"gpu{g}": s for g, s in enumerate(series)},
                            protocol=pickle.HIGHEST_PROTOCOL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one simulated day, a row every 2 hours, retention in hours")
    parser.add_argument("--days", type=float, help="simulated days (30; quick: 1)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="simulated seconds between rounds (60)")
    parser.add_argument("--hosts", type=int, default=25, help="hosts of 8 GPUs (25)")
    args = parser.parse_args()
    # Retention (days): raw, 1-minute, 10-minute, hour buckets; a table row per `period`.
    days, keep, period = (1.0, (0.125, 0.25, 0.375, 0.5), DAY_MS // 12) if args.quick else (
        30.0, (5.0, 10.0, 15.0, 20.0), DAY_MS)
    days = args.days or days
    hosts = args.hosts
    interval_ms = round(args.interval * 1000)
    began = time.perf_counter()
    lab = Lab(hosts, 8, procs=(1, 4), users=40, down_per_day=1 / 7, interval_ms=interval_ms,
              seed=11)
    nrounds = round(days * DAY_MS / interval_ms)
    t0 = END * 1000 - nrounds * interval_ms
    schedule = MaintainSchedule(args.interval)
    spec_day = spec_day_bytes(hosts * 8, interval_ms)
    rows: list[list[object]] = []
    # In memory where there is a /dev/shm: the soak measures the store's work and sizes, not the
    # disk's fsyncs (each WAL checkpoint has one).
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        path = Path(tmp) / "history.sqlite"
        store = SqliteHistory(path, raw_days=keep[0], minute_days=keep[1],
                              ten_minute_days=keep[2], keep_days=keep[3],
                              interval=args.interval)
        side = sqlite3.connect(path)
        lab.tick(t0)
        store.ingest(lab.states(), t0 / 1000)
        ids = lab.bind(store)
        lab.last_up = [t0] * hosts
        day_calls: list[MaintainReport] = []
        day_began = time.perf_counter()
        batch: list[int] = []
        parts: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])
        next_day = t0 + period
        for r in range(1, nrounds + 1):
            t = t0 + r * interval_ms
            lab.tick(t)
            for part, new in zip(parts, lab.rows(ids), strict=True):
                part.extend(new)
            batch.append(t)
            # Rounds reach the store in the batches between maintenance calls (cheaper than
            # one transaction each); maintenance sees exactly what it would have.
            due = schedule.due(t / 1000)
            if due or r == nrounds or t >= next_day:
                store._bulk_append(batch, *parts)
                batch = []
                parts = ([], [], [], [])
            if due:
                report = store.maintain(t / 1000, budget_s=schedule.budget)
                schedule.ran(t / 1000, report.done)
                day_calls.append(report)
            if t >= next_day or r == nrounds:
                day = (t - t0) / DAY_MS
                label = f"{day:.0f}" if period == DAY_MS else f"{day * 24:.0f} h"
                c = counts(side)
                wal = Path(f"{path}-wal")
                rows.append([
                    label,
                    f"{path.stat().st_size / MB:.1f}",
                    f"{(wal.stat().st_size if wal.exists() else 0) / MB:.1f}",
                    f"{c['free'] / MB:.1f}",
                    f"{c['head_rounds']:,}", f"{c['head_rows']:,}", f"{c['chunks']:,}",
                    f"{c['rollups']:,}",
                    f"{len(day_calls)} ({sum(1 for x in day_calls if not x.done)})",
                    f"{sum(x.seconds for x in day_calls):.1f}",
                    f"{max((x.longest_s for x in day_calls), default=0) * 1000:.0f}",
                    f"{time.perf_counter() - day_began:.0f}",
                    f"{spec_day * day / MB:.0f}",
                ])
                print("  ".join(str(x) for x in rows[-1]), file=sys.stderr, flush=True)
                day_calls = []
                day_began = time.perf_counter()
                next_day += period
        side.close()
        store.close()
        parts_end = breakdown(path)
    kept = ", ".join(f"{name} {k:g} d" for name, k in zip(("raw", "1-min", "10-min", "1 h"),
                                                           keep, strict=True))
    print_table(
        f"History soak: {hosts} hosts x 8 GPUs, a round every {args.interval:g} s for {days:g}"
        f" days ({os.cpu_count()} CPUs{', quick run' if args.quick else ''}); kept: {kept}",
        ["day" if period == DAY_MS else "time", "file MB", "WAL MB", "free MB", "head rounds",
         "head rows", "chunks", "roll-up rows", "maintain calls (left work)", "maintain s",
         "longest tx ms", "wall s", "spec pickle MB"],
        rows,
    )
    print("  file: the database at the end of the row's period (its free pages included, the"
          " WAL apart); maintain: the calls in the period, their time and longest transaction;"
          " spec pickle: the baseline's file for the GPU metrics alone, kept whole.")
    print()
    print_table("Where the bytes are at the end", ["table or index", "MB", "share"], parts_end)
    print(f"\n  whole run: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
