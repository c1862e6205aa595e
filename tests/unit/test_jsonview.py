"""The JSON the API and the live page send for a HostInfo: the same fields, names and values as
protobuf's own JSON mapping (64-bit integers as numbers), and back."""

from __future__ import annotations

from typing import Any

from builders import gpu, host_info, lost_gpu, proc
from google.protobuf import json_format

from hmonitor._pb import hm_pb2
from hmonitor.web.api.jsonview import host_info_to_dict


def as_protobuf_writes_it(value: Any) -> Any:
    """Ours without what protobuf's JSON leaves out: fields not reported (null in ours, for
    optional fields and absent messages) and what the dashboard adds (owner, free)."""
    if isinstance(value, dict):
        return {k: as_protobuf_writes_it(v) for k, v in value.items()
                if v is not None and k not in ("owner", "free")}
    if isinstance(value, list):
        return [as_protobuf_writes_it(v) for v in value]
    return value


def test_host_info_json_matches_protobuf_field_for_field() -> None:
    busy = proc("alice", expiration=1_900_000_000)
    busy.cmdline, busy.start_time = "python train.py --lr 3e-4", 1_800_000_000
    busy.job.id, busy.job.step = 81234, "batch"
    busy.container.id, busy.container.runtime, busy.container.host_uid = "ab" * 32, "podman", 0
    busy.mig.gpu_instance = 3
    g0 = gpu(0, busy)
    g0.power_mw, g0.mig_enabled, g0.uuid = 123_456, True, "GPU-1"
    g0.mig.add(gpu_instance=3, profile="1g.18gb", mem_total=18 << 30, sm_count=16)
    host = host_info("a", [g0, gpu(1)], err="x")
    host.load1, host.driver_version = 0.0, "560.35.03"
    ours = host_info_to_dict(host)
    assert ours["gpus"][0]["procs"][0]["owner"] == "alice"
    assert ours["gpus"][0]["free"] is False  # busy
    assert ours["gpus"][1]["power_mw"] is None and ours["gpus"][0]["power_mw"] == 123_456
    assert ours["gpus"][0]["procs"][0]["container"]["host_uid"] == 0  # set, though 0
    assert ours["gpus"][1]["mig"] == [] and ours["gpus"][0]["mig"][0]["sm_count"] == 16
    ours = as_protobuf_writes_it(ours)
    theirs = json_format.MessageToDict(host, preserving_proto_field_name=True,
                                       always_print_fields_with_no_presence=True)

    def numbers(value: Any) -> Any:
        # MessageToDict writes 64-bit integers as strings; ours are JSON numbers.
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    assert numbers(theirs) == ours
    assert isinstance(ours["gpus"][0]["mem_total"], int)
    assert ours["gpus"][0]["procs"][0]["expiration"] == 1_900_000_000


def test_host_info_json_round_trips_through_protobuf() -> None:
    host = host_info("b", [gpu(3, proc("", uid=4242), util=7)], disks=(("/x", 0.95),))
    back = json_format.ParseDict(as_protobuf_writes_it(host_info_to_dict(host)),
                                 hm_pb2.HostInfo())
    assert back == host


def test_each_gpu_says_whether_it_is_free_by_the_pages_rule() -> None:
    mig = gpu(2)
    mig.mig_enabled = True
    info = host_info("h", [gpu(0), gpu(1, proc("bob")), mig, lost_gpu(3)])
    assert [g["free"] for g in host_info_to_dict(info)["gpus"]] == [True, False, False, False]
