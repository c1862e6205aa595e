"""The real agent as a subprocess, on the fake libnvidia-ml.so.1, over real gRPC on loopback."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentproc import Agent, start_agent
from fakenvml import NVML_ERROR_DRIVER_NOT_LOADED, FakeGpu, FakeProc, nvml_env, write_config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hmonitor._pb import hm_pb2
from hmonitor.agent import cli as agent_cli
from hmonitor.web.api.jsonview import proc_to_dict
from hmonitor.wire import decode_uid, encode_uid, owner_label

GIB = 1 << 30
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Sleeper = subprocess.Popen[bytes]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


class AgentFactory:
    """Starts agents on the fake NVML with a given GPU list; `config` is their shared file."""

    def __init__(self, workdir: Path, lib: Path) -> None:
        self.workdir, self.lib = workdir, lib
        self.config = workdir / "gpus.txt"
        self.started: list[Agent] = []

    def __call__(
        self,
        gpus: list[FakeGpu],
        *args: str,
        env: dict[str, str] | None = None,
        init_error: int = 0,
        host: str = "127.0.0.1",
    ) -> Agent:
        write_config(self.config, gpus, init_error=init_error)
        full_env = nvml_env(self.lib, self.config)
        full_env.update(env or {})
        agent = start_agent(
            self.workdir, ["--cache-ttl", "0.2", *args], env=full_env, host=host
        )
        self.started.append(agent)
        return agent


@pytest.fixture
def run_agent(tmp_path: Path, fake_nvml_lib: Path) -> Iterator[AgentFactory]:
    factory = AgentFactory(tmp_path, fake_nvml_lib)
    yield factory
    for agent in factory.started:
        agent.stop()


def test_healthy_gpus_and_their_processes(run_agent: AgentFactory, sleeper: Sleeper) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    agent = run_agent(
        [
            FakeGpu(
                name="NVIDIA A100-SXM4-80GB",
                util=37,
                temp=51,
                fan=None,
                mem_total=80 * GIB,
                mem_used=21 * GIB,
                procs=[FakeProc(sleeper.pid, 20 * GIB, sm_util=33)],
            ),
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                util=3,
                temp=38,
                fan=41,
                mem_total=24 * GIB,
                mem_used=1 * GIB,
                procs=[FakeProc(sleeper.pid, 512 << 20, kind="graphics")],
            ),
            FakeGpu(util=0),
        ]
    )
    info = agent.get_info()
    assert info.err == ""
    assert info.hostname and info.id == info.hostname
    assert [g.id for g in info.gpus] == [0, 1, 2]
    a100, rtx, idle = info.gpus
    assert (a100.name, a100.utilization, a100.temp, a100.fanspeed) == (
        "NVIDIA A100-SXM4-80GB",
        37,
        51,
        0,
    )
    assert (a100.mem_used, a100.mem_total) == (21 * GIB, 80 * GIB)
    assert (rtx.fanspeed, rtx.mem_total) == (41, 24 * GIB)
    assert idle.name == "NVIDIA H200" and list(idle.procs) == []
    (p,) = a100.procs
    assert (p.pid, p.uid, p.username, p.basename) == (sleeper.pid, os.getuid(), me, "sleep")
    assert (p.mem, p.utilization) == (20 * GIB, 33)
    (g,) = rtx.procs  # graphics processes are listed too, with no sample: utilization 0
    assert (g.pid, g.mem, g.utilization) == (sleeper.pid, 512 << 20, 0)
    assert any(d.mount == "/" or d.total > 0 for d in info.disks) or info.disks == []


def test_lost_gpus_do_not_blank_the_others(run_agent: AgentFactory) -> None:
    agent = run_agent(
        [FakeGpu(util=10), FakeGpu(lost="handle"), FakeGpu(util=30, lost="query"), FakeGpu(util=40)]
    )
    info = agent.get_info()
    names = [g.name for g in info.gpus]
    assert [g.id for g in info.gpus] == [0, 1, 2, 3]
    assert names[0] == names[3] == "NVIDIA H200"
    assert names[1].startswith("GPU lost:") and names[2].startswith("GPU lost:")
    assert "lost" in names[1].lower()
    assert [info.gpus[0].utilization, info.gpus[3].utilization] == [10, 40]
    assert info.err == ""  # a lost GPU is that GPU's problem, not the host's


def test_no_nvml_library_still_serves_the_host(tmp_path: Path) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))  # no libnvidia-ml.so.1 anywhere
    agent = start_agent(tmp_path, ["--cache-ttl", "0"], env=env)
    try:
        info = agent.get_info()
    finally:
        agent.stop()
    if "not found" not in info.err:
        pytest.skip("this machine has a real libnvidia-ml.so.1 on its library path")
    assert "libnvidia-ml.so.1" in info.err
    assert list(info.gpus) == []
    assert info.hostname


def test_failed_init_is_retried_without_restart(run_agent: AgentFactory) -> None:
    agent = run_agent([FakeGpu(util=5)], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    info = agent.get_info()
    assert "Driver Not Loaded" in info.err and list(info.gpus) == []
    write_config(run_agent.config, [FakeGpu(util=5)])  # the driver came back
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = agent.get_info()
        if info.gpus:
            break
        time.sleep(0.25)
    assert info.err == "" and [g.utilization for g in info.gpus] == [5]


def test_process_gone_before_lookup_is_still_shown(run_agent: AgentFactory) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    agent = run_agent([FakeGpu(procs=[FakeProc(gone.pid, 3 * GIB)])])
    (p,) = agent.get_info().gpus[0].procs
    assert (p.pid, p.mem, p.username, p.expiration) == (gone.pid, 3 * GIB, "", 0)


@dataclass(frozen=True)
class LabUser:
    name: str
    uid: int
    expiration: int


@pytest.fixture(scope="module")
def lab_users() -> Iterator[list[LabUser]]:
    """Real accounts with different expiries (the agent reads the real /etc/shadow)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create test accounts")
    tag = uuid.uuid4().hex[:6]
    expiry = dt.date(2031, 3, 14)
    specs = [(f"hmx{tag}", ["-e", expiry.isoformat()]), (f"hmn{tag}", [])]
    users = []
    try:
        for name, extra in specs:
            subprocess.run(["useradd", "-M", "-N", *extra, name], check=True)
            days = (expiry - dt.date(1970, 1, 1)).days
            users.append(LabUser(name, pwd.getpwnam(name).pw_uid, days * 86400 if extra else 1))
        yield users
    finally:
        for name, _ in specs:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def test_processes_of_real_accounts_with_their_expiry(
    run_agent: AgentFactory, lab_users: list[LabUser]
) -> None:
    procs = [subprocess.Popen(["sleep", "300"], user=u.uid) for u in lab_users]
    nobody_uid = 61234  # no passwd entry: shown by number, expiry unknown
    procs.append(subprocess.Popen(["sleep", "300"], user=nobody_uid))
    try:
        agent = run_agent(
            [FakeGpu(procs=[FakeProc(p.pid, (i + 1) * GIB) for i, p in enumerate(procs)])]
        )
        got = {p.pid: p for p in agent.get_info().gpus[0].procs}
        for proc, user in zip(procs[:-1], lab_users, strict=True):
            entry = got[proc.pid]
            assert (entry.uid, entry.username, entry.expiration) == (
                user.uid,
                user.name,
                user.expiration,
            )
        unknown = got[procs[-1].pid]
        assert (unknown.uid, unknown.username, unknown.expiration) == (
            nobody_uid,
            str(nobody_uid),
            0,
        )
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_shadow_path_is_a_parameter(
    run_agent: AgentFactory, tmp_path: Path, sleeper: Sleeper
) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    shadow = tmp_path / "shadow"
    shadow.write_text(f"{me}:!:19000:0:99999:7::20000:\n")
    agent = run_agent([FakeGpu(procs=[FakeProc(sleeper.pid, GIB)])], "--shadow", str(shadow))
    assert agent.get_info().gpus[0].procs[0].expiration == 20000 * 86400


def _denied(call: Callable[[], object]) -> grpc.StatusCode | None:
    """The status code a call fails with, None when it succeeds."""
    try:
        call()
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return None


@pytest.mark.parametrize(
    ("allow", "ok_from", "denied_from"),
    [
        ("127.0.0.1/32", "127.0.0.1", "::1"),
        ("::1/128", "::1", "127.0.0.1"),  # ::1 and 127.0.0.1 are different addresses
        ("10.0.0.0/8, ::1", "::1", "127.0.0.1"),
        ("::ffff:127.0.0.0/104", "127.0.0.1", "::1"),  # IPv4-mapped: IPv4 clients match
    ],
)
def test_allow_list(run_agent: AgentFactory, allow: str, ok_from: str, denied_from: str) -> None:
    agent = run_agent([FakeGpu()], "--allow", allow, host="::")  # dual-stack: both families
    port = agent.port

    def target(host: str) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    assert len(agent.get_info(target(ok_from)).gpus) == 1
    assert _denied(lambda: agent.get_info(target(denied_from))) == grpc.StatusCode.PERMISSION_DENIED
    # Health and reflection sit behind the same list.
    with grpc.insecure_channel(target(denied_from)) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert _denied(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=3)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    with grpc.insecure_channel(target(ok_from)) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = health.Check(health_pb2.HealthCheckRequest(service="gpu.HostMonitor"), timeout=3)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=3
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert "gpu.HostMonitor" in names
    # One log line per rejected address, not one per call.
    for _ in range(5):
        _denied(lambda: agent.get_info(target(denied_from)))
    time.sleep(0.2)
    assert agent.output().count("not in the allow-list") == 1


@pytest.mark.parametrize("host", ["::", "127.0.0.1"])  # dual-stack socket, IPv4-only socket
def test_ipv6_entries_admit_ipv4_clients_on_any_socket(run_agent: AgentFactory, host: str) -> None:
    agent = run_agent([FakeGpu()], "--allow", "::ffff:127.0.0.1/128", host=host)
    assert len(agent.get_info(f"127.0.0.1:{agent.port}").gpus) == 1
    everyone = run_agent([FakeGpu()], "--allow", "::/0", host=host)
    assert len(everyone.get_info(f"127.0.0.1:{everyone.port}").gpus) == 1
    if host == "::":
        assert len(everyone.get_info(f"[::1]:{everyone.port}").gpus) == 1
        assert _denied(lambda: agent.get_info(f"[::1]:{agent.port}")) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def test_token(run_agent: AgentFactory) -> None:
    agent = run_agent([FakeGpu()], env={"GOHM_TOKEN": "s3cret"})
    assert _denied(agent.get_info) == grpc.StatusCode.UNAUTHENTICATED
    assert _denied(lambda: agent.get_info(token="wrong")) == grpc.StatusCode.UNAUTHENTICATED
    assert len(agent.get_info(token="s3cret").gpus) == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server cert for localhost/127.0.0.1 and a client cert, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=hmonitor test CA",
    )
    for name, ext in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return d


def test_tls_and_mutual_tls(run_agent: AgentFactory, pki: Path) -> None:
    ca = (pki / "ca.pem").read_bytes()
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    agent = run_agent([FakeGpu()], *tls)
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    assert len(agent.get_info(credentials=creds).gpus) == 1
    assert _denied(lambda: agent.get_info(timeout=2)) is not None  # plaintext is refused

    mutual = run_agent([FakeGpu()], *tls, "--tls-client-ca", str(pki / "ca.pem"))
    assert _denied(lambda: mutual.get_info(credentials=creds, timeout=3)) is not None
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    assert len(mutual.get_info(credentials=with_cert).gpus) == 1


def test_second_copy_exits_at_once(run_agent: AgentFactory, tmp_path: Path) -> None:
    agent = run_agent([FakeGpu()])
    started = time.monotonic()
    second = subprocess.run(  # noqa: PLW1510 - the exit code is what we assert
        [sys.executable, "-m", "hmonitor.agent"],
        env=dict(os.environ, GOHM_ADDR=agent.target),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert second.returncode == 0
    assert "already in use" in second.stdout and second.stdout.count("\n") == 1
    assert time.monotonic() - started < 10
    assert len(agent.get_info().gpus) == 1  # the first copy is untouched


def test_bad_allow_list_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(  # noqa: PLW1510 - the exit code is what we assert
        [sys.executable, "-m", "hmonitor.agent", "--allow", "10.0.0.0/33"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 2 and "10.0.0.0/33" in out.stderr


@pytest.mark.skipif(
    not os.environ.get("HMONITOR_PYNVML_MIN_DIR"),
    reason="HMONITOR_PYNVML_MIN_DIR not set (make test sets it)",
)
def test_oldest_supported_binding(run_agent: AgentFactory, sleeper: Sleeper) -> None:
    min_dir = os.environ["HMONITOR_PYNVML_MIN_DIR"]
    agent = run_agent(
        [
            FakeGpu(util=12, procs=[FakeProc(sleeper.pid, 7 * GIB, sm_util=9)]),
            FakeGpu(lost="query"),
        ],
        env={"PYTHONPATH": min_dir},
    )
    info = agent.get_info()
    probe = subprocess.run(
        [sys.executable, "-c", "import pynvml; print(pynvml.__file__)"],
        env=dict(os.environ, PYTHONPATH=min_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(min_dir)
    (p,) = info.gpus[0].procs
    assert (info.gpus[0].utilization, p.pid, p.mem, p.utilization) == (12, sleeper.pid, 7 * GIB, 9)
    assert info.gpus[1].name.startswith("GPU lost:")


# Configuration errors: one line on stderr naming what to fix, exit 2, before any bind.

_AGENT_VARS = ("GOHM_ALLOW", "GOHM_TOKEN", "GOHM_TOKEN_FILE", "GOHM_TLS_CERT", "GOHM_TLS_KEY",
               "GOHM_TLS_CLIENT_CA")


def _main_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
) -> str:
    """Run the agent's main() in this process; it must refuse to start. Its stderr line."""
    for name in _AGENT_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert agent_cli.main(["--addr", "127.0.0.1:1", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("hmonitor: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("content", "args_env"),
    [
        ("", "flag"),
        (" \n\t\n", "flag"),
        ("", "env"),
        ("\n", "env"),
    ],
)
def test_blank_token_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str,
    args_env: str,
) -> None:
    """Issue 7 item 3: an empty token file turned token checking off, silently."""
    token = tmp_path / "token"
    token.write_text(content)
    args, env = (["--token-file", str(token)], {}) if args_env == "flag" else (
        [], {"GOHM_TOKEN_FILE": str(token)}
    )
    err = _main_error(monkeypatch, capsys, args, env)
    assert f"the token file {token} is empty" in err and "write the token" in err


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        ([], {"GOHM_TOKEN": "  "}, "GOHM_TOKEN is set but empty"),
        ([], {"GOHM_TOKEN": ""}, "GOHM_TOKEN is set but empty"),
        ([], {"GOHM_TOKEN_FILE": ""}, "GOHM_TOKEN_FILE is set but empty"),
        (["--token-file", ""], {}, "--token-file is empty"),
        ([], {"GOHM_TLS_CERT": "", "GOHM_TLS_KEY": ""}, "GOHM_TLS_CERT is set but empty"),
        ([], {"GOHM_TLS_CLIENT_CA": " "}, "GOHM_TLS_CLIENT_CA is set but empty"),
        ([], {"GOHM_ALLOW": ""}, "GOHM_ALLOW is set but empty: unset it for the default"),
        ([], {"GOHM_ALLOW": " , "}, "GOHM_ALLOW is set but empty: unset it for the default"),
        ([], {"GOHM_ALLOW": ",,"}, "GOHM_ALLOW is set but empty"),
        (["--allow", ""], {}, "--allow is empty: leave it out for the default 127.0.0.1/32"),
        ([], {"GOHM_ALLOW": "10.0.0.0/33"}, "GOHM_ALLOW: bad entry '10.0.0.0/33'"),
    ],
)
def test_blank_security_settings_are_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    names: str,
) -> None:
    """Set but blank never quietly means "no token", "no TLS" or "the default allow-list"."""
    assert names in _main_error(monkeypatch, capsys, args, env)


def test_bad_simulate_or_log_level_variable_is_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOHM_LOG_LEVEL", "chatty")
    err = _main_error(monkeypatch, capsys, [], {})
    assert err == "hmonitor: --log-level/GOHM_LOG_LEVEL: unknown level 'chatty'\n"
    monkeypatch.setenv("GOHM_SIMULATE", "four")
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        agent_cli.main(["--addr", "127.0.0.1:1"])
    assert exited.value.code == 2
    assert "argument --simulate: invalid int value: 'four'" in capsys.readouterr().err


def test_token_file_that_is_a_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = _main_error(monkeypatch, capsys, ["--token-file", str(tmp_path)], {})
    assert err == f"hmonitor: cannot read the token file {tmp_path}: Is a directory\n"


def test_unreadable_token_file_is_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0)
    cmd = [sys.executable, "-m", "hmonitor.agent", "--token-file", str(token)]
    if os.geteuid() == 0:
        # Root reads anything through CAP_DAC_OVERRIDE; without it (and CAP_DAC_READ_SEARCH)
        # the mode applies to root too. (Becoming another user instead would also lock it out
        # of the checkout, which may sit in a private folder.)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to drop root's file-access override")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    out = subprocess.run(  # noqa: PLW1510 - the exit code is what we assert
        cmd,
        env={k: v for k, v in os.environ.items() if k not in _AGENT_VARS},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"hmonitor: cannot read the token file {token}: Permission denied\n"


def test_spec_cron_line_with_other_variables_empty(
    run_agent: AgentFactory, tmp_path: Path
) -> None:
    """`GOHM_ADDR=... GOHM_ALLOW=10.1.2.3/32 hmonitor` works; an empty non-security variable
    still means its default (the host's name as id, the default filesystem types...)."""
    empty = dict.fromkeys(
        ("GOHM_ID", "GOHM_IP_PREFIX", "GOHM_FSTYPES", "GOHM_SIMULATE", "GOHM_LOG_LEVEL"), ""
    )
    agent = run_agent([FakeGpu(util=7)], env={"GOHM_ALLOW": "10.1.2.3/32,127.0.0.1", **empty})
    info = agent.get_info()
    assert info.id == info.hostname and [g.utilization for g in info.gpus] == [7]


# uids above 2^31 (a container's user namespace): issue 7 item 4.

BIG_UID = 3_000_000_000


def _assert_big_uid_owner(p: hm_pb2.ProcInfo, pid: int, basename: str) -> None:
    assert (p.pid, p.basename) == (pid, basename)
    assert decode_uid(p.uid) == BIG_UID and p.uid == encode_uid(BIG_UID)
    assert owner_label(p.username, p.uid) in ("3000000000", "uid 3000000000")
    assert proc_to_dict(p)["uid"] == BIG_UID  # what /api/v1/hosts shows


def test_owner_above_2_31_from_a_fixture_proc(run_agent: AgentFactory, tmp_path: Path) -> None:
    proc_root, pid = tmp_path / "proc", 4242
    (proc_root / str(pid)).mkdir(parents=True)
    (proc_root / str(pid) / "status").write_text(
        f"Name:\ttrain\nUid:\t{BIG_UID}\t{BIG_UID}\t{BIG_UID}\t{BIG_UID}\n"
    )
    for name in ("loadavg", "meminfo"):  # the host's load and memory come from --proc too
        shutil.copy(FIXTURES / "proc" / name, proc_root / name)
    agent = run_agent(
        [FakeGpu(procs=[FakeProc(pid, GIB)]), FakeGpu(util=3)], "--proc", str(proc_root)
    )
    info = agent.get_info()  # failed with "Value out of range" for every client
    assert info.err == "" and [g.utilization for g in info.gpus] == [0, 3]
    (p,) = info.gpus[0].procs
    _assert_big_uid_owner(p, pid, "train")


def test_real_process_of_uid_above_2_31(run_agent: AgentFactory) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a process as uid 3000000000")
    ids = [f"--reuid={BIG_UID}", f"--regid={BIG_UID}", "--clear-groups"]
    proc = subprocess.Popen([setpriv, *ids, "sleep", "60"])
    try:
        comm = Path(f"/proc/{proc.pid}/comm")
        deadline = time.monotonic() + 5
        while comm.read_text().strip() != "sleep":  # setpriv has exec'd sleep
            assert time.monotonic() < deadline
            time.sleep(0.01)
        agent = run_agent([FakeGpu(procs=[FakeProc(proc.pid, 2 * GIB, sm_util=5)])])
        info = agent.get_info()
        assert info.err == ""
        (p,) = info.gpus[0].procs
        _assert_big_uid_owner(p, proc.pid, "sleep")
        assert (p.mem, p.utilization) == (2 * GIB, 5)
    finally:
        proc.kill()
        proc.wait()
