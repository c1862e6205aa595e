"""Real counterparts for the notification tests, all on loopback: an SMTP server (aiosmtpd) that
keeps what it receives, plain or STARTTLS or SMTP over TLS, with logins and refused recipients; an
HTTP(S) receiver that records POSTs and answers what a test scripts; a port that accepts and never
answers, one that trickles its answer, one that refuses; a self-signed certificate (openssl).

Its fixtures (``tls_files``, ``smtp_server``, ``http_receiver``, ``silent_port``,
``trickle_port``, ``refused_port``) are registered by ``pytest_plugins`` in tests/conftest.py;
its classes can be used directly as well (``SmtpServer(...).start()``)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

LOOPBACK = "127.0.0.1"
# Recipients the test SMTP server refuses, with its answer: for good, and for now.
REFUSED = "nobody@lab.example"
LATER = "busy@lab.example"
REFUSE = {REFUSED: "550 5.1.1 no such user here", LATER: "451 4.3.0 mailbox busy, try later"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# --- certificates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for localhost and 127.0.0.1, with its key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only (hostname checked, as in production)."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(folder: Path) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    # An EC key: made in milliseconds where RSA takes a noticeable fraction of a second.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "server.key", "-out", "server.pem", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        cwd=folder, check=True, capture_output=True,
    )
    return TlsFiles(folder / "server.pem", folder / "server.key")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("notify-pki"))


# --- SMTP --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str  # the envelope's sender and recipients, as the server took them
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with email.policy.default: decoded headers, get_content()
    raw: bytes


class _SmtpHandler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        answer = self.server.refuse.get(address.lower())
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # Lines end in CRLF on the wire; a mailbox stores them as LF, and so do we.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"),
                                          policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.server.lock:
            self.server.mails.append(ReceivedMail(str(envelope.mail_from),
                                                  list(envelope.rcpt_tos), parsed, raw))
        return "250 Message accepted"


class SmtpServer:
    """aiosmtpd on loopback. ``security``: "none", "starttls" (offered and required before
    MAIL) or "ssl" (SMTP over TLS from the first byte); both need ``tls``. ``users``: logins the
    server offers AUTH for (LOGIN and PLAIN; ``mechanisms`` narrows them) and accepts; ``refuse``:
    recipient -> the reply that refuses it (default: ``REFUSE``)."""

    def __init__(self, *, security: str = "none", tls: TlsFiles | None = None,
                 users: Mapping[str, str] | None = None, mechanisms: tuple[str, ...] = (),
                 refuse: Mapping[str, str] = REFUSE) -> None:
        assert security in ("none", "starttls", "ssl")
        assert security == "none" or tls is not None, "TLS needs tls_files"
        self.security, self.users = security, dict(users or {})
        self.refuse = {k.lower(): v for k, v in refuse.items()}
        self.mails: list[ReceivedMail] = []
        self.logins: list[tuple[str, str]] = []  # (mechanism, user) of each accepted login
        self.failed_logins: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.host, self.port = LOOPBACK, free_port()
        kwargs: dict[str, Any] = {}
        if security == "starttls" and tls is not None:
            kwargs.update(tls_context=tls.server_context(), require_starttls=True)
        if self.users:
            excluded = [m for m in ("LOGIN", "PLAIN") if mechanisms and m not in mechanisms]
            kwargs.update(authenticator=self._authenticate, auth_exclude_mechanism=excluded,
                          # aiosmtpd counts only STARTTLS as TLS, not SMTP over TLS.
                          auth_require_tls=security == "starttls")
        self.controller = Controller(
            _SmtpHandler(self), hostname=LOOPBACK, port=self.port, server_hostname="smtp.test",
            ssl_context=tls.server_context() if security == "ssl" and tls else None,
            ready_timeout=10, **kwargs)

    def _authenticate(self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        ok = self.users.get(user) == auth_data.password.decode("utf-8", "replace")
        with self.lock:
            (self.logins if ok else self.failed_logins).append((mechanism, user))
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop(no_assert=True)

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMail]:
        """The mails received once there are ``count`` of them."""
        wait_for(lambda: len(self.mails) >= count, timeout, f"{count} mail(s)")
        with self.lock:
            return list(self.mails)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """``smtp_server(**SmtpServer options)`` starts one; all are stopped after the test."""
    started: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        started.append(SmtpServer(**options).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


# --- HTTP --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class HttpReceiver:
    """An HTTP (or, with ``tls``, HTTPS) server on loopback that records every request and
    answers each path as scripted: ``reply(path, ...)`` for always, ``replies(path, r1, r2, ...)``
    for one after another (the last repeats). Unscripted paths answer 200 "ok"."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.requests: list[ReceivedRequest] = []
        self.lock = threading.Lock()
        self._script: dict[str, list[Reply]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # also serves GET/PUT below: a recorder, not an API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                reply = receiver._next_reply(self.path.split("?")[0])
                with receiver.lock:
                    receiver.requests.append(ReceivedRequest(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        body))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the requests are recorded

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        # A client that rejects the certificate aborts the handshake: not worth a traceback.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if tls is not None:
            # The handshake then happens in the request's thread, not the accepting one.
            self.server.socket = tls.server_context().wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = "https" if tls else "http"
        self.port = int(self.server.server_address[1])
        # A short poll: shutdown() waits for it, at the end of every test.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def url(self, path: str = "/hook", host: str = LOOPBACK) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def reply(self, path: str, status: int = 200, body: bytes = b"",
              headers: Mapping[str, str] | None = None) -> None:
        self.replies(path, Reply(status, body, dict(headers or {})))

    def replies(self, path: str, *replies: Reply | int) -> None:
        with self.lock:
            self._script[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def _next_reply(self, path: str) -> Reply:
        with self.lock:
            script = self._script.get(path)
            if not script:
                return Reply()
            return script.pop(0) if len(script) > 1 else script[0]

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedRequest]:
        wait_for(lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        with self.lock:
            return list(self.requests)


@pytest.fixture
def http_receiver() -> Iterator[Callable[..., HttpReceiver]]:
    """``http_receiver(tls=None)`` starts one; all are stopped after the test."""
    started: list[HttpReceiver] = []

    def start(tls: TlsFiles | None = None) -> HttpReceiver:
        started.append(HttpReceiver(tls).start())
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


# --- servers that misbehave --------------------------------------------------------------------

@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.fixture
def refused_port() -> int:
    """A port nothing listens on: connecting is refused."""
    return free_port()


class TrickleServer:
    """Accepts connections and sends ``data`` one byte every ``interval`` seconds: each read
    gets something, so only a deadline on the whole exchange stops a client."""

    def __init__(self, data: bytes, interval: float) -> None:
        self.data, self.interval = data, interval
        self.listener = socket.socket()
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                conn, _ = self.listener.accept()
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            for i in range(len(self.data)):
                if self._stop.wait(self.interval):
                    return
                conn.sendall(self.data[i:i + 1])

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()


@pytest.fixture
def trickle_port() -> Iterator[int]:
    """A server that trickles an HTTP answer, one byte every 0.1 s (a minute in all)."""
    server = TrickleServer(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 600 + b"\r\n\r\n", 0.1)
    yield server.port
    server.stop()
