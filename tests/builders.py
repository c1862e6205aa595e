"""Test data, built one way: processes, GPUs, hosts as an agent reports them (protobuf), the
poller's ``HostState`` of a host up or down, clusters, and a fake poller.

Used by tests/unit, tests/integration, tests/browser and bench/ (which put tests/ on sys.path).
No Flask here: bench/_agents_farm.py imports it in a process that only serves gRPC.

Units: arguments named ``*_gib`` are GiB as floats (``mem_gib=9.5``); the messages hold bytes,
as on the wire. ``util`` and ``fan`` are percent, ``temp`` °C, times are Unix seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from hmonitor._pb import hm_pb2
from hmonitor.web.hoststate import HostState
from hmonitor.wire import EXPIRATION_NEVER, lost_gpu_name

GIB = 1 << 30
MIB = 1 << 20
NOW = time.time()  # at import: what up() and down() stamp unless told otherwise
FAR_FUTURE = 4102444800  # 2100-01-01, an expiration date that is neither soon nor past
A100 = "NVIDIA A100-SXM4-80GB"
H200 = "NVIDIA H200"
LITTLE_GIB = 0.5  # what a GPU uses beyond its processes' memory (driver, context)


def proc(user: str = "alice", *, pid: int = 100, uid: int = 1000, mem_gib: float = 4.0,
         expiration: int = EXPIRATION_NEVER, basename: str = "python",
         util: int = 30, job: int | None = None) -> hm_pb2.ProcInfo:
    """A process on a GPU: ``mem_gib`` GiB of GPU memory; ``expiration`` as on the wire
    (0 unknown, 1 never, else Unix seconds); ``user`` "" for an owner without a name; ``job``
    the id of the Slurm job it belongs to (step "batch"), None for none."""
    return hm_pb2.ProcInfo(pid=pid, uid=uid, username=user, basename=basename,
                           expiration=expiration, utilization=util, mem=int(mem_gib * GIB),
                           job=None if job is None else hm_pb2.SlurmJob(id=job, step="batch"))


def gpu(index: int, *procs: hm_pb2.ProcInfo, util: int = 0, used_gib: float | None = None,
        total_gib: float = 80.0, name: str = A100, temp: int = 40,
        fan: int = 0) -> hm_pb2.GPUInfo:
    """GPU ``index`` running ``procs``. Memory in GiB: ``used_gib`` None is the processes'
    memory plus ``LITTLE_GIB`` (an idle GPU: 0.5 of 80 GiB, free by the dashboard's rule)."""
    used = (sum(p.mem for p in procs) + int(LITTLE_GIB * GIB) if used_gib is None
            else int(used_gib * GIB))
    return hm_pb2.GPUInfo(id=index, mem_used=used, mem_total=int(total_gib * GIB),
                          utilization=util, temp=temp, name=name, fanspeed=fan, procs=procs)


def lost_gpu(index: int, reason: str = "Unknown Error") -> hm_pb2.GPUInfo:
    """A GPU the driver lost, as the agent reports it: only its index and "GPU lost: reason"."""
    return hm_pb2.GPUInfo(id=index, name=lost_gpu_name(reason))


def host_info(name: str, gpus: Iterable[hm_pb2.GPUInfo] = (), *, ip: str = "10.0.0.1",
              hostname: str | None = None,
              disks: Iterable[tuple[str, float] | hm_pb2.DiskInfo] = (("/", 0.5),),
              err: str = "") -> hm_pb2.HostInfo:
    """A host's snapshot: ``id`` is ``name``, ``hostname`` by default "<name>.lab". ``disks``:
    (mount, fill) pairs, fill 0..1 of a 1000 GiB disk, or DiskInfo messages taken as they are
    (exact bytes). ``err`` is a host-level error (e.g. NVML missing)."""
    return hm_pb2.HostInfo(
        id=name, ip=ip, hostname=f"{name}.lab" if hostname is None else hostname, err=err,
        gpus=list(gpus),
        disks=[d if isinstance(d, hm_pb2.DiskInfo) else
               hm_pb2.DiskInfo(device=f"/dev/sd{i}", mount=d[0], total=1000 * GIB,
                               used=int(1000 * GIB * d[1]))
               for i, d in enumerate(disks)],
    )


def up(name: str, info: hm_pb2.HostInfo, *, rtt_ms: float = 1.0,
       at: float | None = None) -> HostState:
    """A host that answered ``info`` at ``at`` (default ``NOW``), at address "<name>:9203"; an
    ``info.err`` shows as the error "agent: ...", as the poller reports it."""
    t = NOW if at is None else at
    return HostState(name=name, address=f"{name}:9203", up=True,
                     error=info.err and f"agent: {info.err}", last_seen=t, rtt_ms=rtt_ms,
                     info=info, polled_at=t)


def down(name: str, error: str = "connection refused", *, last_seen: float | None = None,
         info: hm_pb2.HostInfo | None = None, at: float | None = None) -> HostState:
    """A host whose last call at ``at`` (default ``NOW``) failed with ``error``; ``last_seen``
    None is never seen; ``info`` the last good snapshot the poller keeps, if any."""
    return HostState(name=name, address=f"{name}:9203", up=False, error=error,
                     last_seen=last_seen, rtt_ms=None, info=info,
                     polled_at=NOW if at is None else at)


def cluster(n_hosts: int = 100, n_gpus: int = 8, n_procs: int = 4, *, at: float | None = None,
            round_no: int | None = None) -> list[HostState]:
    """A big, busy cluster, all up: hosts gpu000, gpu001, ... with H200s (141 GiB, 40 used),
    each shared by ``n_procs`` processes of 9.5 GiB of different users, three disks (/scratch
    93 % full). Every GPU at 85 %; with ``round_no`` k, utilization moves with k, so a series
    of rounds draws lines."""
    states = []
    for h in range(n_hosts):
        name = f"gpu{h:03d}"
        gpus = [
            gpu(g, *(proc(f"user{(h + g + p) % 40}", pid=10_000 + g * 10 + p, uid=2000 + p,
                          mem_gib=9.5, expiration=FAR_FUTURE) for p in range(n_procs)),
                util=85 if round_no is None else (h * 7 + g * 13 + round_no * 5) % 100,
                used_gib=40, total_gib=141, name=H200, temp=61)
            for g in range(n_gpus)
        ]
        states.append(up(name, host_info(name, gpus, ip=f"10.0.{h // 250}.{h % 250}",
                                         disks=(("/", 0.41), ("/data", 0.77),
                                                ("/scratch", 0.93))), at=at))
    return states


_USERS = [f"student{i:02d}" for i in range(1, 25)] + ["alice", "bob", "lab-admin"]
_COMMANDS = ["python", "python3", "torchrun", "jupyter-kernel", "ollama", "vllm"]


def busy_host(index: int, *, now: int = 1_767_225_600) -> hm_pb2.HostInfo:
    """A busy 8 x H200 host as an agent reports it: 4 processes per GPU, 2 disks.

    Deterministic in ``index`` (and ``now``), so every benchmark run, and its baseline, sees
    the same data; keep its output byte for byte, or benchmark numbers stop being comparable.
    """
    gpus = []
    for g in range(8):
        procs = []
        for p in range(4):
            k = index * 32 + g * 4 + p
            # Expiry as the agent fills it: 0 unknown, 1 never, else Unix seconds (some past).
            expiration = (0, 1, now + (k % 400) * 86400, now - 5 * 86400)[k % 4]
            procs.append(proc(_USERS[k % len(_USERS)], pid=10_000 + k * 13 % 3_000_000,
                              uid=1000 + k % len(_USERS), mem_gib=2 + (k * 7) % 30,
                              expiration=expiration, basename=_COMMANDS[k % len(_COMMANDS)],
                              util=(k * 37) % 101))
        # Whole GiB and 512 MiB: exact in GiB floats, so the bytes are exactly as before.
        used_gib = sum(p.mem for p in procs) / GIB + 0.5
        gpus.append(gpu(g, *procs, util=(index * 11 + g * 29) % 101, used_gib=used_gib,
                        total_gib=143_771 / 1024, name=H200, temp=30 + (index + g * 7) % 55,
                        fan=0))  # datacenter GPUs have no fan
    disks = [
        hm_pb2.DiskInfo(device="/dev/nvme0n1p2", used=(300 + index % 500) * GIB,
                        total=1_800 * GIB, mount="/"),
        hm_pb2.DiskInfo(device="/dev/md0", used=(20_000 + index * 97 % 10_000) * GIB,
                        total=30_000 * GIB, mount="/data"),
    ]
    return host_info(f"gpu-node-{index:03d}", gpus, ip=f"10.20.{index // 250}.{index % 250 + 1}",
                     hostname=f"gpu-node-{index:03d}.lab.example.org", disks=disks)


class FakePoller:
    """The poller's interface over a fixed list of states (no agents); records the servers
    handed to it, and whether it was started and stopped."""

    def __init__(self, states: Iterable[HostState] = ()) -> None:
        self.states = list(states)
        self.servers: list[dict[str, str]] = []
        self.started = False
        self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def hosts(self) -> list[HostState]:
        return list(self.states)

    def host(self, name: str) -> HostState | None:
        return next((h for h in self.states if h.name == name), None)

    def set_servers(self, servers: Mapping[str, str]) -> None:
        self.servers.append(dict(servers))
