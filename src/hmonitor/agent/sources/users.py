"""uid -> user name, falling back to the host's getent for accounts NSS modules provide."""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Above this many cached uids, expired entries are dropped.
_CACHE_PRUNE_AT = 4096


def _child_env() -> dict[str, str] | None:
    """Environment for the host's getent: without the bundle's library path when frozen."""
    if not getattr(sys, "frozen", False):
        return None
    # PyInstaller points LD_LIBRARY_PATH at its bundle and keeps the user's value in *_ORIG;
    # the host's getent must load the host's libc and NSS modules, not ours.
    env = dict(os.environ)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        env.pop("LD_LIBRARY_PATH", None)
    else:
        env["LD_LIBRARY_PATH"] = original
    return env


class UserNames:
    """Cached uid -> name; never raises, the uid as text when no name is known."""

    def __init__(
        self,
        getent: str | None = "getent",
        ttl: float = 300.0,
        timeout: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._getent = getent
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[int, tuple[str | None, float]] = {}
        # After getent hangs or is missing, skip it until then: one slow uid per ttl, not all.
        self._getent_skip_until = float("-inf")

    def name(self, uid: int) -> str:
        now = self._clock()
        cached = self._cache.get(uid)
        if cached is not None and cached[1] > now:
            found = cached[0]
        else:
            found = self._lookup(uid, now)
            if len(self._cache) >= _CACHE_PRUNE_AT:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            # Misses are cached too, so an unknown uid costs one getent per ttl.
            self._cache[uid] = (found, now + self._ttl)
        return found if found is not None else str(uid)

    def _lookup(self, uid: int, now: float) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError, ValueError, TypeError):
            pass
        if uid < 0 or self._getent is None or now < self._getent_skip_until:
            return None
        return self._from_getent(self._getent, uid, now)

    def _from_getent(self, getent: str, uid: int, now: float) -> str | None:
        try:
            proc = subprocess.run(
                [getent, "passwd", str(uid)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self._timeout,
                check=False,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            log.warning(
                "%s passwd %d gave no answer within %s s; not asking again for %s s",
                getent,
                uid,
                self._timeout,
                self._ttl,
            )
            self._getent_skip_until = now + self._ttl
            return None
        except OSError as exc:
            log.warning(
                "cannot run %s (%s): users known only to NSS modules show as numbers",
                getent,
                exc.strerror or exc,
            )
            self._getent_skip_until = now + self._ttl
            return None
        if proc.returncode != 0:
            return None  # 2: no such user
        return name_from_passwd(proc.stdout, uid)


def name_from_passwd(output: bytes, uid: int) -> str | None:
    """The name of the first passwd(5) line in `output` whose uid field is `uid`."""
    # "\n" only, as passwd(5): bytes.splitlines() would also end a line at "\r".
    for line in output.decode("utf-8", errors="replace").split("\n"):
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] and fields[2].strip() == str(uid):
            return fields[0]
    return None
