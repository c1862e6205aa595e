"""What the hmonitor-ctl tests share: the real ``hmonitor-web`` in a subprocess (waitress, its
own poller) over real agents, and the installed ``hmonitor-ctl`` run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentproc import free_port

TOKEN = "ctl-test-token"
CTL = Path(sys.executable).with_name("hmonitor-ctl")
WEB = Path(sys.executable).with_name("hmonitor-web")


@dataclass
class Web:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def hosts(self) -> list[dict[str, Any]]:
        req = urllib.request.Request(f"{self.url}/api/v1/hosts",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            hosts: list[dict[str, Any]] = json.load(resp)["hosts"]
            return hosts

    def wait_polled(self, timeout: float = 20.0) -> None:
        """Until the dashboard answers and has polled every host once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hmonitor-web exited:\n{self.log.read_text()}")
            try:
                if all(h["polled_at"] is not None for h in self.hosts()):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"hmonitor-web not ready in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web(folder: Path, servers: Mapping[str, str], **keys: Any) -> Web:
    """``hmonitor-web`` on a free loopback port, polling ``servers`` every half second."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"servers": dict(servers), "token": TOKEN, "interval": 0.5, "timeout": 1.0,
                # its own History gRPC port: the default one may be taken by another test
                "history_addr": f"127.0.0.1:{free_port()}",
                "failed_login_limit": "100/minute", **keys}
    path = folder / "settings.py"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    port = free_port()
    log = folder / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(WEB), "--settings", str(path), "--addr", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    web = Web(proc, f"http://127.0.0.1:{port}", log)
    try:
        web.wait_polled()
    except BaseException:
        web.stop()
        raise
    return web


def ctl_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no config file and no colour preference: only
    ``extra`` says where the dashboard is."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HMONITOR_") and k not in ("NO_COLOR", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), **extra)
    return env


def run_ctl(args: Sequence[str], env: Mapping[str, str], timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CTL), *args], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """What a command printed, once it exited with ``code``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a failing command prints: no traceback, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hmonitor-ctl: "), \
        result.stderr
    return result.stderr.strip()
