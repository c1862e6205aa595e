"""`make demo` / `python -m hmonitor.demo`: a local agent and the dashboard, in one command.

Starts the agent on this machine (real GPUs through NVML when the driver answers), a few
simulated GPU hosts when it does not — plainly labelled "simulated" on the page —, one address
where nothing listens (so the page shows what a down host looks like), and the dashboard.
Everything runs as child processes and stops on Ctrl-C.

Simulated hosts come with a past: before the dashboard starts, the demo writes the last 24 hours
of their rounds into its history (`backfill`), computed by the same simulation the agents run,
so sparklines, charts, the users page and the idle-process alert have something to show at
once and the live rounds continue the curves. A real (NVML) host is never backfilled, and a
history that already holds GPUs (a restarted demo) is kept as it is.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hmonitor._pb import hm_pb2
from hmonitor.agent.snapshot import fill_process, gpu_message
from hmonitor.agent.sources.gpu import GpuReading, GpuUnavailable
from hmonitor.agent.sources.nvml import NvmlSource
from hmonitor.agent.sources.simgpu import SimulatedGpuSource, host_seed
from hmonitor.web.history import SqliteHistory
from hmonitor.web.history.recorder import HISTORY_FILE
from hmonitor.web.hoststate import HostState
from hmonitor.web.settings import load_settings
from hmonitor.web.storage import StorageError

POLL_INTERVAL = 5.0  # the demo dashboard's `interval`, seconds
# The backfill's rounds, oldest first: (from how many hours ago, a round every so many seconds).
# Not one per polling interval: measured on 2 cores, 24 h at 5 s (17,280 rounds) take 31 s of
# CPU and 32 MB, a round a minute all day (1,440) 3.5 s of CPU, 4-11 s with the agents starting
# alongside. So a round a minute for the last 6 hours (the 1-hour and 6-hour sparklines and
# charts show every minute) and every 5 minutes before (the 24-hour sparkline's points are 24
# minutes): 576 rounds, ~2 s of CPU (half of it `maintain`), ~1.9 MB.
BACKFILL_PLAN: tuple[tuple[float, float], ...] = ((24.0, 300.0), (6.0, 60.0))


@dataclass(frozen=True)
class SimHost:
    """A simulated agent of the demo: the dashboard's name for it, its `--id` (which seeds its
    simulation), its number of GPUs and how many of them run in MIG mode."""

    name: str
    host_id: str
    gpus: int
    mig: int = 0

    def agent_args(self) -> list[str]:
        return ["--simulate", str(self.gpus), "--simulate-mig", str(self.mig)]

    def source(self) -> SimulatedGpuSource:
        """The agent's simulation, for the demo's backfill."""
        return SimulatedGpuSource(self.gpus, seed=host_seed(self.host_id), mig=self.mig)


# Without NVML, this host's agent and three more, all simulated.
LOCAL_SIMULATED = SimHost("this-host (simulated)", "this-host-simulated", 4)
SIMULATED_HOSTS = (
    SimHost("sim-node-1", "sim-node-1", 8),
    SimHost("sim-node-2", "sim-node-2", 4, mig=1),
    SimHost("sim-node-3", "sim-node-3", 4),
)


@dataclass(frozen=True)
class Backfill:
    """What `backfill` did, and its line for the demo's banner."""

    rounds: int  # 0 when nothing was written
    seconds: float
    size: int  # bytes of the history file afterwards
    message: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_gpu() -> bool:
    source = NvmlSource()
    try:
        return bool(source.read())
    except GpuUnavailable:
        return False
    finally:
        source.close()


def _agent(port: int, *extra: str, host_id: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GOHM_ADDR=f"127.0.0.1:{port}", GOHM_ALLOW="127.0.0.1/32")
    if host_id:
        env["GOHM_ID"] = host_id
    return subprocess.Popen(
        [sys.executable, "-m", "hmonitor.agent", "--log-level", "WARNING", *extra], env=env
    )


def host_info(host_id: str, hostname: str, gpus: Sequence[GpuReading]) -> hm_pb2.HostInfo:
    """The HostInfo an agent serves for simulated `gpus` (as its Collector builds it, where
    simulated processes carry their owners), without disks: the backfill has none."""
    info = hm_pb2.HostInfo(id=host_id, hostname=hostname)
    for g in gpus:
        msg = gpu_message(g)
        for p in g.processes:
            fill_process(msg.procs.add(), p, p.uid or 0, p.username or "", p.basename or "",
                         p.expiration or 0, p.facts)
        info.gpus.append(msg)
    return info


def backfill(
    data_dir: Path,
    hosts: Sequence[SimHost],
    *,
    plan: Sequence[tuple[float, float]] = BACKFILL_PLAN,
    interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.time,
    announce: Callable[[str], object] = lambda _text: None,
) -> Backfill:
    """Write past rounds of the simulated `hosts` into `data_dir`'s history as `plan` says, then
    rounds `interval` apart up to the moment it finishes: the dashboard's first live round must
    follow within 3 of its intervals, or the history sees a gap and the idle runs start over.
    Only through the store's writer API (`ingest`, `maintain`).

    Does nothing when the history already holds GPUs: a restarted demo keeps its history (and
    rounds before the last stored one could not be added anyway).
    """
    path = data_dir / HISTORY_FILE
    started = time.perf_counter()
    if not hosts:
        return Backfill(0, 0.0, 0, "no simulated hosts: the history starts empty")
    hours = max(h for h, _ in plan)
    # The store counts a gap over 3 intervals as a break (down time, idle runs restarted) and
    # caps a round's share of GPU-hours there: opened at the plan's longest step, the past is
    # continuous and counted in full. The dashboard reopens it at its own interval.
    with SqliteHistory(path, interval=max(interval, *(step for _, step in plan))) as store:
        known = store.gpus()
        if known:
            return Backfill(0, time.perf_counter() - started, _size(path),
                            f"kept {path} ({len(known)} GPUs already in it): no backfill;"
                            " delete it to start over")
        announce(f"writing {hours:g} h of simulated history into {path} ...")
        hostname = socket.gethostname()  # what the simulated agents report as theirs
        sources = [(h, h.source()) for h in hosts]

        def round_at(t: float) -> None:
            states = [
                HostState(name=h.name, address="", up=True, error="", last_seen=t, rtt_ms=None,
                          info=host_info(h.host_id, hostname, src.read_at(t)), polled_at=t)
                for h, src in sources
            ]
            store.ingest(states, t)

        now = clock()
        rounds = 0
        last = now - hours * 3600
        for i, (ago, step) in enumerate(plan):
            until = now - plan[i + 1][0] * 3600 if i + 1 < len(plan) else now
            t = (now - ago * 3600) // step * step + step  # on the step's grid
            while t < until:
                round_at(t)
                rounds, last = rounds + 1, t
                t += step
        store.maintain(now)  # roll-ups and chunks now, not in the dashboard's first rounds
        # The seconds that took, at the polling interval, and a round at the very end.
        while (end := clock()) > last + interval:
            last += interval
            round_at(last)
            rounds += 1
        if end > last:
            round_at(end)
            rounds += 1
    seconds = time.perf_counter() - started
    size = _size(path)
    gpus = sum(h.gpus for h in hosts)
    return Backfill(rounds, seconds, size,
                    f"backfilled {hours:g} h of simulated history ({rounds} rounds, {gpus} GPUs"
                    f" on {len(hosts)} hosts) in {seconds:.1f} s; {path}: {size / 1e6:.1f} MB")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hmonitor-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="dashboard port [%(default)s]")
    parser.add_argument("--addr", default="127.0.0.1", help="dashboard address [%(default)s]")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".demo"),
        help="settings and data of the demo [%(default)s]",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="simulate this host's GPUs even when NVML answers"
    )
    args = parser.parse_args(argv)

    args.dir.mkdir(parents=True, exist_ok=True)
    real_gpu = not args.simulate and _has_gpu()
    children: list[subprocess.Popen[bytes]] = []
    servers: dict[str, str] = {}
    simulated: list[SimHost] = []  # only hosts whose agent runs --simulate: never a real one

    local_port = _free_port()
    local = None if real_gpu else LOCAL_SIMULATED
    children.append(
        _agent(
            local_port,
            *([] if local is None else local.agent_args()),
            host_id=None if local is None else local.host_id,
        )
    )
    servers[socket.gethostname() if local is None else local.name] = f"127.0.0.1:{local_port}"
    if local is not None:
        simulated = [local, *SIMULATED_HOSTS]
        for host in SIMULATED_HOSTS:
            port = _free_port()
            children.append(_agent(port, *host.agent_args(), host_id=host.host_id))
            servers[host.name] = f"127.0.0.1:{port}"
    servers["offline-example"] = f"127.0.0.1:{_free_port()}"  # nothing listens: a down host

    token_file = args.dir / "token.txt"
    token = token_file.read_text().strip() if token_file.exists() else secrets.token_urlsafe(9)
    token_file.write_text(token + "\n")
    settings = args.dir / "settings.py"
    settings.write_text(
        "# Written by `make demo`; a real deployment writes its own (see the README).\n"
        f"servers = {servers!r}\n"
        f"token = {token!r}\n"
        f"interval = {POLL_INTERVAL:g}\n"
    )
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    try:
        # While the agents start: the dashboard's history gets the simulated hosts' past.
        loaded = load_settings(settings)
        try:
            history = backfill(loaded.data_dir or args.dir, simulated, interval=loaded.interval,
                               announce=lambda text: print(f"  {text}", flush=True)).message
        except StorageError as err:  # the dashboard will say so too, and stop
            history = f"no backfill: {err}"
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hmonitor.web.cli",
                "--settings",
                str(settings),
                "--addr",
                args.addr,
                "--port",
                str(args.port),
            ]
        )
        children.append(web)
        kind = "real GPUs on this host" if real_gpu else "SIMULATED GPUs (no NVIDIA driver here)"
        print(
            f"\n  hmonitor demo — {kind}"
            f"\n  dashboard: http://{args.addr}:{args.port}/   token: {token}"
            f"\n  settings:  {settings}   (Ctrl-C stops everything)"
            f"\n  history:   {history}\n",
            flush=True,
        )
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop and all(c.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C before the handlers are in place (the backfill)
        stop = True
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed and not stop else 0


if __name__ == "__main__":
    sys.exit(main())
