"""The agent's /metrics over HTTP(S), behind the same allow-list, TLS and token as its gRPC.

A small stdlib server on its own address: ``/metrics`` only (404 elsewhere); with a token,
``Authorization: Bearer <token>`` or 401; with a TLS cert and key, HTTPS only. What a client can
cost it is bounded:

- the allow-list is checked when the connection is accepted, before anything is read: a plain-HTTP
  client outside it gets a 403 written at once and is disconnected; over TLS it is disconnected
  (a 403 would need a handshake first). Either way it never gets a thread;
- at most ``MAX_CONNECTIONS`` connections are served at a time, each in its own thread; one over
  the cap is closed at once;
- a connection has ``REQUEST_DEADLINE_S`` from its accept for the TLS handshake, the request line
  and the headers together, however slowly it trickles them, and as long again to take the answer.

Nothing a client sends can stop the agent.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hmac
import io
import ipaddress
import logging
import os
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from hmonitor.agent.server import AllowList, BindError, TlsFiles

log = logging.getLogger(__name__)

REQUEST_DEADLINE_S = 10.0  # Prometheus's own scrape_timeout is 10 s by default
MAX_CONNECTIONS = 16
_FORBIDDEN = (b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: 31\r\nConnection: close\r\n\r\n"
              b"not in this agent's allow-list\n")
# The IPv6 wildcard cannot be had (no IPv6 in this kernel, or turned off): listen on IPv4's.
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


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


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each given what is left of one deadline: a client that trickles
    its request a byte at a time is dropped when the deadline passes."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not in before the deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Writer(io.BufferedIOBase):
    """A connection's writes, each whole (sendall: its timeout bounds the whole call)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return memoryview(data).nbytes


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.0"

    def __init__(self, request: Any, client_address: Any, server: MetricsServer,
                 deadline: float | None = None) -> None:
        """Serves the connection; ``deadline`` (time.monotonic) for its request, by default
        ``request_deadline`` from now."""
        self.deadline = (time.monotonic() + server.request_deadline if deadline is None
                         else deadline)
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.deadline))
        self.wfile = _Writer(self.connection)

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
        srv = self.server  # the allow-list was checked when the connection was accepted
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
        # The answer gets as long again as the request had: a client that reads it slowly (or
        # not at all) is dropped then.
        self.connection.settimeout(self.server.request_deadline)
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


class MetricsServer(HTTPServer):
    allow_reuse_address = True  # but not SO_REUSEPORT: a second copy's bind fails
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        allow: AllowList,
        token: str,
        context: ssl.SSLContext | None,
        snapshot: Callable[[], object] | None = None,
        *,
        request_deadline: float = REQUEST_DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.address_family = family
        self.registry, self.allow, self.token, self.context = registry, allow, token, context
        self.request_deadline = request_deadline
        self._slots = threading.BoundedSemaphore(max_connections)
        self._snapshot = snapshot
        self._pages_lock = threading.Lock()
        self._pages_of: object | None = None  # the snapshot the cached pages were made from
        self._pages: dict[tuple[str, bool], bytes] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            # The wildcard takes IPv4 clients too (as ::ffff:a.b.c.d), as gRPC's [::] does.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: no getfqdn (a DNS look-up)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def page(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str,
             gzipped: bool) -> bytes:
        """The exposition, made once per snapshot and format: the metrics change only when the
        agent collects (at most once per --cache-ttl), so a scrape in between costs a lookup
        instead of 15 to 25 ms of rendering at 8 GPUs x 64 processes with --metrics-pids (the
        agent's scrape p50 target is 5 ms). A failed snapshot is rendered, not cached: the next
        scrape collects again."""
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

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """In the accepting thread, before anything is read: a client outside the allow-list
        is answered 403 (plain HTTP) and disconnected."""
        if self.allow.allows(_peer(client_address)):
            return True
        if self.context is None:
            _refuse(request)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, if fewer than ``max_connections`` are being served;
        else it is closed at once."""
        if not self._slots.acquire(blocking=False):
            log.debug("metrics: too many connections, closing %s", client_address)
            self.shutdown_request(request)
            return
        deadline = time.monotonic() + self.request_deadline
        thread = threading.Thread(target=self._connection, name="metrics-conn", daemon=True,
                                  args=(request, client_address, deadline))
        try:
            thread.start()
        except RuntimeError:  # no thread to be had
            self._slots.release()
            self.shutdown_request(request)

    def _connection(self, request: socket.socket, client_address: Any, deadline: float) -> None:
        conn = request
        try:
            if self.context is not None:
                # CPython bounds the whole handshake by the socket's timeout, not each read.
                request.settimeout(max(deadline - time.monotonic(), 0.001))
                conn = self.context.wrap_socket(request, server_side=True)
            _Handler(conn, client_address, self, deadline)
        except OSError as err:  # ssl.SSLError included: a failed handshake, a client gone
            log.debug("metrics: connection from %s: %s", client_address, err)
        except Exception:  # noqa: BLE001 - one connection never takes the agent down
            self.handle_error(conn, client_address)
        finally:
            self.shutdown_request(conn)
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Ends a connection; over TLS with close_notify first, so the client knows the answer
        came whole (the alert is sent without waiting for the client's)."""
        if isinstance(request, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError):  # SSLWantReadError: ours went out
                request.settimeout(0.0)
                request = request.unwrap()
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: error serving %s", client_address, exc_info=True)


def _refuse(sock: socket.socket) -> None:
    """Answers 403 without waiting for anything: the request is not read, but what of it has
    arrived is drained, so that closing sends FIN rather than RST (which could discard the
    answer before the client reads it)."""
    try:
        sock.setblocking(False)
        sock.send(_FORBIDDEN)
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:  # BlockingIOError: nothing more has arrived
        pass


def start_metrics_server(
    addr: str,
    registry: CollectorRegistry,
    allow: AllowList,
    *,
    token: str = "",
    tls: TlsFiles | None = None,
    snapshot: Callable[[], object] | None = None,
    request_deadline: float = REQUEST_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> tuple[MetricsServer, int]:
    """Serve `registry` on `addr` ("host:port", "[v6]:port"; ":port" is every address, IPv6 and
    IPv4, or IPv4's alone where the host has no IPv6) in a daemon thread; the server and its
    bound port. With `snapshot` (what the registry's collector reads; a new object after each
    collection), the exposition is made once per snapshot. Raises BindError when the address
    can't be bound, ValueError when it is bad."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--metrics-addr/GOHM_METRICS_ADDR: not host:port: {addr!r}")
    host, port = host.strip("[]"), int(port_text)
    context = tls_context(tls) if tls is not None else None

    def serve(bind: tuple[str, int], family: socket.AddressFamily) -> MetricsServer:
        return MetricsServer(bind, family, registry, allow, token, context, snapshot,
                             request_deadline=request_deadline, max_connections=max_connections)

    try:
        if host:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            except OSError as err:
                raise BindError(f"cannot listen on {addr}: {err}") from None
            server = serve((str(info[4][0]), int(info[4][1])), info[0])
        else:
            try:
                server = serve(("::", port), socket.AF_INET6)
            except OSError as err:
                if err.errno not in _NO_IPV6:
                    raise
                log.info("metrics: no IPv6 here (%s): listening on IPv4 only", err.strerror)
                server = serve(("0.0.0.0", port), socket.AF_INET)
    except OSError as err:
        raise BindError(f"cannot listen on {addr}: {err.strerror or err}") from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, int(server.server_address[1])
