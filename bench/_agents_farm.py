"""Simulated agents for bench/dashboard.py: many loopback ports served by one process.

    python bench/_agents_farm.py --healthy 1000 --hung-tcp 100 --hung-grpc 100

Serves, all on 127.0.0.1:

* ``healthy`` ports: real gRPC (one ``grpc.aio`` server bound to every port) implementing
  ``gpu.HostMonitor/GetInfo``, answering a realistic HostInfo (8 GPUs x 4 processes, 2 disks:
  ``busy_host`` in tests/builders.py);
* ``hung-grpc`` ports: a second gRPC server whose GetInfo never answers (it sleeps an hour);
* ``hung-tcp`` ports: plain listening sockets that are never accepted, so the kernel completes
  the TCP handshake and then nothing ever answers.

When every port listens it prints one JSON line ``{"healthy": [...], "hung_tcp": [...],
"hung_grpc": [...]}`` with the port numbers, then serves until its stdin closes (the parent
holds the other end, so the farm goes away with the parent, however the parent ends) or it gets
SIGTERM/SIGINT.

It runs in its own process so that serving costs are not charged to the poller being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import signal
import socket
import sys
import threading
from itertools import count
from pathlib import Path

import grpc
import grpc.aio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # run as a script, by bench/dashboard.py and tests

from builders import busy_host  # noqa: E402

from hmonitor._pb import hm_pb2, hm_pb2_grpc  # noqa: E402

# The name bench/dashboard.py imports.
make_host_info = busy_host


class _Healthy(hm_pb2_grpc.HostMonitorServicer):
    """Answers at once with one of a few prebuilt snapshots (the server cannot tell which of its
    ports a call came in on, so hosts differ by call, not by port)."""

    def __init__(self, variants: int = 16) -> None:
        self._infos = [busy_host(i) for i in range(variants)]
        self._next = count()

    async def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.aio.ServicerContext[
            hm_pb2.RequestInfo, hm_pb2.HostInfo]
    ) -> hm_pb2.HostInfo:
        return self._infos[next(self._next) % len(self._infos)]


class _Churning(hm_pb2_grpc.HostMonitorServicer):
    """A lab that changes as labs do: each host (told apart by the caller's channel, one per
    agent) keeps its own snapshot, and at each call a `churn` share of its GPUs starts to run at
    another utilization (a step of 30-70 points: a different tenth, as the page shows it)."""

    def __init__(self, churn: float, seed: int = 1) -> None:
        self._churn = churn
        self._rng = random.Random(seed)
        self._hosts: dict[str, hm_pb2.HostInfo] = {}

    async def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.aio.ServicerContext[
            hm_pb2.RequestInfo, hm_pb2.HostInfo]
    ) -> hm_pb2.HostInfo:
        peer = context.peer()
        info = self._hosts.get(peer)
        if info is None:
            info = self._hosts[peer] = busy_host(len(self._hosts))
            return info
        for gpu in info.gpus:
            if self._rng.random() < self._churn:
                gpu.utilization = (gpu.utilization + self._rng.randint(30, 70)) % 101
        return info


class _Hung(hm_pb2_grpc.HostMonitorServicer):
    """Accepts the call and never answers in any useful time (the client's deadline or
    cancellation ends it)."""

    async def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.aio.ServicerContext[
            hm_pb2.RequestInfo, hm_pb2.HostInfo]
    ) -> hm_pb2.HostInfo:
        await asyncio.sleep(3600)
        return hm_pb2.HostInfo()


def raise_nofile(wanted: int) -> None:
    """Raise the open-files limit (1,000+ ports and connections), as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _bind(server: grpc.aio.Server, n: int) -> list[int]:
    ports = []
    for _ in range(n):
        port = server.add_insecure_port("127.0.0.1:0")
        if not port:
            raise RuntimeError("could not bind a loopback port")
        ports.append(port)
    return ports


def _hung_sockets(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        # Never accepted: the kernel finishes handshakes into the backlog, then nothing answers.
        s.listen(256)
        socks.append(s)
    return socks


async def serve(healthy: int, hung_tcp: int, hung_grpc: int, churn: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent is gone or done
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()

    servers: list[grpc.aio.Server] = []
    ports: dict[str, list[int]] = {"healthy": [], "hung_tcp": [], "hung_grpc": []}
    socks = _hung_sockets(hung_tcp)
    try:
        ports["hung_tcp"] = [s.getsockname()[1] for s in socks]
        kinds: list[tuple[str, int, hm_pb2_grpc.HostMonitorServicer]] = [
            ("healthy", healthy, _Healthy() if churn is None else _Churning(churn)),
            ("hung_grpc", hung_grpc, _Hung())]
        for kind, n, servicer in kinds:
            if not n:
                continue
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            hm_pb2_grpc.add_HostMonitorServicer_to_server(servicer, server)
            ports[kind] = await _bind(server, n)
            await server.start()
            servers.append(server)
        print(json.dumps(ports), flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(server.stop(None) for server in servers), return_exceptions=True)
        for s in socks:
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=100)
    parser.add_argument("--hung-tcp", type=int, default=0)
    parser.add_argument("--hung-grpc", type=int, default=0)
    parser.add_argument("--churn", type=float, metavar="SHARE",
                        help="each host keeps its own snapshot, and this share of its GPUs "
                        "changes utilization at each call (default: every call answers one of "
                        "16 snapshots in turn)")
    args = parser.parse_args()
    raise_nofile(4 * (args.healthy + args.hung_tcp + args.hung_grpc) + 1024)
    asyncio.run(serve(args.healthy, args.hung_tcp, args.hung_grpc, args.churn))


if __name__ == "__main__":
    main()
