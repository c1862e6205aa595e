"""The JSON the API and the live page send for a HostInfo: the same fields, names and values as
protobuf's own JSON mapping (64-bit integers as numbers), and back."""

from __future__ import annotations

from typing import Any

from builders import gpu, host_info, proc
from google.protobuf import json_format

from hmonitor._pb import hm_pb2
from hmonitor.web.api.jsonview import host_info_to_dict


def test_host_info_json_matches_protobuf_field_for_field() -> None:
    host = host_info("a", [gpu(0, proc("alice", expiration=1_900_000_000)), gpu(1)], err="x")
    ours = host_info_to_dict(host)
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
    back = json_format.ParseDict(host_info_to_dict(host), hm_pb2.HostInfo())
    assert back == host
