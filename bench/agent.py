"""Agent benchmark: GetInfo latency and throughput, cold collection, RSS and idle CPU.

    python bench/agent.py [--quick]

    python bench/agent.py --procs-per-gpu 64

Runs the real agent as a subprocess on the fake libnvidia-ml.so.1 (8 GPUs x 4 processes, every
process a real one, so owners, expiry, command lines and cgroups are read for real) and drives
it with the Python gRPC client. Baseline in the same run: the same agent collecting on every
call (--cache-ttl 0). To compare with an older agent, run this file with PYTHONPATH naming that
tree's src/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from _gpuhost import gpu_host  # noqa: E402
from _table import print_table  # noqa: E402
from agentproc import Agent, start_agent  # noqa: E402

from hmonitor._pb import hm_pb2, hm_pb2_grpc  # noqa: E402


@dataclass
class Result:
    cold_ms: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: dict[int, float] | None = None
    errors: int = 0
    rss_start_mb: float = 0.0
    rss_warm_mb: float = 0.0
    rss_after_mb: float = 0.0
    idle_cpu_pct: float = 0.0


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1e6


def latency(stub: hm_pb2_grpc.HostMonitorStub, calls: int) -> list[float]:
    req = hm_pb2.RequestInfo()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        stub.GetInfo(req, timeout=5)
        out.append((time.perf_counter() - start) * 1000)
    return out


def throughput(target: str, clients: int, seconds: float) -> tuple[float, int]:
    """Calls/s with `clients` calls kept in flight at all times (async futures, one channel
    per client as separate dashboards would have), and the number of failed calls."""
    channels = [grpc.insecure_channel(target) for _ in range(clients)]
    stubs = [hm_pb2_grpc.HostMonitorStub(ch) for ch in channels]
    req = hm_pb2.RequestInfo()
    for stub in stubs:  # connect first: measure serving, not connection set-up
        stub.GetInfo(req, timeout=5)
    done = 0
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    finished = threading.Event()
    in_flight = [0]

    def fire(stub: hm_pb2_grpc.HostMonitorStub) -> None:
        fut = stub.GetInfo.future(req, timeout=5)

        def on_done(f: grpc.Future[hm_pb2.HostInfo]) -> None:
            nonlocal done, errors
            with lock:
                if f.exception() is None:
                    done += 1
                else:
                    errors += 1
            if time.perf_counter() < deadline:
                fire(stub)
            else:
                with lock:
                    in_flight[0] -= 1
                    if in_flight[0] == 0:
                        finished.set()

        fut.add_done_callback(on_done)

    start = time.perf_counter()
    in_flight[0] = clients
    for stub in stubs:
        fire(stub)
    finished.wait(seconds + 30)
    elapsed = time.perf_counter() - start
    for ch in channels:
        ch.close()
    return done / elapsed, errors


def run(agent: Agent, quick: bool, per_gpu: int) -> Result:
    res = Result(rps={})
    channel = grpc.insecure_channel(agent.target)
    stub = hm_pb2_grpc.HostMonitorStub(channel)
    start = time.perf_counter()
    info = stub.GetInfo(hm_pb2.RequestInfo(), timeout=10)
    res.cold_ms = (time.perf_counter() - start) * 1000
    counts = [len(g.procs) for g in info.gpus]
    assert counts == [per_gpu] * 8, f"processes per GPU: {counts}"
    assert all(p.username for g in info.gpus for p in g.procs)
    res.rss_start_mb = _rss_mb(agent.proc.pid)
    lat = latency(stub, 500 if quick else 3000)
    res.p50_ms = statistics.median(lat)
    res.p99_ms = statistics.quantiles(lat, n=100)[98]
    assert res.rps is not None
    for clients in (8, 64):
        res.rps[clients], errs = throughput(agent.target, clients, 2.0 if quick else 5.0)
        res.errors += errs
    # Growth is judged from here: the thread pool and gRPC's buffers are now at full size.
    res.rss_warm_mb = _rss_mb(agent.proc.pid)
    latency(stub, 1000 if quick else 10_000)
    res.rss_after_mb = _rss_mb(agent.proc.pid)
    channel.close()
    proc = psutil.Process(agent.proc.pid)
    idle = 5.0 if quick else 30.0
    before = proc.cpu_times()
    time.sleep(idle)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    res.idle_cpu_pct = 100 * used / idle
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 5 s idle (smoke run)")
    parser.add_argument("--procs-per-gpu", type=int, default=4, metavar="N",
                        help="real processes per GPU, at most 128 [%(default)s]")
    args = parser.parse_args()
    per_gpu = args.procs_per_gpu

    results = {}
    with tempfile.TemporaryDirectory() as tmp_name, gpu_host(Path(tmp_name), per_gpu) as env:
        for label, ttl in (("hmonitor (1 s cache)", "1"), ("baseline: no cache", "0")):
            agent = start_agent(Path(tmp_name), ["--cache-ttl", ttl, "--log-level", "WARNING"],
                                env=env)
            try:
                results[label] = run(agent, args.quick, per_gpu)
            finally:
                agent.stop()

    ours, base = results["hmonitor (1 s cache)"], results["baseline: no cache"]
    assert ours.rps is not None and base.rps is not None

    def gain(lower_is_better: bool, a: float, b: float) -> str:
        """How many times better ours is than the baseline."""
        if not a or not b:
            return ""
        return f"{(b / a if lower_is_better else a / b):.1f}x"

    calls = 1000 if args.quick else 10_000
    # (label, our value, baseline value, format, lower is better (None: no ratio), target)
    spec: list[tuple[str, float, float, str, bool | None, str]] = [
        ("cold first GetInfo (ms)", ours.cold_ms, base.cold_ms, ".1f", None, ""),
        ("GetInfo p50, 1 client (ms)", ours.p50_ms, base.p50_ms, ".2f", True, "<= 1.0"),
        ("GetInfo p99, 1 client (ms)", ours.p99_ms, base.p99_ms, ".2f", True, "<= 3.0"),
        ("calls/s, 8 clients", ours.rps[8], base.rps[8], ".0f", False, ""),
        ("calls/s, 64 clients", ours.rps[64], base.rps[64], ".0f", False, ">= 1000"),
        ("failed calls", ours.errors, base.errors, ".0f", None, "0"),
        ("RSS after first call (MB)", ours.rss_start_mb, base.rss_start_mb, ".1f", None, "<= 45"),
        ("RSS after the throughput runs (MB)", ours.rss_warm_mb, base.rss_warm_mb, ".1f", None,
         ""),
        (f"RSS after {calls:,} more calls (MB)", ours.rss_after_mb, base.rss_after_mb, ".1f",
         None, "no growth"),
        ("CPU while idle (%)", ours.idle_cpu_pct, base.idle_cpu_pct, ".2f", None, "< 1"),
    ]
    rows = [
        [label, format(a, fmt), format(b, fmt), "" if low is None else gain(low, a, b), target]
        for label, a, b, fmt, low, target in spec
    ]
    print_table(
        f"Agent: 8 fake H200 x {per_gpu} processes, loopback, Python client, "
        f"{os.cpu_count()} CPUs"
        + (" (quick)" if args.quick else ""),
        ["metric", "hmonitor", "baseline", "gain", "target"],
        rows,
    )


if __name__ == "__main__":
    main()
