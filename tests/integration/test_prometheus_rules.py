"""The shipped Prometheus files are valid and the alert rules pass their promtool unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from webkit import write_settings

from hmonitor.web.prom_targets import main as write_prom_targets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=120)


def test_shipped_config_is_valid_as_is() -> None:
    # The targets file is written on the Prometheus server; promtool only warns that it is missing.
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_config_with_generated_targets_checks_without_warnings(tmp_path: Path) -> None:
    conf = tmp_path / "prometheus"
    shutil.copytree(DEPLOY, conf)
    (conf / "targets").mkdir()
    settings = write_settings(tmp_path / "web", {"gpu01": "10.0.0.1:9203", "v6": "[fd00::1]:9203"})
    assert write_prom_targets(["--settings", str(settings), "--metrics-port", "9205",
                               "--out", str(conf / "targets" / "hmonitor.json")]) == 0
    done = promtool("check", "config", "prometheus.yml", cwd=conf)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output and "SUCCESS: 8 rules found" in output


def test_the_config_scrapes_job_hmonitor_from_file_sd() -> None:
    text = (DEPLOY / "prometheus.yml").read_text()
    assert "job_name: hmonitor\n" in text and "- targets/hmonitor.json" in text
    assert "scrape_interval: 15s" in text and "- alerts.yml" in text
    assert "honor_labels: true" in text  # documented for the dashboard's job (commented out)


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = (DEPLOY / "alerts.yml").read_text()
    tests = (DEPLOY / "alerts_test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines()
             if line.strip().startswith("- alert:")]
    assert names == ["HmonitorHostDown", "HmonitorDiskFull", "HmonitorDiskUnavailable",
                     "HmonitorIdleGpuHog",
                     "HmonitorAccountExpiringSoon", "HmonitorGpuTooHot", "HmonitorGpuLost",
                     "HmonitorNvmlFailing"]
    for name in names:
        cases = tests.split(f"alertname: {name}\n")[1:]
        assert cases, f"{name} is never tested"
        assert any(c.lstrip().startswith("exp_alerts:\n") for c in cases), f"{name} never fires"
    # The quiet cases sit beside the firing one: series that must not fire in the same test.
    for quiet in ("89x20", "84x15", "1728000x30", "0.8x70", "0.8x180", "1x10", "1x15"):
        assert quiet in tests


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    # The tests do catch a wrong threshold (they would pass vacuously otherwise).
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path)
    rules = (DEPLOY / "alerts.yml").read_text()
    assert ">= 85" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(">= 85", ">= 84"))
    done = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0


def test_the_docs_list_every_alert_and_the_commands() -> None:
    doc = (ROOT / "docs" / "prometheus.md").read_text()
    rules = (DEPLOY / "alerts.yml").read_text()
    for line in rules.splitlines():
        if line.strip().startswith("- alert:"):
            assert f"`{line.split(':', 1)[1].strip()}`" in doc
    assert "python -m hmonitor.web.prom_targets --settings" in doc
    assert "promtool test rules" in doc and "12239" in doc
