"""Shell completion: the script `hmonitor-ctl completion bash` prints, run by a real bash as
it would complete a user's words."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest

from hmonitor.ctl.cli import build_parser, main
from hmonitor.ctl.completion import bash_script, command_tree, zsh_script


def complete(*words: str) -> list[str]:
    """What bash offers for the last word of ``hmonitor-ctl words...``."""
    line = " ".join(f"'{w}'" for w in ("hmonitor-ctl", *words))
    program = (f"{bash_script(build_parser())}\nCOMP_WORDS=({line}); "
               f"COMP_CWORD={len(words)}; _hmonitor_ctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                         check=True).stdout
    return [w for w in out.splitlines() if w]


def test_commands_options_and_choices() -> None:
    assert {"status", "free", "wait", "users", "top", "notes", "notice", "history",
            "completion", "--url", "--agent"} <= set(complete(""))
    assert complete("fr") == ["free"]
    assert set(complete("free", "--m")) == {"--min-mem", "--max-util"}
    assert "--env" in complete("wait", "-n", "2", "--")
    assert complete("history", "gpu01", "0", "--metric", "te") == ["temp"]
    assert complete("--color", "n") == ["never"]
    assert complete("top", "--sort", "") == ["host", "util", "mem", "user"]
    assert complete("sub") == ["subscribe", "subscriptions"]
    assert set(complete("subscribe", "-n", "2", "--")) >= {"--min-mem", "--host", "--email",
                                                          "--user", "--json"}
    assert "--minutes" in complete("silence", "host_down:gpu01", "--")
    assert set(complete("alerts", "--a")) == {"--all", "--agent"}


def test_values_of_options_are_not_taken_for_commands() -> None:
    # "--host status" is a host named status, not the status command.
    assert "--env" in complete("free", "--host", "status", "--e")
    assert complete("free", "--host", "") == []  # a host name: nothing to offer
    assert complete("notes", "")[:3] == ["list", "set", "delete"]
    assert "--host" in complete("notes", "list", "--")


def test_every_command_of_the_parser_is_completed() -> None:
    tree = command_tree(build_parser())
    for path, command in tree.items():
        if path:
            offered = complete(*path.split(), "")
            assert set(command.subcommands + command.options) == set(offered), path


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_loads_its_script() -> None:
    script = zsh_script(build_parser())
    subprocess.run(["zsh", "-f", "-c", f"{script}\nwhence -w _hmonitor_ctl"], check=True,
                   capture_output=True)


def test_the_command_prints_scripts_and_json() -> None:
    out = io.StringIO()
    assert main(["completion", "bash"], env={}, out=out) == 0
    assert out.getvalue().rstrip().endswith("complete -F _hmonitor_ctl hmonitor-ctl")
    out = io.StringIO()
    assert main(["completion", "zsh"], env={}, out=out) == 0
    assert "bashcompinit" in out.getvalue()
    out = io.StringIO()
    assert main(["completion", "--json"], env={}, out=out) == 0
    tree = json.loads(out.getvalue())
    assert "free" in tree["hmonitor-ctl"]["subcommands"]
    assert tree["history"]["choices"]["--metric"] == ["util", "mem", "mem_total", "temp", "fan"]
