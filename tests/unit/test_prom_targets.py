"""`python -m hmonitor.web.prom_targets`: file_sd targets from settings.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from webkit import write_settings

from hmonitor.web.prom_targets import main, targets, write_targets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "settings"


def test_one_target_per_server_with_the_metrics_port_and_host_label(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {"gpu01": "10.0.0.1:9203", "gpu02": "gpu02.lab:7000"})
    out = tmp_path / "targets" / "hmonitor.json"
    out.parent.mkdir()
    assert main(["--settings", str(settings), "--metrics-port", "9205", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == [
        {"targets": ["10.0.0.1:9205"], "labels": {"host": "gpu01"}},
        {"targets": ["gpu02.lab:9205"], "labels": {"host": "gpu02"}},
    ]
    assert out.stat().st_mode & 0o777 == 0o644


def test_metrics_port_defaults_to_9205(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {"a": "h:1"})
    out = tmp_path / "t.json"
    assert main(["--settings", str(settings), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["targets"] == ["h:9205"]


def test_ipv6_hosts_keep_their_brackets() -> None:
    assert targets({"v6": "[fd00::1]:9203", "v4": "127.0.0.1:9203"}, 9300) == [
        {"targets": ["[fd00::1]:9300"], "labels": {"host": "v6"}},
        {"targets": ["127.0.0.1:9300"], "labels": {"host": "v4"}},
    ]


def test_the_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hmonitor.json"
    out.write_text("old")
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        assert Path(dst).read_text() == "old"  # the target is untouched until the rename
        assert json.loads(Path(src).read_text()) == [{"targets": ["h:1"], "labels": {"host": "a"}}]
        replaced.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_targets(out, [{"targets": ["h:1"], "labels": {"host": "a"}}])
    assert len(replaced) == 1 and Path(replaced[0][0]).parent == tmp_path
    assert json.loads(out.read_text())[0]["labels"] == {"host": "a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hmonitor.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hmonitor.json"
    out.write_text("old")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_targets(out, [])
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hmonitor.json"]


@pytest.mark.parametrize(("fixture", "words"), [
    ("typo.txt", "intervall"),
    ("syntax_error.txt", "syntax error"),
    ("missing.txt", "no such settings file"),
])
def test_a_bad_settings_file_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fixture: str, words: str) -> None:
    out = tmp_path / "t.json"
    code = main(["--settings", str(FIXTURES / fixture), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and words in err and fixture in err
    assert not out.exists()


def test_a_bad_server_address_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = write_settings(tmp_path, {"v6": "fd00::1:9203"})
    assert main(["--settings", str(settings), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "v6" in err and "bracket" in err


def test_an_unwritable_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = write_settings(tmp_path)
    out = tmp_path / "no-such-dir" / "t.json"
    assert main(["--settings", str(settings), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot write" in err


def test_runs_as_a_module(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, {"gpu01": "[::1]:9203"})
    out = tmp_path / "t.json"
    done = subprocess.run(
        [sys.executable, "-m", "hmonitor.web.prom_targets", "--settings", str(settings),
         "--metrics-port", "9205", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == [{"targets": ["[::1]:9205"], "labels": {"host": "gpu01"}}]
    bad = subprocess.run(
        [sys.executable, "-m", "hmonitor.web.prom_targets", "--settings", str(tmp_path / "nope.py"),
         "--out", str(out)], capture_output=True, text=True, check=False, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "nope.py" in bad.stderr
