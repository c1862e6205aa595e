"""The dashboard's /metrics: per-host up, poll duration, last seen and error kind; every up
host's GPU, user and disk families with a ``host`` label; the gate; promtool's lint; the cost."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from builders import GIB, NOW, FakePoller, cluster, down, gpu, host_info, lost_gpu, proc, up
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from webkit import BEARER, login, make_app

from hmonitor._pb import hm_pb2
from hmonitor.metricfamilies import Family, HostFamilies, exposition
from hmonitor.rpcwords import describe_rpc_error
from hmonitor.web.api import metrics as metrics_api
from hmonitor.web.api.metrics import CONTENT_TYPE, ERROR_KINDS, error_kind, render
from hmonitor.web.hoststate import HostState, HostStateLike
from hmonitor.web.state import get_state

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def of(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def lab(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def node1() -> hm_pb2.HostInfo:
    g0 = gpu(0, proc("alice", pid=100, mem_gib=4), proc("alice", pid=101, mem_gib=2),
             proc("bob", pid=102, mem_gib=1), util=37, used_gib=8, total_gib=80, temp=51)
    g0.uuid, g0.power_mw = "GPU-aaaa", 123_456
    info = host_info("node1", [g0, lost_gpu(1, "GPU is lost")],
                     disks=[hm_pb2.DiskInfo(device="/dev/md0", mount="/data", used=600 * GIB,
                                            total=1000 * GIB)])
    info.load1 = 2.5
    return info


def states() -> list[HostState]:
    return [
        up("node1", node1(), rtt_ms=2.5),
        # down, with the last good snapshot kept: its GPUs are stale, so no series
        down("node2", "connection refused (no agent listening on that port?)",
             last_seen=NOW - 60, info=host_info("node2", [gpu(0, proc("carol"))])),
        down("node3", "no answer within 3 s (connected, but the agent did not reply)"),
        up("node4", host_info("node4", [], disks=(), err="NVML not found"), rtt_ms=1.0),
    ]


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, states())


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def scrape(client: FlaskClient) -> str:
    resp = client.get("/metrics", headers=BEARER)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == CONTENT_TYPE
    return resp.text


def test_host_families_exact(client: FlaskClient) -> None:
    found = samples(scrape(client))
    assert of(found, "hmonitor_host_up") == {
        lab(host="node1"): 1, lab(host="node2"): 0, lab(host="node3"): 0, lab(host="node4"): 1}
    assert of(found, "hmonitor_host_poll_duration_seconds") == {
        lab(host="node1"): 0.0025, lab(host="node4"): 0.001}
    assert of(found, "hmonitor_host_last_seen_timestamp_seconds") == {
        lab(host="node1"): pytest.approx(NOW), lab(host="node2"): pytest.approx(NOW - 60),
        lab(host="node4"): pytest.approx(NOW)}
    assert of(found, "hmonitor_host_error") == {
        lab(host="node2", kind="refused"): 1, lab(host="node3", kind="timeout"): 1,
        lab(host="node4", kind="agent"): 1}


def test_gpu_user_and_disk_families_of_up_hosts_with_a_host_label(client: FlaskClient) -> None:
    found = samples(scrape(client))
    own = {"host": "node1", "gpu": "0", "uuid": "GPU-aaaa", "model": "NVIDIA A100-SXM4-80GB"}
    assert of(found, "hmonitor_gpu_up") == {
        lab(host="node1", gpu="0", error=""): 1,
        lab(host="node1", gpu="1", error="GPU is lost"): 0}
    assert of(found, "hmonitor_gpu_utilization_ratio") == {lab(**own): 0.37}
    assert of(found, "hmonitor_gpu_memory_used_bytes") == {lab(**own): 8 * GIB}
    assert of(found, "hmonitor_gpu_memory_total_bytes") == {lab(**own): 80 * GIB}
    assert of(found, "hmonitor_gpu_temperature_celsius") == {lab(**own): 51}
    assert of(found, "hmonitor_gpu_power_watts") == {lab(**own): pytest.approx(123.456)}
    assert of(found, "hmonitor_gpu_user_memory_bytes") == {
        lab(host="node1", gpu="0", user="alice"): 6 * GIB,
        lab(host="node1", gpu="0", user="bob"): 1 * GIB}
    assert of(found, "hmonitor_gpu_user_processes") == {
        lab(host="node1", gpu="0", user="alice"): 2, lab(host="node1", gpu="0", user="bob"): 1}
    assert of(found, "hmonitor_disk_used_bytes") == {
        lab(host="node1", mount="/data", device="/dev/md0"): 600 * GIB}
    assert of(found, "hmonitor_disk_total_bytes") == {
        lab(host="node1", mount="/data", device="/dev/md0"): 1000 * GIB}
    assert of(found, "hmonitor_host_load1") == {lab(host="node1"): 2.5}


def test_a_down_host_has_no_gpu_series_and_there_is_no_dcgm_family(client: FlaskClient) -> None:
    text = scrape(client)
    found = samples(text)
    assert not [k for k in found if dict(k[1]).get("host") == "node2"
                and not k[0].startswith("hmonitor_host_")]
    assert "DCGM_" not in text and "hostname=" not in text
    # the agent's own families stay the agent's
    assert "hmonitor_source_success" not in text and "hmonitor_build" not in text
    assert "hmonitor_process_gpu_memory_bytes" not in text  # per-PID: the agent's opt-in only


@pytest.mark.parametrize(("code", "details", "kind"), [
    (grpc.StatusCode.UNAVAILABLE, "failed to connect; last error: Connection refused", "refused"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "", "timeout"),
    (grpc.StatusCode.UNAVAILABLE, "last error: Connection timed out", "timeout"),
    (grpc.StatusCode.PERMISSION_DENIED, "not allowed", "allow_list"),
    (grpc.StatusCode.UNAUTHENTICATED, "bad token", "agent"),
    (grpc.StatusCode.UNAVAILABLE, "DNS resolution failed", "other"),
    (grpc.StatusCode.UNIMPLEMENTED, "", "other"),
])
def test_error_kinds_follow_the_pollers_words(code: grpc.StatusCode, details: str,
                                              kind: str) -> None:
    assert error_kind(describe_rpc_error(code, details, timeout=3.0)) == kind
    assert kind in ERROR_KINDS


def test_error_kind_of_the_agents_own_error_and_anything_else() -> None:
    assert error_kind("agent: NVML not found") == "agent"
    assert error_kind("poller error: RuntimeError: boom") == "other"
    assert error_kind("not polled yet") == "other"


def test_metrics_need_a_session_or_the_bearer_token(client: FlaskClient) -> None:
    # As the API: 401, not the login page (tests/unit/test_web_gate.py walks every route)
    bare = client.get("/metrics")
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert client.get("/metrics", headers=BEARER).status_code == 200
    login(client)
    assert client.get("/metrics").status_code == 200


def test_wrong_tokens_on_metrics_count_against_the_limit(client: FlaskClient) -> None:
    for _ in range(10):
        assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/metrics", headers=BEARER).status_code == 429
    assert client.get("/api/v1/hosts", headers=BEARER).status_code == 429
    assert client.get("/metrics", headers=BEARER,
                      environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 200


def test_the_text_is_made_once_per_round(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        poller = get_state().poller
    assert isinstance(poller, FakePoller)
    cache = app.extensions["hmonitor_metrics_text"]
    first = client.get("/metrics", headers=BEARER).data
    assert cache.of(poller.hosts()) is cache.of(poller.hosts())  # same states: same bytes object
    assert client.get("/metrics", headers=BEARER).data == first
    poller.states = [up("node9", host_info("node9"))]  # a new round: new states
    found = samples(client.get("/metrics", headers=BEARER).text)
    assert of(found, "hmonitor_host_up") == {lab(host="node9"): 1}


def test_after_a_round_the_text_is_ready_for_the_scrapers_that_come(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []

    def counted(states: Sequence[HostStateLike], made_in: float | None = None) -> bytes:
        made.append(len(states))
        return render(states, made_in)

    monkeypatch.setattr(metrics_api, "render", counted)
    with app.app_context():
        state = get_state()
    poller = state.poller
    assert isinstance(poller, FakePoller)

    def a_round(*hosts: HostState) -> None:
        poller.states = list(hosts)
        for listener in state.round_listeners:
            listener(poller.hosts(), NOW)

    a_round(up("node9", host_info("node9")))
    assert made == []  # nobody scrapes: no work after rounds
    client.get("/metrics", headers=BEARER)
    assert made == [1]
    a_round(up("node9", host_info("node9")), up("node10", host_info("node10")))
    assert made == [1, 2]  # made after the round, before anyone asked
    found = samples(client.get("/metrics", headers=BEARER).text)
    assert made == [1, 2]  # the scrape took it as it was
    assert set(of(found, "hmonitor_host_up")) == {lab(host="node9"), lab(host="node10")}
    took = of(found, "hmonitor_dashboard_metrics_render_seconds")
    assert list(took) == [lab()] and 0 < took[lab()] < 60


def test_text_matches_prometheus_clients_and_escapes_labels() -> None:
    odd = host_info("odd", [gpu(0, proc('we"ird\\user\nx', pid=7), proc("ünï", pid=8))])
    fams = HostFamilies(dcgm=False, extra_labels=["host"], text=True)
    plain = HostFamilies(dcgm=False, extra_labels=["host"])
    for f in (fams, plain):
        f.add(odd, ("a \"host\"",))
        f.add(node1(), ("node1",))
    ours = samples(exposition(fams.filled()))
    theirs = {(s.name, frozenset(s.labels.items())): s.value
              for m in plain.metrics() for s in m.samples}
    assert ours == theirs
    assert ('hmonitor_gpu_user_processes{host="a \\"host\\"",gpu="0",user="we\\"ird\\\\user\\nx"}'
            " 1\n") in exposition(fams.filled())


def test_numbers_as_prometheus_reads_them() -> None:
    f = Family("x", "a\\b\nc", ["k"])
    for k, v in (("a", 1.5e9), ("b", float("inf")), ("c", float("-inf")), ("d", 3)):
        f.add_metric((k,), v)
    f.add_metric(("e",), float("nan"))
    text = exposition([f])
    assert text.startswith("# HELP x a\\\\b\\nc\n# TYPE x gauge\n")
    assert 'x{k="b"} +Inf\nx{k="c"} -Inf\nx{k="d"} 3\nx{k="e"} NaN\n' in text
    parsed = samples(text)
    assert parsed[("x", lab(k="a"))] == 1.5e9
    # what prometheus_client makes of the same family
    g = GaugeMetricFamily("x", "doc", labels=["k"])
    g.add_metric(["a"], 1.5e9)
    assert g.samples[0].value == parsed[("x", lab(k="a"))]


def test_promtool_lints_the_dashboards_metrics_clean(client: FlaskClient) -> None:
    if not shutil.which(PROMTOOL):
        pytest.skip("promtool not installed (Debian package prometheus)")
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape(client),
                          capture_output=True, text=True, check=False, timeout=30)
    assert (done.returncode, (done.stdout + done.stderr).strip()) == (0, "")


def test_a_big_cluster_has_every_gpu_once() -> None:
    # How fast it renders is bench/metrics.py's to measure (target 500 ms at 1,000 hosts).
    text = render(cluster(200, 8, 4))
    assert text.count(b"\nhmonitor_gpu_up{") == 1600


def test_a_scraper_accepting_gzip_gets_it_compressed_once_per_round(
    app: Flask, client: FlaskClient,
) -> None:
    plain = client.get("/metrics", headers=BEARER)
    packed = client.get("/metrics", headers={**BEARER, "Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    assert gzip.decompress(packed.data) == plain.data
    again = client.get("/metrics", headers={**BEARER, "Accept-Encoding": "gzip"})
    assert again.data is not None and again.data == packed.data


def test_slurm_jobs_have_series_on_the_gpus_running_one() -> None:
    info = host_info("n", [
        gpu(0, proc("alice", pid=1, mem_gib=10, job=101), proc("alice", pid=2, mem_gib=2),
            proc("alice", pid=3, mem_gib=1, job=101), proc("bob", pid=4, mem_gib=6, job=202)),
        gpu(1, proc("carol", pid=5, mem_gib=4)),  # no job on this GPU: no job series
    ])
    fams = HostFamilies(dcgm=False, extra_labels=["host"], text=True)
    fams.add(info, ("n",))
    found = of(samples(exposition(fams.filled())), "hmonitor_gpu_job_memory_bytes")
    assert found == {
        lab(host="n", gpu="0", slurm_job="101", user="alice"): 11 * GIB,
        lab(host="n", gpu="0", slurm_job="", user="alice"): 2 * GIB,  # hers outside the job
        lab(host="n", gpu="0", slurm_job="202", user="bob"): 6 * GIB,
    }
