"""Hostname and primary IPv4: default route, metrics, fallbacks, the prefix rule."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from hmonitor.agent.sources import netinfo
from hmonitor.agent.sources.netinfo import default_route_interface, hostname, primary_ipv4

ROUTES = Path(__file__).resolve().parents[1] / "fixtures" / "route"

ADDRS = {
    "lo": ["127.0.0.1"],
    "docker0": ["172.17.0.1"],
    "eth0": ["192.168.1.20"],
    "eth1": ["10.10.0.5", "10.10.0.6"],
    "ib0": ["10.0.0.7"],
    "wlan0": ["192.168.1.30"],
}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("default.txt", "eth0"),
        ("metrics.txt", "eth1"),  # three default routes: the lowest metric wins
        ("no_default.txt", None),
        ("down_and_malformed.txt", "eth0"),  # eth9's default route is not up
        ("absent.txt", None),
    ],
)
def test_default_route_interface(fixture: str, expected: str | None) -> None:
    assert default_route_interface(ROUTES / fixture) == expected


def test_primary_is_the_default_route_address() -> None:
    assert primary_ipv4(route_path=ROUTES / "default.txt", addrs=ADDRS) == "192.168.1.20"
    assert primary_ipv4(route_path=ROUTES / "metrics.txt", addrs=ADDRS) == "10.10.0.5"


def test_primary_without_default_route_is_first_non_loopback() -> None:
    assert primary_ipv4(route_path=ROUTES / "no_default.txt", addrs=ADDRS) == "172.17.0.1"
    # Default route on an interface with no IPv4 address: same fallback.
    assert (
        primary_ipv4(
            route_path=ROUTES / "default.txt",
            addrs={"lo": ["127.0.0.1"], "eth0": [], "ib0": ["10.0.0.7"]},
        )
        == "10.0.0.7"
    )


def test_primary_with_only_loopback_is_empty() -> None:
    assert primary_ipv4(route_path=ROUTES / "no_default.txt", addrs={"lo": ["127.0.0.1"]}) == ""
    assert primary_ipv4(route_path=ROUTES / "no_default.txt", addrs={}) == ""


def test_prefix_takes_the_last_match_over_all_interfaces() -> None:
    # The spec's agent kept overwriting its answer with each "10." address, so the last wins.
    route = ROUTES / "default.txt"
    assert primary_ipv4("10.", route_path=route, addrs=ADDRS) == "10.0.0.7"
    assert primary_ipv4("10.10.", route_path=route, addrs=ADDRS) == "10.10.0.6"
    assert primary_ipv4("192.168.", route_path=route, addrs=ADDRS) == "192.168.1.30"
    assert primary_ipv4("172.31.", route_path=route, addrs=ADDRS) == ""
    assert primary_ipv4("", route_path=route, addrs=ADDRS) == "192.168.1.20"  # empty: unset


def test_primary_on_this_host_is_one_of_its_addresses() -> None:
    found = primary_ipv4()
    ours = {
        a.address
        for lst in psutil.net_if_addrs().values()
        for a in lst
        if a.family == socket.AF_INET
    }
    assert found == "" or found in ours


def test_hostname_is_the_systems() -> None:
    assert hostname() == socket.gethostname()


def test_hostname_falls_back_to_kernel_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing() -> str:
        raise OSError("no name")

    kernel = tmp_path / "hostname"
    kernel.write_text("gpu-node-07\n")
    monkeypatch.setattr(netinfo, "_KERNEL_HOSTNAME", str(kernel))
    monkeypatch.setattr(socket, "gethostname", failing)
    assert hostname() == "gpu-node-07"
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert hostname() == "gpu-node-07"
    kernel.unlink()
    assert hostname() == "localhost"
