"""The history file's faults, made for real: a file of random bytes, damaged pages, a folder in
its place, read-only files and file systems (mounts), permission denied (root without its
file-permission override), a full disk (a small tmpfs) and damage found while running.

Start-up must end in one `StorageError` line naming history.sqlite; at run time a round or a
maintenance call that fails logs one line a minute (no traceback), loses nothing committed,
shows in `HistoryRecorder.fault`, and recovers by itself once writes work again.

Mounting needs root (CI runs tests as root); the tests that mount are skipped otherwise, since
chmod alone does not stop root and without root we cannot mount.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from builders import GIB, H200, gpu, host_info, proc, up

from hmonitor._pb import hm_pb2
from hmonitor.web.history.recorder import HistoryRecorder
from hmonitor.web.hoststate import HostState
from hmonitor.web.settings import Settings
from hmonitor.web.storage import StorageError

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 600
LOGGER = "hmonitor.web.history.recorder"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting (and beating root's chmod) needs root")


def round_of(hosts: int = 4, gpus: int = 4, util: int = 50) -> list[HostState]:
    """Hosts h0, h1, ... with ``gpus`` H200s at ``util`` %, each running one process (user u0,
    u1, ...) of 9 GiB."""
    out = []
    for h in range(hosts):
        name = f"h{h}"
        gpu_list = [gpu(i, proc(f"u{i}", pid=100 + i, uid=1000 + i, mem_gib=9, util=util),
                        util=util, used_gib=10, total_gib=80, name=H200, temp=50)
                    for i in range(gpus)]
        disk = hm_pb2.DiskInfo(device="/dev/sda1", mount="/", used=GIB, total=100 * GIB)
        out.append(up(name, host_info(name, gpu_list, disks=[disk])))
    return out


def settings(folder: Path) -> Settings:
    return Settings(path=folder / "settings.py", servers={}, token="t", interval=10.0)


def feature(folder: Path, clock: list[float] | None = None) -> HistoryRecorder:
    fault_clock = clock if clock is not None else [0.0]
    return HistoryRecorder(settings(folder), folder, fault_clock=lambda: fault_clock[0])


def make_history(folder: Path, rounds: int = 80) -> None:
    """A real history file with rolled-up, compacted and head data, closed cleanly."""
    f = feature(folder)
    states = round_of()
    for i in range(rounds):
        f.on_round(states, T0 + 10 * i)
    f.store.maintain(T0 + 10 * rounds)
    f.close()


def open_error(folder: Path) -> str:
    with pytest.raises(StorageError) as caught:
        feature(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "history.sqlite") in message
    return message


def page_of(path: Path, table: str) -> tuple[int, int]:
    """(page size, root page) of a table or index."""
    conn = sqlite3.connect(path)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()
    conn.close()
    return int(size), int(root[0])


def scribble(path: Path, page: int, size: int, start: int = 0) -> None:
    """Overwrite a page (1-based, from byte `start` in it) with random bytes."""
    with path.open("r+b") as f:
        f.seek((page - 1) * size + start)
        f.write(os.urandom(size - start))


@contextmanager
def mounted(target: Path, *options: str) -> Iterator[Path]:
    if not target.exists():
        target.mkdir(parents=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# ---------------------------------------------------------------------------- start-up


def test_random_bytes(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_bytes(os.urandom(64 * 1024))
    assert "is not an SQLite database" in open_error(tmp_path)


def test_damaged_schema_page(tmp_path: Path) -> None:
    make_history(tmp_path)
    path = tmp_path / "history.sqlite"
    size, _ = page_of(path, "meta")
    scribble(path, 1, size, start=100)  # page 1 after the file header: the schema
    assert "is damaged" in open_error(tmp_path)


@pytest.mark.parametrize("table", ["meta", "host", "live_proc", "live_gpu", "h_round"])
def test_damaged_state_tables(tmp_path: Path, table: str) -> None:
    make_history(tmp_path)
    path = tmp_path / "history.sqlite"
    size, root = page_of(path, table)
    scribble(path, root, size)
    message = open_error(tmp_path)
    assert "is damaged" in message or "is not an SQLite database" in message
    assert ".recover" in message or "move it aside" in message


def test_a_folder_in_its_place(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").mkdir()
    assert "is a folder" in open_error(tmp_path)


def test_missing_data_folder(tmp_path: Path) -> None:
    message = open_error(tmp_path / "nowhere")
    assert "does not exist" in message


@needs_root
def test_read_only_file_system(tmp_path: Path) -> None:
    with mounted(tmp_path / "ro", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs") as folder:
        assert "read-only" in open_error(folder)


@needs_root
def test_read_only_file_on_a_read_only_remount(tmp_path: Path) -> None:
    with mounted(tmp_path / "fs", "-t", "tmpfs", "-o", "size=16m", "tmpfs") as folder:
        make_history(folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        assert "read-only" in open_error(folder)


@needs_root
def test_read_only_file_in_a_writable_folder(tmp_path: Path) -> None:
    make_history(tmp_path)
    path = tmp_path / "history.sqlite"
    with mounted(path, "--bind", str(path)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        assert "read-only" in open_error(tmp_path)


_OPEN_AS_PLAIN_USER = """
import sys
from pathlib import Path
from hmonitor.web.history.recorder import HistoryRecorder
from hmonitor.web.settings import Settings
from hmonitor.web.storage import StorageError
folder = Path(sys.argv[1])
try:
    HistoryRecorder(Settings(path=folder / "settings.py", servers={}, token="t"), folder)
except StorageError as err:
    print(err)
    sys.exit(3)
"""


@needs_root
@pytest.mark.parametrize("mode", [0o000, 0o400])
def test_permission_denied(mode: int) -> None:
    # Root ignores file modes through CAP_DAC_OVERRIDE; without it (and without
    # CAP_DAC_READ_SEARCH) the modes apply to root as to anyone.
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_history(folder)
        (folder / "history.sqlite").chmod(mode)
        done = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c",
             _OPEN_AS_PLAIN_USER, str(folder)],
            capture_output=True, text=True, check=False, env={**os.environ},
        )
        assert done.returncode == 3, done.stderr
        message = done.stdout.strip()
        assert "\n" not in message and str(folder / "history.sqlite") in message
        assert ("permission denied" in message if mode == 0 else "cannot be written" in message)


# ---------------------------------------------------------------------------- run time


def error_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def gpu_times(f: HistoryRecorder, host: str = "h0", gpu: int = 0) -> list[float]:
    return [s[0] for s in f.store.raw_samples(host, gpu, 0, T0 + 86_400)]


@needs_root
def test_full_disk_one_line_a_minute_nothing_lost_and_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with mounted(tmp_path / "fs", "-t", "tmpfs", "-o", "size=16m", "tmpfs") as folder:
        clock = [0.0]
        f = feature(folder, clock)
        states = round_of()
        committed = [T0 + 10 * i for i in range(30)]
        for t in committed:
            f.on_round(states, t)
        assert f.fault == ""
        filler = fill(folder)
        # Rounds until the disk refuses one (SQLite may still have room in its files).
        t = committed[-1]
        refused = 0
        for _ in range(400):
            t += 10
            before = len(gpu_times(f))
            f.on_round(states, t)
            if len(gpu_times(f)) == before:
                refused += 1
                if refused == 1:
                    clock[0] += 1  # later failures within the minute are not logged
                if refused >= 20:
                    break
            else:
                committed.append(t)
        assert refused >= 20, "the full disk never refused a round"
        assert "the disk is full" in f.fault and "history.sqlite" in f.fault
        lines = error_lines(caplog)
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].exc_info is None and "disk is full" in lines[0].getMessage()
        # A minute later: one more line, counting what it did not log.
        clock[0] += 61
        t += 10
        f.on_round(states, t)
        lines = error_lines(caplog)
        assert len(lines) == 2 and "more failures since" in lines[1].getMessage()
        # Maintenance due while the disk is full: one line too, and a consistent store.
        f.schedule._last = None  # due now
        caplog.clear()
        clock[0] += 61
        t += 10
        f.on_round(states, t)
        assert all(r.exc_info is None for r in caplog.records)
        assert gpu_times(f) == committed  # every committed round, nothing else
        # Space comes back: the next rounds are stored, and the recovery is logged once.
        filler.unlink()
        caplog.clear()
        for _ in range(3):
            t += 10
            f.on_round(states, t)
            committed.append(t)
        assert gpu_times(f) == committed
        assert f.fault == ""
        warnings = [r for r in caplog.records if r.name == LOGGER]
        assert len(warnings) == 1 and "writes work again" in warnings[0].getMessage()
        report = f.store.maintain(t)  # and maintenance finishes the work it could not do
        assert report.done
        f.close()


@needs_root
def test_maintenance_on_a_full_disk_leaves_the_store_consistent(tmp_path: Path) -> None:
    with mounted(tmp_path / "fs", "-t", "tmpfs", "-o", "size=32m", "tmpfs") as folder:
        f = feature(folder)
        states = round_of(hosts=8)
        rounds = [T0 + 10 * i for i in range(150)]
        for t in rounds:
            f.store.ingest(states, t)  # no maintenance yet: a backlog
        filler = fill(folder)
        failures = 0
        for _ in range(50):
            try:
                if f.store.maintain(rounds[-1] + 5, budget_s=0).done:
                    break
            except sqlite3.Error:
                failures += 1
        assert failures, "maintenance never hit the full disk"
        filler.unlink()
        assert f.store.maintain(rounds[-1] + 5).done
        conn = sqlite3.connect(folder / "history.sqlite")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Every sample once: raw and in the 1-minute buckets (all but the open minute).
        assert gpu_times(f, "h7", 3) == rounds
        rolled = sum(1 for t in rounds if t < rounds[-1] - rounds[-1] % 60)
        got = conn.execute("SELECT SUM(n) FROM gpu_roll WHERE lvl = 60000 AND gid = 1")
        assert got.fetchone()[0] == rolled
        conn.close()
        f.close()


def test_damage_found_while_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    make_history(tmp_path, rounds=80)
    path = tmp_path / "history.sqlite"
    size, root = page_of(path, "h_proc")  # not read at start-up; every round writes it
    scribble(path, root, size)
    clock = [0.0]
    f = feature(tmp_path, clock)  # opens: the damage is elsewhere
    states = round_of()
    for i in range(5):
        f.on_round(states, T0 + 10 * (80 + i))
    lines = error_lines(caplog)
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "is damaged" in lines[0].getMessage() and str(path) in lines[0].getMessage()
    assert "is damaged" in f.fault
    # What was committed before is still there.
    assert gpu_times(f) == [T0 + 10 * i for i in range(80)]
    f.close()
