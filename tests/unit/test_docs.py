"""The documentation's examples stay valid."""

from __future__ import annotations

from pathlib import Path

from hmonitor.web.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_settings_load() -> None:
    settings = load_settings(ROOT / "docs" / "settings.example.py")
    assert settings.servers == {"gpu01": "10.1.0.1:9203", "gpu02": "10.1.0.2:9203"}
    assert settings.interval == 10 and settings.timeout == 3


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "exe"):
        assert f"make {target}" in readme and f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
