"""The agent's /metrics over HTTP(S), behind the same allow-list, TLS and token as its gRPC.

A threaded stdlib server on its own address: ``/metrics`` only (404 elsewhere); a client outside
the allow-list gets 403 before any work; with a token, ``Authorization: Bearer <token>`` or 401;
with a TLS cert and key, HTTPS only (the handshake runs in the request's thread, with a deadline,
so a client that never finishes it holds up no one). Nothing a client sends can stop the agent.
"""

from __future__ import annotations

import contextlib
import gzip
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from hmonitor.agent.server import AllowList, BindError, TlsFiles

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server context from the PEM bytes the agent read (the cert and key pass through a
    private temporary directory, as `ssl` loads them only from files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="hmonitor-tls-") as tmp:  # mode 0700
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert, tls.cert), (key, tls.key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        ctx.load_cert_chain(cert, key)
    if tls.client_ca is not None:
        ctx.load_verify_locations(cadata=tls.client_ca.decode("ascii", "replace"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _peer(address: Any) -> str:
    """A client address as a gRPC peer string, the form AllowList decides on."""
    host, port = str(address[0]), address[1]
    try:
        version = ipaddress.ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return host
    return f"ipv4:{host}:{port}" if version == 4 else f"ipv6:[{host}]:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = REQUEST_TIMEOUT_S  # per socket operation: a stalled client is dropped
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        try:
            self._serve()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away
        except Exception:  # never let a scrape take the agent down
            log.exception("metrics: request failed")
            with contextlib.suppress(OSError):
                self._reply(500, b"internal error\n")

    def _serve(self) -> None:
        srv = self.server
        if not srv.allow.allows(_peer(self.client_address)):
            self._reply(403, b"not in this agent's allow-list\n")
            return
        if srv.token:
            given = self.headers.get("Authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), srv.token.encode()
            ):
                self._reply(401, b"wrong or missing token\n", {"WWW-Authenticate": "Bearer"})
                return
        if self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, b"not found: the metrics are at /metrics\n")
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
        gzipped = gzip_accepted(self.headers.get("Accept-Encoding") or "")
        body = srv.page(encoder, content_type, gzipped)
        headers = {"Content-Type": content_type}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        self._reply(200, body, headers)

    def do_HEAD(self) -> None:
        self._reply(405, b"", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_HEAD

    def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        headers = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: %s " + format, self.address_string(), *args)


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # but not SO_REUSEPORT: a second copy's bind fails

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        allow: AllowList,
        token: str,
        context: ssl.SSLContext | None,
        snapshot: Callable[[], object] | None = None,
    ) -> None:
        self.address_family = family
        self.registry, self.allow, self.token, self.context = registry, allow, token, context
        self._snapshot = snapshot
        self._pages_lock = threading.Lock()
        self._pages_of: object | None = None  # the snapshot the cached pages were made from
        self._pages: dict[tuple[str, bool], bytes] = {}
        super().__init__(address, _Handler)

    def page(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str,
             gzipped: bool) -> bytes:
        """The exposition, made once per snapshot and format: the metrics change only when the
        agent collects (at most once per --cache-ttl), so a scrape in between costs a lookup
        (about 0.2 ms instead of ~15 ms at 8 GPUs x 64 processes)."""
        try:
            current = self._snapshot() if self._snapshot is not None else None
        except Exception:  # noqa: BLE001 - the collector reports it; render uncached
            current = None
        key = (content_type, gzipped)
        with self._pages_lock:
            if current is not None and current is self._pages_of and key in self._pages:
                return self._pages[key]
        body = encoder(self.registry)
        if gzipped:
            body = gzip.compress(body, compresslevel=5)
        if current is not None:
            with self._pages_lock:
                if current is not self._pages_of:
                    self._pages_of, self._pages = current, {}
                self._pages[key] = body
        return body

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is not None:
            request.settimeout(REQUEST_TIMEOUT_S)
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as err:
                log.debug("metrics: TLS handshake with %s failed: %s", client_address, err)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: error serving %s", client_address, exc_info=True)


def start_metrics_server(
    addr: str,
    registry: CollectorRegistry,
    allow: AllowList,
    *,
    token: str = "",
    tls: TlsFiles | None = None,
    snapshot: Callable[[], object] | None = None,
) -> tuple[MetricsServer, int]:
    """Serve `registry` on `addr` ("host:port", "[v6]:port") in a daemon thread; the server and
    its bound port. With `snapshot` (what the registry's collector reads; a new object after each
    collection), the exposition is made once per snapshot. Raises BindError when the address
    can't be bound, ValueError when it is bad."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--metrics-addr/GOHM_METRICS_ADDR: not host:port: {addr!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        info = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise BindError(f"cannot listen on {addr}: {err}") from None
    context = tls_context(tls) if tls is not None else None
    try:
        bind = (str(info[4][0]), int(info[4][1]))
        server = MetricsServer(bind, info[0], registry, allow, token, context, snapshot)
    except OSError as err:
        raise BindError(f"cannot listen on {addr}: {err.strerror or err}") from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, int(server.server_address[1])
