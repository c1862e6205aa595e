"""``hmonitor-web``: settings errors, and a real run under waitress with SIGHUP and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from webkit import TOKEN, write_settings

from hmonitor.web.cli import main


def test_malformed_settings_exit_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.py"
    path.write_text('servers = {"a": "10.0.0.1:9203"}\ntokn = "x"\n')
    assert main(["--settings", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hmonitor-web: ")
    assert str(path) in err and "token" in err
    assert "Traceback" not in err


def test_missing_settings_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # settings.py is looked for in the current directory
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "settings.py" in err and "no such settings file" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), None


def _wait(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_serves_with_waitress_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    closed = _free_port()  # nothing listens there: the host shows as down, which is fine here
    settings = write_settings(tmp_path / "conf", {"a": f"127.0.0.1:{closed}"}, interval=60)
    data = tmp_path / "data"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmonitor.web.cli", "--settings", str(settings),
         "--addr", "127.0.0.1", "--port", str(port), "--data-dir", str(data), "--threads", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(f"{base}/api/v1/hosts")[0] == 200, "the dashboard to answer")
        _, headers, body = _get(f"{base}/api/v1/hosts")
        assert headers.get("Server") == "hmonitor", "served by waitress, not Flask's dev server"
        assert [h["name"] for h in body["hosts"]] == ["a"]
        assert (data / "hmonitor.db").is_file() and (data / "secret.key").is_file()

        write_settings(tmp_path / "conf", {"a": f"127.0.0.1:{closed}",
                                           "b": f"127.0.0.1:{closed}"}, interval=60)
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: [h["name"] for h in _get(f"{base}/api/v1/hosts")[2]["hosts"]]
              == ["a", "b"], "SIGHUP to add host b")

        # A broken file on SIGHUP is logged and changes nothing.
        settings.write_text("servers = 5\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
        assert len(_get(f"{base}/api/v1/hosts")[2]["hosts"]) == 2

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        out = proc.stdout.read() if proc.stdout else ""
        assert "reloaded servers: 2 hosts; added: b" in out
        assert "settings not reloaded" in out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_big_request_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    # Issue 7 item 12: an authenticated 100 MB note was parsed before its length was checked.
    import http.client  # noqa: PLC0415

    settings = write_settings(tmp_path / "conf", {"a": f"127.0.0.1:{_free_port()}"},
                              interval=60, history_addr=f"127.0.0.1:{_free_port()}")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmonitor.web.cli", "--settings", str(settings),
         "--addr", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{port}/api/v1/hosts")[0] == 200, "the dashboard")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/api/v1/notes")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(100 * 1024 * 1024))
        conn.endheaders()
        conn.send(b'{"user": "a", "host": "b", "note": "' + b"x" * 65536)  # and no more
        resp = conn.getresponse()
        assert resp.status == 413
        conn.close()
        # Within the cap, a note is saved as usual.
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/notes", method="POST",
            data=json.dumps({"user": "a", "host": "b", "note": "x" * 2000}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as ok:
            assert ok.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
