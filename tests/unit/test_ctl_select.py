"""Which GPUs hmonitor-ctl calls free, in which order, and which host a K-GPU job gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmonitor._pb import hm_pb2
from hmonitor.ctl.model import Gpu, Host, Proc
from hmonitor.ctl.select import Criteria, could_fit, free_gpus, host_matches, pick_host
from hmonitor.rules import gpu_is_free
from hmonitor.web.rules import gpu_is_free as dashboard_gpu_is_free

GIB = 1 << 30
H200 = 140 * GIB  # a multiple of 20: 5 % of it is exact


def g(index: int, *, total: int = H200, used: int = 0, util: int = 0, temp: int = 40,
      procs: int = 0, name: str = "NVIDIA H200", mig: bool | None = None) -> Gpu:
    return Gpu(index, name, used, total, util, temp, f"GPU-{index}", mig,
               tuple(Proc(100 + i, "alice", used) for i in range(procs)))


def host(name: str, *gpus: Gpu, up: bool = True, hostname: str = "") -> Host:
    return Host(name, f"{name}:9203", up, "" if up else "connection refused", None,
                hostname or f"{name}.lab", gpus)


def test_the_free_rule() -> None:
    assert g(0).free()
    assert not g(0, procs=1).free()  # someone runs something
    assert not g(0, util=5).free() and g(0, util=4).free()  # under 5 %
    assert not g(0, used=H200 // 20).free() and g(0, used=H200 // 20 - 1).free()  # under 5 %
    assert not g(0, name="GPU lost: GPU is lost").free()
    assert not g(0, mig=True).free() and g(0, mig=False).free()
    assert not g(0, total=0).free()  # a GPU that reports no memory is not one to hand out
    # --max-util moves the utilization threshold only.
    assert g(0, util=20).free(max_util=30) and not g(0, util=20, procs=1).free(max_util=30)
    assert not g(0, util=3).free(max_util=2)


@given(procs=st.integers(0, 2), util=st.integers(0, 100), total=st.integers(0, 200 * GIB),
       used_pct=st.integers(0, 100), lost=st.booleans())
def test_the_shared_rule_is_the_dashboards_for_gpus_without_mig(
        procs: int, util: int, total: int, used_pct: int, lost: bool) -> None:
    # The dashboard's own rule predates hmonitor.rules; they must not drift apart.
    name = "GPU lost: gone" if lost else "NVIDIA H200"
    used = total * used_pct // 100
    message = hm_pb2.GPUInfo(id=0, name=name, utilization=util, mem_total=total, mem_used=used,
                             procs=[hm_pb2.ProcInfo(pid=1000 + i) for i in range(procs)])
    assert gpu_is_free(name=name, processes=procs, utilization=util, mem_used=used,
                       mem_total=total) == dashboard_gpu_is_free(message)


def test_free_gpus_best_first_and_only_on_up_hosts() -> None:
    hosts = [
        host("a", g(0, used=GIB), g(1, util=3), g(2, procs=1, util=90)),
        host("b", g(0, total=24 * GIB, name="NVIDIA GeForce RTX 4090"), g(1)),
        host("down", g(0), up=False),  # its last snapshot says nothing about now
    ]
    picks = [f"{p.host.name}:{p.gpu.index}" for p in free_gpus(hosts)]
    # most memory free first, then the idlest, then host order
    assert picks == ["b:1", "a:1", "a:0", "b:0"]
    assert [f"{p.host.name}:{p.gpu.index}" for p in free_gpus(hosts, Criteria(min_mem=40 * GIB))
            ] == ["b:1", "a:1", "a:0"]
    assert [p.gpu.index for p in free_gpus(hosts, Criteria(max_util=1))] == [1, 0, 0]
    assert [p.host.name for p in free_gpus(hosts, Criteria(host="b*"))] == ["b", "b"]


def test_host_patterns_match_the_dashboards_name_or_the_hostname() -> None:
    h = host("gpu01", hostname="node-17.cluster.lab")
    for pattern in ("gpu01", "GPU0*", "node-17", "node-17.cluster.lab", "*17*", None):
        assert host_matches(h, pattern), pattern
    for pattern in ("gpu0", "node", "gpu02"):
        assert not host_matches(h, pattern), pattern


def test_k_gpus_on_one_host_best_fit() -> None:
    hosts = [
        host("roomy", g(0), g(1), g(2), g(3)),
        host("snug", g(0), g(1, procs=1), g(2), g(3, procs=1)),
        host("small", g(0, total=24 * GIB), g(1, total=24 * GIB), g(2, total=24 * GIB)),
    ]
    # Two GPUs: the host with the fewest free that still fits, so "roomy" stays whole.
    p = pick_host(hosts, 2)
    assert p is not None and p.host.name == "snug" and [x.index for x in p.gpus] == [0, 2]
    # Three: snug has only two; small and roomy both fit, small fits best.
    p = pick_host(hosts, 3)
    assert p is not None and p.host.name == "small"
    # ... unless they must be big.
    p = pick_host(hosts, 3, Criteria(min_mem=40 * GIB))
    assert p is not None and p.host.name == "roomy" and [x.index for x in p.gpus] == [0, 1, 2]
    assert pick_host(hosts, 5) is None
    assert pick_host(hosts, 2, Criteria(host="small")) is not None
    assert pick_host(hosts, 4, Criteria(host="small")) is None


def test_ties_go_to_the_host_with_more_memory_then_the_first_listed() -> None:
    hosts = [host("x", g(0, total=80 * GIB), g(1, total=80 * GIB)), host("y", g(0), g(1)),
             host("z", g(0), g(1))]
    p = pick_host(hosts, 2)
    assert p is not None and p.host.name == "y"


@pytest.mark.parametrize(("k", "criteria", "expected"), [
    (2, Criteria(), True), (3, Criteria(), True), (4, Criteria(), False),
    (2, Criteria(min_mem=100 * GIB), True), (3, Criteria(min_mem=100 * GIB), False),
    (1, Criteria(host="nope"), False),
])
def test_could_fit_counts_busy_and_down_hosts_but_not_lost_or_mig(
        k: int, criteria: Criteria, expected: bool) -> None:
    hosts = [host("a", g(0, procs=1), g(1, mig=True), g(2, name="GPU lost: x"), g(3)),
             host("b", g(0, total=24 * GIB), g(1, procs=1), g(2), up=False)]
    assert could_fit(hosts, k, criteria) is expected
