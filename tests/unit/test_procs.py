"""Process owners from /proc: live processes, long names, vanished pids, a fake tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

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
