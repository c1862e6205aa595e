"""hmonitor-ctl's commands for the dashboard's notifier: free-GPU subscriptions, and the alerts
it tells people about (list, silence, acknowledge). Dashboard only: agents know nothing of them."""

from __future__ import annotations

import argparse
import os
import pwd
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from hmonitor.ctl.client import DashboardClient
from hmonitor.ctl.commands import Ctx
from hmonitor.ctl.errors import EXIT_OK, NotFound, UsageError
from hmonitor.ctl.model import BadAnswer
from hmonitor.ctl.render import alerts_lines, subscriptions_lines
from hmonitor.ctl.select import host_matches
from hmonitor.ctl.units import size_text, when_text


def _login_name() -> str:
    """Who runs this: the account name, as the agents report process owners."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise UsageError("this account has no name (no passwd entry): give --email or "
                         "--user") from None


def _one_host(client: DashboardClient, pattern: str) -> str:
    """The dashboard's name of the one host ``pattern`` names (an exact name, or a glob over
    names and hostnames as ``--host`` elsewhere, so ``--host "$(hostname)"`` works)."""
    hosts = client.hosts()
    if any(h.name == pattern for h in hosts):
        return pattern
    found = [h.name for h in hosts if host_matches(h, pattern)]
    if not found:
        names = ", ".join(h.name for h in hosts[:20])
        raise NotFound(f"no host matches {pattern!r} (hosts: {names})")
    if len(found) > 1:
        raise UsageError(f"{pattern!r} matches {len(found)} hosts ({', '.join(found[:10])}): "
                         "a subscription watches one host, or any (leave out --host)")
    return found[0]


def _items(answer: Any, key: str, where: str) -> list[dict[str, Any]]:
    items = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadAnswer(f"{where} answered without a {key} list")
    return items


def subscription_text(s: Mapping[str, Any]) -> str:
    """``2 free GPUs with 40 GiB free each on one host``."""
    gpus, min_free = int(s.get("gpus") or 0), int(s.get("min_free_bytes") or 0)
    mem = f" with {size_text(min_free)} free{' each' if gpus != 1 else ''}" if min_free else ""
    return f"{gpus} free GPU{'s' if gpus != 1 else ''}{mem} on {s.get('host') or 'one host'}"


def cmd_subscribe(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("subscribe", "subscriptions")
    body: dict[str, Any] = {"gpus": a.n, "min_free_bytes": a.min_mem,
                            "host": _one_host(client, a.host) if a.host else ""}
    if a.email is not None:
        body["email"] = a.email
    else:
        body["user"] = a.user if a.user is not None else _login_name()
    made = client.send_json("POST", "/api/v1/subscriptions", body)
    if not isinstance(made, dict) or not isinstance(made.get("id"), int):
        raise BadAnswer(f"{client.url}/api/v1/subscriptions answered without a subscription")
    if a.json:
        ctx.dump(made)
    else:
        ctx.print(f"subscription {made['id']}: one e-mail to {made.get('email')} when there are "
                  f"{subscription_text(made)}; then it ends")
    return EXIT_OK


def cmd_subscriptions(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("subscriptions")
    subs = _items(client.get_json("/api/v1/subscriptions"), "subscriptions",
                  f"{client.url}/api/v1/subscriptions")
    if a.json:
        ctx.dump({"subscriptions": subs})
    else:
        ctx.print(*subscriptions_lines(subs, ctx.style))
    return EXIT_OK


def _send(ctx: Ctx, a: argparse.Namespace, command: str, method: str, path: str,
          body: Any, said: str, keeps: str = "alerts") -> int:
    """One change on the dashboard: its answer with --json, else ``said``."""
    answer = ctx.dashboard(command, keeps).send_json(method, path, body)
    if a.json:
        ctx.dump(answer)
    else:
        ctx.print(said)
    return EXIT_OK


def cmd_unsubscribe(ctx: Ctx, a: argparse.Namespace) -> int:
    return _send(ctx, a, "unsubscribe", "DELETE", f"/api/v1/subscriptions/{a.id}", None,
                 f"removed subscription {a.id}", keeps="subscriptions")


def _alerts(client: DashboardClient) -> list[dict[str, Any]]:
    """The notifier's alerts: firing (silenced or not), then those ended this week."""
    return _items(client.get_json("/api/v1/notifications"), "alerts",
                  f"{client.url}/api/v1/notifications")


def alert_path(key: str, action: str) -> str:
    """``/api/v1/alerts/<id>/<action>``: ids hold ':' and '/' (``disk_full:gpu01:/data``),
    so everything but ':' is quoted; the server decodes the path before routing it."""
    if not key.strip():
        raise UsageError("an alert id is empty (hmonitor-ctl alerts lists them)")
    return f"/api/v1/alerts/{urllib.parse.quote(key, safe=':')}/{action}"


def cmd_alerts(ctx: Ctx, a: argparse.Namespace) -> int:
    alerts = _alerts(ctx.dashboard("alerts"))
    if not a.all:
        alerts = [x for x in alerts if x.get("state") == "firing"]
    if a.json:
        ctx.dump({"alerts": alerts})
    else:
        ctx.print(*alerts_lines(alerts, ctx.style, all_=a.all))
    return EXIT_OK


def cmd_silence(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("silence", "alerts")
    path = alert_path(a.id, "silence")
    firing = {x.get("id") for x in _alerts(client) if x.get("state") == "firing"}
    answer = client.send_json("POST", path, {"minutes": a.minutes})
    if not isinstance(answer, dict) or not isinstance(answer.get("until"), int | float):
        raise BadAnswer(f"{client.url}{path} answered without an until")
    if a.id not in firing:  # the dashboard takes ids of alerts to come: a typo would pass
        ctx.warn(f"warning: {a.id} is not firing now; silenced for when it fires "
                 "(hmonitor-ctl alerts lists the ids)")
    if a.json:
        ctx.dump(answer)
    else:
        ctx.print(f"silenced {a.id} until {when_text(answer['until'], time.time())}")
    return EXIT_OK


def cmd_unsilence(ctx: Ctx, a: argparse.Namespace) -> int:
    return _send(ctx, a, "unsilence", "DELETE", alert_path(a.id, "silence"), None,
                 f"{a.id} is no longer silenced")


def cmd_ack(ctx: Ctx, a: argparse.Namespace) -> int:
    return _send(ctx, a, "ack", "POST", alert_path(a.id, "ack"), {},
                 f"acknowledged {a.id}: no more reminders until it ends")
