"""What each command does, given its parsed arguments and a ``Ctx``. cli.py builds the parser
and maps each command to one of these; a new command is a function here and a few lines there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from hmonitor.ctl.client import DashboardClient
from hmonitor.ctl.config import Config, load_config
from hmonitor.ctl.errors import (
    EXIT_NONE,
    EXIT_OK,
    AuthError,
    NotFound,
    TimedOut,
    Unreachable,
    UsageError,
)
from hmonitor.ctl.model import Cluster, Source
from hmonitor.ctl.render import (
    Style,
    env_lines,
    free_lines,
    notes_lines,
    sparkline,
    status_lines,
    users_lines,
)
from hmonitor.ctl.select import Criteria, Placement, could_fit, free_gpus, host_matches, pick_host
from hmonitor.ctl.shapes import (
    free_json,
    placement_json,
    status_json,
    top_json,
    user_json,
    users_from_hosts,
)
from hmonitor.ctl.units import parse_duration, seconds_text, size_text

__all__ = ["Ctx"]


@dataclass
class Ctx:
    """What every command needs: the environment, the streams, the connection (made lazily:
    ``completion`` needs none)."""

    env: Mapping[str, str]
    out: TextIO
    err: TextIO
    color: bool
    args: argparse.Namespace
    _source: Source | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)

    @property
    def style(self) -> Style:
        return Style(self.color)

    def print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)

    def warn(self, text: str) -> None:
        print(f"hmonitor-ctl: {text}", file=self.err)

    def dump(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False)
        self.out.write("\n")

    def config(self) -> Config:
        if self._config is None:
            a = self.args
            self._config = load_config(env=self.env, url=a.url, agents=a.agent or (),
                                       timeout=a.request_timeout, config=a.config)
        return self._config

    def source(self) -> Source:
        if self._source is None:
            cfg = self.config()
            if cfg.direct:
                # Imported here: talking to a dashboard never loads gRPC.
                from hmonitor.ctl.agents import AgentPool  # noqa: PLC0415

                self._source = AgentPool(cfg.agents, cfg.timeout, cfg.agent_token,
                                         cfg.agent_tls_ca)
            else:
                assert cfg.url is not None
                self._source = DashboardClient(cfg.url, cfg.token, cfg.timeout)
        return self._source

    def dashboard(self, command: str, keeps: str = "") -> DashboardClient:
        """The dashboard, or a one-line UsageError in direct mode: ``command`` needs what only
        the dashboard keeps (``keeps``, default the command's own name)."""
        source = self.source()
        if not isinstance(source, DashboardClient):
            raise UsageError(f"{command} needs the dashboard (the agents keep no "
                             f"{keeps or command}): set HMONITOR_URL and leave out --agent")
        return source

    def cluster(self, *, alerts: bool = False, warn: bool = True) -> Cluster:
        """The hosts now; hosts the agents could not be asked about each get a warning line
        (``warn``: unless the output shows them itself)."""
        c = self.source().cluster(alerts=alerts)
        for line in c.warnings if warn else ():
            self.warn(f"warning: {line}")
        return c

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def _criteria(a: argparse.Namespace) -> Criteria:
    return Criteria(min_mem=a.min_mem, max_util=a.max_util, host=a.host)


def _check_hosts(c: Cluster, pattern: str | None) -> None:
    if pattern is not None and not any(host_matches(h, pattern) for h in c.hosts):
        names = ", ".join(h.name for h in c.hosts[:20])
        raise NotFound(f"no host matches {pattern!r} (hosts: {names})")


def _wanted(a: argparse.Namespace, k: int) -> str:
    mem = f" with {size_text(a.min_mem)} free" if a.min_mem else ""
    where = f" on a host matching {a.host!r}" if a.host else " on one host"
    return f"{k} free GPU{'s' if k != 1 else ''}{mem}{where}"


def cmd_status(ctx: Ctx, a: argparse.Namespace) -> int:
    c = ctx.cluster(alerts=True, warn=False)
    if a.json:
        ctx.dump(status_json(c))
    else:
        ctx.print(*status_lines(c, ctx.style))
    return EXIT_OK


def _print_placement(ctx: Ctx, a: argparse.Namespace, p: Placement,
                     waited: float | None = None) -> None:
    if a.json:
        ctx.dump(placement_json(p, waited))
    elif a.env:
        ctx.print(*env_lines(p))
    else:
        ctx.print(*(f"{p.host.name}:{g.index}" for g in p.gpus))


def cmd_free(ctx: Ctx, a: argparse.Namespace) -> int:
    c = ctx.cluster()
    _check_hosts(c, a.host)
    crit = _criteria(a)
    if a.env:
        p = pick_host(c.hosts, a.n or 1, crit)
        if p is None:
            ctx.warn(f"no host has {_wanted(a, a.n or 1)}")
            return EXIT_NONE
        _print_placement(ctx, a, p)
        return EXIT_OK
    picks = free_gpus(c.hosts, crit)[: a.n] if a.n else free_gpus(c.hosts, crit)
    if a.json:
        ctx.dump(free_json(picks))
    else:
        ctx.print(*free_lines(picks, a.long, ctx.style))
    return EXIT_OK if picks else EXIT_NONE


def cmd_wait(ctx: Ctx, a: argparse.Namespace) -> int:
    crit = _criteria(a)
    started = time.monotonic()
    deadline = None if a.timeout is None else started + a.timeout
    checked = False
    said_unreachable = False
    tell = ctx.err.isatty()  # progress for a person watching, nothing for scripts
    while True:
        try:
            c = ctx.source().cluster()
        except AuthError:
            raise
        except Unreachable as err:
            if not checked:
                raise  # a wrong URL should not look like a long wait
            if not said_unreachable:  # a dashboard restart: keep waiting, say so once
                ctx.warn(f"still waiting, but: {err}")
                said_unreachable = True
        else:
            said_unreachable = False
            if not checked:
                for line in c.warnings:  # agents that did not answer: said once, not each round
                    ctx.warn(f"warning: {line}")
                _check_hosts(c, a.host)
                if not could_fit(c.hosts, a.n, crit):
                    ctx.warn(f"warning: no host has {a.n} GPUs that could ever match; "
                             "waiting anyway")
                elif tell:
                    ctx.warn(f"waiting for {_wanted(a, a.n)}...")
                checked = True
            p = pick_host(c.hosts, a.n, crit)
            if p is not None:
                _print_placement(ctx, a, p, time.monotonic() - started)
                return EXIT_OK
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimedOut(f"timed out after {seconds_text(a.timeout)} waiting for "
                           f"{_wanted(a, a.n)}")
        time.sleep(a.interval if deadline is None else min(a.interval, deadline - now))


def cmd_users(ctx: Ctx, a: argparse.Namespace) -> int:
    source = ctx.source()
    if isinstance(source, DashboardClient):
        answer = source.get_json("/api/v1/users")
        raw = answer.get("users") if isinstance(answer, dict) else None
        if not isinstance(raw, list) or not all(isinstance(u, dict) for u in raw):
            raise Unreachable(f"{source.url}/api/v1/users answered without a users list")
    else:
        raw = users_from_hosts(ctx.cluster().hosts)
    users = [user_json(u) for u in raw]
    if a.json:
        ctx.dump({"users": users})
    else:
        ctx.print(*users_lines(users, ctx.style))
    return EXIT_OK


def cmd_top(ctx: Ctx, a: argparse.Namespace) -> int:
    from hmonitor.ctl import top  # noqa: PLC0415 - curses only for this command

    view = top.View(sort=a.sort, filter=a.filter or "", free_only=a.free)
    if a.json:
        ctx.dump(top_json(ctx.cluster(warn=False)))
        return EXIT_OK
    if a.once:
        width = shutil.get_terminal_size((200, 50)).columns if ctx.out.isatty() else 200
        for text, style in top.frame(ctx.cluster(warn=False), view, width)[:-1]:  # no key help
            ctx.print(ctx.style({"reverse": "bold"}.get(style, style), text))
        return EXIT_OK
    if not (ctx.out.isatty() and sys.stdin.isatty()):
        raise UsageError("top needs a terminal; for a script, top --once or top --json")
    ctx.out.flush()
    top.run(ctx.source(), a.interval, ctx.color, view)
    return EXIT_OK


def _user_at_host(text: str) -> tuple[str, str]:
    user, at, host = text.rpartition("@")
    if not at or not user.strip() or not host.strip():
        raise UsageError(f"expected USER@HOST, not {text!r}")
    return user.strip(), host.strip()


def cmd_notes(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("notes")
    action = a.notes_action or "list"
    if action == "list":
        params = {"host": a.host} if a.host else None
        answer = client.get_json("/api/v1/notes", params)
        notes = answer.get("notes") if isinstance(answer, dict) else None
        if not isinstance(notes, list):
            raise Unreachable(f"{client.url}/api/v1/notes answered without a notes list")
        if a.json:
            ctx.dump({"notes": notes})
        else:
            ctx.print(*notes_lines(notes, ctx.style))
        return EXIT_OK
    user, host = _user_at_host(a.who)
    if action == "set":
        answer = client.send_json("POST", "/api/v1/notes",
                                  {"user": user, "host": host, "note": " ".join(a.text)})
        done = f"saved the note for {user}@{host}"
    else:
        answer = client.send_json("DELETE", "/api/v1/notes", {"user": user, "host": host})
        done = f"deleted the note for {user}@{host}"
    if a.json:
        ctx.dump(answer)
    else:
        ctx.print(done)
    return EXIT_OK


def cmd_notice(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("notice")
    action = a.notice_action or "show"
    if action == "show":
        notice = client.get_json("/api/v1/notice")
    else:
        text = " ".join(a.text) if action == "set" else ""
        notice = client.send_json("PUT", "/api/v1/notice", {"notice": text})
    if not isinstance(notice, dict):
        raise Unreachable(f"{client.url}/api/v1/notice answered with something else")
    if a.json:
        ctx.dump(notice)
    elif action == "show":
        ctx.print(str(notice.get("notice") or "(no notice)"))
    else:
        ctx.print("notice cleared" if action == "clear" else "notice set")
    return EXIT_OK


_UNITS = {"util": "%", "fan": "%", "temp": "°C", "mem": "bytes", "mem_total": "bytes"}


def _value_text(metric: str, v: float) -> str:
    return size_text(int(v)) if _UNITS[metric] == "bytes" else f"{v:.0f}{_UNITS[metric]}"


def cmd_history(ctx: Ctx, a: argparse.Namespace) -> int:
    client = ctx.dashboard("history")
    host = client.host(a.host)
    if host.gpus and a.gpu not in {g.index for g in host.gpus}:
        have = ", ".join(str(g.index) for g in host.gpus)
        raise NotFound(f"{host.name} has no GPU {a.gpu} (it has {have})")
    width = a.points or max(10, min(shutil.get_terminal_size((80, 24)).columns - 2, 1000))
    params: dict[str, str | int | float] = {"host": host.name, "gpu": a.gpu,
                                            "metric": a.metric, "window": round(a.since),
                                            "points": width, "agg": a.agg}
    if a.csv:
        params["format"] = "csv"
        ctx.out.write(client.request("GET", "/api/v1/history", params).decode())
        return EXIT_OK
    series = client.get_json("/api/v1/history", params)
    if a.json:
        ctx.dump(series)
        return EXIT_OK
    values: Sequence[float | None] = series.get("v", []) if isinstance(series, dict) else []
    known = [v for v in values if v is not None]
    ctx.print(f"{host.name} GPU {a.gpu} {a.metric} ({_UNITS[a.metric]}), last "
              f"{seconds_text(a.since)}, {a.agg} per point")
    lo, hi = (0.0, 100.0) if _UNITS[a.metric] == "%" else (0.0, None)
    ascii_only = "utf" not in (getattr(ctx.out, "encoding", "") or "").lower()
    ctx.print(sparkline(values, lo, hi, ascii_only=ascii_only))
    if known:
        ctx.print(f"min {_value_text(a.metric, min(known))}  max "
                  f"{_value_text(a.metric, max(known))}  last {_value_text(a.metric, known[-1])}")
    else:
        ctx.print("no data in this window")
    return EXIT_OK


def parse_since(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("must be at least 1 s")
    return seconds
