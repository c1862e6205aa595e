"""PrometheusHistory against real PromQL stores on loopback: Prometheus and VictoriaMetrics,
each scraping a real agent (fake NVML, a real `sleep` holding GPU memory) every second."""

from __future__ import annotations

import http.server
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentproc import free_port, start_agent
from builders import host_info, up
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config
from webkit import BEARER, login, make_app
from werkzeug.test import TestResponse

from hmonitor._pb import hm_pb2, hm_pb2_grpc
from hmonitor.web.history.prometheus import HistoryUnavailable, PrometheusHistory
from hmonitor.web.history.service import HistoryService, start_history_server
from hmonitor.web.state import get_state

GIB = 1 << 30
HOST = "gpu-a"
UTIL = 37
USER = pwd.getpwuid(os.getuid()).pw_name
STORES = {"prometheus": "/usr/bin/prometheus", "victoria-metrics": "/usr/bin/victoria-metrics"}


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{what} never listened on {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def agent_addr(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> Iterator[str]:
    work = tmp_path_factory.mktemp("agent")
    sleeper = subprocess.Popen(["sleep", "600"])
    config = work / "gpus.txt"
    write_config(config, [FakeGpu(name="NVIDIA A100-SXM4-80GB", util=UTIL, temp=51,
                                  mem_total=80 * GIB, mem_used=21 * GIB,
                                  procs=[FakeProc(sleeper.pid, 20 * GIB)])])
    port = free_port()
    agent = start_agent(work, ["--cache-ttl", "0.2", "--metrics-addr", f"127.0.0.1:{port}"],
                        env=nvml_env(fake_nvml_lib, config))
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and agent.proc.poll() is None, agent.output()
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        agent.stop()
        sleeper.kill()
        sleeper.wait()


def _scrape_config(path: Path, target: str) -> Path:
    path.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: hmonitor\n    static_configs:\n"
        f"      - targets: ['{target}']\n        labels: {{host: {HOST}}}\n"
    )
    return path


@pytest.fixture(scope="module", params=list(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              agent_addr: str) -> Iterator[str]:
    name = request.param
    binary = STORES[name]
    if not shutil.which(binary):
        pytest.skip(f"{binary} is not installed")
    work = tmp_path_factory.mktemp(name)
    config = _scrape_config(work / "scrape.yml", agent_addr)
    port = free_port()
    if name == "prometheus":
        args = [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}"]
    else:
        args = [binary, f"-storageDataPath={work / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
                f"-promscrape.config={config}", "-promscrape.config.strictParse=false",
                "-search.latencyOffset=0s", "-search.disableCache"]
    log = work / "log.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, name, log)
        url = f"http://127.0.0.1:{port}"
        _wait_scrapes(url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_scrapes(url: str, log: Path, count: int = 5) -> None:
    """Until the store has `count` samples of the agent's utilization (and of `up`)."""
    history = PrometheusHistory(url, timeout=2)
    sel = f'hmonitor_gpu_utilization_ratio{{job="hmonitor", host="{HOST}"}}'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            rows = history.query(f"count_over_time({sel}[1m])", time.time())
        except HistoryUnavailable:
            rows = []
        if rows and rows[0][1] >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"no {count} scrapes landed in {url}:\n{log.read_text()[-3000:]}")


def test_series_is_the_agents_utilization(store_url: str) -> None:
    history = PrometheusHistory(store_url, usage_step=1)
    now = time.time()
    t, v = history.series(HOST, 0, "util", now - 30, now, 10)
    assert v and all(x == pytest.approx(UTIL) for x in v)
    assert all(now - 30 <= x <= now for x in t) and t == sorted(t)
    _, peak = history.series(HOST, 0, "util", now - 30, now, 10, agg="max")
    assert peak and peak[-1] == pytest.approx(UTIL)
    _, mem = history.series(HOST, 0, "mem_total", now - 30, now, 5)
    assert mem[-1] == 80 * GIB
    _, temp = history.series(HOST, 0, "temp", now - 30, now, 5)
    assert temp[-1] == 51
    assert history.series(HOST, 7, "util", now - 30, now, 10) == ([], [])
    with pytest.raises(ValueError, match="metric"):
        history.series(HOST, 0, "power", now - 30, now)


def test_sparklines_gpus_and_processes(store_url: str) -> None:
    history = PrometheusHistory(store_url)
    now = time.time()
    lines = history.sparklines(60, now, 12)
    assert set(lines) == {(HOST, 0)}
    util, mem = lines[HOST, 0]["util"], lines[HOST, 0]["mem"]
    assert len(util) == len(mem) == 12
    assert util[-1] == pytest.approx(UTIL) and mem[-1] == pytest.approx(21 / 80)
    assert history.sparklines(60, now, 12, hosts=["elsewhere"]) == {}
    assert set(history.sparklines(60, now, 12, hosts=[HOST])) == {(HOST, 0)}
    assert history.gpus() == [(HOST, 0, "NVIDIA A100-SXM4-80GB")]
    t, users = history.process_series(HOST, 0, now - 30, now, 10)
    assert t and set(users) == {USER} and users[USER][-1] == 20 * GIB


def test_usage_uptime_and_hogs(store_url: str) -> None:
    history = PrometheusHistory(store_url, usage_step=1)
    now = time.time()
    usage = history.user_usage(now, [3600.0])
    assert set(usage) == {USER}
    totals = usage[USER][3600.0]
    assert 0 < totals.gpu_hours < 0.1
    assert totals.gpu_mem_gib_hours == pytest.approx(totals.gpu_hours * 20, rel=0.2)
    uptime = history.host_uptime(HOST, now - 5, now)
    assert uptime == pytest.approx(1.0)
    assert history.host_uptime("elsewhere", now - 5, now) is None
    assert history.job_usage(now, 86400) == []  # the agent's process is in no Slurm job
    hogs = history.idle_hogs(now, util_threshold=50, min_seconds=3)
    assert [(h.host, h.gpu, h.user, h.mem, h.pid) for h in hogs] == [(HOST, 0, USER, 20 * GIB, 0)]
    assert history.idle_hogs(now, util_threshold=5, min_seconds=3) == []


def test_bad_query_is_history_unavailable(store_url: str) -> None:
    with pytest.raises(HistoryUnavailable, match="Prometheus at"):
        PrometheusHistory(store_url).query("sum(", time.time())


def test_unreachable_store_fails_within_the_timeout() -> None:
    port = free_port()  # nothing listens there
    history = PrometheusHistory(f"http://user:pw@127.0.0.1:{port}", timeout=1)
    start = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="cannot be reached") as err:
        history.gpus()
    assert time.monotonic() - start < 2 and "pw" not in str(err.value)


def test_silent_store_times_out() -> None:
    with socket.socket() as server:  # accepts, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        history = PrometheusHistory(f"http://127.0.0.1:{port}", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(HistoryUnavailable, match=r"did not answer within 0\.5 s"):
            history.series(HOST, 0, "util", 0, 60)
        assert time.monotonic() - start < 2


def test_credentials_are_sent() -> None:
    seen: list[str] = []
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert PrometheusHistory(url, bearer_token="tok").gpus() == []
        assert PrometheusHistory(url, username="ann", password="pw").gpus() == []
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer tok", "Basic YW5uOnB3"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=1)


def _json(resp: TestResponse) -> Any:
    body = resp.get_json()
    assert body is not None, resp.text
    return body


def test_the_dashboard_reads_its_history_from_the_store(store_url: str, tmp_path: Path) -> None:
    app = make_app(tmp_path, history_backend="prometheus", prometheus_url=store_url,
                   prometheus_timeout=3)
    client = app.test_client()
    try:
        resp = client.get(f"/api/v1/history?host={HOST}&gpu=0&metric=util&window=30&points=6",
                          headers=BEARER)
        assert resp.status_code == 200, resp.text
        assert _json(resp)["v"] and all(v == pytest.approx(UTIL) for v in _json(resp)["v"])
        resp = client.get("/api/v1/sparklines?window=1h&points=12", headers=BEARER)
        assert resp.status_code == 200 and f"{HOST}/0" in _json(resp)["gpus"]
        resp = client.get(f"/api/v1/history/processes?host={HOST}&gpu=0&window=30",
                          headers=BEARER)
        assert resp.status_code == 200 and USER in _json(resp)["users"]
        assert get_state(app).storage_faults() == {}
    finally:
        get_state(app).close()


def test_an_unreachable_store_leaves_the_pages_working(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = make_app(tmp_path, history_backend="prometheus", prometheus_url=url,
                   prometheus_timeout=1)
    client = app.test_client()
    try:
        resp = client.get("/api/v1/history?host=local&gpu=0&metric=util&window=1h",
                          headers=BEARER)
        assert resp.status_code == 200 and _json(resp)["t"] == _json(resp)["v"] == []
        resp = client.get("/api/v1/sparklines?window=1h", headers=BEARER)
        assert resp.status_code == 200 and _json(resp)["gpus"] == {}
        faults = get_state(app).storage_faults()
        assert list(faults) == [url] and "history unavailable" in faults[url]
        login(client)
        for page in ("/", "/users"):
            resp = client.get(page)
            assert resp.status_code == 200, (page, resp.text[-2000:])
        assert "history unavailable" in client.get("/").text
    finally:
        get_state(app).close()


def test_get_history_grpc_answers_from_the_store(store_url: str, tmp_path: Path) -> None:
    """The spec's gpu.History/GetHistory, served over real gRPC on loopback from the dashboard's
    backend (history_backend = "prometheus"), gives the agent's utilization."""
    app = make_app(tmp_path, [up(HOST, host_info(HOST, []))], history_backend="prometheus",
                   prometheus_url=store_url, prometheus_timeout=3)
    state = get_state(app)
    service = HistoryService(state.backend, lambda: set(state.settings.servers))
    server, port = start_history_server("127.0.0.1:0", service)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = hm_pb2_grpc.HistoryStub(channel)
            since = int(time.time()) - 30
            resp = stub.GetHistory(hm_pb2.HistReq(id=f"{HOST}_0", timestamp=since, type="util"),
                                   timeout=10)
            assert resp.v and all(v == UTIL for v in resp.v)
            assert list(resp.t) == sorted(resp.t) and resp.t[0] >= since - 1
            resp = stub.GetHistory(hm_pb2.HistReq(id=f"{HOST}_0", timestamp=since * 10**9,
                                                  type="mem"), timeout=10)
            assert resp.v and resp.v[-1] == 21 * GIB
            with pytest.raises(grpc.RpcError) as err:
                stub.GetHistory(hm_pb2.HistReq(id="elsewhere_0", timestamp=since, type="util"),
                                timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert state.storage_faults() == {}
    finally:
        server.stop(0)
        state.close()
