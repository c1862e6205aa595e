"""PrometheusHistory against real PromQL stores on loopback: Prometheus and VictoriaMetrics,
each scraping a real agent (fake NVML, a real `sleep` holding GPU memory) every second."""

from __future__ import annotations

import contextlib
import http.server
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentproc import free_port, start_agent
from builders import gpu, host_info, proc, up
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config
from promkit import running
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
    with running(args, log) as proc:
        _wait_port(port, proc, name, log)
        url = f"http://127.0.0.1:{port}"
        _wait_scrapes(url, log)
        yield url


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
    uptime = history.host_uptime(HOST, now - 10, now)
    assert uptime is not None and 0.7 <= uptime <= 1  # a scrape may time out on a busy machine
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
    history = PrometheusHistory(f"http://127.0.0.1:{port}", timeout=1, username="ann",
                                password="s3cret")
    start = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="Connection refused") as err:
        history.gpus()
    assert time.monotonic() - start < 2 and "s3cret" not in str(err.value)
    assert err.value.unreachable


def test_names_outside_the_bmp_are_valid_promql(store_url: str) -> None:
    history = PrometheusHistory(store_url)
    now = time.time()
    assert history.series("gpu-\U0001f600\"x", 0, "util", now - 30, now) == ([], [])
    assert history.sparklines(60, now, 6, hosts=["gpu-\U0001f600"]) == {}


@contextlib.contextmanager
def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def answer(self, code: int, body: bytes, **headers: str) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}',
     "not as the API documents it"),
    (b'{"status":"success","data":{"resultType":"vector","result":[{"value":["x"]}]}}',
     "not as the API documents it"),
    (b"<html>a login page</html>", "bad answer"),
    (b'{"status":"error","error":"too many samples"}', "too many samples"),
])
def test_answers_not_as_documented_are_history_unavailable(body: bytes, expected: str) -> None:
    class Handler(_Quiet):
        def do_GET(self) -> None:
            self.answer(200, body, **{"Content-Type": "application/json"})

    with _serve(Handler) as url, pytest.raises(HistoryUnavailable, match=expected):
        PrometheusHistory(url, timeout=2).query("up", time.time())


def test_not_http_at_all_is_history_unavailable() -> None:
    with socket.socket() as server:  # answers garbage, as a gRPC port would to HTTP/1.1
        server.bind(("127.0.0.1", 0))
        server.listen()

        def garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage\r\n\r\n")

        thread = threading.Thread(target=garbage, daemon=True)
        thread.start()
        history = PrometheusHistory(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2)
        with pytest.raises(HistoryUnavailable, match="bad answer"):
            history.query("up", time.time())
        thread.join(5)


def test_a_redirect_is_not_followed_with_the_credentials() -> None:
    seen: list[str] = []

    class Elsewhere(_Quiet):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.answer(200, b'{"status":"success","data":{"resultType":"vector","result":[]}}')

    with _serve(Elsewhere) as target:
        class Redirect(_Quiet):
            def do_GET(self) -> None:
                self.answer(302, b"", Location=f"{target}{self.path}")

        with _serve(Redirect) as url, pytest.raises(HistoryUnavailable, match="HTTP 302"):
            PrometheusHistory(url, bearer_token="tok").query("up", time.time())
    assert seen == []


def test_a_store_gone_is_left_alone_for_a_while(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = make_app(tmp_path, history_backend="prometheus", prometheus_url=url,
                   prometheus_timeout=1)
    state = get_state(app)
    try:
        backend = state.backend
        assert backend.gpus() == []
        assert "Connection refused" in state.storage_faults()[url]
        calls: list[str] = []
        original = PrometheusHistory._get

        def counted(self: PrometheusHistory, path: str, params: Any) -> Any:
            calls.append(path)
            return original(self, path, params)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(PrometheusHistory, "_get", counted)
            now = time.time()
            assert backend.sparklines(3600, now) == {}
            assert backend.user_usage(now, [86400.0]) == {}
            assert calls == []  # within the backoff: not asked again
            assert "Connection refused" in state.storage_faults()[url]
    finally:
        state.close()


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


def test_credentials_are_sent(tmp_path: Path) -> None:
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

    token = tmp_path / "prom.token"
    token.write_text("first\n")
    with _serve(Handler) as url:
        assert PrometheusHistory(url, bearer_token="tok").query("up", 0) == []
        assert PrometheusHistory(url, username="ann", password="pw").query("up", 0) == []
        from_file = PrometheusHistory(url, bearer_token_file=token)
        from_file.query("up", 0)
        token.write_text("rotated\n")  # taken at the next query, no restart
        from_file.query("up", 0)
        token.unlink()
        with pytest.raises(HistoryUnavailable, match="cannot read the bearer token file"):
            from_file.query("up", 0)
    assert seen == ["Bearer tok", "Basic YW5uOnB3", "Bearer first", "Bearer rotated"]


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


def test_prometheus_scraping_the_dashboard_with_the_metrics_token(tmp_path: Path) -> None:
    """The other layout: one Prometheus job scrapes the dashboard's /metrics (honor_labels,
    settings.py's metrics_token) and the dashboard reads its history back from that job
    (prometheus_job = "hmonitor-web"): charts, and uptime from hmonitor_host_up."""
    if not shutil.which(STORES["prometheus"]):
        pytest.skip("prometheus is not installed")
    from werkzeug.serving import make_server  # noqa: PLC0415

    web_port, prom_port = free_port(), free_port()
    metrics_token = "scrape-only-token-0123456789"
    g0 = gpu(0, proc(USER, pid=4242, mem_gib=20), util=UTIL, used_gib=21)
    app = make_app(tmp_path / "web", [up("gpu-w", host_info("gpu-w", [g0]))],
                   metrics_token=metrics_token, history_backend="prometheus",
                   prometheus_url=f"http://127.0.0.1:{prom_port}", prometheus_timeout=3,
                   prometheus_job="hmonitor-web")
    server = make_server("127.0.0.1", web_port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tmp_path / "prom"
    work.mkdir()
    (work / "token").write_text(metrics_token)
    (work / "scrape.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: hmonitor-web\n    honor_labels: true\n"
        f"    authorization: {{type: Bearer, credentials_file: {work / 'token'}}}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{web_port}']\n")
    log = work / "log.txt"
    state = get_state(app)
    try:
        with running([STORES["prometheus"], f"--config.file={work / 'scrape.yml'}",
                      f"--storage.tsdb.path={work / 'data'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}"], log) as prom:
            _wait_port(prom_port, prom, "prometheus", log)
            history = PrometheusHistory(f"http://127.0.0.1:{prom_port}", job="hmonitor-web")
            deadline = time.monotonic() + 30
            while not history.query(
                    'count_over_time(hmonitor_host_up{job="hmonitor-web"}[1m]) > 3', time.time()):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            client = app.test_client()
            resp = client.get("/api/v1/history?host=gpu-w&gpu=0&metric=util&window=60&points=6",
                              headers=BEARER)
            assert resp.status_code == 200 and _json(resp)["v"], resp.text
            assert all(v == pytest.approx(UTIL) for v in _json(resp)["v"])
            now = time.time()
            assert state.backend.host_uptime("gpu-w", now - 5, now) == pytest.approx(1.0)
            assert state.storage_faults() == {}
            # the scrape token opens /metrics and nothing else
            scrape = {"Authorization": f"Bearer {metrics_token}"}
            assert client.get("/metrics", headers=scrape).status_code == 200
            assert client.get("/api/v1/hosts", headers=scrape).status_code == 401
    finally:
        server.shutdown()
        state.close()


# What NVIDIA's Grafana dashboard 12239 (dcgm-exporter's) reads: its variables are the values of
# `instance` and `gpu` on DCGM_FI_DEV_GPU_TEMP; each panel selects one DCGM field by both.
# DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, a DCGM profiling counter NVML does not give, stays empty.
DASHBOARD_12239_FIELDS = ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
                          "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED")


def test_grafana_12239_fills_in_from_a_scraped_agent(store_url: str, agent_addr: str) -> None:
    history = PrometheusHistory(store_url)
    variables = history._get("/api/v1/series", [("match[]", "DCGM_FI_DEV_GPU_TEMP")])
    assert {(s["instance"], s["gpu"]) for s in variables} == {(agent_addr, "0")}
    now = time.time()
    for field in DASHBOARD_12239_FIELDS:
        rows = history.query(f'{field}{{instance=~"{agent_addr}", gpu=~"0"}}', now)
        assert len(rows) == 1, field
        labels, value = rows[0]
        assert labels["modelName"] == "NVIDIA A100-SXM4-80GB" and labels["device"] == "nvidia0"
        if field == "DCGM_FI_DEV_GPU_UTIL":
            assert value == UTIL
        if field == "DCGM_FI_DEV_FB_USED":
            assert value == 21 * 1024  # MiB
