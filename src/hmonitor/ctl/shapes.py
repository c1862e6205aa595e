"""The ``--json`` output of every command: the contract scripts rely on, documented in
docs/ctl.md. Keys are only ever added, never renamed or retyped; sizes are bytes, times Unix
seconds, hosts the dashboard's names (or the ``--agent`` names), GPUs their NVML indexes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hmonitor.ctl.model import Cluster, Gpu, Host
from hmonitor.ctl.select import Pick, Placement
from hmonitor.rules import expiry_state

__all__ = ["cuda_visible_devices", "free_json", "gpu_state", "placement_json", "status_json",
           "top_json"]


def gpu_state(g: Gpu, max_util: float | None = None) -> str:
    """``free``, ``busy``, ``lost`` or ``mig`` (MIG mode: never handed out whole)."""
    if g.lost:
        return "lost"
    if g.mig_enabled:
        return "mig"
    return "free" if g.free(max_util) else "busy"


def gpu_json(host: Host, g: Gpu) -> dict[str, Any]:
    return {"host": host.name, "gpu": g.index, "name": g.name, "uuid": g.uuid,
            "mem_free_bytes": g.mem_free, "mem_used_bytes": g.mem_used,
            "mem_total_bytes": g.mem_total, "utilization": g.utilization, "temp": g.temp}


def free_json(picks: Sequence[Pick]) -> list[dict[str, Any]]:
    return [gpu_json(p.host, p.gpu) for p in picks]


def cuda_visible_devices(gpus: Sequence[Gpu]) -> str:
    return ",".join(str(g.index) for g in gpus)


def placement_json(p: Placement, waited: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": p.host.name, "hostname": p.host.hostname, "address": p.host.address,
        "gpus": [gpu_json(p.host, g) for g in p.gpus],
        "cuda_visible_devices": cuda_visible_devices(p.gpus),
    }
    if waited is not None:
        out["waited_seconds"] = round(waited, 1)
    return out


def _counts(gpus: Sequence[Gpu]) -> dict[str, int]:
    counts = {"total": len(gpus), "free": 0, "busy": 0, "lost": 0, "mig": 0}
    for g in gpus:
        counts[gpu_state(g)] += 1
    return counts


def status_json(c: Cluster) -> dict[str, Any]:
    hosts = [{
        "name": h.name, "address": h.address, "hostname": h.hostname, "up": h.up,
        "error": h.error, "last_seen": h.last_seen,
        # A down host's last GPUs say nothing about now: counted only while up.
        "gpus": _counts(h.gpus) if h.up else None,
    } for h in c.hosts]
    return {
        "source": c.source,
        "hosts_up": sum(h.up for h in c.hosts),
        "hosts_down": sum(not h.up for h in c.hosts),
        "gpus": _counts([g for h in c.hosts if h.up for g in h.gpus]),
        "hosts": hosts,
        "alerts": None if c.alerts is None else [
            {"kind": a.kind, "host": a.host, "message": a.message} for a in c.alerts],
    }


def top_json(c: Cluster) -> list[dict[str, Any]]:
    """What ``top`` shows, once: a row per GPU of every up host."""
    return [{**gpu_json(h, g), "state": gpu_state(g), "users": g.owners,
             "procs": [{"pid": p.pid, "owner": p.owner, "mem_bytes": p.mem,
                        "basename": p.basename} for p in g.procs]}
            for h in c.hosts if h.up for g in h.gpus]


def user_json(u: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A user as ``users --json`` gives it, from the dashboard's ``/api/v1/users`` entry or
    the same shape built from live hosts (then ``gpu_hours`` and ``idle_hogs`` are null)."""
    exp = int(u.get("expiration") or 0)
    usage = u.get("usage")
    hogs = u.get("idle_hogs")
    return {
        "user": u.get("user", ""),
        "expiration": exp,
        "expiry_state": expiry_state(exp, time.time() if now is None else now),
        "gpus_now": [{"host": g.get("host"), "gpu": g.get("gpu"), "pid": g.get("pid"),
                      "basename": g.get("basename", ""), "mem_bytes": g.get("mem", 0)}
                     for g in u.get("gpus_now") or []],
        "gpu_hours": None if usage is None else {w: t.get("gpu_hours", 0.0)
                                                 for w, t in usage.items()},
        "idle_hogs": None if hogs is None else [
            {"host": h.get("host"), "gpu": h.get("gpu"), "pid": h.get("pid"),
             "mem_bytes": h.get("mem", 0), "idle_seconds": h.get("idle_seconds", 0)}
            for h in hogs],
    }


def users_from_hosts(hosts: Sequence[Host]) -> list[dict[str, Any]]:
    """Per user, what they hold now (direct mode: no history, so no GPU-hours), in the shape
    of the dashboard's ``/api/v1/users`` entries; most memory first."""
    users: dict[str, dict[str, Any]] = {}
    for h in hosts:
        if not h.up:
            continue
        for g in h.gpus:
            for p in g.procs:
                u = users.setdefault(p.owner, {"user": p.owner, "expiration": 0,
                                               "gpus_now": [], "usage": None, "idle_hogs": None})
                u["gpus_now"].append({"host": h.name, "gpu": g.index, "pid": p.pid,
                                      "basename": p.basename, "mem": p.mem})
                u["expiration"] = p.expiration or u["expiration"]
    return sorted(users.values(), key=lambda u: (-sum(g["mem"] for g in u["gpus_now"]),
                                                 u["user"]))
