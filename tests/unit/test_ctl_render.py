"""hmonitor-ctl's output, from a dashboard answer written out as JSON (the shape of
docs/api.md): the model read from it, the text people see, the --json shapes scripts read,
and top's screen."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest

from hmonitor.ctl.model import BadAnswer, Cluster, host_from_api
from hmonitor.ctl.render import (
    Style,
    env_lines,
    free_lines,
    sparkline,
    status_lines,
    use_color,
    users_lines,
)
from hmonitor.ctl.select import Placement, free_gpus, pick_host
from hmonitor.ctl.shapes import free_json, placement_json, status_json, user_json, users_from_hosts
from hmonitor.ctl.top import View, frame

GIB = 1 << 30
NOW = 1_800_000_000.0

HOSTS_JSON = """
{"hosts": [
 {"name": "gpu01", "address": "10.0.0.11:9203", "up": true, "error": "", "last_seen": 1799999990.0,
  "rtt_ms": 1.4, "polled_at": 1799999990.0, "truncated": [],
  "info": {"id": "gpu01", "hostname": "gpu01.lab", "ip": "10.0.0.11", "err": "", "disks": [],
   "gpus": [
    {"id": 0, "mem_used": 66571993088, "mem_total": 85899345920, "utilization": 97, "temp": 71,
     "name": "NVIDIA A100-SXM4-80GB", "fanspeed": 0, "uuid": "GPU-a0", "mig_enabled": false,
     "mig": [],
     "procs": [{"pid": 1201, "uid": 1000, "username": "alice", "basename": "python",
                "expiration": 1800432000, "utilization": 40, "mem": 66035122176,
                "owner": "alice", "cmdline": "", "start_time": 0, "container": null,
                "job": null, "mig": null}]},
    {"id": 1, "mem_used": 536870912, "mem_total": 85899345920, "utilization": 0, "temp": 35,
     "name": "NVIDIA A100-SXM4-80GB", "fanspeed": 0, "uuid": "GPU-a1", "mig_enabled": null,
     "mig": [], "procs": []},
    {"id": 2, "mem_used": 0, "mem_total": 85899345920, "utilization": 0, "temp": 33,
     "name": "NVIDIA A100-SXM4-80GB", "fanspeed": 0, "uuid": "GPU-a2", "mig_enabled": true,
     "mig": [], "procs": []},
    {"id": 3, "mem_used": 0, "mem_total": 0, "utilization": 0, "temp": 0,
     "name": "GPU lost: GPU is lost", "fanspeed": 0, "uuid": "", "mig_enabled": null,
     "mig": [], "procs": []}]}},
 {"name": "gpu02", "address": "10.0.0.12:9203", "up": true, "error": "", "last_seen": 1799999990.0,
  "info": {"id": "gpu02", "hostname": "gpu02", "gpus": [
    {"id": 0, "mem_used": 0, "mem_total": 25769803776, "utilization": 2, "temp": 30,
     "name": "NVIDIA GeForce RTX 4090", "procs": []},
    {"id": 1, "mem_used": 0, "mem_total": 25769803776, "utilization": 0, "temp": 30,
     "name": "NVIDIA GeForce RTX 4090",
     "procs": [{"pid": 7, "uid": 100999, "username": "", "basename": "sh", "expiration": 0,
                "utilization": 0, "mem": 1048576, "owner": "container web (docker)"}]}]}},
 {"name": "gpu03", "address": "10.0.0.13:9203", "up": false,
  "error": "connection refused (no agent listening on that port?)", "last_seen": 1799996400.0,
  "info": {"id": "gpu03", "hostname": "gpu03", "gpus": [
    {"id": 0, "mem_used": 0, "mem_total": 85899345920, "utilization": 0, "temp": 30,
     "name": "NVIDIA A100-SXM4-80GB", "procs": []}]}}
], "generated_at": 1800000000.0}
"""


@pytest.fixture
def cluster() -> Cluster:
    hosts = tuple(host_from_api(h) for h in json.loads(HOSTS_JSON)["hosts"])
    return Cluster(hosts, "http://monitor:5000", ())


def test_the_dashboards_json_read(cluster: Cluster) -> None:
    a, b, down = cluster.hosts
    assert (a.name, a.hostname, a.up, len(a.gpus)) == ("gpu01", "gpu01.lab", True, 4)
    assert a.gpus[0].procs[0].owner == "alice" and a.gpus[0].owners == ["alice"]
    assert a.gpus[2].mig_enabled is True and a.gpus[3].lost
    assert b.gpus[1].owners == ["container web (docker)"]
    assert not down.up and down.last_seen == 1799996400.0 and len(down.gpus) == 1


@pytest.mark.parametrize("bad", [
    {"address": "x"}, {"name": "x", "up": "yes"}, {"name": "x", "info": {"gpus": [1]}},
    {"name": "x", "info": {"gpus": [{"id": "0"}]}}, {"name": "x", "info": {"gpus": [{"id": True}]}},
])
def test_an_answer_that_is_not_the_dashboards_is_refused(bad: object) -> None:
    with pytest.raises(BadAnswer, match="unexpected answer from the dashboard"):
        host_from_api(bad)


def test_status_text(cluster: Cluster) -> None:
    lines = status_lines(cluster, Style(False), now=NOW)
    text = "\n".join(lines)
    assert "\x1b" not in text
    assert lines[0] == ("http://monitor:5000: 3 hosts, 2 up, 1 down; GPUs: 2 free, 2 busy, "
                        "1 lost, 1 in MIG mode")
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert rows["gpu01"][:5] == ["gpu01", "up", "4", "1", "1"]
    assert "1 lost, 1 MIG" in lines[3]
    assert rows["gpu02"][:5] == ["gpu02", "up", "2", "1", "1"]
    assert rows["gpu03"][:2] == ["gpu03", "DOWN"]
    assert lines[5].endswith("connection refused (no agent listening on that port?) "
                             "(last seen 1 h ago)")
    assert lines[-1] == "no alerts"


def test_colour_only_on_a_terminal_without_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_color(Tty(), "auto", {"TERM": "xterm"})
    assert not use_color(Tty(), "auto", {"TERM": "xterm", "NO_COLOR": "1"})
    assert use_color(Tty(), "auto", {"TERM": "xterm", "NO_COLOR": ""})  # set but empty: ignored
    assert not use_color(Tty(), "auto", {"TERM": "dumb"})
    assert not use_color(io.StringIO(), "auto", {"TERM": "xterm"})
    assert use_color(io.StringIO(), "always", {"NO_COLOR": "1"})
    assert not use_color(Tty(), "never", {})
    assert Style(True)("red", "DOWN") == "\x1b[31mDOWN\x1b[0m"


def test_coloured_tables_keep_their_columns(cluster: Cluster) -> None:
    plain = status_lines(cluster, Style(False), now=NOW)
    coloured = status_lines(cluster, Style(True), now=NOW)
    strip = [line.replace("\x1b[0m", "").replace("\x1b[1m", "").replace("\x1b[2m", "")
             .replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[33m", "")
             for line in coloured]
    assert strip == plain and coloured != plain


def test_free_lines_and_json(cluster: Cluster) -> None:
    picks = free_gpus(cluster.hosts)
    assert free_lines(picks, False, Style(False)) == ["gpu01:1", "gpu02:0"]
    long = free_lines(picks, True, Style(False))
    assert long[0].split() == ["GPU", "MODEL", "FREE", "TOTAL", "UTIL", "TEMP"]
    assert long[1].split()[:5] == ["gpu01:1", "NVIDIA", "A100-SXM4-80GB", "80", "GiB"]
    assert free_json(picks) == [
        {"host": "gpu01", "gpu": 1, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-a1",
         "mem_free_bytes": 85899345920 - 536870912, "mem_used_bytes": 536870912,
         "mem_total_bytes": 85899345920, "utilization": 0, "temp": 35},
        {"host": "gpu02", "gpu": 0, "name": "NVIDIA GeForce RTX 4090", "uuid": "",
         "mem_free_bytes": 25769803776, "mem_used_bytes": 0, "mem_total_bytes": 25769803776,
         "utilization": 2, "temp": 30},
    ]


def test_env_lines_eval_in_a_real_shell(cluster: Cluster) -> None:
    p = pick_host(cluster.hosts, 1)
    assert p is not None
    odd = Placement(p.host.__class__(name="gpu 01'; rm -rf ~", address="", up=True), p.gpus)
    lines = env_lines(odd)
    assert lines[1:] == ["export CUDA_DEVICE_ORDER=PCI_BUS_ID", "export CUDA_VISIBLE_DEVICES=1"]
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; bash -c \'echo "$HMONITOR_HOST|$CUDA_VISIBLE_DEVICES"\'',
         "-", "\n".join(lines)], capture_output=True, text=True, check=True)
    assert shell.stdout == "gpu 01'; rm -rf ~|1\n"


def test_status_json_shape(cluster: Cluster) -> None:
    s = status_json(cluster)
    assert set(s) == {"source", "hosts_up", "hosts_down", "gpus", "hosts", "alerts"}
    assert s["gpus"] == {"total": 6, "free": 2, "busy": 2, "lost": 1, "mig": 1}
    assert s["hosts"][2] == {"name": "gpu03", "address": "10.0.0.13:9203", "hostname": "gpu03",
                             "up": False, "last_seen": 1799996400.0, "gpus": None,
                             "error": "connection refused (no agent listening on that port?)"}
    assert s["alerts"] == []


def test_placement_json(cluster: Cluster) -> None:
    p = pick_host(cluster.hosts, 1)
    assert p is not None
    doc = placement_json(p, 12.34)
    assert (doc["host"], doc["cuda_visible_devices"], doc["waited_seconds"]) == ("gpu01", "1",
                                                                                12.3)
    assert [g["gpu"] for g in doc["gpus"]] == [1]


def test_users_from_the_dashboard_and_from_hosts(cluster: Cluster) -> None:
    api_user = {"user": "alice", "expiration": NOW + 86400, "gpus_now": [
        {"host": "gpu01", "gpu": 0, "mem": 8 * GIB, "pid": 1, "basename": "python"}],
        "usage": {"1d": {"gpu_hours": 7.94, "gpu_mem_gib_hours": 1.0},
                  "7d": {"gpu_hours": 123.4}, "30d": {"gpu_hours": 500.0}},
        "idle_hogs": [{"host": "gpu01", "gpu": 0, "pid": 1, "mem": 8 * GIB,
                       "idle_seconds": 9000}]}
    u = user_json(api_user, now=NOW)
    assert u["expiry_state"] == "soon" and u["gpu_hours"] == {"1d": 7.94, "7d": 123.4,
                                                              "30d": 500.0}
    assert u["gpus_now"] == [{"host": "gpu01", "gpu": 0, "pid": 1, "basename": "python",
                              "mem_bytes": 8 * GIB}]
    lines = users_lines([u], Style(False), now=NOW)
    assert lines[0].split() == ["USER", "EXPIRES", "GPUS", "MEM", "NOW", "GPU-H", "1D", "7D",
                                "30D", "IDLE", "HOLDS"]
    assert lines[1].split() == ["alice", "2027-01-16", "1", "8.0", "GiB", "7.9", "123", "500",
                                "1", "gpu01:0"]

    direct = [user_json(x, now=NOW) for x in users_from_hosts(cluster.hosts)]
    assert [x["user"] for x in direct] == ["alice", "container web (docker)"]  # not gpu03's
    assert direct[0]["gpu_hours"] is None and direct[0]["idle_hogs"] is None
    lines = users_lines(direct, Style(False), now=NOW)
    assert "GPU-H" not in lines[0]
    assert lines[2].split()[-1] == "gpu02:1" and "unknown" in lines[2]


def test_sparklines() -> None:
    assert sparkline([0, 50, 100], 0, 100) == "▁▅█"
    assert sparkline([0, None, 100, float("nan")], 0, 100) == "▁ █ "
    assert sparkline([3, 3, 3]) == "▁▁▁"
    assert sparkline([None, None]) == "  "
    assert sparkline([0, 100], 0, 100, ascii_only=True) == "_#"
    assert sparkline([150, -5], 0, 100) == "█▁"  # clipped, not an IndexError


def test_top_frame_sorts_filters_and_lists_down_hosts(cluster: Cluster) -> None:
    def rows(view: View) -> list[str]:
        lines = frame(cluster, view, 200, now=NOW)
        return [" ".join(t.split()[:2]) for t, _ in lines[3:] if t.startswith("gpu0")
                and "DOWN" not in t]

    assert rows(View()) == ["gpu01 0", "gpu01 1", "gpu01 2", "gpu01 3", "gpu02 0", "gpu02 1"]
    assert rows(View(sort="util"))[:2] == ["gpu01 0", "gpu02 0"]
    assert rows(View(sort="mem"))[:2] == ["gpu01 0", "gpu01 1"]  # 62 GiB, 0.5 GiB used
    assert rows(View(sort="user"))[:2] == ["gpu01 0", "gpu02 1"]  # alice, container...
    assert rows(View(filter="4090")) == ["gpu02 0", "gpu02 1"]
    assert rows(View(filter="ALICE")) == ["gpu01 0"]
    assert rows(View(free_only=True)) == ["gpu01 1", "gpu02 0"]
    lines = frame(cluster, View(filter="nobody"), 200, now=NOW)
    texts = [t for t, _ in lines]
    assert "(no GPU matches)" in texts and "filter: nobody" in texts[1]
    assert any(t.startswith("gpu03: DOWN, connection refused") for t in texts)
    assert all(len(t) <= 40 for t, _ in frame(cluster, View(), 40, now=NOW))


def test_top_frame_before_data_and_after_an_error(cluster: Cluster) -> None:
    assert frame(None, View(), 80)[0][0] == "hmonitor-ctl top: loading..."
    assert frame(None, View(), 80, error="connection refused")[0] == (
        "hmonitor-ctl top: connection refused", "red")
    kept = frame(cluster, View(), 200, error="the dashboard did not answer", now=time.time())
    assert "(the dashboard did not answer)" in kept[1][0] and kept[1][1] == "red"
