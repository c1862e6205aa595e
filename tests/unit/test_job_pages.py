"""GPU-hours per Slurm job on the users page and in ``/api/v1/jobs``, from a real SQLite history
fed through the poller's callback with rounds whose answers are known."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
from builders import gpu, host_info, proc, up
from flask import Flask
from flask.testing import FlaskClient
from webkit import BEARER, login, make_app

from hmonitor._pb import hm_pb2
from hmonitor.web.hoststate import HostState
from hmonitor.web.state import get_state

INTERVAL = 60.0
ROUNDS = 61  # one hour at a round a minute


def _in_docker() -> hm_pb2.ProcInfo:
    p = proc("root", pid=14, uid=0, mem_gib=6)
    p.container.id, p.container.runtime = "3f2a9c81d0e4" + "0" * 52, "docker"
    return p


def _states() -> list[HostState]:
    """gpu01: alice's job 81234 alone on GPU 0; her job 81235 and bob's 90001 share GPU 1;
    carol computes on GPU 2 outside any job; a docker container's root process on GPU 3.
    gpu02: bob's 90001 also runs there."""
    return [
        up("gpu01", host_info("gpu01", [
            gpu(0, proc("alice", pid=10, mem_gib=20, job=81234), util=90),
            gpu(1, proc("alice", pid=11, mem_gib=4, job=81235),
                proc("bob", pid=12, mem_gib=8, job=90001), util=60),
            gpu(2, proc("carol", pid=13, mem_gib=2), util=50),
            gpu(3, _in_docker(), util=80),
        ])),
        up("gpu02", host_info("gpu02", [gpu(0, proc("bob", pid=5, mem_gib=10, job=90001),
                                            util=70)])),
    ]


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    states = _states()
    app = make_app(tmp_path, states, interval=INTERVAL)
    recorder = get_state(app).recorder
    first = time.time() - (ROUNDS - 1) * INTERVAL - 30
    for k in range(ROUNDS):
        recorder.on_round(states, first + k * INTERVAL)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    login(c)
    return c


def test_the_api_counts_each_jobs_gpu_hours(client: FlaskClient) -> None:
    body = client.get("/api/v1/jobs?window=1d", headers=BEARER).json
    assert body is not None and body["window"] == "1d"
    jobs = {j["job"]: j for j in body["jobs"]}
    assert set(jobs) == {81234, 81235, 90001}  # carol's process is in no job
    assert jobs[81234]["user"] == "alice" and jobs[81234]["gpu_hours"] == pytest.approx(1.0)
    assert jobs[81235]["gpu_hours"] == pytest.approx(0.5)  # GPU 1 shared with bob's job
    assert jobs[90001]["gpu_hours"] == pytest.approx(1.5)  # half of gpu01/1, all of gpu02/0
    assert jobs[90001]["hosts"] == ["gpu01", "gpu02"]
    assert jobs[81234]["gpu_mem_gib_hours"] == pytest.approx(20.0)
    assert jobs[90001]["gpu_mem_gib_hours"] == pytest.approx(18.0)  # its own memory, not split
    assert body["jobs"][0]["job"] == 90001  # most GPU-hours first


def test_a_containers_gpu_hours_are_the_containers_not_roots(client: FlaskClient) -> None:
    body = client.get("/api/v1/users", headers=BEARER).json
    assert body is not None
    users = {u["user"]: u for u in body["users"]}
    assert "root" not in users
    box = users["container 3f2a9c81d0e4… (docker)"]
    assert box["usage"]["1d"]["gpu_hours"] == pytest.approx(1.0)
    assert [g["gpu"] for g in box["gpus_now"]] == [3]


def test_a_bad_window_is_a_clear_400(client: FlaskClient) -> None:
    resp = client.get("/api/v1/jobs?window=2y", headers=BEARER)
    assert resp.status_code == 400 and "window must be one of 1d, 7d, 30d" in resp.get_data(True)


def test_the_users_page_lists_jobs(client: FlaskClient) -> None:
    page = client.get("/users").get_data(as_text=True)
    table = re.search(r'<table class="list jobs" id="jobs-table">.*?</table>', page, re.S)
    assert table is not None
    rows = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split())
            for r in re.findall(r"<tr data-job.*?</tr>", table.group(0), re.S)]
    assert [r.split(" ")[:4] for r in rows] == [["90001", "bob", "1.5", "18.0"],
                                                ["81234", "alice", "1.0", "20.0"],
                                                ["81235", "alice", "0.5", "4.0"]]
    assert "gpu01, gpu02" in rows[0]


def test_without_jobs_the_page_says_so(tmp_path: Path) -> None:
    app = make_app(tmp_path, [up("gpu01", host_info("gpu01", [gpu(0)]))], interval=INTERVAL)
    c = app.test_client()
    login(c)
    assert "No process of a Slurm job held a GPU in the last 7 days" in c.get(
        "/users").get_data(as_text=True)
