"""Owner (real uid), executable name and facts (command line, start time, container, Slurm
job) of a process, read from /proc."""

from __future__ import annotations

import codecs
import fcntl
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from hmonitor.agent.sources.cgroups import EMPTY, CgroupFacts, parse_cgroup
from hmonitor.agent.sources.containers import ContainerNames
from hmonitor.agent.sources.procfacts import ContainerRef, ProcFacts

log = logging.getLogger(__name__)

# The kernel keeps 15 bytes of the command name (TASK_COMM_LEN - 1).
_COMM_LEN = 15
_UID_MAX = (1 << 32) - 1  # uid_t is unsigned 32-bit
_STAT_MAX = 4096  # /proc/<pid>/stat: 52 numbers and a 15-byte comm
_CGROUP_MAX = 64 * 1024
_UID_MAP_MAX = 4096
_STARTTIME = 19  # field 22 of stat, counted from field 3 (the first after the comm)
_CMDLINE_SLACK = 4096
_NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4), linux/nsfs.h
_CUT = "\u2026"  # marks a command line cut at cmdline_max bytes


@dataclass(frozen=True)
class ProcOwner:
    uid: int
    name: str


def _unescape_comm(raw: bytes) -> bytes:
    # /proc/<pid>/status escapes "\n" and "\\" in Name: (seq_escape_str with only="\n\\").
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 2] == b"\\n":
            out += b"\n"
            i += 2
        elif raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _uid(field: bytes) -> int:
    # The kernel writes a plain decimal uid_t; int() alone would also take "+5", "5_0", "-1".
    if not (field.isdigit() and len(field) <= 10):
        raise ValueError(f"bad uid {field!r}")
    uid = int(field)
    if uid > _UID_MAX:
        raise ValueError(f"uid {uid} out of range")
    return uid


def _decode(raw: bytes) -> str:
    # "replace", not "surrogateescape": the name goes into a protobuf string, which must be UTF-8.
    return raw.decode("utf-8", errors="replace")


def _read(path: str, limit: int) -> bytes:
    # os.read, not open(): half the cost, and stat is read for every GPU process each round.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_once(path: str, limit: int) -> bytes:
    # One read: a seq_file such as /proc/<pid>/stat hands over all it has in the first.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _start_ticks(stat: bytes) -> int:
    # The comm in parentheses may hold ")" and spaces: the fields start after the last ")".
    ticks = stat[stat.rindex(b")") + 1 :].split(None, _STARTTIME + 1)[_STARTTIME]
    if not (ticks.isdigit() and len(ticks) <= 20):
        raise ValueError(f"bad starttime {ticks!r}")
    return int(ticks)


def _btime(text: bytes) -> int:
    for line in text.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"btime":
            value = value.strip()
            if value.isdigit() and len(value) <= 20:
                return int(value)
    raise ValueError("no btime")


def _cmdline(raw: bytes, limit: int) -> str:
    """NUL-separated arguments as one line: "python train.py --lr 0.1"."""
    raw = raw.rstrip(b"\0")  # the terminating NUL (and padding left by setproctitle)
    cut = len(raw) > limit
    raw = raw[:limit].replace(b"\0", b" ")
    if not cut:
        return _decode(raw)
    # Keep a character cut in half out of the text, rather than a replacement character.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=False)
    return text + _CUT


def _namespace_owner(uid_map: bytes) -> int | None:
    """The host uid that uid 0 inside a user namespace maps to; None in the initial namespace
    ("0 0 4294967295"). A map without uid 0 (``unshare --map-current-user``): its first line's
    host uid, that of the user who made it."""
    first: int | None = None
    for line in uid_map.split(b"\n"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            return None
        inside, outside, count = (_uid(f) for f in fields)
        if (inside, outside, count) == (0, 0, _UID_MAX):
            return None
        if first is None:
            first = outside
        if inside == 0 and count > 0:
            return outside
    return first


def _ns_creator(ns_path: str, fallback: int) -> int:
    """The uid that created a (non-initial) user namespace, by ioctl(NS_GET_OWNER_UID); opening
    the namespace needs ptrace access to the process, so ``fallback`` when that is denied."""
    try:
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return fallback
    try:
        out = fcntl.ioctl(fd, _NS_GET_OWNER_UID, b"\0" * 4)
        uid = int.from_bytes(out, sys.byteorder)
        return uid if uid < _UID_MAX else fallback  # overflowuid: no mapping for the owner
    except OSError:
        return fallback
    finally:
        os.close(fd)


@dataclass
class _Cached:
    ticks: int  # start time in clock ticks: a different value means the pid was reused
    read_at: float
    cmdline_max: int  # what the command line was read with; 0: not read
    facts: ProcFacts


class ProcReader:
    """Reads process owners and facts under a proc root (tests pass a fake tree).

    facts() caches each process's command line and cgroup facts per (pid, start time) and reads
    them again after ``refresh`` seconds (a process may be moved, e.g. adopted into a Slurm
    job); the cache keeps the ``cache_cap`` processes looked up most recently."""

    def __init__(
        self,
        proc_root: str | os.PathLike[str] = "/proc",
        *,
        containers: ContainerNames | None = None,
        user_name: Callable[[int], str] | None = None,
        refresh: float = 60.0,
        cache_cap: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = os.fspath(proc_root)
        self._containers = containers if containers is not None else ContainerNames()
        self._user_name = user_name
        self._refresh = refresh
        self._cache_cap = cache_cap
        self._clock = clock
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._boot: int | None = None  # btime: fixed while the host is up
        self._lock = threading.Lock()  # the caches, should two collections ever overlap
        try:
            self._hz = os.sysconf("SC_CLK_TCK")
        except (ValueError, OSError):
            self._hz = 100  # USER_HZ on every Linux architecture

    def owner(self, pid: int) -> ProcOwner | None:
        """Real uid and executable basename, or None when the process is gone or unreadable."""
        if pid <= 0:
            return None
        base = os.path.join(self._root, str(pid))
        try:
            with open(os.path.join(base, "status"), "rb") as f:
                status = f.read()
            comm: bytes | None = None
            uid: int | None = None
            # Lines end at "\n" only: the kernel escapes "\n" in Name but not "\r", so a process
            # named "x\rUid:\t0" would pose as root to bytes.splitlines().
            for line in status.split(b"\n"):
                key, _, value = line.partition(b":")
                if key == b"Name" and comm is None:
                    comm = _unescape_comm(value.removeprefix(b"\t"))
                elif key == b"Uid" and uid is None:
                    uid = _uid(value.split()[0])  # real, effective, saved, filesystem
                if comm is not None and uid is not None:
                    break
            if comm is None or uid is None:
                log.debug("pid %d: no Name/Uid in %s/status", pid, base)
                return None
            name = comm
            if len(comm) >= _COMM_LEN:
                # comm may be truncated; argv[0]'s basename gives the full name when it agrees.
                with open(f"{base}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
                extended = os.path.basename(argv0)
                if extended.startswith(comm):
                    name = extended
        except (FileNotFoundError, ProcessLookupError):
            return None  # exited after NVML listed it
        except (OSError, ValueError, IndexError) as exc:
            log.debug("pid %d: cannot read %s: %s", pid, base, exc)
            return None
        return ProcOwner(uid=uid, name=_decode(name))

    def facts(self, pid: int, *, cmdline: bool = True, cmdline_max: int = 4096) -> ProcFacts | None:
        """Command line, start time, container and Slurm job of a process; None when it is gone.

        A file that cannot be read (hidepid, permissions) leaves its fact empty. With
        ``cmdline=False`` the command line is not read at all. At most ``cmdline_max`` bytes of
        the command line are kept, "…" marking a cut. Thread-safe; never raises."""
        if pid <= 0:
            return None
        with self._lock:
            return self._facts(pid, cmdline and cmdline_max > 0, cmdline_max)

    def _facts(self, pid: int, cmdline: bool, cmdline_max: int) -> ProcFacts | None:
        base = f"{self._root}/{pid}"
        ticks: int | None = None
        try:
            ticks = _start_ticks(_read_once(f"{base}/stat", _STAT_MAX))
        except (FileNotFoundError, ProcessLookupError):
            return None
        except (OSError, ValueError, IndexError) as exc:
            log.debug("pid %d: no start time: %s", pid, exc)
        limit = cmdline_max if cmdline else 0
        now = self._clock()
        cached = self._cache.get(pid)
        if (
            cached is None
            or ticks is None
            or cached.ticks != ticks
            or cached.cmdline_max != limit
            or now - cached.read_at > self._refresh
        ):
            read = self._read_facts(base, pid, limit)
            if read is None:
                self._cache.pop(pid, None)
                return None
            text, cgroup, container = read
            facts = ProcFacts(text, self._start_time(ticks), container, cgroup.job)
            cached = _Cached(ticks if ticks is not None else -1, now, limit, facts)
            if ticks is not None:  # without a start time, pid reuse could not be told
                self._cache[pid] = cached
                while len(self._cache) > self._cache_cap:
                    self._cache.popitem(last=False)
        elif ticks is not None:
            self._cache.move_to_end(pid)  # recently used: the last to be dropped
        return cached.facts

    def _start_time(self, ticks: int | None) -> int:
        if ticks is None:
            return 0
        if self._boot is None:
            try:
                self._boot = _btime(_read(os.path.join(self._root, "stat"), 64 * 1024))
            except (OSError, ValueError) as exc:
                log.debug("no btime in %s/stat: %s", self._root, exc)
                return 0
        return self._boot + ticks // self._hz

    def _read_facts(
        self, base: str, pid: int, cmdline_max: int
    ) -> tuple[str, CgroupFacts, ContainerRef | None] | None:
        """The slow part, cached: command line, cgroup, container name and owner."""
        text = ""
        cgroup = EMPTY
        try:
            if cmdline_max:
                # Read past the limit: NULs there are padding, anything else means a cut.
                raw = _read(f"{base}/cmdline", cmdline_max + _CMDLINE_SLACK)
                text = _cmdline(raw, cmdline_max)
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError as exc:
            log.debug("pid %d: no cmdline: %s", pid, exc)
        try:
            cgroup = parse_cgroup(_read(f"{base}/cgroup", _CGROUP_MAX))
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError as exc:
            log.debug("pid %d: no cgroup: %s", pid, exc)
        container = cgroup.container
        if container is not None:
            container = self._resolve(base, pid, container)
        return text, cgroup, container

    def _resolve(self, base: str, pid: int, ref: ContainerRef) -> ContainerRef:
        """Add the rootless owner and the name to a container found in the cgroup path."""
        host_uid = ref.host_uid  # from user-NNNN.slice: set by root's systemd, not the user
        if host_uid is None:
            try:
                host_uid = _namespace_owner(_read(f"{base}/uid_map", _UID_MAP_MAX))
            except (OSError, ValueError) as exc:
                log.debug("pid %d: no uid_map: %s", pid, exc)
            if host_uid is not None:
                # Who made the namespace, where we may ask (root, or the same user): root for
                # LXD, Kubernetes and userns-remap containers, whose uid 0 maps to a range.
                host_uid = _ns_creator(f"{base}/ns/user", host_uid)
        ref = replace(ref, host_uid=host_uid)
        name = self._containers.name(ref)
        host_user = ""
        if host_uid is not None and self._user_name is not None:
            try:
                host_user = self._user_name(host_uid)
            except Exception as exc:  # noqa: BLE001 - a caller's lookup must not lose the facts
                log.debug("uid %d: no user name: %s", host_uid, exc)
        return replace(ref, name=name, host_user=host_user)
