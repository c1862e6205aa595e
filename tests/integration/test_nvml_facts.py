"""What the agent's NVML source reads through the fake library: every GPU fact, MIG included.

`NvmlSource().read()` runs in a subprocess (LD_LIBRARY_PATH only counts at process start) and
prints its readings as JSON, through the installed binding and, when HMONITOR_PYNVML_MIN_DIR
names a directory with the oldest supported one, through that too.  The last test asks a real
agent over gRPC for the same facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentproc import start_agent
from fakenvml import (
    FakeGpu,
    FakeMig,
    FakeProc,
    binding_dir,
    consumer_gpu,
    mig_uuid_for,
    nvml_env,
    pci_for,
    uuid_for,
)
from fakenvml import write_config as write_fake_config

GiB = 1 << 30
MiB = 1 << 20

# Reads once per round; between rounds it waits for a line on stdin.
READER = """
import dataclasses, json, sys
from hmonitor.agent.sources.nvml import NvmlSource
source = NvmlSource()
for n in range(int(sys.argv[1])):
    if n and not sys.stdin.readline():
        break
    try:
        out = {"gpus": [dataclasses.asdict(g) for g in source.read()],
               "system": dataclasses.asdict(source.system())}
    except Exception as err:
        out = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(out), flush=True)
"""


@dataclass
class Reader:
    lib_dir: Path
    config: Path
    min_dir: Path | None

    def write(self, gpus: Sequence[FakeGpu], **kwargs: Any) -> None:
        write_fake_config(self.config, gpus, **kwargs)

    def env(self) -> dict[str, str]:
        env = nvml_env(self.lib_dir, self.config)
        if self.min_dir is not None:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([str(self.min_dir), *([old] if old else [])])
        return env

    def read(self) -> dict[str, Any]:
        with self.rounds(1) as next_round:
            out: dict[str, Any] = next_round()
            return out

    @contextmanager
    def rounds(self, count: int) -> Iterator[Any]:
        """Yields a function that reads one more round (the config may change in between)."""
        with subprocess.Popen(
            [sys.executable, "-c", READER, str(count)],
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            done = 0

            def next_round() -> dict[str, Any]:
                nonlocal done
                assert proc.stdin is not None and proc.stdout is not None
                if done:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:
                    pytest.fail(
                        f"reader exited early:\n{proc.stderr.read() if proc.stderr else ''}"
                    )
                done += 1
                out: dict[str, Any] = json.loads(line)
                return out

            try:
                yield next_round
            finally:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise


@pytest.fixture(params=["installed", "oldest"])
def reader(request: pytest.FixtureRequest, fake_nvml_lib: Path, tmp_path: Path) -> Reader:
    return Reader(fake_nvml_lib, tmp_path / "gpus.txt", binding_dir(request.param))


def facts(gpu: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "power_mw", "power_limit_mw", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons",
        "ecc_corrected", "ecc_uncorrected", "retired_pages", "remapped_rows", "mig_enabled",
    )  # fmt: skip
    return {k: gpu[k] for k in keys}


def proc(pid: int, used: int, sm: int = 0, gi: int | None = None, ci: int | None = None) -> Any:
    return (pid, used, sm, gi, ci)


def procs_of(gpu: dict[str, Any]) -> list[Any]:
    return [
        (p["pid"], p["used_memory"], p["sm_util"], p["gpu_instance"], p["compute_instance"])
        for p in gpu["processes"]
    ]


def test_every_fact_of_each_gpu(reader: Reader) -> None:
    reader.write(
        [
            FakeGpu(procs=[FakeProc(pid=4242, used_memory=GiB, sm_util=70)]),  # an H200 at rest
            FakeGpu(
                name="Tesla V100-SXM2-32GB",
                uuid="GPU-5b1c1d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e",
                pci_bus_id="00000000:B1:00.0",
                power_mw=287_512,
                power_limit_mw=300_000,
                sm_clock_mhz=1530,
                mem_clock_mhz=877,
                throttle_reasons=0x24,
                ecc=(1234, 2),
                retired_pages=(3, 1),
                remapped_rows=None,
                mig_mode="none",
            ),
            FakeGpu(remapped_rows=(5, 1), ecc=(7, 0)),
        ],
        driver_version="550.90.07",
        cuda_version=12040,
    )
    out = reader.read()
    assert out["system"] == {"driver_version": "550.90.07", "cuda_version": "12.4"}
    h200, v100, remapped = out["gpus"]
    assert (h200["uuid"], h200["pci_bus_id"], h200["name"]) == (
        uuid_for(0),
        pci_for(0),
        "NVIDIA H200",
    )
    assert facts(h200) == {
        "power_mw": 120_000,
        "power_limit_mw": 700_000,
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "throttle_reasons": 0,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
        "retired_pages": None,  # Hopper remaps rows instead
        "remapped_rows": 0,
        "mig_enabled": False,
    }
    assert h200["mig"] == []
    assert procs_of(h200) == [proc(4242, GiB, 70)]  # no MIG: no instance

    assert (v100["uuid"], v100["pci_bus_id"]) == (
        "GPU-5b1c1d3e-8f6a-4c2b-9d0e-1f2a3b4c5d6e",
        "00000000:B1:00.0",
    )
    assert facts(v100) == {
        "power_mw": 287_512,
        "power_limit_mw": 300_000,
        "sm_clock_mhz": 1530,
        "mem_clock_mhz": 877,
        "throttle_reasons": 0x24,
        "ecc_corrected": 1234,
        "ecc_uncorrected": 2,
        "retired_pages": 4,  # both causes
        "remapped_rows": None,
        "mig_enabled": None,  # no MIG on this GPU
    }
    assert (remapped["remapped_rows"], remapped["ecc_corrected"]) == (6, 7)


def test_absent_values_read_as_none_and_the_gpu_stays(reader: Reader) -> None:
    reader.write(
        [
            consumer_gpu(name="NVIDIA GeForce RTX 4090", util=30, fan=55),
            FakeGpu(lost="query"),
        ]
    )
    rtx, lost = reader.read()["gpus"]
    assert not rtx["lost"]
    assert (rtx["name"], rtx["utilization"], rtx["fan"]) == ("NVIDIA GeForce RTX 4090", 30, 55)
    assert facts(rtx) == dict.fromkeys(facts(rtx))
    assert (rtx["uuid"], rtx["pci_bus_id"]) == (uuid_for(0), pci_for(0))
    assert lost["lost"] and lost["index"] == 1


@pytest.mark.parametrize("as_root", [False, True], ids=["user", "root"])
def test_mig_gpu(reader: Reader, as_root: bool) -> None:
    """Instances and the processes on them, whether the whole GPU lists them (root) or not."""
    small = FakeMig(gpu_instance=9, compute_instance=0, mem_used=3 * GiB)
    big = FakeMig(
        gpu_instance=2, compute_instance=1, profile="3g.71gb", mem_total=70 * GiB, sm_count=60
    )
    reader.write(
        [
            FakeGpu(
                util=55,  # not reported in MIG mode
                mem_used=4 * GiB,
                mig_mode="on",
                mig_parent_procs=as_root,
                mig=[small, big],
                procs=[
                    FakeProc(11, 3 * GiB, sm_util=50, gpu_instance=9, compute_instance=0),
                    FakeProc(12, GiB, gpu_instance=2, compute_instance=1),
                    FakeProc(13, MiB, kind="graphics", gpu_instance=2, compute_instance=1),
                ],
            ),
            FakeGpu(procs=[FakeProc(20, GiB)]),
        ]
    )
    gpu, plain = reader.read()["gpus"]
    assert not gpu["lost"]
    assert gpu["mig_enabled"] is True
    assert gpu["utilization"] == 0
    assert (gpu["mem_used"], gpu["power_mw"]) == (4 * GiB, 120_000)
    assert gpu["mig"] == [  # by GPU instance
        {
            "gpu_instance": 2,
            "compute_instance": 1,
            "profile": "3g.71gb",
            "uuid": mig_uuid_for(uuid_for(0), 2, 1),
            "mem_used": 0,
            "mem_total": 70 * GiB,
            "sm_count": 60,
        },
        {
            "gpu_instance": 9,
            "compute_instance": 0,
            "profile": "1g.18gb",
            "uuid": mig_uuid_for(uuid_for(0), 9, 0),
            "mem_used": 3 * GiB,
            "mem_total": small.mem_total,
            "sm_count": 16,
        },
    ]
    # No utilization samples in MIG mode: sm_util 0.
    assert procs_of(gpu) == [
        proc(11, 3 * GiB, 0, 9, 0),
        proc(12, GiB, 0, 2, 1),
        proc(13, MiB, 0, 2, 1),
    ]
    assert plain["mig_enabled"] is False and procs_of(plain) == [proc(20, GiB)]


def test_mig_memory_read_every_time_and_layout_changes_seen(reader: Reader) -> None:
    one, two = FakeMig(gpu_instance=1), FakeMig(gpu_instance=2)
    reader.write([FakeGpu(mig_mode="on", mig=[one, two])])
    with reader.rounds(4) as next_round:
        first = next_round()["gpus"][0]
        reader.write([FakeGpu(mig_mode="on", mig=[one, FakeMig(gpu_instance=2, mem_used=GiB)])])
        second = next_round()["gpus"][0]
        reader.write([FakeGpu(mig_mode="on", mig=[FakeMig(gpu_instance=5, profile="7g.141gb")])])
        third = next_round()["gpus"][0]
        reader.write([FakeGpu(mig_mode="off")])
        fourth = next_round()["gpus"][0]
    assert [(m["gpu_instance"], m["mem_used"]) for m in first["mig"]] == [(1, 0), (2, 0)]
    assert [(m["gpu_instance"], m["mem_used"]) for m in second["mig"]] == [(1, 0), (2, GiB)]
    # The kept layout no longer answers (its second handle is gone): read again at once.
    assert [(m["gpu_instance"], m["profile"]) for m in third["mig"]] == [(5, "7g.141gb")]
    assert not third["lost"]
    assert (fourth["mig_enabled"], fourth["mig"], fourth["lost"]) == (False, [], False)


def test_unsupported_is_not_asked_again_until_reinit(reader: Reader) -> None:
    reader.write([FakeGpu(power_mw=None, fan=None)])
    with reader.rounds(4) as next_round:
        first = next_round()
        # A GPU does not start supporting a getter: the answer is kept until the next init.
        reader.write([FakeGpu(power_mw=90_000, fan=30)])
        second = next_round()
        reader.config.write_text("gpu\nfan lots\n")  # the library fails: the source re-inits
        third = next_round()
        reader.write([FakeGpu(power_mw=90_000, fan=30)])
        fourth = next_round()
    assert (first["gpus"][0]["power_mw"], first["gpus"][0]["fan"]) == (None, 0)
    assert (second["gpus"][0]["power_mw"], second["gpus"][0]["fan"]) == (None, 0)
    assert "error" in third
    assert (fourth["gpus"][0]["power_mw"], fourth["gpus"][0]["fan"]) == (90_000, 30)


def test_facts_over_grpc(fake_nvml_lib: Path, tmp_path: Path) -> None:
    """The real agent on the fake: every fact in GetInfo, unset where the GPU has none."""
    config = tmp_path / "gpus.txt"
    with subprocess.Popen(["sleep", "300"]) as sleeper:
        try:
            write_fake_config(
                config,
                [
                    FakeGpu(throttle_reasons=0x4, ecc=(3, 1), remapped_rows=(2, 0)),
                    consumer_gpu(),
                    FakeGpu(
                        mig_mode="on",
                        mig=[FakeMig(gpu_instance=3, mem_used=2 * GiB)],
                        procs=[FakeProc(sleeper.pid, 2 * GiB, gpu_instance=3, compute_instance=0)],
                    ),
                    FakeGpu(retired_pages=(2, 1), procs=[FakeProc(sleeper.pid, GiB)]),
                ],
                driver_version="570.86.10",
                cuda_version=12080,
            )
            agent = start_agent(
                tmp_path, ["--cache-ttl", "0.2"], env=nvml_env(fake_nvml_lib, config)
            )
            try:
                info = agent.get_info()
            finally:
                agent.stop()
        finally:
            sleeper.kill()

    assert info.err == ""
    assert (info.driver_version, info.cuda_version) == ("570.86.10", "12.8")
    full, bare, mig, old = info.gpus
    assert (full.uuid, full.pci_bus_id) == (uuid_for(0), pci_for(0))
    assert (full.power_mw, full.power_limit_mw) == (120_000, 700_000)
    assert (full.sm_clock_mhz, full.mem_clock_mhz, full.throttle_reasons) == (1980, 2619, 4)
    assert (full.ecc_corrected, full.ecc_uncorrected, full.remapped_rows) == (3, 1, 2)
    assert full.HasField("mig_enabled") and not full.mig_enabled
    assert not full.HasField("retired_pages")

    assert (bare.uuid, bare.pci_bus_id) == (uuid_for(1), pci_for(1))
    for name in (
        "power_mw", "power_limit_mw", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons",
        "ecc_corrected", "ecc_uncorrected", "retired_pages", "remapped_rows", "mig_enabled",
    ):  # fmt: skip
        assert not bare.HasField(name), name

    assert mig.mig_enabled and mig.utilization == 0 and mig.name == "NVIDIA H200"
    (inst,) = mig.mig
    assert (inst.gpu_instance, inst.compute_instance, inst.profile) == (3, 0, "1g.18gb")
    assert inst.uuid == mig_uuid_for(uuid_for(2), 3, 0)
    assert (inst.mem_used, inst.mem_total) == (2 * GiB, FakeMig().mem_total)
    assert inst.HasField("sm_count") and inst.sm_count == 16
    (p,) = mig.procs
    assert (p.pid, p.mem, p.basename) == (sleeper.pid, 2 * GiB, "sleep")
    assert p.HasField("mig") and (p.mig.gpu_instance, p.mig.compute_instance) == (3, 0)

    assert old.retired_pages == 3
    (q,) = old.procs
    assert q.pid == sleeper.pid and not q.HasField("mig")
