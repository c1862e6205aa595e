"""Reading series: the resolution picked from the window, raw samples from head and chunks,
roll-up levels stitched where a finer one is gone; sparklines for many GPUs in one query."""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Literal

from . import _codec
from ._core import _Core
from ._layout import (
    _DISK_SPECS,
    _GPU_SPECS,
    _HOST_SPECS,
    _K_GPU,
    _K_PROC,
    _LAYOUT,
    CHUNK,
    GPU_LEVELS,
    GPU_USER_LEVELS,
    HOUR,
    MIB,
    _Metric,
    _ms,
    _Snap,
)
from .backend import (
    GPU_METRICS,
    Agg,
)

log = logging.getLogger(__name__)


class _Queries(_Core):
    def _raw(
        self, conn: sqlite3.Connection, snap: _Snap, kind: int, key: int, *, lo: int, hi: int
    ) -> list[tuple[int, ...]]:
        """Raw rows (the blob's columns, t first) of one series with lo <= t < hi."""
        out: list[tuple[int, ...]] = []
        if snap.raw_floor is not None:
            lo = max(lo, snap.raw_floor)
        if lo >= hi:
            return out
        if snap.chunk_hi is not None and lo < snap.chunk_hi:
            for (blob,) in conn.execute(
                "SELECT data FROM chunk WHERE kind = ? AND key = ? AND t0 > ? AND t0 < ?"
                " ORDER BY t0",
                (kind, key, lo - CHUNK, hi),
            ):
                for row in zip(*_codec.decode(blob), strict=True):
                    if lo <= row[0] < hi:
                        out.append(row)
        table, keycol, cols, _ = _LAYOUT[kind]
        out.extend(conn.execute(
            f"SELECT {cols} FROM {table} WHERE t IN"
            f" (SELECT t FROM h_round WHERE t >= ? AND t < ?) AND {keycol} = ?",
            (lo, hi, key),
        ))
        return out

    @staticmethod
    def _first_t(
        conn: sqlite3.Connection, roll: str, keycol: str, coarsest: int, kind: int, key: int
    ) -> int | None:
        """About when a series' data starts (at worst the start of its first hour bucket)."""
        firsts = [
            conn.execute(f"SELECT MIN(t) FROM {roll} WHERE lvl = ? AND {keycol} = ?",
                         (coarsest, key)).fetchone()[0],
            conn.execute("SELECT MIN(t0) FROM chunk WHERE kind = ? AND key = ?",
                         (kind, key)).fetchone()[0],
            conn.execute("SELECT MIN(t) FROM h_round").fetchone()[0],
        ]
        known = [int(t) for t in firsts if t is not None]
        return min(known) if known else None

    @staticmethod
    def _gid(conn: sqlite3.Connection, host: str, gpu: int) -> int | None:
        row = conn.execute(
            "SELECT g.gid FROM gpu g JOIN host h ON h.hid = g.hid WHERE h.name = ? AND g.idx = ?",
            (host, gpu),
        ).fetchone()
        return None if row is None else int(row[0])

    def _series(
        self, conn: sqlite3.Connection, snap: _Snap, m: _Metric, key: int, *,
        since: int, until: int, max_points: int, agg: Agg,
    ) -> tuple[list[float], list[float]]:
        first = self._first_t(conn, m.roll, m.key, m.levels[-1], m.kind, key)
        if first is not None and first > since:
            since = first  # the window starts before the data: spread the points over the data
        if until <= since or max_points < 1:
            return [], []
        npts = max_points
        width = (until - since) / npts
        cnt = [0] * npts
        total = [0.0] * npts
        top = [-math.inf] * npts
        tsum = [0.0] * npts
        finest = self._finest(m.levels, until - since, max_points)
        for src, lo, hi in self._plan(snap, m.levels, since, until, finest):
            if src == 0:
                col = m.col
                scale = m.scale_raw
                for row in self._raw(conn, snap, m.kind, key, lo=lo, hi=hi):
                    if m.only_up and row[1] != 1:
                        continue
                    b = min(int((row[0] - since) / width), npts - 1)
                    v = row[col] * scale
                    cnt[b] += 1
                    total[b] += v
                    top[b] = max(top[b], v)
                    tsum[b] += row[0]
                continue
            for b, n, s, mx, ts in conn.execute(
                f"SELECT CAST((t - ?) / ? AS INTEGER), SUM({m.n}), SUM({m.sum}), MAX({m.max}),"
                f" SUM(min(t + ?, ?) * ({m.n})) FROM {m.roll}"
                f" WHERE lvl = ? AND {m.key} = ? AND t >= ? AND t < ? GROUP BY 1",
                (since, width, src // 2, until - 1, src, key, lo, hi),
            ):
                if not n:
                    continue
                i = min(b, npts - 1)
                cnt[i] += n
                total[i] += s * m.scale_roll
                top[i] = max(top[i], mx * m.scale_roll)
                tsum[i] += ts
        times: list[float] = []
        values: list[float] = []
        for b in range(npts):
            if cnt[b]:
                times.append(tsum[b] / cnt[b] / 1000)
                values.append(total[b] / cnt[b] if agg == "avg" else top[b])
        return times, values

    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """One GPU metric over [since, until): (times, values), time-ordered, <= max_points.

        Units: util %, mem and mem_total bytes (1 MiB resolution once rolled up), temp °C, fan %.
        The window (from where the data starts, if later than `since`) is cut into max_points
        equal stretches; a point is the average (or maximum) of the samples in one, at their
        mean time. Empty stretches give no point.
        """
        spec = _GPU_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(GPU_METRICS)}")
        if agg not in ("avg", "max"):
            raise ValueError(f"agg {agg!r} is not avg or max")
        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return [], []
            return self._series(conn, snap, spec, gid, since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def host_series(
        self, host: str, metric: Literal["up", "rtt"], since: float, until: float, *,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """`up`: fraction of rounds the host answered (0-1); `rtt`: round trip in ms."""
        spec = _HOST_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"host metric {metric!r} is not up or rtt")
        with self._read() as (conn, snap):
            row = conn.execute("SELECT hid FROM host WHERE name = ?", (host,)).fetchone()
            if row is None:
                return [], []
            return self._series(conn, snap, spec, row[0], since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def host_uptime(self, host: str, since: float, until: float) -> float | None:
        """Fraction of the rounds in [since, until) in which the host answered; None if none."""
        _, values = self.host_series(host, "up", since, until, max_points=1)
        return values[0] if values else None

    def disk_series(
        self, host: str, mount: str, since: float, until: float, *, max_points: int = 1000,
        metric: Literal["used", "total"] = "used", agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """Disk usage in bytes (1 MiB resolution once rolled up)."""
        spec = _DISK_SPECS.get(metric)
        if spec is None:
            raise ValueError(f"disk metric {metric!r} is not used or total")
        with self._read() as (conn, snap):
            row = conn.execute(
                "SELECT d.did FROM disk d JOIN host h ON h.hid = d.hid"
                " WHERE h.name = ? AND d.mount = ?", (host, mount),
            ).fetchone()
            if row is None:
                return [], []
            return self._series(conn, snap, spec, row[0], since=_ms(since), until=_ms(until),
                                max_points=max_points, agg=agg)

    def raw_samples(
        self, host: str, gpu: int, since: float, until: float
    ) -> list[tuple[float, int, int, int, int, int]]:
        """Every raw sample still kept: (t, util, mem, mem_total, temp, fan), time-ordered."""
        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return []
            rows = self._raw(conn, snap, _K_GPU, gid, lo=_ms(since), hi=_ms(until))
        rows.sort()
        return [(r[0] / 1000, r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def gpus(self) -> list[tuple[str, int, str]]:
        """(host, GPU index, GPU name) of every GPU ever seen."""
        with self._read() as (conn, _):
            return [(str(h), int(i), str(n)) for h, i, n in conn.execute(
                "SELECT h.name, g.idx, g.name FROM gpu g JOIN host h ON h.hid = g.hid"
                " ORDER BY h.name, g.idx")]

    def sparklines(
        self, window: float, now: float, points: int = 60, hosts: Iterable[str] | None = None,
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        """Per GPU with data in [now - window, now): `util` (%) and `mem` (fraction of total,
        0-1), one value per equal stretch of the window, NaN where there is no data. With
        `hosts`, only their GPUs (the page asks for the panels on screen).

        One grouped query over all GPUs: the coarsest bucket level not longer than a stretch
        (10-minute buckets for 24 h), and the raw head for what is not rolled up yet.
        """
        until = _ms(now)
        since = until - _ms(window)
        if points < 1 or until <= since:
            return {}
        width = (until - since) / points
        finest = 0
        for i, lvl in enumerate(GPU_LEVELS, start=1):
            if lvl <= width:
                finest = i
        # Per GPU, flat per stretch: sample count, util sum, memory sum (MiB), total max (MiB).
        acc: dict[int, tuple[list[float], list[float], list[float], list[float]]] = {}
        last = points - 1
        zero = [0.0] * points

        def absorb(rows: Iterable[tuple[int, int, float, float, float, float]]) -> None:
            for gid, stretch, n, util, mem, total in rows:
                cells = acc.get(gid)
                if cells is None:
                    cells = acc[gid] = (zero[:], zero[:], zero[:], zero[:])
                b = min(stretch, last)
                cells[0][b] += n
                cells[1][b] += util
                cells[2][b] += mem
                cells[3][b] = max(cells[3][b], total)

        wanted = None if hosts is None else set(hosts)
        with self._read() as (conn, snap):
            names = {
                int(gid): (str(host), int(idx)) for gid, host, idx in conn.execute(
                    "SELECT g.gid, h.name, g.idx FROM gpu g JOIN host h ON h.hid = g.hid")
                if wanted is None or host in wanted
            }
            # Our own integer ids, so written into the SQL as they are.
            only = "" if wanted is None else f" AND gid IN ({','.join(map(str, names))})"
            if wanted is not None and not names:
                return {}
            plan = self._plan(snap, GPU_LEVELS, since, until, finest)
            chunked = any(
                src == 0 and snap.chunk_hi is not None
                and max(lo, snap.raw_floor or lo) < snap.chunk_hi for src, lo, _ in plan
            )
            if not chunked:
                return self._sparklines_sql(conn, plan, names, since, width, points, only)
            for src, lo, hi in plan:  # with stretches under a minute: raw samples, in Python
                if src:
                    absorb(conn.execute(
                        "SELECT r.gid, CAST((r.t - ?) / ? AS INTEGER), SUM(r.n), SUM(r.util_sum),"
                        " SUM(r.mem_sum), MAX(r.total) FROM gpu g CROSS JOIN gpu_roll r"
                        " ON r.lvl = ? AND r.gid = g.gid AND r.t >= ? AND r.t < ?"
                        f"{only.replace('gid', 'g.gid')} GROUP BY r.gid, 2",
                        (since, width, src, lo, hi),
                    ))
                    continue
                raw_lo = lo if snap.raw_floor is None else max(lo, snap.raw_floor)
                head_lo = raw_lo if snap.chunk_wm is None else max(raw_lo, snap.chunk_wm)
                if head_lo < hi:
                    absorb(conn.execute(
                        "SELECT gid, CAST((t - ?) / ? AS INTEGER), COUNT(*), SUM(util),"
                        " SUM(mem) / 1048576.0, MAX(total) / 1048576.0 FROM h_gpu"
                        f" WHERE t >= ? AND t < ?{only} GROUP BY gid, 2",
                        (since, width, head_lo, hi),
                    ))
                # Each sample is in the head or in a chunk, never both (a slice being compacted
                # has some series in each).
                chunk_hi = min(hi, snap.chunk_hi or hi)
                for gid, blob in conn.execute(
                    "SELECT key, data FROM chunk WHERE kind = ? AND t0 > ? AND t0 < ?"
                    + only.replace("gid", "key"),
                    (_K_GPU, raw_lo - CHUNK, chunk_hi),
                ):
                    cols = _codec.decode(blob)
                    absorb(
                        (gid, int((t - since) / width), 1, util, mem / MIB, tot / MIB)
                        for t, util, mem, tot in zip(cols[0], cols[1], cols[2], cols[3],
                                                     strict=True)
                        if raw_lo <= t < chunk_hi
                    )
        out: dict[tuple[str, int], dict[str, list[float]]] = {}
        nan = math.nan
        for gid, (cnt, util, mem, total) in acc.items():
            if gid in names:
                out[names[gid]] = {
                    "util": [u / c if c else nan for c, u in zip(cnt, util, strict=True)],
                    "mem": [m / c / t if c and t else nan
                            for c, m, t in zip(cnt, mem, total, strict=True)],
                }
        return out

    @staticmethod
    def _sparklines_sql(
        conn: sqlite3.Connection, plan: Sequence[tuple[int, int, int]],
        names: dict[int, tuple[str, int]], since: int, width: float, points: int,
        only: str = "",
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        """Sparklines in one statement: every source's rows per (GPU, stretch), merged, and one
        row per GPU with its stretches as text (parsing that beats 50,000 Python rows)."""
        parts: list[str] = []
        args: list[float] = []
        for src, lo, hi in plan:
            if src:
                parts.append(
                    "SELECT r.gid AS gid, CAST((r.t - ?) / ? AS INTEGER) AS b, r.n AS n,"
                    " r.util_sum AS u, r.mem_sum AS m, r.total AS tot FROM gpu g"
                    " CROSS JOIN gpu_roll r ON r.lvl = ? AND r.gid = g.gid AND r.t >= ? AND r.t < ?"
                    + only.replace("gid", "g.gid")
                )
                args += (since, width, src, lo, hi)
            else:  # not rolled up yet: the head
                parts.append(
                    "SELECT gid AS gid, CAST((t - ?) / ? AS INTEGER) AS b, 1 AS n, util AS u,"
                    " mem / 1048576.0 AS m, total / 1048576.0 AS tot FROM h_gpu"
                    " WHERE t >= ? AND t < ?" + only
                )
                args += (since, width, lo, hi)
        if not parts:
            return {}
        last = points - 1
        rows = conn.execute(
            "SELECT gid, group_concat(b), group_concat(u), group_concat(f) FROM ("
            f" SELECT gid, min(b, {last}) AS b, SUM(u) * 1.0 / SUM(n) AS u,"
            " coalesce(SUM(m) * 1.0 / SUM(n) / nullif(MAX(tot), 0), 'NaN') AS f"
            f" FROM ({' UNION ALL '.join(parts)}) GROUP BY gid, min(b, {last}))"
            " GROUP BY gid",
            args,
        )
        nan = math.nan
        full = list(range(points))
        out: dict[tuple[str, int], dict[str, list[float]]] = {}
        for gid, b_text, u_text, f_text in rows:
            if gid not in names:
                continue
            stretches = list(map(int, b_text.split(",")))
            util = list(map(float, u_text.split(",")))
            mem = list(map(float, f_text.split(",")))  # "NaN" where the total is unknown
            if stretches != full:  # gaps (or another order): place each value
                util_line, mem_line = [nan] * points, [nan] * points
                for b, u, m in zip(stretches, util, mem, strict=True):
                    util_line[b], mem_line[b] = u, m
                util, mem = util_line, mem_line
            out[names[gid]] = {"util": util, "mem": mem}
        return out

    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Per-user GPU memory (bytes) on one GPU over [since, until), for a stacked chart:
        (times, {user: values aligned with times}); a user absent in a stretch has 0 there."""
        lo_ms, hi_ms = _ms(since), _ms(until)
        npts = max_points
        mem: dict[int, list[float]] = {}

        def user_line(uid: int) -> list[float]:
            line = mem.get(uid)
            if line is None:
                line = mem[uid] = [0.0] * npts
            return line

        with self._read() as (conn, snap):
            gid = self._gid(conn, host, gpu)
            if gid is None:
                return [], {}
            first = self._first_t(conn, "gpu_roll", "gid", HOUR, _K_GPU, gid)
            if first is not None and first > lo_ms:
                lo_ms = first
            if hi_ms <= lo_ms or max_points < 1:
                return [], {}
            width = (hi_ms - lo_ms) / npts
            cnt = [0] * npts  # GPU samples per stretch: the denominator of each user's average
            tsum = [0.0] * npts
            users = {int(u): str(n) for u, n in conn.execute("SELECT uid, name FROM user")}
            finest = self._finest(GPU_USER_LEVELS, hi_ms - lo_ms, max_points)
            for src, lo, hi in self._plan(snap, GPU_USER_LEVELS, lo_ms, hi_ms, finest):
                if src == 0:
                    for row in self._raw(conn, snap, _K_GPU, gid, lo=lo, hi=hi):
                        b = min(int((row[0] - lo_ms) / width), npts - 1)
                        cnt[b] += 1
                        tsum[b] += row[0]
                    for t, _pid, uid, _bid, pmem, _util in self._raw(
                        conn, snap, _K_PROC, gid, lo=lo, hi=hi
                    ):
                        user_line(uid)[min(int((t - lo_ms) / width), npts - 1)] += pmem
                    continue
                for b, n, ts in conn.execute(
                    "SELECT CAST((t - ?) / ? AS INTEGER), SUM(n), SUM(min(t + ?, ?) * n)"
                    " FROM gpu_roll WHERE lvl = ? AND gid = ? AND t >= ? AND t < ? GROUP BY 1",
                    (lo_ms, width, src // 2, hi_ms - 1, src, gid, lo, hi),
                ):
                    i = min(b, npts - 1)
                    cnt[i] += n
                    tsum[i] += ts
                for b, uid, s in conn.execute(
                    "SELECT CAST((t - ?) / ? AS INTEGER), uid, SUM(mem_sum) FROM gpu_user_roll"
                    " WHERE lvl = ? AND gid = ? AND t >= ? AND t < ? GROUP BY 1, 2",
                    (lo_ms, width, src, gid, lo, hi),
                ):
                    user_line(uid)[min(b, npts - 1)] += s * MIB
        keep = [b for b in range(npts) if cnt[b]]
        times = [tsum[b] / cnt[b] / 1000 for b in keep]
        per_user = {
            users.get(uid, f"#{uid}"): [line[b] / cnt[b] for b in keep]
            for uid, line in sorted(mem.items())
        }
        return times, per_user
