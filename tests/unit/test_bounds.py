"""bounds.py: whatever an agent sends, what the dashboard keeps is within bounds, and says so."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hmonitor._pb import hm_pb2
from hmonitor.web.bounds import CUT_MARK, LIMITS, Limits, bound_host_info, bound_text

SMALL = Limits(name=8, path=12, cmdline=24, error=16, gpus=3, procs=4, mig=2, disks=3, notes=4)

text = st.text(max_size=20)
containers = st.builds(hm_pb2.Container, id=text, runtime=text, name=st.text(max_size=30),
                       pod=text, host_user=text)
jobs = st.builds(hm_pb2.SlurmJob, id=st.integers(0, 2**64 - 1), step=text)
procs = st.builds(hm_pb2.ProcInfo, pid=st.integers(0, 2**32 - 1), username=text, basename=text,
                  mem=st.integers(0, 2**64 - 1), cmdline=st.text(max_size=40),
                  container=st.none() | containers, job=st.none() | jobs)
migs = st.builds(hm_pb2.MigInstance, profile=text, uuid=text)
gpus = st.builds(hm_pb2.GPUInfo, id=st.integers(0, 100), name=text, uuid=text, pci_bus_id=text,
                 procs=st.lists(procs, max_size=8), mig=st.lists(migs, max_size=4))
disks = st.builds(hm_pb2.DiskInfo, device=text, mount=st.text(max_size=30))
hosts = st.builds(hm_pb2.HostInfo, id=text, hostname=text, ip=text, err=st.text(max_size=40),
                  driver_version=text, cuda_version=text, agent_version=text,
                  gpus=st.lists(gpus, max_size=5), disks=st.lists(disks, max_size=5))


def strings(info: hm_pb2.HostInfo) -> list[tuple[str, int]]:
    """Every string with its limit."""
    out = [(getattr(info, f), SMALL.name) for f in ("id", "hostname", "ip", "driver_version",
                                                     "cuda_version", "agent_version")]
    out.append((info.err, SMALL.error))
    for g in info.gpus:
        out += [(g.name, SMALL.name), (g.uuid, SMALL.name), (g.pci_bus_id, SMALL.name)]
        out += [(s, SMALL.name) for m in g.mig for s in (m.profile, m.uuid)]
        for p in g.procs:
            out += [(p.username, SMALL.name), (p.basename, SMALL.name), (p.job.step, SMALL.name),
                    (p.cmdline, SMALL.cmdline), (p.container.name, SMALL.path)]
            out += [(getattr(p.container, f), SMALL.name)
                    for f in ("id", "runtime", "pod", "host_user")]
    for d in info.disks:
        out += [(d.device, SMALL.name), (d.mount, SMALL.path)]
    return out


@settings(max_examples=150, deadline=None)
@given(hosts)
def test_whatever_an_agent_sends_the_result_is_within_bounds_and_says_what_was_cut(
    info: hm_pb2.HostInfo,
) -> None:
    original = hm_pb2.HostInfo()
    original.CopyFrom(info)
    out, notes = bound_host_info(info, SMALL)
    assert info == original, "the answer received is never changed in place"
    assert all(len(s) <= limit for s, limit in strings(out))
    assert len(out.gpus) <= SMALL.gpus and len(out.disks) <= SMALL.disks
    assert all(len(g.procs) <= SMALL.procs and len(g.mig) <= SMALL.mig for g in out.gpus)
    assert len(notes) <= SMALL.notes
    if not notes:
        assert out is info  # nothing to cut: no copy
        return
    assert out != info

    def same_or_cut(cut: str, sent: str) -> bool:
        return cut == sent or (cut.endswith(CUT_MARK) and sent.startswith(cut[:-1]))

    pairs = [(out.id, info.id), (out.err, info.err)]
    pairs += [(a.name, b.name) for a, b in zip(out.gpus, info.gpus, strict=False)]
    pairs += [(a.mount, b.mount) for a, b in zip(out.disks, info.disks, strict=False)]
    assert all(same_or_cut(a, b) for a, b in pairs)
    for kept, sent in zip(out.gpus, info.gpus, strict=False):
        for p in kept.procs:  # each kept process is one that was sent
            assert any(q.pid == p.pid and q.mem == p.mem and same_or_cut(p.username, q.username)
                       and same_or_cut(p.cmdline, q.cmdline) and p.job.id == q.job.id
                       and p.HasField("container") == q.HasField("container")
                       for q in sent.procs)
        if len(sent.procs) > SMALL.procs:  # ... and those kept use the most memory
            threshold = sorted((p.mem for p in sent.procs), reverse=True)[SMALL.procs - 1]
            assert all(p.mem >= threshold for p in kept.procs)


def test_a_host_within_bounds_is_handed_on_as_is() -> None:
    info = hm_pb2.HostInfo(id="gpu01", gpus=[hm_pb2.GPUInfo(name="NVIDIA H200", procs=[
        hm_pb2.ProcInfo(username="alice", basename="python")] * 8)])
    out, notes = bound_host_info(info)
    assert out is info and notes == ()


def test_cuts_are_counted_per_kind_and_the_list_of_cuts_is_bounded_too() -> None:
    info = hm_pb2.HostInfo(
        gpus=[hm_pb2.GPUInfo(id=i, name="x" * 20, procs=[
            hm_pb2.ProcInfo(pid=p, username="u" * (9 + p)) for p in range(6)]) for i in range(5)],
        disks=[hm_pb2.DiskInfo(mount="/" + "m" * 20) for _ in range(5)],
    )
    _, notes = bound_host_info(info, SMALL)
    assert notes[0] == "5 GPUs, the first 3 shown"
    assert notes[1] == "GPU 0: 6 processes, the 4 using most memory shown"
    assert notes[-1].startswith("and ") and notes[-1].endswith(" more cuts")
    _, notes = bound_host_info(info, Limits(name=8, path=12, gpus=3, procs=6, disks=5))
    assert "GPU name: 3 values over 8 characters cut (the longest 20)" in notes
    assert "process username: 18 values over 8 characters cut (the longest 14)" in notes
    assert "disk mount: 5 values over 12 characters cut (the longest 21)" in notes


def test_a_long_command_line_is_cut_to_4_kib_and_said() -> None:
    p = hm_pb2.ProcInfo(username="alice", cmdline="python train.py " + "--flag " * 2000)
    p.container.name = "ns/" + "pod" * 300
    g = hm_pb2.GPUInfo(procs=[p], mig=[hm_pb2.MigInstance(profile="1g.18gb")] * 40)
    out, notes = bound_host_info(hm_pb2.HostInfo(gpus=[g]))
    kept = out.gpus[0].procs[0]
    assert len(kept.cmdline) == LIMITS.cmdline and kept.cmdline.startswith("python train.py ")
    assert len(kept.container.name) == LIMITS.path and len(out.gpus[0].mig) == LIMITS.mig
    assert "GPU 0: 40 MIG instances, the first 32 shown" in notes
    assert "process cmdline: 14,016 characters, cut to 4096" in notes
    assert "container name: 903 characters, cut to 512" in notes


@given(st.text(max_size=3000))
def test_bound_text(value: str) -> None:
    out = bound_text(value)
    assert len(out) <= LIMITS.error
    assert out == value or (out.endswith(CUT_MARK) and value.startswith(out[:-1]))
