"""GPU-hours and GiB-hours per Slurm job in the SQLite history: summed at ingest like the users'
(a user's share of a GPU split between that user's jobs on it), rolled up at the 1-minute and
1-hour levels with the users' retention, the same before and after roll-up, and a schema-2 file
upgraded in place. Answers worked out by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import GIB, down, gpu, host_info, proc, up
from historykit import ingest_with_failing_maintenance

from hmonitor._pb import hm_pb2
from hmonitor.web.history import JobUsage, SqliteHistory
from hmonitor.web.history import maintenance as maintenance_module
from hmonitor.web.hoststate import HostState

DAY = 86_400.0
HOUR = 3600.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # midnight UTC, so every bucket edge is aligned
JOB_TABLES = ("h_job", "job_roll", "job_seen")


def open_store(path: Path, name: str = "history.db", **kw: float) -> SqliteHistory:
    return SqliteHistory(path / name, **kw)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def by_job(usage: list[JobUsage]) -> dict[int, JobUsage]:
    return {u.job: u for u in usage}


def two_hosts() -> list[HostState]:
    """Job 7 (ann) on GPU 0 of hosts a and b, 2 GiB on each; job 8 (bob) alone on a's GPU 1,
    3 GiB in two processes; cat without a job on b's GPU 1."""
    a = host_info("a", [gpu(0, proc("ann", pid=1, mem_gib=2, job=7)),
                        gpu(1, proc("bob", pid=2, mem_gib=1, job=8),
                            proc("bob", pid=3, mem_gib=2, job=8))])
    b = host_info("b", [gpu(0, proc("ann", pid=1, mem_gib=2, job=7)),
                        gpu(1, proc("cat", pid=4, mem_gib=5))])
    return [up("a", a), up("b", b)]


def ingest_hour(s: SqliteHistory, states: list[HostState], start: float = T0) -> None:
    """Every 10 s from start - 10: [start, start + 3600) holds 360 samples of 10 s each."""
    for i in range(361):
        s.ingest(states, start - 10 + 10 * i)


def check_close(got: JobUsage, user: str, hours: float, gib_hours: float) -> None:
    assert got.user == user, got
    assert got.gpu_hours == pytest.approx(hours), got
    assert got.gpu_mem_gib_hours == pytest.approx(gib_hours), got


# ------------------------------------------------------------------------ ingest and reads


def test_jobs_across_rounds_and_hosts(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    ingest_hour(s, two_hosts())
    usage = s.job_usage(T0 + HOUR, HOUR)
    assert [u.job for u in usage] == [7, 8]  # most GPU-hours first
    jobs = by_job(usage)
    check_close(jobs[7], "ann", 2.0, 4.0)  # two GPUs for an hour, 2 GiB on each
    check_close(jobs[8], "bob", 1.0, 3.0)
    assert jobs[7].hosts == ("a", "b") and jobs[8].hosts == ("a",)
    # First and last samples of the history kept, not cut to the window.
    assert (jobs[7].first_seen, jobs[7].last_seen) == (T0 - 10, T0 + 3590)
    # A job's hours match its user's when all the user's processes are in it.
    users = s.user_usage(T0 + HOUR, [HOUR])
    assert jobs[7].gpu_hours == pytest.approx(users["ann"][HOUR].gpu_hours)
    assert jobs[8].gpu_mem_gib_hours == pytest.approx(users["bob"][HOUR].gpu_mem_gib_hours)
    # Windows: a part of the hour, and the limit.
    check_close(by_job(s.job_usage(T0 + HOUR, 600))[7], "ann", 2 / 6, 4 / 6)
    assert [u.job for u in s.job_usage(T0 + HOUR, HOUR, limit=1)] == [7]
    assert s.job_usage(T0 + HOUR, HOUR, limit=0) == []
    assert s.job_usage(T0 - 100, 50) == []  # before anything
    s.close()


def test_a_process_without_a_job_adds_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    plain = [up("a", host_info("a", [gpu(0, proc("ann", pid=1)), gpu(1, proc("bob", pid=2))]))]
    ingest_hour(s, plain)
    assert s.job_usage(T0 + HOUR, HOUR) == []
    assert rows(tmp_path / "history.db", "SELECT COUNT(*) FROM h_job") == [(0,)]
    s.maintain(T0 + HOUR)
    for table in JOB_TABLES:
        assert rows(tmp_path / "history.db", f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    assert s.user_usage(T0 + HOUR, [HOUR])["ann"][HOUR].gpu_hours == pytest.approx(1.0)
    s.close()


def test_shared_gpus_are_split_between_jobs_within_the_users_share(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    g = [
        gpu(0, proc("ann", pid=1, mem_gib=1, job=1), proc("ann", pid=2, mem_gib=3, job=2)),
        gpu(1, proc("bob", pid=3, mem_gib=1, job=3), proc("cat", pid=4, mem_gib=2, job=4)),
        # dan's processes outside a job take their part of dan's share: job 5 gets half.
        gpu(2, proc("dan", pid=5, mem_gib=1, job=5), proc("dan", pid=6, mem_gib=4)),
        # Two processes of one job are one job; fay's job the other half.
        gpu(3, proc("eve", pid=7, mem_gib=1, job=6), proc("eve", pid=8, mem_gib=1, job=6),
            proc("fay", pid=9, mem_gib=2, job=7)),
        # gus shares with hal, who has no job: gus (and his job) half.
        gpu(4, proc("gus", pid=10, mem_gib=1, job=8), proc("hal", pid=11, mem_gib=1)),
        # Three users: a third each; ann's job 1 again, alone in her third.
        gpu(5, proc("ann", pid=12, mem_gib=1, job=1), proc("bob", pid=13, mem_gib=1, job=3),
            proc("ivy", pid=14, mem_gib=1, job=9), proc("ivy", pid=15, mem_gib=1, job=10)),
    ]
    ingest_hour(s, [up("a", host_info("a", g))])
    want = {1: ("ann", 0.5 + 1 / 3, 2), 2: ("ann", 0.5, 3), 3: ("bob", 0.5 + 1 / 3, 2),
            4: ("cat", 0.5, 2), 5: ("dan", 0.5, 1), 6: ("eve", 0.5, 2), 7: ("fay", 0.5, 2),
            8: ("gus", 0.5, 1), 9: ("ivy", 1 / 6, 1), 10: ("ivy", 1 / 6, 1)}
    jobs = by_job(s.job_usage(T0 + HOUR, HOUR))
    assert set(jobs) == set(want)
    for job, (user, hours, gib_hours) in want.items():
        check_close(jobs[job], user, hours, gib_hours)
    # A user's jobs add up to the user's hours, less what ran outside a job.
    users = s.user_usage(T0 + HOUR, [HOUR])
    for user, outside in (("ann", 0.0), ("dan", 0.5), ("hal", 0.5), ("ivy", 0.0)):
        mine = sum(u.gpu_hours for u in jobs.values() if u.user == user)
        assert mine + outside == pytest.approx(users[user][HOUR].gpu_hours), user
    s.close()


def test_one_job_of_two_users_and_odd_ids(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    info = hm_pb2.HostInfo(id="a")
    g = info.gpus.add(id=0)
    g.procs.add(pid=1, username="ann", mem=GIB, job=hm_pb2.SlurmJob(id=2**64 - 1))
    g.procs.add(pid=1, username="bob", mem=GIB)  # listed twice: the first entry's job counts
    g.procs.add(pid=2, username="bob", mem=GIB, job=hm_pb2.SlurmJob(id=0, step="extern"))
    g.procs.add(pid=3, username="cat", mem=GIB, job=hm_pb2.SlurmJob(id=2**64 - 1))
    g2 = info.gpus.add(id=1)  # two ids past SQLite's integers: clamped, one job
    g2.procs.add(pid=4, username="ann", mem=GIB, job=hm_pb2.SlurmJob(id=2**64 - 1))
    g2.procs.add(pid=5, username="ann", mem=GIB, job=hm_pb2.SlurmJob(id=2**63))
    for i in range(3):
        s.ingest([up("a", info)], T0 + 10 * i)
    s.ingest([down("a")], T0 + 30)  # down: nothing
    usage = s.job_usage(T0 + 40, 60)
    # A job message with id 0 is still a job; an id past SQLite's integers is clamped; the
    # same job under two users is a row per user.
    assert sorted((u.job, u.user) for u in usage) == [
        (0, "bob"), (2**63 - 1, "ann"), (2**63 - 1, "cat")]
    hours = {u.user: u.gpu_hours for u in usage}
    # ann: a third of GPU 0, and all of GPU 1 (her two processes there in the one job).
    assert hours == pytest.approx({"ann": 20 * (1 / 3 + 1) / 3600, "bob": 20 / 3 / 3600,
                                   "cat": 20 / 3 / 3600})
    assert all(u.last_seen == T0 + 20 for u in usage)
    s.close()


def test_a_restart_and_a_new_process_read_the_job_again(tmp_path: Path) -> None:
    # A live process's job is read when it first shows, then remembered; a restart forgets it.
    def rounds(s: SqliteHistory, first: int, last: int, job: int | None, user: str) -> None:
        for i in range(first, last):
            s.ingest([up("a", host_info("a", [gpu(0, proc(user, pid=7, job=job))]))],
                     T0 + 10 * i)

    s = open_store(tmp_path)
    rounds(s, 0, 10, 1, "ann")
    s.close()
    s = open_store(tmp_path)
    rounds(s, 10, 20, 1, "ann")  # the same process (and job) after a restart
    rounds(s, 20, 30, 2, "bob")  # pid 7 again, another user's: another process, job 2
    rounds(s, 30, 40, None, "cat")  # and again, outside any job
    jobs = by_job(s.job_usage(T0 + 400, 400))
    assert set(jobs) == {1, 2}
    check_close(jobs[1], "ann", 190 / 3600, 4 * 190 / 3600)
    check_close(jobs[2], "bob", 100 / 3600, 4 * 100 / 3600)
    assert (jobs[1].first_seen, jobs[1].last_seen) == (T0, T0 + 190)
    s.close()


# ------------------------------------------------------------------------ maintenance


def job_lab(i: int) -> list[HostState]:
    """Round i of a small lab with jobs: job 100 + i // 60 of ann on all of h0 and GPU 0 of h1
    (a new job, with new processes, every 10 minutes), bob's job 5 and cat (no job) sharing h1's
    GPU 1, bob's job 6 coming and going on h2; memory moves with i."""
    mib = (i % 5) / 1024
    ann = 100 + i // 60
    pids = 1000 * (i // 60)
    h0 = host_info("h0", [gpu(g, proc("ann", pid=pids + 10 + g, mem_gib=2 + mib, job=ann))
                          for g in range(2)])
    h1 = host_info("h1", [gpu(0, proc("ann", pid=pids + 20, mem_gib=1, job=ann)),
                          gpu(1, proc("bob", pid=21, mem_gib=3 + mib, job=5),
                              proc("cat", pid=22, mem_gib=1))])
    h2_procs = [proc("bob", pid=30, mem_gib=4, job=6)] if (i // 45) % 2 else []
    h2 = host_info("h2", [gpu(0, *h2_procs)])
    return [up("h0", h0), up("h1", h1), up("h2", h2)]


def answers(s: SqliteHistory, now: float, windows: tuple[float, ...]) -> list[Any]:
    return [[(u.job, u.user, round(u.gpu_hours, 9), round(u.gpu_mem_gib_hours, 9),
              u.first_seen, u.last_seen, u.hosts) for u in s.job_usage(now, w)]
            for w in windows]


def test_values_after_roll_up_equal_values_before(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    n = 3 * 360  # three hours from T0 - 10 s
    for i in range(n):
        s.ingest(job_lab(i), T0 - 10 + 10 * i)
    now = T0 + 3 * HOUR - 10  # the last round's minute is still open
    windows = (600.0, HOUR, 1.5 * HOUR, 3 * HOUR + 60, DAY)  # minute edges; hours; more
    before = answers(s, now - 50, windows)
    assert len(before[-1]) == 18 + 2  # ann's 18 ten-minute jobs, and bob's two
    # The clock far ahead (as long as retention keeps everything): all but the open minute
    # rolled up, to 1-minute and 1-hour buckets.
    assert s.maintain(now + 10 * DAY).done
    db = tmp_path / "history.db"
    assert rows(db, "SELECT COUNT(DISTINCT t) FROM h_job") == [(5,)]  # the open minute
    # Hours T0 - 1 h (the round at T0 - 10 s), T0, T0 + 1 h and T0 + 2 h (its closed stretches).
    assert rows(db, "SELECT COUNT(*) FROM job_roll WHERE lvl = 3600000 AND job = 5") == [(4,)]
    assert answers(s, now - 50, windows) == before
    # By hand: ann's job 100 ran 10 minutes on 3 GPUs (its first sample, at T0 - 10, counts
    # no time); bob's job 5 half of one GPU for the whole window.
    jobs = by_job(s.job_usage(now + 10, 3 * HOUR))
    check_close(jobs[100], "ann", 3 * 590 / 3600, (2 * 2 + 1) * 590 / 3600 + (
        sum(2 * (i % 5) for i in range(1, 60)) * 10 / 1024 / 3600))
    assert jobs[100].hosts == ("h0", "h1") and jobs[6].hosts == ("h2",)
    assert (jobs[100].first_seen, jobs[100].last_seen) == (T0 - 10, T0 + 580)
    assert jobs[5].gpu_hours == pytest.approx(0.5 * (3 * HOUR - 10) / 3600)
    s.close()


def test_job_accounting_has_the_users_retention(tmp_path: Path) -> None:
    s = open_store(tmp_path, minute_days=1, keep_days=2)
    for i in range(361):
        s.ingest(job_lab(i), T0 - 10 + 10 * i)
    s.ingest([down("h0"), down("h1"), down("h2")], T0 + 2 * HOUR)  # closes every minute
    db = tmp_path / "history.db"

    def levels(table: str) -> list[tuple[Any, ...]]:
        return rows(db, f"SELECT DISTINCT lvl, t FROM {table} ORDER BY lvl, t")

    assert s.maintain(T0 + 2 * HOUR).done
    whole = answers(s, T0 + 2 * HOUR, (DAY,))
    assert levels("job_roll") == levels("user_roll") and len(levels("job_roll")) == 61 + 2
    # A day and a half later: the minutes are gone, the hours answer the same.
    assert s.maintain(T0 + 1.5 * DAY).done
    assert levels("job_roll") == levels("user_roll") == [
        (3_600_000, int(T0 * 1000) - 3_600_000), (3_600_000, int(T0 * 1000))]
    assert answers(s, T0 + 2 * HOUR, (DAY,)) == whole
    assert answers(s, T0 + 1.5 * DAY, (2 * DAY,)) == whole
    # Per job, user, host and hour: ann's jobs 100-106 on h0 and h1, bob's 5 on h1 and 6 on
    # h2; jobs 100 and 5 also in the hour before T0 (their first sample, at T0 - 10 s).
    assert len(rows(db, "SELECT * FROM job_seen")) == 7 * 2 + 2 + 3
    # Past keep_days: nothing is left, where the jobs ran included.
    assert s.maintain(T0 + 3 * DAY).done
    for table in JOB_TABLES:
        assert rows(db, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    assert s.job_usage(T0 + 3 * DAY, 3 * DAY) == []
    s.close()


def test_interrupted_maintenance_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3 * 360
    states = [job_lab(i) for i in range(n)]
    end = T0 + 10 * n
    ref = open_store(tmp_path, "ref.db", keep_days=1 / 24, minute_days=1 / 48)
    for i in range(n):
        ref.ingest(states[i], T0 + 10 * i)
    assert ref.maintain(end).done and ref.maintain(end).done
    ref.close()

    # Small pieces, and every 5th watermark write fails: each piece around one must vanish.
    monkeypatch.setattr(maintenance_module, "_ROLL_ROWS", 1)
    monkeypatch.setattr(maintenance_module, "_RETAIN_ROWS", 7)
    s = open_store(tmp_path, "pieces.db", keep_days=1 / 24, minute_days=1 / 48)
    assert ingest_with_failing_maintenance(monkeypatch, s, states, T0, fail_every=5) > 20
    assert s.maintain(end).done and s.maintain(end).done
    s.close()

    def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                          for r in rows(path, f"SELECT * FROM {t}"))
                for t in (*JOB_TABLES, "user_roll", "h_user")}

    got, want = tables(tmp_path / "pieces.db"), tables(tmp_path / "ref.db")
    assert want["job_roll"] and want["job_seen"]
    assert got == want


# ------------------------------------------------------------------------ schema 2 -> 3


def test_a_schema_2_file_keeps_its_user_history_and_gains_job_accounting(
    tmp_path: Path,
) -> None:
    db = tmp_path / "history.db"
    s = open_store(tmp_path)
    plain = [up("a", host_info("a", [gpu(0, proc("ann", pid=1, mem_gib=2))]))]
    for i in range(200):
        s.ingest(plain, T0 - 10 + 10 * i)
        if i == 100:
            s.maintain(T0 + 10 * i)
    s.close()
    fresh_schema = rows(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    # Back to version 2: no job tables.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("BEGIN; DROP TABLE h_job; DROP TABLE job_roll; DROP TABLE job_seen;"
                       " PRAGMA user_version = 2; COMMIT;")
    conn.close()
    before = rows(db, "SELECT * FROM user_roll ORDER BY 1, 2, 3")
    head = rows(db, "SELECT * FROM h_user ORDER BY 1, 2")
    assert before and head

    s = open_store(tmp_path)
    assert rows(db, "PRAGMA user_version") == [(3,)]
    assert rows(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == fresh_schema
    assert rows(db, "SELECT * FROM user_roll ORDER BY 1, 2, 3") == before
    assert rows(db, "SELECT * FROM h_user ORDER BY 1, 2") == head
    assert s.job_usage(T0 + 2000, DAY) == []
    ann = [up("a", host_info("a", [gpu(0, proc("ann", pid=1, mem_gib=2, job=42))]))]
    for i in range(200, 400):
        s.ingest(ann, T0 - 10 + 10 * i)
    assert s.maintain(T0 + 4000).done
    usage = s.user_usage(T0 + 3990, [3990])["ann"][3990]
    assert usage.gpu_hours == pytest.approx(3990 / 3600)  # the old history counts on
    (job,) = s.job_usage(T0 + 3990, 3990)
    check_close(job, "ann", 2000 / 3600, 2 * 2000 / 3600)
    assert (job.first_seen, job.last_seen, job.hosts) == (T0 + 1990, T0 + 3980, ("a",))
    s.close()
    s = open_store(tmp_path)  # opened again: version 3 stays, nothing migrated twice
    assert s.job_usage(T0 + 3990, 3990) == [job]
    s.close()


@pytest.fixture(autouse=True)
def _no_leaked_readers() -> Iterator[None]:
    yield
