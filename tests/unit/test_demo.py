"""The demo's backfill: 24 h of simulated past in the dashboard's history, read back through the
real app (pages' JSON API over the real SQLite store), joined to the live rounds without a gap,
and never written twice."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webkit import login, make_app

from hmonitor.agent import cli as agent_cli
from hmonitor.agent.snapshot import Collector, Sources
from hmonitor.agent.sources.disks import DiskSource
from hmonitor.agent.sources.procs import ProcReader
from hmonitor.agent.sources.simgpu import SimulatedGpuSource, host_seed
from hmonitor.demo import (
    LOCAL_SIMULATED,
    POLL_INTERVAL,
    SIMULATED_HOSTS,
    Backfill,
    SimHost,
    backfill,
    host_info,
)
from hmonitor.web.history import HistoryBackend, SqliteHistory
from hmonitor.web.history.recorder import HISTORY_FILE
from hmonitor.web.hoststate import HostState
from hmonitor.web.state import get_state

HOSTS: tuple[SimHost, ...] = (LOCAL_SIMULATED, *SIMULATED_HOSTS)
DAY = 86400.0


def live(now: float) -> list[HostState]:
    """What the demo's poller sees of the simulated agents at `now`."""
    return [
        HostState(name=h.name, address=f"127.0.0.1:{9300 + i}", up=True, error="", last_seen=now,
                  rtt_ms=1.0, polled_at=now, info=host_info(
                      h.host_id, "demo", h.source().read_at(now)))
        for i, h in enumerate(HOSTS)
    ]


@dataclass
class Demo:
    first: Backfill
    second: Backfill
    points_after_first: int
    app: Flask


def util_points(history: HistoryBackend) -> int:
    """Raw util samples of one GPU over the last 2 days and the next hour."""
    now = time.time()
    t, _ = history.series("sim-node-1", 0, "util", now - 2 * DAY, now + 3600, max_points=10**6)
    return len(t)


@pytest.fixture(scope="module", name="demo")
def demo_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    # The module shares one backfill (a few seconds): as the demo does it, before the app opens
    # the history, then a second one, as a restarted demo would.
    folder = tmp_path_factory.mktemp("demo")
    first = backfill(folder, HOSTS, interval=POLL_INTERVAL)
    with SqliteHistory(folder / HISTORY_FILE, interval=POLL_INTERVAL) as store:
        points = util_points(store)
    second = backfill(folder, HOSTS, interval=POLL_INTERVAL)
    app = make_app(folder, live(time.time()), interval=POLL_INTERVAL)
    yield Demo(first, second, points, app)
    get_state(app).close()


@pytest.fixture(name="client")
def client_fixture(demo: Demo) -> FlaskClient:
    client = demo.app.test_client()
    assert login(client).status_code == 302
    return client


def test_backfill_writes_the_planned_rounds(demo: Demo) -> None:
    # 18 h every 5 minutes, 6 h every minute, then the seconds the backfill took at 5 s.
    assert 216 + 360 <= demo.first.rounds < 216 + 360 + 30
    assert demo.first.seconds < 60
    assert demo.first.size > 0 and "backfilled 24 h" in demo.first.message
    assert demo.points_after_first == demo.first.rounds  # every round, one GPU's raw samples


def test_sparklines_cover_the_day_for_every_simulated_gpu(client: FlaskClient) -> None:
    body = client.get("/api/v1/sparklines?window=24h").get_json()
    expected = {f"{h.name}/{i}" for h in HOSTS for i in range(h.gpus)}
    assert set(body["gpus"]) == expected
    for key, line in body["gpus"].items():
        # Every one of the 60 stretches of the day has samples, util and memory alike.
        assert len(line["util"]) == 60 and None not in line["util"], key
        assert None not in line["mem"], key
    # The curves move: not every GPU flat.
    assert len({v for line in body["gpus"].values() for v in line["util"]}) > 10
    # The last hour has a round a minute: a point in each of the 1-hour line's 60.
    hour = client.get("/api/v1/sparklines?window=1h").get_json()["gpus"]
    assert set(hour) == expected
    assert all(None not in line["util"] for line in hour.values())


def test_history_names_the_gpus_simulated(demo: Demo) -> None:
    gpus = get_state(demo.app).backend.gpus()
    assert len(gpus) == sum(h.gpus for h in HOSTS)
    assert all(name.startswith("Simulated ") for _, _, name in gpus)


def test_users_have_gpu_hours_over_the_day(client: FlaskClient) -> None:
    users = client.get("/api/v1/users").get_json()["users"]
    hours = {u["user"]: u["usage"]["1d"]["gpu_hours"] for u in users}
    assert sum(1 for h in hours.values() if h > 0) >= 3
    # At most every GPU busy all day; a fair share of that in a busy lab.
    gpus = sum(h.gpus for h in HOSTS)
    assert gpus * 24 * 0.1 < sum(hours.values()) <= gpus * 24 * 1.01


def test_every_simulated_host_has_an_idle_hog(client: FlaskClient) -> None:
    alerts = client.get("/api/v1/alerts").get_json()["alerts"]
    hogs = [a for a in alerts if a["kind"] == "idle_hog"]
    # The parked GPU (each host's last) holds a forgotten session: idle over the 2 h rule.
    assert {(h.name, h.gpus - 1) for h in HOSTS} <= {(a["host"], a["gpu"]) for a in hogs}
    assert all(a["idle_seconds"] > 7200 and a["mem"] > 0 for a in hogs)


def test_the_live_rounds_continue_the_idle_runs(demo: Demo) -> None:
    state = get_state(demo.app)
    before = {(h.host, h.gpu, h.pid): h.since for h in state.backend.idle_hogs(time.time())}
    now = time.time()
    state.recorder.on_round(live(now), now)  # the dashboard's first live round
    after = {(h.host, h.gpu, h.pid): h.since for h in state.backend.idle_hogs(now)}
    # The same processes, idle since the same moment: no gap between the past and the present.
    assert after and set(after) <= set(before)
    assert all(math.isclose(after[k], before[k]) for k in after)


def test_a_second_backfill_keeps_the_history(demo: Demo) -> None:
    assert demo.second.rounds == 0
    assert "kept" in demo.second.message and "no backfill" in demo.second.message
    # The same rounds (and the live one of the test above, if it ran first).
    assert util_points(get_state(demo.app).backend) - demo.points_after_first in (0, 1)


def test_nothing_to_backfill_without_simulated_hosts(tmp_path: Path) -> None:
    # A demo on real GPUs passes no host: no history file is even created.
    done = backfill(tmp_path, [], interval=POLL_INTERVAL)
    assert done.rounds == 0 and not (tmp_path / HISTORY_FILE).exists()


def test_backfill_reports_what_the_agents_serve(tmp_path: Path) -> None:
    t = 1_800_000_123.0
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    for h in HOSTS:
        # The agent's own source for `--simulate N --id host_id` has the demo's seed ...
        agents = cast(SimulatedGpuSource, agent_cli._gpu_source(h.gpus, h.host_id, h.mig))
        ours = h.source()
        assert agents.read_at(t) == ours.read_at(t)
        # ... and the agent's collector turns it into the same HostInfo as the backfill.
        collector = Collector(Sources(gpus=SimulatedGpuSource(h.gpus, seed=host_seed(h.host_id),
                                                               mig=h.mig, clock=lambda: t),
                                      disks=DiskSource(mounts), procs=ProcReader(tmp_path),
                                      hostname=lambda: "demo"), host_id=h.host_id)
        assert list(collector.collect().gpus) == list(host_info(h.host_id, "demo",
                                                               ours.read_at(t)).gpus)


def test_the_simulation_is_the_same_in_another_process() -> None:
    # The agents are other processes: nothing in the curves may hang on str hashing.
    code = ("import sys; from hmonitor.agent.sources.simgpu import SimulatedGpuSource, host_seed;"
            " print(repr(SimulatedGpuSource(8, seed=host_seed('sim-node-1')).read_at(1.8e9)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    here = SimulatedGpuSource(8, seed=host_seed("sim-node-1")).read_at(1.8e9)
    assert out.strip() == repr(here)


def test_each_simulated_host_always_has_a_long_idle_process() -> None:
    # Every 7 minutes over three days: the parked GPU computes nothing, and one process on it
    # has been there over 2 h (the idle rule's default) — at every moment, not by chance.
    for h in HOSTS:
        source = SimulatedGpuSource(h.gpus, seed=host_seed(h.host_id))
        first_seen: dict[int, float] = {}
        start = 1_800_000_000.0
        t = start
        while t < start + 3 * DAY:
            parked = source.read_at(t)[-1]
            assert parked.utilization == 0 and parked.processes, (h.name, t)
            for p in parked.processes:
                first_seen.setdefault(p.pid, t)
            if t > start + 3 * 3600:  # once the first sessions' history is known
                oldest = min(first_seen[p.pid] for p in parked.processes)
                assert t - oldest > 7200, (h.name, t)
            t += 420


def test_the_demo_has_a_mig_h200_with_its_instances_and_jobs_and_containers() -> None:
    (mig_host,) = [h for h in HOSTS if h.mig]
    seen_job = seen_box = False
    for t in range(0, 3 * 86400, 3600):
        info = host_info(mig_host.host_id, "demo", mig_host.source().read_at(1.8e9 + t))
        g0 = info.gpus[0]
        assert g0.mig_enabled and [m.profile for m in g0.mig] == [
            "3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"]
        instances = {m.gpu_instance for m in g0.mig}
        assert all(p.HasField("mig") and p.mig.gpu_instance in instances for p in g0.procs)
        assert not any(g.mig_enabled for g in info.gpus[1:])
        for p in (p for g in info.gpus for p in g.procs):
            assert p.cmdline and p.start_time
            seen_job = seen_job or p.HasField("job")
            seen_box = seen_box or p.HasField("container")
    assert seen_job and seen_box
