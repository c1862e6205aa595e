"""Hosts, GPUs and processes as the client sees them, whichever way they came: from the
dashboard's ``/api/v1/hosts`` JSON (here) or straight from agents over gRPC (agents.py).

No protobuf here, so that talking to a dashboard never loads gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hmonitor.ctl.errors import Unreachable
from hmonitor.rules import gpu_is_free
from hmonitor.wire import is_lost

__all__ = ["Alert", "BadAnswer", "Cluster", "Gpu", "Host", "Proc", "Source", "host_from_api"]


class BadAnswer(Unreachable):
    """The other side answered, but not what an hmonitor dashboard or agent says."""


@dataclass(frozen=True)
class Proc:
    pid: int
    owner: str  # as the dashboard names it (wire.proc_owner): user, uid or container
    mem: int  # bytes
    basename: str = ""
    expiration: int = 0  # ProcInfo.expiration: 0 unknown, 1 never, else Unix seconds
    utilization: int = 0


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    mem_used: int
    mem_total: int
    utilization: int = 0
    temp: int = 0
    uuid: str = ""
    mig_enabled: bool | None = None
    procs: tuple[Proc, ...] = ()

    @property
    def mem_free(self) -> int:
        return max(0, self.mem_total - self.mem_used)

    @property
    def lost(self) -> bool:
        return is_lost(self.name)

    def free(self, max_util: float | None = None) -> bool:
        """The shared free-GPU rule (hmonitor.rules), with the dashboard's threshold unless
        ``max_util`` says otherwise."""
        extra = {} if max_util is None else {"max_util": max_util}
        return gpu_is_free(name=self.name, processes=len(self.procs),
                           utilization=self.utilization, mem_used=self.mem_used,
                           mem_total=self.mem_total, mig_enabled=self.mig_enabled, **extra)

    @property
    def owners(self) -> list[str]:
        """Who runs something on it, each once, in the order of their processes."""
        return list(dict.fromkeys(p.owner for p in self.procs))


@dataclass(frozen=True)
class Host:
    name: str  # the dashboard's name for it (settings.py), or the --agent name
    address: str
    up: bool
    error: str = ""  # why it is down; for an up host, a problem the agent reported
    last_seen: float | None = None
    hostname: str = ""  # what the agent calls its machine
    gpus: tuple[Gpu, ...] = ()


@dataclass(frozen=True)
class Alert:
    kind: str
    host: str
    message: str


@dataclass(frozen=True)
class Cluster:
    hosts: tuple[Host, ...]
    source: str  # where it came from, for the status line: the URL, or "N agents"
    alerts: tuple[Alert, ...] | None = None  # None: not known (agents have no alerts)
    warnings: tuple[str, ...] = field(default=())  # one line each, for stderr


class Source(Protocol):
    """Where hosts come from: the dashboard or the agents themselves."""

    def cluster(self, *, alerts: bool = False) -> Cluster: ...

    def close(self) -> None: ...


# --- from the dashboard's JSON ------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None,
         ) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    # bool is an int in Python: a bool where a number belongs is still nonsense.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise BadAnswer(f"unexpected answer from the dashboard: {key!r} is {value!r}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _proc(p: Mapping[str, Any]) -> Proc:
    username = _get(p, "username", str, "")
    return Proc(
        pid=_get(p, "pid", int, 0),
        owner=_get(p, "owner", str, "") or username or f"uid {_get(p, 'uid', int, -1)}",
        mem=_get(p, "mem", int, 0),
        basename=_get(p, "basename", str, ""),
        expiration=_get(p, "expiration", int, 0),
        utilization=_get(p, "utilization", int, 0),
    )


def _gpu(g: Mapping[str, Any]) -> Gpu:
    return Gpu(
        index=_get(g, "id", int, 0),
        name=_get(g, "name", str, ""),
        mem_used=_get(g, "mem_used", int, 0),
        mem_total=_get(g, "mem_total", int, 0),
        utilization=_get(g, "utilization", int, 0),
        temp=_get(g, "temp", int, 0),
        uuid=_get(g, "uuid", str, ""),
        mig_enabled=_get(g, "mig_enabled", bool, None),
        procs=tuple(_proc(p) for p in _objects(g, "procs")),
    )


def _objects(obj: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    items: list[Any] = _get(obj, key, list, [])
    if not all(isinstance(i, dict) for i in items):
        raise BadAnswer(f"unexpected answer from the dashboard: {key!r} holds a non-object")
    return items


def host_from_api(h: Any) -> Host:
    """One element of ``/api/v1/hosts``'s ``hosts`` (docs/api.md)."""
    if not isinstance(h, dict) or not isinstance(h.get("name"), str):
        raise BadAnswer("unexpected answer from the dashboard: a host without a name")
    info = _get(h, "info", dict, None)
    return Host(
        name=h["name"],
        address=_get(h, "address", str, ""),
        up=_get(h, "up", bool, False),
        error=_get(h, "error", str, ""),
        last_seen=_get(h, "last_seen", (int, float), None),
        hostname=_get(info, "hostname", str, "") if info else "",
        gpus=tuple(_gpu(g) for g in _objects(info, "gpus")) if info else (),
    )


def alert_from_api(a: Any) -> Alert:
    if not isinstance(a, dict):
        raise BadAnswer("unexpected answer from the dashboard: an alert is not an object")
    return Alert(_get(a, "kind", str, ""), _get(a, "host", str, ""), _get(a, "message", str, ""))
