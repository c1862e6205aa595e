"""Process owners from /proc: live processes, long names, vanished pids, a fake tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

import hmonitor.agent.sources.procs as procs_module
from hmonitor.agent.sources.containers import ContainerNames, read_bounded
from hmonitor.agent.sources.procfacts import ContainerRef, ProcFacts, SlurmJobRef
from hmonitor.agent.sources.procs import ProcOwner, ProcReader

NOBODY = 65534


@pytest.fixture
def sleeper() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def started(proc: subprocess.Popen[bytes], comm: str) -> int:
    """Wait until the child has finished exec: the kernel sets its name just after Popen returns."""
    path = Path(f"/proc/{proc.pid}/comm")
    deadline = time.monotonic() + 5
    while path.read_text().rstrip("\n") != comm:
        assert time.monotonic() < deadline, f"{proc.args!r} did not start"
        time.sleep(0.005)
    # The kernel names the process before it sets up argv: wait for the arguments too.
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"{proc.args!r} has no arguments"
        time.sleep(0.005)
    return proc.pid


def test_this_process() -> None:
    owner = ProcReader().owner(os.getpid())
    assert owner == ProcOwner(uid=os.getuid(), name=psutil.Process().name())


def test_process_of_another_user(sleeper: list[subprocess.Popen[bytes]]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    sleep = shutil.which("sleep")
    assert sleep
    proc = subprocess.Popen([sleep, "30"], user=NOBODY, group=NOBODY, extra_groups=[])
    sleeper.append(proc)
    assert ProcReader().owner(started(proc, "sleep")) == ProcOwner(uid=NOBODY, name="sleep")


def test_long_name_comes_from_cmdline(
    tmp_path: Path, sleeper: list[subprocess.Popen[bytes]]
) -> None:
    sleep = shutil.which("sleep")
    assert sleep
    long_name = "train_resnet152_imagenet"  # the kernel keeps 15 bytes of it
    exe = tmp_path / long_name
    shutil.copy(sleep, exe)
    proc = subprocess.Popen([str(exe), "30"])
    sleeper.append(proc)
    owner = ProcReader().owner(started(proc, long_name[:15]))
    assert owner == ProcOwner(uid=os.getuid(), name=long_name)
    assert owner.name == psutil.Process(proc.pid).name()


def test_vanished_process() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its /proc entry is gone
    assert ProcReader().owner(proc.pid) is None
    assert ProcReader().owner(0) is None
    assert ProcReader().owner(-1) is None


def make_proc(root: Path, pid: int, status: str | None, cmdline: bytes | None = None) -> None:
    d = root / str(pid)
    d.mkdir()
    if status is not None:
        (d / "status").write_text(status)
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)


def status(name: str, uid: int = 1000, euid: int = 1000) -> str:
    return (
        f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\n"
        f"Uid:\t{uid}\t{euid}\t{euid}\t{euid}\nGid:\t100\t100\t100\t100\n"
    )


def test_fake_tree(tmp_path: Path) -> None:
    make_proc(tmp_path, 10, status("python3", uid=1001, euid=0), b"python3\0train.py\0")
    make_proc(tmp_path, 11, status("my_long_trainin"), b"/opt/bin/my_long_training_job\0--x\0")
    # comm truncated but argv[0] was rewritten (setproctitle): keep the kernel's name.
    make_proc(tmp_path, 12, status("my_long_trainin"), b"worker: idle\0")
    make_proc(tmp_path, 13, status("kworker/0:1H-kb"), b"")  # kernel thread: empty cmdline
    make_proc(tmp_path, 14, status("a\\\\b\\nc"))  # escaped backslash and newline
    make_proc(tmp_path, 15, "Name:\tbroken\n")  # no Uid line
    make_proc(tmp_path, 16, None)  # directory left, status gone: exited meanwhile
    # 15-byte comm, status read, then the process exited before cmdline was read.
    make_proc(tmp_path, 17, status("exits_between_r"))
    reader = ProcReader(tmp_path)
    assert reader.owner(10) == ProcOwner(uid=1001, name="python3")  # real uid, not effective
    assert reader.owner(11) == ProcOwner(uid=1000, name="my_long_training_job")
    assert reader.owner(12) == ProcOwner(uid=1000, name="my_long_trainin")
    assert reader.owner(13) == ProcOwner(uid=1000, name="kworker/0:1H-kb")
    assert reader.owner(14) == ProcOwner(uid=1000, name="a\\b\nc")
    assert reader.owner(15) is None
    assert reader.owner(16) is None
    assert reader.owner(17) is None
    assert reader.owner(99) is None


def test_uids_of_the_whole_uid_t_range(tmp_path: Path) -> None:
    make_proc(tmp_path, 20, status("python3", uid=3_000_000_000))  # a container's range
    make_proc(tmp_path, 21, status("python3", uid=(1 << 32) - 2))
    make_proc(tmp_path, 22, status("python3", uid=1 << 32))  # no uid_t is this: unreadable
    make_proc(tmp_path, 23, "Name:\tx\nUid:\t+5\t5\t5\t5\n")  # not how the kernel writes it
    make_proc(tmp_path, 24, "Name:\tx\nUid:\t-1\t5\t5\t5\n")
    reader = ProcReader(tmp_path)
    assert reader.owner(20) == ProcOwner(uid=3_000_000_000, name="python3")
    assert reader.owner(21) == ProcOwner(uid=(1 << 32) - 2, name="python3")
    assert [reader.owner(pid) for pid in (22, 23, 24)] == [None, None, None]


def test_carriage_return_in_name_cannot_fake_the_owner(tmp_path: Path) -> None:
    # The kernel escapes "\n" and "\\" in Name but not "\r"; Name comes before Uid.
    make_proc(tmp_path, 30, "Name:\tx\rUid:\t0\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\n")
    assert ProcReader(tmp_path).owner(30) == ProcOwner(uid=1000, name="x\rUid:\t0")


_RENAME_AND_SLEEP = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
if libc.prctl(PR_SET_NAME, sys.argv[1].encode(), 0, 0, 0) != 0:
    sys.exit(1)
time.sleep(30)
"""


def test_process_posing_as_another_user_by_its_name(
    sleeper: list[subprocess.Popen[bytes]],
) -> None:
    """Any user could rename a GPU job to "x\\rUid:\\t4242" and have it charged to uid 4242."""
    fake = "x\rUid:\t4242"
    proc = subprocess.Popen([sys.executable, "-c", _RENAME_AND_SLEEP, fake])
    sleeper.append(proc)
    path = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 10
    while not path.read_bytes().startswith(b"Name:\tx\r"):
        assert proc.poll() is None, "prctl failed"
        assert time.monotonic() < deadline, "the child did not rename itself"
        time.sleep(0.01)
    assert ProcReader().owner(proc.pid) == ProcOwner(uid=os.getuid(), name=fake)


def test_real_process_with_a_uid_above_2_31(sleeper: list[subprocess.Popen[bytes]]) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a process as uid 3000000000")
    ids = ["--reuid=3000000000", "--regid=3000000000", "--clear-groups"]
    proc = subprocess.Popen([setpriv, *ids, "sleep", "30"])
    sleeper.append(proc)
    assert ProcReader().owner(started(proc, "sleep")) == ProcOwner(uid=3_000_000_000, name="sleep")


# --- facts(): command line, start time, container, Slurm job ---------------------------------

BTIME = 1_700_000_000
HZ = os.sysconf("SC_CLK_TCK")
DOCKER_ID = "3f4e1b2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
PODMAN_ID = "c0ffee1234567890abcdef1234567890abcdef1234567890abcdef1234567890"
K8S_ID = "8c1d5b7e3a9f2c4d6e8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d0e"
POD_UID = "4a2b6c8d-1e3f-4a5b-8c7d-9e0f1a2b3c4d"
INITIAL_MAP = "         0          0 4294967295\n"


def stat_line(pid: int, comm: str, ticks: int) -> str:
    # Field 22 is starttime; the comm may hold ") " itself.
    rest = ["S", "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12 + [str(ticks)]
    return f"{pid} ({comm}) " + " ".join(rest + ["123456", "789"] + ["0"] * 30) + "\n"


def make_facts_proc(
    root: Path,
    pid: int,
    *,
    ticks: int = 500 * 100,
    comm: str = "python3",
    cmdline: bytes | None = b"python3\0train.py\0--lr\0" + b"0.1\0",
    cgroup: str | None = "0::/user.slice/user-1000.slice/session-4.scope\n",
    uid_map: str | None = INITIAL_MAP,
) -> Path:
    (root / "stat").write_text(f"cpu  1 2 3 4\nintr 5\nctxt 6\nbtime {BTIME}\nprocesses 7\n")
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    (d / "stat").write_text(stat_line(pid, comm, ticks))
    for name, content in (("cmdline", cmdline), ("cgroup", cgroup), ("uid_map", uid_map)):
        if content is not None:
            (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return d


def no_names(tmp_path: Path) -> ContainerNames:
    missing = str(tmp_path / "none")
    return ContainerNames(docker_root=missing, podman_root=missing, pods_log_root=missing,
                          containers_log_root=missing, home=lambda uid: None)


def test_facts_of_this_process() -> None:
    facts = ProcReader().facts(os.getpid())
    assert facts is not None
    assert "pytest" in facts.cmdline
    assert facts.cmdline == " ".join(psutil.Process().cmdline())
    assert abs(facts.start_time - psutil.Process().create_time()) <= 2
    assert ProcReader().facts(os.getpid(), cmdline=False) == ProcFacts(
        cmdline="", start_time=facts.start_time, container=facts.container, job=facts.job)


def test_facts_of_a_vanished_process() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert ProcReader().facts(proc.pid) is None
    assert ProcReader().facts(0) is None
    assert ProcReader().facts(-5) is None


def test_facts_fake_tree(tmp_path: Path) -> None:
    cgroup = "0::/system.slice/slurmstepd.scope/job_81234/step_0/user/task_0\n"
    make_facts_proc(tmp_path, 10, comm="a) b (c", ticks=1234 * HZ + HZ // 2, cgroup=cgroup)
    reader = ProcReader(tmp_path, containers=no_names(tmp_path))
    assert reader.facts(10) == ProcFacts(
        cmdline="python3 train.py --lr 0.1",
        start_time=BTIME + 1234,
        job=SlurmJobRef(81234, "0"),
    )
    assert reader.facts(11) is None  # no such process


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        (b"a\0b\0", 100, "a b"),
        (b"a\0b\0", 3, "a b"),  # exactly the limit once the final NUL is dropped
        (b"a\0b\0c\0", 3, "a b\u2026"),
        (b"ab" + b"\0" * 5000, 2, "ab"),
        (b"abcdef\0", 3, "abc\u2026"),
        (b"worker: idle\0\0\0\0\0\0", 100, "worker: idle"),  # setproctitle's padding
        (b"caf\xc3\xa9\0x\0", 4, "caf\u2026"),  # no half "é" before the mark
        (b"bad\xff\0", 100, "bad\ufffd"),
        (b"", 100, ""),  # a kernel thread or a zombie
    ],
)
def test_cmdline_bounded(tmp_path: Path, raw: bytes, limit: int, expected: str) -> None:
    make_facts_proc(tmp_path, 10, cmdline=raw)
    facts = ProcReader(tmp_path, containers=no_names(tmp_path)).facts(10, cmdline_max=limit)
    assert facts is not None
    assert facts.cmdline == expected
    assert len(facts.cmdline.rstrip("\u2026").encode()) <= max(limit, len(expected.encode()))


def test_long_real_cmdline_is_cut(sleeper: list[subprocess.Popen[bytes]]) -> None:
    sleep = shutil.which("sleep")
    assert sleep
    proc = subprocess.Popen([sleep, "30", *["0"] * 3000])  # sleep adds up its arguments
    sleeper.append(proc)
    pid = started(proc, "sleep")
    full = " ".join([sleep, "30", *["0"] * 3000])
    facts = ProcReader().facts(pid)
    assert facts is not None
    assert facts.cmdline == full[:4096] + "\u2026"
    assert ProcReader().facts(pid, cmdline_max=len(full)) == replace(facts, cmdline=full)


def test_no_cmdline_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_facts_proc(tmp_path, 10)
    opened: list[str] = []
    real = procs_module._read

    def spy(path: str, limit: int) -> bytes:
        opened.append(os.path.basename(path))
        return real(path, limit)

    monkeypatch.setattr(procs_module, "_read", spy)
    reader = ProcReader(tmp_path, containers=no_names(tmp_path))
    facts = reader.facts(10, cmdline=False)
    assert facts is not None and facts.cmdline == ""
    assert "cmdline" not in opened
    assert facts.start_time == BTIME + 500
    # Asked with a command line later: read then, not answered from the cache of "".
    assert reader.facts(10) is not None
    assert opened.count("cmdline") == 1


def test_cache_and_pid_reuse(tmp_path: Path) -> None:
    now = [0.0]
    d = make_facts_proc(tmp_path, 10, ticks=100 * HZ)
    reader = ProcReader(tmp_path, containers=no_names(tmp_path), refresh=60.0,
                        clock=lambda: now[0])
    first = reader.facts(10)
    assert first is not None and first.cmdline == "python3 train.py --lr 0.1"
    # Same process (same start time): the command line and cgroup come from the cache.
    (d / "cmdline").write_bytes(b"changed\0")
    (d / "cgroup").write_text("0::/system.slice/slurmstepd.scope/job_1/step_0\n")
    assert reader.facts(10) == first
    # The pid reused by a new process: its start time differs, everything is read again.
    (d / "stat").write_text(stat_line(10, "other", 200 * HZ))
    again = reader.facts(10)
    assert again == ProcFacts("changed", BTIME + 200, job=SlurmJobRef(1, "0"))
    # A process moved to another cgroup (pam_slurm_adopt) is seen after the refresh interval.
    (d / "cgroup").write_text("0::/system.slice/slurmstepd.scope/job_2/step_extern\n")
    assert reader.facts(10) == again
    now[0] = 61.0
    moved = reader.facts(10)
    assert moved is not None and moved.job == SlurmJobRef(2, "extern")


def test_cache_is_bounded(tmp_path: Path) -> None:
    for pid in range(10, 20):
        make_facts_proc(tmp_path, pid)
    reader = ProcReader(tmp_path, containers=no_names(tmp_path), cache_cap=4)
    for pid in range(10, 20):
        assert reader.facts(pid) is not None
    assert sorted(reader._cache) == [16, 17, 18, 19]


def test_unreadable_files_leave_their_facts_empty(tmp_path: Path) -> None:
    # A directory where a file should be stands for EACCES (hidepid=1, a root agent can't be
    # denied by mode bits): the rest is still read.
    d = make_facts_proc(tmp_path, 10, cmdline=None, cgroup=f"0::/docker/{DOCKER_ID}\n")
    (d / "cmdline").mkdir()
    reader = ProcReader(tmp_path, containers=no_names(tmp_path))
    assert reader.facts(10) == ProcFacts("", BTIME + 500, ContainerRef(DOCKER_ID, "docker"))
    d = make_facts_proc(tmp_path, 11, cgroup=None)
    (d / "cgroup").mkdir()
    (d / "stat").unlink()
    (d / "stat").mkdir()
    assert reader.facts(11) == ProcFacts("python3 train.py --lr 0.1", 0)
    make_facts_proc(tmp_path, 12)
    (tmp_path / "12" / "stat").write_text("12 (garbled\n")
    assert reader.facts(12) == ProcFacts(
        "python3 train.py --lr 0.1", 0, job=None, container=None)


@pytest.mark.parametrize(
    ("uid_map", "host_uid"),
    [
        ("         0       1000          1\n         1     100000      65536\n", 1000),  # rootless
        (INITIAL_MAP, None),  # rootful: the initial user namespace
        ("         0          0          1\n", 0),  # unshare --map-root-user, run by root
        ("      1000       1000          1\n", 1000),  # unshare --map-current-user
        # userns-remap where the namespace cannot be opened (no ptrace access, as here: a fake
        # tree): the range's first host uid. Its maker, root, where it can (integration test).
        ("0 100000 65536\n", 100000),
        ("0 x 1\n", None),
        ("", None),
    ],
)
def test_rootless_owner_from_uid_map(tmp_path: Path, uid_map: str, host_uid: int | None) -> None:
    make_facts_proc(tmp_path, 10, cgroup=f"4:memory:/docker/{DOCKER_ID}\n", uid_map=uid_map)
    names = {1000: "alice", 0: "root", 100000: "dockremap"}
    reader = ProcReader(tmp_path, containers=no_names(tmp_path), user_name=names.__getitem__)
    facts = reader.facts(10)
    assert facts is not None and facts.container is not None
    assert facts.container.host_uid == host_uid
    assert facts.container.host_user == ("" if host_uid is None else names[host_uid])


def test_rootless_owner_from_user_slice_wins(tmp_path: Path) -> None:
    user = "/user.slice/user-1001.slice/user@1001.service/user.slice"
    cgroup = f"0::{user}/libpod-{PODMAN_ID}.scope\n"
    make_facts_proc(tmp_path, 10, cgroup=cgroup, uid_map="0 1001 1\n1 200000 65536\n")
    make_facts_proc(tmp_path, 11, cgroup=cgroup, uid_map=None)  # uid_map unreadable
    reader = ProcReader(tmp_path, containers=no_names(tmp_path), user_name=lambda uid: "bob")
    for pid in (10, 11):
        facts = reader.facts(pid)
        assert facts is not None
        assert facts.container == ContainerRef(PODMAN_ID, "podman", host_uid=1001, host_user="bob")


def test_user_name_lookup_failure_keeps_the_facts(tmp_path: Path) -> None:
    make_facts_proc(tmp_path, 10, cgroup=f"0::/docker/{DOCKER_ID}\n", uid_map="0 1000 1\n")

    def broken(uid: int) -> str:
        raise RuntimeError("nss down")

    facts = ProcReader(tmp_path, containers=no_names(tmp_path), user_name=broken).facts(10)
    assert facts is not None
    assert facts.container == ContainerRef(DOCKER_ID, "docker", host_uid=1000)


# --- container names from the runtimes' files ---------------------------------------------------


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def docker_config(cid: str, name: str) -> dict[str, object]:
    # The fields around "Name" as dockerd writes them (shortened).
    return {"StreamConfig": {}, "State": {"Running": True, "Pid": 4242}, "ID": cid,
            "Created": "2024-05-01T10:00:00Z", "Path": "python", "Args": ["train.py"],
            "Config": {"Hostname": cid[:12], "Image": "pytorch/pytorch:2.3.0-cuda12.1"},
            "Name": name, "Driver": "overlay2"}


def podman_entry(cid: str, name: str) -> dict[str, object]:
    return {"id": cid, "names": [name], "image": "0f1e2d3c" * 8, "layer": "ab" * 32,
            "metadata": json.dumps({"image-name": "docker.io/library/ubuntu:22.04"}),
            "created": "2024-05-01T10:00:00Z", "flags": {"MountLabel": ""}}


@pytest.fixture
def runtime_tree(tmp_path: Path) -> Path:
    """/var/lib/docker, /var/lib/containers/storage, /var/log/pods, /var/log/containers and two
    homes, as a node with docker, podman and a kubelet lays them out."""
    root = tmp_path / "node"
    write_json(root / "docker/containers" / DOCKER_ID / "config.v2.json",
               docker_config(DOCKER_ID, "/train-bert"))
    write_json(root / "storage/overlay-containers/containers.json",
               [podman_entry("ab" * 32, "other"), podman_entry(PODMAN_ID, "jupyter")])
    home = root / "home/alice"
    write_json(home / ".local/share/docker/containers" / DOCKER_ID / "config.v2.json",
               docker_config(DOCKER_ID, "/alice-rootless-docker"))
    write_json(home / ".local/share/containers/storage/overlay-containers/containers.json",
               [podman_entry(PODMAN_ID, "alice-notebook")])
    pods = root / "log/pods"
    for container in ("pytorch", "metrics-sidecar"):
        (pods / f"ml_trainer-7d9f8_{POD_UID}" / container).mkdir(parents=True)
        (pods / f"ml_trainer-7d9f8_{POD_UID}" / container / "0.log").write_text("")
    (pods / "kube-system_coredns-5d78c9869d-abcde_0a1b2c3d-0000-4000-8000-000000000000"
     / "coredns").mkdir(parents=True)
    links = root / "log/containers"
    links.mkdir(parents=True)
    (links / f"trainer-7d9f8_ml_pytorch-{K8S_ID}.log").symlink_to(
        pods / f"ml_trainer-7d9f8_{POD_UID}/pytorch/0.log")
    (links / f"trainer-7d9f8_ml_metrics-sidecar-{'e' * 64}.log").symlink_to(
        pods / f"ml_trainer-7d9f8_{POD_UID}/metrics-sidecar/0.log")
    return root


def names_in(root: Path, **kwargs: Any) -> ContainerNames:
    homes = {1000: str(root / "home/alice")}
    return ContainerNames(
        docker_root=str(root / "docker"), podman_root=str(root / "storage"),
        pods_log_root=str(root / "log/pods"), containers_log_root=str(root / "log/containers"),
        home=homes.get, **kwargs)


def test_container_names_through_facts(tmp_path: Path, runtime_tree: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    podu = POD_UID.replace("-", "_")
    cases = {
        20: (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", INITIAL_MAP,
             ContainerRef(DOCKER_ID, "docker", name="train-bert")),
        21: (f"0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker.service/docker/"
             f"{DOCKER_ID}\n", "0 1000 1\n1 100000 65536\n",
             ContainerRef(DOCKER_ID, "docker", name="alice-rootless-docker", host_uid=1000,
                          host_user="alice")),
        22: (f"0::/machine.slice/libpod-{PODMAN_ID}.scope/container\n", INITIAL_MAP,
             ContainerRef(PODMAN_ID, "podman", name="jupyter")),
        # Rootless podman on cgroup v1 cannot create cgroups: the owner comes from uid_map.
        23: (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{PODMAN_ID}"
             ".scope\n", "0 1000 1\n",
             ContainerRef(PODMAN_ID, "podman", name="alice-notebook", host_uid=1000,
                          host_user="alice")),
        24: ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
             f"{podu}.slice/cri-containerd-{K8S_ID}.scope\n", INITIAL_MAP,
             ContainerRef(K8S_ID, "containerd", name="ml/trainer-7d9f8/pytorch", pod=POD_UID)),
        25: ("0::/lxc.payload.gpu-box/init.scope\n", "0 100000 65536\n",
             ContainerRef("gpu-box", "lxc", name="gpu-box", host_uid=100000,
                          host_user="100000")),
    }
    for pid, (cgroup, uid_map, _) in cases.items():
        make_facts_proc(proc, pid, cgroup=cgroup, uid_map=uid_map)
    users = {1000: "alice"}
    reader = ProcReader(proc, containers=names_in(runtime_tree),
                        user_name=lambda uid: users.get(uid, str(uid)))
    for pid, (_, _, expected) in cases.items():
        facts = reader.facts(pid)
        assert facts is not None
        assert facts.container == expected, pid


def test_kubernetes_names(runtime_tree: Path) -> None:
    names = names_in(runtime_tree)
    pod = "0a1b2c3d-0000-4000-8000-000000000000"
    # One container in the pod: named without /var/log/containers.
    assert names.name(ContainerRef("f" * 64, "cri-o", pod=pod)) == (
        "kube-system/coredns-5d78c9869d-abcde/coredns")
    # Two containers, and this id in no log link (the pause container): the pod only.
    assert names.name(ContainerRef("d" * 64, "containerd", pod=POD_UID)) == "ml/trainer-7d9f8"
    assert names.name(ContainerRef("e" * 64, "containerd", pod=POD_UID)) == (
        "ml/trainer-7d9f8/metrics-sidecar")
    assert names.name(ContainerRef("e" * 64, "containerd", pod="9" * 32)) == ""  # unknown pod


def test_names_unreadable_or_hostile_files(runtime_tree: Path) -> None:
    names = names_in(runtime_tree)
    # Not there (a container just created, or the storage elsewhere): no name.
    assert names.name(ContainerRef("b" * 64, "docker")) == ""
    assert names.name(ContainerRef(DOCKER_ID, "docker", host_uid=2000)) == ""  # no home known
    # A FIFO planted where the rootless storage is must not hang a root agent.
    storage = runtime_tree / "home/alice/.local/share/containers/storage/overlay-containers"
    (storage / "containers.json").unlink()
    os.mkfifo(storage / "containers.json")
    assert names.name(ContainerRef(PODMAN_ID, "podman", host_uid=1000)) == ""
    # Not JSON, the wrong shape, the wrong id: no name.
    config = runtime_tree / "docker/containers" / DOCKER_ID / "config.v2.json"
    for content in ("{not json", "[1, 2]", json.dumps(docker_config("c" * 64, "/x")),
                    json.dumps(docker_config(DOCKER_ID, "/bad\nname"))):
        config.write_text(content)
        assert names_in(runtime_tree).name(ContainerRef(DOCKER_ID, "docker")) == ""


def test_names_files_of_another_owner_are_ignored(runtime_tree: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    config = runtime_tree / "home/alice/.local/share/docker/containers" / DOCKER_ID
    os.chown(config / "config.v2.json", 1234, 1234)
    assert names_in(runtime_tree).name(ContainerRef(DOCKER_ID, "docker", host_uid=1000)) == ""
    os.chown(config / "config.v2.json", 1000, 1000)
    assert names_in(runtime_tree).name(ContainerRef(DOCKER_ID, "docker", host_uid=1000)) == (
        "alice-rootless-docker")


def test_names_bounded_reads(tmp_path: Path) -> None:
    assert read_bounded("/dev/zero", 1024) is None  # not a regular file
    # /proc files claim size 0: the bound holds on what is read, not on what stat says.
    assert read_bounded("/proc/self/status", 10) is None
    assert read_bounded("/proc/self/status", 1 << 20) is not None
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    assert read_bounded(str(big), 1024) is None
    assert read_bounded(str(big), 2048) == b" " * 2048
    assert read_bounded(str(tmp_path / "missing"), 1024) is None
    assert read_bounded(str(tmp_path), 1024) is None  # a directory


def test_names_cache_ttl_and_cap(runtime_tree: Path) -> None:
    now = [0.0]
    names = names_in(runtime_tree, ttl=300.0, miss_ttl=30.0, cap=2, clock=lambda: now[0])
    ref = ContainerRef(DOCKER_ID, "docker")
    config = runtime_tree / "docker/containers" / DOCKER_ID / "config.v2.json"
    assert names.name(ref) == "train-bert"
    config.write_text(json.dumps(docker_config(DOCKER_ID, "/renamed")))
    assert names.name(ref) == "train-bert"  # cached
    now[0] = 301.0
    assert names.name(ref) == "renamed"
    # A miss is looked up again sooner: the runtime may not have written the file yet.
    late = ContainerRef("b" * 64, "docker")
    assert names.name(late) == ""
    write_json(runtime_tree / "docker/containers" / ("b" * 64) / "config.v2.json",
               docker_config("b" * 64, "/late"))
    assert names.name(late) == ""
    now[0] = 332.0
    assert names.name(late) == "late"
    names.name(ContainerRef("c" * 64, "docker"))
    assert len(names._cache) == 2
