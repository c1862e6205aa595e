"""The GPU host the agent benchmarks run on: 8 fake H200, each with `per_gpu` real processes."""

from __future__ import annotations

import subprocess

from fakenvml import FakeGpu, FakeProc

GIB = 1 << 30


def busy_gpus(sleepers: list[subprocess.Popen[bytes]], per_gpu: int) -> list[FakeGpu]:
    """8 GPUs at rising utilization, 40 GiB used each, shared by `per_gpu` of `sleepers` (real
    processes, so owners, command lines and cgroups are read for real)."""
    return [
        FakeGpu(util=10 * i, temp=40 + i, mem_used=40 * GIB, procs=[
            FakeProc(sleepers[per_gpu * i + j].pid, 40 * GIB // per_gpu, sm_util=j % 20)
            for j in range(per_gpu)])
        for i in range(8)
    ]
