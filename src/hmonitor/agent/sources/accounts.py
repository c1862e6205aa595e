"""Account expiry from /etc/shadow, as ``ProcInfo.expiration`` (codes in ``hmonitor.wire``).

Unknown when the user is absent or the file unreadable, never for an empty expiry field,
otherwise the expiry as Unix seconds (shadow stores days since 1970-01-01).
"""

from __future__ import annotations

import logging
import os
import threading

from hmonitor.wire import EXPIRATION_NEVER as NEVER
from hmonitor.wire import EXPIRATION_UNKNOWN as UNKNOWN
from hmonitor.wire import EXPIRED_AT_EPOCH

log = logging.getLogger(__name__)

__all__ = ["EXPIRED_AT_EPOCH", "NEVER", "UNKNOWN", "ShadowExpiry", "parse_shadow"]

_SECONDS_PER_DAY = 86400
_UINT64_MAX = (1 << 64) - 1
_MAX_DAYS_DIGITS = len(str(_UINT64_MAX // _SECONDS_PER_DAY))
_EXPIRE_FIELD = 7  # name:password:lastchg:min:max:warn:inactive:expire:reserved


def _parse_expire(raw: str) -> int | None:
    """One expiry field -> expiration, or None when the field is malformed."""
    raw = raw.strip()
    if not raw:
        return NEVER
    # glibc reads "-1" as "field empty" (putspent writes it back as empty), so it means never.
    if raw == "-1":
        return NEVER
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"
    # ProcInfo.expiration is uint64: a larger value would fail the whole reply. The length
    # check first also keeps int() under Python's limit on digits.
    if len(digits) > _MAX_DAYS_DIGITS or int(digits) * _SECONDS_PER_DAY > _UINT64_MAX:
        return None
    days = int(digits)
    return days * _SECONDS_PER_DAY if days > 0 else EXPIRED_AT_EPOCH


def parse_shadow(text: str) -> dict[str, int]:
    """Map each username in shadow(5) text to its expiration; bad lines are skipped."""
    result: dict[str, int] = {}
    # "\n" only, as getspent(3): str.splitlines() also splits at \f, \x1c, \x85, U+2028...
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(":")
        if len(fields) <= _EXPIRE_FIELD:
            continue
        name = fields[0]
        # "+"/"-" lines are NIS compat markers, not accounts.
        if not name or name[0] in "+-":
            continue
        expiration = _parse_expire(fields[_EXPIRE_FIELD])
        if expiration is None:
            continue
        # getspnam() returns the first entry for a name; do the same.
        result.setdefault(name, expiration)
    return result


class ShadowExpiry:
    """Cached view of a shadow file, re-read only when the file changes."""

    def __init__(self, path: str | os.PathLike[str] = "/etc/shadow") -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._expirations: dict[str, int] = {}
        # True while the file is unreadable and that has been logged, so we log once per outage.
        self._warned = False

    @property
    def path(self) -> str:
        return self._path

    def refresh(self) -> None:
        """Re-read the file if its (inode, size, mtime) changed; never raises."""
        with self._lock:
            try:
                st = os.stat(self._path)
                # Nanosecond mtime catches edits within the same second; the inode catches
                # the rename-into-place that shadow tools do.
                signature = (st.st_ino, st.st_size, st.st_mtime_ns)
                if signature == self._signature:
                    return
                with open(self._path, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
            except OSError as exc:
                self._unreadable(exc)
                return
            self._expirations = parse_shadow(text)
            self._signature = signature
            if self._warned:
                log.info("%s is readable again", self._path)
            self._warned = False
            log.debug("read %d accounts from %s", len(self._expirations), self._path)

    def _unreadable(self, exc: OSError) -> None:
        self._expirations = {}
        # Forget the signature so the next refresh tries again (e.g. after a chgrp).
        self._signature = None
        if self._warned:
            return
        self._warned = True
        if isinstance(exc, PermissionError):
            log.warning(
                "cannot read %s (%s): account expirations are reported as unknown; "
                "add the agent's user to group 'shadow' (usermod -aG shadow USER) and restart it",
                self._path,
                exc.strerror or exc,
            )
        else:
            log.warning(
                "cannot read %s (%s): account expirations are reported as unknown",
                self._path,
                exc.strerror or exc,
            )

    def expiration(self, username: str) -> int:
        """0 unknown, 1 never expires, else the expiry as Unix seconds."""
        return self._expirations.get(username, UNKNOWN)
