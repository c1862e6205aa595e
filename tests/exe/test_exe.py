"""The single executable (tools/build_exe.py): GetInfo on the fake NVML, natively and inside an
old-distribution root filesystem, with the host's NVML library and the host's getent.

Prints what it measures (size, time to first answer, RSS of each process) in the summary.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from fakenvml import LIB_NAME, FakeGpu, FakeProc, write_config

from hmonitor._pb import hm_pb2, hm_pb2_grpc

from .support import Rootfs, passwd_uids, report

pytestmark = [pytest.mark.exe, pytest.mark.timeout(900)]

GIB = 1 << 30
GHOST_NAME = "hmghost"  # known only to the fake getent: no passwd entry anywhere
# Depth in the process tree -> what it is.
LEVELS = ("staticx loader", "PyInstaller bootloader", "Python agent")
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_info(port: int, timeout: float = 5.0) -> hm_pb2.HostInfo:
    # A fresh channel per call: one channel would back off after refused connections and
    # inflate the measured start time.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        info: hm_pb2.HostInfo = hm_pb2_grpc.HostMonitorStub(channel).GetInfo(
            hm_pb2.RequestInfo(), timeout=timeout
        )
        return info


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    first_answer_s: float
    first: hm_pb2.HostInfo

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def inner(self) -> psutil.Process:
        return self.tree()[-1]

    def rss_line(self) -> str:
        parts = [f"{name} {p.memory_info().rss / 2**20:.1f}" for name, p in zip(
            LEVELS, self.tree(), strict=False)]
        total = sum(p.memory_info().rss for p in self.tree()) / 2**20
        return f"RSS MiB: {', '.join(parts)}; total {total:.1f}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(cmd: list[str], env: Mapping[str, str], port: int, log: Path) -> Running:
    """Starts the agent and waits for its first GetInfo answer (the start time measured)."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = started + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"agent exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"no answer within 60 s:\n{log.read_text()}")
        with socket.socket() as s:
            listening = s.connect_ex(("127.0.0.1", port)) == 0
        if listening:
            try:
                info = get_info(port)
                break
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    return Running(proc, port, log, time.monotonic() - started, info)


@dataclass
class Workload:
    """Processes that the fake NVML lists on GPU 0: one of ours, and (as root) one whose uid
    has no passwd entry, so only the fake getent on PATH can name it."""

    mine: subprocess.Popen[bytes]
    ghost: subprocess.Popen[bytes] | None
    ghost_uid: int

    def gpus(self) -> list[FakeGpu]:
        procs = [FakeProc(self.mine.pid, 3 * GIB, sm_util=20)]
        if self.ghost is not None:
            procs.append(FakeProc(self.ghost.pid, 1 * GIB))
        return [
            FakeGpu(name="NVIDIA H200", util=40, mem_used=4 * GIB, procs=procs),
            FakeGpu(name="NVIDIA A100-SXM4-80GB", fan=30, mem_total=80 * GIB),
        ]

    def fake_getent(self, script: Path, env_log: str) -> None:
        """A getent that records the environment the agent gave it, answers for the ghost
        and hands everything else to the real one."""
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            "#!/bin/sh\n"
            f'env > "{env_log}"\n'
            f'if [ "$1" = passwd ] && [ "$2" = {self.ghost_uid} ]; then\n'
            f'  echo "{GHOST_NAME}:x:{self.ghost_uid}:{self.ghost_uid}::/nonexistent:/bin/false"\n'
            "  exit 0\n"
            "fi\n"
            'PATH=/usr/bin:/bin exec getent "$@"\n'
        )
        script.chmod(0o755)

    def check(self, info: hm_pb2.HostInfo) -> None:
        assert info.err == ""
        assert info.hostname == socket.gethostname()
        assert [g.name for g in info.gpus] == ["NVIDIA H200", "NVIDIA A100-SXM4-80GB"]
        assert [g.fanspeed for g in info.gpus] == [0, 30]
        procs = {p.pid: p for p in info.gpus[0].procs}
        mine = procs[self.mine.pid]
        assert (mine.username, mine.basename, mine.mem) == (
            pwd.getpwuid(os.getuid()).pw_name, "sleep", 3 * GIB)
        if self.ghost is not None:
            ghost = procs[self.ghost.pid]
            assert (ghost.uid, ghost.username) == (self.ghost_uid, GHOST_NAME)
        assert list(info.gpus[1].procs) == []


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _unused_uid() -> int:
    uid = 54321
    while _known_uid(uid):
        uid += 1
    return uid


@pytest.fixture
def workload() -> Iterator[Workload]:
    uid = _unused_uid()
    mine = subprocess.Popen(["sleep", "600"])
    ghost = subprocess.Popen(["sleep", "600"], user=uid, group=uid) if os.geteuid() == 0 else None
    yield Workload(mine, ghost, uid)
    for proc in (mine, ghost):
        if proc is not None:
            proc.kill()
            proc.wait()


def _mapped_nvml(proc: psutil.Process) -> list[str]:
    return sorted({m.path for m in proc.memory_maps(grouped=True) if LIB_NAME in m.path})


def _env_of(log: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)


def test_native_getinfo_on_fake_nvml(
    exe: Path, fake_nvml_lib: Path, workload: Workload, tmp_path: Path
) -> None:
    config = tmp_path / "gpus.txt"
    write_config(config, workload.gpus())
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    getent_log = tmp_path / "getent.env"
    workload.fake_getent(tmp_path / "bin" / "getent", str(getent_log))
    port, metrics_port = free_port(), free_port()
    path = f"{tmp_path / 'bin'}:{SEARCH_PATH}"
    env = {
        "PATH": path,
        "TMPDIR": str(tmpdir),
        "LD_LIBRARY_PATH": str(fake_nvml_lib),
        "FAKE_NVML_CONFIG": str(config),
        "GOHM_ADDR": f"127.0.0.1:{port}",
        "GOHM_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
    }
    agent = start([str(exe)], env, port, tmp_path / "agent.log")
    try:
        workload.check(agent.first)
        assert len(agent.tree()) == 3, [p.name() for p in agent.tree()]
        # The host's library, from the host's LD_LIBRARY_PATH, not a bundled copy.
        assert _mapped_nvml(agent.inner()) == [str(fake_nvml_lib / LIB_NAME)]
        bundled = [str(p) for p in tmpdir.rglob("*") if "nvidia-ml" in p.name]
        assert bundled == [], "NVML must never be bundled"
        if workload.ghost is not None:
            # getent came from PATH and saw the host's library path, not the bundle's.
            seen = _env_of(getent_log)
            assert seen["LD_LIBRARY_PATH"] == str(fake_nvml_lib)
            assert seen["PATH"] == path
        report(f"native: first answer {agent.first_answer_s:.2f} s; {agent.rss_line()}")
        # /metrics from the bundle too (prometheus_client and ssl are in it).
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        assert "\nhmonitor_nvml_up 1.0\n" in text and "\nDCGM_FI_DEV_GPU_TEMP{" in text
        for _ in range(200):
            get_info(port)
        report(f"native: after 200 calls, {agent.rss_line()}")
    finally:
        agent.stop()


def test_second_copy_exits_0_at_once(exe: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": SEARCH_PATH, "TMPDIR": str(tmp_path), "GOHM_ADDR": f"127.0.0.1:{port}"}
    agent = start([str(exe)], env, port, tmp_path / "agent.log")
    try:
        started = time.monotonic()
        second = subprocess.run(
            [str(exe)], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        took = time.monotonic() - started
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already in use" in second.stdout
        assert took < 10
        assert agent.proc.poll() is None and get_info(port).hostname
        report(f"native: second copy exited 0 after {took:.2f} s")
    finally:
        agent.stop()


def test_without_nvml_still_serves_and_says_why(exe: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": SEARCH_PATH, "TMPDIR": str(tmp_path), "GOHM_ADDR": f"127.0.0.1:{port}"}
    agent = start([str(exe)], env, port, tmp_path / "agent.log")
    try:
        info = agent.first
    finally:
        agent.stop()
    if "not found" not in info.err:
        pytest.skip(f"this machine has a real libnvidia-ml.so.1 (err={info.err!r})")
    assert "libnvidia-ml.so.1" in info.err
    assert list(info.gpus) == [] and info.hostname == socket.gethostname()


def test_sigterm_to_the_outer_process_stops_all_and_cleans_up(exe: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    port = free_port()
    env = {"PATH": SEARCH_PATH, "TMPDIR": str(tmpdir), "GOHM_ADDR": f"127.0.0.1:{port}"}
    agent = start([str(exe)], env, port, tmp_path / "agent.log")
    try:
        tree = agent.tree()
        unpacked = sorted(p.name.split("-")[0].rstrip("0123456789") for p in tmpdir.iterdir())
        assert len(unpacked) == 2, unpacked  # staticx-XXXX and PyInstaller's _MEIXXXX
        os.kill(agent.proc.pid, signal.SIGTERM)  # only the outer one, as `kill PID` does
        agent.proc.wait(timeout=15)
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert alive == []
        assert list(tmpdir.iterdir()) == []
    finally:
        agent.stop()


@dataclass
class OldDistribution:
    exe: Path
    rootfs: Rootfs
    fake_nvml_lib: Path


@pytest.fixture
def old_dist(exe: Path, old_rootfs: Rootfs, fake_nvml_lib: Path) -> OldDistribution:
    return OldDistribution(exe, old_rootfs, fake_nvml_lib)


@pytest.mark.parametrize("nvml_from", ["LD_LIBRARY_PATH", "ld.so.cache"])
def test_in_old_distribution(
    old_dist: OldDistribution, workload: Workload, tmp_path: Path, nvml_from: str
) -> None:
    """Runs as `nobody` in a chroot of an old Debian (its glibc, its /etc/passwd, its
    ld.so.cache), with /proc mounted in a private mount namespace; GetInfo from outside."""
    exe, old_rootfs, fake_nvml_lib = old_dist.exe, old_dist.rootfs, old_dist.fake_nvml_lib
    root = old_rootfs.path
    stage = root / "opt" / "hmtest"  # everything this test puts into the tree, removed after
    ldconf = root / "etc" / "ld.so.conf.d" / "zz-hmtest.conf"
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) missing")
    if workload.ghost is not None:
        assert workload.ghost_uid not in passwd_uids(root / "etc" / "passwd")
    try:
        if stage.exists():
            shutil.rmtree(stage)
        (stage / "out").mkdir(parents=True)
        (stage / "out").chmod(0o777)
        shutil.copy2(exe, stage / "hmonitor")
        (stage / "hmonitor").chmod(0o755)
        libdir = stage / ("lib" if nvml_from == "LD_LIBRARY_PATH" else "nvidia")
        libdir.mkdir()
        shutil.copy2(fake_nvml_lib / LIB_NAME, libdir / LIB_NAME)
        write_config(stage / "gpus.txt", workload.gpus())
        (stage / "gpus.txt").chmod(0o644)
        workload.fake_getent(stage / "bin" / "getent", "/opt/hmtest/out/getent.env")
        env = {
            "PATH": f"/opt/hmtest/bin:{SEARCH_PATH}",
            "TMPDIR": "/tmp",
            "HOME": "/",
            "FAKE_NVML_CONFIG": "/opt/hmtest/gpus.txt",
        }
        if nvml_from == "LD_LIBRARY_PATH":
            env["LD_LIBRARY_PATH"] = "/opt/hmtest/lib"
        else:
            # As drivers packaged for Ubuntu 16.04/18.04 register their directory.
            ldconf.write_text("/opt/hmtest/nvidia\n")
            subprocess.run(["chroot", str(root), "ldconfig"], check=True)
        port = free_port()
        env["GOHM_ADDR"] = f"127.0.0.1:{port}"
        inside = (
            'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && '
            'exec chroot --userspec=65534:65534 "$1" /opt/hmtest/hmonitor'
        )
        cmd = [str(shutil.which("unshare")), "--mount", "--propagation", "private", "--",
               "/bin/sh", "-c", inside, "sh", str(root)]
        agent = start(cmd, env, port, tmp_path / "agent.log")
        try:
            workload.check(agent.first)
            assert agent.inner().uids().real == 65534
            mapped = _mapped_nvml(agent.inner())
            assert len(mapped) == 1 and mapped[0].endswith(f"{libdir.name}/{LIB_NAME}"), mapped
            if workload.ghost is not None:
                seen = _env_of(stage / "out" / "getent.env")
                assert seen.get("LD_LIBRARY_PATH") == env.get("LD_LIBRARY_PATH")
            report(
                f"{old_rootfs.suite} ({old_rootfs.glibc}), NVML via {nvml_from}: first answer "
                f"{agent.first_answer_s:.2f} s; {agent.rss_line()}"
            )
        finally:
            agent.stop()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if ldconf.exists():
            ldconf.unlink()
            subprocess.run(["chroot", str(root), "ldconfig"], check=False)
