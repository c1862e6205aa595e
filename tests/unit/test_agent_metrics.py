"""The agent's Prometheus collector over HostInfo snapshots: the values and labels a user checks,
and promtool's lint of the exposition text."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from builders import FAR_FUTURE, GIB, MIB, gpu, host_info, lost_gpu, proc
from prometheus_client import generate_latest
from promtext import names, of, one, samples

from hmonitor import __version__
from hmonitor._pb import hm_pb2
from hmonitor.agent.metrics import build_registry, families
from hmonitor.agent.snapshot import SourceStat
from hmonitor.agent.sources.disks import DiskFailure
from hmonitor.metricfamilies import MAX_USERS_PER_GPU, OTHER_USER
from hmonitor.wire import EXPIRATION_NEVER, EXPIRATION_UNKNOWN, EXPIRED_AT_EPOCH

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
STATS = {"gpus": SourceStat(0.012), "disks": SourceStat(0.5, ok=False, error="disks: hung")}


def scrape(info: hm_pb2.HostInfo | None, stats: dict[str, SourceStat] | None = None,
           *, pids: bool = False) -> str:
    def snapshot() -> hm_pb2.HostInfo:
        if info is None:
            raise RuntimeError("collection failed")
        return info

    return generate_latest(build_registry(snapshot, STATS if stats is None else stats,
                                          pids=pids)).decode()


def busy() -> hm_pb2.HostInfo:
    g0 = gpu(0, proc("alice", pid=100, mem_gib=4, job=81234),
             proc("alice", pid=101, mem_gib=2.5, basename="torchrun"),
             proc("bob", pid=102, mem_gib=1, expiration=FAR_FUTURE),
             util=37, used_gib=8.0001, total_gib=80, temp=51, fan=30)
    g0.uuid, g0.power_mw, g0.power_limit_mw, g0.sm_clock_mhz = "GPU-aaaa", 123_456, 700_000, 1980
    g1 = gpu(1, util=0)  # a consumer card: no power, no clocks (proto3 optional unset)
    g1.uuid = "GPU-bbbb"
    info = host_info("node1", [g0, g1, lost_gpu(2, "GPU is lost")],
                     disks=[hm_pb2.DiskInfo(device="/dev/md0", mount="/data", used=600 * GIB,
                                            total=1000 * GIB)])
    info.driver_version, info.cuda_version, info.agent_version = "560.35.03", "12.6", "9.9"
    info.load1, info.mem_used, info.mem_total = 3.25, 20 * GIB, 64 * GIB
    return info


def test_dcgm_family_values_units_and_labels() -> None:
    found = samples(scrape(busy()))
    labels = {"gpu": "0", "UUID": "GPU-aaaa", "device": "nvidia0",
              "modelName": "NVIDIA A100-SXM4-80GB", "hostname": "node1.lab"}
    assert one(found, "DCGM_FI_DEV_GPU_UTIL", **labels) == 37
    assert one(found, "DCGM_FI_DEV_GPU_TEMP", **labels) == 51
    assert one(found, "DCGM_FI_DEV_FAN_SPEED", **labels) == 30
    # MiB, whole, truncated as dcgm-exporter: 8.0001 GiB is 8192 MiB and a bit
    assert one(found, "DCGM_FI_DEV_FB_USED", **labels) == 8192
    assert one(found, "DCGM_FI_DEV_FB_TOTAL", **labels) == 80 * 1024
    assert one(found, "DCGM_FI_DEV_FB_FREE", **labels) == (80 * GIB - int(8.0001 * GIB)) // MIB
    assert one(found, "DCGM_FI_DEV_POWER_USAGE", **labels) == pytest.approx(123.456)  # W
    assert one(found, "DCGM_FI_DEV_SM_CLOCK", **labels) == 1980  # MHz
    # GPU 1 reports no power or clock: no series, rather than a false 0
    assert {dict(k)["gpu"] for k in of(found, "DCGM_FI_DEV_POWER_USAGE")} == {"0"}
    assert {dict(k)["gpu"] for k in of(found, "DCGM_FI_DEV_SM_CLOCK")} == {"0"}
    assert {dict(k)["gpu"] for k in of(found, "DCGM_FI_DEV_GPU_TEMP")} == {"0", "1"}


def test_native_gpu_family_in_base_units() -> None:
    found = samples(scrape(busy()))
    g = {"gpu": "0", "uuid": "GPU-aaaa", "model": "NVIDIA A100-SXM4-80GB"}
    assert one(found, "hmonitor_gpu_utilization_ratio", **g) == pytest.approx(0.37)
    assert one(found, "hmonitor_gpu_fan_speed_ratio", **g) == pytest.approx(0.30)
    assert one(found, "hmonitor_gpu_memory_used_bytes", **g) == int(8.0001 * GIB)
    assert one(found, "hmonitor_gpu_memory_total_bytes", **g) == 80 * GIB
    assert one(found, "hmonitor_gpu_temperature_celsius", **g) == 51
    assert one(found, "hmonitor_gpu_power_watts", **g) == pytest.approx(123.456)
    assert one(found, "hmonitor_gpu_power_limit_watts", **g) == 700
    assert one(found, "hmonitor_gpu_sm_clock_hertz", **g) == 1.98e9
    assert of(found, "hmonitor_gpu_power_watts").keys() == {frozenset(g.items())}
    assert one(found, "hmonitor_gpu_up", gpu="0", error="") == 1
    assert one(found, "hmonitor_gpu_up", gpu="1", error="") == 1


def test_lost_gpu_is_up_0_with_its_reason_and_no_readings() -> None:
    found = samples(scrape(busy()))
    # The reason alone, as the alert's description quotes it (the wire's "GPU lost: " prefix
    # would say it twice).
    assert one(found, "hmonitor_gpu_up", gpu="2", error="GPU is lost") == 0
    for (name, labels), _ in found.items():
        if name.startswith(("DCGM_", "hmonitor_gpu_")) and name != "hmonitor_gpu_up":
            assert dict(labels).get("gpu") != "2", name


def test_mig_gpu_has_no_utilization_series() -> None:
    g = gpu(0, util=0)
    g.mig_enabled = True
    found = samples(scrape(host_info("h", [g])))
    assert of(found, "DCGM_FI_DEV_GPU_UTIL") == {}
    assert of(found, "hmonitor_gpu_utilization_ratio") == {}
    assert len(of(found, "DCGM_FI_DEV_FB_USED")) == 1


def test_users_per_gpu_by_owner() -> None:
    found = samples(scrape(busy()))
    assert one(found, "hmonitor_gpu_user_memory_bytes", gpu="0", user="alice") == 6.5 * GIB
    assert one(found, "hmonitor_gpu_user_processes", gpu="0", user="alice") == 2
    assert one(found, "hmonitor_gpu_user_memory_bytes", gpu="0", user="bob") == 1 * GIB
    assert {dict(k)["gpu"] for k in of(found, "hmonitor_gpu_user_processes")} == {"0"}


def test_users_beyond_the_cap_are_summed_into_other() -> None:
    n = MAX_USERS_PER_GPU + 6
    # user k holds k+1 GiB: the biggest keep their own series
    procs = [proc(f"u{k:03d}", pid=1000 + k, mem_gib=k + 1) for k in range(n)]
    found = samples(scrape(host_info("h", [gpu(0, *procs)])))
    mem = {dict(k)["user"]: v for k, v in of(found, "hmonitor_gpu_user_memory_bytes").items()}
    count = {dict(k)["user"]: v for k, v in of(found, "hmonitor_gpu_user_processes").items()}
    assert len(mem) == len(count) == MAX_USERS_PER_GPU
    rest = n - (MAX_USERS_PER_GPU - 1)  # the smallest users: u000 .. u006
    assert mem[OTHER_USER] == sum(k + 1 for k in range(rest)) * GIB
    assert count[OTHER_USER] == rest
    assert f"u{n - 1:03d}" in mem and "u000" not in mem
    assert sum(mem.values()) == sum(p.mem for p in procs)


def test_account_expiry_only_for_dates() -> None:
    g = gpu(0, proc("alice", pid=1, expiration=FAR_FUTURE),
            proc("bob", pid=2, expiration=EXPIRATION_NEVER),
            proc("carol", pid=3, expiration=EXPIRATION_UNKNOWN),
            proc("dave", pid=4, expiration=EXPIRED_AT_EPOCH),
            proc("erin", pid=5, expiration=1_700_000_000))
    found = samples(scrape(host_info("h", [g, gpu(1, proc("erin", pid=6, expiration=FAR_FUTURE))])))
    expiry = {dict(k)["user"]: v for k, v in
              of(found, "hmonitor_account_expiry_timestamp_seconds").items()}
    # never and unknown give no series; "expired on day 0" is the date 0; the earliest wins
    assert expiry == {"alice": FAR_FUTURE, "dave": 0, "erin": 1_700_000_000}


def test_disks_host_build_and_sources() -> None:
    found = samples(scrape(busy()))
    assert one(found, "hmonitor_disk_used_bytes", mount="/data", device="/dev/md0") == 600 * GIB
    assert one(found, "hmonitor_disk_total_bytes", mount="/data", device="/dev/md0") == 1000 * GIB
    assert one(found, "hmonitor_host_load1") == 3.25
    assert one(found, "hmonitor_host_memory_used_bytes") == 20 * GIB
    assert one(found, "hmonitor_host_memory_total_bytes") == 64 * GIB
    assert one(found, "hmonitor_build_info", version="9.9", driver_version="560.35.03",
               cuda_version="12.6") == 1
    assert one(found, "hmonitor_source_duration_seconds", source="disks") == 0.5
    assert one(found, "hmonitor_source_success", source="disks") == 0
    assert one(found, "hmonitor_source_success", source="gpus") == 1
    assert one(found, "hmonitor_nvml_up") == 1


def test_failing_gpu_source_and_failing_snapshot_still_scrape() -> None:
    bad = {"gpus": SourceStat(0.001, ok=False, error="NVML: driver not loaded")}
    found = samples(scrape(host_info("h", [], err="NVML: driver not loaded"), bad))
    assert one(found, "hmonitor_nvml_up") == 0
    assert one(found, "hmonitor_source_success", source="gpus") == 0
    found = samples(scrape(None))  # the snapshot itself raised: the stats still come
    assert one(found, "hmonitor_source_success", source="disks") == 0


def test_nvml_up_is_the_gpu_source_alone() -> None:
    # The snapshot failed for a reason of its own (say a disk): NVML answered all the same, so
    # HmonitorNvmlFailing must not fire.
    found = samples(scrape(None))
    assert one(found, "hmonitor_source_success", source="gpus") == 1
    assert one(found, "hmonitor_nvml_up") == 1
    # No GPU source has run yet: nothing is known of NVML, so no series rather than a false 0.
    assert "hmonitor_nvml_up" not in names(samples(scrape(None, {})))


def test_no_nvml_up_on_a_host_without_the_driver() -> None:
    # No libnvidia-ml.so.1 at all: a host without NVIDIA GPUs (login, storage), where NVML is not
    # failing but absent; HmonitorNvmlFailing must not fire for ever there.
    none = {"gpus": SourceStat(0.001, ok=False, error="NVML library libnvidia-ml.so.1 not found:"
                               " is the NVIDIA driver installed?")}
    found = samples(scrape(host_info("h", [], err=none["gpus"].error), none))
    assert "hmonitor_nvml_up" not in names(found)
    assert one(found, "hmonitor_source_success", source="gpus") == 0


def test_disk_up_per_mount_with_a_bounded_reason() -> None:
    stats = {"disks": SourceStat(2.0, ok=False, error="statvfs /nfs: ...", failed_disks=(
        DiskFailure("srv:/x", "/nfs", "no answer within 2.0 s (hung mount?)"),
        DiskFailure("/dev/sdz1", "/long", "x" * 1000)))}
    found = samples(scrape(busy(), stats))
    assert of(found, "hmonitor_disk_up") == {
        frozenset({"mount": "/data", "device": "/dev/md0", "error": ""}.items()): 1,
        frozenset({"mount": "/nfs", "device": "srv:/x",
                   "error": "no answer within 2.0 s (hung mount?)"}.items()): 0,
        frozenset({"mount": "/long", "device": "/dev/sdz1", "error": "x" * 200}.items()): 0,
    }
    # the snapshot failed: the failing mounts still show
    assert len(of(samples(scrape(None, stats)), "hmonitor_disk_up")) == 2


def test_build_info_even_when_the_snapshot_fails() -> None:
    found = samples(scrape(None))
    assert one(found, "hmonitor_build_info", version=__version__, driver_version="",
               cuda_version="") == 1


def test_a_process_on_several_mig_instances_counts_once() -> None:
    # NVML lists a process once per (GPU instance, compute instance) it uses on a MIG GPU.
    parts = []
    for gi, mem in ((1, 2), (2, 3)):
        p = proc("alice", pid=500, mem_gib=mem, basename="train")
        p.mig.gpu_instance, p.mig.compute_instance = gi, 0
        parts.append(p)
    g = gpu(0, *parts, proc("alice", pid=501, mem_gib=1))
    g.mig_enabled = True
    found = samples(scrape(host_info("h", [g]), pids=True))
    assert one(found, "hmonitor_gpu_user_processes", gpu="0", user="alice") == 2
    assert one(found, "hmonitor_gpu_user_memory_bytes", gpu="0", user="alice") == 6 * GIB
    per_pid = of(found, "hmonitor_process_gpu_memory_bytes")
    assert per_pid == {
        frozenset({"gpu": "0", "pid": "500", "user": "alice", "command": "train"}.items()):
            5 * GIB,
        frozenset({"gpu": "0", "pid": "501", "user": "alice", "command": "python"}.items()):
            1 * GIB,
    }
    assert "# HELP" in scrape(host_info("h", [g]), pids=True)  # and it renders (no duplicates)


def test_per_pid_series_only_when_asked() -> None:
    assert of(samples(scrape(busy())), "hmonitor_process_gpu_memory_bytes") == {}
    found = samples(scrape(busy(), pids=True))
    per_pid = of(found, "hmonitor_process_gpu_memory_bytes")
    assert len(per_pid) == 3
    assert one(found, "hmonitor_process_gpu_memory_bytes", gpu="0", pid="101", user="alice",
               command="torchrun") == 2.5 * GIB


def test_owner_in_a_container_and_without_a_name() -> None:
    boxed = proc("root", pid=7, uid=0, mem_gib=1)
    boxed.container.id, boxed.container.runtime, boxed.container.name = "f" * 64, "docker", "web"
    nameless = proc("", pid=8, uid=4242, mem_gib=2)
    found = samples(scrape(host_info("h", [gpu(0, boxed, nameless)])))
    users = {dict(k)["user"] for k in of(found, "hmonitor_gpu_user_memory_bytes")}
    assert users == {"container web (docker)", "uid 4242"}


def test_families_leave_out_empty_ones() -> None:
    names = {m.name for m in families(host_info("h", [], disks=()), {"gpus": SourceStat()})}
    assert "DCGM_FI_DEV_GPU_UTIL" not in names and "hmonitor_disk_used_bytes" not in names
    assert {"hmonitor_nvml_up", "hmonitor_build"} <= names


def _promtool(text: str) -> tuple[int, str]:
    if not shutil.which(PROMTOOL):
        pytest.skip("promtool not installed (Debian package prometheus)")
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          check=False,
                          text=True, timeout=30)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_promtool_lints_the_native_family_clean() -> None:
    text = scrape(busy(), pids=True)
    native = "".join(line + "\n" for line in text.splitlines() if "DCGM_" not in line)
    assert "hmonitor_gpu_up" in native
    assert _promtool(native) == (0, "")


def test_promtool_only_objects_to_dcgm_label_names() -> None:
    # dcgm-exporter's label "modelName" is camelCase; kept as it is so its dashboards work.
    code, out = _promtool(scrape(busy(), pids=True))
    problems = [line for line in out.splitlines() if line]
    assert all(
        line.startswith("DCGM_FI_DEV_") and "label names should be written in 'snake_case'" in line
        for line in problems
    ), out
    assert code in (0, 3), out  # 3: lint problems only, none of them a parse error
