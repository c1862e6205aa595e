"""docs/ctl.md and the README's recipe say what hmonitor-ctl does."""

from __future__ import annotations

import re
from pathlib import Path

from hmonitor.ctl import errors
from hmonitor.ctl.cli import build_parser
from hmonitor.ctl.completion import command_tree

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ctl.md").read_text()


def test_the_exit_code_table_is_the_codes_the_client_uses() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", DOC, re.MULTILINE))
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert {int(c) for c in table} == codes


def test_every_command_and_option_is_documented() -> None:
    tree = command_tree(build_parser())
    for path, command in tree.items():
        if path:
            assert f"`{path.split()[0]}" in DOC, path
        for option in command.options:
            if option.startswith("--") and option not in ("--help", "--version"):
                assert option in DOC, (path, option)


def test_the_readme_shows_the_recipe_the_integration_test_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From a terminal: hmonitor-ctl", 1)[1].split("\n## ", 1)[0]
    assert 'gpus=$(hmonitor-ctl wait -n 2 --min-mem 40G --env) && eval "$gpus" &&' in section
    assert "(docs/ctl.md)" in section
    test = (ROOT / "tests" / "integration" / "test_ctl.py").read_text()
    assert 'script = f\'gpus=$({wait}) && eval "$gpus" &&' in test
