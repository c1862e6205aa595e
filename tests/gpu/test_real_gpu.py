"""The agent on the real driver agrees with nvidia-smi, field by field.

A real `hmonitor` subprocess serves gRPC on loopback; a tiny CUDA program (ctypes on
libcuda.so.1, no framework) holds 256 MiB on the first GPU so there is a process to see.  Static
values must match exactly; live ones must lie within a tolerance of nvidia-smi's readings taken
just before and just after GetInfo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import Agent, start_agent

from hmonitor._pb import hm_pb2

from . import smi

MiB = 1 << 20
MEM_TOLERANCE_MIB = 64

# Holds a context and 256 MiB on CUDA device 0 (pick the GPU with CUDA_VISIBLE_DEVICES) until
# its stdin closes.  The primary context API is the same in every CUDA version since 7.
CUDA_HOLDER = r"""
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
def check(rc, what):
    if rc != 0:
        sys.exit(f"{what} failed with CUDA error {rc}")
check(cuda.cuInit(0), "cuInit")
dev = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
ptr = ctypes.c_uint64()
check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(256 << 20)), "cuMemAlloc")
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    started = start_agent(tmp_path_factory.mktemp("agent"), ["--cache-ttl", "0.2"])
    yield started
    started.stop()


@pytest.fixture(scope="module")
def cuda_process(agent: Agent) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The CUDA holder on GPU 0 (on its first MIG device when MIG is on): (process, GPU UUID)."""
    first = smi.gpus()[0]
    visible = first.uuid
    if first.mig_mode == "Enabled":
        info = agent.get_info()
        (gpu0,) = [g for g in info.gpus if g.uuid == first.uuid]
        if not gpu0.mig:
            pytest.skip(f"GPU 0 ({first.uuid}) is in MIG mode with no MIG device to run on")
        visible = gpu0.mig[0].uuid
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
    with subprocess.Popen(
        [sys.executable, "-c", CUDA_HOLDER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.wait(timeout=30)
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the CUDA holder did not start: {line}{err}")
        try:
            yield proc, first.uuid
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)


def info_with(agent: Agent, pid: int, timeout: float = 30.0) -> hm_pb2.HostInfo:
    """GetInfo once the agent lists `pid` (its snapshot may be a moment old)."""
    deadline = time.monotonic() + timeout
    while True:
        info = agent.get_info()
        if any(p.pid == pid for g in info.gpus for p in g.procs):
            return info
        if time.monotonic() > deadline:
            pytest.fail(f"the agent never listed pid {pid}: {info}")
        time.sleep(0.3)


def within(
    got: float, readings: list[float | None], *, abs_tol: float, rel_tol: float = 0.0
) -> bool:
    """`got` lies in the span of nvidia-smi's readings, widened by the tolerance."""
    values = [r for r in readings if r is not None]
    assert values, "nvidia-smi reported no value"
    low, high = min(values), max(values)
    slack = max(abs_tol, rel_tol * high)
    return low - slack <= got <= high + slack


def test_agent_matches_nvidia_smi(
    agent: Agent, cuda_process: tuple[subprocess.Popen[str], str]
) -> None:
    proc, _ = cuda_process
    info_with(agent, proc.pid)
    before = smi.gpus()
    info = agent.get_info()
    after = smi.gpus()
    print("\nnvidia-smi:", *before, sep="\n  ")
    print("agent:", info, sep="\n")

    assert info.err == ""
    assert [g.uuid for g in info.gpus] == [g.uuid for g in before]
    assert info.driver_version == before[0].driver
    banner_cuda = smi.cuda_version()
    if banner_cuda is not None:
        assert info.cuda_version == banner_cuda

    for ours, s0, s1 in zip(info.gpus, before, after, strict=True):
        where = f"GPU {s0.index} ({s0.uuid})"
        # Static values: exact.
        assert ours.id == s0.index, where
        assert ours.pci_bus_id.upper() == s0.pci_bus_id.upper(), where
        assert ours.name == s0.name, where
        assert abs(ours.mem_total // MiB - s0.mem_total_mib) <= 1, where  # smi rounds to MiB
        if s0.mig_mode is None:
            assert not ours.HasField("mig_enabled"), where
        else:
            assert ours.HasField("mig_enabled") and ours.mig_enabled == (
                s0.mig_mode == "Enabled"
            ), where

        # Live values: within the span of the two smi readings, widened by a tolerance.
        reserved = s0.optional.get("memory.reserved") or 0.0
        used_mib = ours.mem_used / MiB
        assert within(
            used_mib, [s0.mem_used_mib, s1.mem_used_mib], abs_tol=MEM_TOLERANCE_MIB
        ) or within(  # newer nvidia-smi leaves the driver's reserved memory out of "used"
            used_mib,
            [s0.mem_used_mib + reserved, s1.mem_used_mib + reserved],
            abs_tol=MEM_TOLERANCE_MIB,
        ), (where, used_mib, s0.mem_used_mib, reserved)
        if s0.utilization is None:  # MIG mode: not reported
            assert ours.utilization == 0, where
        else:
            assert within(ours.utilization, [s0.utilization, s1.utilization], abs_tol=10), where
        assert within(ours.temp, [s0.temp, s1.temp], abs_tol=3), where
        if s0.fan is None:
            assert ours.fanspeed == 0, where
        else:
            assert within(ours.fanspeed, [s0.fan, s1.fan], abs_tol=5), where
        check_power_and_clocks(ours, s0, s1, where)
        check_ecc(ours, s0, where)
        if ours.mig_enabled:
            check_mig(ours, where)


def check_power_and_clocks(
    ours: hm_pb2.GPUInfo, s0: smi.SmiGpu, s1: smi.SmiGpu, where: str
) -> None:
    if s0.power_w is None:
        assert not ours.HasField("power_mw"), where
    else:
        assert within(ours.power_mw / 1000, [s0.power_w, s1.power_w], abs_tol=5, rel_tol=0.15), (
            where,
            ours.power_mw,
            s0.power_w,
        )
    enforced = s0.optional.get("enforced.power.limit")
    if enforced is not None:
        assert abs(ours.power_limit_mw / 1000 - enforced) <= 1, (where, ours.power_limit_mw)
    elif s0.power_limit_w is None:
        assert not ours.HasField("power_limit_mw"), where
    else:
        assert within(ours.power_limit_mw / 1000, [s0.power_limit_w], abs_tol=1, rel_tol=0.05)
    for name, ours_clock, readings in (
        ("sm", ours.sm_clock_mhz, [s0.sm_clock, s1.sm_clock]),
        ("mem", ours.mem_clock_mhz, [s0.mem_clock, s1.mem_clock]),
    ):
        if readings[0] is None:
            assert not ours.HasField(f"{name}_clock_mhz"), where
        else:
            assert within(ours_clock, readings, abs_tol=30, rel_tol=0.10), (where, name)


def check_ecc(ours: hm_pb2.GPUInfo, s0: smi.SmiGpu, where: str) -> None:
    for field, key in (
        ("ecc_corrected", "ecc.errors.corrected.volatile.total"),
        ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total"),
    ):
        if key not in s0.optional:
            continue
        expected = s0.optional[key]
        if expected is None:
            assert not ours.HasField(field), (where, field)
        else:
            # Counters only grow: the agent read them a moment before nvidia-smi.
            assert ours.HasField(field) and getattr(ours, field) <= expected, (where, field)


def check_mig(ours: hm_pb2.GPUInfo, where: str) -> None:
    listed = smi.mig_devices()
    for m in ours.mig:
        assert listed.get(m.uuid) == m.profile, (where, m.uuid, listed)
        assert m.mem_total > 0 and m.mem_used <= m.mem_total, (where, m.uuid)
        assert m.HasField("sm_count") and m.sm_count > 0, (where, m.uuid)


def test_processes_match_nvidia_smi(
    agent: Agent, cuda_process: tuple[subprocess.Popen[str], str]
) -> None:
    proc, gpu_uuid = cuda_process
    info = info_with(agent, proc.pid)
    apps = smi.apps()
    print("\nnvidia-smi compute apps:", *apps, sep="\n  ")
    by_uuid = {g.uuid: g for g in info.gpus}

    ours = [p for p in by_uuid[gpu_uuid].procs if p.pid == proc.pid]
    assert len(ours) == 1, by_uuid[gpu_uuid].procs
    (mine,) = ours
    assert mine.uid == os.getuid()
    assert mine.basename.startswith("python")
    assert mine.mem >= 256 * MiB  # what it allocated, plus its context
    if by_uuid[gpu_uuid].mig_enabled:
        assert mine.HasField("mig"), mine
    else:
        assert not mine.HasField("mig"), mine

    for app in apps:
        if app.gpu_uuid not in by_uuid:
            continue  # a MIG device's UUID on older drivers
        listed = {p.pid: p for p in by_uuid[app.gpu_uuid].procs}
        if app.pid not in listed:
            # nvidia-smi in a container may show host pids; ours must still be there.
            assert app.pid != proc.pid
            continue
        if app.used_mib is not None:
            assert abs(listed[app.pid].mem / MiB - app.used_mib) <= MEM_TOLERANCE_MIB, app


def test_agent_log_is_clean(agent: Agent) -> None:
    """Reading the real GPUs logged no traceback and lost no GPU."""
    info = agent.get_info()
    assert not [g.name for g in info.gpus if g.name.startswith("GPU lost")]
    log = Path(agent.log).read_text()
    assert "Traceback" not in log, log
