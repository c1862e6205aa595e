"""History, users and alerts through the JSON API, on a real SQLite store fed like the poller."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from builders import GIB, down, gpu, host_info, proc, up
from flask import Flask
from flask.testing import FlaskClient
from webkit import TOKEN, make_app

from hmonitor.web.state import get_state

ROUNDS = 60  # ten minutes at 10 s
INTERVAL = 10.0


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    # alice computes on GPU 0; bob and carol share GPU 1 and leave it idle; /scratch is 93 % full.
    host = host_info(
        "gpu_a",
        [
            gpu(0, proc("alice", pid=11, mem_gib=30), util=80, used_gib=31),
            gpu(
                1,
                proc("bob", pid=21, mem_gib=10),
                proc("carol", pid=22, mem_gib=6),
                util=1,
                used_gib=16,
            ),
        ],
        disks=(("/", 0.4), ("/scratch", 0.93)),
    )
    states = [up("gpu_a", host), down("gpu_b", "connection refused", last_seen=time.time() - 99)]
    app = make_app(tmp_path, states, idle_minutes=5, interval=INTERVAL)
    feature = get_state(app).recorder
    start = time.time() - ROUNDS * INTERVAL
    for k in range(ROUNDS):
        feature.on_round(states, start + k * INTERVAL)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return c


def test_history_needs_login(app: Flask) -> None:
    assert app.test_client().get("/api/v1/history?host=gpu_a&gpu=0").status_code == 401


def test_series_json_and_csv(client: FlaskClient) -> None:
    got = client.get("/api/v1/history?host=gpu_a&gpu=0&metric=mem&window=1h").get_json()
    assert got["unit"] == "bytes" and len(got["t"]) == ROUNDS
    assert set(got["v"]) == {31 * GIB}
    assert got["t"] == sorted(got["t"])
    util = client.get("/api/v1/history?host=gpu_a&gpu=1&metric=util&window=3600").get_json()
    assert set(util["v"]) == {1}

    csv = client.get("/api/v1/history?host=gpu_a&gpu=0&metric=temp&window=1h&format=csv")
    assert csv.mimetype == "text/csv"
    lines = csv.text.strip().splitlines()
    assert lines[0] == "time,temp (°C)" and len(lines) == ROUNDS + 1
    assert lines[1].endswith(",40")


@pytest.mark.parametrize(
    "query",
    [
        "host=gpu_a",
        "host=gpu_a&gpu=x",
        "host=gpu_a&gpu=0&metric=power",
        "host=gpu_a&gpu=0&window=2h",
        "host=gpu_a&gpu=0&since=10&until=5",
        "host=gpu_a&gpu=0&since=abc",
    ],
)
def test_bad_history_queries_are_clear_400s(client: FlaskClient, query: str) -> None:
    resp = client.get(f"/api/v1/history?{query}")
    assert resp.status_code == 400 and resp.get_json()["error"]


def test_unknown_gpu_has_no_points(client: FlaskClient) -> None:
    got = client.get("/api/v1/history?host=nope&gpu=0").get_json()
    assert got["t"] == [] and got["v"] == []


def test_process_history_by_user(client: FlaskClient) -> None:
    got = client.get("/api/v1/history/processes?host=gpu_a&gpu=1&window=1h&points=10").get_json()
    assert set(got["users"]) == {"bob", "carol"}
    assert max(got["users"]["bob"]) == pytest.approx(10 * GIB, rel=0.01)


def test_sparklines_cover_every_gpu(client: FlaskClient) -> None:
    got = client.get("/api/v1/sparklines?window=1h&points=12").get_json()
    assert set(got["gpus"]) == {"gpu_a/0", "gpu_a/1"}
    util = [v for v in got["gpus"]["gpu_a/0"]["util"] if v is not None]
    assert util and all(v == pytest.approx(80) for v in util)
    mem = [v for v in got["gpus"]["gpu_a/0"]["mem"] if v is not None]
    assert all(v == pytest.approx(31 / 80, rel=0.01) for v in mem)
    assert client.get("/api/v1/sparklines?window=2d").status_code == 400


def test_users_now_and_gpu_hours(client: FlaskClient) -> None:
    users = {u["user"]: u for u in client.get("/api/v1/users").get_json()["users"]}
    assert set(users) == {"alice", "bob", "carol"}
    assert users["alice"]["gpus_now"] == [
        {"host": "gpu_a", "gpu": 0, "mem": 30 * GIB, "pid": 11, "basename": "python"}
    ]
    assert users["alice"]["expiration"] == 1
    # Ten minutes on one GPU (give or take the first interval); bob and carol split theirs.
    hours = ROUNDS * INTERVAL / 3600
    slack = INTERVAL / 3600
    day = users["alice"]["usage"]["1d"]
    assert day["gpu_hours"] == pytest.approx(hours, abs=slack)
    assert day["gpu_mem_gib_hours"] == pytest.approx(30 * hours, abs=30 * slack)
    assert users["bob"]["usage"]["7d"]["gpu_hours"] == pytest.approx(hours / 2, abs=slack)
    assert users["carol"]["usage"]["30d"]["gpu_hours"] == pytest.approx(hours / 2, abs=slack)
    assert [h["pid"] for h in users["bob"]["idle_hogs"]] == [21]
    assert users["alice"]["idle_hogs"] == []


def test_alerts(client: FlaskClient) -> None:
    alerts = client.get("/api/v1/alerts").get_json()["alerts"]
    kinds = sorted((a["kind"], a["host"]) for a in alerts)
    assert kinds == [
        ("disk_full", "gpu_a"),
        ("host_down", "gpu_b"),
        ("idle_hog", "gpu_a"),
        ("idle_hog", "gpu_a"),
    ]
    disk = next(a for a in alerts if a["kind"] == "disk_full")
    assert "/scratch is 93% full" in disk["message"]
    down_alert = next(a for a in alerts if a["kind"] == "host_down")
    assert "connection refused" in down_alert["message"] and down_alert["since"]
    hog = next(a for a in alerts if a["kind"] == "idle_hog" and "bob" in a["message"])
    assert "10.0 GiB on gpu_a GPU 1" in hog["message"]


def test_process_history_as_csv(client: FlaskClient) -> None:
    resp = client.get("/api/v1/history/processes?host=gpu_a&gpu=1&window=1h&points=5&format=csv")
    rows = resp.text.strip().splitlines()
    assert rows[0] == "time,bob (bytes),carol (bytes)"
    assert len(rows) >= 2 and rows[-1].endswith(f",{10 * GIB},{6 * GIB}")


def test_idle_hog_alerts_carry_their_fields(client: FlaskClient) -> None:
    hogs = [a for a in client.get("/api/v1/alerts").get_json()["alerts"] if a["kind"] == "idle_hog"]
    assert sorted((a["user"], a["gpu"], a["pid"]) for a in hogs) == [
        ("bob", 1, 21),
        ("carol", 1, 22),
    ]
    assert all(a["idle_seconds"] >= 300 and a["mem"] > 0 for a in hogs)


def test_unknown_owners_have_one_name(tmp_path: Path) -> None:
    host = host_info("gpu_c", [gpu(0, proc("", pid=5, uid=4242), proc("", pid=6, uid=-1),
                                   util=90)])
    app = make_app(tmp_path, [up("gpu_c", host)], interval=INTERVAL)
    start = time.time() - 100
    for k in range(10):
        get_state(app).recorder.on_round([up("gpu_c", host)], start + k * INTERVAL)
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    names = [u["user"] for u in c.get("/api/v1/users").get_json()["users"]]
    assert sorted(names) == ["uid 4242", "unknown"]  # one row each: live and history agree
