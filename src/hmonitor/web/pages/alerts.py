"""The alerts page: what fires now, what is silenced, what ended this week, what was sent where
(the delivery log), and the free-GPU subscriptions; silence, acknowledge and subscribe here."""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from hmonitor.web.auth import client_label
from hmonitor.web.notify.engine import Notifier, NotifyError
from hmonitor.web.rules import GIB
from hmonitor.web.state import get_state

SILENCE_CHOICES = ((60, "1 hour"), (240, "4 hours"), (1440, "1 day"), (10080, "1 week"))


def _notifier() -> Notifier:
    notifier = get_state().notifier
    if notifier is None:
        abort(404)
    return notifier


def _back() -> ResponseReturnValue:
    return redirect(url_for("pages.alerts"))


def add_routes(bp: Blueprint) -> None:
    @bp.get("/alerts")
    def alerts() -> ResponseReturnValue:
        n = _notifier()
        now = time.time()
        rows = n.store.alerts(now)
        cfg = n.config
        return render_template(
            "alerts.html",
            firing=[a for a in rows if a.state == "firing" and not a.silenced_until],
            silenced=[a for a in rows if a.state == "firing" and a.silenced_until],
            # silences set ahead, for alerts not firing now (a host going into maintenance)
            ahead=[s for s in n.store.silences(now)
                   if not any(a.key == s[0] and a.state == "firing" for a in rows)],
            ended=[a for a in rows if a.state == "resolved"],
            deliveries=n.store.deliveries(50),
            subscriptions=n.store.subscriptions(),
            silence_choices=SILENCE_CHOICES,
            host_names=list(get_state().settings.servers),
            destinations=_destinations(n),
            rules=[r for r in cfg.rules.values() if r.enabled],
            me=client_label(),
            my_address=cfg.user_address(client_label()) or "",
        )

    @bp.post("/alerts/silence")
    def silence_alert() -> ResponseReturnValue:
        key = request.form.get("id", "")
        try:
            _notifier().silence(key, float(request.form.get("minutes", "60")), client_label())
        except (NotifyError, ValueError) as err:
            flash(f"Not silenced: {err}.", "error")
        else:
            flash(f"Silenced {key}.", "ok")
        return _back()

    @bp.post("/alerts/unsilence")
    def unsilence_alert() -> ResponseReturnValue:
        key = request.form.get("id", "")
        if _notifier().store.unsilence(key):
            flash(f"{key} is no longer silenced.", "ok")
        else:
            flash(f"{key} was not silenced.", "error")
        return _back()

    @bp.post("/alerts/ack")
    def ack_alert() -> ResponseReturnValue:
        key = request.form.get("id", "")
        if _notifier().store.ack(key, client_label(), time.time()):
            flash(f"Acknowledged {key}: no more reminders until it ends.", "ok")
        else:
            flash(f"{key} is not firing.", "error")
        return _back()

    @bp.post("/alerts/subscribe")
    def subscribe() -> ResponseReturnValue:
        n = _notifier()
        try:
            made = n.subscribe_from(request.form, client_label(), get_state().settings.servers)
        except NotifyError as err:
            flash(f"Not subscribed: {err}.", "error")
        else:
            where = made.host or "any host"
            flash(f"You will get one e-mail at {made.email} when {made.gpus} GPU(s) with "
                  f"{made.min_free / GIB:g} GiB free each are free on {where}.", "ok")
        return _back()

    @bp.post("/alerts/unsubscribe")
    def unsubscribe() -> ResponseReturnValue:
        id_ = request.form.get("id", "")
        if id_.isdigit() and _notifier().store.unsubscribe(int(id_)):
            flash("Subscription removed.", "ok")
        else:
            flash("There was no such subscription (told already, or removed).", "error")
        return _back()


def _destinations(n: Notifier) -> list[str]:
    """Where the admins' messages go, in words, no secrets."""
    cfg = n.config
    out = []
    if cfg.email and cfg.admin_emails:
        out.append(f"e-mail to {', '.join(cfg.admin_emails)} via {cfg.smtp_host}")
    for i in range(len(cfg.webhooks)):
        sender = cfg.sender(f"webhook:{i}")
        if sender is not None:
            out.append(sender.name)
    out += [f"apprise #{i + 1}" for i in range(len(cfg.apprise_urls))]
    return out
