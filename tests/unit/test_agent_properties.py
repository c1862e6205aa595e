"""Property-based tests of every parser in the agent (hypothesis).

Each parser reads text another program wrote (the kernel, shadow tools, getent, an admin's
environment variable): it must never raise on anything it may be given, and what the writer
meant must come back out. Examples are capped so the whole file runs in a few seconds.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmonitor._pb import hm_pb2
from hmonitor.agent.server import AllowList, Network, admits, parse_allow, peer_address
from hmonitor.agent.sources.accounts import (
    EXPIRED_AT_EPOCH,
    NEVER,
    UNKNOWN,
    ShadowExpiry,
    parse_shadow,
)
from hmonitor.agent.sources.disks import DiskSource, MountEntry, parse_mounts
from hmonitor.agent.sources.netinfo import default_route_interface, primary_ipv4
from hmonitor.agent.sources.procs import ProcOwner, ProcReader
from hmonitor.agent.sources.users import name_from_passwd
from hmonitor.wire import encode_uid

DAY = 86400
UINT64_MAX = (1 << 64) - 1
UID_T_MAX = (1 << 32) - 1
FILES = settings(max_examples=25, deadline=None)  # examples that write files or start threads
PURE = settings(max_examples=50, deadline=None)

# Text as the agent reads files: UTF-8, undecodable bytes kept as surrogate escapes.
file_text = st.binary(max_size=400).map(lambda b: b.decode("utf-8", "surrogateescape"))
# One field of a colon-separated line: any text without the separator or a line break.
field_text = st.text(st.characters(exclude_characters=":\n", codec="utf-8"), max_size=12)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # Module-scoped: hypothesis runs many examples per test and function-scoped fixtures
    # would not be reset between them.
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# --- /etc/shadow -------------------------------------------------------------------------


def _fits_expiration(value: int) -> bool:
    hm_pb2.ProcInfo(expiration=value)  # raises ValueError when the uint64 would overflow
    return value in (NEVER, EXPIRED_AT_EPOCH) or (value % DAY == 0 and value >= DAY)


@PURE
@given(file_text)
def test_shadow_never_raises_and_every_expiry_fits_the_wire(text: str) -> None:
    for name, expiration in parse_shadow(text).items():
        assert name and name[0] not in "+-#" and ":" not in name and "\n" not in name
        assert _fits_expiration(expiration)


shadow_names = st.from_regex(r"[a-z_][a-z0-9_.-]{0,15}", fullmatch=True) | st.text(
    st.characters(exclude_characters=":\n+-#", exclude_categories=["Z", "Cc"]),
    min_size=1,
    max_size=8,
)
# (field as written, expected expiration or None when the line must be skipped)
expiry_fields = st.one_of(
    st.just(("", NEVER)),
    st.just(("-1", NEVER)),
    st.just(("0", EXPIRED_AT_EPOCH)),
    st.integers(1, UINT64_MAX // DAY).map(lambda d: (str(d), d * DAY)),
    st.integers(1, 99999).map(lambda d: ("000" + str(d), d * DAY)),  # leading zeros: same day
    st.integers(UINT64_MAX // DAY + 1, 10**40).map(lambda d: (str(d), None)),  # overflows
    st.sampled_from([("x", None), ("1.5", None), ("-2", None), ("١٢", None)]),
)


@PURE
@given(
    st.lists(
        st.tuples(shadow_names, st.lists(field_text, min_size=6, max_size=6), expiry_fields),
        max_size=5,
    )
)
def test_shadow_lines_parse_back_to_their_fields(
    entries: list[tuple[str, list[str], tuple[str, int | None]]],
) -> None:
    lines: list[str] = []
    expected: dict[str, int] = {}
    for name, (pw, last, lo, hi, warn, inactive), (raw, expiration) in entries:
        lines.append(":".join([name, pw, last, lo, hi, warn, inactive, raw, ""]))
        if expiration is not None:
            expected.setdefault(name.strip(), expiration)  # getspnam(): the first entry wins
    assert parse_shadow("\n".join(lines) + "\n") == expected


@PURE
@given(st.integers(0, 10**6))
def test_shadow_expiry_maths(days: int) -> None:
    got = parse_shadow(f"u:!:19000:0:99999:7::{days}:\n")["u"]
    assert got == (days * DAY if days else EXPIRED_AT_EPOCH)
    assert got > 1  # never confused with "unknown" (0) or "never" (1)


@FILES
@given(st.binary(max_size=300))
def test_shadow_file_of_any_bytes(scratch: Path, raw: bytes) -> None:
    path = scratch / "shadow"
    path.write_bytes(raw)
    os.utime(path, ns=(0, len(raw) + 1))  # a new signature each time, so it is re-read
    shadow = ShadowExpiry(path)
    shadow.refresh()
    assert shadow.expiration("no such user\udcff") == UNKNOWN


# --- /proc/mounts --------------------------------------------------------------------------


def kernel_escape(raw: bytes) -> bytes:
    """How the kernel writes a mount field: space, tab, newline and backslash as \\ooo."""
    return b"".join(b"\\%03o" % c if c in b" \t\n\\" else bytes([c]) for c in raw)


mount_fields = st.binary(min_size=1, max_size=24).filter(lambda b: b"\0" not in b)


@PURE
@given(file_text)
def test_mounts_never_raise(text: str) -> None:
    for entry in parse_mounts(text):
        assert entry.device and entry.mount and entry.fstype
        assert not set(entry.fstype) & set(" \t\n")


@PURE
@given(
    st.lists(
        st.tuples(
            mount_fields.filter(lambda b: not b.startswith(b"#")),  # "#": an fstab comment
            mount_fields,
            st.sampled_from(["ext4", "xfs", "btrfs", "zfs", "fuse.sshfs"]),
        ),
        max_size=6,
    )
)
def test_mount_fields_round_trip_through_octal_escapes(
    mounts: list[tuple[bytes, bytes, str]],
) -> None:
    table = b"".join(
        kernel_escape(dev) + b" " + kernel_escape(mnt) + b" " + fs.encode() + b" rw 0 0\n"
        for dev, mnt, fs in mounts
    )
    # As DiskSource reads the file; the agent's paths are str as os.fsdecode makes them.
    parsed = parse_mounts(table.decode("utf-8", "surrogateescape"))
    assert parsed == [MountEntry(os.fsdecode(d), os.fsdecode(m), fs) for d, m, fs in mounts]


class Statvfs:
    def __init__(self, blocks: int, free: int, frsize: int) -> None:
        self.result = os.statvfs_result((frsize, frsize, blocks, free, free, 0, 0, 0, 0, 255))

    def __call__(self, _path: str) -> os.statvfs_result:
        return self.result


@FILES
@given(
    blocks=st.integers(0, 1 << 44),
    free=st.integers(0, 1 << 45),  # more free than total: seen on odd filesystems
    frsize=st.sampled_from([512, 1024, 4096, 65536]),
)
def test_disk_sizes_always_fit_the_wire(scratch: Path, blocks: int, free: int, frsize: int) -> None:
    mounts = scratch / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n")
    scan = DiskSource(mounts, statvfs=Statvfs(blocks, free, frsize)).read()
    (disk,) = scan.disks
    hm_pb2.DiskInfo(used=disk.used, total=disk.total)  # uint64: no negative, no overflow
    assert 0 <= disk.used <= disk.total == blocks * frsize


# --- /proc/<pid>/status ----------------------------------------------------------------------

PID = 4242


def write_proc(root: Path, status: bytes, cmdline: bytes | None = None) -> ProcReader:
    d = root / str(PID)
    d.mkdir(exist_ok=True)
    (d / "status").write_bytes(status)
    (d / "cmdline").unlink(missing_ok=True)
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)
    return ProcReader(root)


def escape_comm(comm: bytes) -> bytes:
    """How the kernel writes Name: only "\\n" and "\\\\" escaped."""
    return comm.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


@FILES
@given(st.binary(max_size=300), st.none() | st.binary(max_size=60))
def test_status_of_any_bytes(scratch: Path, status: bytes, cmdline: bytes | None) -> None:
    owner = write_proc(scratch, status, cmdline).owner(PID)
    if owner is not None:
        assert 0 <= owner.uid <= UID_T_MAX
        hm_pb2.ProcInfo(uid=encode_uid(owner.uid), basename=owner.name)  # fits the wire


# Any bytes but NUL (prctl(PR_SET_NAME) takes them), with the ones that trouble a parser
# (line breaks, the escape character, a forged "Uid:" line) drawn often.
comms = (
    st.lists(
        st.sampled_from([b"\r", b"\n", b"\\", b"\t", b":", b"Uid:\t0", b"\xff", b"\xc3\xa9"])
        | st.binary(min_size=1, max_size=3),
        min_size=1,
        max_size=6,
    )
    .map(lambda parts: b"".join(parts)[:14])
    .filter(lambda b: b"\0" not in b)
)


@FILES
@given(comms, st.integers(0, UID_T_MAX), st.integers(0, UID_T_MAX))
def test_status_round_trip(scratch: Path, comm: bytes, uid: int, euid: int) -> None:
    uids = b"Uid:\t%d\t%d\t%d\t%d\n" % (uid, euid, euid, euid)
    status = (
        b"Name:\t" + escape_comm(comm) + b"\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\n"
        b"Pid:\t42\nPPid:\t1\nTracerPid:\t0\n" + uids + b"Gid:\t0\t0\t0\t0\n"
    )
    owner = write_proc(scratch, status).owner(PID)
    assert owner == ProcOwner(uid=uid, name=comm.decode("utf-8", "replace"))


@FILES
@given(
    st.binary(min_size=15, max_size=15).filter(lambda b: b"\0" not in b and b"/" not in b),
    st.binary(max_size=20).filter(lambda b: b"\0" not in b and b"/" not in b),
)
def test_truncated_name_extends_only_from_an_agreeing_argv0(
    scratch: Path, comm: bytes, tail: bytes
) -> None:
    status = b"Name:\t" + escape_comm(comm) + b"\nUid:\t7\t7\t7\t7\n"
    cmdline = b"/opt/bin/" + comm + tail + b"\0--flag\0"
    assert write_proc(scratch, status, cmdline).owner(PID) == ProcOwner(
        7, (comm + tail).decode("utf-8", "replace")
    )
    other = b"/opt/bin/x" + tail + b"\0"  # setproctitle rewrote argv[0]: keep the kernel's name
    assert write_proc(scratch, status, other).owner(PID) == ProcOwner(
        7, comm.decode("utf-8", "replace")
    )


# --- getent passwd ------------------------------------------------------------------------------


@PURE
@given(st.binary(max_size=300), st.integers(-1, UID_T_MAX))
def test_passwd_output_of_any_bytes(output: bytes, uid: int) -> None:
    name = name_from_passwd(output, uid)
    assert name is None or (name and ":" not in name and "\n" not in name)


@PURE
@given(
    st.lists(
        st.tuples(
            field_text.filter(bool), st.integers(0, UID_T_MAX), field_text, field_text, field_text
        ),
        max_size=5,
    ),
    st.integers(0, UID_T_MAX),
)
def test_passwd_lines_round_trip(
    entries: list[tuple[str, int, str, str, str]], wanted: int
) -> None:
    output = "".join(
        f"{name}:x:{uid}:100:{gecos}:{home}:{shell}\n" for name, uid, gecos, home, shell in entries
    ).encode()
    names = [name for name, uid, *_ in entries if uid == wanted]
    assert name_from_passwd(output, wanted) == (names[0] if names else None)


# --- /proc/net/route and addresses ------------------------------------------------------------

# Linux interface names: 1-15 bytes, none of them "/", ":" or (ASCII) whitespace.
ifnames = st.text(
    st.characters(exclude_characters="/: \t\n\r\x0b\x0c", exclude_categories=["Cs"]),
    min_size=1,
    max_size=5,
).filter(lambda s: len(s.encode()) <= 15)
ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"


@FILES
@given(st.binary(max_size=400))
def test_route_table_of_any_bytes(scratch: Path, raw: bytes) -> None:
    path = scratch / "route"
    path.write_bytes(raw)
    got = default_route_interface(path)
    assert got is None or isinstance(got, str)


@FILES
@given(
    st.lists(
        st.tuples(
            ifnames,
            st.sampled_from([0, 0x0002000A]),  # destination: default or 10.0.2.0
            st.sampled_from([0, 0x00FFFFFF]),  # mask
            st.sampled_from([0x0001, 0x0003, 0x0000]),  # flags: up, up|gateway, down
            st.integers(0, 1000),  # metric
        ),
        max_size=6,
    )
)
def test_route_table_picks_the_lowest_metric_default_route(
    scratch: Path, routes: list[tuple[str, int, int, int, int]]
) -> None:
    lines = [ROUTE_HEADER] + [
        f"{iface}\t{dest:08X}\t0102000A\t{flags:04X}\t0\t0\t{metric}\t{mask:08X}\t0\t0\t0"
        for iface, dest, mask, flags, metric in routes
    ]
    path = scratch / "route"
    path.write_text("\n".join(lines) + "\n")
    candidates = [(m, i) for i, d, k, f, m in routes if d == 0 and k == 0 and f & 1]
    best = min(candidates, key=lambda c: c[0], default=None)  # min() keeps the first of equals
    assert default_route_interface(path) == (best[1] if best else None)


ipv4s = st.ip_addresses(v=4).map(str)


@PURE
@given(st.dictionaries(ifnames, st.lists(ipv4s, max_size=3), max_size=3), st.text(max_size=3))
def test_primary_address_is_one_of_the_hosts(addrs: dict[str, list[str]], prefix: str) -> None:
    everything = [a for lst in addrs.values() for a in lst]
    got = primary_ipv4(prefix or None, route_path="/nonexistent", addrs=addrs)
    assert got == "" or got in everything
    if prefix:
        matching = [a for a in everything if a.startswith(prefix)]
        assert got == (matching[-1] if matching else "")  # the spec's rule: the last match
    elif got:
        assert not ipaddress.IPv4Address(got).is_loopback


# --- GOHM_ALLOW and gRPC peers ------------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn) -> Network:
    addr = draw(st.ip_addresses())
    prefix = draw(st.integers(0, addr.max_prefixlen))
    return ipaddress.ip_network(f"{addr}/{prefix}", strict=False)


@PURE
@given(st.text(max_size=60))
def test_allow_list_of_any_text(text: str) -> None:
    try:
        nets = parse_allow(text)
    except ValueError:
        return  # the documented error, shown as one line
    assert nets


@PURE
@given(st.lists(networks(), min_size=1, max_size=3), st.sampled_from([",", ", ", " ,\t", ",,"]))
def test_allow_list_round_trip(nets: list[Network], sep: str) -> None:
    assert parse_allow(sep.join(str(n) for n in nets)) == nets


def grpc_peer(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """A peer string as gRPC writes it."""
    if addr.version == 4:
        return f"ipv4:{addr}:{port}"
    return f"ipv6:{urllib.parse.quote(f'[{addr}]', safe=':')}:{port}"


@PURE
@given(st.text(max_size=60))
def test_peer_of_any_text(peer: str) -> None:
    got = peer_address(peer)
    assert got is None or isinstance(got, ipaddress.IPv4Address | ipaddress.IPv6Address)


@PURE
@given(st.ip_addresses(), st.integers(0, 65535))
def test_peer_round_trip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    assert peer_address(grpc_peer(addr, port)) == (mapped or addr)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.ip_addresses(v=4), st.lists(networks(), min_size=1, max_size=4))
def test_ipv4_client_is_judged_the_same_on_either_socket(
    client: ipaddress.IPv4Address, nets: list[Network]
) -> None:
    allow = AllowList(nets, log_every=1e9)
    on_ipv4 = allow.allows(grpc_peer(client, 5))
    on_dual_stack = allow.allows(grpc_peer(ipaddress.IPv6Address(f"::ffff:{client}"), 5))
    assert on_ipv4 == on_dual_stack
    mapped = ipaddress.IPv6Address(f"::ffff:{client}")
    assert on_ipv4 == any(client in n or mapped in n for n in nets)


@PURE
@given(st.ip_addresses())
def test_everyone_and_exactly_oneself(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    peer = grpc_peer(addr, 1)
    assert AllowList(parse_allow("::/0,0.0.0.0/0")).allows(peer)
    assert AllowList(parse_allow(str(addr))).allows(peer)
    assert admits(ipaddress.ip_network("::/0"), addr)
    if addr.version == 6 and addr.ipv4_mapped is None:
        assert not AllowList(parse_allow("0.0.0.0/0"), log_every=1e9).allows(peer)
