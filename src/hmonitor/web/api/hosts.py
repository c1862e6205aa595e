"""``/api/v1/hosts``: every host as the poller last saw it."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from hmonitor.web.api.jsonview import host_state_to_dict
from hmonitor.web.state import get_state


def add_routes(bp: Blueprint) -> None:
    @bp.get("/hosts")
    def hosts() -> ResponseReturnValue:
        states = get_state().poller.hosts()
        return jsonify(hosts=[host_state_to_dict(h) for h in states], generated_at=time.time())

    @bp.get("/hosts/<path:name>")
    def host(name: str) -> ResponseReturnValue:
        h = get_state().poller.host(name)
        if h is None:
            return jsonify(error=f"unknown host {name!r}"), 404
        return jsonify(host_state_to_dict(h))
