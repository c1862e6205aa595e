"""Prometheus /metrics benchmark: the agent's scrape time and size, DCGM series per GPU, and the
dashboard's /metrics at 1,000 hosts.

    python bench/metrics.py [--scrapes N] [--procs-per-gpu N] [--hosts N]

(a) The real agent as a subprocess on the fake libnvidia-ml.so.1, 8 GPUs x 64 processes (every
process a real `sleep`, so owners, expiry and command lines are read for real), with
--metrics-addr and --metrics-pids: p50/p99 of N scrapes over HTTP (a new connection each, plain
and gzip as Prometheus asks), the exposition's size raw and gzipped. Baseline in the same run: the
same agent's GetInfo over gRPC (p50/p99) and its HostInfo's serialized size.

(b) DCGM series per GPU: ours against dcgm-exporter's default counter set (DCGM_EXPORTER_FIELDS).

(c) The dashboard's GET /metrics (where the dashboard has one) for 1,000 busy hosts
(tests/builders.py busy_host: 8 GPUs x 4 processes) through the Flask test client: the first
scrape ever makes the text on request; after a polling round (new states) the round listeners
make it off the request path, as the real poller's notifier thread does, and the scrape that
follows takes it ready; later ones are served from the round's text. Baseline in the same run:
the first GET /api/v1/hosts (JSON) of the same cluster. bench/dashboard.py measures the same
through the real server polling 1,000 agents.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from _gpuhost import gpu_host  # noqa: E402
from _table import print_table  # noqa: E402
from agentproc import free_port, start_agent, wait_listening  # noqa: E402
from builders import FakePoller, busy_host, up  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from webkit import BEARER, make_app  # noqa: E402

from hmonitor._pb import hm_pb2, hm_pb2_grpc  # noqa: E402
from hmonitor.web.state import get_state  # noqa: E402

# dcgm-exporter's default counter set: the DCGM_FI_* rows of etc/default-counters.csv in
# github.com/NVIDIA/dcgm-exporter at commit d5e5f510a1b6b393f39a43293ccd9dc985defc79
# (2026-05-12), not commented out: 26 fields, of which DCGM_FI_DRIVER_VERSION is of type
# "label" (a label on the other series, not a series of its own), so 25 series per GPU.
DCGM_EXPORTER_FIELDS = 25


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p50(ms: list[float]) -> float:
    return statistics.median(ms)


def p99(ms: list[float]) -> float:
    return statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else ms[0]


def scrape(url: str, gz: bool) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gz else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: bytes = resp.read()
        assert resp.status == 200
        assert (resp.headers.get("Content-Encoding") == "gzip") == gz
        return body


def dcgm_series_per_gpu(text: str) -> int:
    per_gpu: dict[str, int] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("DCGM_"):
                per_gpu[s.labels["gpu"]] = per_gpu.get(s.labels["gpu"], 0) + 1
    return max(per_gpu.values())


def agent_part(scrapes: int, per_gpu: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_name, gpu_host(Path(tmp_name), per_gpu) as env:
        tmp = Path(tmp_name)
        port = free_port()
        agent = start_agent(tmp, ["--log-level", "WARNING", "--metrics-pids",
                                  "--metrics-addr", f"127.0.0.1:{port}"], env=env)
        try:
            wait_listening(agent)
            channel = grpc.insecure_channel(agent.target)
            stub = hm_pb2_grpc.HostMonitorStub(channel)
            req = hm_pb2.RequestInfo()
            info = stub.GetInfo(req, timeout=10)
            counts = [len(g.procs) for g in info.gpus]
            assert counts == [per_gpu] * 8, f"processes per GPU: {counts}"
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 10
            while True:  # the metrics port may open just after gRPC's
                try:
                    text = scrape(url, False)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            compressed = scrape(url, True)
            assert gzip.decompress(compressed).count(b"\n") > 0
            plain = timed(lambda: scrape(url, False), scrapes)
            gzipped = timed(lambda: scrape(url, True), scrapes)
            grpc_ms = timed(lambda: stub.GetInfo(req, timeout=5), scrapes)
            channel.close()
        finally:
            agent.stop()
    decoded = text.decode()
    return {
        "plain_p50": p50(plain), "plain_p99": p99(plain),
        "gzip_p50": p50(gzipped), "gzip_p99": p99(gzipped),
        "grpc_p50": p50(grpc_ms), "grpc_p99": p99(grpc_ms),
        "raw_kb": len(text) / 1000, "gzip_kb": len(compressed) / 1000,
        "proto_kb": info.ByteSize() / 1000,
        "series": sum(len(f.samples) for f in text_string_to_metric_families(decoded)),
        "dcgm_per_gpu": dcgm_series_per_gpu(decoded),
    }


def dashboard_part(hosts: int) -> dict[str, float] | None:
    """The dashboard's /metrics at ``hosts`` hosts: the first scrape ever (it makes the text),
    then a polling round (new states, the round listeners make the text after it, as the real
    poller's notifier thread does) and the scrape that follows it. None where the dashboard
    has no /metrics yet."""
    with tempfile.TemporaryDirectory() as tmp_name:
        states = [up(f"gpu-node-{i:03d}", busy_host(i)) for i in range(hosts)]
        app = make_app(Path(tmp_name), states)
        if not any(r.rule == "/metrics" for r in app.url_map.iter_rules()):
            return None
        client = app.test_client()
        start = time.perf_counter()
        resp = client.get("/metrics", headers=BEARER)
        first = (time.perf_counter() - start) * 1000
        assert resp.status_code == 200, resp.status_code
        size = len(resp.data)
        state = get_state(app)
        poller = state.poller
        assert isinstance(poller, FakePoller)
        poller.states = [dataclasses.replace(h) for h in states]  # a new round's states
        start = time.perf_counter()
        for listener in state.round_listeners:
            listener(poller.hosts(), time.time())
        after_round = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        resp = client.get("/metrics", headers=BEARER)
        scrape_ms = (time.perf_counter() - start) * 1000
        # the same text, and the line saying how long the last one took to make
        assert resp.status_code == 200 and 0 < len(resp.data) - size < 400
        again = timed(lambda: client.get("/metrics", headers=BEARER).data, 5)
        api = timed(lambda: client.get("/api/v1/hosts", headers=BEARER).data, 1)
        state.close()
        return {"first_ms": first, "round_ms": after_round, "scrape_ms": scrape_ms,
                "again_ms": p50(again), "api_ms": api[0], "mb": size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200, metavar="N",
                        help="scrapes (and GetInfo calls) timed [%(default)s]")
    parser.add_argument("--procs-per-gpu", type=int, default=64, metavar="N",
                        help="real processes per GPU on the agent, at most 128 [%(default)s]")
    parser.add_argument("--hosts", type=int, default=1000, metavar="N",
                        help="hosts behind the dashboard's /metrics [%(default)s]")
    args = parser.parse_args()

    a = agent_part(args.scrapes, args.procs_per_gpu)
    d = dashboard_part(args.hosts)
    n = args.scrapes
    rows: list[list[object]] = [
        [f"agent /metrics p50, {n} scrapes (ms)", f"{a['plain_p50']:.2f}",
         f"{a['grpc_p50']:.2f}", "GetInfo p50", "<= 5"],
        ["agent /metrics p99 (ms)", f"{a['plain_p99']:.2f}", f"{a['grpc_p99']:.2f}",
         "GetInfo p99", ""],
        ["agent /metrics gzip p50 (ms)", f"{a['gzip_p50']:.2f}", "", "", "<= 5"],
        ["agent /metrics gzip p99 (ms)", f"{a['gzip_p99']:.2f}", "", "", ""],
        ["agent /metrics size, raw (kB)", f"{a['raw_kb']:.1f}", f"{a['proto_kb']:.1f}",
         "HostInfo serialized", ""],
        ["agent /metrics size, gzip (kB)", f"{a['gzip_kb']:.1f}", "", "", ""],
        ["agent series per scrape", f"{a['series']:.0f}", "", "", ""],
        ["DCGM_* series per GPU", f"{a['dcgm_per_gpu']:.0f}", str(DCGM_EXPORTER_FIELDS),
         "dcgm-exporter defaults", f"<= {DCGM_EXPORTER_FIELDS}"],
    ]
    label = f"dashboard /metrics, {args.hosts:,} hosts"
    if d is None:
        rows.append([f"{label} (ms)", "n/a (not built yet)", "", "", "<= 500"])
    else:
        rows += [
            [f"{label}, first scrape ever: made on request (ms)", f"{d['first_ms']:.0f}",
             f"{d['api_ms']:.0f}", "GET /api/v1/hosts", ""],
            [f"{label}, made after a round, off the request path (ms)",
             f"{d['round_ms']:.0f}", "", "", ""],
            [f"{label}, the scrape after that round (ms)", f"{d['scrape_ms']:.1f}", "", "",
             "<= 500"],
            [f"{label}, again same round (ms)", f"{d['again_ms']:.1f}", "", "", ""],
            [f"{label}, size (MB)", f"{d['mb']:.1f}", "", "", ""],
        ]
    print_table(
        f"Prometheus /metrics: agent 8 fake H200 x {args.procs_per_gpu} processes "
        f"(--metrics-pids, default cache), loopback, Python client, {os.cpu_count()} CPUs; "
        f"dashboard {args.hosts:,} x 8 GPUs x 4 processes, Flask test client",
        ["metric", "hmonitor", "baseline", "baseline is", "target"],
        rows,
    )


if __name__ == "__main__":
    main()
