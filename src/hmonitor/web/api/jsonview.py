"""The poller's state as JSON, for ``/api/v1/hosts``.

HostInfo is converted by hand: ``json_format.MessageToDict`` turns uint64 into strings, drops
zero-valued fields unless asked, and took 32 ms against 4 ms for 100 hosts x 8 GPUs x 4
processes here (see docs/api.md).
"""

from __future__ import annotations

from typing import Any

from hmonitor._pb import hm_pb2
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.rules import gpu_is_free
from hmonitor.wire import decode_uid, proc_owner


def _opt(msg: Any, name: str) -> Any:
    """An optional field's value, None when the agent did not report it."""
    return getattr(msg, name) if msg.HasField(name) else None


def proc_to_dict(p: hm_pb2.ProcInfo) -> dict[str, Any]:
    c = p.container
    return {
        "pid": p.pid,
        "uid": decode_uid(p.uid),  # the real uid, not its int32 wire form
        "username": p.username,
        "basename": p.basename,
        "expiration": p.expiration,
        "utilization": p.utilization,
        "mem": p.mem,
        "owner": proc_owner(p),  # what the pages call the owner, and the history accounts to
        "cmdline": p.cmdline,
        "start_time": p.start_time,
        "container": {
            "id": c.id, "runtime": c.runtime, "name": c.name, "pod": c.pod,
            "host_uid": _opt(c, "host_uid"), "host_user": c.host_user,
        } if p.HasField("container") else None,
        "job": {"id": p.job.id, "step": p.job.step} if p.HasField("job") else None,
        "mig": {"gpu_instance": p.mig.gpu_instance, "compute_instance": p.mig.compute_instance}
        if p.HasField("mig") else None,
    }


_GPU_OPTIONAL = ("power_mw", "power_limit_mw", "sm_clock_mhz", "mem_clock_mhz",
                 "throttle_reasons", "ecc_corrected", "ecc_uncorrected", "retired_pages",
                 "remapped_rows", "mig_enabled")


def gpu_to_dict(g: hm_pb2.GPUInfo) -> dict[str, Any]:
    out = {
        "id": g.id,
        "mem_used": g.mem_used,
        "mem_total": g.mem_total,
        "utilization": g.utilization,
        "temp": g.temp,
        "name": g.name,
        "fanspeed": g.fanspeed,
        "procs": [proc_to_dict(p) for p in g.procs],
        "uuid": g.uuid,
        "pci_bus_id": g.pci_bus_id,
        "free": gpu_is_free(g),  # the overview's (and hmonitor-ctl's) rule, added here
    }
    for name in _GPU_OPTIONAL:
        out[name] = _opt(g, name)
    out["mig"] = [
        {"gpu_instance": m.gpu_instance, "compute_instance": m.compute_instance,
         "profile": m.profile, "uuid": m.uuid, "mem_used": m.mem_used,
         "mem_total": m.mem_total, "sm_count": _opt(m, "sm_count")}
        for m in g.mig
    ]
    return out


def host_info_to_dict(info: hm_pb2.HostInfo) -> dict[str, Any]:
    """HostInfo with the proto's field names, every field present, uint64 as JSON numbers."""
    return {
        "id": info.id,
        "gpus": [gpu_to_dict(g) for g in info.gpus],
        "disks": [
            {"device": d.device, "used": d.used, "total": d.total, "mount": d.mount}
            for d in info.disks
        ],
        "ip": info.ip,
        "hostname": info.hostname,
        "err": info.err,
        "driver_version": info.driver_version,
        "cuda_version": info.cuda_version,
        "agent_version": info.agent_version,
        "load1": _opt(info, "load1"),
        "cpus": info.cpus,
        "mem_used": info.mem_used,
        "mem_total": info.mem_total,
    }


def host_state_to_dict(h: HostStateLike) -> dict[str, Any]:
    return {
        "name": h.name,
        "address": h.address,
        "up": h.up,
        "error": h.error,
        "last_seen": h.last_seen,
        "rtt_ms": h.rtt_ms,
        "polled_at": h.polled_at,
        "truncated": list(h.truncated),  # what the poller cut from the agent's answer
        "info": host_info_to_dict(h.info) if h.info is not None else None,
    }
