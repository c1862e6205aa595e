"""PromQL stores holding exactly the rounds a test (or bench) made: the dashboard's own /metrics
families of each round (``HostFamilies(extra_labels=["host"])``, job="hmonitor"), timestamped,
loaded into a fresh Prometheus (``promtool tsdb create-blocks-from openmetrics``) or imported
into a fresh VictoriaMetrics (``/api/v1/import/prometheus``). No scraping: the stores hold the
same rounds the SQLite history is fed, so the two backends can be compared value for value."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from hmonitor.metricfamilies import HostFamilies, exposition
from hmonitor.web.hoststate import HostState

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
VICTORIA = "/usr/bin/victoria-metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rounds:
    """Samples of many rounds, per series, as the stores import them. ``families``: only
    these (None: all)."""

    def __init__(self, families: Collection[str] | None = None) -> None:
        self.families = families
        self.series: dict[str, list[tuple[str, float]]] = {}  # 'name{labels}' -> (value, t)
        self.names: dict[str, str] = {}  # series key -> family

    def add(self, states: Sequence[HostState], t: float) -> None:
        fams = HostFamilies(dcgm=False, extra_labels=["host"], text=True)
        for s in states:
            if s.up and s.info is not None:
                fams.add(s.info, [s.name])
        for line in exposition(fams.filled()).splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name, brace, labels = head.partition("{")
            if self.families is not None and name not in self.families:
                continue
            key = f'{name}{{job="hmonitor",{labels}' if brace else f'{name}{{job="hmonitor"}}'
            self.names[key] = name
            self.series.setdefault(key, []).append((value, t))

    def openmetrics(self, path: Path) -> Path:
        """OpenMetrics (seconds), each family's series together, for promtool."""
        by_family: dict[str, list[str]] = {}
        for key, name in self.names.items():
            by_family.setdefault(name, []).append(key)
        with path.open("w") as out:
            for name, keys in by_family.items():
                out.write(f"# TYPE {name} gauge\n")
                for key in keys:
                    out.writelines(f"{key} {v} {t:.3f}\n" for v, t in self.series[key])
            out.write("# EOF\n")
        return path

    def prometheus_text(self) -> bytes:
        """The text format with millisecond timestamps, for VictoriaMetrics' import."""
        return "".join(f"{key} {v} {round(t * 1000)}\n" for key, samples in self.series.items()
                       for v, t in samples).encode()


def ready(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def prometheus_with(rounds: Rounds, work: Path) -> Iterator[str]:
    """A Prometheus on loopback whose TSDB holds ``rounds``; yields its URL."""
    data = work / "tsdb"
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q",
                    str(rounds.openmetrics(work / "samples.om")), str(data)],
                   check=True, capture_output=True, timeout=300)
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    log = work / "prometheus.log"
    with running([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
                   f"--web.listen-address=127.0.0.1:{port}"], log) as proc:
        url = f"http://127.0.0.1:{port}"
        ready(f"{url}/-/ready", proc, log, "Prometheus")
        yield url


@contextlib.contextmanager
def victoria_with(rounds: Rounds, work: Path) -> Iterator[str]:
    """A VictoriaMetrics on loopback holding ``rounds``; yields its URL."""
    port = free_port()
    log = work / "victoria.log"
    with running([VICTORIA, f"-storageDataPath={work / 'vm'}",
                   f"-httpListenAddr=127.0.0.1:{port}", "-search.latencyOffset=0s",
                   "-search.disableCache", "-retentionPeriod=100y"], log) as proc:
        url = f"http://127.0.0.1:{port}"
        ready(f"{url}/health", proc, log, "VictoriaMetrics")
        req = urllib.request.Request(f"{url}/api/v1/import/prometheus",
                                     data=rounds.prometheus_text(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 204, resp.status
        with urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60):
            pass
        yield url
