"""Exit codes and the errors that carry them: every failure reaches the user as one line on
stderr and one of these codes (docs/ctl.md lists them)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NONE = 1  # nothing matched: ``free`` found no GPU that fits
EXIT_USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # the dashboard or every agent could not be reached, or answered nonsense
EXIT_AUTH = 4  # the token was rejected, or too many wrong tokens came from this address
EXIT_NOT_FOUND = 5  # an unknown host, GPU or note
EXIT_TIMEOUT = 124  # ``wait`` gave up: the code GNU timeout uses, so scripts treat both alike
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports SIGINT


class CtlError(Exception):
    """A failure to report in one line, and the exit code that goes with it."""

    exit_code = EXIT_USAGE


class UsageError(CtlError):
    exit_code = EXIT_USAGE


class Unreachable(CtlError):
    exit_code = EXIT_UNREACHABLE


class AuthError(CtlError):
    exit_code = EXIT_AUTH


class NotFound(CtlError):
    exit_code = EXIT_NOT_FOUND


class TimedOut(CtlError):
    exit_code = EXIT_TIMEOUT
