"""The conventions both programs add to the proto: uids as int32, the owner label."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmonitor._pb import hm_pb2
from hmonitor.web.api.jsonview import proc_to_dict
from hmonitor.wire import UNKNOWN_UID, decode_uid, encode_uid, owner_label, proc_label, proc_owner

UID_MAX = (1 << 32) - 2  # (uid_t)-1 = 2^32-1 is POSIX's "no uid"
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
REAL_UIDS = st.integers(0, UID_MAX)


@pytest.mark.parametrize(
    ("uid", "wire"),
    [
        (0, 0),
        (1000, 1000),
        ((1 << 31) - 1, (1 << 31) - 1),
        (1 << 31, -(1 << 31)),
        (3_000_000_000, 3_000_000_000 - (1 << 32)),  # a container's user-namespace range
        (UID_MAX, -2),
        (UNKNOWN_UID, -1),
        ((1 << 32) - 1, -1),  # (uid_t)-1 is "no uid": unknown, as the Go agent's int32(uid)
    ],
)
def test_encode_is_the_go_agents_int32_conversion(uid: int, wire: int) -> None:
    assert encode_uid(uid) == wire
    hm_pb2.ProcInfo(uid=wire)  # fits the field: no "Value out of range"


@pytest.mark.parametrize("bad", [-2, 1 << 32, 1 << 40])
def test_encode_refuses_what_no_uid_is(bad: int) -> None:
    with pytest.raises(ValueError, match="not a uid"):
        encode_uid(bad)


@pytest.mark.parametrize("bad", [(1 << 31), -(1 << 31) - 1, 3_000_000_000])
def test_decode_refuses_what_is_not_an_int32(bad: int) -> None:
    with pytest.raises(ValueError, match="int32"):
        decode_uid(bad)


@given(st.one_of(REAL_UIDS, st.just(UNKNOWN_UID)))
def test_every_uid_survives_the_wire(uid: int) -> None:
    wire = encode_uid(uid)
    sent = hm_pb2.ProcInfo(uid=wire).SerializeToString()
    assert decode_uid(hm_pb2.ProcInfo.FromString(sent).uid) == uid


@given(INT32)
def test_every_int32_decodes_to_one_uid(wire: int) -> None:
    uid = decode_uid(wire)
    assert uid == UNKNOWN_UID or 0 <= uid <= UID_MAX
    assert encode_uid(uid) == wire


@given(REAL_UIDS)
def test_owner_label_names_the_real_uid(uid: int) -> None:
    assert owner_label("", encode_uid(uid)) == f"uid {uid}"
    assert owner_label("alice", encode_uid(uid)) == "alice"


def test_owner_label_unknown() -> None:
    assert owner_label("", UNKNOWN_UID) == "unknown"


def test_json_api_shows_the_real_uid() -> None:
    wire = encode_uid(3_000_000_000)
    proc = hm_pb2.ProcInfo(pid=7, uid=wire, username="", basename="python")
    assert proc_to_dict(proc)["uid"] == 3_000_000_000
    assert proc_to_dict(hm_pb2.ProcInfo(uid=-1))["uid"] == -1


DOCKER_ID = "3f2a9c81d0e4" + "7b" * 26


def in_container(p: hm_pb2.ProcInfo, runtime: str = "docker", name: str = "",
                 host_user: str = "") -> hm_pb2.ProcInfo:
    p.container.id, p.container.runtime, p.container.name = DOCKER_ID, runtime, name
    if host_user:
        p.container.host_uid, p.container.host_user = 1000, host_user
    return p


def test_a_slurm_jobs_process_reads_user_and_job() -> None:
    p = hm_pb2.ProcInfo(uid=1000, username="alice")
    p.job.id, p.job.step = 81234, "batch"
    assert proc_owner(p) == "alice"
    assert proc_label(p) == "alice · job 81234"


def test_a_containers_root_process_reads_as_its_container_not_root() -> None:
    p = in_container(hm_pb2.ProcInfo(uid=0, username="root"))
    assert proc_owner(p) == proc_label(p) == "container 3f2a9c81d0e4… (docker)"
    named = in_container(hm_pb2.ProcInfo(uid=0, username="root"), name="trainer")
    assert proc_label(named) == "container trainer (docker)"


def test_a_uid_without_an_account_reads_as_its_container() -> None:
    # The agent names an unknown uid by its number, as the spec's agent does.
    p = in_container(hm_pb2.ProcInfo(uid=encode_uid(100999), username="100999"), "containerd")
    assert proc_label(p) == "container 3f2a9c81d0e4… (containerd)"


def test_a_rootless_container_belongs_to_its_host_user() -> None:
    p = in_container(hm_pb2.ProcInfo(uid=encode_uid(100999), username="100999"), "podman",
                     "web", host_user="bob")
    assert proc_owner(p) == "bob"
    assert proc_label(p) == "bob · container web (podman)"


def test_a_host_user_in_a_container_keeps_their_name_and_the_container_shows() -> None:
    p = in_container(hm_pb2.ProcInfo(uid=1000, username="alice"))
    p.job.id = 7
    assert proc_owner(p) == "alice"
    assert proc_label(p) == "alice · container 3f2a9c81d0e4… (docker) · job 7"


def test_processes_outside_containers_and_jobs_read_as_before() -> None:
    assert proc_label(hm_pb2.ProcInfo(uid=0, username="root")) == "root"
    assert proc_label(hm_pb2.ProcInfo(uid=4242)) == "uid 4242"
