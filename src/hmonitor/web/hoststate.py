"""The poller's view of one host, as Protocols: pages, API and history store read any object of
this shape (the real ``hmonitor.web.poller.HostState``, or a fake in tests and benchmarks)."""

from __future__ import annotations

from typing import Protocol

from hmonitor._pb import hm_pb2


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
