"""Shell completion scripts made from the argparse parser itself, so they list exactly the
commands and options the client has (no extra dependency): bash, and zsh through its bash
compatibility (``bashcompinit``)."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Command", "bash_script", "command_tree", "tree_json", "zsh_script"]

FUNC = "_hmonitor_ctl"


@dataclass
class Command:
    options: list[str] = field(default_factory=list)
    takes_value: list[str] = field(default_factory=list)  # options followed by a value
    choices: dict[str, list[str]] = field(default_factory=dict)  # option -> its values
    subcommands: list[str] = field(default_factory=list)


def command_tree(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Command]:
    """Command path ("" for the top, "notes set") -> what may follow it."""
    tree: dict[str, Command] = {}
    here = Command()
    tree[prefix] = here
    for action in parser._actions:  # argparse has no public way to list its actions
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                here.subcommands.append(name)
                tree.update(command_tree(sub, f"{prefix} {name}".strip()))
            continue
        if not action.option_strings:
            continue
        here.options += action.option_strings
        if action.nargs != 0:
            here.takes_value += action.option_strings
            if action.choices:
                for opt in action.option_strings:
                    here.choices[opt] = [str(c) for c in action.choices]
    return tree


def tree_json(tree: dict[str, Command]) -> dict[str, Any]:
    return {path or "hmonitor-ctl": {"subcommands": c.subcommands, "options": c.options,
                                     "choices": c.choices} for path, c in tree.items()}


def _words(items: list[str]) -> str:
    return shlex.quote(" ".join(items))


def bash_script(parser: argparse.ArgumentParser, prog: str = "hmonitor-ctl") -> str:
    tree = command_tree(parser)
    paths = [p for p in tree if p]
    with_value = sorted({o for c in tree.values() for o in c.takes_value})
    choices = {o: v for c in tree.values() for o, v in c.choices.items()}
    prev_cases = "".join(
        f"        {o}) COMPREPLY=($(compgen -W {_words(v)} -- \"$cur\")); return;;\n"
        for o, v in sorted(choices.items()))
    cmd_cases = "".join(
        f"        {shlex.quote(path)}) words={_words(c.subcommands + c.options)};;\n"
        for path, c in tree.items() if path)
    top = tree[""]
    return f"""# {prog} completion for bash; made by `{prog} completion bash`.
# Install: {prog} completion bash > ~/.local/share/bash-completion/completions/{prog}
{FUNC}() {{
    local cur prev cmd next w i words
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in -*) continue;; esac
        case "${{COMP_WORDS[i-1]}}" in {"|".join(with_value)}) continue;; esac
        next="${{cmd:+$cmd }}$w"
        case "$next" in {"|".join(shlex.quote(p) for p in paths)}) cmd="$next";; esac
    done
    case "$prev" in
{prev_cases}        --config) COMPREPLY=($(compgen -f -- "$cur")); return;;
        {"|".join(o for o in with_value if o not in choices and o != "--config")}) return;;
    esac
    case "$cmd" in
        "") words={_words(top.subcommands + top.options)};;
{cmd_cases}    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F {FUNC} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser, prog: str = "hmonitor-ctl") -> str:
    body = bash_script(parser, prog).split("\n", 2)[2]
    return f"""# {prog} completion for zsh (through bashcompinit); made by `{prog} completion zsh`.
# Install: add to ~/.zshrc:  eval "$({prog} completion zsh)"
(( $+functions[compdef] )) || {{ autoload -U +X compinit && compinit; }}
autoload -U +X bashcompinit && bashcompinit
{body}"""
