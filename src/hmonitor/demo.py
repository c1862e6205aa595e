"""`make demo` / `python -m hmonitor.demo`: a local agent and the dashboard, in one command.

Starts the agent on this machine (real GPUs through NVML when the driver answers), a few
simulated GPU hosts when it does not — plainly labelled "simulated" on the page —, one address
where nothing listens (so the page shows what a down host looks like), and the dashboard.
Everything runs as child processes and stops on Ctrl-C.
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
from pathlib import Path

from hmonitor.agent.sources.gpu import GpuUnavailable
from hmonitor.agent.sources.nvml import NvmlSource

SIMULATED_HOSTS = ("sim-node-1", "sim-node-2", "sim-node-3")


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

    local_port = _free_port()
    children.append(
        _agent(
            local_port,
            *([] if real_gpu else ["--simulate", "4"]),
            host_id=None if real_gpu else "this-host-simulated",
        )
    )
    servers[socket.gethostname() if real_gpu else "this-host (simulated)"] = (
        f"127.0.0.1:{local_port}"
    )
    if not real_gpu:
        for i, name in enumerate(SIMULATED_HOSTS):
            port = _free_port()
            children.append(_agent(port, "--simulate", str(8 if i == 0 else 4), host_id=name))
            servers[name] = f"127.0.0.1:{port}"
    servers["offline-example"] = f"127.0.0.1:{_free_port()}"  # nothing listens: a down host

    token_file = args.dir / "token.txt"
    token = token_file.read_text().strip() if token_file.exists() else secrets.token_urlsafe(9)
    token_file.write_text(token + "\n")
    settings = args.dir / "settings.py"
    settings.write_text(
        "# Written by `make demo`; a real deployment writes its own (see the README).\n"
        f"servers = {servers!r}\n"
        f"token = {token!r}\n"
        "interval = 5\n"
    )
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
        f"\n  settings:  {settings}   (Ctrl-C stops everything)\n",
        flush=True,
    )
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop and all(c.poll() is None for c in children):
            time.sleep(0.5)
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
