"""Writes Prometheus file_sd targets from the dashboard's settings.py.

Each server in ``servers = {"name": "host:port"}`` becomes one target, the server's host with the
agent's *metrics* port (settings.py holds the gRPC port), labelled ``host`` = its name in
settings.py: the label by which dashboards and the Prometheus history backend find a host's
series. The file is replaced atomically (temporary file, then ``os.replace``), so Prometheus, which
watches it, never reads half of it::

    python -m hmonitor.web.prom_targets --settings settings.py --metrics-port 9205 \\
        --out /etc/prometheus/targets/hmonitor.json

Exit status: 0 written, 2 a bad settings file, option or output path (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hmonitor.web.settings import SettingsError, load_settings, split_address

__all__ = ["DEFAULT_METRICS_PORT", "main", "targets", "write_targets"]

DEFAULT_METRICS_PORT = 9205


def _host_port(host: str, port: int) -> str:
    """``host:port``; an IPv6 address keeps its brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def targets(servers: Mapping[str, str], metrics_port: int) -> list[dict[str, Any]]:
    """file_sd groups, one per server, in the order of settings.py."""
    groups: list[dict[str, Any]] = []
    for name, address in servers.items():
        host, _grpc_port = split_address(address)
        groups.append({"targets": [_host_port(host, metrics_port)], "labels": {"host": name}})
    return groups


def write_targets(path: str | os.PathLike[str], groups: Sequence[Mapping[str, Any]]) -> None:
    """Write ``groups`` as JSON to ``path`` atomically (same-folder temporary file + replace)."""
    out = Path(path)
    text = json.dumps(list(groups), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hmonitor.web.prom_targets",
        description="Write Prometheus file_sd targets (one per server, labelled host=<name>) "
                    "from the dashboard's settings.py.",
    )
    parser.add_argument("--settings", required=True, help="the dashboard's settings.py")
    parser.add_argument("--metrics-port", type=_port, default=DEFAULT_METRICS_PORT,
                        help="the agents' --metrics-addr port (default %(default)s)")
    parser.add_argument("--out", required=True,
                        help="file_sd JSON to write, e.g. targets/hmonitor.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prog = "prom_targets"
    try:
        settings = load_settings(args.settings)
    except SettingsError as err:
        print(f"{prog}: {_one_line(str(err))}", file=sys.stderr)
        return 2
    groups = targets(settings.servers, args.metrics_port)  # addresses checked by load_settings
    try:
        write_targets(args.out, groups)
    except OSError as err:
        print(f"{prog}: cannot write {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
