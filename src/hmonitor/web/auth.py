"""Login with the shared token, sessions, Bearer tokens for the API, CSRF and security headers.

Every request passes ``_guard`` first: the login page and static files are public; the JSON API
takes a session or ``Authorization: Bearer <token>``; pages take a session. State-changing
browser requests must carry the CSRF token (a Bearer request cannot be forged by another site, so
it needs none).
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
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect  # type: ignore[import-untyped,unused-ignore]
from werkzeug.exceptions import TooManyRequests

from hmonitor.web import get_state

SECRET_FILE = "secret.key"
LOGIN_LIMIT = "10/minute"
BAD_BEARER_LIMIT = "10/minute"
_PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def client_label() -> str:
    """Who made this change, for notes: the name given at login, else the client address."""
    name = session.get("name") if not g.get("bearer") else None
    addr = request.remote_addr or "?"
    if name:
        return str(name)
    return f"API {addr}" if g.get("bearer") else addr


def _token_fingerprint() -> str:
    """Stored in the session instead of a flag: changing the token logs every session out."""
    token = get_state().settings.token.encode()
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, b"login:" + token, hashlib.sha256).hexdigest()


def _has_session() -> bool:
    stored = session.get("auth")
    return isinstance(stored, str) and hmac.compare_digest(stored, _token_fingerprint())


def _token_matches(given: str) -> bool:
    expected = get_state().settings.token
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _safe_next(target: str | None) -> str:
    # Only a path on this site: an open redirect after login would help phishing. Browsers
    # drop tabs and newlines in URLs ("/\t/evil" is "//evil"), so no control characters either.
    if (target and target.startswith("/") and not target.startswith("//")
            and "\\" not in target and target.isprintable() and " " not in target):
        return target
    return url_for("views.overview")


def _unauthorized() -> ResponseReturnValue:
    if is_api_request():
        resp = jsonify(error="authentication required: log in or send 'Authorization: Bearer'")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="hmonitor"'
        return resp
    nxt = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=nxt))


def _guard() -> ResponseReturnValue | None:
    g.bearer = False
    if request.endpoint not in _PUBLIC_ENDPOINTS:
        token = _bearer_token() if is_api_request() else None
        if token is not None:
            if not _token_matches(token):
                g.bad_bearer = True  # counted by the limiter, like a failed login
                return _unauthorized()
            g.bearer = True
        elif not _has_session():
            return _unauthorized()
    if request.method in _UNSAFE_METHODS and not g.bearer:
        csrf: CSRFProtect = current_app.extensions["csrf"]
        csrf.protect()
    return None


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


def _too_many(err: TooManyRequests) -> ResponseReturnValue:
    if is_api_request():
        return jsonify(error="too many failed attempts; wait a minute"), 429
    return (
        render_template(
            "login.html", error="Too many login attempts from your address; wait a minute.",
            next=request.args.get("next", ""),
        ),
        429,
    )


def _make_blueprint(limiter: Limiter) -> Blueprint:
    bp = Blueprint("auth", __name__)

    @bp.route("/login", methods=["GET", "POST"])
    @limiter.limit(LOGIN_LIMIT, methods=["POST"])
    def login() -> ResponseReturnValue:
        nxt = request.values.get("next", "")
        if request.method == "GET":
            if _has_session():
                return redirect(_safe_next(nxt))
            return render_template("login.html", next=nxt)
        token = request.form.get("token", "")
        if not token or not _token_matches(token):
            return render_template("login.html", error="Wrong token.", next=nxt), 401
        name = request.form.get("name", "").strip()[:40]
        session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        session.permanent = True
        session["auth"] = _token_fingerprint()
        if name:
            session["name"] = name
        return redirect(_safe_next(nxt))

    @bp.route("/logout", methods=["POST"])
    def logout() -> ResponseReturnValue:
        session.clear()
        return redirect(url_for("auth.login"))

    return bp


def init_app(app: Flask) -> Limiter:
    """Installs CSRF, the limiter, the guard and the headers; returns the limiter for the API."""
    CSRFProtect(app)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri="memory://",
        headers_enabled=True,
    )
    app.register_blueprint(_make_blueprint(limiter))
    app.before_request(_guard)
    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(TooManyRequests, _too_many)
    return limiter


def limit_bad_bearer(limiter: Limiter, bp: Blueprint) -> None:
    """Wrong Bearer tokens count like failed logins, so the API is no way around the limit."""
    limiter.limit(BAD_BEARER_LIMIT, deduct_when=lambda _resp: bool(g.get("bad_bearer")))(bp)
