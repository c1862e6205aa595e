"""``/api/v1/notifications``, silences, acknowledgements and subscriptions (docs/api.md)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from hmonitor.web.auth import client_label
from hmonitor.web.notify.engine import Notifier, NotifyError
from hmonitor.web.state import get_state


def _notifier() -> Notifier:
    notifier = get_state().notifier
    if notifier is None:
        abort(404)
    return notifier


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _error(message: str, status: int = 400) -> ResponseReturnValue:
    return jsonify(error=message), status


def add_routes(bp: Blueprint) -> None:
    @bp.get("/notifications")
    def notifications() -> ResponseReturnValue:
        n = _notifier()
        now = time.time()
        return jsonify(alerts=[a.as_dict() for a in n.store.alerts(now)],
                       deliveries=[d.as_dict() for d in n.store.deliveries(100)],
                       subscriptions=[s.as_dict() for s in n.store.subscriptions()],
                       silences=[{"id": k, "until": u, "by": b}
                                 for k, u, b in n.store.silences(now)])

    @bp.post("/alerts/<path:key>/silence")
    def silence(key: str) -> ResponseReturnValue:
        minutes = _body().get("minutes", 60)
        try:
            until = _notifier().silence(key, minutes, client_label())
        except NotifyError as err:
            return _error(str(err))
        return jsonify(silenced=key, until=until)

    @bp.delete("/alerts/<path:key>/silence")
    def unsilence(key: str) -> ResponseReturnValue:
        if not _notifier().store.unsilence(key):
            return _error(f"{key!r} is not silenced", 404)
        return jsonify(unsilenced=key)

    @bp.post("/alerts/<path:key>/ack")
    def ack(key: str) -> ResponseReturnValue:
        if not _notifier().store.ack(key, client_label(), time.time()):
            return _error(f"no firing alert {key!r}", 404)
        return jsonify(acknowledged=key, by=client_label())

    @bp.get("/subscriptions")
    def subscriptions() -> ResponseReturnValue:
        return jsonify(subscriptions=[s.as_dict() for s in _notifier().store.subscriptions()])

    @bp.post("/subscriptions")
    def subscribe() -> ResponseReturnValue:
        n = _notifier()
        by = client_label()
        try:
            made = n.subscribe_from(_body(), by, get_state().settings.servers)
        except NotifyError as err:
            return _error(str(err))
        return jsonify(made.as_dict()), 201

    @bp.delete("/subscriptions/<int:id_>")
    def unsubscribe(id_: int) -> ResponseReturnValue:
        if not _notifier().store.unsubscribe(id_):
            return _error(f"no subscription {id_}", 404)
        return jsonify(deleted=id_)
