"""Senders: deliver one message to one destination (SMTP, a webhook, an Apprise URL). They never
retry: ``DeliveryError`` says whether retrying can help, the outbox decides when. Error texts are
one line without passwords or full webhook URLs (Slack's carry their secret in the path)."""

from __future__ import annotations

import contextlib
import email.errors
import email.policy
import email.utils
import functools
import http.client
import importlib
import json
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from hmonitor import __version__

SECURITY = ("none", "starttls", "ssl")
WEBHOOK_FORMATS = ("json", "slack")
WEBHOOK_KEYS = frozenset({"url", "format", "timeout", "proxy"})
APPRISE_MISSING = "apprise is not installed: pip install 'hmonitor[notify]'"


class DeliveryError(Exception):
    """One line, no secrets; permanent=True when retrying cannot help (a 4xx other than 408/429,
    a recipient refused for good, auth failure)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    subject: str  # one line
    text: str  # plain-text body (several lines)
    payload: dict[str, Any]  # JSON-able structured form (the generic webhook's body)


class Sender(Protocol):
    name: str  # for logs and the delivery log, no secrets

    def send(self, message: Message, recipients: Sequence[str] = ()) -> None: ...


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: enough to tell destinations apart, none of the path's secret."""
    text = url.strip()
    with contextlib.suppress(ValueError):  # a bad [IPv6] literal
        parts = urllib.parse.urlsplit(text)
        where = parts.netloc.rpartition("@")[2]  # never the user:password
        if parts.scheme and where:
            rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
            return f"{parts.scheme}://{where}{rest}"
    head = re.split(r"[/?#@\s]", text, maxsplit=1)[0]
    return _one_line(head, 40) + ("…" if head != text else "")


def _os_error(exc: BaseException, where: str, timeout: float) -> DeliveryError:
    """Network and TLS failures, shared by SMTP and HTTP. Only a certificate or TLS setup that
    the peer rejects is permanent: the rest may pass on a later try."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or "verification failed"
        return DeliveryError(f"TLS certificate of {where} rejected: {detail}", permanent=True)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return DeliveryError(f"{where} closed the connection during TLS")
    if isinstance(exc, ssl.SSLError):
        # A wrong port or protocol version: the same on every try.
        return DeliveryError(f"TLS with {where} failed: {exc.reason or exc}", permanent=True)
    if isinstance(exc, socket.gaierror):
        return DeliveryError(f"cannot resolve the host of {where}: {exc.strerror or exc}")
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"no answer from {where} within {timeout:g} s")
    if isinstance(exc, http.client.RemoteDisconnected):
        return DeliveryError(f"{where} closed the connection without answering")
    if isinstance(exc, OSError):  # refused, reset, unreachable: all may pass later
        return DeliveryError(_one_line(f"{where}: {exc.strerror or exc}"))
    return DeliveryError(_one_line(f"{where}: bad answer ({type(exc).__name__}: {exc})"))


# --- addresses and settings -------------------------------------------------------------------

def _bad_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return False  # an address literal, [192.0.2.1]
    try:
        labels = domain.encode("idna").decode("ascii").split(".")  # 实验室.cn -> xn--...
    except UnicodeError:
        return True
    return not all(0 < len(x) <= 63 and x.replace("-", "").isalnum() and x.isascii()
                   and not x.startswith("-") and not x.endswith("-") for x in labels)


def check_email_address(addr: str) -> None:
    """ValueError unless ``addr`` is one mailbox: ``user@host`` or ``Name <user@host>``."""
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError("e-mail address is empty")
    if any(c in addr for c in "\r\n\0"):
        raise ValueError(f"e-mail address {addr!r} contains a line break")
    try:
        header = email.policy.default.header_factory("to", addr)
    except (email.errors.HeaderParseError, IndexError, ValueError):
        # The stdlib parser raises on some malformed input instead of recording a defect.
        raise ValueError(f"e-mail address {addr!r} is malformed") from None
    addresses = header.addresses
    if header.defects or len(addresses) != 1:
        why = str(header.defects[0]) if header.defects else "want exactly one address"
        raise ValueError(f"e-mail address {addr!r} is malformed: {why}")
    if not addresses[0].username or not addresses[0].domain:
        raise ValueError(f"e-mail address {addr!r} needs user@host")
    if _bad_domain(addresses[0].domain):
        raise ValueError(f"e-mail address {addr!r}: {addresses[0].domain!r} is not a host name")


def check_webhook_url(url: str, what: str = "webhook URL") -> None:
    """ValueError naming what is wrong, the URL shown redacted."""
    if not isinstance(url, str):
        raise ValueError(f"{what} must be a string, not {type(url).__name__}")
    if not url.strip():
        raise ValueError(f"{what} is empty")
    shown = redact_url(url)
    if url != url.strip() or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{what} {shown} contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port raises for a bad one
    except ValueError as exc:
        raise ValueError(f"{what} {shown} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what} {shown} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{what} {shown} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} {shown} holds credentials (user:password@), not supported")


def guess_webhook_format(url: str) -> str:
    """"slack" for Slack's and Mattermost's (``/hooks/<id>``) incoming webhooks, else "json"."""
    parts = urllib.parse.urlsplit(url)
    if (parts.hostname or "").lower() == "hooks.slack.com" or re.fullmatch(
            r"/hooks/[A-Za-z0-9]+/?", parts.path):
        return "slack"
    return "json"


def webhook_from_setting(item: str | Mapping[str, Any]) -> WebhookSender:
    """One item of settings.py's ``webhooks``: a URL, or {"url", "format", "timeout", "proxy"}."""
    if isinstance(item, str):
        check_webhook_url(item)
        return WebhookSender(item, kind=guess_webhook_format(item))
    if not isinstance(item, Mapping):
        raise ValueError(f"webhook must be a URL or a dict, not {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in WEBHOOK_KEYS)
    if unknown:
        raise ValueError(f"webhook: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(WEBHOOK_KEYS))})")
    if (url := item.get("url")) is None:
        raise ValueError("webhook: 'url' is missing")
    check_webhook_url(url)
    kind = item.get("format", guess_webhook_format(url))
    timeout = item.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"webhook {redact_url(url)}: timeout must be a number of seconds")
    return WebhookSender(url, kind=kind, timeout=float(timeout), proxy=item.get("proxy"))


# --- e-mail -----------------------------------------------------------------------------------

@functools.cache
def _local_hostname() -> str:
    # smtplib looks this up on every connection; it can stall on a broken resolver.
    return socket.getfqdn()


class EmailSender:
    """One e-mail to all recipients through one SMTP server (smtplib). ``timeout`` bounds the
    connection and each command."""

    def __init__(self, host: str, port: int, *, security: str = "starttls",
                 user: str | None = None, password: str | None = None, mail_from: str,
                 timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        if security not in SECURITY:
            raise ValueError(f"mail security must be one of {', '.join(SECURITY)}: {security!r}")
        if not host or any(c.isspace() for c in host) or not 0 < port < 65536:
            raise ValueError(f"mail server {host!r} port {port} is not a host and port")
        if (user is None) != (password is None):
            raise ValueError("mail user and password go together: set both or neither")
        if not timeout > 0:
            raise ValueError("mail timeout must be positive")
        check_email_address(mail_from)
        self.host, self.port, self.security = host, port, security
        self.user, self._password, self.mail_from, self.timeout = user, password, mail_from, timeout
        self._context = ssl_context or ssl.create_default_context()
        self.name = f"mail via {host}:{port}"

    def compose(self, message: Message, recipients: Sequence[str]) -> EmailMessage:
        # 7bit transfer encodings: a UTF-8 body goes as quoted-printable or base64, so servers
        # without 8BITMIME take it unchanged.
        mail = EmailMessage(policy=email.policy.default.clone(cte_type="7bit"))
        mail["From"] = self.mail_from
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = _one_line(message.subject, 900)
        mail["Date"] = email.utils.formatdate(localtime=True)
        domain = self.mail_from.rpartition("@")[2].rstrip(">").strip() or "hmonitor.invalid"
        mail["Message-ID"] = email.utils.make_msgid("hmonitor", domain=domain)
        mail.set_content(message.text, charset="utf-8")
        return mail

    def send(self, message: Message, recipients: Sequence[str] = ()) -> None:
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            raise DeliveryError("no e-mail recipients", permanent=True)
        for rcpt in recipients:
            try:
                check_email_address(rcpt)
            except ValueError as exc:
                raise DeliveryError(str(exc), permanent=True) from None
        mail = self.compose(message, recipients)
        where = f"{self.host}:{self.port}"
        try:
            refused = self._deliver(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(_one_line(f"login as {self.user!r} refused by {where}: "
                                          f"{exc.smtp_code}"), permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise _refused(exc.recipients, len(recipients)) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(_one_line(f"{where}: {exc}"), permanent=True) from None
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a timeout as a disconnection: tell them apart.
            if isinstance(exc.__context__, TimeoutError):
                raise _os_error(exc.__context__, where, self.timeout) from None
            raise DeliveryError(f"{where} closed the connection") from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            raise DeliveryError(_one_line(f"{where}: {exc.smtp_code} {text}"),
                                permanent=500 <= exc.smtp_code < 600) from None
        except smtplib.SMTPException as exc:  # e.g. no authentication method in common
            raise DeliveryError(_one_line(f"{where}: {exc}"), permanent=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _os_error(exc, where, self.timeout) from None
        if refused:
            # The others have it: a retry would send it to them again.
            raise _refused(refused, len(recipients), partial=True)

    def _deliver(self, mail: EmailMessage) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=_local_hostname(),
                                    timeout=self.timeout, context=self._context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, local_hostname=_local_hostname(),
                                timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self._context)
            if self.user is not None and self._password is not None:
                smtp.login(self.user, self._password)
            refused = smtp.send_message(mail)
            # The message is accepted: a failed goodbye must not make it resent.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            return refused
        finally:
            smtp.close()


def _refused(refused: Mapping[str, tuple[int, bytes]], total: int,
             partial: bool = False) -> DeliveryError:
    shown = "; ".join(f"{rcpt} ({code} {text.decode('utf-8', 'replace')})"
                      for rcpt, (code, text) in refused.items())
    head = (f"delivered to {total - len(refused)} of {total} recipients, refused: " if partial
            else "recipients refused: ")
    permanent = partial or all(500 <= code < 600 for code, _ in refused.values())
    return DeliveryError(_one_line(head + shown, 300), permanent=permanent)


# --- webhooks ---------------------------------------------------------------------------------

class _Watchdog:
    """Shuts the connection down at the deadline. A socket timeout bounds each receive, not
    their sum: a receiver trickling a byte a second could otherwise hold a delivery for ever."""

    def __init__(self, timeout: float) -> None:
        self.deadline, self.fired = time.monotonic() + timeout, False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.timer = threading.Timer(timeout, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket | None = None) -> None:
        with self._lock:
            self._sock = sock or self._sock
            if self.fired and self._sock is not None:
                # socket.socket's own shutdown, under a TLS socket's: the blocked read ends now.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def _fire(self) -> None:
        self.fired = True
        self.watch()


class WebhookSender:
    """POST one message within ``timeout`` seconds in all (http.client: urllib hides the socket
    the deadline needs). Proxies only through ``proxy`` (http://), never the environment's. No
    redirects: a POST redirected is a wrong URL, and following could carry the alert elsewhere."""

    def __init__(self, url: str, *, kind: str = "json", timeout: float = 10.0,
                 proxy: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        check_webhook_url(url)
        shown = redact_url(url)
        if kind not in WEBHOOK_FORMATS:
            raise ValueError(f"webhook {shown}: format must be one of "
                             f"{', '.join(WEBHOOK_FORMATS)}, not {kind!r}")
        if not timeout > 0:
            raise ValueError(f"webhook {shown}: timeout must be positive")
        if proxy is not None:
            check_webhook_url(proxy, "webhook proxy")
            if not proxy.startswith("http://"):
                raise ValueError(f"webhook proxy {redact_url(proxy)} must be an http:// URL")
        self.url, self.kind, self.timeout, self.proxy = url, kind, timeout, proxy
        self._context = ssl_context or ssl.create_default_context()
        self.name = f"{'slack ' if kind == 'slack' else ''}webhook {shown}"

    def body(self, message: Message) -> bytes:
        doc = ({"text": f"{message.subject}\n{message.text}"} if self.kind == "slack"
               else message.payload)
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")

    def send(self, message: Message, recipients: Sequence[str] = ()) -> None:
        where = redact_url(self.url)
        watchdog = _Watchdog(self.timeout)
        try:
            status, reason, location, snippet = self._post(self.body(message), watchdog)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise DeliveryError(f"no answer from {where} within {self.timeout:g} s") from None
            raise _os_error(exc, where, self.timeout) from None
        finally:
            watchdog.timer.cancel()
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryError(f"{where} answered {status}, a redirect to "
                                f"{redact_url(location) or 'nowhere'}: not followed (fix the URL)",
                                permanent=True)
        text = f"{where} answered HTTP {status} {reason}" + (f": {snippet}" if snippet else "")
        raise DeliveryError(_one_line(text, 240),
                            permanent=400 <= status < 500 and status not in (408, 429))

    def _post(self, body: bytes, watchdog: _Watchdog) -> tuple[int, str, str, str]:
        target = urllib.parse.urlsplit(self.url)
        via = urllib.parse.urlsplit(self.proxy) if self.proxy else target
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = http.client.HTTPSConnection(via.hostname or "", via.port,
                                               timeout=watchdog.left(), context=self._context)
            if self.proxy:
                conn.set_tunnel(target.hostname or "", target.port)
        else:
            conn = http.client.HTTPConnection(via.hostname or "", via.port,
                                              timeout=watchdog.left())
        # Through a plain-HTTP proxy the request line carries the whole URL.
        path = self.url if self.proxy and target.scheme == "http" else (
            (target.path or "/") + (f"?{target.query}" if target.query else ""))
        try:
            conn.connect()
            watchdog.watch(conn.sock)
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": f"hmonitor/{__version__}",
            })
            response = conn.getresponse()
            snippet = response.read(200).decode("utf-8", "replace")
            return (response.status, response.reason, response.getheader("Location") or "",
                    snippet if response.status >= 300 else "")
        finally:
            conn.close()


# --- Apprise ----------------------------------------------------------------------------------

class AppriseSender:
    """Any of Apprise's services by its URL (optional extra ``hmonitor[notify]``)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        try:
            self._apprise: Any = importlib.import_module("apprise")
        except ImportError:
            raise ValueError(APPRISE_MISSING) from None
        scheme = url.partition("://")[0] if "://" in url else ""
        # Apprise URLs carry tokens in the host part too: show the scheme only.
        self.name = f"apprise {scheme}://…" if scheme else "apprise (no scheme)"
        # cto/rto: Apprise's own connect and read timeouts, unless the URL sets them.
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        extra = [f"{k}={timeout:g}" for k in ("cto", "rto") if k not in query]
        self._url = url + (("&" if "?" in url else "?") + "&".join(extra) if extra else "")
        if not self._apprise.Apprise().add(self._url):
            raise ValueError(f"apprise does not understand the URL {self.name.split(' ', 1)[1]}")

    def send(self, message: Message, recipients: Sequence[str] = ()) -> None:
        apprise = self._apprise
        bundle = apprise.Apprise()
        bundle.add(self._url)
        with apprise.LogCapture(level=logging.WARNING) as logs:
            try:
                ok = bundle.notify(title=message.subject, body=message.text)
            except Exception as exc:  # noqa: BLE001 -- a plugin's own bug must not kill the outbox
                raise DeliveryError(_one_line(f"{self.name}: {type(exc).__name__}")) from None
            lines = [ln for ln in logs.getvalue().splitlines() if ln.strip()]
        if not ok:
            why = re.sub(r"\S+://\S+", "<url>", lines[-1].split(" - ", 2)[-1]) if lines else ""
            raise DeliveryError(_one_line(f"{self.name} failed" + (f": {why}" if why else "")))
