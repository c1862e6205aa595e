"""How the poller reaches agents: gRPC channel options and credentials, and a failed call in
words a person understands.

Domain code: no Flask. The poller imports it; so do the tests and benchmarks that build their own
channels.
"""

from __future__ import annotations

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
