"""Users' and Slurm jobs' GPU-hours and GiB-hours from Prometheus and VictoriaMetrics against the
SQLite history, fed the same hour of rounds, and against the hours worked out by hand.

An hour of rounds every 10 s on two hosts:

* gpu-a GPU 0: alice's job 101 (10 GiB) and a process of hers outside any job (2 GiB), bob's
  job 202 (6 GiB); GPU 1: alice's job 101 again (20 GiB), for the last half hour only;
* gpu-b GPU 0: carol's job 303 (8 GiB); GPU 1: carol outside a job (4 GiB).

GPU 0 of gpu-a is shared by two users (1/2 each), and alice's half by her job and her other
process (1/4 each): job 101 has 1/4 x 1 h + 1 x 1/2 h = 0.75 GPU-hours.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from builders import gpu, host_info, proc, up
from promkit import PROMETHEUS, PROMTOOL, VICTORIA, Rounds, prometheus_with, victoria_with

from hmonitor.web.history import SqliteHistory
from hmonitor.web.history.prometheus import PrometheusHistory
from hmonitor.web.hoststate import HostState

INTERVAL = 10.0
HOUR = 3600.0
NOW = float(int(time.time()) // 10 * 10 - 60)  # the last round (a store refuses the future)
STEPS = int(HOUR / INTERVAL)

EXPECTED_JOBS = {  # (job, user): (GPU-hours, GiB-hours, hosts)
    (101, "alice"): (0.75, 10 + 20 * 0.5, ("gpu-a",)),
    (202, "bob"): (0.5, 6.0, ("gpu-a",)),
    (303, "carol"): (1.0, 8.0, ("gpu-b",)),
}
EXPECTED_USERS = {  # user: (GPU-hours, GiB-hours)
    "alice": (0.5 + 0.5, 12 + 10.0),
    "bob": (0.5, 6.0),
    "carol": (2.0, 12.0),
}


def round_at(k: int) -> list[HostState]:
    t = NOW - (STEPS - 1 - k) * INTERVAL
    second_half = k >= STEPS // 2
    a = host_info("gpu-a", [
        gpu(0, proc("alice", pid=10, uid=1001, mem_gib=10, job=101),
            proc("alice", pid=11, uid=1001, mem_gib=2),
            proc("bob", pid=20, uid=1002, mem_gib=6, job=202), util=40),
        gpu(1, *([proc("alice", pid=12, uid=1001, mem_gib=20, job=101)] if second_half else []),
            util=90 if second_half else 0),
    ])
    b = host_info("gpu-b", [
        gpu(0, proc("carol", pid=30, uid=1003, mem_gib=8, job=303), util=70),
        gpu(1, proc("carol", pid=31, uid=1003, mem_gib=4), util=10),
    ])
    return [up("gpu-a", a, at=t), up("gpu-b", b, at=t)]


@pytest.fixture(scope="module")
def rounds() -> Rounds:
    made = Rounds({"hmonitor_gpu_user_memory_bytes", "hmonitor_gpu_job_memory_bytes"})
    for k in range(STEPS):
        made.add(round_at(k), NOW - (STEPS - 1 - k) * INTERVAL)
    return made


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteHistory]:
    store = SqliteHistory(tmp_path_factory.mktemp("sqlite") / "history.sqlite")
    for k in range(STEPS):
        t = NOW - (STEPS - 1 - k) * INTERVAL
        store.ingest(round_at(k), t)
        if k % 12 == 0:
            store.maintain(t)
    yield store
    store.close()


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def remote(request: pytest.FixtureRequest, rounds: Rounds,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusHistory]:
    work = tmp_path_factory.mktemp(request.param)
    if request.param == "prometheus":
        if not (shutil.which(PROMETHEUS) and shutil.which(PROMTOOL)):
            pytest.skip("prometheus and promtool are not installed (Debian package prometheus)")
        started = prometheus_with(rounds, work)
    else:
        if not shutil.which(VICTORIA):
            pytest.skip("victoria-metrics is not installed (its Debian package)")
        started = victoria_with(rounds, work)
    with started as url:
        yield PrometheusHistory(url, timeout=30, usage_step=INTERVAL)


def test_sqlite_jobs_and_users_are_the_hours_worked_out_by_hand(sqlite: SqliteHistory) -> None:
    jobs = {(j.job, j.user): (j.gpu_hours, j.gpu_mem_gib_hours, j.hosts)
            for j in sqlite.job_usage(NOW + INTERVAL, HOUR)}
    assert set(jobs) == set(EXPECTED_JOBS)
    for key, (gpu_h, gib_h, hosts) in EXPECTED_JOBS.items():
        assert jobs[key][0] == pytest.approx(gpu_h, rel=0.02)
        assert jobs[key][1] == pytest.approx(gib_h, rel=0.02)
        assert jobs[key][2] == hosts
    users = sqlite.user_usage(NOW + INTERVAL, [HOUR])
    for user, (gpu_h, gib_h) in EXPECTED_USERS.items():
        got = users[user][HOUR]
        assert got.gpu_hours == pytest.approx(gpu_h, rel=0.02)
        assert got.gpu_mem_gib_hours == pytest.approx(gib_h, rel=0.02)


def test_store_jobs_match_sqlite_and_the_hand_count(
    remote: PrometheusHistory, sqlite: SqliteHistory,
) -> None:
    ours = {(j.job, j.user): j for j in sqlite.job_usage(NOW + INTERVAL, HOUR)}
    theirs = remote.job_usage(NOW + INTERVAL, HOUR)
    # most GPU-hours first
    assert [(j.job, j.user) for j in theirs] == [(303, "carol"), (101, "alice"), (202, "bob")]
    for j in theirs:
        gpu_h, gib_h, hosts = EXPECTED_JOBS[j.job, j.user]
        assert j.gpu_hours == pytest.approx(gpu_h, rel=0.03)
        assert j.gpu_hours == pytest.approx(ours[j.job, j.user].gpu_hours, rel=0.03)
        assert j.gpu_mem_gib_hours == pytest.approx(gib_h, rel=0.03)
        assert j.gpu_mem_gib_hours == pytest.approx(ours[j.job, j.user].gpu_mem_gib_hours,
                                                    rel=0.03)
        assert j.hosts == hosts == ours[j.job, j.user].hosts
    first = {j.job: j.first_seen for j in theirs}
    assert first[303] == pytest.approx(NOW - HOUR, abs=2 * INTERVAL)
    assert first[101] == pytest.approx(NOW - HOUR, abs=2 * INTERVAL)
    assert all(j.last_seen == pytest.approx(NOW, abs=2 * INTERVAL) for j in theirs)
    assert remote.job_usage(NOW + INTERVAL, HOUR, limit=1)[0].job == 303


def test_store_users_match_sqlite_and_the_hand_count(
    remote: PrometheusHistory, sqlite: SqliteHistory,
) -> None:
    ours = sqlite.user_usage(NOW + INTERVAL, [HOUR])
    theirs = remote.user_usage(NOW + INTERVAL, [HOUR])
    assert set(theirs) == set(EXPECTED_USERS)
    for user, (gpu_h, gib_h) in EXPECTED_USERS.items():
        got = theirs[user][HOUR]
        assert got.gpu_hours == pytest.approx(gpu_h, rel=0.03)
        assert got.gpu_hours == pytest.approx(ours[user][HOUR].gpu_hours, rel=0.03)
        assert got.gpu_mem_gib_hours == pytest.approx(gib_h, rel=0.03)
        assert got.gpu_mem_gib_hours == pytest.approx(ours[user][HOUR].gpu_mem_gib_hours,
                                                      rel=0.03)


def test_no_job_series_no_jobs(remote: PrometheusHistory) -> None:
    assert remote.job_usage(NOW - 2 * HOUR, HOUR / 2) == []
