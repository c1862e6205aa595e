"""The real agent's /metrics on the fake libnvidia-ml.so.1, scraped over HTTP(S) on loopback."""

from __future__ import annotations

import contextlib
import gzip
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import Agent, free_port, start_agent
from builders import gpu, host_info, proc
from fakenvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    FakeGpu,
    FakeProc,
    nvml_env,
    uuid_for,
    write_config,
)
from prometheus_client.registry import CollectorRegistry
from promtext import names, one, samples

import hmonitor
from hmonitor.agent.metrics import build_registry
from hmonitor.agent.metrics_http import start_metrics_server
from hmonitor.agent.server import AllowList, TlsFiles, parse_allow
from hmonitor.agent.snapshot import SourceStat

GIB = 1 << 30
MIB = 1 << 20


class MetricsAgent:
    """Starts agents on the fake NVML with /metrics on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path, lib: Path) -> None:
        self.workdir, self.lib = workdir, lib
        self.config = workdir / "gpus.txt"
        self.started: list[tuple[Agent, int]] = []

    def __call__(
        self, gpus: list[FakeGpu], *args: str, env: dict[str, str] | None = None,
        init_error: int = 0,
    ) -> tuple[Agent, str]:
        write_config(self.config, gpus, init_error=init_error)
        full_env = nvml_env(self.lib, self.config)
        full_env.update(env or {})
        port = free_port()
        agent = start_agent(
            self.workdir,
            ["--cache-ttl", "0.2", "--metrics-addr", f"127.0.0.1:{port}", *args],
            env=full_env,
        )
        self.started.append((agent, port))
        _wait_port(agent, port)
        return agent, f"127.0.0.1:{port}"


def _wait_port(agent: Agent, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert agent.proc.poll() is None, agent.output()
        time.sleep(0.05)
    raise AssertionError(f"metrics port {port} never listened:\n{agent.output()}")


@pytest.fixture
def run_agent(tmp_path: Path, fake_nvml_lib: Path) -> Iterator[MetricsAgent]:
    factory = MetricsAgent(tmp_path, fake_nvml_lib)
    yield factory
    for agent, _ in factory.started:
        agent.stop()


def get(url: str, *, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return resp.status, body.decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def test_scrape_matches_get_info(run_agent: MetricsAgent) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        agent, addr = run_agent([
            FakeGpu(name="NVIDIA A100-SXM4-80GB", util=37, temp=51, mem_total=80 * GIB,
                    mem_used=21 * GIB, power_mw=250_500, sm_clock_mhz=1410,
                    procs=[FakeProc(sleeper.pid, 20 * GIB, sm_util=33)]),
            FakeGpu(lost="handle"),
        ])
        info = agent.get_info()
        status, text, headers = get(f"http://{addr}/metrics")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    found = samples(text)
    g = info.gpus[0]
    dcgm = {"gpu": "0", "UUID": g.uuid, "device": "nvidia0", "modelName": g.name,
            "hostname": info.hostname}
    assert one(found, "DCGM_FI_DEV_GPU_UTIL", **dcgm) == g.utilization == 37
    assert one(found, "DCGM_FI_DEV_GPU_TEMP", **dcgm) == g.temp == 51
    assert one(found, "DCGM_FI_DEV_FB_USED", **dcgm) == g.mem_used // MIB == 21 * 1024
    assert one(found, "DCGM_FI_DEV_FB_TOTAL", **dcgm) == 80 * 1024
    assert one(found, "DCGM_FI_DEV_POWER_USAGE", **dcgm) == g.power_mw / 1000 == 250.5
    assert one(found, "DCGM_FI_DEV_SM_CLOCK", **dcgm) == 1410
    own = {"gpu": "0", "uuid": g.uuid, "model": g.name}
    assert one(found, "hmonitor_gpu_memory_used_bytes", **own) == 21 * GIB
    assert one(found, "hmonitor_gpu_utilization_ratio", **own) == pytest.approx(0.37)
    (p,) = g.procs
    assert one(found, "hmonitor_gpu_user_memory_bytes", gpu="0", user=p.username) == 20 * GIB
    assert one(found, "hmonitor_gpu_user_processes", gpu="0", user=p.username) == 1
    assert one(found, "hmonitor_gpu_up", gpu="0", error="") == 1
    lost = info.gpus[1]
    assert lost.name.startswith("GPU lost:")
    reason = lost.name.removeprefix("GPU lost:").strip()  # the reason alone, as the alert has it
    assert reason and one(found, "hmonitor_gpu_up", gpu="1", error=reason) == 0
    assert one(found, "hmonitor_nvml_up") == 1
    assert one(found, "hmonitor_source_success", source="gpus") == 1
    assert one(found, "hmonitor_build_info", version=info.agent_version,
               driver_version=info.driver_version, cuda_version=info.cuda_version) == 1
    for d in info.disks:
        assert one(found, "hmonitor_disk_total_bytes", mount=d.mount, device=d.device) == d.total
    assert "hmonitor_process_gpu_memory_bytes" not in names(found)  # off by default
    # only /metrics; gzip and OpenMetrics when asked
    assert get(f"http://{addr}/")[0] == 404
    status, om, headers = get(f"http://{addr}/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.rstrip().endswith("# EOF")


def test_per_pid_series_when_asked(run_agent: MetricsAgent) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        agent, addr = run_agent([FakeGpu(procs=[FakeProc(sleeper.pid, 3 * GIB)])],
                                "--metrics-pids")
        (p,) = agent.get_info().gpus[0].procs
        found = samples(get(f"http://{addr}/metrics")[1])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert one(found, "hmonitor_process_gpu_memory_bytes", gpu="0", pid=str(sleeper.pid),
               user=p.username, command="sleep") == 3 * GIB


def test_missing_nvml_is_a_successful_scrape(run_agent: MetricsAgent) -> None:
    _, addr = run_agent([FakeGpu()], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    status, text, _ = get(f"http://{addr}/metrics")
    assert status == 200
    found = samples(text)
    assert one(found, "hmonitor_nvml_up") == 0
    assert one(found, "hmonitor_source_success", source="gpus") == 0
    assert not any(n.startswith("DCGM_") for n in names(found))


def test_no_driver_library_is_no_nvml_up(tmp_path: Path) -> None:
    # A host without NVIDIA GPUs has no libnvidia-ml.so.1: nothing is failing there.
    port = free_port()
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))  # no libnvidia-ml.so.1 anywhere
    agent = start_agent(tmp_path, ["--cache-ttl", "0", "--metrics-addr", f"127.0.0.1:{port}"],
                        env=env)
    try:
        _wait_port(agent, port)
        if "not found" not in agent.get_info().err:
            pytest.skip("this machine has a real libnvidia-ml.so.1 on its library path")
        found = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
    finally:
        agent.stop()
    assert "hmonitor_nvml_up" not in names(found)
    assert one(found, "hmonitor_source_success", source="gpus") == 0
    assert one(found, "hmonitor_build_info", version=hmonitor.__version__, driver_version="",
               cuda_version="") == 1


def test_allow_list_refuses_with_403(run_agent: MetricsAgent) -> None:
    agent, addr = run_agent([FakeGpu()], "--allow", "10.0.0.0/8")
    status, text, _ = get(f"http://{addr}/metrics")
    assert status == 403 and "hmonitor_" not in text and "DCGM" not in text
    assert agent.proc.poll() is None


def test_token_needs_bearer(run_agent: MetricsAgent) -> None:
    _, addr = run_agent([FakeGpu()], env={"GOHM_TOKEN": "s3cret"})
    url = f"http://{addr}/metrics"
    status, text, headers = get(url)
    assert status == 401 and "hmonitor_" not in text and headers["WWW-Authenticate"] == "Bearer"
    assert get(url, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert get(url, headers={"Authorization": "Basic czNjcmV0"})[0] == 401
    status, text, _ = get(url, headers={"Authorization": "Bearer s3cret"})
    assert status == 200 and "hmonitor_gpu_up" in text


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("metrics-pki")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
         "-out", "server.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True,
    )
    return d


def test_tls_serves_https_only(run_agent: MetricsAgent, server_cert: Path) -> None:
    agent, addr = run_agent([FakeGpu()], "--tls-cert", str(server_cert / "server.pem"),
                            "--tls-key", str(server_cert / "server.key"))
    ctx = ssl.create_default_context(cafile=str(server_cert / "server.pem"))
    status, text, _ = get(f"https://{addr}/metrics", context=ctx)
    assert status == 200 and "hmonitor_gpu_up" in text
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(f"http://{addr}/metrics")  # plain HTTP to a TLS port: no answer
    assert get(f"https://{addr}/metrics", context=ctx)[0] == 200  # and still serving
    assert agent.proc.poll() is None


def test_a_scrape_between_collections_is_the_same_page_and_a_new_collection_shows(
    run_agent: MetricsAgent,
) -> None:
    _, addr = run_agent([FakeGpu(util=11)])  # --cache-ttl 0.2
    first = get(f"http://{addr}/metrics")[1]
    assert one(samples(first), "hmonitor_gpu_utilization_ratio", gpu="0",
               uuid=uuid_for(0), model="NVIDIA H200") == pytest.approx(0.11)
    write_config(run_agent.config, [FakeGpu(util=64)])
    deadline = time.monotonic() + 10
    while True:  # the page is made again once the agent has collected again
        text = get(f"http://{addr}/metrics")[1]
        value = one(samples(text), "hmonitor_gpu_utilization_ratio", gpu="0",
                    uuid=uuid_for(0), model="NVIDIA H200")
        if value == pytest.approx(0.64):
            break
        assert value == pytest.approx(0.11) and time.monotonic() < deadline
        time.sleep(0.05)
    gzipped = get(f"http://{addr}/metrics", headers={"Accept-Encoding": "gzip"})
    assert gzipped[2].get("Content-Encoding") == "gzip" and "0.64" in gzipped[1]


# --- the server itself, in this process: limits, deadlines, addresses, TLS close ------------------

def _registry() -> CollectorRegistry:
    info = host_info("node1", [gpu(0, proc("alice", pid=100))])
    return build_registry(lambda: info, {"gpus": SourceStat()})


@contextlib.contextmanager
def serving(addr: str = "127.0.0.1:0", allow: str = "127.0.0.1/32", **kwargs: Any,
            ) -> Iterator[int]:
    server, port = start_metrics_server(addr, _registry(), AllowList(parse_allow(allow)),
                                        **kwargs)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def raw_get(port: int, *, host: str = "127.0.0.1", source: str | None = None,
            timeout: float = 5.0) -> tuple[int, bytes]:
    """GET /metrics over a plain socket (from `source`, an address of this host): the status,
    and the body."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if source is not None:
            s.bind((source, 0))
        s.connect((host, port))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _idle(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def test_idle_clients_outside_the_allow_list_take_no_thread(ipv4_loopback_2: None) -> None:
    with serving(allow="127.0.0.2/32") as port:
        before = threading.active_count()
        idle = _idle(port, 100)  # from 127.0.0.1: not allowed, never send a byte
        try:
            time.sleep(0.5)
            assert threading.active_count() <= before + 2
            status, body = raw_get(port, source="127.0.0.2")  # the allowed scraper
            assert status == 200 and b"hmonitor_gpu_up" in body
            # and each idle one was answered 403 and closed without being read
            idle[0].settimeout(2)
            assert idle[0].recv(4096).startswith(b"HTTP/1.0 403")
        finally:
            for s in idle:
                s.close()


def test_allowed_idle_clients_are_capped_and_time_out() -> None:
    with serving(request_deadline=1.0) as port:
        before = threading.active_count()
        started = time.monotonic()
        idle = _idle(port, 100)
        try:
            time.sleep(0.3)
            assert threading.active_count() <= before + 16 + 1
            refused = 0
            for s in idle:  # those over the cap were closed at once
                s.settimeout(0.05)
                try:
                    refused += s.recv(1) == b""
                except TimeoutError:
                    pass
                except ConnectionError:
                    refused += 1
            assert refused >= 100 - 16
            while True:  # once the idle ones' deadline passes, a scrape gets a slot again
                try:
                    status, body = raw_get(port)
                    break
                except ConnectionError:
                    assert time.monotonic() - started < 3.0
                    time.sleep(0.1)
            assert status == 200 and b"hmonitor_gpu_up" in body
        finally:
            for s in idle:
                s.close()


def test_a_trickling_client_is_dropped_at_the_deadline() -> None:
    with serving(request_deadline=1.0) as port, socket.create_connection(
            ("127.0.0.1", port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /metrics HTTP/1.0\r\n")
        closed = False
        while time.monotonic() - started < 4.0:  # a header byte every 0.2 s: each read is quick
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([s], [], [], 0.2)
            if readable:
                closed = s.recv(4096) == b""
                break
        assert closed
        assert time.monotonic() - started < 2.0


def test_the_wildcard_address_serves_ipv4_and_ipv6(ipv6_loopback: None) -> None:
    with serving(":0", allow="127.0.0.1/32,::1/128") as port:
        assert raw_get(port)[0] == 200
        assert raw_get(port, host="::1")[0] == 200
    # An IPv4 client reaches a dual-stack socket as ::ffff:127.0.0.1: the list takes it as IPv4.
    with serving(":0", allow="127.0.0.1/32") as port:
        assert raw_get(port)[0] == 200
        assert raw_get(port, host="::1")[0] == 403


def test_tls_answers_end_with_close_notify(server_cert: Path) -> None:
    tls = TlsFiles(cert=(server_cert / "server.pem").read_bytes(),
                   key=(server_cert / "server.key").read_bytes())
    ctx = ssl.create_default_context(cafile=str(server_cert / "server.pem"))
    with (serving(tls=tls) as port,
          socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s):
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # a cut connection raises SSLEOFError here
            data += chunk
    assert data.startswith(b"HTTP/1.0 200") and b"hmonitor_gpu_up" in data


@pytest.fixture
def ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")


@pytest.fixture
def ipv4_loopback_2() -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
