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


def test_security_doc_states_the_limits_the_code_applies() -> None:
    from hmonitor.web.app import MAX_BODY_BYTES  # noqa: PLC0415
    from hmonitor.web.bounds import LIMITS  # noqa: PLC0415
    from hmonitor.web.settings import DEFAULT_FAILED_LOGIN_LIMIT  # noqa: PLC0415

    doc = " ".join((ROOT / "docs" / "security.md").read_text().split())
    assert f"names, users and commands to {LIMITS.name} characters" in doc
    assert f"mount points to {LIMITS.path}" in doc and f"error texts to {LIMITS.error:,}" in doc
    assert f"at most {LIMITS.gpus} GPUs per host, {LIMITS.procs} processes per GPU" in doc
    assert f"and {LIMITS.disks} disks" in doc
    assert f"bodies over {MAX_BODY_BYTES // 1024} KiB" in doc
    assert f"(default `{DEFAULT_FAILED_LOGIN_LIMIT}`" in doc
