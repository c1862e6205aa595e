"""The senders against real servers on loopback (tests/notifykit.py): aiosmtpd for e-mail, plain,
STARTTLS and SMTP over TLS, with logins and refusals; http.server receivers for webhooks, with
scripted answers, one that never answers, one that trickles; Apprise where it is installed."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import pytest
from notifykit import LATER, REFUSED, HttpReceiver, Reply, SmtpServer, TlsFiles

from hmonitor.web.notify import (
    AppriseSender,
    DeliveryError,
    EmailSender,
    Message,
    WebhookSender,
    webhook_from_setting,
)

SmtpFactory = Callable[..., SmtpServer]
HttpFactory = Callable[..., HttpReceiver]

MESSAGE = Message(
    subject="GPU 3 of gpu07 is hot: 91 °C",
    text="gpu07 GPU 3 (NVIDIA H200) is at 91 °C since 10:42.\n显存 已满 — memory full\nhmonitor",
    payload={"alert": "gpu_hot", "host": "gpu07", "gpu": 3, "value": 91, "text": "显存 已满"},
)
SECRET = "s3cret-Pa55"


def email_sender(server: SmtpServer, **kwargs: object) -> EmailSender:
    options: dict[str, object] = {"security": server.security, "mail_from": "hmonitor@lab.example",
                                  "timeout": 5.0}
    options.update(kwargs)
    return EmailSender(server.host, server.port, **options)  # type: ignore[arg-type]


def failure(send: Callable[[], None]) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send()
    assert "\n" not in str(caught.value)
    return caught.value


# --- e-mail ------------------------------------------------------------------------------------

def test_plain_smtp_delivers_one_mail_to_all_recipients(smtp_server: SmtpFactory) -> None:
    server = smtp_server()
    sender = email_sender(server, mail_from="hmonitor <hmonitor@lab.example>")
    assert sender.name == f"mail via 127.0.0.1:{server.port}"
    sender.send(MESSAGE, ["admin@lab.example", "Zhang San <zs@lab.example>"])
    (mail,) = server.wait()
    assert mail.mail_from == "hmonitor@lab.example"
    assert mail.rcpt_tos == ["admin@lab.example", "zs@lab.example"]
    msg = mail.message
    assert msg["From"] == "hmonitor <hmonitor@lab.example>"
    assert [a.addr_spec for a in msg["To"].addresses] == ["admin@lab.example", "zs@lab.example"]
    assert msg["Subject"] == MESSAGE.subject
    assert msg["Date"].datetime is not None
    assert msg["Message-ID"].endswith("@lab.example>")
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert msg.get_content().rstrip("\n") == MESSAGE.text
    assert mail.raw.isascii()  # 7-bit transfer encodings: no 8BITMIME needed


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_starttls_then_login(smtp_server: SmtpFactory, tls_files: TlsFiles,
                             mechanism: str) -> None:
    # The server requires STARTTLS before anything and offers AUTH only over TLS.
    server = smtp_server(security="starttls", tls=tls_files, users={"alice": SECRET},
                         mechanisms=(mechanism,))
    email_sender(server, user="alice", password=SECRET,
                 ssl_context=tls_files.client_context()).send(MESSAGE, ["admin@lab.example"])
    assert server.wait()[0].message["Subject"] == MESSAGE.subject
    assert server.logins == [(mechanism, "alice")]


def test_smtp_over_tls(smtp_server: SmtpFactory, tls_files: TlsFiles) -> None:
    server = smtp_server(security="ssl", tls=tls_files, users={"alice": SECRET})
    email_sender(server, user="alice", password=SECRET,
                 ssl_context=tls_files.client_context()).send(MESSAGE, ["admin@lab.example"])
    assert server.wait()[0].rcpt_tos == ["admin@lab.example"]
    assert server.logins and server.logins[0][1] == "alice"


def test_a_wrong_password_is_permanent_and_not_shown(smtp_server: SmtpFactory,
                                                     tls_files: TlsFiles) -> None:
    server = smtp_server(security="starttls", tls=tls_files, users={"alice": SECRET})
    sender = email_sender(server, user="alice", password="wrong-" + SECRET,
                          ssl_context=tls_files.client_context())
    error = failure(lambda: sender.send(MESSAGE, ["admin@lab.example"]))
    assert error.permanent and "alice" in str(error) and SECRET not in str(error)
    assert SECRET not in repr(sender) and server.failed_logins and not server.mails


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_an_untrusted_certificate_is_permanent(smtp_server: SmtpFactory, tls_files: TlsFiles,
                                               security: str) -> None:
    server = smtp_server(security=security, tls=tls_files)
    error = failure(lambda: email_sender(server).send(MESSAGE, ["admin@lab.example"]))
    assert error.permanent and "certificate" in str(error)
    assert not server.mails


def test_starttls_that_the_server_lacks_is_permanent(smtp_server: SmtpFactory) -> None:
    server = smtp_server()
    error = failure(lambda: email_sender(server, security="starttls").send(MESSAGE, ["a@b.c"]))
    assert error.permanent and "STARTTLS" in str(error)


def test_a_recipient_refused_for_good_is_permanent(smtp_server: SmtpFactory) -> None:
    server = smtp_server()
    error = failure(lambda: email_sender(server).send(MESSAGE, [REFUSED]))
    assert error.permanent and "550" in str(error) and REFUSED in str(error)


def test_a_recipient_refused_for_now_is_transient(smtp_server: SmtpFactory) -> None:
    server = smtp_server()
    error = failure(lambda: email_sender(server).send(MESSAGE, [LATER, REFUSED]))
    assert not error.permanent and "451" in str(error)


def test_some_recipients_refused_is_permanent_the_rest_got_it(smtp_server: SmtpFactory) -> None:
    # A retry would mail the accepted recipients again.
    server = smtp_server()
    error = failure(lambda: email_sender(server).send(MESSAGE, ["admin@lab.example", LATER]))
    assert error.permanent and "delivered to 1 of 2" in str(error)
    assert server.wait()[0].rcpt_tos == ["admin@lab.example"]


def test_no_or_malformed_recipients_are_permanent(smtp_server: SmtpFactory) -> None:
    sender = email_sender(smtp_server())
    assert failure(lambda: sender.send(MESSAGE, [])).permanent
    assert failure(lambda: sender.send(MESSAGE, ["not an address"])).permanent


def test_smtp_refused_port_is_transient(refused_port: int) -> None:
    sender = EmailSender("127.0.0.1", refused_port, security="none", mail_from="h@lab.example")
    error = failure(lambda: sender.send(MESSAGE, ["a@lab.example"]))
    assert not error.permanent


@pytest.mark.parametrize("security", ["starttls", "ssl"])  # no greeting; no TLS handshake
def test_a_silent_smtp_server_times_out(silent_port: int, security: str) -> None:
    sender = EmailSender("127.0.0.1", silent_port, security=security, timeout=1.0,
                         mail_from="h@lab.example")
    start = time.monotonic()
    error = failure(lambda: sender.send(MESSAGE, ["a@lab.example"]))
    assert time.monotonic() - start < 3
    assert not error.permanent and "within 1 s" in str(error)


# --- webhooks ----------------------------------------------------------------------------------

def test_json_webhook_posts_the_payload(http_receiver: HttpFactory) -> None:
    receiver = http_receiver()
    sender = WebhookSender(receiver.url("/alerts/in"))
    assert sender.name == f"webhook http://127.0.0.1:{receiver.port}/…"
    sender.send(MESSAGE)
    (request,) = receiver.wait()
    assert request.method == "POST" and request.path == "/alerts/in"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["user-agent"].startswith("hmonitor/")
    assert request.json() == MESSAGE.payload


def test_slack_webhook_posts_subject_and_text(http_receiver: HttpFactory) -> None:
    receiver = http_receiver()
    sender = webhook_from_setting(receiver.url("/hooks/x8xh6mdkr7bxpc3ejtyd8fn3ae"))
    assert sender.kind == "slack" and sender.name.startswith("slack webhook ")
    sender.send(MESSAGE)
    assert receiver.wait()[0].json() == {"text": f"{MESSAGE.subject}\n{MESSAGE.text}"}


@pytest.mark.parametrize(("status", "permanent"), [
    (500, False), (502, False), (503, False), (408, False), (429, False),
    (400, True), (403, True), (404, True), (410, True),
])
def test_http_errors(http_receiver: HttpFactory, status: int, permanent: bool) -> None:
    receiver = http_receiver()
    receiver.reply("/services/T0/B0/secret-token", status, b"no_service\n")
    sender = WebhookSender(receiver.url("/services/T0/B0/secret-token"))
    error = failure(lambda: sender.send(MESSAGE))
    assert error.permanent is permanent
    assert str(status) in str(error) and "no_service" in str(error)
    assert "secret-token" not in str(error)


def test_a_redirect_is_not_followed(http_receiver: HttpFactory) -> None:
    receiver = http_receiver()
    receiver.reply("/old", 308, headers={"Location": receiver.url("/new/secret-token")})
    error = failure(lambda: WebhookSender(receiver.url("/old")).send(MESSAGE))
    assert error.permanent and "308" in str(error) and "not followed" in str(error)
    assert "secret-token" not in str(error)
    assert [r.path for r in receiver.requests] == ["/old"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_receiver_that_never_answers_times_out(silent_port: int, scheme: str) -> None:
    sender = WebhookSender(f"{scheme}://127.0.0.1:{silent_port}/hook", timeout=1.0)
    start = time.monotonic()
    error = failure(lambda: sender.send(MESSAGE))
    assert time.monotonic() - start < 3
    assert not error.permanent and "within 1 s" in str(error)


def test_a_trickling_receiver_is_cut_at_the_deadline(trickle_port: int) -> None:
    # Every read gets a byte within 0.1 s: only the deadline on the whole exchange ends it.
    sender = WebhookSender(f"http://127.0.0.1:{trickle_port}/hook", timeout=1.0)
    start = time.monotonic()
    error = failure(lambda: sender.send(MESSAGE))
    assert time.monotonic() - start < 3
    assert not error.permanent and "within 1 s" in str(error)


def test_a_refused_port_is_transient(refused_port: int) -> None:
    error = failure(lambda: WebhookSender(f"http://127.0.0.1:{refused_port}/h").send(MESSAGE))
    assert not error.permanent and "refused" in str(error).lower()


def test_an_unresolvable_host_is_transient() -> None:
    error = failure(lambda: WebhookSender("http://no-such-host.invalid/hook",
                                          timeout=2).send(MESSAGE))
    assert not error.permanent and "resolve" in str(error)


def test_https_webhook(http_receiver: HttpFactory, tls_files: TlsFiles) -> None:
    receiver = http_receiver(tls=tls_files)
    url = receiver.url("/hook", host="localhost")
    WebhookSender(url, ssl_context=tls_files.client_context()).send(MESSAGE)
    assert receiver.wait()[0].json() == MESSAGE.payload
    error = failure(lambda: WebhookSender(url).send(MESSAGE))  # the system's CAs only
    assert error.permanent and "certificate" in str(error)


def test_no_proxy_from_the_environment(http_receiver: HttpFactory, refused_port: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{refused_port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    receiver = http_receiver()
    WebhookSender(receiver.url("/hook")).send(MESSAGE)
    assert receiver.wait()[0].path == "/hook"


def test_a_configured_proxy_is_used(http_receiver: HttpFactory) -> None:
    proxy, target = http_receiver(), http_receiver()
    sender = webhook_from_setting({"url": target.url("/hook"), "proxy": proxy.url("")})
    sender.send(MESSAGE)
    # An HTTP proxy gets the whole URL on the request line (this one answers itself).
    assert proxy.wait()[0].path == target.url("/hook") and not target.requests


def test_replies_in_order_then_the_last_repeats(http_receiver: HttpFactory) -> None:
    # The kit's scripted answers, as the outbox's retry tests use them.
    receiver = http_receiver()
    receiver.replies("/hook", 503, Reply(200, b"ok"))
    sender = WebhookSender(receiver.url("/hook"))
    assert not failure(lambda: sender.send(MESSAGE)).permanent
    sender.send(MESSAGE)
    sender.send(MESSAGE)
    assert len(receiver.wait(3)) == 3


# --- Apprise -----------------------------------------------------------------------------------

def test_apprise_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # import apprise -> ImportError
    with pytest.raises(ValueError, match=r"^apprise is not installed: pip install "
                                         r"'hmonitor\[notify\]'$"):
        AppriseSender("json://127.0.0.1/hook")


def test_apprise_delivers_and_fails(http_receiver: HttpFactory) -> None:
    pytest.importorskip("apprise")
    receiver = http_receiver()
    sender = AppriseSender(f"json://127.0.0.1:{receiver.port}/hook", timeout=2)
    assert sender.name == "apprise json://…"
    sender.send(MESSAGE)
    body = json.loads(receiver.wait()[0].body)
    assert body["title"] == MESSAGE.subject and body["message"] == MESSAGE.text
    receiver.reply("/hook", 500)
    error = failure(lambda: sender.send(MESSAGE))
    assert not error.permanent and str(receiver.port) not in str(error)
