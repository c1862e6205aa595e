"""History maintenance under load, on a real SQLite file.

Every kind of work that is due (roll-up, compaction, retention) advances in every `maintain`
call, however big the backlog; no transaction holds the write lock for more than a bounded
number of rows, however many processes a round has; an interruption at any point repeats
nothing and loses nothing; readers see each sample exactly once while a slice is half
compacted; `HistoryRecorder` maintains at every round while work is left; the head stays
within its documented bound; odd values from agents pass; a schema-1 file is upgraded.

Piece sizes are made small here (monkeypatch) so a handful of hosts behaves like a big
cluster relative to them.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from builders import GIB, H200, MIB, down, gpu, host_info, proc, up
from historykit import ingest_with_failing_maintenance

from hmonitor._pb import hm_pb2
from hmonitor.web.history import MaintainReport, SqliteHistory
from hmonitor.web.history import maintenance as maintenance_module
from hmonitor.web.history.recorder import HistoryRecorder, MaintainSchedule
from hmonitor.web.hoststate import HostState
from hmonitor.web.settings import Settings

DAY = 86_400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # midnight UTC: every bucket edge aligned


def lab_round(i: int, hosts: int = 3, gpus: int = 2, procs: int = 3,
              is_down: Callable[[int, int], bool] = lambda h, i: False) -> list[HostState]:
    """Round i of a small lab (hosts h0, h1, ...): values drift with i; processes come and go;
    hosts where `is_down(h, i)` are down. Sizes exact in bytes (GiB and MiB steps)."""
    out = []
    for h in range(hosts):
        name = f"h{h}"
        if is_down(h, i):
            out.append(down(name))
            continue
        gpu_list = []
        for g in range(gpus):
            util = (i * 7 + h * 13 + g * 29) % 101
            running = [
                proc(f"user{(h + p) % 4}", pid=1000 * h + 100 * g + p + (i // 90) * 7,  # new pids
                     uid=1000 + p, mem_gib=p + 1 + (i % 3) * MIB / GIB, util=util // (p + 1))
                for p in range(procs if (i // 40 + h + g) % 4 else procs - 1)  # now and then
            ]
            gpu_list.append(gpu(g, *running, util=util, used_gib=i % 50, total_gib=80,
                                name=H200, temp=30 + util // 3, fan=g))
        disk = hm_pb2.DiskInfo(device="/dev/sda1", mount="/", used=(i % 100) * GIB,
                               total=500 * GIB)
        out.append(up(name, host_info(name, gpu_list, disks=[disk])))
    return out


def marks(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM meta"))
    finally:
        conn.close()


def small_pieces(monkeypatch: pytest.MonkeyPatch, roll: int = 1, compact: int = 50,
                 retain: int = 20) -> None:
    # Where maintenance reads them (raising: a renamed constant must fail the test, not pass it).
    monkeypatch.setattr(maintenance_module, "_ROLL_ROWS", roll)
    monkeypatch.setattr(maintenance_module, "_COMPACT_ROWS", compact)
    monkeypatch.setattr(maintenance_module, "_RETAIN_ROWS", retain)


# ------------------------------------------------------------------------ no starvation


def test_every_kind_of_work_that_is_due_advances_in_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pieces(monkeypatch)
    path = tmp_path / "history.db"
    s = SqliteHistory(path, raw_days=1 / 24)  # raw samples for an hour: retention has work
    t = T0
    for i in range(2 * 360):  # two hours, maintained as it goes
        t = T0 + 10 * i
        s.ingest(lab_round(i), t)
        if i % 60 == 59:
            s.maintain(t)
    for i in range(2 * 360, 3 * 360):  # a third hour without maintenance: a backlog
        t = T0 + 10 * i
        s.ingest(lab_round(i), t)
    now = t + 5
    conn = sqlite3.connect(path)

    def due(m: dict[str, int]) -> dict[str, bool]:
        horizon = int(t * 1000) - int(t * 1000) % 60_000
        coarse = m.get("coarse_wm", m["roll_wm"])  # schema 1 had one watermark
        roll = m["roll_wm"] < horizon or coarse <= m["roll_wm"] - 600_000
        compact = m["chunk_wm"] + 600_000 <= coarse
        cut = min(int(now * 1000) - 3_600_000, coarse) - 600_000
        retain = conn.execute("SELECT COUNT(*) FROM chunk WHERE t0 <= ?", (cut,)).fetchone()[0]
        return {"roll": roll, "compact": compact, "retain": retain > 0}

    all_due = compacted_while_rolling_behind = 0
    for _ in range(200):
        before = marks(path)
        want = due(before)
        if not any(want.values()):
            break
        report = s.maintain(now, budget_s=0)
        after = marks(path)
        rolled = (after["roll_wm"], after.get("coarse_wm")) != (before["roll_wm"],
                                                                 before.get("coarse_wm"))
        if want["roll"]:
            assert rolled, (before, after)
        compacted = report.compacted_rows > 0 or after["chunk_wm"] != before["chunk_wm"]
        if want["compact"]:
            assert compacted, (before, after, report)
        if want["retain"]:
            assert report.deleted_rows > 0, report
        all_due += all(want.values())
        compacted_while_rolling_behind += compacted and due(after)["roll"]
    else:
        pytest.fail("maintenance did not finish in 200 calls")
    assert all_due >= 3  # the three kinds were due together, and each went on
    assert compacted_while_rolling_behind >= 3  # a roll-up backlog does not hold it up
    assert s.maintain(now).done
    conn.close()
    s.close()


# ------------------------------------------------------------------------ bounded pieces


def changes_per_transaction(s: SqliteHistory, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows each write transaction inserts, updates or deletes, from now on."""
    seen: list[int] = []
    real = s._tx

    def counted(work: Callable[[], Any], **kw: Any) -> Any:
        before = s._w.total_changes
        try:
            return real(work, **kw)
        finally:
            seen.append(s._w.total_changes - before)

    monkeypatch.setattr(s, "_tx", counted)
    return seen


def test_no_transaction_is_big_however_many_processes_a_round_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pieces(monkeypatch, roll=1000, compact=1000, retain=1000)
    path = tmp_path / "history.db"
    s = SqliteHistory(path, raw_days=0.5 / 24)
    rounds = [lab_round(i, hosts=8, gpus=8, procs=30) for i in range(2)]  # 1,920 processes
    n = 100  # more than one slice
    for i in range(n):
        s.ingest(rounds[i % 2], T0 + 10 * i)
    head_rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM h_proc").fetchone()[0]
    assert head_rows > 180_000
    sizes = changes_per_transaction(s, monkeypatch)
    assert s.maintain(T0 + 10 * n).done
    # Later: retention has a whole slice of chunks and buckets to delete.
    assert s.maintain(T0 + 10 * n + 3600).done
    assert len(sizes) > 20
    # A compaction piece stops past 1,000 rows (plus one series: 30 processes x 60 rounds,
    # its blob and the GPUs' stacks); roll-ups move a minute of GPU rows; deletes stop at 1,000.
    assert max(sizes) <= 1000 + 30 * 60 + 100, sorted(sizes)[-5:]
    assert max(sizes) < head_rows / 50
    s.close()


# ------------------------------------------------------------------------ interruptions


def table_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    out = {}
    for table in ("gpu_roll", "host_roll", "disk_roll", "user_roll", "gpu_user_roll", "chunk",
                  "h_round", "h_gpu", "h_proc", "h_host", "h_disk", "h_user", "h_gpu_user"):
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
        # Accounting sums floats in a different order when rolled up in other pieces.
        out[table] = sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                            for r in rows)
    out["meta"] = sorted(conn.execute("SELECT k, v FROM meta WHERE k NOT LIKE 'floor_%'"))
    conn.close()
    return out


def test_interrupted_maintenance_repeats_nothing_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3 * 360  # three hours
    states = [lab_round(i, is_down=lambda h, i: h == 1 and 200 <= i < 260) for i in range(n)]
    ref = SqliteHistory(tmp_path / "ref.db", raw_days=1 / 24)
    for i in range(n):
        ref.ingest(states[i], T0 + 10 * i)
    end = T0 + 10 * n
    # Twice: retention cuts as of a call's start, and a call compacts slices already past it.
    assert ref.maintain(end).done and ref.maintain(end).done
    ref.close()

    small_pieces(monkeypatch)
    s = SqliteHistory(tmp_path / "pieces.db", raw_days=1 / 24)
    # Every 7th watermark write fails: the piece around it must vanish without a trace.
    assert ingest_with_failing_maintenance(monkeypatch, s, states, T0, fail_every=7) > 20
    assert s.maintain(end).done and s.maintain(end).done
    s.close()
    assert table_rows(tmp_path / "pieces.db") == table_rows(tmp_path / "ref.db")


# ------------------------------------------------------------------------ readers mid-way


def reads(s: SqliteHistory, now: float) -> list[Any]:
    """Answers built from raw samples (head and chunks) and from the accounting sums."""
    out: list[Any] = []
    for h in range(3):
        for g in range(2):
            out.append(s.raw_samples(f"h{h}", g, 0, now))
            out.append(s.process_series(f"h{h}", g, now - 1500, now, max_points=150))
    lines = s.sparklines(1500, now, points=150)  # 10 s a point: raw samples
    out.append(sorted((k, [None if math.isnan(x) else x for x in v["util"]])
                      for k, v in lines.items()))
    usage = s.user_usage(now, [1200, 3600])
    out.append({u: {w: (round(x.gpu_hours, 9), round(x.gpu_mem_gib_hours, 9))
                    for w, x in per.items()} for u, per in usage.items()})
    return out


def test_readers_see_each_sample_once_while_a_slice_is_half_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pieces(monkeypatch, compact=30)
    path = tmp_path / "history.db"
    s = SqliteHistory(path)
    n = 150  # 25 minutes: two closed slices
    for i in range(n):
        s.ingest(lab_round(i), T0 + 10 * i)
    now = T0 + 10 * n
    expected = reads(s, now)
    half = 0
    for _ in range(300):
        report = s.maintain(now, budget_s=0)
        half += "chunk_kind" in marks(path)
        assert reads(s, now) == expected
        if report.done:
            break
    assert half >= 5  # the reads above did run against half-compacted slices
    assert marks(path)["chunk_wm"] == (T0 + 1200) * 1000
    s.close()


# ------------------------------------------------------------------------ the feature's cadence


def settings(folder: Path, interval: float = 10.0) -> Settings:
    return Settings(path=folder / "settings.py", servers={}, token="t", interval=interval)


def test_feature_maintains_every_round_while_work_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feature = HistoryRecorder(settings(tmp_path), tmp_path)
    calls: list[tuple[float, float | None]] = []
    answers = iter([True, False, False, False, True, True, "fail", True, True])

    def fake_maintain(now: float, *, budget_s: float | None = None) -> MaintainReport:
        calls.append((now, budget_s))
        done = next(answers)
        if done == "fail":
            raise sqlite3.OperationalError("disk I/O error")
        return MaintainReport(0, 0, 0, 0.0, bool(done))

    monkeypatch.setattr(feature.store, "maintain", fake_maintain)
    states = lab_round(0)
    for i in range(64):
        feature.on_round(states, T0 + 10 * i)
    assert [round(t - T0) for t, _ in calls] == [
        0,  # the first round; done
        120,  # 120 s later: work left...
        130, 140, 150,  # ...so at every round, until done
        270,  # then every 120 s again
        390,  # fails...
        510,  # ...so the next try waits 120 s
        630,
    ]
    budgets = [b for _, b in calls]
    assert budgets[:2] == [2.0, 2.0] and budgets[2:5] == [4.0, 4.0, 4.0]  # 0.4 x interval
    assert budgets[5:] == [2.0] * 4
    assert feature.fault == ""  # maintenance worked again at 510
    feature.close()


def test_catch_up_budget_follows_the_interval() -> None:
    assert MaintainSchedule(10).catch_up_budget == 4.0
    assert MaintainSchedule(2).catch_up_budget == pytest.approx(0.8)
    assert MaintainSchedule(60).catch_up_budget == 5.0  # capped
    assert MaintainSchedule(0.1).catch_up_budget == 0.25  # at least one piece's worth


def test_head_stays_within_its_bound_through_the_feature(tmp_path: Path) -> None:
    feature = HistoryRecorder(settings(tmp_path), tmp_path)
    path = tmp_path / "history.sqlite"
    conn = sqlite3.connect(path)
    rounds = [lab_round(i, hosts=6, gpus=8, procs=12) for i in range(2)]  # 576 processes
    most = 0
    for i in range(240):  # 40 minutes
        feature.on_round(rounds[i % 2], T0 + 10 * i)
        most = max(most, conn.execute("SELECT COUNT(*) FROM h_round").fetchone()[0])
    # The open 10-minute slice plus at most 5 minutes (store.py's docstring).
    assert most <= 90
    assert feature.fault == ""
    conn.close()
    feature.close()


# ------------------------------------------------------------------------ odd values


def test_odd_values_from_agents_pass_through_ingest_maintenance_and_reads(
    tmp_path: Path,
) -> None:
    s = SqliteHistory(tmp_path / "history.db")
    huge = "x" * 200_000
    info = hm_pb2.HostInfo(id="odd", hostname="odd")
    g = info.gpus.add(id=-(2**31), utilization=-(2**31), mem_used=2**64 - 1,
                      mem_total=2**64 - 1, temp=2**32 - 1, fanspeed=2**32 - 1, name=huge)
    g.procs.add(pid=2**32 - 1, uid=-1, username="", basename=huge, mem=2**64 - 1,
                utilization=2**31 - 1)
    g.procs.add(pid=2**32 - 1, uid=5, username="dup", basename="b", mem=2**64 - 1)  # again
    g.procs.add(pid=7, uid=2**31 - 1, username="nul\0 and \U0001f600 " + huge, basename="",
                mem=0, utilization=-5)
    info.gpus.add(id=-(2**31), utilization=1)  # the same index twice: the first counts
    g2 = info.gpus.add(id=2**31 - 1, utilization=101, mem_used=1, mem_total=0)
    g2.procs.add(pid=1, username="u", basename="b", mem=1)
    info.disks.add(device=huge, mount=huge, used=2**64 - 1, total=0)
    info.disks.add(device="", mount="", used=0, total=2**64 - 1)
    odd = [
        up("odd", info, rtt_ms=float("nan")),
        up("surrogate \udcff name", info, rtt_ms=float("inf")),
        up("odd", info),  # the same host twice in a round: the first counts
        replace(down(""), rtt_ms=1e300),  # down, and yet a round trip
        up("x" * 5000, hm_pb2.HostInfo(), rtt_ms=-3.0),
    ]
    for i in range(200):
        s.ingest(odd if i % 2 else odd[:2], T0 + 10 * i)
    now = T0 + 2000
    assert s.maintain(now).done
    assert s.maintain(now + 11 * DAY).done  # retention through everything
    for i in range(200, 230):
        s.ingest(odd, T0 + 10 * i + 11 * DAY)
    assert s.maintain(now + 11 * DAY + 300).done
    gpus = s.gpus()
    assert {(h[:9], i) for h, i, _ in gpus} >= {("odd", -(2**31)), ("odd", 2**31 - 1)}
    assert all(len(name) <= 1024 for _, _, name in gpus)
    t, v = s.series("odd", -(2**31), "mem", T0, now + 12 * DAY)
    assert t and max(v) >= (2**63 - 1) // MIB * MIB * 0.99
    s.sparklines(DAY, now + 11 * DAY + 300)
    s.process_series("odd", -(2**31), T0, now + 12 * DAY)
    users = s.user_usage(now + 11 * DAY + 300, [DAY, 30 * DAY])
    assert "unknown" in users  # pid listed twice: one process, the first entry's owner
    assert any(u.startswith("nul\0 and \U0001f600 x") and len(u) == 1024 for u in users)
    s.idle_hogs(now + 11 * DAY + 300, min_seconds=0)
    assert s.host_uptime("", T0, now + 12 * DAY) == 0.0
    s.close()


def test_bulk_rows_must_belong_to_their_rounds(tmp_path: Path) -> None:
    s = SqliteHistory(tmp_path / "history.db")
    s.ingest(lab_round(0), T0)
    with pytest.raises(ValueError, match="not one of the rounds"):
        s._bulk_append([int(T0 * 1000) + 10_000], [(int(T0 * 1000) + 5_000, 1, 1, 0, 0)], [],
                       [])
    s.close()


# ------------------------------------------------------------------------ schema 1 -> 2


def make_schema_1(path: Path, states: list[list[HostState]]) -> None:
    """A version-1 file with these rounds in its head, none rolled up: a version-2 store's
    file, taken back to version 1 (dt and share in the process rows, no accounting sums)."""
    s = SqliteHistory(path)
    for i, round_ in enumerate(states):
        s.ingest(round_, T0 + 10 * i)
    s.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"""
        BEGIN;
        CREATE TABLE h_proc_1 (
            t INTEGER NOT NULL, gid INTEGER NOT NULL, pid INTEGER NOT NULL,
            uid INTEGER NOT NULL, bid INTEGER NOT NULL, mem INTEGER NOT NULL,
            util INTEGER NOT NULL, dt INTEGER NOT NULL, share REAL NOT NULL,
            PRIMARY KEY (t, gid, pid)) WITHOUT ROWID;
        INSERT INTO h_proc_1 SELECT p.t, p.gid, p.pid, p.uid, p.bid, p.mem, p.util, h.dt,
            1.0 / ((SELECT COUNT(DISTINCT q.uid) FROM h_proc q WHERE q.t = p.t
                    AND q.gid = p.gid)
                   * (SELECT COUNT(*) FROM h_proc q WHERE q.t = p.t AND q.gid = p.gid
                      AND q.uid = p.uid))
            FROM h_proc p JOIN gpu g ON g.gid = p.gid JOIN h_host h ON h.t = p.t
            AND h.hid = g.hid;
        DROP TABLE h_proc; ALTER TABLE h_proc_1 RENAME TO h_proc;
        DROP TABLE h_user; DROP TABLE h_gpu_user;
        DELETE FROM meta WHERE k = 'coarse_wm';
        UPDATE meta SET v = {int(T0 * 1000)} WHERE k = 'roll_wm';
        PRAGMA user_version = 1;
        COMMIT;
    """)
    conn.close()


def test_a_schema_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    states = [lab_round(i) for i in range(200)]
    make_schema_1(tmp_path / "old.db", states)
    ref = SqliteHistory(tmp_path / "ref.db")
    for i, round_ in enumerate(states):
        ref.ingest(round_, T0 + 10 * i)
    old = SqliteHistory(tmp_path / "old.db")
    conn = sqlite3.connect(tmp_path / "old.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
    now = T0 + 2000
    for s in (ref, old):
        assert s.maintain(now).done
    assert reads(old, now) == reads(ref, now)  # accounting included (to 9 digits)
    old.close()
    ref.close()
    assert table_rows(tmp_path / "old.db") == table_rows(tmp_path / "ref.db")


@pytest.fixture(autouse=True)
def _no_leaked_readers() -> Iterator[None]:
    yield
