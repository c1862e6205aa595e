"""Shared helpers for the dashboard's tests (a fake poller, clusters, settings, login, the
``app`` and ``client`` fixtures), and the tests of the JSON conversion they rely on.

The fake poller holds real ``HostState`` objects, as the real poller does, so pages and API see
exactly what they would see in production.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from google.protobuf import json_format

from hmonitor._pb import hm_pb2
from hmonitor.web.api.jsonview import host_info_to_dict
from hmonitor.web.app import create_app
from hmonitor.web.hoststate import HostState
from hmonitor.web.settings import load_settings

TOKEN = "s3cret-token"
GIB = 1 << 30
NOW = time.time()
FAR_FUTURE = 4102444800  # 2100-01-01


def proc(user: str, *, pid: int = 100, uid: int = 1000, mem_gib: float = 4.0,
         expiration: int = 1, basename: str = "python") -> hm_pb2.ProcInfo:
    return hm_pb2.ProcInfo(pid=pid, uid=uid, username=user, basename=basename,
                           expiration=expiration, utilization=30, mem=int(mem_gib * GIB))


def gpu(index: int, *procs: hm_pb2.ProcInfo, util: int = 0, used_gib: float = 0.5,
        total_gib: float = 80.0, name: str = "NVIDIA A100-SXM4-80GB", temp: int = 40,
        fan: int = 0) -> hm_pb2.GPUInfo:
    return hm_pb2.GPUInfo(id=index, mem_used=int(used_gib * GIB), mem_total=int(total_gib * GIB),
                          utilization=util, temp=temp, name=name, fanspeed=fan, procs=procs)


def info(name: str, gpus: Iterable[hm_pb2.GPUInfo] = (), *, ip: str = "10.0.0.1",
         disks: Iterable[tuple[str, float]] = (("/", 0.5),), err: str = "") -> hm_pb2.HostInfo:
    return hm_pb2.HostInfo(
        id=name, ip=ip, hostname=f"{name}.lab", err=err, gpus=list(gpus),
        disks=[hm_pb2.DiskInfo(device=f"/dev/sd{i}", mount=mount, total=1000 * GIB,
                               used=int(1000 * GIB * fill))
               for i, (mount, fill) in enumerate(disks)],
    )


def up(name: str, host_info: hm_pb2.HostInfo, *, rtt_ms: float = 1.5) -> HostState:
    return HostState(name=name, address=f"{name}:9203", up=True, error=host_info.err and
                     f"agent: {host_info.err}", last_seen=NOW, rtt_ms=rtt_ms, info=host_info,
                     polled_at=NOW)


def down(name: str, error: str, *, last_seen: float | None = None,
         host_info: hm_pb2.HostInfo | None = None) -> HostState:
    return HostState(name=name, address=f"{name}:9203", up=False, error=error,
                     last_seen=last_seen, rtt_ms=None, info=host_info, polled_at=NOW)


class FakePoller:
    """The poller's interface over a fixed list of states; records servers handed to it."""

    def __init__(self, states: Iterable[HostState] = ()) -> None:
        self.states = list(states)
        self.servers: list[dict[str, str]] = []
        self.started = False
        self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def hosts(self) -> list[HostState]:
        return list(self.states)

    def host(self, name: str) -> HostState | None:
        return next((h for h in self.states if h.name == name), None)

    def set_servers(self, servers: Mapping[str, str]) -> None:
        self.servers.append(dict(servers))


def cluster(n_hosts: int = 100, n_gpus: int = 8, n_procs: int = 4) -> list[HostState]:
    """A big, busy cluster: every GPU shared by n_procs processes of different users."""
    states = []
    for h in range(n_hosts):
        name = f"gpu{h:03d}"
        gpus = [
            gpu(g, *(proc(f"user{(h + g + p) % 40}", pid=10_000 + g * 10 + p, uid=2000 + p,
                          mem_gib=9.5, expiration=FAR_FUTURE) for p in range(n_procs)),
                util=85, used_gib=40, total_gib=141, name="NVIDIA H200", temp=61)
            for g in range(n_gpus)
        ]
        states.append(up(name, info(name, gpus, ip=f"10.0.{h // 250}.{h % 250}",
                                    disks=(("/", 0.41), ("/data", 0.77), ("/scratch", 0.93)))))
    return states


def write_settings(folder: Path, servers: Mapping[str, str] | None = None,
                   **keys: Any) -> Path:
    """A settings.py in the spec's format (plus ``keys``), as an admin would write it."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"servers = {dict(servers or {'local': '127.0.0.1:9203'})!r}",
             f"token = {TOKEN!r}"]
    lines += [f"{key} = {value!r}" for key, value in keys.items()]
    path = folder / "settings.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_app(folder: Path, states: Iterable[HostState] = (), **keys: Any) -> Flask:
    """The real app on a real settings file and SQLite in ``folder``, fed by a FakePoller."""
    states = list(states)
    servers = {h.name: h.address for h in states} or None
    settings = load_settings(write_settings(folder, servers, **keys))
    app = create_app(settings, poller=FakePoller(states), start_poller=False)
    app.config["TESTING"] = True
    return app


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "page has no CSRF token"
    return found.group(1)


def login(client: FlaskClient, token: str = TOKEN, name: str = "") -> Any:
    page = client.get("/login")
    return client.post("/login", data={"token": token, "name": name,
                                       "csrf_token": csrf_of(page.text)})


def csrf_for(client: FlaskClient, path: str = "/notes") -> str:
    return csrf_of(client.get(path).text)


# --- fixtures: a test module imports these and defines ``states`` --------------------------------
# (pytest knows a fixture by its own name, here ``app`` and ``client``, wherever it is imported.)


@pytest.fixture(name="app")
def app_fixture(tmp_path: Path, states: list[HostState]) -> Flask:
    """The real app (``make_app``) in ``tmp_path``, over the test module's ``states``."""
    return make_app(tmp_path, states)


@pytest.fixture(name="client")
def client_fixture(app: Flask) -> FlaskClient:
    """A test client of ``app``, not logged in."""
    return app.test_client()


# --- the conversion the API and the live page rely on ---------------------------------------


def test_host_info_json_matches_protobuf_field_for_field() -> None:
    host = info("a", [gpu(0, proc("alice", expiration=1_900_000_000)), gpu(1)], err="x")
    ours = host_info_to_dict(host)
    theirs = json_format.MessageToDict(host, preserving_proto_field_name=True,
                                       always_print_fields_with_no_presence=True)

    def numbers(value: Any) -> Any:
        # MessageToDict writes 64-bit integers as strings; ours are JSON numbers.
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    assert numbers(theirs) == ours
    assert isinstance(ours["gpus"][0]["mem_total"], int)
    assert ours["gpus"][0]["procs"][0]["expiration"] == 1_900_000_000


def test_host_info_json_round_trips_through_protobuf() -> None:
    host = info("b", [gpu(3, proc("", uid=4242), util=7)], disks=(("/x", 0.95),))
    back = json_format.ParseDict(host_info_to_dict(host), hm_pb2.HostInfo())
    assert back == host
