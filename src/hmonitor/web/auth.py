"""The one gate every request passes: login, sessions, Bearer tokens, CSRF, failed-attempt limit.

``_gate`` runs before every request, for every route and every HTTP method, unknown paths
included; nothing is protected per blueprint, so a new route cannot forget it:

* public: the login page (GET/HEAD show the form; only a POST is a login attempt) and static files;
* everything else takes a live server-side session (``sessions.py``) or
  ``Authorization: Bearer <token>``; without either, pages redirect to the login page and
  ``/api/`` answers 401 JSON;
* a wrong login or a wrong Bearer token is a failed attempt; after ``failed_login_limit`` of them
  (default 10 a minute) from one client address, every further attempt from it, right or wrong,
  answers 429 until the window has passed. Successful attempts never count, so people behind one
  address do not lock each other out;
* state-changing requests from a browser session carry the CSRF token (a Bearer request cannot
  be forged by another site, so it needs none).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect  # type: ignore[import-untyped,unused-ignore]
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from hmonitor.web.sessions import Session, SessionStore
from hmonitor.web.state import get_state

SECRET_FILE = "secret.key"
_PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def load_or_create_secret(secret: str | None, data_dir: Path) -> str:
    """The configured secret, or one generated on first start and kept (mode 0600).

    Kept on disk so that sessions survive restarts; created with O_EXCL so two processes
    starting at once agree on one secret.
    """
    if secret:
        return secret
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            return existing
        # An empty file (e.g. a crash between create and write): replace it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    return value


class Gate:
    """The failed-attempt limit and the session store of one app."""

    def __init__(self, sessions: SessionStore, limit: str) -> None:
        self.sessions = sessions
        self.limit: RateLimitItem = parse(limit)
        self._failures = MovingWindowRateLimiter(MemoryStorage())

    def blocked(self, address: str) -> bool:
        """Whether ``address`` has used up its failed attempts for now."""
        return not self._failures.test(self.limit, address)

    def failed(self, address: str) -> None:
        self._failures.hit(self.limit, address)


def get_gate(app: Flask | None = None) -> Gate:
    gate: Gate = (app or current_app).extensions["hmonitor_gate"]
    return gate


def is_api_request() -> bool:
    """A request from a program, answered in words and status codes, never with a redirect to
    the login page: the JSON API and Prometheus's scrape of /metrics."""
    return request.path.startswith("/api/") or request.path == "/metrics"


def client_address() -> str:
    return request.remote_addr or "?"


def client_label() -> str:
    """Who made this change, for notes: the name given at login, else the client address."""
    if g.get("bearer"):
        return f"API {client_address()}"
    live = g.get("login")
    return live.name if live is not None and live.name else client_address()


def _token_fingerprint() -> str:
    """Kept with each session: a session made with another token is not valid."""
    token = get_state().settings.token.encode()
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, b"login:" + token, hashlib.sha256).hexdigest()


def _live_session() -> Session | None:
    return get_gate().sessions.get(session.get("sid"), _token_fingerprint())


def _token_matches(given: str) -> bool:
    """The login token; on /metrics also ``metrics_token``, a token good for nothing else, for
    the Prometheus servers that scrape it."""
    settings = get_state().settings
    if hmac.compare_digest(given.encode(), settings.token.encode()):
        return True
    return bool(settings.metrics_token) and request.path == "/metrics" and hmac.compare_digest(
        given.encode(), settings.metrics_token.encode())


def _bearer_token() -> str | None:
    """The Bearer token sent, "" for a malformed Authorization header, None for none."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _safe_next(target: str | None) -> str:
    # Only a path on this site: an open redirect after login would help phishing. Browsers
    # drop tabs and newlines in URLs ("/\t/evil" is "//evil"), so no control characters either.
    if (target and target.startswith("/") and not target.startswith("//")
            and "\\" not in target and target.isprintable() and " " not in target):
        return target
    return url_for("pages.overview")


def _unauthorized() -> ResponseReturnValue:
    if is_api_request():
        resp = jsonify(error="authentication required: log in or send 'Authorization: Bearer'")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="hmonitor"'
        return resp
    nxt = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=nxt))


def _too_many() -> ResponseReturnValue:
    wait = f"wait up to {_window_text(get_gate().limit)}"
    if is_api_request() or request.endpoint != "auth.login":
        resp = jsonify(error=f"too many failed attempts from your address; {wait}")
        resp.status_code = 429
        return resp
    return (
        render_template("login.html", error=f"Too many failed login attempts from your "
                        f"address; {wait}.", next=request.values.get("next", "")),
        429,
    )


def _window_text(limit: RateLimitItem) -> str:
    seconds = limit.get_expiry()
    return "a minute" if seconds == 60 else f"{seconds} seconds"


def _gate() -> ResponseReturnValue | None:
    """Before every request: see the module docstring."""
    gate = get_gate()
    g.bearer = False
    g.login = None
    if request.endpoint in _PUBLIC_ENDPOINTS:
        if request.endpoint == "auth.login" and request.method == "POST":
            if gate.blocked(client_address()):
                return _too_many()
            _check_csrf()
        return None
    token = _bearer_token()
    if token is not None:
        if gate.blocked(client_address()):
            return _too_many()
        if not token or not _token_matches(token):
            gate.failed(client_address())
            return _unauthorized()
        g.bearer = True
        return None
    g.login = _live_session()
    if g.login is None:
        return _unauthorized()
    if request.method not in _SAFE_METHODS:
        _check_csrf()
    return None


def _check_csrf() -> None:
    csrf: CSRFProtect = current_app.extensions["csrf"]
    csrf.protect()


def _security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "static":
        # Pages and API answers are live and private: never from a cache, nor after logout.
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _csrf_failed(err: CSRFError) -> ResponseReturnValue:
    if is_api_request():
        return jsonify(error=f"CSRF check failed: {err.description}"), 400
    return (
        render_template(
            "error.html",
            title="Form expired",
            message="The form's security token is missing or stale. Go back, reload the page "
            "and try again.",
        ),
        400,
    )


def _make_blueprint() -> Blueprint:
    bp = Blueprint("auth", __name__)

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> ResponseReturnValue:
        nxt = request.values.get("next", "")
        if request.method != "POST":  # GET, and HEAD with it: the form, never an attempt
            if _live_session() is not None:
                return redirect(_safe_next(nxt))
            return render_template("login.html", next=nxt)
        token = request.form.get("token", "")
        if not token or not _token_matches(token):
            get_gate().failed(client_address())
            return render_template("login.html", error="Wrong token.", next=nxt), 401
        sessions = get_gate().sessions
        sessions.end(session.get("sid"))
        name = request.form.get("name", "").strip()[:40]
        live = sessions.create(name=name if name.isprintable() else "",
                               lifetime=get_state().settings.session_lifetime,
                               token_fp=_token_fingerprint())
        session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        session.permanent = True
        session["sid"] = live.sid
        return redirect(_safe_next(nxt))

    @bp.route("/logout", methods=["POST"])
    def logout() -> ResponseReturnValue:
        get_gate().sessions.end(session.get("sid"))
        session.clear()
        return redirect(url_for("auth.login"))

    return bp


def init_app(app: Flask, sessions: SessionStore, failed_login_limit: str) -> None:
    """Installs CSRF, the gate and the headers."""
    CSRFProtect(app)
    app.extensions["hmonitor_gate"] = Gate(sessions, failed_login_limit)
    app.register_blueprint(_make_blueprint())
    app.before_request(_gate)
    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_failed)
