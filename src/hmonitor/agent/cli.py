"""`hmonitor`: the agent's command line. Every flag also reads a GOHM_* environment variable, so
the spec's cron line (`GOHM_ADDR=... GOHM_ALLOW=... hmonitor`) keeps working unchanged."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from hmonitor import __version__
from hmonitor.agent import server as srv
from hmonitor.agent.snapshot import Collector, Sources
from hmonitor.agent.sources import netinfo
from hmonitor.agent.sources.accounts import ShadowExpiry
from hmonitor.agent.sources.disks import DEFAULT_FSTYPES, DiskSource
from hmonitor.agent.sources.gpu import GpuSource
from hmonitor.agent.sources.hostload import HostLoadReader
from hmonitor.agent.sources.nvml import NvmlSource
from hmonitor.agent.sources.procs import ProcReader
from hmonitor.agent.sources.simgpu import SimulatedGpuSource
from hmonitor.agent.sources.users import UserNames

if TYPE_CHECKING:
    from hmonitor.agent.metrics_http import MetricsServer

log = logging.getLogger("hmonitor.agent")

DEFAULT_ADDR = "0.0.0.0:9203"
DEFAULT_ALLOW = "127.0.0.1/32"
STOP_DEADLINE_S = 5.0


def _env(name: str, default: str | None = None) -> str | None:
    """A setting where "set but empty" may mean "unset": the default is as safe as any value
    (address, id, IP prefix, filesystem types, simulation, shadow path, log level)."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _strict_env(name: str, fix: str) -> str | None:
    """A security setting: unset means off or the default, but set and blank is a mistake
    (`GOHM_TOKEN=$(cat missing-file)`, a template never filled in) and must not quietly mean
    "no token", "no TLS" or "the default allow-list"."""
    value = os.environ.get(name)
    if value is not None and not value.strip():
        raise ValueError(f"{name} is set but empty: {fix}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hmonitor",
        description="GPU-server agent: serves this host's GPUs, processes, account expiry and "
        "disks over gRPC (gpu.HostMonitor/GetInfo) to the hosts in an allow-list.",
        epilog="A second copy started while one holds the address exits 0 at once, so cron can "
        "start it every few minutes. The single-executable build needs an executable TMPDIR.",
    )
    a = p.add_argument
    a(
        "--addr",
        default=_env("GOHM_ADDR", DEFAULT_ADDR),
        help="listen address host:port [env GOHM_ADDR, default %(default)s]",
    )
    a(
        "--allow",
        help="comma-separated CIDRs allowed to connect, IPv4 and IPv6 [env GOHM_ALLOW, "
        f"default {DEFAULT_ALLOW}]",
    )
    a("--id", default=_env("GOHM_ID"), help="HostInfo.id [env GOHM_ID, default: the hostname]")
    a(
        "--ip-prefix",
        default=_env("GOHM_IP_PREFIX"),
        help="report the last address starting with this prefix, e.g. '10.' [env GOHM_IP_PREFIX; "
        "default: the address of the default route]",
    )
    # Security settings: no parser default; main() takes their GOHM_* variables through
    # _strict_env, so a set-but-empty one is a clear error instead of a crash here.
    a(
        "--token-file",
        help="file holding a shared token that clients must send in RequestInfo.token "
        "[env GOHM_TOKEN_FILE; GOHM_TOKEN may hold the token itself]",
    )
    a("--tls-cert", help="serve TLS with this cert (PEM) [env GOHM_TLS_CERT]")
    a("--tls-key", help="the cert's private key (PEM) [env GOHM_TLS_KEY]")
    a(
        "--tls-client-ca",
        help="require client certificates signed by this CA (mutual TLS) [env GOHM_TLS_CLIENT_CA]",
    )
    a(
        "--shadow",
        type=Path,
        default=Path(_env("GOHM_SHADOW", "/etc/shadow") or ""),
        help="shadow file for account expiry (readable by group 'shadow') [%(default)s]",
    )
    a("--proc", type=Path, default=Path("/proc"), help="procfs root [%(default)s]")
    a("--mounts", type=Path, default=Path("/proc/mounts"), help="mount table [%(default)s]")
    a(
        "--fstypes",
        default=_env("GOHM_FSTYPES", ",".join(sorted(DEFAULT_FSTYPES))),
        help="filesystem types reported as disks [env GOHM_FSTYPES, default %(default)s]",
    )
    a(
        "--statvfs-timeout",
        type=float,
        default=2.0,
        help="seconds to wait for one mount before reporting it hung [%(default)s]",
    )
    a(
        "--cache-ttl",
        type=float,
        default=1.0,
        help="collect at most once per this many seconds, however many clients ask [%(default)s]",
    )
    a(
        "--simulate",
        type=int,
        # A string default goes through type=int too: a bad GOHM_SIMULATE is argparse's usage
        # error (exit 2), not a traceback.
        default=_env("GOHM_SIMULATE", "0"),
        metavar="N",
        help="serve N simulated GPUs instead of NVML (demo without a GPU) [env GOHM_SIMULATE]",
    )
    a(
        "--simulate-mig",
        type=int,
        default=0,
        metavar="K",
        help="with --simulate: the first K simulated GPUs run in MIG mode [%(default)s]",
    )
    a(
        "--no-cmdline",
        dest="cmdline",
        action="store_false",
        default=_env("GOHM_NO_CMDLINE", "") not in ("1", "true", "yes"),
        help="send no process command lines, for privacy (arguments can hold paths, "
        "hostnames or keys) [env GOHM_NO_CMDLINE=1]",
    )
    a(
        "--metrics-addr",
        default=_env("GOHM_METRICS_ADDR"),
        metavar="HOST:PORT",
        help="also serve Prometheus metrics at http(s)://HOST:PORT/metrics, behind the same "
        "allow-list, TLS and token (Authorization: Bearer) [env GOHM_METRICS_ADDR; default off]",
    )
    a(
        "--metrics-pids",
        action="store_true",
        default=_env("GOHM_METRICS_PIDS", "") in ("1", "true", "yes"),
        help="add per-process series to the metrics (one per GPU process: many short-lived "
        "series) [env GOHM_METRICS_PIDS=1]",
    )
    a("--workers", type=int, default=4, help="gRPC worker threads [%(default)s]")
    a("--log-level", default=_env("GOHM_LOG_LEVEL", "INFO"), help="[%(default)s]")
    a("--version", action="version", version=f"hmonitor {__version__}")
    return p


def _port_taken(addr: str) -> bool:
    """Whether binding `addr` fails because something already listens there."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return False
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def _allow(args: argparse.Namespace) -> srv.AllowList:
    """The allow-list from --allow, else GOHM_ALLOW, else the default; empty is an error."""
    if args.allow is not None:
        source, text = "--allow", args.allow
        empty = f"--allow is empty: leave it out for the default {DEFAULT_ALLOW}, or list CIDRs"
    else:
        source, text = "GOHM_ALLOW", os.environ.get("GOHM_ALLOW", DEFAULT_ALLOW)
        empty = (
            f"GOHM_ALLOW is set but empty: unset it for the default {DEFAULT_ALLOW}, or list "
            "CIDRs (GOHM_ALLOW=10.1.2.3/32,fd00::/8)"
        )
    if not text.replace(",", "").strip():
        raise ValueError(empty)
    try:
        return srv.AllowList(srv.parse_allow(text))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _setting(args: argparse.Namespace, attr: str, flag: str, env: str, fix: str) -> str | None:
    """A security flag's value, else its variable's; blank either way is an error."""
    value: str | None = getattr(args, attr)
    if value is None:
        return _strict_env(env, f"unset it {fix}")
    if not value.strip():
        raise ValueError(f"{flag} is empty: leave it out {fix}")
    return value


def _read(what: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read the {what} {path}: {err.strerror or err}") from None


def _token(args: argparse.Namespace) -> str:
    """The token clients must send; "" (no token) only when none is configured at all."""
    path = _setting(
        args, "token_file", "--token-file", "GOHM_TOKEN_FILE", "to run without a token file"
    )
    if path is not None:
        raw = _read("token file", path)
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ValueError(f"the token file {path} is not UTF-8 text") from None
        if not token:
            raise ValueError(
                f"the token file {path} is empty: write the token into it, or leave out "
                "--token-file/GOHM_TOKEN_FILE to run without a token"
            )
        return token
    return _strict_env("GOHM_TOKEN", "set it to the token, or unset it to run without one") or ""


def _tls(args: argparse.Namespace) -> srv.TlsFiles | None:
    without = "to serve without TLS"
    cert = _setting(args, "tls_cert", "--tls-cert", "GOHM_TLS_CERT", without)
    key = _setting(args, "tls_key", "--tls-key", "GOHM_TLS_KEY", without)
    client_ca = _setting(
        args,
        "tls_client_ca",
        "--tls-client-ca",
        "GOHM_TLS_CLIENT_CA",
        "to accept clients without certificates",
    )
    if cert is None and key is None:
        if client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return srv.TlsFiles(
        cert=_read("TLS certificate", cert),
        key=_read("TLS key", key),
        client_ca=_read("client CA", client_ca) if client_ca is not None else None,
    )


def _gpu_source(simulate: int, host_id: str | None, mig: int = 0) -> GpuSource:
    if simulate > 0:
        seed = zlib.crc32((host_id or socket.gethostname()).encode())  # stable per host
        return SimulatedGpuSource(simulate, seed=seed, mig=mig)
    return NvmlSource()


def build_collector(args: argparse.Namespace) -> Collector:
    prefix = args.ip_prefix
    users = UserNames()
    sources = Sources(
        gpus=_gpu_source(args.simulate, args.id, args.simulate_mig),
        disks=DiskSource(
            args.mounts,
            fstypes=[t.strip() for t in args.fstypes.split(",") if t.strip()],
            timeout=args.statvfs_timeout,
        ),
        procs=ProcReader(args.proc, user_name=users.name),  # names a rootless container's owner
        load=HostLoadReader(args.proc).read,
        cmdline=args.cmdline,
        users=users,
        shadow=ShadowExpiry(args.shadow),
        hostname=netinfo.hostname,
        ip=lambda: netinfo.primary_ipv4(prefix),
    )
    return Collector(sources, host_id=args.id, ttl=args.cache_ttl)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())  # the number, or "Level X" if unknown
    if not isinstance(level, int):
        bad = f"--log-level/GOHM_LOG_LEVEL: unknown level {args.log_level!r}"
        print(f"hmonitor: {bad}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level,
        format="%(asctime)s hmonitor[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    try:
        allow, tls, token = _allow(args), _tls(args), _token(args)
    except ValueError as err:  # every configuration problem: one line, naming what to fix
        print(f"hmonitor: {err}", file=sys.stderr)
        return 2
    if _port_taken(args.addr):
        # The normal case under cron: our earlier copy is serving. One line, success.
        print(f"hmonitor: {args.addr} is already in use (another copy running?); exiting")
        return 0
    # Handlers first: a stop signal that arrives while the server starts is not lost.
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():  # the executable's loaders forward the group's signal again
            log.info("signal %d: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    collector = build_collector(args)
    # A background collection holds the GIL in stretches; a shorter switch interval keeps a
    # request that arrives meanwhile from waiting the default 5 ms for its turn.
    sys.setswitchinterval(0.0005)
    try:
        server, port = srv.build_server(
            args.addr, collector.snapshot, allow, token=token, tls=tls, workers=args.workers
        )
    except srv.BindError as err:
        if _port_taken(args.addr):  # lost a race with another copy starting at the same time
            print(f"hmonitor: {args.addr} is already in use (another copy running?); exiting")
            return 0
        print(f"hmonitor: {err}", file=sys.stderr)
        return 1
    metrics: MetricsServer | None = None
    if args.metrics_addr:
        # Only here: prometheus_client costs a few MB an agent without --metrics-addr never needs.
        from hmonitor.agent.metrics import build_registry  # noqa: PLC0415
        from hmonitor.agent.metrics_http import start_metrics_server  # noqa: PLC0415

        registry = build_registry(collector.snapshot, collector.stats, pids=args.metrics_pids)
        try:
            metrics, metrics_port = start_metrics_server(
                args.metrics_addr, registry, allow, token=token, tls=tls,
                snapshot=collector.snapshot,
            )
        except (srv.BindError, ValueError, OSError) as err:
            print(f"hmonitor: metrics: {err}", file=sys.stderr)
            server.stop(grace=None)
            collector.close()
            return 1
        log.info(
            "metrics on %s://%s/metrics (port %d)%s",
            "https" if tls else "http",
            args.metrics_addr,
            metrics_port,
            ", with per-process series" if args.metrics_pids else "",
        )
    log.info(
        "hmonitor %s serving on %s (port %d), allow %s%s%s",
        __version__,
        args.addr,
        port,
        srv.describe_networks(allow.networks),
        ", TLS" + (" with client certificates" if tls and tls.client_ca else "") if tls else "",
        ", token required" if token else "",
    )
    while not stopping.wait(timeout=60):  # a timed wait: signal handlers run promptly
        pass
    # Whatever hangs in shutdown (a hung mount's statvfs, a stuck driver call), exit promptly.
    watchdog = threading.Timer(STOP_DEADLINE_S, os._exit, args=(0,))
    watchdog.daemon = True
    watchdog.start()
    if metrics is not None:
        metrics.shutdown()
        metrics.server_close()
    server.stop(grace=1.0).wait()
    collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
