"""hmonitor-ctl's parsers: sizes, durations, --agent, the config file (with its permission
check) and the command line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hmonitor.ctl.cli import build_parser, main
from hmonitor.ctl.config import AgentAddr, load_config, name_agents, parse_agent
from hmonitor.ctl.errors import EXIT_USAGE, UsageError
from hmonitor.ctl.units import GIB, MIB, parse_duration, parse_size

# --- sizes and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("40G", 40 * GIB), ("40GiB", 40 * GIB), ("40gb", 40 * GIB), ("40", 40 * GIB),
    ("512M", 512 * MIB), ("1.5T", int(1.5 * (1 << 40))), ("100B", 100), (" 8 G ", 8 * GIB),
    ("0", 0),
])
def test_sizes_are_binary_and_a_plain_number_is_gib(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "40X", "-1G", "4 0G", "1e3G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("2d", 172800), ("1h30m", 5400),
    ("0.5s", 0.5), ("1w", 604800),
])
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "6x", "6h-", "-5m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# --- agents --------------------------------------------------------------------------------------


def test_agent_addresses_with_and_without_names() -> None:
    assert parse_agent("gpu01:9203") == (None, "gpu01:9203")
    assert parse_agent("a=10.0.0.1:9203") == ("a", "10.0.0.1:9203")
    assert parse_agent("[::1]:9203") == (None, "[::1]:9203")
    for bad in ("gpu01", "gpu01:", "=gpu01:9203", "gpu01:99999", "gpu 01:9203"):
        with pytest.raises(UsageError, match=r"HOST:PORT|empty"):
            parse_agent(bad)


def test_unnamed_agents_are_called_by_host_unless_two_share_one() -> None:
    named = name_agents([(None, "gpu01:9203"), (None, "10.0.0.2:9203"), ("x", "[::1]:1"),
                         (None, "h:1"), (None, "h:2")])
    assert named == (AgentAddr("gpu01", "gpu01:9203"), AgentAddr("10.0.0.2", "10.0.0.2:9203"),
                     AgentAddr("x", "[::1]:1"), AgentAddr("h:1", "h:1"), AgentAddr("h:2", "h:2"))
    with pytest.raises(UsageError, match="both named 'a'"):
        name_agents([("a", "h:1"), ("a", "h:2")])


# --- config --------------------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), **extra}


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / ".config" / "hmonitor" / "ctl.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_environment_then_file_and_the_command_line_first(tmp_path: Path) -> None:
    _write(tmp_path, "[dashboard]\nurl = http://file:5000/\ntoken = from-file\ntimeout = 3\n")
    cfg = load_config(env=_env(tmp_path))
    assert (cfg.url, cfg.token, cfg.timeout, cfg.direct) == ("http://file:5000", "from-file",
                                                             3.0, False)
    cfg = load_config(env=_env(tmp_path, HMONITOR_URL="http://env:1", HMONITOR_TOKEN="t"))
    assert (cfg.url, cfg.token) == ("http://env:1", "t")
    cfg = load_config(env=_env(tmp_path, HMONITOR_URL="http://env:1"), url="https://flag",
                      timeout=1.5)
    assert (cfg.url, cfg.token, cfg.timeout) == ("https://flag", "from-file", 1.5)


def test_agents_on_the_command_line_mean_direct_mode(tmp_path: Path) -> None:
    cfg = load_config(env=_env(tmp_path, HMONITOR_URL="http://x:1", HMONITOR_TOKEN="t",
                               HMONITOR_AGENT_TOKEN="agent-secret"), agents=["a=h:1", "h:2"])
    assert cfg.direct and cfg.url is None and cfg.agent_token == "agent-secret"
    assert cfg.agents == (AgentAddr("a", "h:1"), AgentAddr("h", "h:2"))


def test_agents_from_the_file_when_no_dashboard_is_set(tmp_path: Path) -> None:
    _write(tmp_path, "[direct]\nagents = gpu01=10.0.0.1:9203, gpu02=10.0.0.2:9203\n", 0o644)
    cfg = load_config(env=_env(tmp_path))
    assert [a.name for a in cfg.agents] == ["gpu01", "gpu02"]
    # A dashboard anywhere wins over the file's agents.
    assert not load_config(env=_env(tmp_path, HMONITOR_URL="http://x:1",
                                    HMONITOR_TOKEN="t")).direct


def test_a_token_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "[dashboard]\nurl = http://x:1\ntoken = secret\n", 0o644)
    with pytest.raises(UsageError, match=f"holds a token and others can read it: chmod 600 "
                       f"{path}"):
        load_config(env=_env(tmp_path))
    path.chmod(0o620)
    with pytest.raises(UsageError, match="others can change it"):
        load_config(env=_env(tmp_path))


def test_a_file_without_tokens_may_be_readable(tmp_path: Path) -> None:
    _write(tmp_path, "[dashboard]\nurl = http://x:1\n", 0o644)
    cfg = load_config(env=_env(tmp_path, HMONITOR_TOKEN="t"))
    assert cfg.url == "http://x:1" and cfg.token == "t"


def test_token_file_is_checked_too(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    env = _env(tmp_path, HMONITOR_URL="http://x:1", HMONITOR_TOKEN_FILE=str(token))
    assert load_config(env=env).token == "s3cret"
    token.chmod(0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        load_config(env=env)


@pytest.mark.parametrize(("text", "message"), [
    ("[dashbord]\nurl = http://x:1\n", "unknown section \\[dashbord\\]"),
    ("[dashboard]\nadress = http://x:1\n", "has no key 'adress'"),
    ("url = http://x:1\n", "File contains no section headers"),
    ("[dashboard]\nurl = monitor:5000\n", "not a dashboard URL"),
    ("[dashboard]\nurl = http://x:1\ntimeout = soon\n", "must be a number of seconds"),
])
def test_config_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(UsageError, match=message):
        load_config(env=_env(tmp_path, HMONITOR_TOKEN="t"))


def test_nothing_configured_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no dashboard: set HMONITOR_URL"):
        load_config(env=_env(tmp_path))
    with pytest.raises(UsageError, match="no token for http://x:1: set HMONITOR_TOKEN"):
        load_config(env=_env(tmp_path, HMONITOR_URL="http://x:1"))


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such config file"):
        load_config(env=_env(tmp_path), config=str(tmp_path / "nope.ini"))


# --- the command line ----------------------------------------------------------------------------


def test_connection_options_before_or_after_the_command() -> None:
    p = build_parser()
    a = p.parse_args(["--url", "http://x:1", "free", "-n", "2", "--min-mem", "40G"])
    assert (a.url, a.n, a.min_mem, a.max_util) == ("http://x:1", 2, 40 * GIB, None)
    a = p.parse_args(["free", "--agent", "h:1", "--agent", "h:2", "--env"])
    assert a.agent == ["h:1", "h:2"] and a.env
    a = p.parse_args(["wait", "-n", "2", "--timeout", "10m", "--interval", "1s"])
    assert (a.n, a.timeout, a.interval) == (2, 600, 1)
    a = p.parse_args(["notes", "--json", "list", "--host", "gpu01"])
    assert a.json and a.host == "gpu01" and a.notes_action == "list"


@pytest.mark.parametrize("argv", [
    ["free", "-n", "0"], ["free", "--min-mem", "lots"], ["free", "--max-util", "101"],
    ["free", "--env", "--long"], ["wait", "--timeout", "soon"], ["history", "gpu01"],
    ["history", "gpu01", "0", "--since", "0s"], ["history", "gpu01", "0", "--metric", "power"],
    ["frobnicate"], [],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv, env={})
    assert exit_.value.code == EXIT_USAGE
    assert "usage: hmonitor-ctl" in capsys.readouterr().err


def test_missing_configuration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status"], env={"HOME": str(tmp_path)}, out=out, err=err) == EXIT_USAGE
    assert out.getvalue() == ""
    assert err.getvalue().startswith("hmonitor-ctl: no dashboard: set HMONITOR_URL")
    assert err.getvalue().count("\n") == 1


def test_an_agent_given_as_a_url_is_refused() -> None:
    # gRPC would read "http" as a host name and fail with a riddle.
    with pytest.raises(UsageError, match="expected \\[NAME=\\]HOST:PORT"):
        parse_agent("http://gpu01:9203")
