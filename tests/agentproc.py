"""Start the real agent as a subprocess for tests and benchmarks, and talk to it over gRPC."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from hmonitor._pb import hm_pb2, hm_pb2_grpc


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Agent:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get_info(
        self,
        target: str | None = None,
        *,
        token: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, str]] = (),
        timeout: float = 5.0,
    ) -> hm_pb2.HostInfo:
        addr = target or self.target
        channel = (
            grpc.secure_channel(addr, credentials, options=list(options))
            if credentials is not None
            else grpc.insecure_channel(addr)
        )
        with channel:
            stub = hm_pb2_grpc.HostMonitorStub(channel)
            info: hm_pb2.HostInfo = stub.GetInfo(hm_pb2.RequestInfo(token=token), timeout=timeout)
            return info

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_agent(
    workdir: Path,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    command: Sequence[str] | None = None,
    wait: bool = True,
) -> Agent:
    """Start `hmonitor` on a free port of `host` and wait until it accepts connections."""
    port = free_port(host)
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log = workdir / f"agent-{port}.log"
    cmd = list(command or [sys.executable, "-m", "hmonitor.agent"])
    full_env = dict(env if env is not None else os.environ)
    full_env.setdefault("GOHM_ADDR", addr)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    agent = Agent(proc, port, log)
    if wait:
        wait_listening(agent, host)
    return agent


def wait_listening(agent: Agent, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{agent.output()}")
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if s.connect_ex((host, agent.port)) == 0:
                return
        time.sleep(0.05)
    agent.stop()
    raise RuntimeError(f"agent did not listen within {timeout} s:\n{agent.output()}")
