"""Host identity: hostname and the primary IPv4 address."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from collections.abc import Mapping

import psutil

log = logging.getLogger(__name__)

_KERNEL_HOSTNAME = "/proc/sys/kernel/hostname"
_RTF_UP = 0x0001
_FIELD_SEP = re.compile(r"[ \t]+")


def hostname() -> str:
    """This host's name; never empty."""
    try:
        name = socket.gethostname().strip()
    except OSError as exc:
        log.debug("gethostname failed: %s", exc)
        name = ""
    if name:
        return name
    try:
        with open(_KERNEL_HOSTNAME, encoding="utf-8", errors="replace") as f:
            name = f.read().strip()
    except OSError as exc:
        log.debug("cannot read %s: %s", _KERNEL_HOSTNAME, exc)
    return name or "localhost"


def default_route_interface(route_path: str | os.PathLike[str] = "/proc/net/route") -> str | None:
    """Interface of the IPv4 default route that is up, lowest metric first; None if none."""
    try:
        with open(route_path, encoding="utf-8", errors="replace") as f:
            # "\n" and tab/space only, as the kernel writes it: str.splitlines() and str.split()
            # would also cut an interface name at U+0085 or U+2028 (names may hold any
            # non-space byte but "/" and ":").
            lines = f.read().split("\n")
    except OSError as exc:
        log.debug("cannot read %s: %s", os.fspath(route_path), exc)
        return None
    best: tuple[int, str] | None = None
    # Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    for line in lines[1:]:
        fields = _FIELD_SEP.split(line.strip(" \t"))
        if len(fields) < 8:
            continue
        iface, destination, flags, metric, mask = (
            fields[0],
            fields[1],
            fields[3],
            fields[6],
            fields[7],
        )
        try:
            if int(destination, 16) != 0 or int(mask, 16) != 0:
                continue
            if not int(flags, 16) & _RTF_UP:
                continue
            rank = int(metric)
        except ValueError:
            continue
        # Strict "<" keeps the first of equal metrics, as the kernel's lookup does.
        if best is None or rank < best[0]:
            best = (rank, iface)
    return best[1] if best else None


def _ipv4_addresses() -> dict[str, list[str]]:
    try:
        interfaces = psutil.net_if_addrs()
    except OSError as exc:
        log.warning("cannot list network interfaces: %s", exc)
        return {}
    return {
        name: [a.address for a in addrs if a.family == socket.AF_INET]
        for name, addrs in interfaces.items()
    }


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address).is_loopback
    except ValueError:
        return True  # not an IPv4 address: never a primary address


def primary_ipv4(
    prefix: str | None = None,
    *,
    route_path: str | os.PathLike[str] = "/proc/net/route",
    addrs: Mapping[str, list[str]] | None = None,
) -> str:
    """The host's primary IPv4 address, or "" when it has none.

    With ``prefix`` (``GOHM_IP_PREFIX``, the spec's ``10.`` rule; empty means unset) the last
    address over all interfaces that starts with it. Otherwise the address of the default
    route's interface, else the first non-loopback address.
    """
    if addrs is None:
        addrs = _ipv4_addresses()
    if prefix:
        matches = [a for lst in addrs.values() for a in lst if a.startswith(prefix)]
        return matches[-1] if matches else ""
    iface = default_route_interface(route_path)
    if iface is not None:
        for address in addrs.get(iface, []):
            if not _is_loopback(address):
                return address
    for lst in addrs.values():
        for address in lst:
            if not _is_loopback(address):
                return address
    return ""
