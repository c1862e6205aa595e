"""Real processes in real cgroups and user namespaces, read back through ProcReader.facts().

The test builds the directories Slurm and docker would (a Slurm job under slurmstepd.scope in
cgroup v2, a docker container in a v1 controller or in v2), moves a `sleep` into them, and
checks what the agent reports. Needs root and a writable cgroup mount; skipped otherwise.
Every directory made is removed again, bottom-up, after its processes are gone.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hmonitor.agent.sources.containers import ContainerNames
from hmonitor.agent.sources.procfacts import ContainerRef, SlurmJobRef
from hmonitor.agent.sources.procs import ProcReader, _namespace_owner


@dataclass(frozen=True)
class Mounts:
    v2: Path | None  # the cgroup2 mount: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified
    v1: dict[str, Path]  # v1 controller (or name=...) -> its mount


def cgroup_mounts() -> Mounts:
    v2: Path | None = None
    v1: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2" and v2 is None:
            v2 = mountpoint
        elif fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in {"memory", "pids", "cpu", "cpuacct", "freezer", "name=systemd"}:
                    v1.setdefault(option, mountpoint)
    return Mounts(v2, v1)


MOUNTS = cgroup_mounts()


def writable(mount: Path | None) -> bool:
    return mount is not None and os.access(mount / "cgroup.procs", os.W_OK)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups")


@dataclass
class Cgroups:
    """Directories made and processes started by one test; undone by the fixture."""

    made: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def make(self, mount: Path, relative: str) -> Path:
        path = mount
        for part in relative.strip("/").split("/"):
            path = path / part
            try:
                path.mkdir()
            except FileExistsError:
                continue  # someone else's (a real slurmstepd.scope): never removed by us
            except OSError as exc:
                pytest.skip(f"cannot create cgroup {path}: {exc}")
            self.made.append(path)
        return path

    def start(self, *argv: str, comm: str = "sleep") -> int:
        proc = subprocess.Popen(list(argv))
        self.procs.append(proc)
        path = Path(f"/proc/{proc.pid}/comm")
        deadline = time.monotonic() + 5
        # Wait for the exec: the kernel sets the name, then the arguments.
        while path.read_text().rstrip("\n") != comm or not (path.parent / "cmdline").read_bytes():
            assert proc.poll() is None, f"{argv!r} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{argv!r} did not start"
            time.sleep(0.005)
        return proc.pid

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for path in reversed(self.made):
            # A killed process leaves its cgroup a moment after it is reaped.
            deadline = time.monotonic() + 5
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno not in {errno.EBUSY, errno.ENOTEMPTY} or (
                        time.monotonic() > deadline
                    ):
                        break  # shared with a concurrent run, or left for the host to see
                    time.sleep(0.05)


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    made = Cgroups()
    try:
        yield made
    finally:
        made.cleanup()


def move(cgroup: Path, pid: int) -> None:
    (cgroup / "cgroup.procs").write_text(f"{pid}\n")


def reader(tmp_path: Path) -> ProcReader:
    # Names from empty trees: the ids here are made up, the host's own files must not matter.
    none = str(tmp_path / "none")
    names = ContainerNames(docker_root=none, podman_root=none, pods_log_root=none,
                           containers_log_root=none, home=lambda uid: None)
    return ProcReader(containers=names, user_name=lambda uid: "root" if uid == 0 else str(uid))


@needs_root
@pytest.mark.skipif(not writable(MOUNTS.v2), reason="no writable cgroup v2 mount")
def test_slurm_job_in_cgroup_v2(cgroups: Cgroups, tmp_path: Path) -> None:
    assert MOUNTS.v2 is not None
    job = secrets.randbelow(10**8) + 10**6  # unique: concurrent runs share the hierarchy
    step = cgroups.make(MOUNTS.v2, f"system.slice/slurmstepd.scope/job_{job}/step_0/user/task_0")
    pid = cgroups.start("sleep", "60")
    move(step, pid)
    assert f"/slurmstepd.scope/job_{job}/step_0/" in Path(f"/proc/{pid}/cgroup").read_text()
    facts = reader(tmp_path).facts(pid)
    assert facts is not None
    assert facts.job == SlurmJobRef(job, "0")
    assert facts.container is None
    assert "sleep 60" in facts.cmdline


def v1_hierarchy() -> Path | None:
    for controller in ("memory", "pids", "cpu", "freezer", "name=systemd"):
        mount = MOUNTS.v1.get(controller)
        if writable(mount):
            return mount
    return None


@needs_root
@pytest.mark.skipif(v1_hierarchy() is None, reason="no writable cgroup v1 hierarchy")
def test_slurm_job_in_cgroup_v1(cgroups: Cgroups, tmp_path: Path) -> None:
    mount = v1_hierarchy()
    assert mount is not None
    job = secrets.randbelow(10**8) + 10**6
    step = cgroups.make(mount, f"slurm/uid_0/job_{job}/step_batch")
    pid = cgroups.start("sleep", "60")
    move(step, pid)
    if f":/slurm/uid_0/job_{job}/step_batch\n" not in Path(f"/proc/{pid}/cgroup").read_text():
        pytest.skip("this hierarchy is not rooted at / in our cgroup namespace")
    facts = reader(tmp_path).facts(pid)
    assert facts is not None
    assert facts.job == SlurmJobRef(job, "batch")


def docker_hierarchy() -> Path | None:
    return v1_hierarchy() or (MOUNTS.v2 if writable(MOUNTS.v2) else None)


@needs_root
@pytest.mark.skipif(docker_hierarchy() is None, reason="no writable cgroup hierarchy")
def test_docker_container(cgroups: Cgroups, tmp_path: Path) -> None:
    mount = docker_hierarchy()
    assert mount is not None
    cid = secrets.token_hex(32)
    container = cgroups.make(mount, f"docker/{cid}")
    pid = cgroups.start("sleep", "60")
    move(container, pid)
    facts = reader(tmp_path).facts(pid)
    assert facts is not None
    # A rootful container: the initial user namespace, so no rootless owner.
    assert facts.container == ContainerRef(cid, "docker")
    assert facts.job is None


def unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run([unshare, "--user", "--map-root-user", "true"], capture_output=True,
                          check=False, timeout=10)
    return done.returncode == 0


UNSHARE = unshare_works()


@pytest.mark.skipif(not UNSHARE, reason="unshare --user does not work here")
def test_user_namespace_owner(cgroups: Cgroups) -> None:
    """`unshare --user --map-root-user` maps uid 0 inside to whoever ran it: that user owns it
    (root here gives "0 0 1", a user gives "0 1000 1")."""
    pid = cgroups.start("unshare", "--user", "--map-root-user", "sleep", "60")
    uid_map = Path(f"/proc/{pid}/uid_map").read_bytes()
    assert uid_map.split() == [b"0", str(os.getuid()).encode(), b"1"]
    assert _namespace_owner(uid_map) == os.getuid()
    assert _namespace_owner(Path("/proc/self/uid_map").read_bytes()) is None  # initial ns


@needs_root
@pytest.mark.skipif(not UNSHARE, reason="unshare --user does not work here")
@pytest.mark.skipif(docker_hierarchy() is None, reason="no writable cgroup hierarchy")
def test_container_in_a_user_namespace(cgroups: Cgroups, tmp_path: Path) -> None:
    """A container whose processes run in a user namespace root made (as `docker run
    --userns` or LXC do): root is its owner, and says so."""
    mount = docker_hierarchy()
    assert mount is not None
    cid = secrets.token_hex(32)
    container = cgroups.make(mount, f"docker/{cid}")
    pid = cgroups.start("unshare", "--user", "--map-root-user", "sleep", "60")
    move(container, pid)
    facts = reader(tmp_path).facts(pid)
    assert facts is not None
    assert facts.container == ContainerRef(cid, "docker", host_uid=0, host_user="root")


# A process that enters a new user namespace, says so, and waits for its map to be written.
_UNSHARE_AND_WAIT = """
import ctypes, sys, time
CLONE_NEWUSER = 0x10000000
if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
    sys.exit(1)
print("ready", flush=True)
time.sleep(60)
"""


@needs_root
@pytest.mark.skipif(docker_hierarchy() is None, reason="no writable cgroup hierarchy")
def test_container_in_a_namespace_root_made_for_a_uid_range(
    cgroups: Cgroups, tmp_path: Path
) -> None:
    """LXD, Kubernetes (hostUsers: false) and docker's userns-remap map uid 0 inside to a range
    (uid_map "0 100000 65536"), but root made the namespace: root owns the container, not a
    user 100000 that does not exist."""
    mount = docker_hierarchy()
    assert mount is not None
    cid = secrets.token_hex(32)
    container = cgroups.make(mount, f"docker/{cid}")
    proc = subprocess.Popen([sys.executable, "-c", _UNSHARE_AND_WAIT], stdout=subprocess.PIPE)
    cgroups.procs.append(proc)
    assert proc.stdout is not None
    if proc.stdout.readline() != b"ready\n":
        pytest.skip("unshare(CLONE_NEWUSER) is not allowed here")
    Path(f"/proc/{proc.pid}/uid_map").write_text("0 100000 65536\n")
    move(container, proc.pid)
    facts = reader(tmp_path).facts(proc.pid)
    assert facts is not None
    assert facts.container == ContainerRef(cid, "docker", host_uid=0, host_user="root")


@needs_root
@pytest.mark.skipif(not UNSHARE or shutil.which("setpriv") is None,
                    reason="needs unshare --user and setpriv")
@pytest.mark.skipif(docker_hierarchy() is None, reason="no writable cgroup hierarchy")
def test_rootless_container_of_another_user(cgroups: Cgroups, tmp_path: Path) -> None:
    """A user's own namespace (rootless podman/docker on a host without a user slice in the
    cgroup path): that user owns the container."""
    mount = docker_hierarchy()
    assert mount is not None
    cid = secrets.token_hex(32)
    container = cgroups.make(mount, f"docker/{cid}")
    pid = cgroups.start("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "unshare", "--user", "--map-root-user", "sleep", "60")
    move(container, pid)
    facts = reader(tmp_path).facts(pid)
    assert facts is not None
    assert facts.container == ContainerRef(cid, "docker", host_uid=65534, host_user="65534")
