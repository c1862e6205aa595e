"""Account expiry from shadow files: field meanings, bad lines, re-reading, unreadable files."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import traceback
from pathlib import Path

import pytest

from hmonitor.agent.sources.accounts import ShadowExpiry, parse_shadow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shadow"
DAY = 86400
LOGGER = "hmonitor.agent.sources.accounts"


def test_parse_fixture_field_meanings() -> None:
    parsed = parse_shadow((FIXTURES / "mixed.txt").read_text())
    assert parsed == {
        "root": 1,  # empty expiry: never
        "daemon": 1,  # "*" password is a locked login, expiry still empty
        "alice": 20089 * DAY,  # first entry wins over the duplicate at the end
        "locked": 19500 * DAY,  # "!" password: locked, expiry from field 8
        "neverlocked": 1,
        "star": 19999 * DAY,
        "bob": 21000 * DAY,
        "expired0": 2,  # day 0: expired at the epoch, neither "unknown" nor "never"
        "minusone": 1,  # glibc reads -1 as an empty field
        "eightfields": 19600 * DAY,  # reserved field missing: still a valid entry
    }


@pytest.mark.parametrize(
    "line",
    [
        "short:$6$x$y:19000:0:99999",
        "garbage line without colons",
        "bad:$6$x$y:19000:0:99999:7::soon:",
        "neg:$6$x$y:19000:0:99999:7::-5:",
        "# commented:x:1:2:3:4:5:6:",
        "",
        "   ",
        ":x:19000:0:99999:7::19000:",
    ],
)
def test_bad_lines_are_skipped(line: str) -> None:
    assert parse_shadow(line + "\nok:x:19000:0:99999:7::100:\n") == {"ok": 100 * DAY}


def test_expiration_from_file(caplog: pytest.LogCaptureFixture) -> None:
    shadow = ShadowExpiry(FIXTURES / "mixed.txt")
    assert shadow.expiration("alice") == 0  # nothing read before the first refresh
    shadow.refresh()
    assert shadow.expiration("alice") == 20089 * DAY
    assert shadow.expiration("root") == 1
    assert shadow.expiration("nosuchuser") == 0
    assert shadow.expiration("short") == 0
    assert not caplog.records


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_change_within_the_same_second_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "shadow"
    base_ns = 1_700_000_000 * 10**9
    _write(path, "carol:x:19000:0:99999:7::20000:\n", base_ns)
    shadow = ShadowExpiry(path)
    shadow.refresh()
    assert shadow.expiration("carol") == 20000 * DAY
    # Same size, same inode, mtime 1 ns later (the same second): must be re-read.
    _write(path, "carol:x:19000:0:99999:7::20001:\n", base_ns + 1)
    shadow.refresh()
    assert shadow.expiration("carol") == 20001 * DAY


def test_unchanged_signature_is_not_re_read(tmp_path: Path) -> None:
    path = tmp_path / "shadow"
    mtime_ns = 1_700_000_000 * 10**9
    _write(path, "carol:x:19000:0:99999:7::20000:\n", mtime_ns)
    shadow = ShadowExpiry(path)
    shadow.refresh()
    # Rewritten in place with the same size and mtime: the cached values stay.
    _write(path, "carol:x:19000:0:99999:7::29999:\n", mtime_ns)
    shadow.refresh()
    assert shadow.expiration("carol") == 20000 * DAY


def test_replaced_file_is_re_read(tmp_path: Path) -> None:
    # shadow tools write a new file and rename it into place: a new inode.
    path = tmp_path / "shadow"
    mtime_ns = 1_700_000_000 * 10**9
    _write(path, "carol:x:19000:0:99999:7::20000:\n", mtime_ns)
    shadow = ShadowExpiry(path)
    shadow.refresh()
    new = tmp_path / "nshadow"
    _write(new, "carol:x:19000:0:99999:7::20002:\n", mtime_ns)
    keep = tmp_path / "keep"  # hold the old inode so it cannot be reused
    os.link(path, keep)
    os.replace(new, path)
    shadow.refresh()
    assert shadow.expiration("carol") == 20002 * DAY


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


def test_missing_file_logs_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = tmp_path / "shadow"
    shadow = ShadowExpiry(path)
    for _ in range(3):
        shadow.refresh()
        assert shadow.expiration("carol") == 0
    assert len(_warnings(caplog)) == 1
    assert str(path) in _warnings(caplog)[0]

    path.write_text("carol:x:19000:0:99999:7::20000:\n")
    shadow.refresh()
    assert shadow.expiration("carol") == 20000 * DAY
    assert len(_warnings(caplog)) == 1

    path.unlink()
    shadow.refresh()
    shadow.refresh()
    assert shadow.expiration("carol") == 0  # nothing stale kept
    assert len(_warnings(caplog)) == 2


def _unreadable_scenario(path: Path) -> dict[str, list[str] | list[int]]:
    """Refreshes through an outage, a recovery and a second outage; returns values and logs."""
    logs: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                logs.append(record.getMessage())

    logger = logging.getLogger(LOGGER)
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    values: list[int] = []
    shadow = ShadowExpiry(path)
    for _ in range(5):
        shadow.refresh()
        values.append(shadow.expiration("carol"))
    os.chmod(path, 0o600)
    shadow.refresh()
    values.append(shadow.expiration("carol"))
    os.chmod(path, 0o000)
    os.utime(path, ns=(1, 1))  # a change the signature notices, so a read is tried
    for _ in range(3):
        shadow.refresh()
        values.append(shadow.expiration("carol"))
    return {"values": values, "logs": logs}


def test_unreadable_file_logs_once_with_the_fix() -> None:
    # Root reads mode-000 files, so a forked child drops to nobody first. Forked, not exec'd:
    # the interpreter may live where nobody cannot execute it (pyenv under /root).
    nobody = 65534
    with tempfile.TemporaryDirectory() as tmp:  # not tmp_path (0700): nobody must traverse it
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "shadow"
        path.write_text("carol:x:19000:0:99999:7::20000:\n")
        os.chmod(path, 0o000)
        is_root = os.geteuid() == 0
        if is_root:
            os.chown(path, nobody, nobody)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            status = 1
            try:
                os.close(read_end)
                if is_root:
                    os.setgroups([])
                    os.setgid(nobody)
                    os.setuid(nobody)
                with os.fdopen(write_end, "w") as out:
                    json.dump(_unreadable_scenario(path), out)
                status = 0
            except BaseException:  # noqa: BLE001 - reported, then the child exits
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end) as result_pipe:
            raw = result_pipe.read()
        _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    result = json.loads(raw)
    assert result["values"] == [0] * 5 + [20000 * DAY] + [0] * 3
    logs = result["logs"]
    assert len(logs) == 2, logs  # one per outage, not one per refresh
    assert str(path) in logs[0]
    assert "group 'shadow'" in logs[0]
    assert "Permission denied" in logs[0]
