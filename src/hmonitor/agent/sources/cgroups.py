"""The container and Slurm job of a process, from the text of /proc/<pid>/cgroup.

A pure parser: no file access. cgroup v1 (one ``N:controllers:/path`` line per hierarchy), v2
(``0::/path``) and hybrid hosts are read alike: each path is matched against the layouts that
docker, containerd/Kubernetes, cri-o, podman, lxc, systemd-nspawn and Slurm create, preferring
the paths the runtimes are sure to set (name=systemd, v2, memory, cpu).

An unprivileged process cannot pick its cgroup, except below a subtree systemd delegated to a
user (``user@1000.service``), where it may create any path. So a container found there is that
user's (rootless) container, and a Slurm job found there is ignored: a user must not be able
to charge their work to someone else's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hmonitor.agent.sources.procfacts import ContainerRef, SlurmJobRef

# Bounds on what is looked at: real files are a few hundred bytes, a dozen lines.
_MAX_TEXT = 64 * 1024
_MAX_LINES = 64
_MAX_PATH = 4096
_MAX_NAME = 255  # NAME_MAX: the kernel's limit on one cgroup directory name
_UID_MAX = (1 << 32) - 2  # (uid_t)-1 is "no uid"
_JOB_MAX = (1 << 64) - 1

_HEX64 = r"([0-9a-f]{64})"
# A container's own directory, by runtime. The monitors beside them (libpod-conmon-<id>,
# crio-conmon-<id>) never match: "conmon-" is not hex.
_CONTAINER_DIRS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"docker-{_HEX64}\.scope"), "docker"),
    (re.compile(rf"cri-containerd-{_HEX64}\.scope"), "containerd"),
    (re.compile(rf"nerdctl-{_HEX64}\.scope"), "containerd"),
    (re.compile(rf"crio-{_HEX64}(?:\.scope)?"), "cri-o"),
    (re.compile(rf"libpod-{_HEX64}(?:\.scope)?"), "podman"),
)
_HEX64_DIR = re.compile(_HEX64)
# Kubernetes pod: "pod<uid>" (cgroupfs) or "kubepods-burstable-pod<uid_with_underscores>.slice"
# (systemd, also "kubelet-kubepods-..." under kind/rootless kubelets). Static pods' UIDs are
# 32 hex digits (a hash of the manifest), others are UUIDs.
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_POD_CGROUPFS = re.compile(rf"pod({_UUID})")
_POD_SLICE = re.compile(
    rf"(?:[a-z0-9_]+-)?kubepods(?:-burstable|-besteffort|-guaranteed)?-pod({_UUID})\.slice"
)
# lxc/nspawn names are hostnames in practice; be strict, they are shown as they are.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+:-]{0,252}")
_LXC_PAYLOAD = re.compile(r"lxc\.payload\.(.+)")
_MACHINE_SCOPE = re.compile(r"machine-(.+)\.scope")
_LIBVIRT_QEMU = re.compile(r"qemu-\d+-.+")  # libvirt names its machines qemu-<n>-<domain>
_USER_SLICE = re.compile(r"user-(\d{1,10})\.slice")
_USER_SERVICE = re.compile(r"user@(\d{1,10})\.service")
_SLURM_V1_ROOT = re.compile(r"slurm(?:_[A-Za-z0-9_.-]{1,253})?")  # "slurm" or "slurm_<node>"
_SLURM_V2_SCOPE = re.compile(r"(?:[A-Za-z0-9_.-]{1,200}_)?slurmstepd\.scope")
_SLURM_UID = re.compile(r"uid_(\d{1,10})")
_SLURM_JOB = re.compile(r"job_(\d{1,20})")
_SLURM_STEP = re.compile(r"step_(batch|extern|interactive|\d{1,10})")
_SYSTEMD_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")

# Which hierarchy's path to believe first (v1). Runtimes always place their processes in the
# memory and cpu controllers, systemd-managed ones in name=systemd and v2 too; Slurm's v1 plugin
# uses freezer/cpuset/memory/devices and leaves name=systemd to slurmd.
_PREFERENCE = ("name=systemd", "", "memory", "cpu", "cpuacct", "pids", "freezer", "cpuset",
               "devices", "blkio")


@dataclass(frozen=True)
class CgroupFacts:
    container: ContainerRef | None = None
    job: SlurmJobRef | None = None
    # From "user-NNNN.slice": the user systemd placed the process under (a login session, a
    # user service, a rootless container). None for system services and containers.
    host_uid: int | None = None


EMPTY = CgroupFacts()


def _uid(digits: str) -> int | None:
    value = int(digits)
    return value if value <= _UID_MAX else None


def _systemd_unescape(name: str) -> str | None:
    # systemd escapes unit names with \xNN ("-" is \x2d); anything undecodable is refused.
    try:
        raw = _SYSTEMD_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def _pod_uid(raw: str) -> str:
    return raw.replace("_", "-")  # systemd slices cannot hold "-" in a name part


def _container(parts: list[str]) -> ContainerRef | None:
    """The outermost container in one path's directory names."""
    pod = ""
    host_uid: int | None = None
    for i, part in enumerate(parts):
        prev = parts[i - 1] if i else ""
        if (m := _USER_SLICE.fullmatch(part)) or (m := _USER_SERVICE.fullmatch(part)):
            host_uid = _uid(m.group(1)) if host_uid is None else host_uid
            continue
        m = _POD_SLICE.fullmatch(part)
        if m is None and (prev.startswith("kubepods") or prev in {"burstable", "besteffort"}):
            m = _POD_CGROUPFS.fullmatch(part)  # /kubepods[/burstable]/pod<uid>
        if m is not None:
            pod = _pod_uid(m.group(1))
            continue
        for pattern, runtime in _CONTAINER_DIRS:
            if m := pattern.fullmatch(part):
                return ContainerRef(id=m.group(1), runtime=runtime, pod=pod, host_uid=host_uid)
        if _HEX64_DIR.fullmatch(part):
            # A bare id: docker's cgroupfs driver ("/docker/<id>") or a kubelet with cgroupfs
            # (containerd, or docker through dockershim: the path cannot tell them apart).
            if prev == "docker":
                return ContainerRef(id=part, runtime="docker", pod=pod, host_uid=host_uid)
            if pod:
                return ContainerRef(id=part, runtime="containerd", pod=pod, host_uid=host_uid)
            continue
        name: str | None = None
        runtime = ""
        if i == 1 and prev in {"lxc", "lxc.payload"}:  # /lxc/<name>, /lxc.payload/<name>
            name, runtime = part, "lxc"
        elif m := _LXC_PAYLOAD.fullmatch(part):  # /lxc.payload.<name> (LXC 4+, LXD)
            name, runtime = m.group(1), "lxc"
        elif prev == "machine.slice" and (m := _MACHINE_SCOPE.fullmatch(part)):
            name = _systemd_unescape(m.group(1))
            runtime = "libvirt" if name and _LIBVIRT_QEMU.fullmatch(name) else "nspawn"
        if name is not None and _NAME.fullmatch(name) and name not in {".", ".."}:
            return ContainerRef(id=name, runtime=runtime, name=name, host_uid=host_uid)
    return None


def _job(parts: list[str]) -> SlurmJobRef | None:
    """The Slurm job and step, from slurm's v1 tree (/slurm[_node]/uid_N/job_N/step_X) or its
    v2 one (/<slice>/slurmstepd.scope/job_N/step_X/...), never below a user's own subtree."""
    for i, part in enumerate(parts):
        if _USER_SERVICE.fullmatch(part):
            return None  # delegated to the user: anything below is theirs to invent
        if i == 0 and _SLURM_V1_ROOT.fullmatch(part):
            if len(parts) > 1 and _SLURM_UID.fullmatch(parts[1]):
                return _job_step(parts[2:])
            return None
        if _SLURM_V2_SCOPE.fullmatch(part):
            return _job_step(parts[i + 1 :])
    return None


def _job_step(parts: list[str]) -> SlurmJobRef | None:
    m = _SLURM_JOB.fullmatch(parts[0]) if parts else None
    if m is None:
        return None
    job = int(m.group(1))
    if job > _JOB_MAX:
        return None
    step = _SLURM_STEP.fullmatch(parts[1]) if len(parts) > 1 else None
    return SlurmJobRef(id=job, step=step.group(1) if step else "")


def _host_uid(parts: list[str]) -> int | None:
    for part in parts:
        if m := _USER_SLICE.fullmatch(part):
            return _uid(m.group(1))
    return None


def _paths(text: str) -> list[list[str]]:
    """Each hierarchy's path as directory names, most trusted first."""
    ranked: list[tuple[int, list[str]]] = []
    for line in text.split("\n")[:_MAX_LINES]:
        # "hierarchy-ID:controller-list:cgroup-path"; the path itself may hold ":".
        fields = line.split(":", 2)
        if len(fields) != 3 or not (fields[0].isdigit() and fields[0].isascii()):
            continue
        hierarchy, controllers, path = fields
        # v2 marks a removed cgroup that still has a zombie in it.
        path = path.removesuffix(" (deleted)")
        if not path.startswith("/") or len(path) > _MAX_PATH:
            continue
        parts = [p for p in path.split("/") if p]
        if any(len(p) > _MAX_NAME for p in parts):
            continue
        if hierarchy == "0" and controllers == "":
            rank = _PREFERENCE.index("")
        else:
            names = controllers.split(",")
            rank = min((_PREFERENCE.index(n) for n in names if n in _PREFERENCE),
                       default=len(_PREFERENCE))
        ranked.append((rank, parts))
    ranked.sort(key=lambda item: item[0])  # stable: equal ranks keep the file's order
    return [parts for _, parts in ranked]


def parse_cgroup(text: str | bytes) -> CgroupFacts:
    """Container, Slurm job and user slice of a process from its /proc/<pid>/cgroup; empty facts
    for anything unrecognised or malformed, never an exception."""
    try:
        if isinstance(text, bytes):
            text = text[:_MAX_TEXT].decode("utf-8", errors="replace")
        else:
            text = text[:_MAX_TEXT]
        paths = _paths(text)
        container = job = None
        host_uid: int | None = None
        for parts in paths:
            container = container or _container(parts)
            job = job or _job(parts)
            host_uid = _host_uid(parts) if host_uid is None else host_uid
        return CgroupFacts(container=container, job=job, host_uid=host_uid)
    except (ValueError, TypeError, IndexError):  # belt and braces: garbage gives nothing
        return EMPTY
