"""What the senders accept from settings.py: webhook items, e-mail addresses, SMTP options; and
that their names and errors never show a webhook's secret path."""

from __future__ import annotations

from typing import Any

import pytest

from hmonitor.web.notify import (
    EmailSender,
    Sender,
    WebhookSender,
    check_email_address,
    webhook_from_setting,
)
from hmonitor.web.notify.senders import redact_url

SLACK = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/xoxSECRETtoken123"


@pytest.mark.parametrize(("item", "kind"), [
    (SLACK, "slack"),
    ("https://chat.lab.example/hooks/x8xh6mdkr7bxpc3ejtyd8fn3ae", "slack"),  # Mattermost
    ("http://127.0.0.1:8080/hooks/abc123/", "slack"),
    ("https://alerts.lab.example/hmonitor", "json"),
    ("https://chat.lab.example/hooks/a/b", "json"),
    ("http://[::1]:9000/in?token=x", "json"),
    ({"url": SLACK, "format": "json"}, "json"),  # an explicit format wins
    ({"url": "https://alerts.lab.example/in", "format": "slack", "timeout": 3}, "slack"),
])
def test_webhook_items(item: Any, kind: str) -> None:
    sender = webhook_from_setting(item)
    assert sender.kind == kind
    assert "SECRET" not in sender.name and "token" not in sender.name


def test_webhook_options() -> None:
    sender = webhook_from_setting({"url": "https://a.example/x", "timeout": 2.5,
                                   "proxy": "http://proxy.lab.example:3128"})
    assert sender.timeout == 2.5 and sender.proxy == "http://proxy.lab.example:3128"
    assert webhook_from_setting("https://a.example/x").timeout == 10.0


@pytest.mark.parametrize(("item", "words"), [
    ("hooks.slack.com/services/T0/B0/xoxSECRET", "http:// or https://"),
    ("ftp://files.lab.example/in", "http:// or https://"),
    ("https:///services/xoxSECRET", "no host"),
    ("https://hooks.example/a b", "spaces"),
    (" https://hooks.example/a", "spaces"),
    ("https://hooks.example/a\n", "spaces"),
    ("https://hooks.example:99999/xoxSECRET", "malformed"),
    ("https://user:xoxSECRET@hooks.example/a", "credentials"),
    ("", "empty"),
    (42, "a URL or a dict"),
    ({"url": 42}, "must be a string"),
    ({"format": "json"}, "'url' is missing"),
    ({"url": "https://a.example/xoxSECRET", "fromat": "json"}, "unknown key(s) fromat"),
    ({"url": "https://a.example/xoxSECRET", "format": "teams"}, "format must be one of"),
    ({"url": "https://a.example/xoxSECRET", "timeout": "5"}, "timeout must be a number"),
    ({"url": "https://a.example/xoxSECRET", "timeout": True}, "timeout must be a number"),
    ({"url": "https://a.example/xoxSECRET", "timeout": 0}, "timeout must be positive"),
    ({"url": "https://a.example/xoxSECRET", "proxy": "socks5://p:1080"}, "http:// or https://"),
    ({"url": "https://a.example/xoxSECRET", "proxy": "https://p:3128"}, "must be an http://"),
])
def test_malformed_webhook_items(item: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        webhook_from_setting(item)
    text = str(caught.value)
    assert words in text and "\n" not in text
    assert "SECRET" not in text  # the path of a Slack URL is its password


def test_redacted_urls() -> None:
    assert redact_url(SLACK) == "https://hooks.slack.com/…"
    assert redact_url("http://10.0.0.5:8080") == "http://10.0.0.5:8080"
    assert redact_url("http://[::1]:9000/in?token=x") == "http://[::1]:9000/…"
    assert redact_url("hooks.slack.com/services/xoxSECRET") == "hooks.slack.com…"
    assert WebhookSender(SLACK).name == "webhook https://hooks.slack.com/…"


@pytest.mark.parametrize("addr", [
    "admin@lab.example", "Zhang San <zs@lab.example>", "张三 <zs@lab.example>",
    "root@localhost", "a.b+alerts@mail.lab.example", '"x y"@lab.example', "zs@实验室.cn",
    "ops@[192.0.2.1]", "<admin@lab.example>",
])
def test_good_email_addresses(addr: str) -> None:
    check_email_address(addr)


@pytest.mark.parametrize("addr", [
    "", "  ", "admin", "admin@", "@lab.example", "a b@lab.example", "a..b@lab.example",
    "admin@lab..example", "a@@lab.example", "a@-lab.example", "a@lab.example, b@lab.example",
    "Admin <a@lab.example", "x <a@lab.example> y", "a@lab.example\r\nBcc: all@lab.example",
    "a@lab_example.com", "a@" + "x" * 64 + ".example",
])
def test_bad_email_addresses(addr: str) -> None:
    with pytest.raises(ValueError):
        check_email_address(addr)


@pytest.mark.parametrize(("options", "words"), [
    ({"security": "tls"}, "mail security must be one of none, starttls, ssl"),
    ({"user": "alice"}, "user and password go together"),
    ({"password": "p"}, "user and password go together"),
    ({"mail_from": "hmonitor"}, "e-mail address 'hmonitor'"),
    ({"timeout": 0}, "timeout must be positive"),
    ({"port": 0}, "is not a host and port"),
    ({"host": "smtp lab"}, "is not a host and port"),
])
def test_email_sender_options(options: dict[str, Any], words: str) -> None:
    kwargs: dict[str, Any] = {"host": "smtp.lab.example", "port": 587,
                              "mail_from": "hmonitor@lab.example"}
    kwargs.update(options)
    with pytest.raises(ValueError, match=words):
        EmailSender(**kwargs)


def test_email_sender_name_hides_the_password() -> None:
    sender = EmailSender("smtp.lab.example", 587, user="alice", password="pw-SECRET",
                         mail_from="hmonitor@lab.example")
    assert sender.name == "mail via smtp.lab.example:587"
    assert "SECRET" not in repr(sender) and "SECRET" not in str(vars(sender).get("name"))


def test_the_senders_meet_the_protocol() -> None:
    # mypy checks the assignments; the names are what the delivery log shows.
    senders: list[Sender] = [WebhookSender("https://a.example/x"),
                             EmailSender("smtp.lab.example", 25, mail_from="h@lab.example")]
    assert [s.name for s in senders] == ["webhook https://a.example/…",
                                         "mail via smtp.lab.example:25"]
