"""The GPU host the agent benchmarks run on: 8 fake H200, each with `per_gpu` real processes."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from fakenvml import FakeGpu, FakeProc, build_library, nvml_env, write_config

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


@contextlib.contextmanager
def gpu_host(tmp: Path, per_gpu: int) -> Iterator[dict[str, str]]:
    """The fake NVML library built in ``tmp``, 8 x ``per_gpu`` sleepers on ``busy_gpus``; yields
    the environment an agent reads them with. The sleepers are killed afterwards."""
    lib = build_library(tmp / "lib")
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(8 * per_gpu)]
    try:
        config = tmp / "gpus.txt"
        write_config(config, busy_gpus(sleepers, per_gpu))
        yield nvml_env(lib, config)
    finally:
        for s in sleepers:
            s.kill()
            s.wait()
