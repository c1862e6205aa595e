"""Loads and validates the dashboard's `settings.py`.

The file is Python, as in the spec (`servers = {...}`, `secret = "..."`, `token = "..."`): it is the
admin's own file, so it is executed as is. Every key is then checked, and a problem is reported as a
`SettingsError` that names the file, the key and, where known, the line, so that `hmonitor-web`
can exit with one clear message instead of a traceback.
"""

from __future__ import annotations

import ast
import difflib
import os
import runpy
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmonitor.web.notify.config import NOTIFY_KEYS, NotifySettings, check_notify
from hmonitor.web.settings_checks import (
    check_address,
    check_history_backend,
    check_http_url,
    check_metrics_token,
    check_nonempty,
    check_percent,
    check_positive,
    check_rate,
    check_secret,
    check_server_name,
    check_str,
    describe,
    dir_checker,
    file_checker,
    split_address,
)

__all__ = ["KNOWN_KEYS", "Settings", "SettingsError", "load_settings", "split_address"]


class SettingsError(Exception):
    """A settings file that cannot be used; the message names the file and the bad key or line."""

    def __init__(
        self, message: str, *, path: Path | None = None, key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.line = line


DEFAULT_FAILED_LOGIN_LIMIT = "10/minute"


@dataclass(frozen=True)
class Settings:
    path: Path
    servers: dict[str, str]
    token: str
    secret: str | None = None
    interval: float = 10.0
    timeout: float = 3.0
    agent_token: str = ""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    session_lifetime: float = 7 * 86400
    history_addr: str = "127.0.0.1:9204"
    history_raw_days: float = 10.0
    history_keep_days: float = 365.0
    idle_util_threshold: float = 5.0
    idle_minutes: float = 120.0
    data_dir: Path | None = None
    failed_login_limit: str = DEFAULT_FAILED_LOGIN_LIMIT
    history_backend: str = "sqlite"  # or "prometheus": pages read the history from there
    prometheus_url: str | None = None  # the PromQL HTTP API's base, e.g. http://prom:9090
    prometheus_bearer_token_file: Path | None = None
    prometheus_username: str | None = None  # basic auth, with prometheus_password
    prometheus_password: str | None = None
    prometheus_timeout: float = 5.0  # seconds: the deadline of every query
    prometheus_job: str = "hmonitor"  # the scrape job whose series the history reads
    metrics_token: str = ""  # a Bearer token good only for /metrics (Prometheus's scrapes)
    notify: NotifySettings = field(default_factory=NotifySettings)  # rules and destinations

    @property
    def tls(self) -> bool:
        """Whether agents are reached over TLS."""
        return self.tls_ca is not None or self.tls_cert is not None


KNOWN_KEYS: tuple[str, ...] = (
    "servers", "token", "secret", "interval", "timeout", "agent_token", "tls_ca", "tls_cert",
    "tls_key", "tls_server_name", "session_lifetime", "history_addr", "history_raw_days",
    "history_keep_days", "idle_util_threshold", "idle_minutes", "data_dir", "failed_login_limit",
    "history_backend", "prometheus_url", "prometheus_bearer_token_file", "prometheus_username",
    "prometheus_password", "prometheus_timeout", "prometheus_job", "metrics_token",
    *NOTIFY_KEYS,
)


# --- loading --------------------------------------------------------------------------------------


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Execute the settings file and validate every key; raise SettingsError on any problem."""
    file = Path(path).expanduser().absolute()
    if not file.exists():
        raise SettingsError(f"{file}: no such settings file", path=file)
    if not file.is_file():
        raise SettingsError(f"{file}: not a file", path=file)
    try:
        source = file.read_bytes()
    except OSError as err:
        raise SettingsError(f"{file}: cannot read: {err.strerror or err}", path=file) from None
    # Parsing first gives syntax errors with their line, and where each key and import is.
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as err:
        where = f"{file}:{err.lineno}" if err.lineno else str(file)
        raise SettingsError(
            f"{where}: syntax error: {err.msg}", path=file, line=err.lineno
        ) from None
    lines, imported = _scan(tree)
    namespace = _execute(file)
    return _validate(file, namespace, lines, imported, _repeated_server_names(tree))


def _scan(tree: ast.Module) -> tuple[dict[str, int], set[str]]:
    """Line of the last top-level assignment of each name, and the names bound by imports."""
    lines: dict[str, int] = {}
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                imported.add(alias.asname or alias.name.split(".")[0])
            continue
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    lines[sub.id] = node.lineno
    return lines, imported


def _repeated_server_names(tree: ast.Module) -> list[str]:
    """Names written twice in a ``servers = {...}`` literal: Python keeps the last one silently,
    so a host the admin listed would never be polled."""
    found: list[str] = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                isinstance(t, ast.Name) and t.id == "servers" for t in node.targets)):
            continue
        first: dict[object, int] = {}
        for key in node.value.keys:
            if not isinstance(key, ast.Constant):
                continue
            if key.value in first:
                found.append(f"{key.value!r} is listed twice (lines {first[key.value]} and "
                             f"{key.lineno}); only the last address would be used")
            else:
                first[key.value] = key.lineno
    return found


def _execute(file: Path) -> dict[str, Any]:
    try:
        return runpy.run_path(str(file), run_name="__hmonitor_settings__")
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure of the admin's code
        # Point at the settings file's own line, not at runpy's internals.
        line = None
        for frame in traceback.extract_tb(err.__traceback__):
            if Path(frame.filename) == file:
                line = frame.lineno
        where = f"{file}:{line}" if line else str(file)
        raise SettingsError(
            f"{where}: running the settings file failed: {type(err).__name__}: {err}",
            path=file, line=line,
        ) from None


# --- validation -----------------------------------------------------------------------------------


class _Problems:
    """Collects every problem, so that the admin fixes the file in one go."""

    def __init__(self, file: Path, lines: Mapping[str, int]) -> None:
        self.file = file
        self.lines = lines
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, problem: str) -> None:
        self.items.append((key, problem))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        texts = []
        for key, problem in self.items:
            line = self.lines.get(key)
            where = f"{self.file}:{line}" if line else str(self.file)
            texts.append(f"{where}: {key}: {problem}")
        first_key = self.items[0][0]
        raise SettingsError(
            "\n".join(texts), path=self.file, key=first_key, line=self.lines.get(first_key)
        )


def _validate(
    file: Path, namespace: Mapping[str, Any], lines: Mapping[str, int], imported: set[str],
    repeated_servers: list[str],
) -> Settings:
    problems = _Problems(file, lines)
    check_unknown_names(namespace, imported, problems)
    folder = file.parent
    values: dict[str, Any] = {}

    servers = namespace.get("servers")
    if "servers" not in namespace:
        problems.add("servers", 'missing: add servers = {"name": "host:port", ...}')
    else:
        for problem in repeated_servers:
            problems.add("servers", problem)
        checked = check_servers(servers, problems)
        if checked is not None:
            values["servers"] = checked

    if "token" not in namespace:
        problems.add("token", 'missing: add token = "..." (the login token)')
    else:
        token = namespace["token"]
        if not isinstance(token, str):
            problems.add(
                "token", f"must be a string in quotes (got {type(token).__name__})"
            )
        elif not token.strip():
            problems.add("token", "is empty: anyone could log in")
        else:
            values["token"] = token

    _optional(namespace, "secret", values, problems, check_secret)
    for key in ("interval", "timeout", "session_lifetime", "history_raw_days",
                "history_keep_days", "idle_minutes", "prometheus_timeout"):
        _optional(namespace, key, values, problems, check_positive)
    _optional(namespace, "idle_util_threshold", values, problems, check_percent)
    _optional(namespace, "agent_token", values, problems, check_str)
    _optional(namespace, "tls_server_name", values, problems, check_server_name)
    _optional(namespace, "history_addr", values, problems, check_address)
    for key in ("tls_ca", "tls_cert", "tls_key"):
        _optional(namespace, key, values, problems, file_checker(folder))
    _optional(namespace, "data_dir", values, problems, dir_checker(folder))
    _optional(namespace, "failed_login_limit", values, problems, check_rate)
    _optional(namespace, "history_backend", values, problems, check_history_backend)
    _optional(namespace, "prometheus_url", values, problems, check_http_url)
    _optional(namespace, "prometheus_bearer_token_file", values, problems, file_checker(folder))
    for key in ("prometheus_username", "prometheus_password"):
        _optional(namespace, key, values, problems, check_str)
    _optional(namespace, "prometheus_job", values, problems, check_nonempty)
    _optional(namespace, "metrics_token", values, problems, check_metrics_token)

    # Keys that only make sense together.
    if ("tls_cert" in values) != ("tls_key" in values):
        have, lack = ("tls_cert", "tls_key") if "tls_cert" in values else ("tls_key", "tls_cert")
        problems.add(lack, f"missing: {have} is set, and a client certificate needs both")
    if values.get("tls_server_name") and not ("tls_ca" in values or "tls_cert" in values):
        problems.add("tls_server_name", "only applies over TLS: set tls_ca (and tls_cert/tls_key)")
    check_prometheus(namespace, values, problems)
    values["notify"], notify_problems = check_notify(namespace)
    for key, problem in notify_problems:
        problems.add(key, problem)
    raw, keep = values.get("history_raw_days"), values.get("history_keep_days")
    if raw is not None and keep is not None and keep < raw:
        problems.add("history_keep_days", f"({keep:g}) is shorter than history_raw_days ({raw:g})")

    problems.raise_if_any()
    values.setdefault("data_dir", folder)
    return Settings(path=file, **values)


def check_prometheus(
    namespace: Mapping[str, Any], values: Mapping[str, Any], problems: _Problems
) -> None:
    """The prometheus_* keys that only make sense together."""
    if values.get("history_backend") == "prometheus" and "prometheus_url" not in namespace:
        problems.add("history_backend",
                     "is 'prometheus': set prometheus_url too (e.g. 'http://prometheus:9090')")
    user, password = "prometheus_username", "prometheus_password"
    if (user in values) != (password in values):
        have, lack = (user, password) if user in values else (password, user)
        problems.add(have, f"needs {lack} too (basic auth)")
    if user in values and "prometheus_bearer_token_file" in values:
        problems.add(user, "set either basic auth or prometheus_bearer_token_file, not both")
    token_file = values.get("prometheus_bearer_token_file")
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            problems.add("prometheus_bearer_token_file", f"cannot read {token_file}: {err}")
        else:
            if not token or any(c.isspace() for c in token):
                problems.add("prometheus_bearer_token_file",
                             f"{token_file} must hold one token, without spaces")


def check_unknown_names(
    namespace: Mapping[str, Any], imported: set[str], problems: _Problems
) -> None:
    for name, value in namespace.items():
        if name.startswith("_") or name in KNOWN_KEYS or name in imported:
            continue
        if isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        if name != name.lower():
            # `TOKEN = ...` instead of `token = ...`; other upper-case names are the admin's own.
            if name.lower() in KNOWN_KEYS and name.lower() not in namespace:
                problems.add(
                    name, f"unknown key; did you mean {name.lower()!r}? (keys are lower case)"
                )
            continue
        close = difflib.get_close_matches(name, KNOWN_KEYS, n=1, cutoff=0.75)
        # Only when the key it resembles is not set: then the admin's intent would be lost.
        # Other names are the admin's own helpers (e.g. a list the servers dict is built from).
        if close and close[0] not in namespace:
            problems.add(name, f"unknown key; did you mean {close[0]!r}?")


def _optional(
    namespace: Mapping[str, Any], key: str, values: dict[str, Any], problems: _Problems,
    check: Callable[[Any], Any],
) -> None:
    if key not in namespace:
        return
    try:
        checked = check(namespace[key])
    except ValueError as err:
        problems.add(key, str(err))
        return
    if checked is not None:
        values[key] = checked


def check_servers(servers: Any, problems: _Problems) -> dict[str, str] | None:
    if not isinstance(servers, Mapping):
        problems.add(
            "servers",
            f'must be a dict like {{"name": "host:port"}} (got {type(servers).__name__})',
        )
        return None
    if not servers:
        problems.add("servers", 'is empty: add at least one "name": "host:port"')
        return None
    checked: dict[str, str] = {}
    for name, address in servers.items():
        if not isinstance(name, str) or not name.strip():
            problems.add("servers", f"host name {describe(name)} must be a non-empty string")
            continue
        if "/" in name or any(not c.isprintable() for c in name):
            # Names appear in URLs (/api/v1/hosts/<name>) and on the page.
            problems.add(
                "servers", f"host name {name!r} must not contain '/' or control characters"
            )
            continue
        if not isinstance(address, str):
            problems.add(
                "servers",
                f"{name!r}: address must be a string 'host:port' (got {describe(address)})",
            )
            continue
        try:
            split_address(address)
        except ValueError as err:
            problems.add("servers", f"{name!r}: bad address {address!r}: {err}")
            continue
        checked[name] = address
    return checked
