"""settings.py loading: the spec's format, every optional key, and errors that name key and line."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hmonitor.web.settings import (
    KNOWN_KEYS,
    Settings,
    SettingsError,
    load_settings,
    split_address,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "settings"


def install(folder: Path, fixture: str) -> Path:
    """Copy a fixture and the TLS files beside it to `folder` as settings.py, as an admin has it."""
    shutil.copytree(FIXTURES / "tls", folder / "tls")
    target = folder / "settings.py"
    shutil.copyfile(FIXTURES / fixture, target)
    return target


def write(folder: Path, text: str) -> Path:
    target = folder / "settings.py"
    target.write_text(text, encoding="utf-8")
    return target


def test_the_specs_example_loads_with_defaults(tmp_path: Path) -> None:
    path = install(tmp_path, "spec_example.txt")

    settings = load_settings(path)

    assert settings == Settings(
        path=path, servers={"local": "127.0.0.1:9203"}, token="123456",
        secret="asdjfoihasidhfu", data_dir=tmp_path,
    )
    assert (settings.interval, settings.timeout) == (10.0, 3.0)
    assert settings.agent_token == ""
    assert not settings.tls
    assert settings.tls_ca is settings.tls_cert is settings.tls_key is None
    assert settings.session_lifetime == 7 * 86400
    assert settings.history_addr == "127.0.0.1:9204"


def test_every_key_is_read_and_relative_paths_follow_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = install(tmp_path / "etc", "full.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the paths must not depend on where the command runs

    settings = load_settings(path)

    assert list(settings.servers.items()) == [
        ("zeta", "10.0.0.9:9203"),
        ("gpu01", "gpu01.lab.example:9203"),
        ("gpu02", "gpu02.lab.example:9203"),
        ("alpha", "[fd00::1]:9203"),
    ]
    folder = tmp_path / "etc"
    assert settings.tls
    assert settings.tls_ca == folder / "tls" / "ca.pem"
    assert settings.tls_cert == folder / "tls" / "client.pem"
    assert settings.tls_key == folder / "tls" / "client.key"
    assert settings.data_dir == folder / "state"
    assert settings.tls_server_name == "agents.lab.example"
    assert (settings.token, settings.secret, settings.agent_token) == (
        "open sesame", "s3cret", "agent-shared-token")
    assert (settings.interval, settings.timeout, settings.session_lifetime) == (5.0, 2.5, 3600.0)
    assert isinstance(settings.interval, float)
    assert settings.history_addr == "0.0.0.0:9300"
    assert (settings.history_raw_days, settings.history_keep_days) == (7.0, 90.5)
    assert (settings.idle_util_threshold, settings.idle_minutes) == (2.0, 60.0)


def test_a_relative_settings_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, "spec_example.txt")
    monkeypatch.chdir(tmp_path)

    settings = load_settings("settings.py")

    assert settings.path == tmp_path / "settings.py"
    assert settings.data_dir == tmp_path


def test_no_secret_means_one_is_generated_later(tmp_path: Path) -> None:
    path = write(tmp_path, 'servers = {"a": "h:1"}\ntoken = "t"\n')
    assert load_settings(path).secret is None
    path = write(tmp_path, 'servers = {"a": "h:1"}\ntoken = "t"\nsecret = None\n')
    assert load_settings(path).secret is None


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = install(tmp_path, "syntax_error.txt")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert f"{path}:3:" in str(caught.value)
    assert "syntax error" in str(caught.value)
    assert caught.value.line == 3


def test_an_exception_while_running_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'servers = {"a": "h:1"}\n\ntoken = undefined_name\n')

    with pytest.raises(SettingsError, match=r"settings\.py:3: .*NameError.*undefined_name"):
        load_settings(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such settings file") as caught:
        load_settings(tmp_path / "nope.py")
    assert str(tmp_path / "nope.py") in str(caught.value)


def test_missing_token_is_named(tmp_path: Path) -> None:
    path = install(tmp_path, "missing_token.txt")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert str(path) in str(caught.value)
    assert "token: missing" in str(caught.value)
    assert caught.value.key == "token"


def test_missing_servers_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'token = "123456"\n')
    with pytest.raises(SettingsError, match="servers: missing"):
        load_settings(path)


def test_a_typo_gets_the_right_key_suggested(tmp_path: Path) -> None:
    path = install(tmp_path, "typo.txt")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert f"{path}:3: intervall: unknown key; did you mean 'interval'?" in str(caught.value)


def test_an_upper_case_key_gets_the_lower_case_one_suggested(tmp_path: Path) -> None:
    path = write(tmp_path, 'servers = {"a": "h:1"}\nTOKEN = "123456"\n')
    with pytest.raises(SettingsError, match="did you mean 'token'"):
        load_settings(path)


def test_imports_helpers_and_private_names_are_not_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        "import os",
        "import os.path",
        "from socket import gethostname as servers_host",
        "_intervall = 3",
        "def server(name):",
        "    return f'{name}:9203'",
        "rack = ['g1', 'g2']",
        "SUBNET = '10.0.0.'",
        "server_list = [server(n) for n in rack]",
        "servers = {n: server(n) for n in rack}",
        "token = os.environ.get('HM_TEST_NEVER_SET', 'x')",
        "",
    ]))

    settings = load_settings(path)

    assert settings.servers == {"g1": "g1:9203", "g2": "g2:9203"}


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'servers = {"a": "h"}\ntoken = ""\ninterval = -1\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:1: servers: 'a': bad address 'h': no port: expected 'host:port'",
        f"{path}:2: token: is empty: anyone could log in",
        f"{path}:3: interval: must be greater than 0 (got -1)",
    ]


BASE = 'servers = {"local": "127.0.0.1:9203"}\ntoken = "123456"\n'


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('servers = ["127.0.0.1:9203"]\ntoken = "x"\n', "servers", "must be a dict"),
        ('servers = {}\ntoken = "x"\n', "servers", "is empty"),
        ('servers = {"a": 9203}\ntoken = "x"\n', "servers", "'a': address must be a string"),
        ('servers = {1: "h:9203"}\ntoken = "x"\n', "servers", "must be a non-empty string"),
        ('servers = {"a/b": "h:9203"}\ntoken = "x"\n', "servers", "must not contain '/'"),
        ('servers = {"a": "10.0.0.1"}\ntoken = "x"\n', "servers", "no port"),
        ('servers = {"a": "10.0.0.1:"}\ntoken = "x"\n', "servers", "is not a number"),
        ('servers = {"a": "10.0.0.1:http"}\ntoken = "x"\n', "servers", "is not a number"),
        ('servers = {"a": "10.0.0.1:99999"}\ntoken = "x"\n', "servers", "outside 1-65535"),
        ('servers = {"a": ":9203"}\ntoken = "x"\n', "servers", "no host name"),
        ('servers = {"a": "fd00::1:9203"}\ntoken = "x"\n', "servers", "in brackets"),
        ('servers = {"a": "[fd00::1]9203"}\ntoken = "x"\n', "servers", "[ipv6-address]:port"),
        ('servers = {"a": "h:1"}\ntoken = 123456\n', "token", "must be a string in quotes"),
        (BASE + "interval = 0\n", "interval", "greater than 0"),
        (BASE + "interval = True\n", "interval", "must be a number"),
        (BASE + 'timeout = "3"\n', "timeout", "must be a number"),
        (BASE + 'timeout = float("inf")\n', "timeout", "greater than 0"),
        (BASE + 'secret = ""\n', "secret", "is empty"),
        (BASE + "secret = b'x'\n", "secret", "must be a string"),
        (BASE + "agent_token = 1\n", "agent_token", "must be a string"),
        (BASE + 'tls_ca = "missing.pem"\n', "tls_ca", "no such file"),
        (BASE + 'tls_ca = "tls"\n', "tls_ca", "is a folder, not a file"),
        (BASE + "tls_ca = 5\n", "tls_ca", "must be a path"),
        (BASE + 'tls_cert = "tls/client.pem"\n', "tls_key", "missing: tls_cert is set"),
        (BASE + 'tls_server_name = "a.example"\n', "tls_server_name", "only applies over TLS"),
        (BASE + 'history_addr = "localhost"\n', "history_addr", "no port"),
        (BASE + "idle_util_threshold = 150\n", "idle_util_threshold", "between 0 and 100"),
        (BASE + "history_raw_days = 30\nhistory_keep_days = 7\n", "history_keep_days",
         "shorter than history_raw_days"),
        (BASE + 'data_dir = "tls/ca.pem"\n', "data_dir", "not a folder"),
    ],
)
def test_a_bad_value_names_the_key_and_its_line(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    shutil.copytree(FIXTURES / "tls", tmp_path / "tls")
    path = write(tmp_path, text)
    # The line the key is assigned on, where the file assigns it.
    line = next((n for n, row in enumerate(text.splitlines(), 1) if row.startswith(key)), None)

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    message = str(caught.value)
    where = f"{path}:{line}" if line else str(path)
    assert f"{where}: {key}: " in message
    assert problem in message
    assert caught.value.key == key


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, 'servers = {"a": "h:1"}\ntoken = 987654321\nsecret = 4242424242\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert "987654321" not in str(caught.value)
    assert "4242424242" not in str(caught.value)


def test_a_host_name_listed_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    # Python keeps the last of two equal keys without a word: gpu01 at .1 would never be polled.
    path = write(tmp_path, 'token = "t"\nservers = {\n    "gpu01": "10.0.0.1:9203",\n'
                           '    "gpu02": "10.0.0.2:9203",\n    "gpu01": "10.0.0.3:9203",\n}\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert err.value.key == "servers"
    assert "'gpu01' is listed twice (lines 3 and 5)" in str(err.value)


def test_servers_built_by_code_are_not_mistaken_for_repeats(tmp_path: Path) -> None:
    path = write(tmp_path, 'token = "t"\nservers = {f"gpu{i:02d}": f"10.0.0.{i}:9203" '
                           'for i in range(1, 4)}\nservers = {**servers, "gpu01": "10.0.0.9:1"}\n')
    assert load_settings(path).servers["gpu01"] == "10.0.0.9:1"


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=3),
    max_leaves=6,
)
def _mostly(usual: st.SearchStrategy[object], odd: st.SearchStrategy[object]
            ) -> st.SearchStrategy[object]:
    """``usual`` three times in four (one_of would weigh every branch of ``odd`` alike)."""
    return st.integers(0, 3).flatmap(lambda i: usual if i else odd)


_ADDRESS = st.one_of(
    st.from_regex(r"\A[a-z0-9.-]{1,20}:[0-9]{1,6}\Z"),
    st.from_regex(r"\A[a-z0-9.-]{1,20}:[0-9]{1,4}\Z"),
    st.from_regex(r"\A\[[0-9a-f:]{2,20}\]:[0-9]{1,5}\Z"),
    st.text(max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(
    servers=_mostly(
        st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\Z"), _ADDRESS, min_size=1,
                        max_size=4),
        st.dictionaries(st.text(max_size=12), _ADDRESS, max_size=4) | _ANY),
    keys=st.dictionaries(st.sampled_from(KNOWN_KEYS[1:]),
                         _mostly(st.floats(0.01, 1e6) | st.integers(1, 100), _ANY), max_size=2),
)
def test_any_settings_file_loads_or_names_its_bad_key(
    tmp_path_factory: pytest.TempPathFactory, servers: object, keys: dict[str, object]
) -> None:
    folder = tmp_path_factory.mktemp("prop")
    # repr() writes non-finite floats as inf and nan: names the file must define.
    text = f"from math import inf, nan\nservers = {servers!r}\ntoken = 't'\n" + "".join(
        f"{k} = {v!r}\n" for k, v in keys.items())
    path = write(folder, text)
    try:
        loaded = load_settings(path)
    except SettingsError as err:
        # One message naming the file and, for each problem, the key.
        assert str(path) in str(err) and err.key is not None, str(err)
        assert err.key in {"servers", *keys, "tls_cert", "tls_key"}, str(err)
        return
    event("loaded")
    assert loaded.servers and all(split_address(a) for a in loaded.servers.values())
    assert loaded.token.strip()
    for name in ("interval", "timeout", "session_lifetime", "history_raw_days"):
        value = getattr(loaded, name)
        assert value > 0 and math.isfinite(value)
    assert 0 <= loaded.idle_util_threshold <= 100


def test_the_prometheus_history_keys_are_read(tmp_path: Path) -> None:
    (tmp_path / "prom.token").write_text("abc123\n")
    path = write(tmp_path, BASE + 'history_backend = "prometheus"\n'
                 'prometheus_url = "https://prom.example:9090/prefix/"\n'
                 'prometheus_bearer_token_file = "prom.token"\nprometheus_timeout = 2\n')
    loaded = load_settings(path)
    assert loaded.history_backend == "prometheus"
    assert loaded.prometheus_url == "https://prom.example:9090/prefix"
    assert loaded.prometheus_bearer_token_file == tmp_path / "prom.token"
    assert loaded.prometheus_timeout == 2.0
    assert loaded.prometheus_username is None and loaded.prometheus_password is None
    basic = load_settings(write(tmp_path, BASE + 'prometheus_url = "http://p:9090"\n'
                                'prometheus_username = "ann"\nprometheus_password = "pw"\n'))
    assert (basic.prometheus_username, basic.prometheus_password) == ("ann", "pw")
    assert basic.history_backend == "sqlite" and basic.prometheus_timeout == 5.0


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('history_backend = "influx"\n', "history_backend", "is not one of 'sqlite', 'prom"),
        ('history_backend = "prometheus"\n', "history_backend", "set prometheus_url too"),
        ('prometheus_url = "prom:9090"\n', "prometheus_url", "not an http:// or https:// URL"),
        ('prometheus_url = "http://p:99999"\n', "prometheus_url", "bad URL"),
        ('prometheus_url = "http://p:9090/?x=1"\n', "prometheus_url", "no ?query"),
        ('prometheus_url = "http://u:hunter2@p:9090"\n', "prometheus_url", "holds a password"),
        ('prometheus_timeout = 0\n', "prometheus_timeout", "greater than 0"),
        ('prometheus_username = "ann"\n', "prometheus_username", "needs prometheus_password"),
        ('prometheus_password = "pw"\n', "prometheus_password", "needs prometheus_username"),
        ('prometheus_bearer_token_file = "nope"\n', "prometheus_bearer_token_file",
         "no such file"),
        ('prometheus_bearer_token_file = "empty"\n', "prometheus_bearer_token_file",
         "must hold one token"),
        ('prometheus_bearer_token_file = "tok"\nprometheus_username = "a"\n'
         'prometheus_password = "b"\n', "prometheus_username", "not both"),
        ('prometheus_job = ""\n', "prometheus_job", "is empty"),
        ('metrics_token = "short"\n', "metrics_token", "shorter than 16 characters"),
        ('metrics_token = "two words here, long enough"\n', "metrics_token", "one word"),
    ],
)
def test_a_bad_prometheus_key_is_named(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "tok").write_text("t0k")
    path = write(tmp_path, BASE + text)
    line = next(n for n, row in enumerate((BASE + text).splitlines(), 1) if row.startswith(key))
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: ") and problem in message
    assert len(message.splitlines()) == 1 and "hunter2" not in message
    assert caught.value.key == key
