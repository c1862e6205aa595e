"""hmonitor-ctl as a user runs it: the installed console script against the real hmonitor-web
(waitress, its own poller) over real agents on the fake NVML, and straight against the agents.

The lab: gpu-a (GPU 1 busy), gpu-b (two free H200s, a free 24 GiB card, one in MIG mode, one
lost), gpu-c (GPU 0 busy until the wait test ends its process), gpu-down (nothing listens).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentproc import Agent, free_port, start_agent
from ctlkit import CTL, TOKEN, Web, ctl_env, ok, one_line_error, run_ctl, start_web
from fakenvml import FakeGpu, FakeMig, FakeProc, consumer_gpu, nvml_env, write_config

GIB = 1 << 30
ME = pwd.getpwuid(os.getuid()).pw_name


def busy(pid: int) -> FakeGpu:
    return FakeGpu(util=70, mem_used=30 * GIB, procs=[FakeProc(pid, 30 * GIB, sm_util=70)])


@dataclass
class Lab:
    web: Web
    agents: dict[str, Agent]
    configs: dict[str, Path]
    sleepers: dict[str, subprocess.Popen[bytes]]
    home: Path
    down: str  # the address where nothing listens

    @property
    def env(self) -> dict[str, str]:
        return ctl_env(self.home, HMONITOR_URL=self.web.url, HMONITOR_TOKEN=TOKEN)

    def ctl(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(args, {**self.env, **env})

    def direct(self, *args: str, agents: tuple[str, ...] = ("gpu-a", "gpu-b")
               ) -> subprocess.CompletedProcess[str]:
        named = [f"--agent={n}={self.agents[n].target}" for n in agents]
        return run_ctl([*named, *args], ctl_env(self.home))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ctl")
    # Real processes hold the fake GPUs, so the agent finds their owner in /proc.
    sleepers = {n: subprocess.Popen(["sleep", "600"]) for n in ("gpu-a", "gpu-c")}
    layouts = {
        "gpu-a": [FakeGpu(), busy(sleepers["gpu-a"].pid)],
        "gpu-b": [FakeGpu(), FakeGpu(), consumer_gpu(name="NVIDIA GeForce RTX 4090",
                                                     mem_total=24 * GIB),
                  FakeGpu(mig_mode="on", mig=[FakeMig()]), FakeGpu(lost="handle")],
        "gpu-c": [busy(sleepers["gpu-c"].pid), FakeGpu()],
    }
    configs = {n: tmp / f"{n}.txt" for n in layouts}
    agents: dict[str, Agent] = {}
    web = None
    try:
        for name, gpus in layouts.items():
            write_config(configs[name], gpus)
            agents[name] = start_agent(tmp, env=nvml_env(fake_nvml_lib, configs[name]))
        down = f"127.0.0.1:{free_port()}"
        servers = {n: a.target for n, a in agents.items()} | {"gpu-down": down}
        web = start_web(tmp / "web", servers)
        yield Lab(web, agents, configs, sleepers, tmp / "home", down)
    finally:
        if web is not None:
            web.stop()
        for agent in agents.values():
            agent.stop()
        for sleeper in sleepers.values():
            sleeper.kill()
            sleeper.wait()


def test_free_lists_free_gpus_best_first(lab: Lab) -> None:
    # Busy, lost and MIG GPUs are not free; the big ones come first, then host order.
    assert ok(lab.ctl("free", "--host", "gpu-[ab]")).splitlines() == [
        "gpu-a:0", "gpu-b:0", "gpu-b:1", "gpu-b:2"]
    found: list[dict[str, Any]] = json.loads(ok(lab.ctl("free", "--json", "--min-mem", "40G")))
    assert {(g["host"], g["gpu"]) for g in found} >= {("gpu-a", 0), ("gpu-b", 0), ("gpu-b", 1)}
    assert not {(g["host"], g["gpu"]) for g in found} & {
        ("gpu-a", 1), ("gpu-b", 2), ("gpu-b", 3), ("gpu-b", 4), ("gpu-c", 0)}
    assert all(g["mem_free_bytes"] >= 40 * GIB and g["mem_free_bytes"] == g["mem_total_bytes"]
               for g in found)
    assert ok(lab.ctl("free", "-n", "1", "--host", "gpu-b", "--min-mem", "100G")) == "gpu-b:0\n"
    nothing = lab.ctl("free", "--host", "gpu-a", "--min-mem", "200G")
    assert (nothing.returncode, nothing.stdout) == (1, "")


def test_free_env_gives_one_host_and_its_devices(lab: Lab) -> None:
    out = ok(lab.ctl("free", "--env", "-n", "2", "--min-mem", "40G"))
    assert out.splitlines() == ["export HMONITOR_HOST=gpu-b", "export CUDA_DEVICE_ORDER=PCI_BUS_ID",
                                "export CUDA_VISIBLE_DEVICES=0,1"]
    none = lab.ctl("free", "--env", "-n", "2", "--host", "gpu-a")
    assert none.returncode == 1 and none.stdout == ""
    assert none.stderr == ("hmonitor-ctl: no host has 2 free GPUs on a host matching "
                           "'gpu-a'\n")


def test_status_and_users(lab: Lab) -> None:
    status = json.loads(ok(lab.ctl("status", "--json")))
    assert (status["hosts_up"], status["hosts_down"]) == (3, 1)
    hosts = {h["name"]: h for h in status["hosts"]}
    assert hosts["gpu-b"]["gpus"] == {"total": 5, "free": 3, "busy": 0, "lost": 1, "mig": 1}
    assert not hosts["gpu-down"]["up"] and "connection refused" in hosts["gpu-down"]["error"]
    assert [a["kind"] for a in status["alerts"] if a["host"] == "gpu-down"] == ["host_down"]
    text = ok(lab.ctl("status"))
    assert "\x1b[" not in text  # not a terminal: no colour
    row = next(line for line in text.splitlines() if line.startswith("gpu-down"))
    assert row.split()[1] == "DOWN" and "connection refused" in row
    users = json.loads(ok(lab.ctl("users", "--json")))["users"]
    mine = next(u for u in users if u["user"] == ME)
    held = {(g["host"], g["gpu"], g["pid"]) for g in mine["gpus_now"]}
    assert ("gpu-a", 1, lab.sleepers["gpu-a"].pid) in held
    assert set(mine["gpu_hours"]) == {"1d", "7d", "30d"}
    table = ok(lab.ctl("users")).splitlines()
    assert table[0].split()[:2] == ["USER", "EXPIRES"]
    assert any(line.split()[0] == ME and "gpu-a:1" in line for line in table[1:])


def test_wait_returns_when_the_process_on_the_gpu_ends(lab: Lab) -> None:
    # The README's recipe, in a real shell.
    wait = (f"{shlex.quote(str(CTL))} wait -n 2 --min-mem 40G --host gpu-c --env "
            "--interval 0.2 --timeout 60")
    script = f'gpus=$({wait}) && eval "$gpus" && echo "$HMONITOR_HOST $CUDA_VISIBLE_DEVICES"'
    shell = subprocess.Popen(["bash", "-c", script], env=lab.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert shell.poll() is None, shell.communicate()  # GPU 0 is busy: still waiting
        write_config(lab.configs["gpu-c"], [FakeGpu(), FakeGpu()])  # the job ended
        lab.sleepers["gpu-c"].kill()
        ended = time.monotonic()
        out, err = shell.communicate(timeout=20)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    assert shell.returncode == 0, err
    assert out == "gpu-c 0,1\n"
    assert time.monotonic() - ended < 10


def test_wait_times_out_with_its_own_exit_code(lab: Lab) -> None:
    started = time.monotonic()
    result = lab.ctl("wait", "-n", "2", "--host", "gpu-a", "--timeout", "2", "--interval",
                     "0.2")
    took = time.monotonic() - started
    assert one_line_error(result, 124) == ("hmonitor-ctl: timed out after 2 s waiting for 2 "
                                           "free GPUs on a host matching 'gpu-a'")
    assert 2 <= took < 8


def test_wait_prints_host_gpu_lines_and_json(lab: Lab) -> None:
    assert ok(lab.ctl("wait", "--host", "gpu-a")) == "gpu-a:0\n"
    doc = json.loads(ok(lab.ctl("wait", "-n", "2", "--min-mem", "40G", "--host", "gpu-b",
                                "--json")))
    assert (doc["host"], doc["cuda_visible_devices"]) == ("gpu-b", "0,1")
    assert [g["gpu"] for g in doc["gpus"]] == [0, 1] and doc["waited_seconds"] < 5


def test_direct_agent_mode_agrees_with_the_dashboard(lab: Lab) -> None:
    through_web = json.loads(ok(lab.ctl("free", "--json", "--host", "gpu-[ab]")))
    result = run_ctl([f"--agent=gpu-a={lab.agents['gpu-a'].target}",
                      f"--agent=gpu-b={lab.agents['gpu-b'].target}",
                      f"--agent=gpu-down={lab.down}", "free", "--json"], ctl_env(lab.home))
    assert json.loads(ok(result)) == through_web
    # The agent nobody answers at: a warning, the others still count.
    assert result.stderr == (f"hmonitor-ctl: warning: gpu-down ({lab.down}): connection "
                             "refused (no agent listening on that port?)\n")
    env = ok(lab.direct("wait", "-n", "2", "--min-mem", "40G", "--env"))
    assert "export HMONITOR_HOST=gpu-b" in env and "export CUDA_VISIBLE_DEVICES=0,1" in env
    status = json.loads(ok(lab.direct("status", "--json")))
    assert status["source"] == "2 agents" and status["alerts"] is None
    users = json.loads(ok(lab.direct("users", "--json")))["users"]
    assert any(u["user"] == ME and u["gpu_hours"] is None for u in users)
    # Unnamed agents are named by their address where they share a host.
    named = json.loads(ok(run_ctl(["--agent", lab.agents["gpu-b"].target, "free", "--json",
                                   "-n", "1"], ctl_env(lab.home))))
    assert named[0]["host"] == "127.0.0.1"


def test_direct_mode_sends_the_agent_token(lab: Lab, fake_nvml_lib: Path,
                                           tmp_path: Path) -> None:
    env = dict(nvml_env(fake_nvml_lib, lab.configs["gpu-b"]), GOHM_TOKEN="agent-secret")
    agent = start_agent(tmp_path, env=env)
    try:
        args = ["--agent", f"gpu-b={agent.target}", "free", "-n", "1"]
        assert one_line_error(run_ctl(args, ctl_env(lab.home)), 3) == (
            f"hmonitor-ctl: no agent answered: gpu-b ({agent.target}): agent token rejected "
            "(set HMONITOR_AGENT_TOKEN to the agent's GOHM_TOKEN)")
        good = ctl_env(lab.home, HMONITOR_AGENT_TOKEN="agent-secret")
        assert ok(run_ctl(args, good)) == "gpu-b:0\n"
    finally:
        agent.stop()


def test_errors_are_one_line_with_their_exit_codes(lab: Lab) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert one_line_error(lab.ctl("status", HMONITOR_URL=closed), 3) == (
        f"hmonitor-ctl: cannot reach the dashboard at {closed}: connection refused "
        "(is hmonitor-web running?)")
    assert "rejected the token" in one_line_error(lab.ctl("free", HMONITOR_TOKEN="wrong"), 4)
    assert one_line_error(lab.ctl("history", "nope", "0"), 5) == (
        "hmonitor-ctl: unknown host 'nope' (known: gpu-a, gpu-b, gpu-c, gpu-down)")
    assert one_line_error(lab.ctl("history", "gpu-a", "7"), 5) == (
        "hmonitor-ctl: gpu-a has no GPU 7 (it has 0, 1)")
    assert "no host matches 'nope*'" in one_line_error(lab.ctl("free", "--host", "nope*"), 5)
    assert "no host matches 'gpu-z'" in one_line_error(
        lab.ctl("wait", "--host", "gpu-z", "--timeout", "30"), 5)
    assert one_line_error(run_ctl(["--agent", f"x={lab.down}", "free"], ctl_env(lab.home)),
                          3) == (f"hmonitor-ctl: no agent answered: x ({lab.down}): "
                                 "connection refused (no agent listening on that port?)")
    assert "history needs the dashboard" in one_line_error(lab.direct("history", "gpu-a", "0"),
                                                           2)
    config = lab.home / ".config" / "hmonitor" / "ctl.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[dashboard]\nurl = {lab.web.url}\ntoken = {TOKEN}\n")
    try:
        config.chmod(0o644)
        assert one_line_error(run_ctl(["status"], ctl_env(lab.home)), 2) == (
            f"hmonitor-ctl: {config}: holds a token and others can read it: chmod 600 {config}")
        config.chmod(0o600)
        assert json.loads(ok(run_ctl(["status", "--json"], ctl_env(lab.home))))["hosts_up"] == 3
    finally:
        config.unlink()


def test_notes_and_the_notice(lab: Lab) -> None:
    ok(lab.ctl("notice", "set", "gpu-b", "down", "Monday"))
    assert json.loads(ok(lab.ctl("notice", "--json")))["notice"] == "gpu-b down Monday"
    assert ok(lab.ctl("notice")) == "gpu-b down Monday\n"
    ok(lab.ctl("notice", "clear"))
    assert ok(lab.ctl("notice")) == "(no notice)\n"

    ok(lab.ctl("notes", "set", "alice@gpu-a", "until", "Friday"))
    notes = json.loads(ok(lab.ctl("notes", "--json", "--host", "gpu-a")))["notes"]
    assert [(n["user"], n["host"], n["note"]) for n in notes] == [("alice", "gpu-a",
                                                                   "until Friday")]
    assert notes[0]["updated_by"].startswith("API ")
    assert ok(lab.ctl("notes")).splitlines()[1].split()[:3] == ["alice@gpu-a", "until",
                                                               "Friday"]
    ok(lab.ctl("notes", "delete", "alice@gpu-a"))
    assert one_line_error(lab.ctl("notes", "delete", "alice@gpu-a"), 5) == (
        "hmonitor-ctl: no note for alice@gpu-a")
    assert one_line_error(lab.ctl("notes", "set", "bob@gpu-a", " "), 2) == (
        "hmonitor-ctl: the dashboard says: note is empty")


def test_history_as_sparkline_csv_and_json(lab: Lab) -> None:
    deadline = time.monotonic() + 10
    while True:  # the dashboard records a round each half second
        series = json.loads(ok(lab.ctl("history", "gpu-a", "1", "--since", "10m", "--json")))
        if sum(v is not None for v in series["v"]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert series["metric"] == "util" and 70 in series["v"]
    lines = ok(lab.ctl("history", "gpu-a", "1", "--since", "10m", "--points", "20")).splitlines()
    assert lines[0] == "gpu-a GPU 1 util (%), last 10 min, avg per point"
    assert set(lines[1]) <= set("▁▂▃▄▅▆▇█ ") and "▆" in lines[1]  # 70 % of 0-100
    assert lines[2] == "min 70%  max 70%  last 70%"
    csv = ok(lab.ctl("history", "gpu-a", "1", "--metric", "mem", "--since", "10m", "--csv"))
    header, first = csv.splitlines()[:2]
    assert header == "time,mem (bytes)" and first.split(",")[1] == str(30 * GIB)


def _tmux(sock: str, *args: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                          check=False, timeout=10, env=env)


def _screen_until(sock: str, want: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        screen = _tmux(sock, "capture-pane", "-p", "-t", "top").stdout.splitlines()
        if any(want in line for line in screen) or time.monotonic() > deadline:
            return screen
        time.sleep(0.1)


def _rows(screen: list[str]) -> list[str]:
    """The GPU rows as "host index", top to bottom."""
    return [" ".join(line.split()[:2]) for line in screen
            if line.startswith("gpu-") and "DOWN" not in line]


def test_top_in_tmux(lab: Lab) -> None:
    sock = f"hmonitor-ctl-test-{os.getpid()}"
    # The shell stays after top to show how it ended (and any error, were it to fail).
    command = (f"{shlex.quote(str(CTL))} top --interval 0.5; echo hmonitor-ctl exited $?; "
               "sleep 60")
    # A new tmux server: it, and so top, gets this environment (the dashboard and token).
    started = _tmux(sock, "new-session", "-d", "-s", "top", "-x", "160", "-y", "40", command,
                    env=lab.env)
    assert started.returncode == 0, started.stderr
    try:
        screen = _screen_until(sock, "gpu-down: DOWN")
        assert screen[0].startswith("hmonitor-ctl top  " + lab.web.url), screen
        assert screen[2].split()[:4] == ["HOST", "GPU", "MODEL", "UTIL"]
        busy_row = next(line for line in screen if line.startswith("gpu-a") and "70%" in line)
        assert busy_row.split()[1] == "1" and "busy" in busy_row and ME in busy_row
        assert _rows(screen)[:2] == ["gpu-a 0", "gpu-a 1"]
        assert any(line.startswith("gpu-down: DOWN, connection refused") for line in screen)

        _tmux(sock, "send-keys", "-t", "top", "u")  # busiest first
        screen = _screen_until(sock, "sort: utilization")
        assert _rows(screen)[0] == "gpu-a 1", screen
        _tmux(sock, "send-keys", "-t", "top", "m")  # most memory used first
        screen = _screen_until(sock, "sort: memory")
        assert _rows(screen)[0] == "gpu-a 1", screen
        _tmux(sock, "send-keys", "-t", "top", "h")
        screen = _screen_until(sock, "sort: host")
        assert _rows(screen)[0] == "gpu-a 0", screen

        _tmux(sock, "send-keys", "-t", "top", "/", "4090", "Enter")  # filter
        screen = _screen_until(sock, "filter: 4090")
        assert _rows(screen) == ["gpu-b 2"], screen

        _tmux(sock, "send-keys", "-t", "top", "q")
        screen = _screen_until(sock, "hmonitor-ctl exited")
        assert "hmonitor-ctl exited 0" in screen, screen
        assert not any(line.startswith("gpu-") for line in screen)  # the screen restored
    finally:
        _tmux(sock, "kill-server")
