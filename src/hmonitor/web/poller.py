"""Polls every agent's `gpu.HostMonitor/GetInfo`, concurrently, on a fixed schedule.

Per host it keeps the last good snapshot, when it was taken, the round-trip time and the current
error in words a person understands. The rules that keep the dashboard live whatever an agent does:

* one gRPC channel per agent, created once and reused across rounds (never one per poll);
* a deadline on every call, so a hung agent costs at most `timeout`;
* every call of a round in flight at once, and each host's state updated as its answer arrives,
  so healthy hosts stay fresh while a bad one runs into its deadline;
* rounds start on schedule; a host whose previous call is still in flight is not called twice;
* what an agent sends is bounded (bounds.py) before anything else sees it.

The calls run on grpc.aio in one event-loop thread owned by the poller. The synchronous future API
(`stub.GetInfo.future`) was measured too: grpcio starts one "channel spin" thread per channel with
a call in flight, so 1,000 agents meant 1,000 short-lived threads per round and rounds about 1.7x
slower than grpc.aio, which serves all channels from one completion queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from hmonitor._pb import hm_pb2
from hmonitor.rpcwords import describe_rpc_error
from hmonitor.web.bounds import bound_host_info, bound_text
from hmonitor.web.channels import (
    ChannelFactory,
    channel_options,
    default_channel_factory,
)
from hmonitor.web.hoststate import HostState

__all__ = ["GET_INFO", "HostState", "Poller"]

log = logging.getLogger(__name__)

GET_INFO = "/gpu.HostMonitor/GetInfo"

if TYPE_CHECKING:  # generic only in the type stubs
    _GetInfo = grpc.aio.UnaryUnaryMultiCallable[hm_pb2.RequestInfo, hm_pb2.HostInfo]




# --- the poller -----------------------------------------------------------------------------------


class _Host:
    """A host's channel and latest state. The channel is only touched on the loop thread."""

    __slots__ = ("address", "channel", "closed", "in_flight", "name", "state", "stub")

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.channel: grpc.aio.Channel | None = None
        self.stub: _GetInfo | None = None
        self.closed = False
        self.in_flight = False
        self.state = HostState(
            name=name, address=address, up=False, error="not polled yet",
            last_seen=None, rtt_ms=None, info=None, polled_at=None,
        )


class _Notifier:
    """Runs `on_round` off the event loop, so a slow callback (say, a database write) never delays
    a round. Only the newest unhandled round is kept: a callback slower than the interval skips
    rounds instead of piling them up."""

    def __init__(self, callback: Callable[[list[HostState], float], None]) -> None:
        self._callback = callback
        self._cond = threading.Condition()
        self._pending: tuple[list[HostState], float] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hmonitor-poller-on-round",
                                         daemon=True)
        self._thread.start()

    def submit(self, states: list[HostState], started: float) -> None:
        with self._cond:
            if self._pending is not None:
                log.warning("on_round is slower than the polling interval; skipping a round")
            self._pending = (states, started)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                states, started = self._pending
                self._pending = None
            try:
                self._callback(states, started)
            except Exception:
                log.exception("on_round failed")


class Poller:
    """Polls agents every `interval` seconds; see the module's docstring for the rules."""

    def __init__(
        self,
        servers: Mapping[str, str],
        *,
        interval: float = 10.0,
        timeout: float = 3.0,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        agent_token: str = "",
        on_round: Callable[[list[HostState], float], None] | None = None,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError("interval and timeout must be greater than 0")
        self.interval = float(interval)
        self.timeout = float(timeout)
        self._credentials = credentials
        self._options = channel_options(self.interval, server_name)
        self._request = hm_pb2.RequestInfo(token=agent_token)
        self._on_round = on_round
        self._channel_factory = channel_factory or default_channel_factory
        self._lock = threading.Lock()  # guards _hosts and every _Host.state
        self._hosts: dict[str, _Host] = {}
        self._life = threading.Lock()  # guards starting and stopping the loop thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._schedule: concurrent.futures.Future[None] | None = None
        self._notifier: _Notifier | None = None
        self._rounds: set[asyncio.Task[tuple[list[HostState], float]]] = set()
        self._last_reported = 0.0  # start of the last round handed to on_round
        #: Wall time of the last finished round, from its start until its last answer or deadline.
        self.last_round_seconds: float | None = None
        #: Unix time the last finished round started.
        self.last_round_started: float | None = None
        #: Rounds finished since the poller was made.
        self.rounds = 0
        self.set_servers(servers)

    # -- public API --

    def start(self) -> None:
        """Poll in the background: a round every `interval` seconds, the first one now."""
        loop = self._ensure_loop()
        with self._life:
            if self._schedule is not None:
                return
            if self._on_round is not None:
                self._notifier = _Notifier(self._on_round)
            self._schedule = asyncio.run_coroutine_threadsafe(self._run_schedule(), loop)

    def stop(self) -> None:
        """Stop polling and close every channel (start() or poll_once() opens them again)."""
        with self._life:
            loop, thread = self._loop, self._thread
            schedule, notifier = self._schedule, self._notifier
            self._loop = self._thread = self._schedule = self._notifier = None
        if loop is not None and thread is not None:
            if schedule is not None:
                schedule.cancel()
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            except (concurrent.futures.TimeoutError, RuntimeError):
                log.warning("the poller did not shut down cleanly")
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        if notifier is not None:
            notifier.close()

    def poll_once(self) -> list[HostState]:
        """Run one full round now and wait for it; calls on_round(states, round_started_at)."""
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("poll_once() cannot be called from the poller's own thread")
        states, started = asyncio.run_coroutine_threadsafe(self._round(), loop).result()
        self._last_reported = max(self._last_reported, started)
        if self._on_round is not None:
            self._on_round(states, started)
        return states

    def hosts(self) -> list[HostState]:
        """The latest state of every host, in settings order."""
        with self._lock:
            return [host.state for host in self._hosts.values()]

    def host(self, name: str) -> HostState | None:
        with self._lock:
            host = self._hosts.get(name)
            return None if host is None else host.state

    def set_servers(self, servers: Mapping[str, str]) -> None:
        """Add and remove hosts live; hosts with an unchanged address keep channel and state."""
        with self._lock:
            old = self._hosts
            new: dict[str, _Host] = {}
            for name, address in servers.items():
                host = old.get(name)
                new[name] = host if host is not None and host.address == address else _Host(
                    name, address)
            gone = [host for name, host in old.items() if new.get(name) is not host]
            self._hosts = new
        loop = self._loop
        if gone and loop is not None:
            closing = self._close_hosts(gone)
            try:
                asyncio.run_coroutine_threadsafe(closing, loop)
            except RuntimeError:  # the loop is closing: stop() closes the channels anyway
                closing.close()

    # -- the event loop thread --

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._life:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._run_loop, args=(loop,),
                                          name="hmonitor-poller", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # As asyncio.run() ends: let cancelled tasks (the schedule) finish before closing.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _run_schedule(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            task = loop.create_task(self._round())
            self._rounds.add(task)
            task.add_done_callback(self._round_done)
            # Next round on the fixed grid, whatever this one does; if the process was frozen
            # (suspend, a debugger), skip the missed ticks rather than firing them in a burst.
            due += self.interval
            now = loop.time()
            if due < now:
                due += (int((now - due) / self.interval) + 1) * self.interval
            await asyncio.sleep(due - now)

    def _round_done(self, task: asyncio.Task[tuple[list[HostState], float]]) -> None:
        self._rounds.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("a polling round failed", exc_info=error)
            return
        states, started = task.result()
        # A round held up by a deadline ends after later rounds: those already reported newer
        # states (its late answers included), so on_round sees rounds in the order they started.
        if started <= self._last_reported:
            return
        self._last_reported = started
        notifier = self._notifier
        if notifier is not None:
            notifier.submit(states, started)

    async def _round(self) -> tuple[list[HostState], float]:
        started = time.time()
        clock = time.perf_counter()
        with self._lock:
            # A host still waiting on the previous round's call keeps that call: never two at once.
            hosts = [host for host in self._hosts.values() if not host.in_flight]
            for host in hosts:
                host.in_flight = True
        if hosts:
            await asyncio.gather(*(self._call(host) for host in hosts))
        self.last_round_seconds = time.perf_counter() - clock
        self.last_round_started = started
        self.rounds += 1
        return self.hosts(), started

    async def _call(self, host: _Host) -> None:
        try:
            if host.closed:
                return
            if host.stub is None:
                # Once per host, here on the loop thread: grpc.aio channels belong to their loop.
                host.channel = self._channel_factory(host.address, self._credentials,
                                                     self._options)
                host.stub = host.channel.unary_unary(
                    GET_INFO,
                    request_serializer=hm_pb2.RequestInfo.SerializeToString,
                    response_deserializer=hm_pb2.HostInfo.FromString,
                )
            channel, stub = host.channel, host.stub
            clock = time.perf_counter()
            try:
                info = await stub(self._request, timeout=self.timeout)
            except grpc.aio.AioRpcError as err:
                connected = None
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and channel is not None:
                    connected = channel.get_state() == grpc.ChannelConnectivity.READY
                error = describe_rpc_error(err.code(), err.details(), timeout=self.timeout,
                                           connected=connected)
                self._record(host, channel, error=error)
            else:
                rtt_ms = (time.perf_counter() - clock) * 1000
                # Before anything else sees it: pages, API and history get the bounded copy.
                info, truncated = bound_host_info(info)
                self._record(host, channel, info=info, rtt_ms=rtt_ms, truncated=truncated)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # A bug or an odd agent must cost this host its state, never the whole round.
            log.exception("polling %s (%s) failed", host.name, host.address)
            self._record(host, host.channel, error=f"poller error: {type(err).__name__}: {err}")
        finally:
            host.in_flight = False

    def _record(
        self, host: _Host, channel: grpc.aio.Channel | None, *, info: hm_pb2.HostInfo | None = None,
        rtt_ms: float | None = None, error: str = "", truncated: tuple[str, ...] = (),
    ) -> None:
        now = time.time()
        with self._lock:
            # A host removed or re-addressed meanwhile, or a channel closed under the call: the
            # answer belongs to nobody now.
            if self._hosts.get(host.name) is not host or host.channel is not channel:
                return
            if info is not None:
                host.state = HostState(
                    name=host.name, address=host.address, up=True,
                    error=f"agent: {info.err}" if info.err else "", last_seen=now, rtt_ms=rtt_ms,
                    info=info, polled_at=now, truncated=truncated,
                )
            else:
                # The details of a failed call are the agent's words too: bounded like its data.
                host.state = replace(host.state, up=False, error=bound_text(error), polled_at=now)

    async def _close_hosts(self, hosts: list[_Host]) -> None:
        channels = []
        for host in hosts:
            host.closed = True
            if host.channel is not None:
                channels.append(host.channel)
            host.channel = host.stub = None
        await asyncio.gather(*(channel.close(None) for channel in channels),
                             return_exceptions=True)

    async def _shutdown(self) -> None:
        rounds = list(self._rounds)
        with self._lock:
            hosts = list(self._hosts.values())
        channels = []
        for host in hosts:
            if host.channel is not None:
                channels.append(host.channel)
            # Cleared, not marked closed: the poller may be started again with the same hosts.
            host.channel = host.stub = None
        # Closing a channel cancels its calls, so the rounds end at once.
        await asyncio.gather(*(channel.close(None) for channel in channels),
                             return_exceptions=True)
        for task in rounds:
            task.cancel()
        await asyncio.gather(*rounds, return_exceptions=True)

