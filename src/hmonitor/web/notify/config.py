"""The notification keys of settings.py, checked at start: rules, destinations, recipients.

``check_notify(namespace)`` returns the ``NotifySettings`` or the problems as (key, one line)
pairs, which settings.py reports with the file and line like every other key. An unknown rule or
option, a bad SMTP port, a malformed address or webhook URL, a template without ``{user}``: each
stops the start with a line naming it, never a silent drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hmonitor.web.notify.senders import (
    SECURITY,
    AppriseSender,
    EmailSender,
    Sender,
    check_email_address,
    webhook_from_setting,
)

__all__ = ["NOTIFY_KEYS", "RULES", "NotifySettings", "RuleConfig", "check_notify"]

TO = ("admins", "user", "both")

# rule -> its options with defaults ("enabled" and "to" for all). host_down's minutes come from
# the fixed key alert_host_down_minutes.
RULES: dict[str, dict[str, Any]] = {
    "host_down": {"enabled": True, "to": "admins"},
    "disk_full": {"enabled": True, "to": "admins", "percent": 90},
    "idle_hog": {"enabled": True, "to": "both"},
    "account_expiring": {"enabled": True, "to": "both", "days": 14, "all_users": False},
    "gpu_lost": {"enabled": True, "to": "admins"},
    "gpu_hot": {"enabled": True, "to": "admins", "celsius": 90},
    "user_gpus": {"enabled": False, "to": "both", "max": 8},
}

NOTIFY_KEYS: tuple[str, ...] = (
    "smtp_host", "smtp_port", "smtp_security", "smtp_user", "smtp_password", "mail_from",
    "admin_emails", "webhooks", "apprise_urls", "user_email", "user_email_opt_out",
    "alert_host_down_minutes", "alert_rules", "alert_remind_minutes", "notify_timeout",
    "notify_retry_seconds",
)

_DEFAULT_PORT = {"none": 25, "starttls": 587, "ssl": 465}


@dataclass(frozen=True)
class RuleConfig:
    name: str
    enabled: bool
    to: str  # "admins", "user" or "both"
    options: Mapping[str, Any]  # the rule's own: percent, days, celsius, max, all_users

    @property
    def to_admins(self) -> bool:
        return self.to in ("admins", "both")

    @property
    def to_user(self) -> bool:
        return self.to in ("user", "both")


def _default_rules(host_down_minutes: float = 5.0) -> dict[str, RuleConfig]:
    out = {}
    for name, defaults in RULES.items():
        options = {k: v for k, v in defaults.items() if k not in ("enabled", "to")}
        if name == "host_down":
            options["minutes"] = host_down_minutes
        out[name] = RuleConfig(name, defaults["enabled"], defaults["to"], options)
    return out


@dataclass(frozen=True)
class NotifySettings:
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = None
    mail_from: str | None = None
    admin_emails: tuple[str, ...] = ()
    webhooks: tuple[Any, ...] = ()  # the settings items, as written (URL or dict)
    apprise_urls: tuple[str, ...] = ()
    user_email: str | Mapping[str, str] | None = None  # "{user}@lab.example" or user -> address
    user_email_opt_out: frozenset[str] = frozenset()
    remind_minutes: float = 240.0  # 0: no reminders
    timeout: float = 10.0  # seconds: each delivery's deadline (a webhook's own "timeout" wins)
    retry_seconds: float = 30.0  # the first retry's wait; doubled each time, at most an hour
    rules: Mapping[str, RuleConfig] = field(default_factory=_default_rules)

    @property
    def email(self) -> bool:
        return self.smtp_host is not None

    def user_address(self, user: str) -> str | None:
        """Where ``user`` is told, or None (no template or map entry, or opted out)."""
        if not user or user in self.user_email_opt_out or self.user_email is None:
            return None
        if isinstance(self.user_email, str):
            if not all(c.isalnum() or c in "._-" for c in user):
                return None  # "container 3f2a… (docker)" and the like have no mailbox
            return self.user_email.replace("{user}", user)
        return self.user_email.get(user)

    def email_sender(self) -> EmailSender | None:
        if self.smtp_host is None or self.mail_from is None:
            return None
        return EmailSender(self.smtp_host, self.smtp_port, security=self.smtp_security,
                           user=self.smtp_user, password=self.smtp_password,
                           mail_from=self.mail_from, timeout=self.timeout)

    def sender(self, channel: str) -> Sender | None:
        """The sender of an outbox channel: "email", "webhook:N", "apprise:N"; None if that
        destination is not configured (any more)."""
        kind, _, index = channel.partition(":")
        if kind == "email":
            return self.email_sender()
        items = {"webhook": self.webhooks, "apprise": self.apprise_urls}.get(kind, ())
        if not index.isdigit() or int(index) >= len(items):
            return None
        item = items[int(index)]
        if kind == "webhook":
            if isinstance(item, str):
                item = {"url": item}
            return webhook_from_setting({"timeout": self.timeout, **item})
        return AppriseSender(item, timeout=self.timeout)


def _number(value: Any, key: str, problems: list[tuple[str, str]], *, low: float = 0,
            strict: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append((key, f"must be a number (got {type(value).__name__})"))
        return None
    if value < low or (strict and value == low):
        problems.append((key, f"must be {'greater than' if strict else 'at least'} {low:g}"))
        return None
    return float(value)


def _str_list(value: Any, key: str, problems: list[tuple[str, str]]) -> list[Any] | None:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        problems.append((key, f"must be a list (got {type(value).__name__})"))
        return None
    return list(value)


def _rules(value: Any, host_down_minutes: float,
           problems: list[tuple[str, str]]) -> dict[str, RuleConfig]:
    rules = _default_rules(host_down_minutes)
    key = "alert_rules"
    if not isinstance(value, Mapping):
        problems.append((key, f'must be a dict like {{"gpu_hot": {{"celsius": 85}}}} '
                              f"(got {type(value).__name__})"))
        return rules
    for name, given in value.items():
        if name not in RULES:
            problems.append((key, f"unknown rule {name!r} (rules: {', '.join(RULES)})"))
            continue
        options = {"enabled": given} if isinstance(given, bool) else given  # a switch
        if not isinstance(options, Mapping):
            problems.append((key, f"{name}: must be a dict of options or True/False"))
            continue
        base = rules[name]
        merged = dict(base.options)
        enabled, to = base.enabled, base.to
        for option, v in options.items():
            where = f"{name}: {option}"
            if option == "enabled":
                if not isinstance(v, bool):
                    problems.append((key, f"{where} must be True or False"))
                enabled = bool(v)
            elif option == "to":
                if v not in TO:
                    problems.append((key, f"{where} must be one of {', '.join(map(repr, TO))}"))
                else:
                    to = v
            elif option not in RULES[name] or option in ("enabled", "to"):
                known = [o for o in RULES[name] if o not in ("enabled", "to")]
                hint = f"options: enabled, to{''.join(', ' + o for o in known)}"
                problems.append((key, f"{name}: unknown option {option!r} ({hint})"))
            elif isinstance(RULES[name][option], bool):
                if not isinstance(v, bool):
                    problems.append((key, f"{where} must be True or False"))
                merged[option] = bool(v)
            elif isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                problems.append((key, f"{where} must be a number greater than 0"))
            else:
                merged[option] = float(v)
        rules[name] = RuleConfig(name, enabled, to, merged)
    return rules


def check_notify(namespace: Mapping[str, Any]) -> tuple[NotifySettings, list[tuple[str, str]]]:
    """The notification settings in ``namespace`` (settings.py's names), and the problems."""
    problems: list[tuple[str, str]] = []
    got: dict[str, Any] = {}

    def text(key: str) -> str | None:
        if key not in namespace:
            return None
        value = namespace[key]
        if not isinstance(value, str) or not value.strip():
            problems.append((key, "must be a non-empty string"))
            return None
        return value

    host = text("smtp_host")
    if host is not None:
        got["smtp_host"] = host.strip()
    security = namespace.get("smtp_security", "starttls")
    if security not in SECURITY:
        problems.append(("smtp_security", f"must be one of {', '.join(map(repr, SECURITY))} "
                                          f"(got {security!r})"))
        security = "starttls"
    got["smtp_security"] = security
    port = namespace.get("smtp_port", _DEFAULT_PORT[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(("smtp_port", f"must be a port number 1 to 65535 (got {port!r})"))
    else:
        got["smtp_port"] = port
    for key in ("smtp_user", "smtp_password"):
        value = text(key)
        if value is not None:
            got[key] = value
    if ("smtp_user" in namespace) != ("smtp_password" in namespace):
        have = "smtp_user" if "smtp_user" in namespace else "smtp_password"
        lack = "smtp_password" if have == "smtp_user" else "smtp_user"
        problems.append((have, f"needs {lack} too (SMTP login)"))
    if security == "none" and "smtp_password" in namespace:
        problems.append(("smtp_security", '"none" would send smtp_password in clear text: '
                                          'use "starttls" or "ssl"'))

    mail_from = text("mail_from")
    if mail_from is not None:
        try:
            check_email_address(mail_from)
            got["mail_from"] = mail_from
        except ValueError as err:
            problems.append(("mail_from", str(err)))

    if "admin_emails" in namespace:
        items = _str_list(namespace["admin_emails"], "admin_emails", problems)
        for addr in items or []:
            try:
                check_email_address(addr)
            except ValueError as err:
                problems.append(("admin_emails", str(err)))
        if items is not None:
            got["admin_emails"] = tuple(items)

    if "webhooks" in namespace:
        items = _str_list(namespace["webhooks"], "webhooks", problems)
        for item in items or []:
            try:
                webhook_from_setting(item)
            except ValueError as err:
                problems.append(("webhooks", str(err)))
        if items is not None:
            got["webhooks"] = tuple(items)

    if "apprise_urls" in namespace:
        items = _str_list(namespace["apprise_urls"], "apprise_urls", problems)
        for url in items or []:
            try:
                AppriseSender(url)
            except ValueError as err:
                problems.append(("apprise_urls", str(err)))
        if items is not None:
            got["apprise_urls"] = tuple(items)

    if "user_email" in namespace:
        value = namespace["user_email"]
        if isinstance(value, str):
            if "{user}" not in value:
                problems.append(("user_email", f"template {value!r} has no {{user}} "
                                               "(e.g. '{user}@lab.example')"))
            else:
                try:
                    check_email_address(value.replace("{user}", "user"))
                    got["user_email"] = value
                except ValueError as err:
                    problems.append(("user_email", str(err)))
        elif isinstance(value, Mapping):
            for user, addr in value.items():
                try:
                    check_email_address(addr)
                except ValueError as err:
                    problems.append(("user_email", f"{user!r}: {err}"))
            got["user_email"] = dict(value)
        else:
            problems.append(("user_email", "must be a template like '{user}@lab.example' or a "
                                           f"dict user -> address (got {type(value).__name__})"))
    if "user_email_opt_out" in namespace:
        items = _str_list(namespace["user_email_opt_out"], "user_email_opt_out", problems)
        if items is not None:
            got["user_email_opt_out"] = frozenset(str(u) for u in items)

    minutes = 5.0
    if "alert_host_down_minutes" in namespace:
        checked = _number(namespace["alert_host_down_minutes"], "alert_host_down_minutes",
                          problems)
        minutes = checked if checked is not None else minutes
    if "alert_remind_minutes" in namespace:
        checked = _number(namespace["alert_remind_minutes"], "alert_remind_minutes", problems)
        if checked is not None:
            got["remind_minutes"] = checked
    if "notify_timeout" in namespace:
        checked = _number(namespace["notify_timeout"], "notify_timeout", problems, strict=True)
        if checked is not None:
            got["timeout"] = checked
    if "notify_retry_seconds" in namespace:
        checked = _number(namespace["notify_retry_seconds"], "notify_retry_seconds", problems,
                          strict=True)
        if checked is not None:
            got["retry_seconds"] = checked
    got["rules"] = _rules(namespace.get("alert_rules", {}), minutes, problems)

    wants_mail = bool(got.get("admin_emails")) or "user_email" in got
    if wants_mail and "smtp_host" not in got and "smtp_host" not in namespace:
        key = "admin_emails" if got.get("admin_emails") else "user_email"
        problems.append((key, "needs smtp_host (and mail_from) to send e-mail"))
    if "smtp_host" in got and "mail_from" not in namespace:
        problems.append(("smtp_host", "needs mail_from, the sender's address"))
    return NotifySettings(**got), problems
