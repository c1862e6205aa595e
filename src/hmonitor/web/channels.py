"""How the poller reaches agents: gRPC channel options and credentials, and a failed call in
words a person understands.

Domain code: no Flask. The poller imports it; so do the tests and benchmarks that build their own
channels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from hmonitor.web.settings import Settings

__all__ = [
    "ChannelFactory",
    "ChannelOptions",
    "channel_options",
    "credentials_from_settings",
    "default_channel_factory",
    "describe_rpc_error",
]

ChannelOptions = Sequence[tuple[str, Any]]
#: (address, credentials or None, channel options) -> a grpc.aio channel; called on the poller's
#: event-loop thread, once per host (tests and benchmarks wrap it to count channels).
ChannelFactory = Callable[[str, "grpc.ChannelCredentials | None", ChannelOptions], grpc.aio.Channel]

# The answer of an agent with thousands of processes must still fit (gRPC's default is 4 MiB);
# what the dashboard keeps of it is bounded afterwards (bounds.py).
_MAX_MESSAGE = 64 * 1024 * 1024


def default_channel_factory(
    address: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, credentials, options=list(options))


def channel_options(interval: float, server_name: str | None = None) -> list[tuple[str, Any]]:
    """Channel arguments for polling an agent every `interval` seconds."""
    # After a failed connection gRPC waits (backing off up to 120 s) before trying again, and calls
    # in between fail at once; capping the backoff below the interval lets every round retry, so a
    # restarted agent shows up again on the next round.
    backoff_ms = int(min(max(interval * 800, 100), 10_000))
    options: list[tuple[str, Any]] = [
        # Agents are on the lab's network: an http_proxy set for the web must not capture them.
        ("grpc.enable_http_proxy", 0),
        ("grpc.initial_reconnect_backoff_ms", min(backoff_ms, 1000)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def credentials_from_settings(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS (or mutual TLS) credentials for reaching agents, or None for plaintext."""
    if not settings.tls:
        return None
    root = settings.tls_ca.read_bytes() if settings.tls_ca else None
    key = settings.tls_key.read_bytes() if settings.tls_key else None
    cert = settings.tls_cert.read_bytes() if settings.tls_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=cert
    )



# --- errors in words ------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def describe_rpc_error(
    code: grpc.StatusCode, details: str | None, *, timeout: float, connected: bool | None = None
) -> str:
    """A failed GetInfo call, in words a person understands.

    `connected` is whether the channel had a working connection when the deadline passed (None:
    unknown); it tells a stuck agent apart from a host where no connection could be set up.
    """
    text = (details or "").strip()
    low = text.lower()
    # An HTTP/2 server that is not gRPC (a web server, a proxy) answers with a plain HTTP status.
    status = re.search(r"received http2 header with status: (\d+)", low)
    if status:
        return f"not a gRPC server (it answered HTTP status {status.group(1)})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        base = f"no answer within {_seconds(timeout)} s"
        if connected is True:
            return f"{base} (connected, but the agent did not reply: stuck or overloaded)"
        if connected is False:
            return f"{base} (no connection could be set up: host down, port filtered, or not gRPC)"
        return base
    if code == grpc.StatusCode.PERMISSION_DENIED:
        hint = "add this dashboard's address to the agent's GOHM_ALLOW"
        more = f"; the agent says: {text}" if text and "allow" not in low else ""
        return f"refused by the agent's allow-list ({hint}{more})"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "agent token rejected (agent_token in settings.py does not match the agent's)"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "a gRPC server, but not an hmonitor agent (no gpu.HostMonitor/GetInfo)"
    if code == grpc.StatusCode.CANCELLED:
        return "call cancelled (the dashboard is stopping or the host was removed)"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in low:
        return f"the agent's answer is too large ({text})"
    if code == grpc.StatusCode.UNAVAILABLE:
        return _describe_unavailable(text, low)
    return f"{code.name.lower()}: {text}" if text else code.name.lower()


def _describe_unavailable(text: str, low: str) -> str:
    if "connection refused" in low:
        return "connection refused (no agent listening on that port?)"
    if "resolv" in low or "domain name not found" in low or "dns" in low:
        return "cannot resolve the host name (check the address in settings.py)"
    if "failed parsing http/2" in low or "http/1" in low:
        return "not a gRPC server (it answered, but not in HTTP/2: a web server or other program?)"
    if "hostname verification" in low:
        return (
            "TLS: the agent's certificate is for a different name "
            "(set tls_server_name in settings.py)"
        )
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return "TLS: the agent's certificate is not signed by tls_ca"
    if "wrong_version_number" in low:
        return "TLS handshake failed: the agent does not speak TLS (remove tls_* from settings.py?)"
    if "handshake" in low or "ssl" in low or "tls" in low:
        return f"TLS handshake failed: {_last_error(text)}"
    if "socket closed" in low or "connection reset" in low or "end of tcp stream" in low:
        return (
            "the agent closed the connection at once "
            "(it may want TLS or a client certificate, or refuse this address)"
        )
    if "no route to host" in low or "unreachable" in low:
        return "host unreachable (no network route to it)"
    if "timed out" in low or "timeout" in low:
        return "cannot connect (connection timed out)"
    return f"cannot connect: {_last_error(text)}" if text else "cannot connect"


def _last_error(text: str) -> str:
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:9203: <reason>"
    tail = text.rpartition("last error:")[2].strip() or text
    return re.sub(r"^[A-Z_]+: (?:ipv[46]:\S+: )?", "", tail)
