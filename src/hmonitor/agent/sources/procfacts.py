"""What the agent learns about a process beyond its owner: command line, start time, and the
container or Slurm job it runs in (from /proc/<pid>/cgroup)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerRef:
    id: str  # as in the cgroup path: 64 hex digits for docker/podman/containerd, a name for lxc
    runtime: str  # "docker", "containerd", "cri-o", "podman", "lxc", "nspawn"
    name: str = ""  # where it can be read without the runtime's socket
    pod: str = ""  # Kubernetes pod UID
    host_uid: int | None = None  # rootless: the host user who owns the container
    host_user: str = ""


@dataclass(frozen=True)
class SlurmJobRef:
    id: int
    step: str = ""  # "batch", "extern", "interactive", "0", ...


@dataclass(frozen=True)
class ProcFacts:
    cmdline: str = ""  # arguments joined by spaces, bounded; "" with --no-cmdline
    start_time: int = 0  # Unix seconds; 0 unknown
    container: ContainerRef | None = None
    job: SlurmJobRef | None = None
