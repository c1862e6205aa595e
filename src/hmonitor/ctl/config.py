"""Where the client connects and with what token: command line, then environment, then the
config file (``~/.config/hmonitor/ctl.ini``), each filling only what the one before left open.

The file may hold tokens, so it is refused when others could read it (or anyone but its owner
could change it), as ssh refuses a private key: a token there opens the dashboard to everyone
who can read the file. There is no ``--token`` flag for the same reason: a command line is
visible to every user in ``ps``.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hmonitor.ctl.errors import UsageError

__all__ = ["DEFAULT_TIMEOUT", "AgentAddr", "Config", "default_path", "load_config",
           "parse_agent"]

DEFAULT_TIMEOUT = 10.0  # seconds per request: 1,000 hosts' JSON is a few MB
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


@dataclass(frozen=True)
class AgentAddr:
    name: str  # shown as the host's name, as the dashboard shows settings.py's
    address: str  # host:port


@dataclass(frozen=True)
class Config:
    url: str | None = None  # the dashboard; None in direct mode
    token: str = ""
    timeout: float = DEFAULT_TIMEOUT
    agents: tuple[AgentAddr, ...] = ()  # direct mode when not empty
    agent_token: str = ""  # the agents' GOHM_TOKEN, sent in RequestInfo.token
    agent_tls_ca: Path | None = None  # set: reach the agents over TLS, trusting this CA
    path: Path | None = None  # the config file read, if any

    @property
    def direct(self) -> bool:
        return bool(self.agents)


def default_path(env: Mapping[str, str]) -> Path:
    if env.get("HMONITOR_CONFIG"):
        return Path(env["HMONITOR_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return Path(base).expanduser() / "hmonitor" / "ctl.ini"


def parse_agent(text: str) -> tuple[str | None, str]:
    """``[NAME=]HOST:PORT`` (IPv6 as ``[::1]:9203``) -> (name or None, address)."""
    name, sep, address = text.strip().rpartition("=")
    if not sep:
        name = ""
    if not _ADDRESS.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise UsageError(f"--agent {text!r}: expected [NAME=]HOST:PORT, e.g. gpu01=10.0.0.1:9203")
    if sep and not name.strip():
        raise UsageError(f"--agent {text!r}: the name before '=' is empty")
    return (name.strip() or None), address


def name_agents(given: Sequence[tuple[str | None, str]]) -> tuple[AgentAddr, ...]:
    """Unnamed agents are called by their host (``gpu01`` for ``gpu01:9203``), or by the whole
    address where two share a host (several agents on one machine, as in tests)."""
    host_of = {addr: addr.rsplit(":", 1)[0].strip("[]") for _, addr in given}
    counts: dict[str, int] = {}
    for name, addr in given:
        if name is None:
            counts[host_of[addr]] = counts.get(host_of[addr], 0) + 1
    out: list[AgentAddr] = []
    for name, addr in given:
        shown = name or (host_of[addr] if counts[host_of[addr]] == 1 else addr)
        if any(a.name == shown for a in out):
            raise UsageError(f"two agents are both named {shown!r}: name them with NAME=HOST:PORT")
        out.append(AgentAddr(shown, addr))
    return tuple(out)


def _check_private(path: Path, holds_secret: bool) -> None:
    try:
        st = path.stat()
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    if st.st_uid not in (os.getuid(), 0):
        raise UsageError(f"{path}: owned by uid {st.st_uid}, not by you: refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"{path}: others can change it (it could point you elsewhere): "
                         f"chmod go-w {path}")
    if holds_secret and st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise UsageError(f"{path}: holds a token and others can read it: chmod 600 {path}")


def _read_token_file(path: Path) -> str:
    _check_private(path, holds_secret=True)
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    if not token:
        raise UsageError(f"{path}: the token file is empty")
    return token


def _read_file(path: Path, explicit: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    if not path.exists():
        if explicit:
            raise UsageError(f"{path}: no such config file")
        return parser
    try:
        parser.read_string(path.read_text(), source=str(path))
    except configparser.Error as err:
        raise UsageError(f"{path}: {' '.join(str(err).split())}") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    known = {"dashboard": {"url", "token", "token_file", "timeout"},
             "direct": {"agents", "token", "tls_ca"}}
    for section in parser.sections():
        if section not in known:
            raise UsageError(f"{path}: unknown section [{section}] (expected "
                             f"[dashboard] or [direct])")
        for key in parser[section]:
            if key not in known[section]:
                raise UsageError(f"{path}: [{section}] has no key {key!r} (known: "
                                 f"{', '.join(sorted(known[section]))})")
    secret = parser.has_option("dashboard", "token") or parser.has_option("direct", "token")
    _check_private(path, holds_secret=secret)
    return parser


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number of seconds, not {text!r}") from None
    if not 0 < value < 1e6:
        raise UsageError(f"{what} must be above 0 seconds, not {text!r}")
    return value


def _check_url(url: str, where: str) -> str:
    if not re.match(r"https?://[^/\s]+", url):
        raise UsageError(f"{where}: {url!r} is not a dashboard URL (e.g. http://monitor:5000)")
    return url.rstrip("/")


def load_config(*, env: Mapping[str, str], url: str | None = None,
                agents: Sequence[str] = (), timeout: float | None = None,
                config: str | None = None, need_token: bool = True) -> Config:
    """The settings to use. Raises UsageError with what to do when something is missing or
    unsafe. ``need_token``: false for commands that never reach the dashboard."""
    path = Path(config).expanduser() if config else default_path(env)
    file = _read_file(path, explicit=bool(config or env.get("HMONITOR_CONFIG")))
    used = path if file.sections() else None
    dash = file["dashboard"] if file.has_section("dashboard") else {}
    direct = file["direct"] if file.has_section("direct") else {}

    if timeout is None:
        raw = env.get("HMONITOR_TIMEOUT") or dash.get("timeout")
        timeout = _positive(raw, "HMONITOR_TIMEOUT or timeout") if raw else DEFAULT_TIMEOUT

    agent_token = env.get("HMONITOR_AGENT_TOKEN") or direct.get("token") or ""
    tls_ca = direct.get("tls_ca")
    ca = Path(tls_ca).expanduser() if tls_ca else None
    if agents or (not url and not env.get("HMONITOR_URL") and not dash.get("url")
                  and direct.get("agents")):
        given = [parse_agent(a) for a in agents] or [
            parse_agent(a) for a in re.split(r"[\s,]+", direct.get("agents", "")) if a]
        return Config(None, "", timeout, name_agents(given), agent_token, ca, used)

    if url:
        chosen = _check_url(url, "--url")
    elif env.get("HMONITOR_URL"):
        chosen = _check_url(env["HMONITOR_URL"], "HMONITOR_URL")
    elif dash.get("url"):
        chosen = _check_url(dash["url"], f"{path} [dashboard] url")
    else:
        raise UsageError(f"no dashboard: set HMONITOR_URL (and HMONITOR_TOKEN), write {path}, "
                         "or name agents with --agent HOST:PORT")

    token = env.get("HMONITOR_TOKEN", "").strip()
    if not token and env.get("HMONITOR_TOKEN_FILE"):
        token = _read_token_file(Path(env["HMONITOR_TOKEN_FILE"]).expanduser())
    if not token:
        token = dash.get("token", "").strip()
    if not token and dash.get("token_file"):
        token = _read_token_file(Path(dash["token_file"]).expanduser())
    if not token and need_token:
        raise UsageError(f"no token for {chosen}: set HMONITOR_TOKEN or HMONITOR_TOKEN_FILE, "
                         f"or token in [dashboard] of {path}")
    return Config(chosen, token, timeout, (), agent_token, ca, used)
