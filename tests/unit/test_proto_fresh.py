"""The checked-in stubs are exactly what tools/gen_proto.py makes from proto/hm.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hmonitor._pb import hm_pb2

ROOT = Path(__file__).resolve().parents[2]
SEED_PROTO_FIELDS = {
    "ProcInfo": ["pid", "uid", "username", "basename", "expiration", "utilization", "mem"],
    "GPUInfo": ["id", "mem_used", "mem_total", "utilization", "temp", "name", "fanspeed", "procs"],
    "DiskInfo": ["device", "used", "total", "mount"],
    "HostInfo": ["id", "gpus", "disks", "ip", "hostname", "err"],
    "RequestInfo": ["token", "reqtype"],
    "HistReq": ["id", "timestamp", "type"],
    "HistResp": ["t", "v"],
}


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "hmonitor" / "_pb"
    checked_in = ROOT / "src" / "hmonitor" / "_pb"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == ["hm_pb2.py", "hm_pb2.pyi", "hm_pb2_grpc.py", "hm_pb2_grpc.pyi"]
    for name in names:
        assert (checked_in / name).read_text() == (fresh / name).read_text(), (
            f"src/hmonitor/_pb/{name} is stale: run `make proto`"
        )


def test_wire_contract_is_the_seeds() -> None:
    for message, fields in SEED_PROTO_FIELDS.items():
        desc = hm_pb2.DESCRIPTOR.message_types_by_name[message]
        assert [f.name for f in desc.fields][: len(fields)] == fields
        assert [f.number for f in desc.fields][: len(fields)] == list(range(1, len(fields) + 1))
    assert hm_pb2.DESCRIPTOR.package == "gpu"
    services = hm_pb2.DESCRIPTOR.services_by_name
    assert services["HostMonitor"].methods_by_name["GetInfo"].input_type.name == "RequestInfo"
    assert services["History"].methods_by_name["GetHistory"].output_type.name == "HistResp"


def test_proto_is_the_spec_verbatim() -> None:
    seed_dir = ROOT.parent / "shared" / "seed"
    if not seed_dir.is_dir():
        pytest.skip("the spec (../shared/seed) is not beside this checkout")
    spec = "".join(p.read_text() for p in sorted(seed_dir.glob("*.txt")))
    block = spec.split("```protobuf\n", 1)[1].split("```", 1)[0]
    assert (ROOT / "proto" / "hm.proto").read_text() == block
