"""Containers and Slurm jobs from /proc/<pid>/cgroup: a fixture file per layout a runtime makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmonitor.agent.sources.cgroups import CgroupFacts, parse_cgroup
from hmonitor.agent.sources.procfacts import ContainerRef, SlurmJobRef

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cgroup"

DOCKER = "3f4e1b2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
K8S = "8c1d5b7e3a9f2c4d6e8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d0e"
PODMAN = "c0ffee1234567890abcdef1234567890abcdef1234567890abcdef1234567890"
POD = "4a2b6c8d-1e3f-4a5b-8c7d-9e0f1a2b3c4d"
POD_ = POD.replace("-", "_")  # as systemd slice names carry it

NOTHING = CgroupFacts()


def docker(uid: int | None = None) -> CgroupFacts:
    return CgroupFacts(ContainerRef(DOCKER, "docker", host_uid=uid), host_uid=uid)


def pod(runtime: str = "containerd") -> CgroupFacts:
    return CgroupFacts(ContainerRef(K8S, runtime, pod=POD))


def podman(uid: int | None = None) -> CgroupFacts:
    return CgroupFacts(ContainerRef(PODMAN, "podman", host_uid=uid), host_uid=uid)


def named(name: str, runtime: str) -> CgroupFacts:
    return CgroupFacts(ContainerRef(name, runtime, name=name))


def job(job_id: int, step: str, uid: int | None = None) -> CgroupFacts:
    return CgroupFacts(job=SlurmJobRef(job_id, step), host_uid=uid)


EXPECTED: dict[str, CgroupFacts] = {
    "docker_v1_cgroupfs.txt": docker(),
    "docker_v1_systemd.txt": docker(),
    "docker_v2_systemd.txt": docker(),
    "docker_v2_cgroupfs.txt": docker(),
    "docker_rootless_cgroupfs.txt": docker(uid=1000),
    "docker_rootless_systemd.txt": docker(uid=1000),
    "k8s_v1_cgroupfs_burstable.txt": pod(),
    "k8s_v1_cgroupfs_guaranteed.txt": pod(),
    "k8s_v1_systemd_besteffort.txt": pod(),
    "k8s_v2_systemd_burstable.txt": pod(),
    "k8s_v2_systemd_guaranteed.txt": pod(),
    "k8s_v2_cgroupfs_besteffort.txt": pod(),
    "crio_v2.txt": pod("cri-o"),
    "crio_conmon_v2.txt": NOTHING,  # the monitor beside the container, not the container
    "podman_v2_rootful.txt": podman(),
    "podman_v2_rootful_split.txt": podman(),
    "podman_v2_rootless.txt": podman(uid=1000),
    "podman_v2_conmon.txt": NOTHING,
    "podman_v1_cgroupfs.txt": podman(),
    "lxc_v1.txt": named("gpu-box", "lxc"),
    "lxc_payload_v2.txt": named("gpu-box", "lxc"),
    "lxc_payload_dir_v2.txt": named("gpu-box", "lxc"),
    "lxc_monitor_v2.txt": NOTHING,
    "nspawn_v2.txt": named("ubuntu-22-04", "nspawn"),  # machine-ubuntu\x2d22\x2d04.scope
    "libvirt_v2.txt": named("qemu-1-win11", "libvirt"),
    "slurm_v1_step0.txt": job(81234, "0"),
    "slurm_v1_batch_nodename.txt": job(81234, "batch"),
    # Slurm's v1 plugin leaves name=systemd alone: the login session shows there.
    "slurm_v1_extern.txt": job(81234, "extern", uid=1000),
    "slurm_v2_batch.txt": job(81234, "batch"),
    "slurm_v2_step3.txt": job(81235, "3"),
    "slurm_v2_extern.txt": job(81234, "extern"),
    "slurm_v2_interactive.txt": job(4294967294, "interactive"),
    "slurm_v2_stepd.txt": job(81234, "0"),
    # A user may build any tree in their own systemd instance: no job there.
    "slurm_v2_fake_in_user_service.txt": CgroupFacts(host_uid=1000),
    "user_session_v2.txt": CgroupFacts(host_uid=1000),
    "user_session_v1.txt": CgroupFacts(host_uid=1001),
    "host_v2.txt": NOTHING,
    "host_service_v2.txt": NOTHING,
    "garbage.txt": NOTHING,
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    assert parse_cgroup(raw) == EXPECTED[name]
    assert parse_cgroup(raw.decode()) == EXPECTED[name]


def test_this_machine_is_parsed_without_error() -> None:
    parse_cgroup(Path("/proc/self/cgroup").read_bytes())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Docker's cgroupfs driver on a hybrid host: v1 controllers in the container, the
        # name=systemd and v2 paths left in the daemon's service. The controllers still tell.
        (f"4:memory:/docker/{DOCKER}\n1:name=systemd:/system.slice/containerd.service\n"
         "0::/system.slice/containerd.service\n", docker()),
        # A zombie left in a removed v2 cgroup.
        ("0::/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0 (deleted)\n",
         job(7, "batch")),
        # The job's own cgroup, no step below it.
        ("0::/system.slice/slurmstepd.scope/job_7\n", job(7, "")),
        ("0::/system.slice/gpu07_slurmstepd.scope/job_7/step_1\n", job(7, "1")),  # multi-slurmd
        ("4:memory:/slurm/uid_1000/job_18446744073709551615/step_0\n",
         job(18446744073709551615, "0")),
        ("4:memory:/slurm/uid_1000/job_18446744073709551616/step_0\n", NOTHING),
        ("4:memory:/slurm/job_1/step_0\n", NOTHING),  # no uid_N level: not slurm's layout
        ("4:memory:/x/slurm/uid_1/job_1/step_0\n", NOTHING),  # v1 tree anchored at the root
        ("0::/system.slice/slurmstepd.scope/job_7/step_weird\n", job(7, "")),
        # Docker in a Slurm job on a hybrid host: both facts.
        (f"4:memory:/slurm/uid_1000/job_5/step_0\n0::/docker/{DOCKER}\n",
         CgroupFacts(ContainerRef(DOCKER, "docker"), SlurmJobRef(5, "0"))),
        # Static pod: a 32-hex-digit UID.
        (f"0::/kubepods/besteffort/pod0123456789abcdef0123456789abcdef/{K8S}\n",
         CgroupFacts(ContainerRef(K8S, "containerd", pod="0123456789abcdef0123456789abcdef"))),
        # kind / rootless kubelet: kubelet.slice/kubelet-kubepods-...
        ("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         f"kubelet-kubepods-besteffort-pod{POD_}.slice/cri-containerd-{K8S}.scope\n",
         pod()),
        # A bare id outside docker/kubepods: nobody's layout we know.
        (f"0::/actions_job/{DOCKER}\n", NOTHING),
        # Nested: the outermost container is the host's, the one its files name.
        (f"0::/docker/{DOCKER}/docker/{K8S}\n", docker()),
        ("0::/machine.slice/machine-a\\xzz.scope\n", NOTHING),  # bad escape: a name we can't show
        ("0::/machine.slice/machine-\\xff.scope\n", NOTHING),  # not UTF-8
        ("0::/machine.slice/machine-libpod_pod_abc.slice\n", NOTHING),  # a podman pod slice
        ("0::/user.slice/user-4294967295.slice/session-1.scope\n", NOTHING),  # (uid_t)-1
        ("0::/user.slice/user-99999999999.slice/session-1.scope\n", NOTHING),
        ("", NOTHING),
        (b"\xff\xfe\x00garbage", NOTHING),
        ("0::/" + "a/" * 5000 + "\n", NOTHING),  # beyond any real path
        ("0::/docker/" + "x" * 300 + "\n", NOTHING),
    ],
)
def test_layouts(text: str | bytes, expected: CgroupFacts) -> None:
    assert parse_cgroup(text) == expected


_PIECES = st.sampled_from([
    "0", "1", "12", ":", "::", "/", "\n", "name=systemd", "memory", "cpu,cpuacct", "docker",
    "docker-", ".scope", ".slice", DOCKER, DOCKER[:40], "kubepods", "pod", POD, "_", "-",
    "slurm", "uid_1000", "job_", "step_", "batch", "99999999999999999999999", "user-",
    "user@1000.service", "lxc", "lxc.payload.", "machine.slice", "machine-", "\\x2d", "\\x",
    "libpod-", "cri-containerd-", "crio-", " (deleted)", "\x00", "\r", "é",
])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(_PIECES, max_size=40).map("".join)))
def test_never_raises_on_text(text: str) -> None:
    facts = parse_cgroup(text)
    assert isinstance(facts, CgroupFacts)
    if facts.container is not None:
        assert facts.container.id and len(facts.container.id) <= 253


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_on_bytes(raw: bytes) -> None:
    assert isinstance(parse_cgroup(raw), CgroupFacts)
