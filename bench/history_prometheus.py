"""History from Prometheus against SQLite: the dashboard's sparklines and one GPU's chart.

    python bench/history_prometheus.py [--quick]

The same synthetic cluster goes into both backends: 100 hosts x 8 H200s x 4 processes
(tests/builders.py `cluster`, utilization moving with the round), one round every 10 s over
the last hour (360 rounds; --quick: 10 minutes, 60 rounds).

* SQLite (the baseline): every round through `SqliteHistory.ingest`, `maintain` every 120 s of
  data as the recorder schedules it.
* Prometheus 2.42 (/usr/bin/prometheus): the same rounds turned into the dashboard's own GPU
  families (`HostFamilies(extra_labels=["host"])`, what its /metrics serves) with
  job="hmonitor" and a timestamp per sample, written as OpenMetrics and loaded with
  `promtool tsdb create-blocks-from openmetrics` into a fresh TSDB, which a Prometheus on
  loopback then opens (no scraping: the data are exactly the SQLite rounds).

Then, in this process with both stores warm (one call each first), 20 calls each of
`sparklines(3600, now, points=60)` (all 800 GPUs) and of `series(host, 0, "util", now - 3600,
now)` (one GPU, up to 1,000 points), median and p95 in ms. Prometheus runs as a child process on
the same 2 cores: its query time includes the HTTP round trip and JSON decoding.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from _table import print_table  # noqa: E402
from builders import cluster  # noqa: E402
from promkit import Rounds, prometheus_with  # noqa: E402

from hmonitor.web.history import SqliteHistory  # noqa: E402
from hmonitor.web.history.prometheus import PrometheusHistory  # noqa: E402

HOSTS, GPUS, PROCS = 100, 8, 4
INTERVAL = 10
CALLS = 20
# The families PrometheusHistory reads for sparklines and series.
FAMILIES = ("hmonitor_gpu_utilization_ratio", "hmonitor_gpu_memory_used_bytes",
            "hmonitor_gpu_memory_total_bytes")


def _timed(call: Callable[[], object]) -> tuple[list[float], object]:
    result = call()  # warm-up
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1000)
    return times, result


def _p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def build(work: Path, rounds: int, now: float) -> tuple[Path, Rounds, float, float]:
    """The SQLite file and the store's samples of the same rounds; seconds spent on each."""
    store = SqliteHistory(work / "history.sqlite")
    samples = Rounds(FAMILIES)
    t_sqlite = t_text = 0.0
    for k in range(rounds):
        t = now - (rounds - 1 - k) * INTERVAL
        states = cluster(HOSTS, GPUS, PROCS, at=t, round_no=k)
        start = time.perf_counter()
        store.ingest(states, t)
        if k % (120 // INTERVAL) == 0:
            store.maintain(t)
        t_sqlite += time.perf_counter() - start
        start = time.perf_counter()
        samples.add(states, t)
        t_text += time.perf_counter() - start
    store.close()
    return work / "history.sqlite", samples, t_sqlite, t_text


def measure(name: str, backend: SqliteHistory | PrometheusHistory,
            now: float) -> list[list[object]]:
    """Two table rows: the sparklines of every GPU, and one GPU's hour of utilization."""
    times, lines = _timed(lambda: backend.sparklines(3600, now, points=60))
    assert isinstance(lines, dict)
    filled = sum(1 for v in lines.values() for x in v["util"] if not math.isnan(x))
    rows: list[list[object]] = [[name, "sparklines(3600, now, points=60)",
                                 statistics.median(times), _p95(times),
                                 f"{len(lines)} GPUs, {filled} util points"]]
    times, got = _timed(lambda: backend.series("gpu042", 3, "util", now - 3600, now))
    assert isinstance(got, tuple)
    rows.append([name, 'series("gpu042", 3, "util", 1 h)', statistics.median(times),
                 _p95(times), f"{len(got[1])} points"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 minutes of data, not 1 h")
    args = parser.parse_args()
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (apt-get install prometheus)")
    rounds = 60 if args.quick else 360
    now = float(int(time.time()) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db, samples, t_sqlite, t_text = build(work, rounds, now)
        start = time.perf_counter()
        with prometheus_with(samples, work) as url:
            t_blocks = time.perf_counter() - start
            text_mb = (work / "samples.om").stat().st_size / 1e6
            sqlite = SqliteHistory(db)
            prom = PrometheusHistory(url, timeout=30)
            rows: list[list[object]] = []
            rows += measure("SQLite (baseline)", sqlite, now)
            rows += measure("Prometheus 2.42", prom, now)
            sqlite.close()
    minutes = rounds * INTERVAL // 60
    print_table(
        f"History reads: {HOSTS} hosts x {GPUS} GPUs, {minutes} min at {INTERVAL} s, "
        f"{CALLS} calls after a warm-up (ms)",
        ["backend", "call", "median ms", "p95 ms", "returned"], rows)
    print(f"(setup: SQLite ingest+maintain {t_sqlite:.1f} s; OpenMetrics text {t_text:.1f} s, "
          f"{text_mb:.0f} MB; promtool blocks and Prometheus start {t_blocks:.1f} s)")


if __name__ == "__main__":
    main()
