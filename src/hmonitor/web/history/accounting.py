"""Accounting: GPU-hours and GiB-hours per user over windows, and the processes holding an
idle GPU for long (the idle rule)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._core import _Core
from ._layout import (
    HOUR,
    MINUTE,
    USER_LEVELS,
    _ceil_to,
    _floor_to,
    _idle_since,
    _ms,
)
from .backend import (
    IdleHog,
    UsageTotals,
)

log = logging.getLogger(__name__)


class _Accounting(_Core):
    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]:
        """Per user, per window w: GPU-hours and GiB-hours over [now - w, now).

        A sample counts the time since its host's previous sample, capped at 3 intervals (so a
        gap adds at most that); users sharing a GPU in a sample split it equally. Rolled-up
        history counts whole minutes (hours, past the minute level's retention) that start in
        the window; the last minutes, not rolled up yet, count their rounds in the window.
        """
        now_ms = _ms(now)
        with self._read() as (conn, snap):
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
            totals: dict[int, dict[float, list[float]]] = {}
            for window in windows:
                since = now_ms - _ms(window)
                pieces: list[tuple[int, int, int]] = []
                for src, lo, hi in self._plan(snap, USER_LEVELS, since, now_ms, 1):
                    # Hour rows are complete once they end before coarse_wm.
                    whole_lo = _ceil_to(lo, HOUR)
                    whole_hi = _floor_to(min(hi, snap.coarse_wm or hi), HOUR)
                    if src == MINUTE and whole_lo < whole_hi:
                        # Whole hours from the hour rows: 60x fewer.
                        pieces += [(MINUTE, whole_hi, hi), (HOUR, whole_lo, whole_hi),
                                   (MINUTE, lo, whole_lo)]
                    else:
                        pieces.append((src, lo, hi))
                for src, lo, hi in pieces:
                    if lo >= hi:
                        continue
                    if src == 0:  # not rolled up yet: the head's per-round sums
                        query = (
                            "SELECT uid, SUM(gpu_s), SUM(gib_s) FROM h_user"
                            " WHERE t >= ? AND t < ? GROUP BY uid"
                        )
                        args: tuple[int, ...] = (lo, hi)
                    else:
                        query = (
                            "SELECT uid, SUM(gpu_s), SUM(gib_s) FROM user_roll"
                            " WHERE lvl = ? AND t >= ? AND t < ? GROUP BY uid"
                        )
                        args = (src, lo, hi)
                    for uid, g, m in conn.execute(query, args):
                        acc = totals.setdefault(uid, {}).setdefault(window, [0.0, 0.0])
                        acc[0] += g
                        acc[1] += m
        return {
            users.get(uid, f"#{uid}"): {
                w: UsageTotals(*(x / 3600 for x in per.get(w, (0.0, 0.0)))) for w in windows
            }
            for uid, per in sorted(totals.items())
        }

    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]:
        """Processes present in every sample of their host for more than `min_seconds` while
        their GPU's utilization stayed below `util_threshold`, up to the latest sample.

        Idle means util < threshold (a sample at exactly the threshold is busy); a hog needs
        latest - since > min_seconds (exactly min_seconds is not yet one). The run starts at the
        first sample after the last busy one, or at the process's first sample, whichever is
        later; a down round or a gap over 3 intervals restarts it. The host's latest sample must
        be within 3 intervals of `now`.
        """
        now_ms = _ms(now)
        min_ms = min_seconds * 1000
        with self._read() as (conn, _):
            procs = conn.execute(
                "SELECT lp.gid, lp.pid, lp.start, lh.t, h.name, g.idx, u.name, b.name,"
                " coalesce(p.mem, 0) FROM live_proc lp JOIN gpu g ON g.gid = lp.gid"
                " JOIN live_host lh ON lh.hid = g.hid JOIN host h ON h.hid = g.hid"
                " JOIN user u ON u.uid = lp.uid JOIN bname b ON b.bid = lp.bid"
                " LEFT JOIN h_proc p ON p.t = lh.t AND p.gid = lp.gid AND p.pid = lp.pid"
                " WHERE lh.run_start IS NOT NULL AND lh.t >= ? AND lh.t - lp.start > ?",
                (now_ms - self._cap_ms, min_ms),
            ).fetchall()
            if not procs:
                return []
            stacks = self._stacks_for(conn, {int(r[0]) for r in procs})
        hogs = []
        for gid, pid, start, last, host, idx, user, bname, mem in procs:
            gpu_since = _idle_since(stacks.get(gid, []), util_threshold)
            if gpu_since is None:
                continue
            since = max(start, gpu_since)
            if last - since > min_ms:
                hogs.append(IdleHog(host, idx, pid, user, bname, mem, since / 1000,
                                    (last - since) / 1000))
        hogs.sort(key=lambda h: (h.since, h.host, h.gpu, h.pid))
        return hogs
