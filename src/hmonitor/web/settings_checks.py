"""What each key of settings.py may hold: one checker per kind of value, raising ValueError with
the problem in words (``settings.py`` adds the file, key and line)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many as parse_rates

__all__ = [
    "as_path",
    "check_address",
    "check_history_backend",
    "check_http_url",
    "check_metrics_token",
    "check_nonempty",
    "check_percent",
    "check_positive",
    "check_rate",
    "check_secret",
    "check_server_name",
    "check_str",
    "describe",
    "dir_checker",
    "file_checker",
    "is_number",
    "split_address",
]


def split_address(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError says what is wrong, in words."""
    if not text or text != text.strip():
        raise ValueError("expected 'host:port'")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected '[ipv6-address]:port'")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("no port: expected 'host:port'")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets: '[addr]:port'")
    if not host:
        raise ValueError("no host name before the port")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{host!r} is not a host name")
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return host, port


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(value: Any) -> bool:
    # bool is an int to Python, but `interval = True` is a mistake, not 1 second.
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    return value


def check_nonempty(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    if not value.strip():
        raise ValueError("is empty")
    return value


def check_metrics_token(value: Any) -> str:
    """A token for /metrics alone: one word (it travels in an HTTP header), long enough."""
    token = check_nonempty(value)
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("must be one word: no spaces or control characters")
    if len(token) < 16:
        raise ValueError("is shorter than 16 characters: too easy to guess")
    return token


def check_secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    if not value:
        raise ValueError("is empty: remove the line to have a random secret generated and kept")
    return value


def check_server_name(value: Any) -> str | None:
    if value is None:
        return None
    text = check_str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a host name")
    return text


def check_address(value: Any) -> str:
    text = check_str(value)
    try:
        split_address(text)
    except ValueError as err:
        raise ValueError(f"bad address {text!r}: {err}") from None
    return text


HISTORY_BACKENDS = ("sqlite", "prometheus")


def check_history_backend(value: Any) -> str:
    text = check_str(value)
    if text not in HISTORY_BACKENDS:
        raise ValueError(f"{describe(text)} is not one of " + ", ".join(
            repr(b) for b in HISTORY_BACKENDS))
    return text


def check_http_url(value: Any) -> str:
    """An http(s) URL with a host, such as 'http://prometheus:9090' (a path prefix is kept)."""
    text = check_str(value).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"bad URL: {err}") from None
    del port
    if parts.password is not None:  # checked first: the messages below echo the URL
        raise ValueError("holds a password: use prometheus_username and prometheus_password")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{describe(text)} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{describe(text)}: no ?query or #fragment, only the base URL")
    return text.rstrip("/")


def check_rate(value: Any) -> str:
    text = check_str(value)
    try:
        rates = parse_rates(text)
    except ValueError:
        rates = []
    if len(rates) != 1:
        raise ValueError(f"{text!r} is not one rate like '10/minute' or '20 per hour'")
    if rates[0].amount < 1:
        raise ValueError(f"{text!r} allows no attempt at all: nobody could log in")
    return text


def check_positive(value: Any) -> float:
    if not is_number(value):
        raise ValueError(f"must be a number (got {describe(value)})")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be greater than 0 (got {describe(value)})")
    return number


def check_percent(value: Any) -> float:
    if not is_number(value):
        raise ValueError(f"must be a number (got {describe(value)})")
    number = float(value)
    if not 0 <= number <= 100:
        raise ValueError(f"must be a percentage between 0 and 100 (got {describe(value)})")
    return number


def as_path(value: Any, folder: Path) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ValueError(f"must be a path string (got {describe(value)})")
    path = Path(os.fspath(value)).expanduser()
    # Relative paths are relative to the settings file, not to wherever the command was started.
    return path if path.is_absolute() else folder / path


def file_checker(folder: Path) -> Callable[[Any], Path | None]:
    def check(value: Any) -> Path | None:
        if value is None:
            return None
        path = as_path(value, folder)
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a file")
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        if not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path}")
        return path

    return check


def dir_checker(folder: Path) -> Callable[[Any], Path | None]:
    def check(value: Any) -> Path | None:
        if value is None:
            return None
        path = as_path(value, folder)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder")
        return path

    return check
