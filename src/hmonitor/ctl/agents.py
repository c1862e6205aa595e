"""Straight to the agents over gRPC (``gpu.HostMonitor/GetInfo``), for when no dashboard runs:
one channel per agent, kept for the client's life (``wait`` and ``top`` ask again and again),
every call with a deadline, all agents asked at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from hmonitor import rpcwords
from hmonitor._pb import hm_pb2, hm_pb2_grpc
from hmonitor.ctl.config import AgentAddr
from hmonitor.ctl.errors import Unreachable, UsageError
from hmonitor.ctl.model import Cluster, Gpu, Host, Proc
from hmonitor.wire import proc_owner

__all__ = ["AgentPool", "describe_rpc_error", "host_from_info"]

_MAX_MESSAGE = 64 * 1024 * 1024  # an agent with thousands of processes still fits
_OPTIONS = [
    # Agents are on the lab's network: an http_proxy set for the internet must not capture them.
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    # gRPC backs off up to 120 s after a failed connection and fails calls at once meanwhile;
    # ``wait`` and ``top`` must see a restarted agent at their next round.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def host_from_info(agent: AgentAddr, info: hm_pb2.HostInfo) -> Host:
    gpus = tuple(
        Gpu(index=g.id, name=g.name, mem_used=g.mem_used, mem_total=g.mem_total,
            utilization=g.utilization, temp=g.temp, uuid=g.uuid,
            mig_enabled=g.mig_enabled if g.HasField("mig_enabled") else None,
            procs=tuple(Proc(pid=p.pid, owner=proc_owner(p), mem=p.mem, basename=p.basename,
                             expiration=p.expiration, utilization=p.utilization)
                        for p in g.procs))
        for g in info.gpus)
    error = f"agent: {info.err}" if info.err else ""  # as the dashboard words it
    return Host(agent.name, agent.address, True, error, None, info.hostname, gpus)


def describe_rpc_error(err: grpc.RpcError, timeout: float) -> str:
    """A failed GetInfo in words, as the dashboard's poller says them, with our own advice."""
    if not isinstance(err, grpc.Call):
        return "unknown error"
    return rpcwords.describe_rpc_error(err.code(), err.details(), timeout=timeout,
                                       advice=rpcwords.CTL)


class AgentPool:
    """The agents named by ``--agent`` or the config file. Implements ``model.Source``."""

    def __init__(self, agents: Sequence[AgentAddr], timeout: float, token: str = "",
                 tls_ca: Path | None = None) -> None:
        self.agents = list(agents)
        self.timeout = timeout
        self._request = hm_pb2.RequestInfo(token=token)
        credentials = None
        if tls_ca is not None:
            try:
                credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
            except OSError as err:
                raise UsageError(f"{tls_ca}: cannot read the agents' CA: "
                                 f"{err.strerror or err}") from None
        self._channels = [
            grpc.secure_channel(a.address, credentials, options=_OPTIONS) if credentials
            else grpc.insecure_channel(a.address, options=_OPTIONS)
            for a in self.agents
        ]
        self._stubs = [hm_pb2_grpc.HostMonitorStub(c) for c in self._channels]

    def hosts(self) -> tuple[list[Host], list[str]]:
        """Every agent's host (down ones with the reason) and one warning line per down one."""
        calls = [stub.GetInfo.future(self._request, timeout=self.timeout)
                 for stub in self._stubs]
        hosts: list[Host] = []
        warnings: list[str] = []
        for agent, call in zip(self.agents, calls, strict=True):
            try:
                info = call.result()
            except grpc.RpcError as err:
                why = describe_rpc_error(err, self.timeout)
                hosts.append(Host(agent.name, agent.address, False, why))
                warnings.append(f"{agent.name} ({agent.address}): {why}")
            else:
                hosts.append(host_from_info(agent, info))
        return hosts, warnings

    def cluster(self, *, alerts: bool = False) -> Cluster:
        """Raises Unreachable when no agent answered: then nothing said is worth printing."""
        hosts, warnings = self.hosts()
        if hosts and not any(h.up for h in hosts):
            raise Unreachable("no agent answered: " + "; ".join(warnings))
        n = len(self.agents)
        return Cluster(tuple(hosts), f"{n} agent{'s' if n != 1 else ''}", None, tuple(warnings))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
