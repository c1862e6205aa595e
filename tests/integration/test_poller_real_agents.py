"""The dashboard's poller against the real `hmonitor` agent (on the fake NVML) and bad peers."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import Agent, free_port, start_agent
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config

from hmonitor.web.poller import Poller

GIB = 1 << 30
TIMEOUT = 2.0


@pytest.fixture
def agents(tmp_path: Path, fake_nvml_lib: Path) -> Iterator[dict[str, Agent]]:
    config = tmp_path / "gpus.txt"
    write_config(
        config, [FakeGpu(util=70, procs=[FakeProc(os.getpid(), 3 * GIB)]), FakeGpu(lost="handle")]
    )
    env = nvml_env(fake_nvml_lib, config)
    started = {
        "healthy": start_agent(tmp_path, env=env),
        "no-driver": start_agent(tmp_path, env=dict(env, LD_LIBRARY_PATH=str(tmp_path))),
        "not-allowed": start_agent(tmp_path, ["--allow", "10.0.0.0/8"], env=env),
        "wants-token": start_agent(tmp_path, env=dict(env, GOHM_TOKEN="abc")),
    }
    yield started
    for agent in started.values():
        agent.stop()


def test_poller_against_real_agents_and_bad_peers(agents: dict[str, Agent]) -> None:
    with socket.socket() as hung:  # accepts TCP (the kernel does), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        servers = {name: agent.target for name, agent in agents.items()}
        servers["hung"] = f"127.0.0.1:{hung.getsockname()[1]}"
        servers["closed"] = f"127.0.0.1:{free_port()}"
        poller = Poller(servers, interval=60, timeout=TIMEOUT)
        try:
            started = time.monotonic()
            states = {s.name: s for s in poller.poll_once()}
            took = time.monotonic() - started
        finally:
            poller.stop()

    assert took < TIMEOUT + 1.0
    assert list(states) == list(servers)
    healthy = states["healthy"]
    assert healthy.up and healthy.error == "" and healthy.info is not None
    assert healthy.rtt_ms is not None and healthy.last_seen is not None
    gpu0, gpu1 = healthy.info.gpus
    assert gpu0.utilization == 70 and gpu0.procs[0].pid == os.getpid()
    assert gpu1.name.startswith("GPU lost:")

    no_driver = states["no-driver"]
    assert no_driver.up
    if no_driver.info is not None and not no_driver.info.gpus:  # no real driver on this machine
        assert no_driver.error.startswith("agent: ") and "libnvidia-ml.so.1" in no_driver.error

    assert not states["not-allowed"].up
    assert "allow-list" in states["not-allowed"].error
    assert not states["wants-token"].up and "token" in states["wants-token"].error
    assert not states["hung"].up and states["hung"].error.startswith(
        f"no answer within {TIMEOUT:g}"
    )
    assert not states["closed"].up and "connection refused" in states["closed"].error
