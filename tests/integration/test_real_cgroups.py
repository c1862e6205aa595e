"""Real processes in real cgroups and user namespaces, read back through ProcReader.facts().

The test builds the directories Slurm and docker would (a Slurm job under slurmstepd.scope in
cgroup v2, a docker container in a v1 controller or in v2), moves a `sleep` into them, and
checks what the agent reports. Needs root and a writable cgroup mount; skipped otherwise.
Every directory made is removed again, bottom-up, after its processes are gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cgroupkit import (
    MOUNTS,
    Cgroups,
    docker_hierarchy,
    move,
    needs_root,
    v1_hierarchy,
    writable,
)

from hmonitor.agent.sources.containers import ContainerNames
from hmonitor.agent.sources.procfacts import ContainerRef, SlurmJobRef
from hmonitor.agent.sources.procs import ProcReader, _namespace_owner


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
