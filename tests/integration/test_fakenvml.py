"""The fake NVML library behaves like NVML as seen through the real pynvml binding.

Each check runs `fakenvml/probe.py` in a subprocess (LD_LIBRARY_PATH only counts at process
start) against the installed binding and, when HMONITOR_PYNVML_MIN_DIR names a directory with
the oldest supported one (`pip install --target DIR nvidia-ml-py==12.560.30`), against that too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from fakenvml import (
    LIB_NAME,
    NVML_ERROR_DRIVER_NOT_LOADED,
    OLDEST_BINDING,
    PROBE,
    FakeGpu,
    FakeMig,
    FakeProc,
    binding_dir,
    build_library,
    consumer_gpu,
    mig_uuid_for,
    nvml_env,
    pci_for,
    uuid_for,
    write_config,
)

NVML_UNINITIALIZED = 1
NO_INSTANCE = 0xFFFFFFFF  # GPU/compute instance id of a process when MIG is off
GiB = 1 << 30
MiB = 1 << 20


def err(name: str) -> dict[str, str]:
    """How the probe reports a call that raised pynvml.NVMLError_<name>."""
    return {"error": f"NVMLError_{name}"}


@dataclass
class ProbeRun:
    """A probe process that reads once per `next()`; the config may change in between."""

    proc: subprocess.Popen[str]
    check_header: Any
    rounds: int = 0

    def next(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.rounds > 0:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            stderr: IO[str] | None = self.proc.stderr
            pytest.fail(f"probe exited early:\n{stderr.read() if stderr else ''}")
        out: dict[str, Any] = json.loads(line)
        if self.rounds == 0:
            self.check_header(out)
        self.rounds += 1
        return out


@dataclass
class Probe:
    lib_dir: Path
    config: Path
    min_dir: Path | None  # None: the installed binding
    stderr: str = field(default="", init=False)

    def write(self, gpus: Sequence[FakeGpu], **kwargs: Any) -> None:
        write_config(self.config, gpus, **kwargs)

    def env(self) -> dict[str, str]:
        env = nvml_env(self.lib_dir, self.config)
        if self.min_dir is not None:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([str(self.min_dir), *([old] if old else [])])
        return env

    def check_header(self, out: dict[str, Any]) -> None:
        """The probe loaded the binding this run is meant to test."""
        if self.min_dir is None:
            assert out["binding_version"] == importlib.metadata.version("nvidia-ml-py")
        else:
            assert out["binding_version"] == OLDEST_BINDING
            assert Path(out["binding_file"]).parent == self.min_dir
        assert out["raw_count_before_init"] == NVML_UNINITIALIZED

    def run(self) -> dict[str, Any]:
        """One init, read everything, shutdown."""
        result = subprocess.run(
            [sys.executable, str(PROBE)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.stderr = result.stderr
        assert result.returncode == 0, result.stderr
        out: dict[str, Any] = json.loads(result.stdout)
        self.check_header(out)
        return out

    @contextmanager
    def start(self, rounds: int, *, keep_init: bool = False) -> Iterator[ProbeRun]:
        args = [sys.executable, str(PROBE), "--rounds", str(rounds)]
        if keep_init:
            args.append("--keep-init")
        with subprocess.Popen(
            args,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                yield ProbeRun(proc, self.check_header)
            finally:
                if proc.stdin:
                    proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise


@pytest.fixture(params=["installed", "oldest"])
def probe(request: pytest.FixtureRequest, fake_nvml_lib: Path, tmp_path: Path) -> Probe:
    return Probe(fake_nvml_lib, tmp_path / "gpus.txt", binding_dir(request.param))


def test_gpus_report_configured_values(probe: Probe) -> None:
    probe.write(
        [
            FakeGpu(util=87, mem_util=40, temp=61, mem_used=80 * GiB),
            FakeGpu(
                name="NVIDIA A100-SXM4-80GB",
                uuid="GPU-5b1c1d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e",
                temp=33,
                mem_total=85899345920,
            ),
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                util=100,
                mem_util=95,
                temp=77,
                fan=65,
                mem_total=25757220864,
                mem_used=20 * GiB,
            ),
        ],
        driver_version="550.90.07",
    )
    out = probe.run()
    assert out["init"] is None
    assert out["driver"] == "550.90.07"
    assert out["count"] == 3
    h200, a100, rtx = out["gpus"]

    assert h200["name"] == "NVIDIA H200"
    assert h200["uuid"] == uuid_for(0)
    assert h200["util"] == [87, 40]
    assert h200["temp"] == 61
    assert h200["fan"] == err("NotSupported")  # datacenter GPUs have no fan
    total = 150754820096
    assert h200["mem"] == [total, 80 * GiB, total - 80 * GiB]
    assert h200["mem_v2"] == [total, 0, 80 * GiB, total - 80 * GiB]

    assert a100["name"] == "NVIDIA A100-SXM4-80GB"
    assert a100["uuid"] == "GPU-5b1c1d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e"
    assert a100["util"] == [0, 0]
    assert a100["mem"] == [85899345920, 0, 85899345920]

    assert rtx["fan"] == 65
    assert rtx["util"] == [100, 95]
    assert rtx["temp"] == 77
    assert rtx["mem"] == [25757220864, 20 * GiB, 25757220864 - 20 * GiB]

    assert out["shutdown"] is None
    # After the last shutdown the library answers UNINITIALIZED, as before init.
    assert out["count_after_shutdown"] == err("Uninitialized")


def test_lost_gpu_fails_alone(probe: Probe) -> None:
    probe.write([FakeGpu(), FakeGpu(lost="handle"), FakeGpu(lost="query"), FakeGpu(util=5)])
    out = probe.run()
    assert out["count"] == 4  # a lost GPU is still counted
    ok, lost_handle, lost_query, after = out["gpus"]
    assert ok["handle"] == "ok"
    assert ok["name"] == "NVIDIA H200"
    assert lost_handle == {"handle": err("GpuIsLost")}
    assert lost_query["handle"] == "ok"
    queries = {k: v for k, v in lost_query.items() if k != "handle"}
    # Some entries are lists of calls (clock per type, ECC per kind and counter, ...).
    flat = [x for v in queries.values() for x in (v if isinstance(v, list) else [v])]
    assert flat == [err("GpuIsLost")] * len(flat)
    assert len(flat) == 27
    assert after["util"] == [5, 0]


def test_processes_and_utilization_samples(probe: Probe) -> None:
    many = [FakeProc(pid=1000 + i, used_memory=(i + 1) * MiB) for i in range(50)]
    probe.write(
        [
            FakeGpu(
                procs=[
                    FakeProc(pid=4242, used_memory=10 * GiB, sm_util=80),
                    FakeProc(pid=777, used_memory=512 * MiB, kind="graphics"),
                    FakeProc(pid=4243, used_memory=2 * GiB, sm_util=15),
                    FakeProc(pid=778, used_memory=256 * MiB, kind="graphics", sm_util=3),
                ]
            ),
            FakeGpu(procs=[FakeProc(pid=99, used_memory=300 * MiB)]),
            FakeGpu(procs=many),
            FakeGpu(),
        ]
    )
    out = probe.run()
    busy, unsampled, crowded, idle = out["gpus"]

    def entry(pid: int, mem: int) -> list[int]:
        return [pid, mem, NO_INSTANCE, NO_INSTANCE]

    assert busy["compute"] == [entry(4242, 10 * GiB), entry(4243, 2 * GiB)]
    assert busy["graphics"] == [entry(777, 512 * MiB), entry(778, 256 * MiB)]
    # [pid, smUtil, memUtil, timeStamp newer than asked]
    assert busy["samples"] == [[4242, 80, 0, True], [4243, 15, 0, True], [778, 3, 0, True]]
    assert busy["samples_future"] == err("NotFound")

    assert unsampled["compute"] == [entry(99, 300 * MiB)]
    assert unsampled["graphics"] == []
    assert unsampled["samples"] == err("NotFound")

    # 50 entries read back intact: the 24-byte stride matches the binding's struct.
    assert crowded["compute"] == [entry(p.pid, p.used_memory) for p in many]

    assert idle["compute"] == []
    assert idle["graphics"] == []
    assert idle["samples"] == err("NotFound")


def test_init_error_surfaces(probe: Probe) -> None:
    probe.write([FakeGpu()], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    assert probe.run()["init"] == err("DriverNotLoaded")


def test_missing_config_is_no_driver(probe: Probe) -> None:
    assert not probe.config.exists()
    assert probe.run()["init"] == err("DriverNotLoaded")


def test_malformed_config_fails_loudly(probe: Probe) -> None:
    probe.config.write_text("gpu\nname NVIDIA H200\nfan lots\n")
    assert probe.run()["init"] == err("Unknown")
    assert f"fakenvml: {probe.config}:3: bad line" in probe.stderr


def test_config_change_picked_up_after_reinit(probe: Probe) -> None:
    probe.write([FakeGpu(util=10)])
    with probe.start(rounds=3) as run:
        first = run.next()
        probe.write(
            [FakeGpu(util=90, procs=[FakeProc(pid=5, used_memory=GiB)]), FakeGpu(fan=20)],
            driver_version="570.86.10",
        )
        second = run.next()
        probe.write([FakeGpu()], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
        third = run.next()
    assert first["count"] == 1
    assert first["gpus"][0]["util"] == [10, 0]
    assert second["count"] == 2
    assert second["driver"] == "570.86.10"
    assert second["gpus"][0]["util"] == [90, 0]
    assert second["gpus"][0]["compute"] == [[5, GiB, NO_INSTANCE, NO_INSTANCE]]
    assert second["gpus"][1]["fan"] == 20
    assert third["init"] == err("DriverNotLoaded")


def test_config_change_seen_without_reinit(probe: Probe) -> None:
    """A running agent initialises once; the fake re-reads at nvmlDeviceGetCount."""
    probe.write([FakeGpu(), FakeGpu()])
    with probe.start(rounds=2, keep_init=True) as run:
        first = run.next()
        probe.write(
            [FakeGpu(util=70, procs=[FakeProc(pid=8, used_memory=MiB)]), FakeGpu(), FakeGpu()]
        )
        # A second rewrite within the same clock tick must still be noticed.
        probe.write(
            [FakeGpu(util=71, procs=[FakeProc(pid=9, used_memory=MiB)]), FakeGpu(), FakeGpu()]
        )
        second = run.next()
    assert first["init"] is None
    assert first["count"] == 2
    assert first["gpus"][0]["compute"] == []
    assert second["count"] == 3
    assert second["gpus"][0]["util"] == [71, 0]
    assert second["gpus"][0]["compute"] == [[9, MiB, NO_INSTANCE, NO_INSTANCE]]


def test_write_config_always_moves_mtime(tmp_path: Path) -> None:
    config = tmp_path / "gpus.txt"
    write_config(config, [FakeGpu()])
    before = config.stat().st_mtime_ns
    write_config(config, [FakeGpu()])  # same content, likely the same clock tick
    assert config.stat().st_mtime_ns > before
    assert not list(tmp_path.glob(".*.tmp"))


def test_build_library_skips_unchanged_source(fake_nvml_lib: Path) -> None:
    lib = fake_nvml_lib / LIB_NAME
    built = lib.stat().st_mtime_ns
    assert build_library(fake_nvml_lib) == fake_nvml_lib
    assert lib.stat().st_mtime_ns == built


def test_nvml_env_prepends_library_dir(tmp_path: Path) -> None:
    env = nvml_env(tmp_path, tmp_path / "c.txt", {"LD_LIBRARY_PATH": "/opt/lib", "HOME": "/h"})
    assert env == {
        "LD_LIBRARY_PATH": f"{tmp_path}{os.pathsep}/opt/lib",
        "FAKE_NVML_CONFIG": str(tmp_path / "c.txt"),
        "HOME": "/h",
    }
    assert nvml_env(tmp_path, tmp_path / "c.txt", {})["LD_LIBRARY_PATH"] == str(tmp_path)


def test_power_clocks_throttle_and_memory_errors(probe: Probe) -> None:
    probe.write(
        [
            FakeGpu(),  # the defaults: an H200 at rest
            FakeGpu(
                name="Tesla V100-SXM2-32GB",
                pci_bus_id="00000000:B1:00.0",
                power_mw=287_512,
                power_limit_mw=300_000,
                sm_clock_mhz=1530,
                mem_clock_mhz=877,
                throttle_reasons=0x4 | 0x20,  # SW power cap, SW thermal slowdown
                ecc=(1234, 2),
                retired_pages=(3, 1),
                remapped_rows=None,  # row remapping came with Ampere
                mig_mode="none",
            ),
            consumer_gpu(name="NVIDIA GeForce RTX 4090"),
            FakeGpu(remapped_rows=(5, 1)),
        ],
        cuda_version=12040,
    )
    out = probe.run()
    assert out["cuda"] == [12040, 12040]
    h200, v100, rtx, remapped = out["gpus"]

    assert h200["pci"] == [pci_for(0), 0, 0x18, 0, "0000:18:00.0"]
    assert (h200["power"], h200["power_limit"]) == (120_000, 700_000)
    assert h200["clocks"] == [1980, 2619]
    assert h200["events"] == h200["throttle"] == 0
    assert h200["ecc"] == [0, 0, 0, 0]  # [corrected volatile, aggregate, uncorrected ...]
    assert h200["retired"] == [err("NotSupported")] * 2  # Hopper remaps rows instead
    assert h200["remapped"] == [0, 0, 0, 0]  # corrected, uncorrected, pending, failure
    assert h200["mig_mode"] == [0, 0]  # current, pending: off

    assert v100["pci"] == ["00000000:B1:00.0", 0, 0xB1, 0, "0000:b1:00.0"]
    assert (v100["power"], v100["power_limit"]) == (287_512, 300_000)
    assert v100["clocks"] == [1530, 877]
    assert v100["events"] == v100["throttle"] == 0x24
    assert v100["ecc"] == [1234, 1234, 2, 2]
    assert v100["retired"] == [3, 1]
    assert v100["remapped"] == err("NotSupported")
    assert v100["mig_mode"] == err("NotSupported")
    assert v100["mig_devices"] == err("NotSupported")

    unsupported = err("NotSupported")
    assert rtx["pci"][0] == pci_for(2)
    assert (rtx["power"], rtx["power_limit"]) == (unsupported, unsupported)
    assert rtx["clocks"] == [unsupported, unsupported]
    assert rtx["events"] == rtx["throttle"] == unsupported
    assert rtx["ecc"] == [unsupported] * 4
    assert rtx["retired"] == [unsupported] * 2
    assert rtx["remapped"] == unsupported

    assert remapped["remapped"] == [5, 1, 0, 0]


def test_mig_devices_and_their_processes(probe: Probe) -> None:
    uuid = "GPU-5b1c1d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e"
    small = FakeMig(gpu_instance=9, compute_instance=0, mem_used=3 * GiB)
    big = FakeMig(
        gpu_instance=2, compute_instance=1, profile="3g.71gb", mem_total=70 * GiB, sm_count=60
    )
    procs = [
        FakeProc(pid=11, used_memory=3 * GiB, sm_util=50, gpu_instance=9, compute_instance=0),
        FakeProc(pid=12, used_memory=GiB, gpu_instance=2, compute_instance=1),
        FakeProc(pid=13, used_memory=MiB, kind="graphics", gpu_instance=2, compute_instance=1),
    ]
    probe.write(
        [
            FakeGpu(uuid=uuid, mig_mode="on", mig=[small, big], procs=procs),
            FakeGpu(mig_mode="on", mig_parent_procs=True, mig=[small], procs=procs[:1]),
            FakeGpu(mig_mode="on"),  # enabled, no instances made yet
        ]
    )
    out = probe.run()
    gpu, rooted, empty = out["gpus"]

    assert gpu["mig_mode"] == [1, 1]
    # In MIG mode the whole GPU reports no utilization, and lists processes only to root.
    assert gpu["util"] == gpu["samples"] == err("NotSupported")
    assert gpu["compute"] == gpu["graphics"] == err("NoPermission")
    first, second, *rest = gpu["mig_devices"]
    assert rest == [err("NotFound")] * 5  # up to 7 devices on an H200
    assert first == {
        "name": "NVIDIA H200 MIG 1g.18gb",
        "uuid": mig_uuid_for(uuid, 9, 0),
        "util": err("NotSupported"),
        "mem": [small.mem_total, 3 * GiB, small.mem_total - 3 * GiB],
        "mem_v2": [small.mem_total, 0, 3 * GiB, small.mem_total - 3 * GiB],
        "compute": [[11, 3 * GiB, 9, 0]],
        "graphics": [],
        "samples": err("NotSupported"),
        "gi": 9,
        "ci": 0,
        "is_mig": 1,
        "parent": 0,
        "attributes": [16, small.mem_total >> 20],
    }
    assert first["uuid"] == "MIG-09001d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e"
    assert second["name"] == "NVIDIA H200 MIG 3g.71gb"
    assert (second["gi"], second["ci"], second["attributes"]) == (2, 1, [60, 70 * 1024])
    assert second["compute"] == [[12, GiB, 2, 1]]
    assert second["graphics"] == [[13, MiB, 2, 1]]

    # As root, the whole GPU lists every process with its instance.
    assert rooted["compute"] == [[11, 3 * GiB, 9, 0]]
    assert rooted["mig_devices"][0]["uuid"] == mig_uuid_for(uuid_for(1), 9, 0)

    assert empty["mig_devices"] == [err("NotFound")] * 7


def test_mig_layout_change_invalidates_old_handles(probe: Probe) -> None:
    """A MIG device handle whose instance is gone answers INVALID_ARGUMENT, as a destroyed one."""
    probe.write([FakeGpu(mig_mode="on", mig=[FakeMig(), FakeMig(gpu_instance=2)])])
    with probe.start(rounds=2, keep_init=True) as run:
        first = run.next()
        probe.write([FakeGpu(mig_mode="off")])
        second = run.next()
    assert [d.get("gi") for d in first["gpus"][0]["mig_devices"][:2]] == [1, 2]
    assert second["gpus"][0]["mig_mode"] == [0, 0]
    assert second["gpus"][0]["mig_devices"] == [err("NotFound")] * 7


def test_process_entries_carry_mig_instance_ids(probe: Probe) -> None:
    """Without MIG the ids read 0xFFFFFFFF; the config rejects half an instance."""
    probe.write([FakeGpu(procs=[FakeProc(pid=1, used_memory=MiB)])])
    assert probe.run()["gpus"][0]["compute"] == [[1, MiB, NO_INSTANCE, NO_INSTANCE]]
    with pytest.raises(ValueError, match="both"):
        probe.write([FakeGpu(procs=[FakeProc(pid=1, used_memory=MiB, gpu_instance=1)])])
