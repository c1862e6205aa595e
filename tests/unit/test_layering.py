"""The arrows point one way: what each part loads, checked in a fresh interpreter (``sys.modules``
after the import), and which package imports which, read from the source."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "hmonitor"


def loaded_by(module: str) -> set[str]:
    """Every module a fresh interpreter has loaded after importing ``module``."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return set(json.loads(out))


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_the_agent_loads_nothing_of_the_dashboard_nor_flask() -> None:
    loaded = loaded_by("hmonitor.agent.cli")
    assert not {n for n in loaded if n.startswith("hmonitor.web")}
    assert not _top(loaded) & {"flask", "werkzeug", "jinja2", "waitress", "flask_wtf"}
    # /metrics is off unless --metrics-addr: its library is loaded only then (memory)
    assert "prometheus_client" not in _top(loaded)


@pytest.mark.parametrize("module", [
    "hmonitor.web.history", "hmonitor.web.poller", "hmonitor.web.settings",
    "hmonitor.web.reports", "hmonitor.web.rules", "hmonitor.web.notes",
    "hmonitor.web.bounds", "hmonitor.web.hoststate", "hmonitor.web.channels",
])
def test_the_domain_loads_no_flask(module: str) -> None:
    loaded = loaded_by(module)
    assert not _top(loaded) & {"flask", "werkzeug", "waitress", "flask_wtf", "flask_compress"}


def test_the_history_store_loads_no_grpc() -> None:
    assert "grpc" not in _top(loaded_by("hmonitor.web.history.store"))


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("agent", "hmonitor.web"),  # agent and dashboard share only wire, metricfamilies, the stubs
    ("web/pages", "hmonitor.web.api"),  # pages and API import the domain, never each other
    ("web/api", "hmonitor.web.pages"),
    ("web/history", "hmonitor.web.pages"),  # the domain never imports the presentation
    ("web/history", "hmonitor.web.api"),
    ("ctl", "hmonitor.web"),  # the terminal client installs without the dashboard's Flask
    ("ctl", "hmonitor.agent"),  # ... and talks to agents only over the wire
])
def test_no_import_points_the_wrong_way(folder: str, forbidden: str) -> None:
    wrong = {str(p.relative_to(SRC)): sorted(m for m in imports_of(p) if m.startswith(forbidden))
             for p in modules_under(folder)}
    assert {k: v for k, v in wrong.items() if v} == {}


@pytest.mark.parametrize("shared", ["wire.py", "metricfamilies.py", "rules.py", "units.py",
                                    "rpcwords.py"])
def test_shared_modules_import_neither_program(shared: str) -> None:
    # What agent and dashboard share: the wire's rules, HostInfo -> Prometheus families.
    assert not {m for m in imports_of(SRC / shared) if m.startswith(("hmonitor.agent",
                                                                       "hmonitor.web"))}


def test_the_metric_families_load_neither_program_nor_flask_nor_grpc() -> None:
    loaded = loaded_by("hmonitor.metricfamilies")
    assert not {n for n in loaded if n.startswith(("hmonitor.agent", "hmonitor.web"))}
    assert not _top(loaded) & {"flask", "werkzeug", "grpc"}


def test_the_terminal_client_loads_neither_program_nor_flask_nor_grpc() -> None:
    # A plain `pip install hmonitor` runs it; talking to a dashboard loads no gRPC (direct
    # mode imports it when asked), so a command in a loop starts quickly.
    loaded = loaded_by("hmonitor.ctl.cli")
    assert not {n for n in loaded if n.startswith(("hmonitor.agent", "hmonitor.web"))}
    assert not _top(loaded) & {"flask", "werkzeug", "jinja2", "waitress", "grpc", "curses"}


def test_the_sources_never_import_the_server() -> None:
    for path in modules_under("agent/sources"):
        assert not {m for m in imports_of(path) if m.startswith(("hmonitor.agent.server",
                                                                  "hmonitor.agent.cli"))}, path


def test_no_module_is_over_about_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if "_pb" not in p.parts and (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
