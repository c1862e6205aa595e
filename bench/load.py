"""Load run: the real hmonitor-web under 100 concurrent clients for 10 minutes, start vs end.

    python bench/load.py [--minutes 10] [--clients 100] [--quick]

Three processes besides this one, so that none charges its CPU to another:

1. Agents: bench/_agents_farm.py serves N healthy loopback agents (real gRPC, 8 GPUs x 4
   processes, 2 disks) and a few hung ones (TCP that never answers, gRPC that never replies).
2. The server: the installed ``hmonitor-web`` from a temporary folder with a settings.py naming
   every agent (interval 5 s), ``--data-dir`` there and a free loopback port: it polls the agents
   and writes history all through the run, as in production (waitress, its default 8 threads).
3. The clients: bench/_load_clients.py, one thread and one keep-alive connection per client.
   Half are browser sessions (log in once through the real form, then pages and the JSON the
   pages use, ~1 s think time), half API scripts with a Bearer token (hosts, one host, a GPU's
   history, users, notes, now and then a note written). Anything but the expected status, any
   exception or timeout is an error.

This process samples the server every 2 s (VmRSS, VmHWM, threads from /proc/<pid>/status, CPU
from /proc/<pid>/stat, open descriptors) and the CPU of every process involved. The polling round
time is not served over HTTP; the age of the up hosts' data in /api/v1/hosts answers stands in
for it (it stays under interval + round time while the poller keeps up).

Baseline in the same run: the first minute, compared with the last (ratio last/first), so a leak
or a slowdown shows as a ratio above 1. Under load, latency is mostly queueing; so every endpoint
is also timed one request at a time just before and just after the load, which shows what the
history written meanwhile costs each endpoint. After the load the server rests 20 s and its RSS
is read again; the history database's largest tables and indexes are listed.
--quick: 1 minute, 30 agents, 20-second windows.
Exits 1 if any request failed or the server misbehaved (died, did not stop, logged an error).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import math
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _agents_farm import raise_nofile  # noqa: E402
from _load_clients import Config, Results, probe  # noqa: E402
from _table import print_table  # noqa: E402
from dashboard import Farm, _sigterm_unwinds  # noqa: E402

TOKEN = "load-token-0123456789"
INTERVAL = 5.0  # the dashboard's polling interval: "a few seconds"
SAMPLE_EVERY = 2.0  # seconds between samples of the server process
REQUEST_TIMEOUT = 30.0  # a client waiting longer counts the request as an error
STAGGER = 5.0  # seconds over which the clients start, as people arrive
PROBE_REPEAT = 5  # requests per endpoint, one at a time, before and after the load
IDLE_AFTER = 20.0  # seconds the server rests after the load before its RSS is read again
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1e6


@dataclass(frozen=True)
class Plan:
    minutes: float
    clients: int
    agents: int
    hung: int  # of each kind (TCP, gRPC)
    window: float  # seconds of the start and end windows compared
    think: float


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "hmonitor-web"  # the console script, as deployed
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "hmonitor.web.cli"]


@dataclass(frozen=True)
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    folder: Path
    log: Path

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"


def write_settings(folder: Path, servers: dict[str, str], history_port: int) -> Path:
    path = folder / "settings.py"
    path.write_text(
        f"servers = {servers!r}\n"
        f"token = {TOKEN!r}\n"
        f"secret = {'load-secret-' + 'x' * 40!r}\n"
        f"interval = {INTERVAL!r}\n"
        "timeout = 3.0\n"
        # Not the default 9204: another dashboard (a test, a demo) may hold it.
        f"history_addr = '127.0.0.1:{history_port}'\n",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def running_server(folder: Path, servers: dict[str, str]) -> Iterator[Server]:
    settings = write_settings(folder, servers, free_port())
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*server_command(), "--settings", str(settings), "--addr", "127.0.0.1",
             "--port", str(port), "--data-dir", str(folder / "data")],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
        )
    server = Server(proc, port, folder, log)
    try:
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(server: Server, healthy: int, limit: float = 90.0) -> float:
    """Until the server answers and its first round has every healthy agent up; seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if server.proc.poll() is not None:
            raise RuntimeError(f"hmonitor-web exited ({server.proc.returncode}):\n"
                               + server.log.read_text(errors="replace")[-3000:])
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = get(server.port, "/api/v1/hosts")
            if status == 200 and sum(h["up"] for h in json.loads(body)["hosts"]) >= healthy:
                return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"hmonitor-web not ready after {limit:.0f} s:\n"
                       + server.log.read_text(errors="replace")[-3000:])


# --- sampling ------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (the command name may hold spaces: split after its ')')."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kb: int
    hwm_kb: int
    threads: int
    fds: int
    cpu: dict[str, float]  # cumulative CPU seconds by process role
    busy: float  # cumulative busy CPU seconds of the whole machine


def sample(pids: dict[str, int]) -> Sample:
    server = pids["server"]
    status = proc_status(server)
    cpu = {}
    for role, pid in pids.items():
        with contextlib.suppress(OSError):  # the clients' process may just have ended
            cpu[role] = cpu_seconds(pid)
    return Sample(t=time.time(), rss_kb=status["VmRSS"], hwm_kb=status["VmHWM"],
                  threads=status["Threads"], fds=len(os.listdir(f"/proc/{server}/fd")),
                  cpu=cpu, busy=machine_busy())


# --- results -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    requests: list[tuple[float, float, str, bool]]
    errors: list[tuple[float, int, str, str, str]]
    error_count: int
    reconnects: list[float]
    polls: list[tuple[float, int, float, float]]
    samples: list[Sample] = field(default_factory=list)


def kind(endpoint: str) -> str:
    return "API" if " /api/" in endpoint else "page"


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]


def nearest(samples: Sequence[Sample], t: float) -> Sample:
    return min(samples, key=lambda s: abs(s.t - t))


def cpu_pct(samples: Sequence[Sample], a: float, b: float, role: str) -> float:
    s0, s1 = nearest(samples, a), nearest(samples, b)
    if s1.t <= s0.t or role not in s0.cpu or role not in s1.cpu:
        return float("nan")
    return 100 * (s1.cpu[role] - s0.cpu[role]) / (s1.t - s0.t)


def busy_cores(samples: Sequence[Sample], a: float, b: float) -> float:
    s0, s1 = nearest(samples, a), nearest(samples, b)
    return (s1.busy - s0.busy) / (s1.t - s0.t) if s1.t > s0.t else float("nan")


@dataclass(frozen=True)
class Window:
    label: str
    a: float
    b: float

    def has(self, t: float) -> bool:
        return self.a <= t < self.b


def window_column(o: Outcome, w: Window) -> dict[str, float]:
    """One column of the start-vs-end table."""
    col: dict[str, float] = {}
    inside = [r for r in o.requests if w.has(r[0])]
    col["requests"] = len(inside)
    col["requests/s"] = len(inside) / (w.b - w.a)
    for k in ("page", "API"):
        ms = sorted(r[1] * 1000 for r in inside if kind(r[2]) == k)
        col[f"{k} requests"] = len(ms)
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (1.0, "max")):
            col[f"{k} latency {name} (ms)"] = pct(ms, q)
    col["errors"] = sum(1 for r in inside if not r[3])
    col["keep-alive reconnects"] = sum(1 for t in o.reconnects if w.has(t))
    samples = [s for s in o.samples if w.a - SAMPLE_EVERY <= s.t <= w.b + SAMPLE_EVERY]
    col["server RSS at start (MB)"] = nearest(o.samples, w.a).rss_kb * 1024 / MB
    col["server RSS at end (MB)"] = nearest(o.samples, w.b).rss_kb * 1024 / MB
    col["server RSS max (MB)"] = max(s.rss_kb for s in samples) * 1024 / MB
    col["server threads at end"] = nearest(o.samples, w.b).threads
    col["server open fds at end"] = nearest(o.samples, w.b).fds
    col["server CPU %"] = cpu_pct(o.samples, w.a, w.b, "server")
    col["clients CPU %"] = cpu_pct(o.samples, w.a, w.b, "clients")
    col["agents CPU %"] = cpu_pct(o.samples, w.a, w.b, "agents")
    col["machine busy (cores)"] = busy_cores(o.samples, w.a, w.b)
    # Whatever else runs on this machine meanwhile (other jobs): noise to judge the ratios by.
    ours = sum(cpu_pct(o.samples, w.a, w.b, role) for role in ("server", "clients", "agents",
                                                                 "bench"))
    col["other processes (cores)"] = col["machine busy (cores)"] - ours / 100
    polls = [p for p in o.polls if w.has(p[0])]
    col["hosts up (min seen)"] = min((p[1] for p in polls), default=float("nan"))
    col["up hosts' data age p50 (s)"] = (statistics.median(p[2] for p in polls)
                                         if polls else float("nan"))
    col["up hosts' data age max (s)"] = max((p[3] for p in polls), default=float("nan"))
    return col


def ratio(first: float, last: float) -> str:
    if math.isnan(first) or math.isnan(last) or first == 0:  # nothing to compare with
        return ""
    return f"{last / first:.2f}x"


def endpoint_rows(o: Outcome, first: Window, last: Window) -> list[list[object]]:
    by: dict[str, list[tuple[float, float, str, bool]]] = {}
    for r in o.requests:
        by.setdefault(r[2], []).append(r)
    rows: list[list[object]] = []
    for endpoint in sorted(by, key=lambda e: (kind(e), e)):
        rs = by[endpoint]
        a = sorted(r[1] * 1000 for r in rs if first.has(r[0]))
        b = sorted(r[1] * 1000 for r in rs if last.has(r[0]))
        rows.append([endpoint, kind(endpoint), len(rs), pct(a, 0.5), pct(b, 0.5), pct(a, 0.95),
                     pct(b, 0.95), ratio(pct(a, 0.95), pct(b, 0.95)),
                     max(r[1] for r in rs) * 1000, sum(1 for r in rs if not r[3])])
    return rows


_HOST_IN_URL = re.compile(r"/gpu-[\w-]+")
_LOG_LEVEL = re.compile(r" (WARNING|ERROR|CRITICAL) ([\w.]+): (.*)")


def server_log_problems(log: Path) -> Counter[str]:
    """Warnings and errors the server logged, by logger and message (numbers folded)."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_LEVEL.search(line)
        if m:
            found[f"{m.group(1)} {m.group(2)}: {re.sub(r'[0-9.]+', 'N', m.group(3))[:100]}"] += 1
        elif line.startswith("Traceback"):
            found["Traceback"] += 1
    return found


def file_mb(path: Path) -> float:
    return path.stat().st_size / MB if path.exists() else 0.0


def db_breakdown(path: Path, top: int = 8) -> list[list[object]]:
    """The largest tables and indexes of the history database: MB, and rows for tables."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows: list[list[object]] = []
        for name, size in conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT ?",
                (top,)):
            count: object = ""
            if name in tables:
                count = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
            what = "table" if name in tables else "schema" if name == "sqlite_schema" else "index"
            rows.append([name, what, size / MB, count])
        return rows
    finally:
        conn.close()


def probe_rows(before: Results, after: Results) -> list[list[object]]:
    def medians(r: Results) -> dict[str, float]:
        by: dict[str, list[float]] = {}
        for _, seconds, endpoint, _ in r.requests:
            by.setdefault(endpoint, []).append(seconds * 1000)
        return {e: statistics.median(v) for e, v in by.items()}

    a, b = medians(before), medians(after)
    return [[e, kind(e), a[e], b.get(e, math.nan), ratio(a[e], b.get(e, math.nan))]
            for e in sorted(a, key=lambda e: (kind(e), e))]


# --- the run -------------------------------------------------------------------------------------


def client_config(server: Server, plan: Plan, hosts: list[str], start_at: float) -> Config:
    return Config(host="127.0.0.1", port=server.port, token=TOKEN, clients=plan.clients,
                  start_at=start_at, duration=plan.minutes * 60, think=plan.think,
                  stagger=STAGGER, timeout=REQUEST_TIMEOUT, hosts=hosts,
                  note_hosts=hosts[:10], seed=1)


def run_clients(server: Server, plan: Plan, hosts: list[str], start_at: float,
                pids: dict[str, int]) -> Outcome:
    config_path = server.folder / "clients.json"
    results_path = server.folder / "results.json"
    config_path.write_text(json.dumps(dataclasses.asdict(
        client_config(server, plan, hosts, start_at))))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_load_clients.py"), str(config_path),
         str(results_path)], start_new_session=True)
    pids["clients"] = proc.pid
    samples: list[Sample] = []
    limit = start_at + STAGGER + plan.minutes * 60 + REQUEST_TIMEOUT + 60
    try:
        next_report = start_at + 60
        while proc.poll() is None:
            if server.proc.poll() is not None:
                raise RuntimeError(f"hmonitor-web died during the run "
                                   f"(exit {server.proc.returncode}); see {server.log}")
            if time.time() > limit:
                raise RuntimeError("the clients did not finish in time")
            samples.append(sample(pids))
            if time.time() >= next_report:  # a sign of life in a 10-minute run
                s = samples[-1]
                print(f"  {(s.t - start_at) / 60:4.1f} min: server RSS "
                      f"{s.rss_kb * 1024 / MB:.0f} MB, threads {s.threads}, fds {s.fds}",
                      flush=True)
                next_report += 60
            time.sleep(SAMPLE_EVERY)
        samples.append(sample(pids))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the clients' process failed (exit {proc.returncode})")
    raw: dict[str, Any] = json.loads(results_path.read_text())
    return Outcome(
        requests=[tuple(r) for r in raw["requests"]],
        errors=[tuple(e) for e in raw["errors"]],
        error_count=raw["error_count"], reconnects=raw["reconnects"],
        polls=[tuple(p) for p in raw["polls"]],
        samples=samples,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (10)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean seconds a client waits between requests (1)")
    parser.add_argument("--quick", action="store_true",
                        help="a 1-minute smoke run with 30 agents and 20-second windows")
    args = parser.parse_args()
    minutes = 1.0 if args.quick and args.minutes == 10.0 else args.minutes
    if minutes <= 0 or args.clients < 1 or args.think < 0:
        parser.error("--minutes and --clients must be positive, --think not negative")
    plan = Plan(minutes=minutes, clients=args.clients, agents=30 if args.quick else 100,
                hung=1 if args.quick else 2, window=min(60.0, minutes * 60 / 3),
                think=args.think)
    # Children inherit the limit: 100+ client sockets, agent channels, agent ports.
    raise_nofile(8 * (plan.clients + plan.agents) + 1024)
    started = time.time()

    with _sigterm_unwinds(), contextlib.ExitStack() as cleanup:
        farm = Farm(plan.agents, plan.hung)
        cleanup.callback(farm.close)
        servers = {f"gpu-node-{i:03d}": f"127.0.0.1:{port}"
                   for i, port in enumerate(farm.healthy)}
        hung = farm.hung_tcp + farm.hung_grpc
        servers.update({f"gpu-hung-{i:02d}": f"127.0.0.1:{port}" for i, port in enumerate(hung)})
        folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hm-load-")))
        server = cleanup.enter_context(running_server(folder, servers))
        ready_s = wait_ready(server, plan.agents)
        pids = {"server": server.proc.pid, "agents": farm.proc.pid, "bench": os.getpid()}
        idle = sample(pids)
        db = server.data_dir / "history.sqlite"
        db_start = file_mb(db)
        print(f"hmonitor-web ready in {ready_s:.1f} s ({len(servers)} hosts, {len(hung)} hung); "
              f"{plan.clients} clients for {plan.minutes:g} min ...", flush=True)
        probe_cfg = client_config(server, plan, list(servers), time.time())
        probe_cfg = dataclasses.replace(probe_cfg, duration=3600.0)
        before = probe(probe_cfg, PROBE_REPEAT)
        start_at = time.time() + 1.0
        outcome = run_clients(server, plan, list(servers), start_at, pids)
        time.sleep(5)  # requests still queued in the server drain
        after = probe(dataclasses.replace(probe_cfg, start_at=time.time()), PROBE_REPEAT)
        time.sleep(IDLE_AFTER)
        rested = sample(pids)
        db_end, wal_end = file_mb(db), file_mb(db.with_name(db.name + "-wal"))
        stop_server(server)
        server_exit = server.proc.returncode
        problems = server_log_problems(server.log)
        farm_rss = farm.rss_mb()
        breakdown = db_breakdown(db)

    end_at = start_at + plan.minutes * 60
    first = Window("first", start_at, start_at + plan.window)
    last = Window("last", end_at - plan.window, end_at)
    cols = [window_column(outcome, first), window_column(outcome, last)]
    span = f"{plan.window:.0f} s" if plan.window != 60 else "minute"
    title = (f"hmonitor-web under load: {plan.clients} clients (half browser sessions, half API "
             f"scripts, ~{plan.think:g} s think time), {plan.agents} agents x 8 GPUs + "
             f"{len(hung)} hung, polled every {INTERVAL:g} s; {plan.minutes:g} min on "
             f"{os.cpu_count()} CPUs" + (" (quick)" if args.quick else ""))
    print()
    print_table(title, ["", f"first {span}", f"last {span}", "last/first"],
                [[name, cols[0][name], cols[1][name], ratio(cols[0][name], cols[1][name])]
                 for name in cols[0]])
    print()
    print_table("Per endpoint (whole run; latency in ms, first vs last window)",
                ["endpoint", "kind", "requests", "p50 first", "p50 last", "p95 first",
                 "p95 last", "p95 last/first", "max", "errors"],
                endpoint_rows(outcome, first, last))
    print()
    print_table(f"Server time per endpoint, one request at a time, median of {PROBE_REPEAT} (ms): "
                "before the load (empty history) and after it (its history written)",
                ["endpoint", "kind", "before", "after", "after/before"],
                probe_rows(before, after))
    print()
    end = outcome.samples[-1]
    print_table("Whole run", ["", "value"], [
        ["requests", len(outcome.requests)],
        ["errors (failed requests and client faults)", outcome.error_count],
        ["errors in the one-at-a-time probes", before.error_count + after.error_count],
        ["keep-alive reconnects", len(outcome.reconnects)],
        ["server RSS idle, before the load (MB)", idle.rss_kb * 1024 / MB],
        ["server RSS at the end of the load (MB)", end.rss_kb * 1024 / MB],
        ["server RSS max, sampled every 2 s (MB)",
         max(s.rss_kb for s in outcome.samples) * 1024 / MB],
        [f"server RSS after {IDLE_AFTER:.0f} s at rest after the load (MB)",
         rested.rss_kb * 1024 / MB],
        ["server peak RSS, VmHWM (MB)", rested.hwm_kb * 1024 / MB],
        ["server threads idle / end", f"{idle.threads} / {end.threads}"],
        ["server open fds idle / end", f"{idle.fds} / {end.fds}"],
        ["history.sqlite at load start / end (MB)", f"{db_start:.1f} / {db_end:.1f}"],
        ["history.sqlite-wal at the end (MB)", wal_end],
        ["agents' process RSS (MB), for reference", farm_rss],
        ["server exit status after SIGTERM", server_exit],
    ])
    print()
    print_table("History database after the run, largest parts", ["name", "", "MB", "rows"],
                breakdown)
    if problems:
        print("\nThe server logged:")
        for line, n in problems.most_common(10):
            print(f"  {n:6d} x {line}")
    for label, r in (("before", before), ("after", after)):
        for _, client, method, url, what in r.errors[:3]:
            print(f"  probe {label}: client {client}  {method} {url}: {what[:160]}")
    if outcome.error_count:
        print(f"\nErrors: {outcome.error_count}; by endpoint and cause:")
        causes = Counter(f"{e[2]} {_HOST_IN_URL.sub('/<name>', e[3].split('?')[0])}: "
                         f"{e[4][:80]}" for e in outcome.errors)
        for line, n in causes.most_common(10):
            print(f"  {n:6d} x {line}")
        print("First errors:")
        for t, client, method, url, what in outcome.errors[:8]:
            print(f"  +{t - start_at:6.1f} s  client {client:3d}  {method} {url}: {what[:160]}")
    print(f"\n(total {time.time() - started:.0f} s)")
    bad_log = any(not line.startswith("WARNING") for line in problems)
    failed = outcome.error_count + before.error_count + after.error_count
    return 1 if failed or server_exit != 0 or bad_log else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
