"""The history store on a real SQLite file: ingest, rollups, retention, restart, kill -9,
accounting and the idle-process rule, each against answers worked out by hand."""

from __future__ import annotations

import itertools
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from builders import GIB, MIB, down, gpu, host_info, proc, up

from hmonitor._pb import hm_pb2
from hmonitor.web.history import SqliteHistory, UsageTotals, _codec
from hmonitor.web.storage import StorageError

DAY = 86_400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # midnight UTC, so every bucket edge is aligned


def open_store(path: Path, **kw: float) -> SqliteHistory:
    return SqliteHistory(path / "history.db", **kw)


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / "history.db")


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteHistory]:
    s = open_store(tmp_path)
    yield s
    s.close()


# ------------------------------------------------------------------------ basics


def test_codec_round_trips_extremes() -> None:
    cols = [[0, 10_000, 10_000, 20_000], [-5, 2**62, -(2**62), 7], [1, 1, 1, 1]]
    assert _codec.decode(_codec.encode(cols)) == cols
    assert _codec.decode(_codec.encode([[], []])) == [[], []]


def test_new_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    conn = db(tmp_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    conn = db(tmp_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match=r"history\.db: was written by a newer hmonitor"):
        open_store(tmp_path)


def test_ingest_then_series_returns_the_samples(store: SqliteHistory) -> None:
    for i in range(30):
        store.ingest([up("a", host_info("a", [
            gpu(0, util=i, used_gib=i * MIB / GIB, temp=30 + i, fan=i % 3),
            gpu(1, util=100 - i)]))], T0 + 10 * i)
    t, v = store.series("a", 0, "util", T0, T0 + 300)
    assert t == [T0 + 10 * i for i in range(30)]
    assert v == [float(i) for i in range(30)]
    assert store.series("a", 0, "mem", T0, T0 + 300)[1] == [float(i * MIB) for i in range(30)]
    assert store.series("a", 0, "temp", T0, T0 + 300)[1] == [30.0 + i for i in range(30)]
    assert store.series("a", 0, "fan", T0, T0 + 300)[1] == [float(i % 3) for i in range(30)]
    assert store.series("a", 0, "mem_total", T0, T0 + 300)[1] == [80.0 * GIB] * 30
    assert store.series("a", 1, "util", T0 + 100, T0 + 150)[1] == [90.0, 89.0, 88.0, 87.0, 86.0]
    # Five points from 30 samples: averages (and maxima) of six consecutive samples.
    t, v = store.series("a", 0, "util", T0, T0 + 300, max_points=5)
    assert v == [2.5, 8.5, 14.5, 20.5, 26.5]
    assert t == [T0 + 25, T0 + 85, T0 + 145, T0 + 205, T0 + 265]
    assert store.series("a", 0, "util", T0, T0 + 300, 5, agg="max")[1] == [5, 11, 17, 23, 29]
    # A window reaching far before the data spreads its points over the data only.
    assert store.series("a", 0, "util", 0, T0 + 300)[1] == [float(i) for i in range(30)]
    assert store.series("nowhere", 0, "util", T0, T0 + 300) == ([], [])
    with pytest.raises(ValueError, match="metric"):
        store.series("a", 0, "power", T0, T0 + 300)


def test_a_down_host_stores_only_its_up_down_row(store: SqliteHistory) -> None:
    stale = up("a", host_info("a", [gpu(0, util=99)]))
    for i in range(10):
        answered = i not in (3, 4, 5)
        state = stale if answered else down("a", info=stale.info)  # its last snapshot kept
        store.ingest([state], T0 + 10 * i)
    assert [s[0] for s in store.raw_samples("a", 0, T0, T0 + 100)] == [
        T0 + 10 * i for i in (0, 1, 2, 6, 7, 8, 9)
    ]
    assert store.host_uptime("a", T0, T0 + 100) == pytest.approx(0.7)
    assert store.host_uptime("a", T0 + 30, T0 + 60) == 0.0
    assert store.host_series("a", "rtt", T0, T0 + 100, max_points=1)[1] == [pytest.approx(1.0)]
    assert store.host_uptime("nowhere", T0, T0 + 100) is None


def test_disks_are_stored_at_most_once_per_disk_interval(tmp_path: Path) -> None:
    s = open_store(tmp_path, disk_interval=60)
    disk = hm_pb2.DiskInfo(device="/dev/sda1", mount="/", total=1000 * GIB)
    for i in range(13):  # one round every 10 s for two minutes
        d = hm_pb2.DiskInfo()
        d.CopyFrom(disk)
        d.used = i * GIB
        s.ingest([up("a", host_info("a", [gpu(0)], disks=[d]))], T0 + 10 * i)
    t, v = s.disk_series("a", "/", T0, T0 + 130)
    assert t == [T0, T0 + 60, T0 + 120]
    assert v == [0.0, 6.0 * GIB, 12.0 * GIB]
    s.close()


# ------------------------------------------------------------------------ rollups and retention


def ingest_steady(s: SqliteHistory, start: float, end: float, step: float,
                  maintain_every: int = 0) -> int:
    """One host, one GPU, util = minute of the hour, mem = that many MiB; returns the count."""
    n = 0
    t = start
    while t < end:
        minute = int(t // 60) % 60
        s.ingest([up("a", host_info("a", [
            gpu(0, util=minute, used_gib=minute * MIB / GIB, temp=minute)]))], t)
        n += 1
        if maintain_every and n % maintain_every == 0:
            s.maintain(t + 7.5)  # at odd moments: mid-minute, mid-slice
        t += step
    return n


def level_counts(path: Path) -> dict[int, int]:
    return dict(db(path).execute("SELECT lvl, SUM(n) FROM gpu_roll GROUP BY lvl"))


def test_rollups_count_every_sample_once_however_maintain_is_called(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    n = ingest_steady(s, T0 + 5, T0 + 3 * 3600 + 5, 10, maintain_every=17)
    # Partial work with a zero budget, then the rest: nothing is repeated or skipped.
    s.maintain(T0 + 3 * 3600 + 5, budget_s=0)
    s.maintain(T0 + 3 * 3600 + 5)
    # The latest minute stays open; everything before it is in the 1-minute level, and
    # everything before the last whole 10 minutes of that in the coarser levels.
    rolled = n - 6
    marks = dict(db(tmp_path).execute("SELECT k, v FROM meta"))
    assert marks["roll_wm"] == (T0 + 3 * 3600 - 60) * 1000
    assert marks["coarse_wm"] == (T0 + 3 * 3600 - 600) * 1000
    folded = n - 60
    assert level_counts(tmp_path) == {60_000: rolled, 600_000: folded, 3_600_000: folded}
    # Each level's buckets hold the averages and maxima of their raw samples.
    for lvl in (60_000, 600_000, 3_600_000):
        rows = db(tmp_path).execute(
            "SELECT t, util_sum * 1.0 / n, util_max, mem_sum * 1.0 / n, temp_max FROM gpu_roll"
            " WHERE lvl = ? AND t < ? ORDER BY t", (lvl, (T0 + 2 * 3600) * 1000)).fetchall()
        assert len(rows) == 2 * 3_600_000 // lvl
        for t, avg, top, mem, temp in rows:
            minute = (t // 60_000) % 60
            span = lvl // 60_000
            assert avg == mem == minute + (span - 1) / 2
            assert top == temp == minute + span - 1
    # A 200-day window at one point per hour reads the hour buckets.
    t, v = s.series("a", 0, "util", T0, T0 + 200 * DAY, max_points=4800)
    assert v[:2] == [29.5, 29.5]
    assert t[:2] == [T0 + 1800, T0 + 5400]
    assert s.series("a", 0, "util", T0, T0 + 200 * DAY, 4800, agg="max")[1][:2] == [59, 59]
    # The last hour comes from its hour bucket (50 minutes so far), 1-minute buckets and raw
    # samples: each sample once, so the average is still that of minutes 0-59.
    assert v[2] == 29.5 and len(v) == 3
    # A 3-day window reads the minute buckets: 2 h per point.
    _, v = s.series("a", 0, "mem", T0, T0 + 3 * DAY, max_points=36)
    assert v[0] == pytest.approx(29.5 * MIB)
    s.close()


def test_retention_at_its_boundaries(tmp_path: Path) -> None:
    # Raw 30 min, 1-minute buckets 2 h, 10-minute buckets 4 h, hour buckets 8 h.
    s = open_store(tmp_path, raw_days=1800 / DAY, minute_days=7200 / DAY,
                   ten_minute_days=4 * 3600 / DAY, keep_days=8 * 3600 / DAY)
    ingest_steady(s, T0, T0 + 10 * 3600, 30, maintain_every=200)
    last = T0 + 10 * 3600 - 30
    now = last + 30  # on a minute edge, so now - raw_days falls on a sample
    s.maintain(now)
    conn = db(tmp_path)
    raw = s.raw_samples("a", 0, 0, now)
    assert raw[0][0] == now - 1800  # kept: exactly raw_days old
    assert raw[-1][0] == last
    assert len(raw) == 1800 // 30
    # A bucket goes once it ends at or before now - days; the one ending after stays.
    floor = {60_000: now - 7200, 600_000: now - 4 * 3600, 3_600_000: now - 8 * 3600}
    for lvl, f in floor.items():
        first = conn.execute("SELECT MIN(t) FROM gpu_roll WHERE lvl = ?", (lvl,)).fetchone()[0]
        assert first == (f * 1000 - (f * 1000) % lvl), lvl
    assert floor[60_000] % 60 == 0  # so the minute bucket ending at the floor is gone
    # Half a minute later the bucket holding the new floor stays (part of it is young enough).
    s.maintain(now + 30)
    first = conn.execute("SELECT MIN(t) FROM gpu_roll WHERE lvl = 60000").fetchone()[0]
    assert first == (now - 7200) * 1000
    assert s.raw_samples("a", 0, 0, now)[0][0] == now + 30 - 1800
    # The whole kept range reads without holes where one resolution hands over to the next.
    t, _ = s.series("a", 0, "util", T0, now + 30, max_points=2000)
    assert t == sorted(t)
    assert t[0] >= now - 8 * 3600 - 3600
    assert max(b - a for a, b in itertools.pairwise(t)) <= 3600
    s.close()


@pytest.mark.parametrize("max_points", [7, 300, 1000])
def test_max_points_for_an_hour_a_day_ten_days_and_a_year(tmp_path: Path, max_points: int) -> None:
    s = open_store(tmp_path)
    now = T0 + 365 * DAY
    rounds = [now - 400 * DAY + 6 * 3600 * i for i in range(390 * 4)]  # 6-hourly for a year
    rounds += [now - 10 * DAY + 300 * i for i in range(int(10 * DAY / 300) - 20)]  # 5-min
    rounds += [now - 3600 + 10 * i for i in range(360)]  # every 10 s in the last hour
    for i, when in enumerate(sorted(set(rounds))):
        s.ingest([up("a", host_info("a", [gpu(0, util=i % 100)]))], when)
        if i % 500 == 0:
            s.maintain(when)
    s.maintain(now)
    for window in (3600, DAY, 10 * DAY, 365 * DAY):
        t, v = s.series("a", 0, "util", now - window, now, max_points)
        assert 0 < len(t) <= max_points, window
        assert len(v) == len(t)
        assert t == sorted(t)
        assert now - window <= t[0] and t[-1] < now
    # 7 points over a day of 5-minute samples: every stretch has data, so exactly 7.
    assert len(s.series("a", 0, "util", now - DAY, now, 7)[0]) == 7
    s.close()


def test_restart_continues_the_same_history(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    user = [proc("ann", pid=7, mem_gib=2)]
    for i in range(200):
        s.ingest([up("a", host_info("a", [gpu(0, *user, util=1)]))], T0 + 10 * i)
        if i == 100:
            s.maintain(T0 + 10 * i)
    s.close()  # the dashboard restarts and misses two rounds: a 30 s gap, still unbroken
    s = open_store(tmp_path)
    for i in range(202, 400):
        s.ingest([up("a", host_info("a", [gpu(0, *user, util=1)]))], T0 + 10 * i)
    s.maintain(T0 + 4000)
    t, _ = s.series("a", 0, "util", T0, T0 + 4000)
    assert len(t) == 200 + 198
    usage = s.user_usage(T0 + 4000, [4000])["ann"][4000]
    assert usage.gpu_hours == pytest.approx((199 * 10 + 30 + 197 * 10) / 3600)
    assert usage.gpu_mem_gib_hours == pytest.approx(2 * usage.gpu_hours)
    # The idle run survived the restart too (it started at the first sample).
    hogs = s.idle_hogs(T0 + 3990, util_threshold=5, min_seconds=3000)
    assert [(h.pid, h.since) for h in hogs] == [(7, T0)]
    s.close()


# ------------------------------------------------------------------------ crash safety

_WRITER = """
import sys
from dataclasses import dataclass
from pathlib import Path
from hmonitor._pb import hm_pb2
from hmonitor.web.history import SqliteHistory

@dataclass(frozen=True)
class S:
    name: str
    up: bool
    rtt_ms: float
    info: hm_pb2.HostInfo

states = []
for h in range(20):
    info = hm_pb2.HostInfo()
    for g in range(8):
        gi = info.gpus.add(id=g, utilization=g, mem_used=g << 30, mem_total=80 << 30)
        gi.procs.add(pid=100 + g, username=f"u{g}", basename="python", mem=1 << 30)
    states.append(S(f"h{h}", True, 1.0, info))
store = SqliteHistory(Path(sys.argv[1]))
t0 = float(sys.argv[2])
i = 0
while True:
    store.ingest(states, t0 + 10 * i)
    print(i, flush=True)  # committed
    if i % 40 == 39:
        store.maintain(t0 + 10 * i)
    i += 1
"""


def test_kill_9_mid_ingest_keeps_every_committed_round(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    path = tmp_path / "history.db"
    # Start far enough before T0 that the rounds cross several 10-minute slices.
    proc_ = subprocess.Popen([sys.executable, str(script), str(path), str(T0)],
                             stdout=subprocess.PIPE, text=True)
    assert proc_.stdout is not None
    committed: list[int] = []
    deadline = time.monotonic() + 60
    while len(committed) < 150 and time.monotonic() < deadline:
        line = proc_.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    time.sleep(0.003)  # land inside a later round's transaction, most likely
    os.kill(proc_.pid, signal.SIGKILL)
    proc_.wait()
    committed += [int(x) for x in proc_.stdout.read().split()]
    assert len(committed) >= 150, "the writer did not get going"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    s = SqliteHistory(path)
    stored = [round((t - T0) / 10) for t, *_ in s.raw_samples("h19", 7, T0, T0 + 1e6)]
    assert stored[: len(committed)] == committed  # every committed round, in order
    assert len(stored) - len(committed) in (0, 1)  # plus at most the one being reported
    # And it goes on from there.
    s.ingest([up("h19", host_info("h19", [gpu(7)]))], T0 + 10 * (stored[-1] + 1))
    s.close()


# ------------------------------------------------------------------------ accounting


def test_gpu_hours_are_split_between_users_sharing_a_gpu(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    # Every 10 s from T0 - 10: the window [T0, T0 + 3600) holds 360 samples of 10 s each.
    for i in range(361):
        g0 = gpu(0, proc("ann", pid=1, mem_gib=2))  # ann alone: 1 GPU-h, 2 GiB-h
        g1 = gpu(1, proc("bob", pid=2, mem_gib=1), proc("cat", pid=3, mem_gib=3),
                 proc("cat", pid=4, mem_gib=1))  # bob and cat split it: 0.5 each
        s.ingest([up("a", host_info("a", [g0, g1]))], T0 - 10 + 10 * i)
    expect = {"ann": (1.0, 2.0), "bob": (0.5, 1.0), "cat": (0.5, 4.0)}

    def check(usage: dict[str, dict[float, UsageTotals]]) -> None:
        assert set(usage) == set(expect)
        for user, (hours, gib_hours) in expect.items():
            got = usage[user][3600]
            assert got.gpu_hours == pytest.approx(hours), user
            assert got.gpu_mem_gib_hours == pytest.approx(gib_hours), user
            assert usage[user][600].gpu_hours == pytest.approx(hours / 6), user

    check(s.user_usage(T0 + 3600, [3600, 600]))
    # From minute rows (all but the open last minute) the same, as the window starts on a
    # minute edge; otherwise rolled-up history counts the whole minutes that start in it.
    s.maintain(T0 + 3600)
    check(s.user_usage(T0 + 3600, [3600, 600]))
    s.close()


def test_gaps_count_at_most_three_intervals(tmp_path: Path) -> None:
    s = open_store(tmp_path, interval=10)
    ann = [proc("ann", pid=1, mem_gib=1)]
    times = [T0 + 10 * i for i in range(10)]  # 9 intervals of 10 s
    times += [times[-1] + 600 + 10 * i for i in range(5)]  # a 10-minute gap: 30 s, then 4 x 10 s
    for t in times:
        s.ingest([up("a", host_info("a", [gpu(0, *ann)]))], t)
    s.ingest([down("a")], times[-1] + 10)  # a down round counts nothing
    s.ingest([up("a", host_info("a", [gpu(0, *ann)]))], times[-1] + 20)  # 20 s since the last
    usage = s.user_usage(times[-1] + 30, [DAY])["ann"][DAY]
    assert usage.gpu_hours == pytest.approx((90 + 30 + 40 + 20) / 3600)
    s.close()


# ------------------------------------------------------------------------ idle processes


def idle_history(s: SqliteHistory, utils: Sequence[int], start: float = T0) -> float:
    """One process on GPU 0 for every sample; GPU utilization as given; returns the last t."""
    t = start
    for i, u in enumerate(utils):
        t = start + 10 * i
        s.ingest([up("a", host_info("a", [
            gpu(0, proc("ann", pid=9, mem_gib=4), util=u, used_gib=5), gpu(1, util=0)]))], t)
    return t


def test_idle_hog_thresholds_are_strict(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    last = idle_history(s, [4] * 721)  # 7200 s from the first sample to the last
    # Exactly min_seconds idle is not yet a hog; a second less of threshold is.
    assert s.idle_hogs(last, util_threshold=5, min_seconds=7200) == []
    hogs = s.idle_hogs(last, util_threshold=5, min_seconds=7199)
    assert [(h.host, h.gpu, h.pid, h.user, h.basename, h.mem, h.since, h.idle_seconds)
            for h in hogs] == [("a", 0, 9, "ann", "python", 4 * GIB, T0, 7200.0)]
    # util == threshold counts as busy, so at threshold 4 the GPU was never idle.
    assert s.idle_hogs(last, util_threshold=4, min_seconds=0) == []
    s.close()


def test_idle_run_starts_after_the_last_busy_sample_for_any_threshold(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    utils = [0] * 100 + [50] + [0] * 100 + [20] + [0] * 100 + [3] * 100
    last = idle_history(s, utils[:150])
    s.maintain(last)  # part of it rolled up and compacted: the run must survive that
    s.close()
    s = open_store(tmp_path)
    last = idle_history(s, utils[150:], start=last + 10)

    def since(threshold: float) -> float | None:
        hogs = s.idle_hogs(last, util_threshold=threshold, min_seconds=60)
        return hogs[0].since if hogs else None

    assert since(60) == T0  # never busy at 60 %: idle since the process appeared
    assert since(50) == T0 + 10 * 101  # the sample after the 50 % one
    assert since(21) == T0 + 10 * 101
    assert since(20) == T0 + 10 * 202
    assert since(3) is None  # busy (3 >= 3) right now
    assert since(4) == T0 + 10 * 202
    s.close()


def test_idle_run_restarts_when_the_process_or_host_goes_away(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    ann = [proc("ann", pid=9, mem_gib=1)]
    t = T0
    for i in range(100):  # 1000 s idle with the process...
        t = T0 + 10 * i
        procs = ann if i != 40 else []  # ...gone once at 40
        s.ingest([up("a", host_info("a", [gpu(0, *procs)]))], t)
    hogs = s.idle_hogs(t, min_seconds=100)
    assert [h.since for h in hogs] == [T0 + 410]
    s.ingest([down("a")], t + 10)  # a down round breaks the run
    assert s.idle_hogs(t + 10, min_seconds=100) == []
    for i in range(2, 30):
        s.ingest([up("a", host_info("a", [gpu(0, *ann)]))], t + 10 * i)
    hogs = s.idle_hogs(t + 290, min_seconds=100)
    assert [h.since for h in hogs] == [t + 20]
    # Nothing is flagged when the host's latest sample is older than three intervals.
    assert s.idle_hogs(t + 290 + 31, min_seconds=100) == []
    s.close()


# ------------------------------------------------------------------------ charts


def test_sparklines_cover_every_gpu_with_util_and_memory_fraction(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    for i in range(24 * 360):  # a day at 10 s: a@0 busy in the first half, b@0 from 20 GiB
        t = T0 + 10 * i
        first_half = i < 12 * 360
        a0 = gpu(0, util=80 if first_half else 0, used_gib=40 if first_half else 0)
        s.ingest([up("a", host_info("a", [a0, gpu(1, util=10)])),
                  up("b", host_info("b", [gpu(0, util=50, used_gib=20)]))], t)
        if i % 720 == 719:
            s.maintain(t)
    now = T0 + DAY
    lines = s.sparklines(DAY, now, points=24)
    assert set(lines) == {("a", 0), ("a", 1), ("b", 0)}
    assert lines[("a", 0)]["util"] == [80.0] * 12 + [0.0] * 12
    assert lines[("a", 0)]["mem"] == [0.5] * 12 + [0.0] * 12
    assert lines[("b", 0)]["mem"] == [0.25] * 24
    assert lines[("a", 1)]["util"] == [10.0] * 24
    # A window reaching before the first sample has NaN where there is nothing.
    early = s.sparklines(2 * DAY, now, points=4)[("b", 0)]["util"]
    assert math.isnan(early[0]) and math.isnan(early[1]) and early[2:] == [50.0, 50.0]
    # Stretches shorter than a minute come from raw samples.
    short = s.sparklines(300, now, points=10)[("a", 1)]["util"]
    assert short == [10.0] * 10
    s.close()


def test_process_series_stacks_memory_by_user(store: SqliteHistory) -> None:
    for i in range(60):
        procs = [proc("ann", pid=1, mem_gib=2)]
        if i >= 30:
            procs += [proc("bob", pid=2, mem_gib=1), proc("bob", pid=3, mem_gib=1)]
        store.ingest([up("a", host_info("a", [gpu(0, *procs)]))], T0 + 10 * i)
    t, per_user = store.process_series("a", 0, T0, T0 + 600, max_points=2)
    assert t == [T0 + 145, T0 + 445]
    assert per_user == {"ann": [2.0 * GIB, 2.0 * GIB], "bob": [0.0, 2.0 * GIB]}
    store.maintain(T0 + 600)
    t, per_user = store.process_series("a", 0, T0, T0 + 600, max_points=2)
    assert per_user["bob"] == [0.0, 2.0 * GIB]


def test_readers_in_other_threads_while_the_poller_writes(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                s.series("a", 0, "util", T0, T0 + DAY)
                s.sparklines(3600, T0 + 3600)
                s.user_usage(T0 + 3600, [3600])
                s.idle_hogs(T0 + 3600)
        except BaseException as err:  # noqa: BLE001 - any failure fails the test
            errors.append(err)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(400):
        s.ingest([up("a", host_info("a", [gpu(0, proc("ann", pid=1, mem_gib=1), util=i % 100)]))],
                 T0 + 10 * i)
        if i % 100 == 99:
            s.maintain(T0 + 10 * i)
    stop.set()
    for r in readers:
        r.join()
    assert errors == []
    assert len(s.series("a", 0, "util", T0, T0 + DAY, max_points=10_000)[0]) == 400
    # A server with a thread per request leaves no connection behind per finished thread.
    for _ in range(20):
        one = threading.Thread(target=lambda: s.series("a", 0, "util", T0, T0 + 60))
        one.start()
        one.join()
    assert len(s._readers) <= 4
    s.close()
