"""Caps on what the dashboard takes from one agent, applied by the poller before anything else
sees an answer (pages, API, history).

An agent is a program on a machine the dashboard does not control: a bug or a hostile user can
make it send a 50 MB GPU name or a million processes, which would otherwise be copied into every
page, every API answer and the history database. Every string and every list is cut to a size no
real host comes near, and what was cut is said in words, so the page can mark the host as
"truncated" and nobody mistakes a cut list for the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from hmonitor._pb import hm_pb2

__all__ = ["CUT_MARK", "LIMITS", "Limits", "bound_host_info", "bound_text"]

CUT_MARK = "…"  # ends every string that was cut


@dataclass(frozen=True)
class Limits:
    name: int = 128  # GPU model, user, process name, id, hostname, ip, device, versions
    path: int = 512  # a mount point; a container's name ("namespace/pod/container" on Kubernetes)
    cmdline: int = 4096  # a process's command line (the agent sends at most 4 KiB)
    error: int = 2000  # HostInfo.err: several sources' errors joined
    gpus: int = 64  # per host (the largest machines have 16)
    procs: int = 256  # per GPU; the ones using most memory are kept
    mig: int = 32  # MIG instances per GPU (an H200 has at most 7 GPU instances)
    disks: int = 128  # per host
    notes: int = 10  # "what was cut" lines kept per host


LIMITS = Limits()


def _cut(text: str, limit: int) -> str:
    return text[: limit - 1] + CUT_MARK


def bound_text(text: str, limit: int = LIMITS.error) -> str:
    """``text`` as is, or cut to ``limit`` characters ending in CUT_MARK."""
    return text if len(text) <= limit else _cut(text, limit)


def bound_host_info(
    info: hm_pb2.HostInfo, limits: Limits = LIMITS
) -> tuple[hm_pb2.HostInfo, tuple[str, ...]]:
    """``info`` within ``limits`` (the same object when nothing needed cutting), and what was cut.

    The common case, a host within every limit, only reads lengths: no copy is made.
    """
    if not _needs_cut(info, limits):
        return info, ()
    out = hm_pb2.HostInfo()
    out.CopyFrom(info)
    notes: list[str] = []
    cuts: dict[tuple[str, int], list[int]] = {}  # (what, limit) -> [values cut, longest]
    _bound_fields(out, _HOST_NAMES, limits.name, "", cuts)
    _bound_fields(out, ("err",), limits.error, "", cuts)
    if len(out.gpus) > limits.gpus:
        notes.append(f"{len(out.gpus):,} GPUs, the first {limits.gpus} shown")
        del out.gpus[limits.gpus:]
    for gpu in out.gpus:
        _bound_fields(gpu, _GPU_NAMES, limits.name, "GPU ", cuts)
        if len(gpu.mig) > limits.mig:
            notes.append(f"GPU {gpu.id}: {len(gpu.mig):,} MIG instances, the first "
                         f"{limits.mig} shown")
            del gpu.mig[limits.mig:]
        for inst in gpu.mig:
            _bound_fields(inst, ("profile", "uuid"), limits.name, "MIG instance ", cuts)
        if len(gpu.procs) > limits.procs:
            keep = sorted(gpu.procs, key=lambda p: p.mem, reverse=True)[: limits.procs]
            notes.append(f"GPU {gpu.id}: {len(gpu.procs):,} processes, the {limits.procs} "
                         "using most memory shown")
            del gpu.procs[:]
            gpu.procs.extend(keep)
        for proc in gpu.procs:
            _bound_fields(proc, ("username", "basename"), limits.name, "process ", cuts)
            _bound_fields(proc, ("cmdline",), limits.cmdline, "process ", cuts)
            if proc.HasField("job"):
                _bound_fields(proc.job, ("step",), limits.name, "job ", cuts)
            if proc.HasField("container"):
                box = proc.container
                _bound_fields(box, ("id", "runtime", "pod", "host_user"), limits.name,
                              "container ", cuts)
                _bound_fields(box, ("name",), limits.path, "container ", cuts)
    if len(out.disks) > limits.disks:
        notes.append(f"{len(out.disks):,} disks, the first {limits.disks} shown")
        del out.disks[limits.disks:]
    for disk in out.disks:
        _bound_fields(disk, ("device",), limits.name, "disk ", cuts)
        _bound_fields(disk, ("mount",), limits.path, "disk ", cuts)
    for (what, limit), (count, longest) in cuts.items():
        if count == 1:
            notes.append(f"{what}: {longest:,} characters, cut to {limit}")
        else:
            notes.append(f"{what}: {count:,} values over {limit} characters cut (the longest "
                         f"{longest:,})")
    if len(notes) > limits.notes:
        notes[limits.notes - 1:] = [f"and {len(notes) - limits.notes + 1:,} more cuts"]
    return out, tuple(notes)


_HOST_NAMES = ("id", "hostname", "ip", "driver_version", "cuda_version", "agent_version")
_GPU_NAMES = ("name", "uuid", "pci_bus_id")


def _bound_fields(
    msg: (hm_pb2.HostInfo | hm_pb2.GPUInfo | hm_pb2.ProcInfo | hm_pb2.DiskInfo
          | hm_pb2.MigInstance | hm_pb2.SlurmJob | hm_pb2.Container),
    fields: tuple[str, ...], limit: int, kind: str, cuts: dict[tuple[str, int], list[int]],
) -> None:
    for name in fields:
        value: str = getattr(msg, name)
        if len(value) > limit:
            setattr(msg, name, _cut(value, limit))
            seen = cuts.setdefault((kind + name, limit), [0, 0])
            seen[0] += 1
            seen[1] = max(seen[1], len(value))


def _needs_cut(info: hm_pb2.HostInfo, limits: Limits) -> bool:
    name = limits.name
    if (any(len(getattr(info, f)) > name for f in _HOST_NAMES)
            or len(info.err) > limits.error or len(info.gpus) > limits.gpus
            or len(info.disks) > limits.disks):
        return True
    for gpu in info.gpus:
        if (any(len(getattr(gpu, f)) > name for f in _GPU_NAMES)
                or len(gpu.procs) > limits.procs or len(gpu.mig) > limits.mig):
            return True
        if any(len(m.profile) > name or len(m.uuid) > name for m in gpu.mig):
            return True
        for proc in gpu.procs:
            # One C call per process: a message this small cannot hold a string over a limit.
            if proc.ByteSize() > name and _proc_needs_cut(proc, limits):
                return True
    return any(len(d.device) > name or len(d.mount) > limits.path for d in info.disks)


def _proc_needs_cut(proc: hm_pb2.ProcInfo, limits: Limits) -> bool:
    name = limits.name
    if (len(proc.username) > name or len(proc.basename) > name
            or len(proc.cmdline) > limits.cmdline):
        return True
    if proc.HasField("job") and len(proc.job.step) > name:
        return True
    if proc.HasField("container"):
        box = proc.container
        return (len(box.id) > name or len(box.runtime) > name or len(box.pod) > name
                or len(box.host_user) > name or len(box.name) > limits.path)
    return False
