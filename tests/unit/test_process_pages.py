"""Who runs a process, and a GPU's identity, power, clocks, health and MIG instances, as the
pages and the JSON API show them (issue: Slurm jobs, containers, MIG)."""

from __future__ import annotations

import html
import re

import pytest
from builders import FAR_FUTURE, gpu, host_info, proc, up
from flask.testing import FlaskClient
from webkit import BEARER, login

from hmonitor._pb import hm_pb2
from hmonitor.web.hoststate import HostState

GIB = 1 << 30
DOCKER_ID = "3f2a9c81d0e4" + "5d" * 26
CMDLINE = "python train.py --data /data/imagenet --lr 3e-4 --note <b>x</b>"


def _docker_root() -> hm_pb2.ProcInfo:
    p = proc("root", pid=501, uid=0, basename="ollama", expiration=1)
    p.container.id, p.container.runtime = DOCKER_ID, "docker"
    p.cmdline = "/bin/ollama serve"
    return p


def _mig_gpu() -> hm_pb2.GPUInfo:
    on_mig = proc("carol", pid=900, mem_gib=10, expiration=FAR_FUTURE)
    on_mig.mig.gpu_instance, on_mig.mig.compute_instance = 5, 0
    g = gpu(2, on_mig, name="NVIDIA H200", total_gib=141)
    g.mig_enabled = True
    g.mig.add(gpu_instance=1, compute_instance=0, profile="3g.71gb", uuid="MIG-aaaa",
              mem_used=0, mem_total=71 * GIB, sm_count=60)
    g.mig.add(gpu_instance=5, compute_instance=0, profile="2g.35gb", uuid="MIG-bbbb",
              mem_used=10 * GIB, mem_total=35 * GIB, sm_count=32)
    return g


@pytest.fixture
def states() -> list[HostState]:
    slurm = proc("alice", pid=400, mem_gib=30, expiration=FAR_FUTURE, job=81234)
    slurm.cmdline, slurm.start_time = CMDLINE, 1_800_000_000
    g0 = gpu(0, slurm, util=97, used_gib=31, name="NVIDIA H200", total_gib=141)
    g0.uuid, g0.pci_bus_id = "GPU-5a1e0000-0000-4000-8000-000000000000", "00000000:18:00.0"
    g0.power_mw, g0.power_limit_mw = 612_400, 700_000
    g0.sm_clock_mhz, g0.mem_clock_mhz, g0.throttle_reasons = 1755, 2619, 0x4 | 0x20
    g0.ecc_corrected, g0.ecc_uncorrected, g0.remapped_rows = 3, 0, 0
    g0.mig_enabled = False
    info = host_info("gpu01", [g0, gpu(1, _docker_root(), util=40), _mig_gpu()])
    info.driver_version, info.cuda_version, info.agent_version = "560.35.03", "12.6", "0.1.0"
    info.load1, info.cpus, info.mem_used, info.mem_total = 12.5, 64, 200 * GIB, 512 * GIB
    return [up("gpu01", info)]


@pytest.fixture
def client(client: FlaskClient) -> FlaskClient:
    login(client)
    return client


def text_of(page: str) -> str:
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", page).split()))


def test_overview_names_the_job_and_the_container_not_root(client: FlaskClient) -> None:
    page = client.get("/?view=panels").get_data(as_text=True)
    text = text_of(page)
    assert "alice · job 81234 (30 GiB" in text
    assert "container 3f2a9c81d0e4… (docker) (4.0 GiB" in text
    assert "root" not in text and "uid 0" not in text
    # A MIG GPU: its instances under the model, and no utilization figure (NVML has none).
    assert "3g.71gb 0.0/71 GiB" in text and "2g.35gb 10.0/35 GiB" in text
    row = re.search(r'<tr data-gpu="2">.*?</tr>', page, re.S)
    assert row is not None and ">MIG</span>" in row.group(0) and "%</td>" not in row.group(0)


def test_the_user_filter_finds_a_jobs_owner_and_a_container(client: FlaskClient) -> None:
    assert "alice · job 81234" in text_of(client.get("/?view=panels&user=alice").get_data(True))
    found = text_of(client.get("/?view=panels&user=3f2a9c").get_data(as_text=True))
    assert "container 3f2a9c81d0e4… (docker)" in found and "alice" not in found


def test_the_host_page_has_command_lines_on_hover_and_the_hosts_facts(
    client: FlaskClient,
) -> None:
    page = client.get("/host/gpu01").get_data(as_text=True)
    assert f'title="pid 400: {html.escape(CMDLINE)}"' in page  # escaped, on the chip
    text = text_of(page)
    for fact in ("Driver 560.35.03, CUDA 12.6", "Load 12.50 on 64 CPUs",
                 "Memory 200 GiB of 512 GiB", "Agent hmonitor 0.1.0"):
        assert fact in text


def test_the_gpu_page_shows_identity_power_clocks_and_health(client: FlaskClient) -> None:
    text = text_of(client.get("/host/gpu01/gpu/0").get_data(as_text=True))
    for fact in ("UUID GPU-5a1e0000-0000-4000-8000-000000000000", "PCI bus 00000000:18:00.0",
                 "Power 612 W of 700 W", "Clocks SM 1755 MHz, memory 2619 MHz",
                 "Throttling power cap, software thermal",
                 "ECC errors 3 corrected, 0 uncorrected", "Remapped rows 0", "MIG off"):
        assert fact in text
    assert "Retired pages" not in text  # not reported: not shown as 0


def test_the_gpu_page_expands_a_processs_command_line_job_and_start(
    client: FlaskClient,
) -> None:
    page = client.get("/host/gpu01/gpu/0").get_data(as_text=True)
    assert f"<details><summary><code>python</code></summary><code>{html.escape(CMDLINE)}" in page
    text = text_of(page)
    assert "alice · job 81234" in text and "81234 (step batch)" in text
    box = text_of(client.get("/host/gpu01/gpu/1").get_data(as_text=True))
    assert "container 3f2a9c81d0e4… (docker)" in box and "/bin/ollama serve" in box


def test_the_gpu_page_lists_mig_instances_with_their_processes(client: FlaskClient) -> None:
    page = client.get("/host/gpu01/gpu/2").get_data(as_text=True)
    table = re.search(r'<table class="list mig-instances" id="mig">.*?</table>', page, re.S)
    assert table is not None
    rows = [text_of(r) for r in re.findall(r"<tr>.*?</tr>", table.group(0), re.S)][1:]
    assert rows == ["3g.71gb 1 / 0 0.0/71 GiB 60 0 MIG-aaaa",
                    "2g.35gb 5 / 0 10.0/35 GiB 32 1 MIG-bbbb"]
    assert "GPU instance 5, compute instance 0" in text_of(page)
    assert "MIG on, 2 instances" in text_of(page)


def test_the_api_serves_the_new_facts(client: FlaskClient) -> None:
    body = client.get("/api/v1/hosts/gpu01", headers=BEARER).json
    assert body is not None
    info = body["info"]
    assert (info["driver_version"], info["cuda_version"], info["cpus"]) == ("560.35.03", "12.6",
                                                                             64)
    g0, g1, g2 = info["gpus"]
    assert g0["power_mw"] == 612_400 and g0["retired_pages"] is None
    assert g0["procs"][0]["job"] == {"id": 81234, "step": "batch"}
    assert g0["procs"][0]["owner"] == "alice" and g0["procs"][0]["cmdline"] == CMDLINE
    assert g1["procs"][0]["owner"] == "container 3f2a9c81d0e4… (docker)"
    assert g1["procs"][0]["container"]["id"] == DOCKER_ID
    assert g2["mig_enabled"] is True and [m["profile"] for m in g2["mig"]] == ["3g.71gb",
                                                                               "2g.35gb"]
    assert g2["procs"][0]["mig"] == {"gpu_instance": 5, "compute_instance": 0}
