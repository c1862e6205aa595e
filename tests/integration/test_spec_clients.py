"""Clients generated from the spec's own proto (plain `hm.proto`, top-level `hm_pb2`) talk to
our agent and to our History service — what a dashboard or script written against the spec does.

They run in a subprocess: the spec's stubs define the same `gpu.*` names as ours, and one
process's descriptor pool cannot hold both files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentproc import free_port, start_agent
from builders import H200, gpu, host_info, up
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config
from grpc_tools import protoc

from hmonitor._pb import hm_pb2
from hmonitor.web.history import SqliteHistory
from hmonitor.web.history.service import HistoryService, start_history_server

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30

CLIENT = """
import json, sys, grpc, hm_pb2, hm_pb2_grpc
kind, target = sys.argv[1], sys.argv[2]
with grpc.insecure_channel(target) as ch:
    if kind == "info":
        info = hm_pb2_grpc.HostMonitorStub(ch).GetInfo(hm_pb2.RequestInfo(), timeout=5)
        print(json.dumps({"id": info.id, "err": info.err, "gpus": [
            {"name": g.name, "util": g.utilization, "procs": [[p.pid, p.mem] for p in g.procs]}
            for g in info.gpus]}))
    else:
        req = hm_pb2.HistReq(id=sys.argv[3], timestamp=int(sys.argv[4]), type=sys.argv[5])
        try:
            r = hm_pb2_grpc.HistoryStub(ch).GetHistory(req, timeout=5)
            print(json.dumps({"t": list(r.t), "v": list(r.v)}))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))
"""


@pytest.fixture(scope="module")
def spec_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spec")
    (out / "hm.proto").write_text((ROOT / "proto" / "hm.proto").read_text())
    code = protoc.main(
        [
            "protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(out / "hm.proto"),
        ]
    )
    assert code == 0
    (out / "client.py").write_text(CLIENT)
    return out


def _spec_client(stubs: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(stubs / "client.py"), *args],
        cwd=stubs,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_spec_client_polls_our_agent(spec_stubs: Path, tmp_path: Path, fake_nvml_lib: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        config = tmp_path / "gpus.txt"
        write_config(config, [FakeGpu(util=64, procs=[FakeProc(sleeper.pid, 5 * GIB)])])
        agent = start_agent(tmp_path, env=nvml_env(fake_nvml_lib, config))
        try:
            got = _spec_client(spec_stubs, "info", agent.target)
        finally:
            agent.stop()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert got["err"] == ""
    assert got["gpus"] == [{"name": "NVIDIA H200", "util": 64, "procs": [[sleeper.pid, 5 * GIB]]}]


@pytest.fixture
def history_server(tmp_path: Path) -> Iterator[tuple[str, float]]:
    store = SqliteHistory(tmp_path / "history.sqlite")
    now = time.time()
    start = now - 600
    for k in range(60):  # ten minutes at 10 s, on a host whose name has an underscore
        # Two H200s at 40 °C: GPU i at k % 50 + i %, holding k + 1 + i GiB.
        gpus = [gpu(i, util=k % 50 + i, used_gib=k + 1 + i, total_gib=141, name=H200, temp=40)
                for i in range(2)]
        store.ingest([up("gpu_node_7", host_info("gpu_node_7", gpus))], start + 10 * k)
    service = HistoryService(store, lambda: {"gpu_node_7"})
    port = free_port()
    server, _ = start_history_server(f"127.0.0.1:{port}", service)
    yield f"127.0.0.1:{port}", start
    server.stop(0)
    store.close()


def test_spec_client_reads_history(spec_stubs: Path, history_server: tuple[str, float]) -> None:
    target, start = history_server
    since_ns = int((start + 300) * 1e9)  # the spec's own code stored nanoseconds
    got = _spec_client(spec_stubs, "hist", target, "gpu_node_7_1", str(since_ns), "mem")
    t, v = got["t"], got["v"]
    assert isinstance(t, list) and isinstance(v, list)
    assert len(t) == 30 and t == sorted(t)
    assert t[0] == pytest.approx(start + 300, abs=1)
    # GPU 1 held (k + 1) GiB + 1 GiB in round k; the window starts at round 30.
    assert v[0] == 32 * GIB and v[-1] == 61 * GIB

    secs = _spec_client(spec_stubs, "hist", target, "gpu_node_7_0", str(int(start)), "util")
    assert secs["v"] == [k % 50 for k in range(60)]


@pytest.mark.parametrize(
    ("key", "kind", "code"),
    [
        ("gpu_node_7_0", "power", "INVALID_ARGUMENT"),
        ("nounderscore", "util", "INVALID_ARGUMENT"),
        ("other_0", "util", "NOT_FOUND"),
    ],
)
def test_history_errors(
    spec_stubs: Path, history_server: tuple[str, float], key: str, kind: str, code: str
) -> None:
    got = _spec_client(spec_stubs, "hist", history_server[0], key, "0", kind)
    assert got["code"] == code


def test_history_service_is_reachable_with_our_stubs(history_server: tuple[str, float]) -> None:
    from hmonitor._pb import hm_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(history_server[0]) as ch:
        resp = hm_pb2_grpc.HistoryStub(ch).GetHistory(
            hm_pb2.HistReq(id="gpu_node_7_0", timestamp=0, type="temp"), timeout=5
        )
    assert set(resp.v) == {40} and len(resp.t) == 60
