"""The dashboard's poller against real gRPC over loopback: healthy agents and every kind of bad one.

Each bad agent must end as a down host with the right reason within its deadline, while the healthy
hosts stay fresh; channels are made once per agent and reused.
"""

from __future__ import annotations

import http.server
import itertools
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from builders import H200, gpu, host_info, proc

from hmonitor._pb import hm_pb2, hm_pb2_grpc
from hmonitor.rpcwords import describe_rpc_error
from hmonitor.web.bounds import CUT_MARK, LIMITS
from hmonitor.web.channels import (
    credentials_from_settings,
    default_channel_factory,
)
from hmonitor.web.hoststate import HostState
from hmonitor.web.poller import Poller
from hmonitor.web.settings import Settings

TIMEOUT = 0.5  # the deadline per call in these tests
SLACK = 1.0  # what a round may take beyond the deadline on a busy 2-core machine


def snapshot(hostname: str, err: str = "") -> hm_pb2.HostInfo:
    """One H200 with one process; ``hostname`` as given (the tests check it came through), and
    no disks (the flood test counts the disks it adds)."""
    return host_info(hostname, [gpu(0, proc("alice", pid=4242, mem_gib=1), util=42, used_gib=1,
                                    total_gib=141, name=H200)],
                     hostname=hostname, disks=(), err=err)


class FakeAgent(hm_pb2_grpc.HostMonitorServicer):
    """HostMonitor answering a fixed snapshot, optionally late or with an error status."""

    def __init__(
        self, info: hm_pb2.HostInfo, release: threading.Event, *, delay: float = 0.0,
        abort: tuple[grpc.StatusCode, str] | None = None,
    ) -> None:
        self.info = info
        self.delay = delay
        self.abort = abort
        self.calls = 0
        self.tokens: list[str] = []
        self._release = release
        self._lock = threading.Lock()

    def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.ServicerContext
    ) -> hm_pb2.HostInfo:
        with self._lock:
            self.calls += 1
            self.tokens.append(request.token)
        if self.delay:
            self._release.wait(self.delay)  # released at teardown, so no thread outlives the test
        if self.abort is not None:
            context.abort(*self.abort)
        return self.info


@dataclass
class Lab:
    """Agents and bad endpoints on loopback, all torn down after the test."""

    release: threading.Event = field(default_factory=threading.Event)
    servers: list[grpc.Server] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def agent(
        self, name: str = "gpu", *, err: str = "", delay: float = 0.0,
        abort: tuple[grpc.StatusCode, str] | None = None,
        tls: grpc.ServerCredentials | None = None, port: int = 0,
    ) -> tuple[str, FakeAgent, grpc.Server]:
        servicer = FakeAgent(snapshot(name, err), self.release, delay=delay, abort=abort)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        hm_pb2_grpc.add_HostMonitorServicer_to_server(servicer, server)
        where = f"127.0.0.1:{port}"
        bound = (server.add_secure_port(where, tls) if tls is not None
                 else server.add_insecure_port(where))
        server.start()
        self.servers.append(server)
        return f"127.0.0.1:{bound}", servicer, server

    def silent_port(self) -> str:
        """Accepts TCP connections (the kernel does, from the backlog) but never says a word."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.closers.append(sock.close)
        return f"127.0.0.1:{sock.getsockname()[1]}"

    def closed_port(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        return f"127.0.0.1:{port}"

    def http_server(self) -> str:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.closers.append(server.shutdown)
        self.closers.append(server.server_close)
        return f"127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        for server in self.servers:
            server.stop(grace=None)
        for close in self.closers:
            close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def pollers() -> Iterator[list[Poller]]:
    made: list[Poller] = []
    yield made
    for poller in made:
        poller.stop()


class CountingFactory:
    """The poller's channel factory, counting the channels it makes per address."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(
        self, address: str, credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, Any]],
    ) -> grpc.aio.Channel:
        self.made.append(address)
        return default_channel_factory(address, credentials, options)


def by_name(states: list[HostState]) -> dict[str, HostState]:
    return {state.name: state for state in states}


def state(poller: Poller, name: str) -> HostState:
    found = poller.host(name)
    assert found is not None, f"no host {name!r}"
    return found


def test_bad_agents_end_down_with_their_reason_and_healthy_ones_stay_up(
    lab: Lab, pollers: list[Poller]
) -> None:
    ok1, _, _ = lab.agent("ok1")
    ok2, _, _ = lab.agent("ok2")
    late, _, _ = lab.agent("late", delay=10 * TIMEOUT)
    denied, _, _ = lab.agent(abort=(grpc.StatusCode.PERMISSION_DENIED,
                                    "not in this agent's allow-list"))
    wrong_token, _, _ = lab.agent(abort=(grpc.StatusCode.UNAUTHENTICATED, "wrong token"))
    no_nvml, _, _ = lab.agent("no_nvml", err="NVML Shared Library Not Found")
    servers = {
        "ok1": ok1, "silent": lab.silent_port(), "closed": lab.closed_port(),
        "http": lab.http_server(), "late": late, "denied": denied, "token": wrong_token,
        "no_nvml": no_nvml, "ok2": ok2,
    }
    rounds: list[tuple[list[HostState], float]] = []
    poller = Poller(servers, timeout=TIMEOUT, on_round=lambda s, t: rounds.append((s, t)))
    pollers.append(poller)

    before = time.time()
    clock = time.monotonic()
    states = poller.poll_once()
    took = time.monotonic() - clock

    assert took <= TIMEOUT + SLACK
    assert poller.last_round_seconds is not None
    assert poller.last_round_seconds <= took
    assert [s.name for s in states] == list(servers)  # settings order
    host = by_name(states)
    for name in ("ok1", "ok2"):
        fine = host[name]
        assert fine.up, fine.error
        assert fine.error == ""
        assert fine.info is not None and fine.info.hostname == name
        assert fine.last_seen is not None and before <= fine.last_seen <= time.time()
        assert fine.rtt_ms is not None and 0 < fine.rtt_ms < 1000 * (TIMEOUT + SLACK)
    expected = {
        "silent": f"no answer within {TIMEOUT} s",
        "closed": "connection refused",
        "http": "not a gRPC server",
        "late": f"no answer within {TIMEOUT} s (connected, but the agent did not reply",
        "denied": "refused by the agent's allow-list",
        "token": "agent token rejected",
    }
    for name, reason in expected.items():
        bad = host[name]
        assert not bad.up, name
        assert bad.error.startswith(reason), (name, bad.error)
        assert bad.info is None and bad.last_seen is None
        assert bad.polled_at is not None and bad.polled_at >= before
    # The agent's own error: the host answers, so it is up, with the agent's words.
    assert host["no_nvml"].up
    assert host["no_nvml"].error == "agent: NVML Shared Library Not Found"
    assert host["no_nvml"].info is not None
    # on_round got the same round, stamped with its start.
    assert len(rounds) == 1
    assert rounds[0][0] == states
    assert before <= rounds[0][1] <= before + took
    assert poller.hosts() == states


def test_healthy_hosts_are_fresh_long_before_a_hung_agent_hits_its_deadline(
    lab: Lab, pollers: list[Poller]
) -> None:
    deadline = 1.5
    ok, _, _ = lab.agent("ok")
    poller = Poller({"silent": lab.silent_port(), "ok": ok}, timeout=deadline)
    pollers.append(poller)
    clock = time.monotonic()
    worker = threading.Thread(target=poller.poll_once)
    worker.start()

    while not state(poller, "ok").up and time.monotonic() - clock < deadline:
        time.sleep(0.01)
    fresh_after = time.monotonic() - clock
    silent_meanwhile = poller.host("silent")
    worker.join()
    took = time.monotonic() - clock

    assert fresh_after < deadline / 2, "the healthy host waited for the hung one"
    assert silent_meanwhile is not None and silent_meanwhile.error == "not polled yet"
    assert deadline - 0.1 <= took <= deadline + SLACK
    assert state(poller, "silent").error.startswith("no answer within 1.5 s")


def test_a_host_that_goes_down_keeps_its_last_snapshot_and_comes_back(
    lab: Lab, pollers: list[Poller]
) -> None:
    address, _, server = lab.agent("gpu01")
    poller = Poller({"gpu01": address}, interval=0.2, timeout=TIMEOUT)
    pollers.append(poller)
    good = poller.poll_once()[0]
    assert good.up and good.info is not None and good.last_seen is not None

    server.stop(grace=None).wait()
    time.sleep(0.05)
    down = poller.poll_once()[0]

    assert not down.up
    assert down.error  # "connection refused", or how the dropped connection looked
    assert down.info == good.info
    assert down.last_seen == good.last_seen
    assert down.rtt_ms == good.rtt_ms
    assert down.polled_at is not None and good.polled_at is not None
    assert down.polled_at > good.polled_at

    # The agent is restarted on the same port: a later round sees it again.
    lab.agent("gpu01", port=int(address.rpartition(":")[2]))
    clock = time.monotonic()
    while time.monotonic() - clock < 5:
        back = poller.poll_once()[0]
        if back.up:
            break
        time.sleep(0.2)
    assert back.up, back.error
    assert back.last_seen is not None and back.last_seen > good.last_seen
    assert time.monotonic() - clock < 3


def test_one_channel_per_agent_reused_across_rounds(lab: Lab, pollers: list[Poller]) -> None:
    a, agent_a, _ = lab.agent("a")
    b, agent_b, _ = lab.agent("b")
    factory = CountingFactory()
    poller = Poller({"a": a, "b": b, "gone": lab.closed_port()}, timeout=TIMEOUT,
                    channel_factory=factory)
    pollers.append(poller)

    for _ in range(4):
        poller.poll_once()

    assert sorted(factory.made) == sorted([a, b, state(poller, "gone").address])
    assert agent_a.calls == agent_b.calls == 4


def test_set_servers_adds_and_removes_hosts_and_keeps_unchanged_channels(
    lab: Lab, pollers: list[Poller]
) -> None:
    a, _, _ = lab.agent("a")
    b, _, _ = lab.agent("b")
    c, _, _ = lab.agent("c")
    factory = CountingFactory()
    poller = Poller({"a": a, "b": b}, timeout=TIMEOUT, channel_factory=factory)
    pollers.append(poller)
    poller.poll_once()

    poller.set_servers({"c": c, "a": a})

    assert [h.name for h in poller.hosts()] == ["c", "a"]
    assert poller.host("b") is None
    new = poller.host("c")
    assert new is not None and not new.up and new.error == "not polled yet"
    assert state(poller, "a").up  # kept its state
    states = poller.poll_once()
    assert [s.name for s in states] == ["c", "a"]
    assert all(s.up for s in states)
    assert factory.made == [a, b, c]  # "a" kept its channel

    # A host whose address changes gets a new channel and starts afresh.
    poller.set_servers({"c": c, "a": b})
    assert state(poller, "a").error == "not polled yet"
    moved = by_name(poller.poll_once())["a"]
    assert moved.info is not None and moved.info.hostname == "b"
    assert factory.made == [a, b, c, b]


def test_background_rounds_keep_their_schedule_and_never_double_call_a_stuck_agent(
    lab: Lab, pollers: list[Poller]
) -> None:
    interval, deadline = 0.25, 1.0
    ok, agent_ok, _ = lab.agent("ok")
    late, agent_late, _ = lab.agent("late", delay=30)
    starts: list[float] = []
    done = threading.Event()

    def on_round(states: list[HostState], started: float) -> None:
        starts.append(started)
        if len(starts) == 6:
            done.set()

    poller = Poller({"ok": ok, "late": late}, interval=interval, timeout=deadline,
                    on_round=on_round)
    pollers.append(poller)
    poller.start()
    assert done.wait(timeout=interval * 6 + deadline + SLACK + 2)
    poller.stop()

    assert starts == sorted(starts)  # reported in the order the rounds started
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Rounds start every `interval`, not every `deadline`: the stuck agent does not hold them.
    assert all(interval * 0.5 < gap < interval * 2.5 for gap in gaps), gaps
    assert agent_ok.calls >= 6
    # Rounds started meanwhile left the stuck agent's call alone: about one call per deadline.
    elapsed = starts[-1] - starts[0] + interval
    assert agent_late.calls <= elapsed / deadline + 1.5
    assert state(poller, "late").error.startswith("no answer within 1.0 s")


def test_the_agent_token_is_sent(lab: Lab, pollers: list[Poller]) -> None:
    address, agent, _ = lab.agent()
    poller = Poller({"gpu": address}, timeout=TIMEOUT, agent_token="s3cret")
    pollers.append(poller)
    assert poller.poll_once()[0].up
    assert agent.tokens == ["s3cret"]


def test_stop_closes_channels_and_the_poller_can_run_again(
    lab: Lab, pollers: list[Poller]
) -> None:
    address, _, _ = lab.agent()
    factory = CountingFactory()
    poller = Poller({"gpu": address}, timeout=TIMEOUT, channel_factory=factory)
    pollers.append(poller)
    poller.poll_once()
    threads = threading.active_count()

    poller.stop()
    poller.stop()  # twice is harmless

    assert threading.active_count() < threads
    assert poller.poll_once()[0].up
    assert factory.made == [address, address]


# --- TLS ------------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, an agent certificate for agent.lab.test and a client certificate, via openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{folder}/{ca}.key", "-out",
                 f"{folder}/{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")
    (folder / "san").write_text("subjectAltName=DNS:agent.lab.test\n")
    for name in ("agent", "client"):
        _openssl("req", *ec, "-keyout", f"{folder}/{name}.key", "-out", f"{folder}/{name}.csr",
                 "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", f"{folder}/{name}.csr", "-CA", f"{folder}/ca.pem",
                 "-CAkey", f"{folder}/ca.key", "-CAcreateserial", "-out", f"{folder}/{name}.pem",
                 "-days", "2", "-extfile", f"{folder}/san")
    return folder


def tls_settings(pki: Path, ca: str = "ca.pem", server_name: str | None = "agent.lab.test",
                 client: bool = True) -> Settings:
    return Settings(
        path=pki / "settings.py", servers={}, token="t", tls_ca=pki / ca,
        tls_cert=pki / "client.pem" if client else None,
        tls_key=pki / "client.key" if client else None, tls_server_name=server_name,
    )


def test_mutual_tls_from_settings_and_its_failures_in_words(
    lab: Lab, pollers: list[Poller], pki: Path
) -> None:
    server_credentials = grpc.ssl_server_credentials(
        [((pki / "agent.key").read_bytes(), (pki / "agent.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=True,
    )
    tls_agent, _, _ = lab.agent("secure", tls=server_credentials)
    plain_agent, _, _ = lab.agent("plain")

    def poll(settings: Settings | None, address: str) -> HostState:
        poller = Poller(
            {"h": address}, timeout=TIMEOUT,
            credentials=credentials_from_settings(settings) if settings else None,
            server_name=settings.tls_server_name if settings else None,
        )
        pollers.append(poller)
        return poller.poll_once()[0]

    good = poll(tls_settings(pki), tls_agent)
    assert good.up, good.error
    assert good.info is not None and good.info.hostname == "secure"
    assert poll(tls_settings(pki, ca="other-ca.pem"), tls_agent).error == (
        "TLS: the agent's certificate is not signed by tls_ca")
    assert poll(tls_settings(pki, server_name=None), tls_agent).error.startswith(
        "TLS: the agent's certificate is for a different name")
    assert poll(tls_settings(pki, client=False), tls_agent).error.startswith(
        "the agent closed the connection")
    assert poll(None, tls_agent).error.startswith("the agent closed the connection")
    assert poll(tls_settings(pki), plain_agent).error.startswith(
        "TLS handshake failed: the agent does not speak TLS")
    assert credentials_from_settings(Settings(path=pki, servers={}, token="t")) is None


# --- gRPC's own texts, as this grpcio words them, mapped to words ---------------------------------


@pytest.mark.parametrize(
    ("code", "details", "words"),
    [
        (grpc.StatusCode.UNAVAILABLE,
         "errors resolving gpu99.invalid:9203: [field:hostname lookup error:address lookup failed"
         " for gpu99.invalid:9203: Domain name not found]", "cannot resolve the host name"),
        (grpc.StatusCode.UNAVAILABLE, "DNS resolution failed for gpu99:9203: C-ares status is"
         " not ARES_SUCCESS", "cannot resolve the host name"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN:"
         " ipv4:10.9.9.9:9203: No route to host", "host unreachable"),
        (grpc.StatusCode.UNIMPLEMENTED, "Received http2 header with status: 404",
         "not a gRPC server (it answered HTTP status 404)"),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found: gpu.HostMonitor/GetInfo",
         "a gRPC server, but not an hmonitor agent"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "no answer within 3.0 s"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN:"
         " ipv4:1.2.3.4:9203: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:"
         "1000006b:SSL routines:OPENSSL_internal:BAD_ECC_CERT",
         "TLS handshake failed: Tls handshake failed (TSI_PROTOCOL_FAILURE)"),
        (grpc.StatusCode.INTERNAL, "Exception calling application: boom", "internal: Exception"),
    ],
)
def test_grpc_errors_in_words(code: grpc.StatusCode, details: str, words: str) -> None:
    assert describe_rpc_error(code, details, timeout=3).startswith(words)


def test_an_agent_answering_too_much_is_cut_to_bounds_with_the_cuts_in_words(
    lab: Lab, pollers: list[Poller]
) -> None:
    # Issue 7 item 7: one agent's 50 MB GPU name made every overview 105 MB and went into history.
    ok, _, _ = lab.agent("ok")
    flood, servicer, _ = lab.agent("flood")
    huge = servicer.info.gpus[0]
    huge.name = "H" * 50_000_000
    huge.procs.extend(hm_pb2.ProcInfo(pid=10_000 + i, uid=1000, username="u" * (i % 300),
                                      mem=i << 20) for i in range(10_000))
    servicer.info.disks.extend(hm_pb2.DiskInfo(mount=f"/m/{i}", total=1) for i in range(300))
    servicer.info.err = "e" * 1_000_000
    noisy, _, _ = lab.agent(abort=(grpc.StatusCode.INTERNAL, "x" * 100_000))
    poller = Poller({"ok": ok, "flood": flood, "noisy": noisy}, timeout=5.0)
    pollers.append(poller)

    states = by_name(poller.poll_once())

    assert states["ok"].up and states["ok"].truncated == ()
    assert states["ok"].info == snapshot("ok")
    got = states["flood"]
    assert got.up and got.info is not None
    gpu0 = got.info.gpus[0]
    assert len(gpu0.name) == LIMITS.name and gpu0.name.endswith(CUT_MARK)
    assert len(gpu0.procs) == LIMITS.procs
    assert min(p.mem for p in gpu0.procs) == (10_000 - LIMITS.procs) << 20  # the biggest kept
    assert all(len(p.username) <= LIMITS.name for p in gpu0.procs)
    assert len(got.info.disks) == LIMITS.disks
    assert len(got.info.err) == LIMITS.error
    assert got.info.ByteSize() < 200_000
    said = "\n".join(got.truncated)
    assert "GPU name: 50,000,000 characters, cut to 128" in said
    assert "process username: 156 values over 128 characters cut (the longest 299)" in said
    assert "err: 1,000,000 characters, cut to 2000" in said
    assert "GPU 0: 10,001 processes, the 256 using most memory shown" in said
    assert "300 disks, the first 128 shown" in said
    assert len(got.truncated) <= LIMITS.notes
    assert not states["noisy"].up and len(states["noisy"].error) <= LIMITS.error
