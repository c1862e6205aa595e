"""The wire contract: the checked-in stubs are what tools/gen_proto.py makes from proto/hm.proto,
and proto/hm.proto holds every message, field and method of the spec's proto unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from hmonitor._pb import hm_pb2

ROOT = Path(__file__).resolve().parents[2]


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


def spec_descriptor(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    """The spec's proto (proto/spec/hm.proto) as protoc reads it."""
    out = tmp_path / "spec.pb"
    args = ["protoc", f"-I{ROOT / 'proto' / 'spec'}", f"--descriptor_set_out={out}", "hm.proto"]
    assert protoc.main(args) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def test_every_message_field_and_method_of_the_spec_is_ours_unchanged(tmp_path: Path) -> None:
    spec = spec_descriptor(tmp_path)
    ours = descriptor_pb2.FileDescriptorProto()
    hm_pb2.DESCRIPTOR.CopyToProto(ours)
    assert ours.package == spec.package == "gpu"
    our_messages = {m.name: m for m in ours.message_type}
    for message in spec.message_type:
        mine = {f.number: f for f in our_messages[message.name].field}
        for field in message.field:
            got = mine[field.number]
            assert (got.name, got.type, got.label, got.type_name) == (
                field.name, field.type, field.label, field.type_name), (message.name, field.name)
            assert not got.proto3_optional, "a spec field must keep its presence rules"
        # New fields only after the spec's own numbers.
        assert min(set(mine) - {f.number for f in message.field}, default=999) > max(
            f.number for f in message.field)
    our_services = {s.name: s for s in ours.service}
    for service in spec.service:
        methods = {m.name: m for m in our_services[service.name].method}
        for method in service.method:
            ours_method = methods[method.name]
            assert (ours_method.input_type, ours_method.output_type) == (
                method.input_type, method.output_type)


def test_the_spec_copy_is_the_spec_verbatim() -> None:
    seed_dir = ROOT.parent / "shared" / "seed"
    if not seed_dir.is_dir():
        pytest.skip("the spec (../shared/seed) is not beside this checkout")
    spec = "".join(p.read_text() for p in sorted(seed_dir.glob("*.txt")))
    block = spec.split("```protobuf\n", 1)[1].split("```", 1)[0]
    assert (ROOT / "proto" / "spec" / "hm.proto").read_text() == block
