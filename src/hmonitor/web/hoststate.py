"""The poller's view of the hosts: ``HostState``, what the poller last saw of one host, and the
Protocols pages, API and history read it through (so tests and benchmarks can hand them fakes).

Domain code: no gRPC, no Flask."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hmonitor._pb import hm_pb2


@dataclass(frozen=True)
class HostState:
    """One host as the poller last saw it."""

    name: str
    address: str
    up: bool  # the last call succeeded
    error: str  # "" when fine; why it is down; "agent: ..." when up but HostInfo.err is set
    last_seen: float | None  # Unix time of the last good snapshot
    rtt_ms: float | None  # round trip of the last good call
    info: hm_pb2.HostInfo | None  # the last good snapshot, kept while the host is down
    polled_at: float | None  # Unix time the last attempt finished
    truncated: tuple[str, ...] = ()  # what bounds.py cut from `info`, in words


class HostSample(Protocol):
    """What the history store records of a host each round."""

    @property
    def name(self) -> str: ...
    @property
    def up(self) -> bool: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def info(self) -> hm_pb2.HostInfo | None: ...


class HostStateLike(HostSample, Protocol):
    """One host as the poller last saw it, for pages and the API."""

    @property
    def address(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def last_seen(self) -> float | None: ...
    @property
    def polled_at(self) -> float | None: ...
    @property
    def truncated(self) -> tuple[str, ...]: ...  # what the poller cut from `info`, in words


class PollerLike(Protocol):
    """The part of ``hmonitor.web.poller.Poller`` the dashboard uses."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def hosts(self) -> list[Any]: ...  # list[HostStateLike]; Any keeps list invariance out
    def host(self, name: str) -> Any: ...  # HostStateLike | None
    def set_servers(self, servers: Mapping[str, str]) -> Any: ...
