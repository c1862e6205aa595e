"""uid -> name: local accounts, the host's getent fallback, caching, a hanging getent."""

from __future__ import annotations

import pwd
import shutil
import time
from pathlib import Path

import pytest

from hmonitor.agent.sources.users import UserNames

UNKNOWN_UID = 4_242_424  # not in this machine's passwd


def fake_getent(tmp_path: Path, body: str) -> tuple[str, Path]:
    """A getent stand-in that counts its calls in a file, then runs ``body``."""
    counter = tmp_path / "calls"
    script = tmp_path / "getent"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{counter}"\n[ "$1" = passwd ] || exit 1\n{body}\n')
    script.chmod(0o755)
    return str(script), counter


def calls(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_accounts(tmp_path: Path) -> None:
    getent, counter = fake_getent(tmp_path, "exit 2")
    names = UserNames(getent=getent)
    assert names.name(0) == "root"
    assert names.name(65534) == "nobody"
    assert calls(counter) == []  # local accounts never run getent


def test_getent_fallback_is_cached(tmp_path: Path) -> None:
    getent, counter = fake_getent(
        tmp_path,
        f'[ "$2" = {UNKNOWN_UID} ] && echo "ldapuser:*:{UNKNOWN_UID}:100:LDAP:/home/l:/bin/bash"'
        " && exit 0\nexit 2",
    )
    clock = Clock()
    names = UserNames(getent=getent, ttl=300.0, clock=clock)
    assert names.name(UNKNOWN_UID) == "ldapuser"
    assert names.name(UNKNOWN_UID) == "ldapuser"
    assert calls(counter) == [f"passwd {UNKNOWN_UID}"]

    assert names.name(UNKNOWN_UID + 1) == str(UNKNOWN_UID + 1)  # getent: no such user
    assert names.name(UNKNOWN_UID + 1) == str(UNKNOWN_UID + 1)  # the miss is cached too
    assert len(calls(counter)) == 2

    clock.now += 301  # past the ttl: asked again
    assert names.name(UNKNOWN_UID) == "ldapuser"
    assert len(calls(counter)) == 3


def test_getent_line_for_another_uid_is_ignored(tmp_path: Path) -> None:
    getent, _ = fake_getent(tmp_path, 'echo "other:*:1234:100::/:/bin/sh"')
    assert UserNames(getent=getent).name(UNKNOWN_UID) == str(UNKNOWN_UID)


def test_hanging_getent_times_out_and_is_skipped(tmp_path: Path) -> None:
    getent, counter = fake_getent(tmp_path, "exec sleep 30")
    clock = Clock()
    names = UserNames(getent=getent, timeout=0.3, clock=clock)
    started = time.monotonic()
    assert names.name(UNKNOWN_UID) == str(UNKNOWN_UID)
    assert time.monotonic() - started < 2.0
    # Other unknown uids do not each wait for the hung getent within the ttl.
    started = time.monotonic()
    assert names.name(UNKNOWN_UID + 1) == str(UNKNOWN_UID + 1)
    assert time.monotonic() - started < 0.2
    assert len(calls(counter)) == 1


def test_no_getent(tmp_path: Path) -> None:
    assert UserNames(getent=str(tmp_path / "missing")).name(UNKNOWN_UID) == str(UNKNOWN_UID)
    assert UserNames(getent=None).name(UNKNOWN_UID) == str(UNKNOWN_UID)
    assert UserNames(getent=None).name(-5) == "-5"
    assert UserNames(getent=None).name(2**40) == str(2**40)


def test_host_getent_when_in_process_lookup_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # The single executable cannot load NSS modules: pwd fails, the host's getent answers.
    if shutil.which("getent") is None:
        pytest.skip("no getent on this host")

    def no_nss(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_nss)
    assert UserNames().name(0) == "root"
