"""``/api/v1/hosts``: every host as the poller last saw it.

The JSON of all hosts is made once per polling round, however many scripts and dashboards ask
in between (at 1,000 hosts it is 5 MB and a third of a second of work).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue

from hmonitor.web.api.jsonview import host_state_to_dict
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.state import get_state


class HostsJson:
    """The hosts list as JSON, kept while the poller's states are the same objects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: tuple[HostStateLike, ...] = ()
        self._json = b"[]"

    def of(self, states: Sequence[HostStateLike]) -> bytes:
        with self._lock:
            if len(states) != len(self._states) or any(
                    a is not b for a, b in zip(states, self._states, strict=True)):
                hosts = [host_state_to_dict(h) for h in states]
                self._json = current_app.json.dumps(hosts, separators=(",", ":")).encode()
                self._states = tuple(states)
            return self._json


def add_routes(bp: Blueprint) -> None:
    @bp.get("/hosts")
    def hosts() -> ResponseReturnValue:
        cache: HostsJson = current_app.extensions["hmonitor_hosts_json"]
        body = cache.of(get_state().poller.hosts())
        return Response(b'{"hosts":' + body + b',"generated_at":' + repr(time.time()).encode()
                        + b"}", mimetype="application/json")

    @bp.get("/hosts/<path:name>")
    def host(name: str) -> ResponseReturnValue:
        h = get_state().poller.host(name)
        if h is None:
            return jsonify(error=f"unknown host {name!r}"), 404
        return jsonify(host_state_to_dict(h))


def init_app(app: Flask) -> None:
    app.extensions["hmonitor_hosts_json"] = HostsJson()
