"""A failed call to an agent in words a person understands: what the dashboard's poller shows
on a host's panel, and what hmonitor-ctl says in direct-agent mode, each with its own advice on
what to change where.

Like ``hmonitor.wire``, it imports neither program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

__all__ = ["CTL", "DASHBOARD", "Advice", "describe_rpc_error"]


@dataclass(frozen=True)
class Advice:
    """Where the fix lies, for the one who called."""

    client: str  # "this dashboard": whose address the allow-list must admit
    token: str  # what to set when the agent rejects the token
    config: str  # where the agent's address is written
    server_name: str  # what to set when the certificate is for another name
    ca: str  # the CA the agent's certificate must be signed by
    no_tls: str  # what to remove when the agent does not speak TLS


DASHBOARD = Advice(
    client="this dashboard", token="agent_token in settings.py does not match the agent's",
    config="settings.py", server_name="set tls_server_name in settings.py", ca="tls_ca",
    no_tls="remove tls_* from settings.py?")
CTL = Advice(
    client="this machine", token="set HMONITOR_AGENT_TOKEN to the agent's GOHM_TOKEN",
    config="--agent", server_name="connect by the name in the agent's certificate",
    ca="the tls_ca of the ctl config", no_tls="remove tls_ca from the ctl config?")


def _seconds(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def describe_rpc_error(
    code: grpc.StatusCode, details: str | None, *, timeout: float, connected: bool | None = None,
    advice: Advice = DASHBOARD,
) -> str:
    """A failed GetInfo call, in words a person understands, with ``advice`` for what to change
    where.

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
        hint = f"add {advice.client}'s address to the agent's GOHM_ALLOW"
        more = f"; the agent says: {text}" if text and "allow" not in low else ""
        return f"refused by the agent's allow-list ({hint}{more})"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"agent token rejected ({advice.token})"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "a gRPC server, but not an hmonitor agent (no gpu.HostMonitor/GetInfo)"
    if code == grpc.StatusCode.CANCELLED:
        return f"call cancelled ({advice.client} is stopping or the host was removed)"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in low:
        return f"the agent's answer is too large ({text})"
    if code == grpc.StatusCode.UNAVAILABLE:
        return _describe_unavailable(text, low, advice)
    return f"{code.name.lower()}: {text}" if text else code.name.lower()


def _describe_unavailable(text: str, low: str, advice: Advice) -> str:
    if "connection refused" in low:
        return "connection refused (no agent listening on that port?)"
    if "resolv" in low or "domain name not found" in low or "dns" in low:
        return f"cannot resolve the host name (check the address in {advice.config})"
    if "failed parsing http/2" in low or "http/1" in low:
        return "not a gRPC server (it answered, but not in HTTP/2: a web server or other program?)"
    if "hostname verification" in low:
        return (
            "TLS: the agent's certificate is for a different name "
            f"({advice.server_name})"
        )
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return f"TLS: the agent's certificate is not signed by {advice.ca}"
    if "wrong_version_number" in low:
        return f"TLS handshake failed: the agent does not speak TLS ({advice.no_tls})"
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
