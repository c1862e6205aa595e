"""Accounting: GPU-hours and GiB-hours per user and per Slurm job over windows, and the
processes holding an idle GPU for long (the idle rule)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._core import _Core
from ._layout import (
    USER_LEVELS,
    _idle_since,
    _ms,
)
from .backend import (
    IdleHog,
    JobUsage,
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
                for src, lo, hi in self._acct_pieces(snap, USER_LEVELS, since, now_ms):
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

    def job_usage(self, now: float, window: float, limit: int = 200) -> list[JobUsage]:
        """Slurm jobs with samples in [now - window, now), most GPU-hours first, at most `limit`:
        per job and user, GPU-hours and GiB-hours in the window, counted as `user_usage` counts
        them. A GPU's share of a user is split equally between that user's jobs on it (its
        processes outside a job count as one more), so GPUs shared by two jobs, of one user or
        two, count half for each, and a user's jobs never add up to more than the user. Processes
        without a job count for no job. first_seen and last_seen are the job's first and last
        samples in the history kept (not cut to the window: a job running since last week shows
        it), hosts those it ran on.
        """
        now_ms = _ms(now)
        since = now_ms - _ms(window)
        with self._read() as (conn, snap):
            totals: dict[tuple[int, int], list[float]] = {}  # gpu_s, gib_s, first, last
            for src, lo, hi in self._acct_pieces(snap, USER_LEVELS, since, now_ms):
                if src == 0:  # not rolled up yet: the head's per-round sums
                    query = ("SELECT job, uid, SUM(gpu_s), SUM(gib_s), MIN(t), MAX(t) FROM h_job"
                             " WHERE t >= ? AND t < ? GROUP BY job, uid")
                    args: tuple[int, ...] = (lo, hi)
                else:
                    query = ("SELECT job, uid, SUM(gpu_s), SUM(gib_s), MIN(t), MAX(t) FROM"
                             " job_roll WHERE lvl = ? AND t >= ? AND t < ? GROUP BY job, uid")
                    args = (src, lo, hi)
                for job, uid, g, m, first, last in conn.execute(query, args):
                    acc = totals.get((job, uid))
                    if acc is None:
                        totals[(job, uid)] = [g, m, first, last]
                    else:
                        acc[0] += g
                        acc[1] += m
                        acc[2] = min(acc[2], first)
                        acc[3] = max(acc[3], last)
            top = sorted(totals.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
            top = top[: max(0, limit)]
            if not top:
                return []
            # Where and when: rolled-up rounds in job_seen, the others (a few minutes) in h_job.
            seen: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
            for job, uid, hid, first, last in conn.execute(
                "SELECT job, uid, hid, MIN(t), MAX(t) FROM h_job GROUP BY job, uid, hid"
            ):
                seen.setdefault((job, uid), []).append((hid, first, last))
            for key, _ in top:
                seen.setdefault(key, []).extend(conn.execute(
                    "SELECT hid, MIN(first), MAX(last) FROM job_seen WHERE job = ? AND uid = ?"
                    " GROUP BY hid", key))
            hosts = {int(h): str(n) for h, n in conn.execute("SELECT hid, name FROM host")}
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
        out = []
        for (job, uid), (g, m, t_lo, t_hi) in top:
            where = seen[(job, uid)]
            # Without where (retention half way): the window's rows tell.
            first = min((w[1] for w in where), default=t_lo)
            last = max((w[2] for w in where), default=t_hi)
            names = tuple(sorted({hosts.get(w[0], f"#{w[0]}") for w in where}))
            out.append(JobUsage(job, users.get(uid, f"#{uid}"), g / 3600, m / 3600, first / 1000,
                                last / 1000, names))
        return out

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
