"""The dashboard's JSON API (docs/api.md) over HTTP, with urllib: a Bearer token, a deadline on
every request, gzip when the dashboard offers it, and every failure as one line in words."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from hmonitor import __version__
from hmonitor.ctl.errors import AuthError, NotFound, Unreachable, UsageError
from hmonitor.ctl.model import BadAnswer, Cluster, Host, alert_from_api, host_from_api

__all__ = ["DashboardClient"]

Params = Mapping[str, str | int | float]


class DashboardClient:
    """One dashboard. Implements ``model.Source``."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Straight to the dashboard: an http_proxy set for the internet must not capture it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- transport ------------------------------------------------------------------------------

    def request(self, method: str, path: str, params: Params | None = None,
                body: Any = None) -> bytes:
        """The body of a 2xx answer; raises CtlError subclasses in words otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        req = urllib.request.Request(f"{self.url}{path}{query}", method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept-Encoding", "gzip")
        req.add_header("User-Agent", f"hmonitor-ctl/{__version__}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, data=data, timeout=self.timeout) as resp:
                raw: bytes = resp.read()
                if resp.headers.get("Content-Encoding", "") == "gzip":
                    raw = gzip.decompress(raw)
        except urllib.error.HTTPError as err:
            raise self._http_error(err) from None
        except urllib.error.URLError as err:
            raise Unreachable(self._unreachable(err.reason)) from None
        except TimeoutError:
            raise Unreachable(f"the dashboard at {self.url} did not answer within "
                              f"{self.timeout:g} s") from None
        except http.client.HTTPException:
            raise BadAnswer(f"{self.url} answered, but not in HTTP: is it an hmonitor dashboard "
                            "(and not an agent's gRPC port)?") from None
        except (OSError, ValueError, EOFError) as err:  # reset mid-answer, a broken gzip...
            raise Unreachable(f"the dashboard at {self.url}: {err}") from None
        return raw

    def get_json(self, path: str, params: Params | None = None) -> Any:
        return self._json(self.request("GET", path, params))

    def send_json(self, method: str, path: str, body: Any) -> Any:
        return self._json(self.request(method, path, body=body))

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise BadAnswer(f"{self.url} answered, but not with JSON: is it an hmonitor "
                            "dashboard?") from None

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            return (f"cannot reach the dashboard at {self.url}: connection refused "
                    "(is hmonitor-web running?)")
        if isinstance(reason, TimeoutError):
            return f"the dashboard at {self.url} did not answer within {self.timeout:g} s"
        if isinstance(reason, socket.gaierror):
            return f"cannot reach the dashboard at {self.url}: unknown host name"
        text = getattr(reason, "strerror", None) or str(reason)
        return f"cannot reach the dashboard at {self.url}: {text}"

    def _http_error(self, err: urllib.error.HTTPError) -> Exception:
        try:
            message = json.loads(err.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            message = ""
        if err.code == 401:
            return AuthError(f"the dashboard at {self.url} rejected the token (check "
                             "HMONITOR_TOKEN: it is settings.py's token)")
        if err.code == 429:
            return AuthError(f"the dashboard at {self.url} refuses this address for a minute "
                             "after too many wrong tokens")
        if err.code == 404 and message:
            return NotFound(message)
        if err.code == 400:
            return UsageError(f"the dashboard says: {message or 'bad request'}")
        if err.code == 404:
            return BadAnswer(f"{self.url} has no {err.url.split('?')[0].removeprefix(self.url)}:"
                             " is it an hmonitor dashboard (and a version with this API)?")
        detail = f": {message}" if message else ""
        return Unreachable(f"the dashboard at {self.url} answered HTTP {err.code}{detail}")

    # --- the API ---------------------------------------------------------------------------------

    def hosts(self) -> list[Host]:
        answer = self.get_json("/api/v1/hosts")
        if not isinstance(answer, dict) or not isinstance(answer.get("hosts"), list):
            raise BadAnswer(f"{self.url}/api/v1/hosts answered without a hosts list")
        return [host_from_api(h) for h in answer["hosts"]]

    def host(self, name: str) -> Host:
        known = ""
        try:
            return host_from_api(self.get_json(f"/api/v1/hosts/{urllib.parse.quote(name)}"))
        except NotFound:
            names = [h.name for h in self.hosts()]
            known = f" (known: {', '.join(names)})" if len(names) <= 20 else ""
        raise NotFound(f"unknown host {name!r}{known}")

    def cluster(self, *, alerts: bool = False) -> Cluster:
        found = None
        if alerts:
            answer = self.get_json("/api/v1/alerts")
            items = answer.get("alerts") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise BadAnswer(f"{self.url}/api/v1/alerts answered without an alerts list")
            found = tuple(alert_from_api(a) for a in items)
        return Cluster(tuple(self.hosts()), self.url, found)

    def close(self) -> None:
        """Nothing held between requests (urllib opens a connection per request)."""
