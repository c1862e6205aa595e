"""Storage faults of the real ``hmonitor-web`` (issue 7, items 6 and 8).

Start-up: a data file that cannot be used stops the dashboard with one line naming it and what to
do, not a traceback. Run time: a full disk (a real, small tmpfs) answers writes with 507 and one
log line a minute, pages and the live view keep working, and saving works again by itself once
there is space. Mounting needs root, as in CI; elsewhere those tests are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import free_port, start_agent
from webkit import TOKEN, write_settings

from hmonitor.web.history import SqliteHistory
from hmonitor.web.notes import NotesStore

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root (CI is root)")


def start_web(settings: Path, data: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hmonitor.web.cli", "--settings", str(settings), "--addr",
         "127.0.0.1", "--port", str(port), "--data-dir", str(data), "--threads", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def run_web(tmp_path: Path, data: Path) -> tuple[int, str]:
    """Start the dashboard on ``data`` and return (exit code, output) once it stops."""
    settings = write_settings(tmp_path / "conf", {"a": "127.0.0.1:9"},
                              history_addr=f"127.0.0.1:{free_port()}")
    proc = start_web(settings, data, free_port())
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def one_line_naming(out: str, name: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out, out
    assert len(lines) == 1, out
    assert lines[0].startswith("hmonitor-web: cannot start: ") and name in lines[0], out
    return lines[0]


def damaged_copy(path: Path) -> None:
    """A real database of its kind whose first pages after the header (the tables read at
    start) are overwritten with noise."""
    if path.name == "history.sqlite":
        SqliteHistory(path).close()
    else:
        NotesStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rng = random.Random(7)
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(bytes(rng.randrange(256) for _ in range(8192)))


@pytest.mark.parametrize("name", ["hmonitor.db", "history.sqlite"])
@pytest.mark.parametrize("fault", ["random bytes", "damaged pages", "a folder"])
def test_an_unusable_data_file_stops_start_up_with_one_line(
    tmp_path: Path, name: str, fault: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    target = data / name
    if fault == "random bytes":
        target.write_bytes(random.Random(1).randbytes(64 * 1024))
    elif fault == "damaged pages":
        damaged_copy(target)
    else:
        target.mkdir()
    code, out = run_web(tmp_path, data)
    assert code == 1
    line = one_line_naming(out, str(target))
    assert re.search(r"move it aside|restore|recover", line), line


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@needs_root
def test_a_read_only_data_dir_stops_start_up_with_one_line(tmp_path: Path) -> None:
    # chmod does not stop root: a read-only file system does.
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as data:
        code, out = run_web(tmp_path, data)
    assert code == 1
    line = one_line_naming(out, str(data))
    assert "write access" in line or "read-only" in line.lower(), line


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text.startswith(b"{") else {}
        except urllib.error.HTTPError as err:
            text = err.read()
            return err.code, json.loads(text) if text.startswith(b"{") else {}

    def wait_up(self, host: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status, body = self.call("GET", f"/api/v1/hosts/{host}")
                if status == 200 and body.get("up"):
                    return
            time.sleep(0.2)
        raise AssertionError(f"{host} never showed up")


def fill(folder: Path) -> Path:
    """Write until the file system says it is full."""
    filler = folder / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


@needs_root
def test_a_full_disk_answers_507_keeps_pages_live_and_recovers_by_itself(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, ["--simulate", "2", "--allow", "127.0.0.1/32"])
    port = free_port()
    settings = write_settings(tmp_path / "conf", {"sim": agent.target}, interval=1,
                              history_addr=f"127.0.0.1:{free_port()}")
    with tmpfs(tmp_path / "small", "8m") as data:
        web = start_web(settings, data, port)
        try:
            api = Client(f"http://127.0.0.1:{port}")
            api.wait_up("sim")
            assert api.call("POST", "/api/v1/notes", {"user": "a", "host": "sim",
                                                      "note": "before"})[0] == 200
            filler = fill(data)
            failed = [api.call("POST", "/api/v1/notes",
                               {"user": f"u{i}", "host": "sim", "note": "x" * 1500})
                      for i in range(20)]
            statuses = {status for status, _ in failed}
            assert 507 in statuses, failed
            message = next(str(body["error"]) for status, body in failed if status == 507)
            assert str(data / "hmonitor.db") in message and "disk is full" in message
            # Reading still works: the notes saved before, the live hosts, the pages.
            status, body = api.call("GET", "/api/v1/notes")
            assert status == 200 and any(n["note"] == "before" for n in body["notes"])
            time.sleep(3)  # rounds keep coming while history cannot be written
            status, host = api.call("GET", "/api/v1/hosts/sim")
            assert status == 200 and host["up"]
            assert time.time() - float(host["polled_at"]) < 3
            assert api.call("GET", "/")[0] == 200
            # The dashboard says so where people look: an alert per file it cannot write.
            status, body = api.call("GET", "/api/v1/alerts")
            storage = {a["path"]: a["message"] for a in body["alerts"] if a["kind"] == "storage"}
            assert str(data / "hmonitor.db") in storage and str(data / "history.sqlite") in storage
            assert "disk is full" in storage[str(data / "history.sqlite")]
            # Space comes back: saving works again, without a restart, and the alerts go.
            filler.unlink()
            assert api.call("POST", "/api/v1/notes", {"user": "b", "host": "sim",
                                                      "note": "after"})[0] == 200
            time.sleep(2.5)  # a round stores the history again
            body = api.call("GET", "/api/v1/alerts")[1]
            assert [a for a in body["alerts"] if a["kind"] == "storage"] == []
        finally:
            web.terminate()
            out, _ = web.communicate(timeout=20)
            agent.stop()
    assert web.returncode == 0, out
    assert "Traceback" not in out, out
    full_lines = [line for line in out.splitlines() if "disk is full" in line]
    # One line per minute per file at most (notes, history), not one per round or request.
    assert 1 <= len(full_lines) <= 4, "\n".join(full_lines)
    assert "writes work again" in out
