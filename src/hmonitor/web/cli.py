"""``hmonitor-web``: reads settings.py, starts the poller and serves the dashboard with waitress.

SIGHUP re-reads ``servers`` from settings.py (hosts come and go without a restart); SIGTERM and
SIGINT stop serving, stop the poller and close the database.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import resource
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import waitress

from hmonitor.web.app import MAX_BODY_BYTES, create_app
from hmonitor.web.history.service import HistoryService, start_history_server
from hmonitor.web.settings import SettingsError, load_settings
from hmonitor.web.state import WebState, get_state
from hmonitor.web.storage import StorageError

log = logging.getLogger("hmonitor.web")


CONNECTION_LIMIT = 1000


def raise_open_file_limit() -> int:
    """The soft limit on open files raised to the hard one: a channel per agent plus a socket
    per browser connection outgrow the usual soft limit of 1024. Returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d: %s", soft, err)
            return soft
        return target
    return soft


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="hmonitor-web",
        description="GPU cluster dashboard: polls the hmonitor agents named in settings.py "
        "and serves the web page and JSON API.",
    )
    p.add_argument("--settings", default="settings.py", metavar="PATH",
                   help="the settings file (default: settings.py in the current directory)")
    p.add_argument("--addr", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where notes, the notice, the generated secret and history are kept "
                   "(default: data_dir in settings.py, else the settings file's folder)")
    p.add_argument("--threads", type=int, default=8,
                   help="request threads of the web server (default 8)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port {args.port} is outside 0-65535")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def _reload(state: WebState) -> None:
    try:
        result = state.reload_servers()
    except SettingsError as err:
        log.error("SIGHUP: settings not reloaded, keeping the current hosts: %s", err)
    except Exception:  # a reload must never take the dashboard down
        log.exception("SIGHUP: reloading the servers failed")
    else:
        log.info("SIGHUP: reloaded servers: %s", result.summary())


def _install_signals(state: WebState) -> None:
    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        # Off the signal handler: reading the file and reconnecting may take a moment.
        threading.Thread(target=_reload, args=(state,), name="hmonitor-reload",
                         daemon=True).start()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        # waitress's run() catches SystemExit/KeyboardInterrupt and shuts its threads down.
        raise SystemExit(0)

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.settings)
    except SettingsError as err:
        print(f"hmonitor-web: {err}", file=sys.stderr)
        return 2
    if args.data_dir:
        settings = dataclasses.replace(settings, data_dir=Path(args.data_dir).absolute())
    files = raise_open_file_limit()
    if files < 2 * len(settings.servers) + CONNECTION_LIMIT:
        log.warning("only %d open files allowed: %d agents and %d web connections may not fit"
                    " (raise LimitNOFILE / ulimit -n)", files, len(settings.servers),
                    CONNECTION_LIMIT)

    try:
        app = create_app(settings)
    except StorageError as err:  # a data file that cannot be used: one line naming it
        print(f"hmonitor-web: cannot start: {err}", file=sys.stderr)
        return 1
    state = get_state(app)
    # Everything imported and built so far lives for the whole run: keep it out of the cyclic
    # GC's scans, which otherwise cost ~30 ms every few big requests (bench/dashboard.py).
    gc.collect()
    gc.freeze()
    try:
        server = waitress.create_server(
            app, host=args.addr, port=args.port, threads=args.threads, ident="hmonitor",
            max_request_body_size=MAX_BODY_BYTES,
            # poll(), not select(): one gRPC channel per agent pushes socket numbers past
            # select()'s limit of 1023 in a big lab, and select() then fails on every loop.
            asyncore_use_poll=True,
            # A lab's browsers (up to 6 connections each) and scripts; waitress's default of
            # 100 counts its own sockets too and left the 99th client waiting for ever.
            connection_limit=CONNECTION_LIMIT,
        )
    except OSError as err:
        state.close()
        print(f"hmonitor-web: cannot listen on {args.addr}:{args.port}: {err}", file=sys.stderr)
        return 1
    _install_signals(state)
    history_server = None
    try:
        service = HistoryService(state.backend, lambda: set(state.settings.servers))
        history_server, _ = start_history_server(settings.history_addr, service)
    except RuntimeError as err:  # the page still works; only the gRPC History is missing
        log.error("History service not started on %s: %s", settings.history_addr, err)
    log.info("serving %d hosts on http://%s:%s/ (data in %s)", len(settings.servers),
             args.addr, args.port, state.data_dir)
    try:
        server.run()
    finally:
        server.close()
        if history_server is not None:
            history_server.stop(grace=1.0).wait()
        state.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
