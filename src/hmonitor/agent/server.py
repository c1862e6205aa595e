"""The agent's gRPC server: HostMonitor, health and reflection, all behind one allow-list."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hmonitor._pb import hm_pb2, hm_pb2_grpc

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SERVICE_NAME = hm_pb2.DESCRIPTOR.services_by_name["HostMonitor"].full_name
_MAPPED_PREFIX = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses


def parse_allow(text: str) -> list[Network]:
    """`GOHM_ALLOW`: comma-separated CIDRs (IPv4 and IPv6); a bare address means that host."""
    nets: list[Network] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as err:
            raise ValueError(f"bad entry {part!r} in the allow-list: {err}") from None
    if not nets:
        raise ValueError("the allow-list is empty: nobody could connect")
    return nets


def peer_address(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address of a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:%5B::1%5D:5")."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return None
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d
    return addr


def admits(net: Network, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `net` holds the client `addr` (as peer_address gives it: IPv4 clients as IPv4).

    An IPv4 client is also its IPv4-mapped IPv6 address (::ffff:a.b.c.d), which is how a
    dual-stack socket sees it, so "::ffff:10.0.0.0/104" and "::/0" admit it whatever the
    socket. ::1 and 127.0.0.1 stay different addresses.
    """
    if addr in net:
        return True
    if isinstance(addr, ipaddress.IPv4Address) and isinstance(net, ipaddress.IPv6Network):
        return ipaddress.IPv6Address(_MAPPED_PREFIX | int(addr)) in net
    return False


class AllowList:
    """Decides per peer; logs each rejected address at most once a minute with a count."""

    def __init__(self, networks: Sequence[Network], log_every: float = 60.0) -> None:
        self.networks = list(networks)
        self._log_every = log_every
        self._lock = threading.Lock()
        self._rejected: dict[str, tuple[float, int]] = {}  # address -> (last logged, suppressed)

    def allows(self, peer: str) -> bool:
        addr = peer_address(peer)
        ok = addr is not None and any(admits(net, addr) for net in self.networks)
        if not ok:
            self._note_rejection(str(addr) if addr is not None else peer)
        return ok

    def _note_rejection(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._rejected.get(who, (-self._log_every, 0))
            if now - last >= self._log_every:
                more = f" ({suppressed} more since last logged)" if suppressed else ""
                log.warning("rejected %s: not in the allow-list%s", who, more)
                self._rejected[who] = (now, 0)
            else:
                self._rejected[who] = (last, suppressed + 1)


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], allow: AllowList
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, but refusing peers outside the allow-list before any work."""

    def check(context: grpc.ServicerContext) -> None:
        if not allow.allows(context.peer()):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not in this agent's allow-list")

    def wrap(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            check(context)
            return behaviour(request, context)

        return guarded

    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attr, make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        wrap(getattr(handler, attr)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


if TYPE_CHECKING:  # grpc-stubs makes it generic; the runtime class is not subscriptable
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


class AllowListInterceptor(_Interceptor):
    def __init__(self, allow: AllowList) -> None:
        self._allow = allow

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        return None if handler is None else _guarded(handler, self._allow)


class HostMonitorService(hm_pb2_grpc.HostMonitorServicer):
    def __init__(self, snapshot: Callable[[], hm_pb2.HostInfo], token: str = "") -> None:
        self._snapshot = snapshot
        self._token = token.encode()

    def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.ServicerContext
    ) -> hm_pb2.HostInfo:
        if self._token and not hmac.compare_digest(request.token.encode(), self._token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing token")
        return self._snapshot()


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes
    client_ca: bytes | None = None  # set: mutual TLS, clients must present a cert it signed


class BindError(Exception):
    """The listen address could not be bound (taken, or not an address of this host)."""


def build_server(
    addr: str,
    snapshot: Callable[[], hm_pb2.HostInfo],
    allow: AllowList,
    *,
    token: str = "",
    tls: TlsFiles | None = None,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """A started server and its bound port; raises BindError when the address can't be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[AllowListInterceptor(allow)],
        # gRPC sets SO_REUSEPORT by default, which would let a second copy bind the same port
        # and silently share the traffic; we want the bind to fail instead.
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=256,  # beyond this, RESOURCE_EXHAUSTED rather than a queue
    )
    hm_pb2_grpc.add_HostMonitorServicer_to_server(HostMonitorService(snapshot, token), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        if tls is None:
            port = server.add_insecure_port(addr)
        else:
            creds = grpc.ssl_server_credentials(
                [(tls.key, tls.cert)],
                root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None,
            )
            port = server.add_secure_port(addr, creds)
    except RuntimeError as err:
        raise BindError(f"cannot listen on {addr}: {err}") from err
    if port == 0:  # older grpcio reports a failed bind this way
        raise BindError(f"cannot listen on {addr}")
    server.start()
    return server, port


def describe_networks(nets: Iterable[Network]) -> str:
    return ",".join(str(n) for n in nets)
