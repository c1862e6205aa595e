"""Dashboard benchmark: polling rounds against many agents, page and API cost, process RSS.

    python bench/dashboard.py [--quick]

1. Polling rounds. A separate process (bench/_agents_farm.py) serves N simulated agents on N
   loopback ports: real gRPC servers answering a realistic HostInfo (8 GPUs x 4 processes, 2
   disks), plus hung ones: ports that accept TCP and never answer, and gRPC agents that never
   reply. `hmonitor.web.poller.Poller.poll_once()` is timed for N healthy agents and for N agents
   of which 10 % are hung (every tenth), checking that every healthy host is fresh after each
   round (up, polled within it) and every hung one is down.
2. Baseline in the same run: a poller as the spec's original dashboard polls: 8 threads, a fresh
   channel per call, no deadline. A round it cannot finish is stopped at a cap and shown as "> cap".
3. Page and API: `create_app` with 100 hosts x 8 GPUs x 4 processes (a fake poller), through
   Flask's test client: server time and size of `/` (the cluster map), `/?view=panels` and
   `/api/v1/hosts`, raw and gzip as served. Baseline size: the original page embedded every
   HostInfo as base64 of its protobuf bytes.
4. The overview at cluster scale (bench/_overview.py): the real hmonitor-web under waitress
   polling 1,000 agents (300 with --quick) every 5 s, a tenth of their GPUs changing every round;
   over HTTP the map, the page as it was (every host a panel) and /api/v1/hosts, which it pulled
   every 5 s (the baselines); in Chromium the first paint, the bytes on the wire, each live
   refresh's bytes and every long task.
5. RSS of this process (the poller's) after the rounds against the largest N.

The full run takes about 4 minutes on 2 cores; --quick (N = 100 and 300) about 2.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import gzip
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psutil
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _agents_farm import make_host_info, raise_nofile  # noqa: E402
from _overview import Overview, run_overview  # noqa: E402
from _table import print_table  # noqa: E402

from hmonitor._pb import hm_pb2, hm_pb2_grpc  # noqa: E402
from hmonitor.web.app import create_app  # noqa: E402
from hmonitor.web.hoststate import HostState  # noqa: E402
from hmonitor.web.poller import Poller  # noqa: E402
from hmonitor.web.settings import Settings  # noqa: E402

TIMEOUT = 3.0  # the poller's deadline per call (the settings default)
INTERVAL = 10.0  # only shapes the poller's reconnect backoff here: rounds are driven by hand
HUNG_EVERY = 10  # every tenth agent is hung: 10 %
TOKEN = "bench-token-0123456789"
MB = 1e6


@dataclass(frozen=True)
class Plan:
    sizes: list[int]
    healthy_rounds: int  # later rounds after the first, for the median
    hung_rounds: int
    baseline_rounds: int
    baseline_cap: float  # seconds a baseline round may run before it is called stalled
    hung_kinds: list[str]  # "tcp", "grpc" or "mix" (half of each)
    requests: int  # per endpoint, for page/API timings
    overview_hosts: int  # the overview through the real server and Chromium


FULL = Plan(sizes=[100, 1000], healthy_rounds=5, hung_rounds=3, baseline_rounds=3,
            baseline_cap=15.0, hung_kinds=["tcp", "grpc"], requests=50, overview_hosts=1000)
QUICK = Plan(sizes=[100, 300], healthy_rounds=3, hung_rounds=2, baseline_rounds=2,
             baseline_cap=5.0, hung_kinds=["mix"], requests=20, overview_hosts=300)

KIND_LABEL = {
    "": "healthy",
    "tcp": "10% hung: TCP only, no reply",
    "grpc": "10% hung: gRPC, no reply",
    "mix": "10% hung: half TCP, half gRPC",
}


# --- the simulated agents ---------------------------------------------------------------------


class Farm:
    """The agents' subprocess; ports by kind. Its stdin is a pipe whose end we hold, so it exits
    when we do, even if we are killed."""

    def __init__(self, healthy: int, hung: int, *, churn: float | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_agents_farm.py"), "--healthy", str(healthy),
             "--hung-tcp", str(hung), "--hung-grpc", str(hung),
             *(["--churn", str(churn)] if churn is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            # Its own session: Ctrl-C reaches only us, and we stop it in order.
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        try:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the agent farm did not start (see its error above)")
        except BaseException:  # Ctrl-C while it starts included
            self.close()
            raise
        ports: dict[str, list[int]] = json.loads(line)
        self.healthy = ports["healthy"]
        self.hung_tcp = ports["hung_tcp"]
        self.hung_grpc = ports["hung_grpc"]

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / MB

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclass(frozen=True)
class Targets:
    servers: dict[str, str]
    healthy: frozenset[str]
    hung: frozenset[str]


def targets(farm: Farm, n: int, kind: str) -> Targets:
    """N agents; with a hung `kind`, every tenth one is hung (spread out, as in a real cluster)."""
    servers: dict[str, str] = {}
    healthy: set[str] = set()
    hung: set[str] = set()
    next_healthy = iter(farm.healthy)
    next_tcp = iter(farm.hung_tcp)
    next_grpc = iter(farm.hung_grpc)
    for i in range(n):
        name = f"gpu-node-{i:04d}"
        if kind and i % HUNG_EVERY == HUNG_EVERY - 1:
            use_tcp = kind == "tcp" or (kind == "mix" and (i // HUNG_EVERY) % 2 == 0)
            port = next(next_tcp if use_tcp else next_grpc)
            hung.add(name)
        else:
            port = next(next_healthy)
            healthy.add(name)
        servers[name] = f"127.0.0.1:{port}"
    return Targets(servers, frozenset(healthy), frozenset(hung))


# --- our poller -------------------------------------------------------------------------------


@dataclass
class OursResult:
    first: float
    later: list[float]
    fresh_ok: int  # rounds in which every healthy host was fresh and every hung one down
    rounds: int
    healthy_done: list[float]  # seconds from round start to the last healthy answer
    stale: int  # healthy hosts not fresh, summed over rounds
    hung_errors: set[str] = field(default_factory=set)  # as the page shows them
    rss_mb: float = 0.0  # this process with the poller's channels still open


def run_ours(t: Targets, later_rounds: int) -> OursResult:
    poller = Poller(t.servers, interval=INTERVAL, timeout=TIMEOUT)
    times: list[float] = []
    done: list[float] = []
    fresh_ok = stale = 0
    hung_errors: set[str] = set()
    try:
        for _ in range(1 + later_rounds):
            wall0 = time.time()
            clock = time.perf_counter()
            states = poller.poll_once()
            times.append(time.perf_counter() - clock)
            wall1 = time.time()
            bad = 0
            last = wall0
            for s in states:
                if s.name in t.healthy:
                    if s.up and s.polled_at is not None and wall0 <= s.polled_at <= wall1:
                        last = max(last, s.polled_at)
                    else:
                        bad += 1
                elif s.up:
                    bad += 1  # a hung agent can never look up
                else:
                    hung_errors.add(s.error)
            stale += bad
            fresh_ok += bad == 0
            done.append(last - wall0)
        rss = _rss_mb()
    finally:
        poller.stop()
    return OursResult(first=times[0], later=times[1:], fresh_ok=fresh_ok, rounds=len(times),
                      healthy_done=done[1:], stale=stale, hung_errors=hung_errors, rss_mb=rss)


# --- the baseline: the spec's original polling --------------------------------------------------


@dataclass
class BaselineRound:
    seconds: float
    answered: int
    finished: bool


def baseline_round(addresses: Sequence[str], cap: float) -> BaselineRound:
    """One round as the original dashboard polls: 8 threads, a fresh channel per call, no deadline.

    Stopped after `cap` seconds: then every open channel is closed, which cancels the blocked
    calls so that the threads (and the benchmark) can end.
    """
    lock = threading.Lock()
    live: set[grpc.Channel] = set()
    stopping = False
    answered = 0

    def call(address: str) -> None:
        nonlocal answered
        with lock:
            if stopping:
                return
            channel = grpc.insecure_channel(address)
            live.add(channel)
        try:
            hm_pb2_grpc.HostMonitorStub(channel).GetInfo(hm_pb2.RequestInfo())
            with lock:
                answered += 1
        except grpc.RpcError:
            pass
        finally:
            with lock:
                live.discard(channel)
            channel.close()

    pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="baseline")
    futures: list[concurrent.futures.Future[None]] = []
    try:
        clock = time.perf_counter()
        futures = [pool.submit(call, a) for a in addresses]
        _, pending = concurrent.futures.wait(futures, timeout=cap)
        seconds = time.perf_counter() - clock
        with lock:
            got = answered
        return BaselineRound(seconds=seconds, answered=got, finished=not pending)
    finally:
        with lock:
            stopping = True
        pool.shutdown(wait=False, cancel_futures=True)
        # Closing a channel cancels its blocked call; repeat until every call is out, since one
        # may open its channel just as we look.
        # (done(), not wait(): futures cancelled by shutdown() never count as done for wait().)
        while not all(f.done() for f in futures):
            with lock:
                channels = list(live)
            for channel in channels:
                channel.close()
            time.sleep(0.05)
        pool.shutdown(wait=True)


@dataclass
class BaselineResult:
    rounds: list[BaselineRound] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.rounds)


def run_baseline(t: Targets, rounds: int, cap: float) -> BaselineResult:
    result = BaselineResult()
    for _ in range(rounds):
        r = baseline_round(list(t.servers.values()), cap)
        result.rounds.append(r)
        if not r.finished:
            break  # stalled: another round would stall the same way
    return result


# --- page and API -----------------------------------------------------------------------------


class FakePoller:
    """Holds fixed host states; what create_app needs from a poller."""

    def __init__(self, states: list[HostState]) -> None:
        self._states = {s.name: s for s in states}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def hosts(self) -> list[HostState]:
        return list(self._states.values())

    def host(self, name: str) -> HostState | None:
        return self._states.get(name)

    def set_servers(self, servers: Any) -> None:
        pass


def cluster_states(n: int) -> list[HostState]:
    """N hosts, 8 GPUs x 4 processes each; a few down with their last snapshot kept."""
    now = time.time()
    states = []
    for i in range(n):
        info = make_host_info(i)
        down = i % 40 == 39
        states.append(HostState(
            name=f"gpu-node-{i:03d}", address=f"10.20.{i // 250}.{i % 250 + 1}:9203",
            up=not down,
            error="no answer within 3.0 s (connected, but the agent did not reply: stuck or "
                  "overloaded)" if down else "",
            last_seen=now - (600 if down else 2), rtt_ms=1.4 + (i % 7) * 0.3, info=info,
            polled_at=now - 2,
        ))
    return states


@dataclass
class Endpoint:
    median_ms: float
    p95_ms: float
    raw: int
    gz: int


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _login(client: FlaskClient) -> None:
    page = client.get("/login")
    found = _CSRF.search(page.get_data(as_text=True))
    if found is None:
        raise RuntimeError("no csrf_token on the login page")
    resp = client.post("/login", data={"token": TOKEN, "csrf_token": found.group(1)})
    if resp.status_code != 302:
        raise RuntimeError(f"login failed: HTTP {resp.status_code}")


def measure(client: FlaskClient, path: str, headers: dict[str, str], requests: int,
            must_contain: str) -> Endpoint:
    raw = client.get(path, headers=headers)
    if raw.status_code != 200 or must_contain not in raw.get_data(as_text=True):
        raise RuntimeError(f"{path}: HTTP {raw.status_code} or missing {must_contain!r}")
    gz_headers = {**headers, "Accept-Encoding": "gzip"}
    times = []
    gz_size = 0
    for i in range(requests + 3):
        clock = time.perf_counter()
        resp = client.get(path, headers=gz_headers)
        elapsed = time.perf_counter() - clock
        if resp.headers.get("Content-Encoding") != "gzip":
            raise RuntimeError(f"{path} is not served gzip-compressed")
        gz_size = len(resp.data)
        if i >= 3:  # the first requests compile templates and warm caches
            times.append(elapsed * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return Endpoint(statistics.median(times), p95, len(raw.data), gz_size)


def run_pages(hosts: int, requests: int) -> tuple[Endpoint, Endpoint, Endpoint, int, int]:
    states = cluster_states(hosts)
    with tempfile.TemporaryDirectory(prefix="hm-bench-web-") as tmp:
        folder = Path(tmp)
        settings = Settings(
            path=folder / "settings.py", servers={s.name: s.address for s in states},
            token=TOKEN, secret="bench-secret-" + "x" * 32, data_dir=folder,
        )
        app: Flask = create_app(settings, poller=FakePoller(states), start_poller=False)
        try:
            browser = app.test_client()
            _login(browser)
            html = measure(browser, "/", {}, requests, states[-1].name)
            panels = measure(browser, "/?view=panels", {}, requests, states[-1].name)
            script = app.test_client()  # no session: the API with a Bearer token, as scripts do
            api = measure(script, "/api/v1/hosts", {"Authorization": f"Bearer {TOKEN}"},
                          requests, states[-1].name)
        finally:
            app.extensions["hmonitor"].close()
    # The original page carried the HostInfo list as base64 of each protobuf, joined.
    blob = ",".join(base64.b64encode(s.info.SerializeToString()).decode()
                    for s in states if s.info is not None).encode()
    return html, panels, api, len(blob), len(gzip.compress(blob, 6))


# --- output -----------------------------------------------------------------------------------


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # KiB on Linux


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _kb(n: int) -> str:
    return f"{n / 1000:.0f} KB"


def polling_row(n: int, kind: str, ours: OursResult, base: BaselineResult,
                cap: float) -> list[str]:
    median = statistics.median(ours.later)
    healthy = n - (n // HUNG_EVERY if kind else 0)
    if ours.stale:
        fresh = f"NO: {ours.stale} stale in {ours.rounds - ours.fresh_ok} rounds"
    else:
        fresh = f"{healthy}/{healthy}, all {ours.rounds} rounds"
    done = _s(statistics.median(ours.healthy_done))
    if base.finished:
        base_cell = _s(base.median)
        ratio = f"{base.median / median:.1f}x"
    else:
        stalled = base.rounds[-1]
        base_cell = f"> {cap:.0f} s (stalled, {stalled.answered}/{healthy} answered)"
        ratio = f"> {cap / median:.1f}x"
    if kind:
        limit = TIMEOUT + 0.5
        ok = max(ours.first, *ours.later) <= limit and not ours.stale
        target = f"<= {limit:.1f} s, fresh: {'ok' if ok else 'MISSED'}"
    elif n >= 1000:
        target = f"<= 1 s: {'ok' if median <= 1.0 else 'MISSED'}"
    else:
        target = ""
    return [f"{n:,}", KIND_LABEL[kind], _s(ours.first), _s(median), done, fresh, base_cell,
            ratio, target]


def print_overview(o: Overview, requests: int) -> None:
    """The overview at cluster scale, against the page as it was: every host as a panel, and
    /api/v1/hosts pulled every 5 s to rebuild it in the browser."""
    by_path = {r.path: r for r in o.responses}
    rows = []
    for path, what, target in (
        ("/", "overview (the cluster map)", "<= 300 KB on the wire"),
        ("/?view=panels", "baseline: every host as a panel", ""),
        ("/api/v1/hosts", "baseline: what the page pulled every 5 s", ""),
        ("/live, nothing new", "a refresh between rounds", ""),
        ("/metrics, first of a round", "Prometheus scrape, first of a round", "<= 500 ms"),
        ("/metrics", "Prometheus scrape, rest of the round", ""),
        ("/metrics, made after a round", "  making its text after each round (off the request "
         "path)", ""),
    ):
        r = by_path[path]
        if target.endswith("ms"):
            ok = "ok" if r.median_ms <= 500 else "MISSED"
        else:
            ok = ("ok" if r.gz <= 300_000 else "MISSED") if target else ""
        rows.append([what, path, f"{r.median_ms:.1f} ms", _kb(r.raw), _kb(r.gz),
                     f"{target}: {ok}" if target else ""])
    print_table(f"Overview at {o.hosts:,} hosts x 8 GPUs x 4 processes: the real hmonitor-web "
                f"(waitress) polling {o.hosts:,} agents every 5 s, over HTTP, median of "
                f"{requests}", ["response", "path", "time", "raw", "gzip (as served)", "target"],
                rows)
    b = o.browser
    if b is None:
        print(f"  {o.note}")
        return
    longest = max(b.long_tasks, default=0.0)
    worst_refresh = max(b.refresh_bytes, default=0)
    print()
    print_table(
        "The same in Chromium (1920 x 1080), 10 % of the GPUs changing every round, /metrics "
        "made after each round",
        ["measure", "value", "target"],
        [
            ["first paint", f"{b.first_paint_ms:.0f} ms", "<= 1 s: "
             + ("ok" if b.first_paint_ms <= 1000 else "MISSED")],
            ["page parsed, scripts run (DOMContentLoaded)", f"{b.loaded_ms:.0f} ms", ""],
            ["on the wire until the page was idle", _kb(b.wire_bytes), "<= 300 KB: "
             + ("ok" if b.wire_bytes <= 300_000 else "MISSED")],
            ["tiles shown", f"{b.tiles:,}", ""],
            [f"live refreshes ({len(b.refresh_bytes)}), on the wire each",
             ", ".join(_kb(n) for n in b.refresh_bytes), "<= 50 KB gzip: "
             + ("ok" if worst_refresh <= 50_000 else "MISSED")],
            ["a refresh, request to swapped in",
             ", ".join(f"{t:.0f} ms" for t in b.refresh_ms), ""],
            ["long tasks (> 50 ms) while loading and refreshing",
             ", ".join(f"{t:.0f}" for t in b.long_tasks) + " ms" if b.long_tasks else "none",
             "none over 200 ms: " + ("ok" if longest <= 200 else "MISSED")],
            ["baseline: the page pulled /api/v1/hosts every 5 s, gzip",
             _kb(by_path["/api/v1/hosts"].gz), ""],
        ],
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300, fewer repeats")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    biggest = max(plan.sizes)
    hung_needed = biggest // HUNG_EVERY
    raise_nofile(8 * (biggest + 2 * hung_needed) + 1024)
    started = time.perf_counter()
    rss_start = _rss_mb()

    poll_rows: list[list[str]] = []
    notes: list[str] = []
    with _sigterm_unwinds(), contextlib.ExitStack() as cleanup:
        farm = Farm(biggest, hung_needed)
        cleanup.callback(farm.close)
        cases = [(n, "") for n in plan.sizes] + [
            (n, kind) for kind in plan.hung_kinds for n in plan.sizes]
        ours: dict[tuple[int, str], OursResult] = {}
        for n, kind in cases:  # all of ours first, so the RSS below is the poller's alone
            later = plan.hung_rounds if kind else plan.healthy_rounds
            ours[n, kind] = run_ours(targets(farm, n, kind), later)
            notes.extend(f"a hung host as shown: {e}" for e in sorted(ours[n, kind].hung_errors))
        rss_polled = ours[biggest, ""].rss_mb
        rss_ours_max = max(r.rss_mb for r in ours.values())
        peak_ours = _peak_mb()
        farm_rss = farm.rss_mb()
        for n, kind in cases:
            base = run_baseline(targets(farm, n, kind), plan.baseline_rounds, plan.baseline_cap)
            poll_rows.append(polling_row(n, kind, ours[n, kind], base, plan.baseline_cap))
        rss_baseline = _rss_mb()
        cleanup.close()  # the agents are not needed for the pages
        html, panels, api, blob_raw, blob_gz = run_pages(100, plan.requests)
        # The overview at cluster scale: the real server and Chromium, while it polls.
        churn_farm = Farm(plan.overview_hosts, 0, churn=0.1)
        cleanup.callback(churn_farm.close)
        overview = run_overview({f"gpu-node-{i:04d}": f"127.0.0.1:{port}"
                                 for i, port in enumerate(churn_farm.healthy)})
        cleanup.close()

    cpus = os.cpu_count()
    title = (f"Polling rounds: loopback agents answering 8 GPUs x 4 processes, deadline "
             f"{TIMEOUT:g} s, {cpus} CPUs" + (" (quick)" if args.quick else ""))
    print_table(title, ["agents", "case", "ours 1st round", "ours later (median)",
                        "healthy done by", "healthy fresh", "baseline round",
                        "baseline/ours", "target"], poll_rows)
    for note in dict.fromkeys(notes):
        print(f"  {note}")
    print("  baseline: ThreadPoolExecutor(8), a fresh grpc.insecure_channel per call, no deadline;"
          f" a round not done after {plan.baseline_cap:.0f} s is stopped")
    print()

    def page_target(e: Endpoint) -> str:
        return "ok" if e.median_ms <= 60 and e.raw <= 500_000 else "MISSED"

    api_target = "ok" if api.median_ms <= 30 else "MISSED"
    print_table(
        f"Page and API: 100 hosts x 8 GPUs x 4 processes, Flask test client, "
        f"{plan.requests} requests each",
        ["response", "server time median", "p95", "raw", "gzip (as served)",
         "baseline: base64 HostInfo in page", "target"],
        [
            ["overview HTML  / (the cluster map)", f"{html.median_ms:.1f} ms",
             f"{html.p95_ms:.1f} ms", _kb(html.raw), _kb(html.gz),
             f"{_kb(blob_raw)} (gzip {_kb(blob_gz)})", f"<= 60 ms, <= 500 KB: {page_target(html)}"],
            ["overview HTML  /?view=panels", f"{panels.median_ms:.1f} ms",
             f"{panels.p95_ms:.1f} ms", _kb(panels.raw), _kb(panels.gz),
             f"{_kb(blob_raw)} (gzip {_kb(blob_gz)})",
             f"<= 60 ms, <= 500 KB: {page_target(panels)}"],
            ["JSON  /api/v1/hosts", f"{api.median_ms:.1f} ms", f"{api.p95_ms:.1f} ms",
             _kb(api.raw), _kb(api.gz), f"{_kb(blob_raw)} (gzip {_kb(blob_gz)})",
             f"<= 30 ms: {api_target}"],
        ],
    )
    print()

    print_overview(overview, plan.requests)
    print()

    print_table(
        "Dashboard process memory (this process: poller, Flask app, baseline)",
        ["when", "RSS"],
        [
            ["at start (gRPC, Flask and the app imported)", f"{rss_start:.0f} MB"],
            [f"after the {biggest:,}-agent rounds ({biggest:,} channels open)",
             f"{rss_polled:.0f} MB"],
            ["after our rounds, largest of all cases (hung ones included)",
             f"{rss_ours_max:.0f} MB"],
            ["peak while our pollers ran (ru_maxrss)", f"{peak_ours:.0f} MB"],
            ["after the baseline rounds", f"{rss_baseline:.0f} MB"],
            ["at the end (pages rendered)", f"{_rss_mb():.0f} MB"],
            ["peak of the whole run (ru_maxrss)", f"{_peak_mb():.0f} MB"],
            [f"agent farm process ({biggest + 2 * hung_needed:,} ports), for reference",
             f"{farm_rss:.0f} MB"],
        ],
    )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every process and port is gone by now: the finally blocks ran while this unwound.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
