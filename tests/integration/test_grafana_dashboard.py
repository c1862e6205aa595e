"""deploy/grafana/hmonitor.json: valid JSON, one datasource and a unique id per panel, and every
PromQL expression (panels and template variables) uses only metrics the real agent exports and
parses with promtool."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import host_info
from fakenvml import FakeGpu, FakeProc
from promtext import names, samples
from test_agent_metrics_http import MetricsAgent, get

from hmonitor.metricfamilies import HostFamilies

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "hmonitor.json"
PROMTOOL = shutil.which("promtool")
GIB = 1 << 30

# PromQL words that look like identifiers but name no metric.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana label_values(...) query): identifiers
    outside strings, label matchers {...}, ranges [...] and grouping clauses, that are not a
    function call or a keyword."""
    call = re.fullmatch(r"\s*label_values\((.*)\)\s*", expr, re.S)
    if call:  # label_values(selector, label) or label_values(label)
        selector, comma, _ = call.group(1).rpartition(",")
        return metric_names(selector) if comma else set()
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = _GROUPING.sub(" ", text)
    found = set()
    for m in _IDENT.finditer(text):
        name, opens = m.group(1), m.group(2)
        if opens or name.lower() in _KEYWORDS:
            continue
        found.add(name)
    return found


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum by (user) (hmonitor_gpu_user_memory_bytes{host=~"$host", user!="x"})',
     {"hmonitor_gpu_user_memory_bytes"}),
    ('up{job="hmonitor"} == 0', {"up"}),
    ("max_over_time(a_b[$__rate_interval]) / on (host, gpu) group_left(model) c:d offset 5m",
     {"a_b", "c:d"}),
    ("min by (user) (hmonitor_account_expiry_timestamp_seconds) - time()",
     {"hmonitor_account_expiry_timestamp_seconds"}),
    ("count(x > 1e9) or vector(0) * 2.5", {"x"}),
    ("sum(rate(a[5m])) without (gpu) and ignoring(mount) b", {"a", "b"}),
    ('label_values(hmonitor_gpu_up{host=~"$host"}, gpu)', {"hmonitor_gpu_up"}),
    ("label_values(host)", set()),
])
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from all_panels(p.get("panels", []))


def panel_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in all_panels(dashboard()["panels"])
            for t in p.get("targets", [])]


def variable_queries() -> list[tuple[str, str]]:
    out = []
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append((v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def test_layout() -> None:
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        for t in p.get("targets", []):
            assert t["expr"].strip() and t["refId"], p["title"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Cluster", "Host", "GPU", "User"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert set(variables) == {"DS_PROMETHEUS", "host", "gpu", "user"}
    # Hosts from a family the agents and the dashboard's /metrics both serve, for every up host
    host_metric = re.fullmatch(r"label_values\((\w+), host\)", dict(variable_queries())["host"])
    assert host_metric is not None
    info = host_info("h", [])  # a host without GPUs, as every agent reports its memory
    info.mem_total, info.mem_used = 64 * GIB, GIB
    both = HostFamilies(dcgm=False, extra_labels=["host"])
    both.add(info, ("h",))
    assert host_metric.group(1) in {f.name for f in both.filled()}
    assert all(v["datasource"]["uid"] == "${DS_PROMETHEUS}"
               for v in variables.values() if v["type"] == "query")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> set[str]:
    """The metric names a real agent exports with a GPU, processes, a user with an account
    expiry, disks and --metrics-pids."""
    work = tmp_path_factory.mktemp("grafana-agent")
    user = pwd.getpwuid(os.getuid()).pw_name
    expires_day = int(time.time() // 86400) + 30
    shadow = work / "shadow"
    shadow.write_text(f"{user}:*:19000:0:99999:7::{expires_day}:\n")
    factory = MetricsAgent(work, fake_nvml_lib)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        _, addr = factory(
            [FakeGpu(util=40, mem_used=30 * GIB, fan=50,
                     procs=[FakeProc(sleeper.pid, 20 * GIB, sm_util=30)]),
             FakeGpu(lost="handle")],
            "--metrics-pids", "--shadow", str(shadow), "--fstypes", "ext4,xfs,tmpfs,overlay",
        )
        status, text, _ = get(f"http://{addr}/metrics")
    finally:
        sleeper.kill()
        sleeper.wait()
        for agent, _ in factory.started:
            agent.stop()
    assert status == 200
    found = names(samples(text))
    # what the dashboard shows must really be there in this run
    for name in ("hmonitor_account_expiry_timestamp_seconds", "hmonitor_disk_used_bytes",
                 "hmonitor_process_gpu_memory_bytes", "hmonitor_build_info"):
        assert name in found, f"{name} not exported:\n{text}"
    return found | {"up"}  # Prometheus adds up for every target


def test_every_name_is_exported(exported: set[str]) -> None:
    used: dict[str, set[str]] = {}
    for where, expr in panel_exprs() + variable_queries():
        found = metric_names(expr)
        assert found, f"{where}: no metric in {expr!r}"
        for name in found:
            used.setdefault(name, set()).add(where)
    unknown = {n: sorted(w) for n, w in used.items() if n not in exported}
    assert not unknown, f"not exported by the agent: {unknown}"
    # the native family only (no DCGM_*), and up for hosts up/down
    assert all(n.startswith("hmonitor_") or n == "up" for n in used)


def _substitute(expr: str) -> str:
    """Grafana's variables made concrete for promtool: intervals 5m, the others ".*"."""
    expr = re.sub(r"\$\{?__(?:rate_)?(?:interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)


@pytest.mark.skipif(PROMTOOL is None,
                    reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_expressions_parse_with_promtool(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    exprs = [_substitute(e) for _, e in panel_exprs()]
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"test:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules, indent=1))  # JSON is YAML
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_promtool_check_catches_a_bad_expression(tmp_path: Path) -> None:
    """The check above would notice a broken expression."""
    if PROMTOOL is None:
        pytest.skip("promtool is not installed")
    path = tmp_path / "bad.yml"
    bad = 'sum by (user (hmonitor_gpu_user_memory_bytes{host=~"$host"})'
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": [
        {"record": "test:bad", "expr": _substitute(bad)}]}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode != 0


def alert_exprs() -> dict[str, str]:
    """alert name -> its expr, from deploy/prometheus/alerts.yml (a one-line ``expr:`` or a
    ``expr: |`` block; read by hand: no YAML library among the test tools)."""
    lines = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text().splitlines()
    out: dict[str, str] = {}
    alert = ""
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(": ")
        if key == "- alert":
            alert = value.strip()
        elif line.strip().startswith("expr:"):
            value = line.split("expr:", 1)[1].strip()
            if value == "|":
                indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
                block = []
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) < indent:
                        break
                    block.append(nxt.strip())
                value = " ".join(block)
            out[alert] = value
    return out


def test_alert_rules_use_only_names_we_export(exported: set[str]) -> None:
    """deploy/prometheus/alerts.yml reads what the agents export (and the dashboard's
    hmonitor_host_up, for a Prometheus scraping the dashboard instead)."""
    exprs = alert_exprs()
    assert len(exprs) == 8 and all(exprs.values()), exprs
    dashboard_only = {"hmonitor_host_up"}
    unknown = sorted((alert, name) for alert, expr in exprs.items()
                     for name in metric_names(expr) if name not in exported | dashboard_only)
    assert not unknown, f"alert rules read metrics nobody exports: {unknown}"
    assert all(metric_names(e) for e in exprs.values())
