"""Who runs each process, end to end: real processes in real cgroups (a Slurm job's step, a
docker container), a real agent reading them and a fake NVML with a MIG H200, the real dashboard
polling it, and Chromium showing "nobody · job N", "container 3f2a… (docker)", the command line
on expand, and the MIG instances."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import Agent, start_agent
from browserkit import BROWSER_MARKS, Dashboard, Watch, run_dashboard, text
from cgroupkit import MOUNTS, Cgroups, docker_hierarchy, move, writable
from fakenvml import FakeGpu, FakeMig, FakeProc, nvml_env, write_config

GIB = 1 << 30
JOB = 800_000 + secrets.randbelow(100_000)  # unique: concurrent runs share the hierarchy
CID = "3f2a" + secrets.token_hex(30)

pytestmark = [
    *BROWSER_MARKS,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
    pytest.mark.skipif(not writable(MOUNTS.v2), reason="no writable cgroup v2 mount"),
    pytest.mark.skipif(docker_hierarchy() is None, reason="no writable cgroup hierarchy"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv"),
]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> Iterator[Dashboard]:
    work = tmp_path_factory.mktemp("owners")
    made = Cgroups()
    agent: Agent | None = None
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        step = made.make(MOUNTS.v2 or Path(), f"system.slice/slurmstepd.scope/job_{JOB}/step_0")
        trainer = made.start("setpriv", f"--reuid={nobody}", f"--regid={nobody}",
                             "--clear-groups", "sleep", "300")
        move(step, trainer)
        box = made.make(docker_hierarchy() or Path(), f"docker/{CID}")
        server = made.start("sleep", "301")
        move(box, server)
        on_mig = made.start("sleep", "302")
        config = work / "gpus.txt"
        write_config(config, [
            FakeGpu(util=97, mem_used=31 * GIB, procs=[FakeProc(trainer, 30 * GIB, sm_util=95)]),
            FakeGpu(util=40, mem_used=5 * GIB, procs=[FakeProc(server, 4 * GIB, sm_util=40)]),
            FakeGpu(mig_mode="on", mig_parent_procs=True, mem_used=11 * GIB,
                    mig=[FakeMig(1, 0, "3g.71gb", 71 * GIB, 0, 60),
                         FakeMig(5, 0, "2g.35gb", 35 * GIB, 10 * GIB, 32)],
                    procs=[FakeProc(on_mig, 10 * GIB, gpu_instance=5, compute_instance=0)]),
        ])
        agent = start_agent(work, ["--allow", "127.0.0.1/32"],
                            env=nvml_env(fake_nvml_lib, config))
        with run_dashboard(work, {}, [], "interval = 1\ntimeout = 2\n",
                           real={"gpu-a": f"127.0.0.1:{agent.port}"}) as dash:
            yield dash
    finally:
        if agent is not None:
            agent.stop()
        made.cleanup()


def test_the_overview_names_the_job_and_the_container(
    page: tuple[Any, Watch], dashboard: Dashboard,
) -> None:
    pg, watch = page
    panel = text(pg, "article[data-k='gpu-a']")
    assert f"nobody · job {JOB} (30 GiB" in panel
    assert f"container {CID[:12]}… (docker) (4.0 GiB" in panel
    boxed = text(pg, "article[data-k='gpu-a'] tr[data-gpu='1']")  # root inside the container
    assert "root" not in boxed and "uid 0" not in boxed
    mig_row = text(pg, "article[data-k='gpu-a'] tr[data-gpu='2']")
    assert "3g.71gb 0.0/71 GiB" in mig_row and "2g.35gb 10.0/35 GiB" in mig_row
    assert "MIG" in mig_row
    assert not watch.problems


def test_the_gpu_page_expands_the_command_line_and_shows_the_gpus_facts(
    page: tuple[Any, Watch], dashboard: Dashboard,
) -> None:
    pg, watch = page
    pg.goto(f"{dashboard.url}/host/gpu-a/gpu/0")
    row = pg.locator("table.procs tbody tr").first
    assert not row.locator("details code").nth(1).is_visible()  # folded: the command name only
    row.locator("summary").click()
    assert row.locator("details code").nth(1).inner_text() == "sleep 300"
    cells = " ".join(row.inner_text().split())
    assert f"nobody · job {JOB}" in cells and f"{JOB} (step 0)" in cells
    facts = " ".join(pg.inner_text("#gpu-facts").split())  # as laid out: a label, its value
    for fact in ("UUID GPU-00000000-0000-0000-0000-000000000000", "Power 120 W of 700 W",
                 "Clocks SM 1980 MHz, memory 2619 MHz", "Throttling none", "MIG off"):
        assert fact in facts
    assert not watch.problems


def test_the_gpu_page_of_a_mig_gpu_lists_its_instances(
    page: tuple[Any, Watch], dashboard: Dashboard,
) -> None:
    pg, watch = page
    pg.goto(f"{dashboard.url}/host/gpu-a/gpu/2")
    rows = [" ".join(r.split()) for r in pg.locator("#mig tbody tr").all_inner_texts()]
    assert [re.sub(r" MIG-\S+$", "", r) for r in rows] == [
        "3g.71gb 1 / 0 0.0/71 GiB 60 0", "2g.35gb 5 / 0 10.0/35 GiB 32 1"]
    assert "GPU instance 5, compute instance 0" in text(pg, "table.procs")
    assert " ".join(pg.inner_text("dl.now").split()).upper().startswith("UTILIZATION MIG")
    assert not watch.problems
