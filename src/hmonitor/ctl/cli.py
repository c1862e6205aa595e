"""``hmonitor-ctl``: the parser and ``main()``. Each command is a subparser here and a function
in commands.py."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from hmonitor import __version__
from hmonitor.ctl import commands, notify_commands
from hmonitor.ctl.commands import Ctx, parse_since
from hmonitor.ctl.completion import bash_script, command_tree, tree_json, zsh_script
from hmonitor.ctl.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT, CtlError
from hmonitor.ctl.render import use_color
from hmonitor.ctl.units import parse_duration, parse_size
from hmonitor.rules import FREE_UTIL_PCT

__all__ = ["build_parser", "main"]

Command = Callable[[Ctx, argparse.Namespace], int]

EPILOG = """\
Connects to the dashboard at $HMONITOR_URL with $HMONITOR_TOKEN (or ~/.config/hmonitor/ctl.ini),
or straight to agents with --agent. Exit codes: 0 done, 1 nothing matched, 2 usage or config,
3 unreachable, 4 token rejected, 5 unknown host, GPU, note, alert or subscription, 124 wait
timed out. See docs/ctl.md.
"""


def _typed(parse: Callable[[str], float], what: str, low: float = 0.0,
           high: float | None = None) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if value < low or (high is not None and value > high):
            span = f"{low:g} to {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{what} must be {span}, not {text!r}")
        return value

    return convert


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 up, not {text!r}")
    return int(text)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of minutes above 0, not {text!r}")
    return value


def _whole(text: str) -> int:
    """A whole number the dashboard judges (a subscription's GPUs: 1 to 64 there)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _connection_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (SUPPRESS: a later parser must not reset
    what an earlier one read)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--url", default=argparse.SUPPRESS,
                   help="the dashboard, e.g. http://monitor:5000 [env HMONITOR_URL]")
    g.add_argument("--agent", action="append", default=argparse.SUPPRESS,
                   metavar="[NAME=]HOST:PORT",
                   help="ask this agent directly, no dashboard (repeat for more)")
    g.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                   help="config file [env HMONITOR_CONFIG; default ~/.config/hmonitor/ctl.ini]")
    g.add_argument("--request-timeout", type=_typed(float, "--request-timeout", 0.1),
                   default=argparse.SUPPRESS, metavar="S",
                   help="seconds to wait for each answer [env HMONITOR_TIMEOUT; default 10]")
    g.add_argument("--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS,
                   help="colour the output: auto (a terminal without NO_COLOR), always, never")
    return p


def _gpu_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-mem", type=_size, default=0, metavar="SIZE",
                   help="at least this much memory free, e.g. 40G (binary units; a plain "
                   "number is GiB)")
    p.add_argument("--max-util", type=_typed(float, "--max-util", 0, 100), default=None,
                   metavar="PCT", help=f"utilization under PCT %% (default {FREE_UTIL_PCT}, "
                   "the dashboard's rule)")
    p.add_argument("--host", metavar="PATTERN",
                   help="only hosts whose name (or hostname) matches this glob, e.g. 'gpu0*'")


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="hmonitor-ctl", parents=[common], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The GPU cluster from a terminal: status, free GPUs, wait for GPUs, users, "
        "a live top, notes, history, alerts, free-GPU subscriptions.")
    parser.add_argument("--version", action="version", version=f"hmonitor-ctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, text: str, json_opt: bool = True
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        if json_opt:
            p.add_argument("--json", action="store_true", help="print JSON (docs/ctl.md)")
        return p

    command("status", commands.cmd_status,
            "hosts up and down (with why), GPUs free and busy, current alerts")

    p = command("free", commands.cmd_free, "free GPUs as host:gpu lines, best first")
    _gpu_filters(p)
    p.add_argument("-n", type=_count, metavar="K",
                   help="at most K GPUs; with --env, K GPUs on one host (default 1)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--env", action="store_true",
                       help="print export lines (HMONITOR_HOST, CUDA_VISIBLE_DEVICES) for one "
                       "host, for eval")
    shown.add_argument("-l", "--long", action="store_true",
                       help="with model, free memory, utilization, temperature")

    p = command("wait", commands.cmd_wait,
                "wait until K GPUs on one host are free, then print them")
    _gpu_filters(p)
    p.add_argument("-n", type=_count, default=1, metavar="K", help="GPUs wanted (default 1)")
    p.add_argument("--timeout", type=_typed(parse_duration, "--timeout"), metavar="T",
                   help=f"give up after T (90s, 30m, 2h; exit {EXIT_TIMEOUT}); default: wait "
                   "for ever")
    p.add_argument("--interval", type=_typed(parse_duration, "--interval", 0.05), default=5.0,
                   metavar="T", help="look again every T (default 5s)")
    p.add_argument("--env", action="store_true",
                   help="print export lines (HMONITOR_HOST, CUDA_VISIBLE_DEVICES) for eval")

    command("users", commands.cmd_users,
            "who holds which GPUs now, account expiry, GPU-hours (1, 7, 30 days)")

    p = command("top", commands.cmd_top, "a live full-screen view of every GPU (q quits)")
    p.add_argument("--interval", type=_typed(parse_duration, "--interval", 0.1), default=2.0,
                   metavar="T", help="refresh every T (default 2s)")
    p.add_argument("--sort", choices=("host", "util", "mem", "user"), default="host",
                   help="initial order (keys h, u, m, w change it)")
    p.add_argument("--filter", metavar="TEXT", help="only rows with TEXT in host, model, "
                   "user or state (key / changes it)")
    p.add_argument("--free", action="store_true", help="only free GPUs (key f toggles)")
    p.add_argument("--once", action="store_true", help="print one screen and exit")

    # --json also after the action; SUPPRESS, so "notes --json list" keeps it.
    action_json = argparse.ArgumentParser(add_help=False, parents=[common])
    action_json.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                             help="print JSON (docs/ctl.md)")
    p = command("notes", commands.cmd_notes, "the admins' notes per user and host: list, set, "
                "delete")
    p.add_argument("--host", help="only this host's notes")
    notes = p.add_subparsers(dest="notes_action", metavar="ACTION")
    n = notes.add_parser("list", parents=[action_json], help="list notes (the default)")
    n.add_argument("--host", default=argparse.SUPPRESS, help="only this host's notes")
    n = notes.add_parser("set", parents=[action_json], help="add or replace USER@HOST's note")
    n.add_argument("who", metavar="USER@HOST")
    n.add_argument("text", nargs="+", metavar="TEXT")
    n = notes.add_parser("delete", parents=[action_json], help="remove USER@HOST's note")
    n.add_argument("who", metavar="USER@HOST")

    p = command("notice", commands.cmd_notice, "the notice board: show, set or clear")
    notice = p.add_subparsers(dest="notice_action", metavar="ACTION")
    n = notice.add_parser("set", parents=[action_json], help="show TEXT on every page")
    n.add_argument("text", nargs="+", metavar="TEXT")
    notice.add_parser("clear", parents=[action_json], help="remove the notice")

    p = command("history", commands.cmd_history,
                "one GPU's history as a sparkline, CSV or JSON")
    p.add_argument("host", metavar="HOST")
    p.add_argument("gpu", type=int, metavar="GPU", help="the GPU's index")
    p.add_argument("--metric", choices=("util", "mem", "mem_total", "temp", "fan"),
                   default="util", help="default util")
    p.add_argument("--since", type=parse_since, default=6 * 3600.0, metavar="T",
                   help="this far back: 90m, 6h, 10d (default 6h)")
    p.add_argument("--agg", choices=("avg", "max"), default="avg",
                   help="how samples within one point combine (default avg)")
    p.add_argument("--points", type=_count, metavar="N",
                   help="points (default: the terminal's width)")
    p.add_argument("--csv", action="store_true", help="print CSV (time, value)")

    p = command("subscribe", notify_commands.cmd_subscribe,
                "one e-mail from the dashboard when K GPUs are free on one host; then it ends")
    p.add_argument("-n", type=_whole, default=1, metavar="K",
                   help="GPUs wanted on one host (default 1)")
    p.add_argument("--min-mem", type=_size, default=0, metavar="SIZE",
                   help="each with at least this much memory free, e.g. 40G (binary units; a "
                   "plain number is GiB)")
    p.add_argument("--host", metavar="NAME",
                   help="only this host (its name, hostname or a glob naming one); default any")
    to = p.add_mutually_exclusive_group()
    to.add_argument("--email", metavar="ADDR", help="send it here")
    to.add_argument("--user", metavar="NAME",
                    help="send it to NAME's address (settings.py's user_email); default: you")
    command("subscriptions", notify_commands.cmd_subscriptions, "everyone's free-GPU subscriptions")
    p = command("unsubscribe", notify_commands.cmd_unsubscribe, "remove a subscription")
    p.add_argument("id", type=int, metavar="ID", help="its number (hmonitor-ctl subscriptions)")

    p = command("alerts", notify_commands.cmd_alerts,
                "the dashboard's firing alerts with their ids (for silence and ack)")
    p.add_argument("--all", action="store_true", help="also those that ended this week")
    p = command("silence", notify_commands.cmd_silence,
                "tell nobody about an alert for a while (it may fire later)")
    p.add_argument("id", metavar="ID", help="the alert's id, e.g. host_down:gpu01")
    p.add_argument("--minutes", type=_minutes, default=60.0, metavar="M",
                   help="for M minutes (default 60; at most 30 days)")
    p = command("unsilence", notify_commands.cmd_unsilence, "end an alert's silence now")
    p.add_argument("id", metavar="ID", help="the alert's id")
    p = command("ack", notify_commands.cmd_ack,
                "acknowledge a firing alert: no more reminders until it ends")
    p.add_argument("id", metavar="ID", help="the alert's id")

    p = command("completion", _completion, "print a shell completion script (bash, zsh)")
    p.add_argument("shell", choices=("bash", "zsh"), nargs="?", default="bash")
    return parser


def _completion(ctx: Ctx, a: argparse.Namespace) -> int:
    parser = build_parser()
    if a.json:
        ctx.dump(tree_json(command_tree(parser)))
    else:
        ctx.out.write(bash_script(parser) if a.shell == "bash" else zsh_script(parser))
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    for name, default in (("url", None), ("agent", None), ("config", None),
                          ("request_timeout", None), ("color", "auto")):
        if not hasattr(args, name):
            setattr(args, name, default)
    ctx = Ctx(env, out, err, use_color(out, args.color, env), args)
    try:
        code: int = args.run(ctx, args)
        out.flush()
        return code
    except CtlError as error:
        print(f"hmonitor-ctl: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (| head): no traceback; stdout pointed at /dev/null so that the
        # interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        ctx.close()
