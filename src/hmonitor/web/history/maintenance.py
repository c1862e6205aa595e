"""Maintenance in bounded pieces: roll-ups of closed minutes, compaction of closed 10-minute
slices into one blob per series, retention; each kind takes its turn (see store.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter

from . import _codec
from ._core import _Core
from ._layout import (
    _COMPACT_ROWS,
    _DISK_ROLL,
    _GPU_ROLL,
    _GPU_USER_ROLL,
    _HOST_ROLL,
    _JOB_MINUTES,
    _JOB_ROLL,
    _K_GPU,
    _KEY_TABLE,
    _KINDS,
    _LAYOUT,
    _RETAIN_ROWS,
    _ROLL_ROWS,
    _STACKS_EVERY,
    _T,
    _USER_ROLL,
    CHUNK,
    DISK_LEVELS,
    GPU_LEVELS,
    GPU_USER_LEVELS,
    HOUR,
    MINUTE,
    TEN_MINUTES,
    USER_LEVELS,
    _floor_to,
    _ms,
    _Piece,
)
from .backend import (
    MaintainReport,
)

log = logging.getLogger(__name__)


class _Maintenance(_Core):
    def maintain(self, now: float, *, budget_s: float | None = None) -> MaintainReport:
        """Roll up closed minutes, compress closed 10-minute slices, apply retention.

        Work is done in pieces, each its own short transaction that advances its watermark with
        its work, so an interruption repeats nothing and loses nothing. The kinds of work take
        turns, a piece each: every call advances each kind that is due at least once, then goes
        on while `budget_s` lasts (no budget: until all is done). `done` is False when work is
        left. Retention cuts at `now` as of the call's start: what the call compacts past the
        floor goes at the next call (readers hide it already).
        """
        started = time.perf_counter()
        deadline = None if budget_s is None else started + budget_s
        now_ms = _ms(now)
        with self._wlock:
            self._writable()
            steps: dict[str, Callable[[], _Piece]] = {
                "roll": self._roll_piece,
                "compact": self._compact_piece,
                "retain": lambda: self._retain_piece(now_ms),
            }
            units = dict.fromkeys(steps, 0)
            spent = dict.fromkeys(steps, 0.0)
            compacted_rows = 0
            pending = list(steps)
            self._retain_next = 0  # a retention pass per call: the floors move with `now`
            pieces = 0
            longest = 0.0
            first_turn, out_of_time = True, False
            while pending and not out_of_time:
                for name in list(pending):
                    if (not first_turn and deadline is not None
                            and time.perf_counter() >= deadline):
                        out_of_time = True
                        break
                    began = time.perf_counter()
                    piece = steps[name]()
                    spent[name] += time.perf_counter() - began
                    units[name] += piece.units
                    compacted_rows += piece.rows
                    pieces += piece.transactions
                    longest = max(longest, piece.seconds)
                    if not piece.more:
                        pending.remove(name)
                    if name == "roll" and piece.more and "compact" not in pending:
                        pending.insert(1, "compact")  # rolled-up slices can be compacted now
                first_turn = False
        return MaintainReport(units["roll"], units["compact"], units["retain"],
                              time.perf_counter() - started, not pending, pieces, longest,
                              compacted_rows, (spent["roll"], spent["compact"], spent["retain"]))

    def _next_round(self, t: int) -> int:
        """The first round at or after t; the latest round is always in the head."""
        row = self._w.execute("SELECT MIN(t) FROM h_round WHERE t >= ?", (t,)).fetchone()
        return t if row[0] is None else int(row[0])

    def _timed_tx(self, work: Callable[[], _T]) -> tuple[_T, float]:
        started = time.perf_counter()
        result = self._tx(work, reload=False)
        return result, time.perf_counter() - started

    def _roll_piece(self) -> _Piece:
        """One piece of rolling up: fold a finished 10-minute stretch into the coarse levels if
        there is one, else roll closed minutes of the head into the 1-minute level."""
        w = self._w
        roll_wm = self._meta(w, "roll_wm")
        if roll_wm is None or self._last_t is None:
            return _Piece()
        coarse = self._meta(w, "coarse_wm")
        coarse = roll_wm if coarse is None else coarse
        if coarse < roll_wm:
            # Skip stretches without rounds (the dashboard was down) in one step.
            start = max(coarse, _floor_to(self._next_round(coarse), TEN_MINUTES))
            end = _floor_to(start, TEN_MINUTES) + TEN_MINUTES
            if end <= roll_wm:
                _, secs = self._timed_tx(lambda: self._fold(start, end))
                return _Piece(0, True, secs, 1)
            if start > coarse:
                _, secs = self._timed_tx(
                    lambda: self._set_meta(w, "coarse_wm", min(start, roll_wm)))
                return _Piece(0, True, secs, 1)
        horizon = _floor_to(self._last_t, MINUTE)  # the latest minute is still open
        if roll_wm >= horizon:
            return _Piece()
        start = max(roll_wm, _floor_to(self._next_round(roll_wm), MINUTE))
        if start >= horizon:
            _, secs = self._timed_tx(lambda: self._set_meta(w, "roll_wm", horizon))
            return _Piece(0, True, secs, 1)
        # As many whole minutes as about _ROLL_ROWS head rows, up to the next 10-minute edge.
        per_minute = max(1, self._round_rows) * max(1, MINUTE // self._interval_ms)
        minutes = max(1, _ROLL_ROWS // per_minute)
        end = min(_floor_to(start, TEN_MINUTES) + TEN_MINUTES, horizon,
                  start + minutes * MINUTE)
        _, secs = self._timed_tx(lambda: self._roll(start, end))
        return _Piece((end - start) // MINUTE, True, secs, 1)

    def _roll(self, a: int, b: int) -> None:
        """Fold head rows with a <= t < b (whole minutes) into the 1-minute buckets, disks into
        1-minute staging rows (their hour level is filled by `_fold`). The rounds' accounting
        sums are then no longer needed."""
        w = self._w
        w.execute(_GPU_ROLL.format(
            src="SELECT ?, gid, t - t % ?, COUNT(*), SUM(util), MAX(util),"
                " SUM((mem + 524288) >> 20), MAX((mem + 524288) >> 20),"
                " MAX((total + 524288) >> 20), SUM(temp), MAX(temp), SUM(fan), MAX(fan)"
                " FROM h_gpu WHERE t >= ? AND t < ? GROUP BY gid, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_HOST_ROLL.format(
            src="SELECT ?, hid, t - t % ?, COUNT(*), SUM(up), SUM(max(rtt, 0)), MAX(max(rtt, 0))"
                " FROM h_host WHERE t >= ? AND t < ? GROUP BY hid, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_DISK_ROLL.format(
            src="SELECT ?, did, t - t % ?, COUNT(*), SUM((used + 524288) >> 20),"
                " MAX((used + 524288) >> 20), MAX((total + 524288) >> 20)"
                " FROM h_disk WHERE t >= ? AND t < ? GROUP BY did, t - t % ?"),
            (MINUTE, MINUTE, a, b, MINUTE))
        w.execute(_USER_ROLL.format(
            src="SELECT ?, t - t % ?, uid, SUM(gpu_s), SUM(gib_s) FROM h_user"
                " WHERE t >= ? AND t < ? GROUP BY 2, 3"),
            (MINUTE, MINUTE, a, b))
        for statement in _JOB_MINUTES:  # job_seen's hour rows get retention after the fold
            w.execute(statement, {"lvl": MINUTE, "hour": HOUR, "a": a, "b": b})
        for table in ("h_user", "h_job"):
            w.execute(f"DELETE FROM {table} WHERE t >= ? AND t < ?", (a, b))
        self._set_meta(w, "roll_wm", b)
        self._dirty(MINUTE, a)

    def _fold(self, a: int, b: int) -> None:
        """Add the 1-minute buckets with a <= t < b (within one 10-minute bucket, hence one
        hour) to the 10-minute and 1-hour levels, and the stretch's per-GPU-user memory: one
        sum per series, read through each key in key order (the tables are keyed level,
        series, time), so nothing is sorted."""
        w = self._w
        coarse = ((TEN_MINUTES, _floor_to(a, TEN_MINUTES)), (HOUR, _floor_to(a, HOUR)))
        rows = w.execute(
            "SELECT g.gid, SUM(r.n), SUM(r.util_sum), MAX(r.util_max), SUM(r.mem_sum),"
            " MAX(r.mem_max), MAX(r.total), SUM(r.temp_sum), MAX(r.temp_max), SUM(r.fan_sum),"
            " MAX(r.fan_max) FROM gpu g NOT INDEXED CROSS JOIN gpu_roll r ON r.lvl = ?"
            " AND r.gid = g.gid AND r.t >= ? AND r.t < ? GROUP BY g.gid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_GPU_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        rows = w.execute(
            "SELECT h.hid, SUM(r.n), SUM(r.up_sum), SUM(r.rtt_sum), MAX(r.rtt_max)"
            " FROM host h NOT INDEXED CROSS JOIN host_roll r ON r.lvl = ? AND r.hid = h.hid"
            " AND r.t >= ? AND r.t < ? GROUP BY h.hid",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_HOST_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?)"),
                      [(lvl, r[0], start, *r[1:]) for lvl, start in coarse for r in rows])
        hour = _floor_to(a, HOUR)
        rows = w.execute(
            "SELECT d.did, SUM(r.n), SUM(r.used_sum), MAX(r.used_max), MAX(r.total)"
            " FROM disk d NOT INDEXED CROSS JOIN disk_roll r ON r.lvl = ? AND r.did = d.did"
            " AND r.t >= ? AND r.t < ? GROUP BY d.did",
            (MINUTE, a, b),
        ).fetchall()
        w.executemany(_DISK_ROLL.format(src="VALUES (?, ?, ?, ?, ?, ?, ?)"),
                      [(HOUR, r[0], hour, *r[1:]) for r in rows])
        w.execute("DELETE FROM disk_roll WHERE lvl = ? AND did IN (SELECT did FROM disk)"
                  " AND t >= ? AND t < ?", (MINUTE, a, b))
        for roll, key in ((_USER_ROLL, "uid"), (_JOB_ROLL, "job, uid")):
            w.execute(roll.format(
                src=f"SELECT ?, ?, {key}, SUM(gpu_s), SUM(gib_s) FROM {roll.split()[2]}"
                    f" WHERE lvl = ? AND t >= ? AND t < ? GROUP BY {key}"),
                (HOUR, hour, MINUTE, a, b))
        stretch = _floor_to(a, TEN_MINUTES)  # h_gpu_user holds this stretch's rounds only
        for lvl, start in coarse:
            w.execute(_GPU_USER_ROLL.format(
                src="SELECT ?, gid, ?, uid, mem FROM h_gpu_user WHERE t = ?"),
                (lvl, start, stretch))
        w.execute("DELETE FROM h_gpu_user WHERE t = ?", (stretch,))
        self._set_meta(w, "coarse_wm", b)
        self._dirty(TEN_MINUTES, stretch)
        self._dirty(HOUR, hour)

    def _compact_piece(self) -> _Piece:
        """One piece of compaction: the next series of the oldest closed slice, as many as come
        to about _COMPACT_ROWS head rows, into blobs. Progress within the slice is kept in meta
        (chunk_kind, chunk_key), so a piece is never repeated."""
        w = self._w
        chunk_wm = self._meta(w, "chunk_wm")
        coarse = self._meta(w, "coarse_wm")
        if chunk_wm is None or coarse is None:
            return _Piece()
        start = max(chunk_wm, _floor_to(self._next_round(chunk_wm), CHUNK))
        end = start + CHUNK
        if end > coarse:  # not rolled up yet (readers need the head rows until then)
            if start > chunk_wm:  # skip a stretch without rounds
                _, secs = self._timed_tx(lambda: self._set_meta(w, "chunk_wm", start))
                return _Piece(0, True, secs, 1)
            return _Piece()

        def work() -> tuple[int, int]:
            kind = self._meta(w, "chunk_kind")
            kind = _KINDS[0] if kind is None else kind
            lo = self._meta(w, "chunk_key")
            rows = 0
            while True:
                limits = [k for k in self._key_bounds(kind, start, end)
                          if lo is None or k > lo]
                hi = limits[0] if limits else None
                rows += self._compact(start, end, kind, lo, hi)
                if hi is not None:
                    self._set_meta(w, "chunk_kind", kind)
                    self._set_meta(w, "chunk_key", hi)
                    lo = hi
                else:
                    w.execute("DELETE FROM meta WHERE k = 'chunk_key'")
                    lo = None
                    if kind == _KINDS[-1]:
                        self._finish_slice(start, end)
                        return 1, rows
                    kind = _KINDS[_KINDS.index(kind) + 1]
                    self._set_meta(w, "chunk_kind", kind)
                if rows >= _COMPACT_ROWS:
                    return 0, rows

        (finished, rows), secs = self._timed_tx(work)
        return _Piece(finished, True, secs, 1, rows)

    def _key_bounds(self, kind: int, a: int, b: int) -> list[int]:
        """Upper key limits (exclusive) that cut a slice's rows of one kind into pieces of about
        _COMPACT_ROWS: from the per-key row counts of the slice's last round with rows of that
        kind, times its rounds (cheap: one round, read in key order)."""
        cached = self._bounds.get((kind, a))
        if cached is not None:
            return cached
        w = self._w
        table, key, _, _ = _LAYOUT[kind]
        limits: list[int] = []
        t_ref = w.execute(f"SELECT MAX(t) FROM {table} WHERE t >= ? AND t < ?",
                          (a, b)).fetchone()[0]
        if t_ref is not None:
            rounds = w.execute("SELECT COUNT(*) FROM h_round WHERE t >= ? AND t < ?",
                               (a, b)).fetchone()[0]
            acc = 0
            for k, n in w.execute(f"SELECT {key}, COUNT(*) FROM {table} WHERE t = ?"
                                  f" GROUP BY {key}", (t_ref,)):
                acc += n * rounds
                if acc >= _COMPACT_ROWS:
                    limits.append(int(k) + 1)
                    acc = 0
        self._bounds = {k: v for k, v in self._bounds.items() if k[1] == a}  # this slice only
        self._bounds[(kind, a)] = limits
        return limits

    def _compact(self, a: int, b: int, kind: int, lo: int | None, hi: int | None) -> int:
        """Move one kind's head rows with a <= t < b and lo <= key < hi into one blob per
        series; returns the rows moved. Rows are found round by round ((t, key) seeks), so a
        piece costs its own rows, not the slice's."""
        w = self._w
        table, key, cols, order = _LAYOUT[kind]
        if kind == _K_GPU and (self._stacks_as_of is None or self._stacks_as_of < b):
            self._save_stacks()  # readers replay the head after these; it is about to shrink
        keys = ""
        args: list[int] = []
        if lo is not None:
            keys += f" AND {key} >= ?"
            args.append(lo)
        if hi is not None:
            keys += f" AND {key} < ?"
            args.append(hi)

        def x(names: str) -> str:  # columns of the head table in the join
            return ", ".join(f"x.{c.strip()}" for c in names.split(","))

        rows = w.execute(
            f"SELECT x.{key}, {x(cols)} FROM h_round r CROSS JOIN {table} x ON x.t = r.t"
            f"{keys.replace(' AND ', ' AND x.')} WHERE r.t >= ? AND r.t < ? ORDER BY {x(order)}",
            (*args, a, b),
        )
        blobs = []
        moved = 0
        for k, group in groupby(rows, key=itemgetter(0)):
            series = list(zip(*group, strict=True))[1:]
            moved += len(series[0])
            blobs.append((kind, k, a, max(series[0]), _codec.encode(series)))
        w.executemany("INSERT INTO chunk VALUES (?, ?, ?, ?, ?)", blobs)
        self._dirty(0, a)
        w.execute(f"DELETE FROM {table} WHERE t IN (SELECT t FROM h_round WHERE t >= ? AND t < ?)"
                  f"{keys}", (a, b, *args))
        return moved

    def _finish_slice(self, a: int, b: int) -> None:
        w = self._w
        w.execute("DELETE FROM h_round WHERE t >= ? AND t < ?", (a, b))
        w.execute("DELETE FROM meta WHERE k IN ('chunk_kind', 'chunk_key')")
        self._set_meta(w, "chunk_wm", b)

    def _dirty(self, level: int, t: int) -> None:
        """Rows at `level` starting at t were just written: if t is at or below the cut the
        level was last deleted up to, retention must look again (harmless if rolled back)."""
        done = self._retain_done.get(level)
        if done is not None and t <= done:
            self._retain_dirty.add(level)

    def _retain_piece(self, now_ms: int) -> _Piece:
        """One piece of retention. The first of a call moves the floors (always: readers hide
        what is below them) and picks the levels with something new to delete; then each
        piece deletes up to _RETAIN_ROWS aged-out rows, target after target."""
        i = self._retain_next
        if i is None:
            return _Piece()

        def work() -> tuple[int, int, int]:
            w = self._w
            j = i
            if j == 0:
                self._retain_cuts = cuts = self._set_floors(now_ms)
                self._retain_levels = {
                    lvl for lvl, cut in cuts.items()
                    if lvl in self._retain_dirty or lvl not in self._retain_done
                    or _floor_to(cut, lvl or CHUNK)
                    > _floor_to(self._retain_done[lvl], lvl or CHUNK)
                }
                if (self._last_t is not None and (self._stacks_as_of is None
                        or self._last_t - self._stacks_as_of >= _STACKS_EVERY)):
                    self._save_stacks()  # keeps the head replay of readers short
            targets = self._retain_targets(self._retain_cuts, self._retain_levels)
            left = _RETAIN_ROWS
            deleted = 0
            while j < len(targets):
                sql, args = targets[j]
                n = w.execute(sql, (*args, left)).rowcount
                deleted += n
                left -= n
                if left <= 0:
                    break  # this target may have more
                j += 1
            return deleted, j, len(targets)

        (deleted, j, total), secs = self._timed_tx(work)
        if j < total:
            self._retain_next = j
            return _Piece(deleted, True, secs, 1)
        self._retain_next = None
        self._retain_done.update({lvl: self._retain_cuts[lvl] for lvl in self._retain_levels})
        self._retain_dirty -= self._retain_levels
        return _Piece(deleted, False, secs, 1)

    def _set_floors(self, now_ms: int) -> dict[int, int]:
        """Move the retention floors (never back); returns per level (0: raw) the cut: a raw
        slice, or bucket, starting at or before it has aged out."""
        w = self._w
        floors: dict[int, int] = {}
        for name, lvl in (("raw", 0), *((str(lvl), lvl) for lvl in GPU_LEVELS)):
            old = self._meta(w, f"floor_{name}")
            new = now_ms - self._keep_ms[lvl]
            floors[lvl] = new if old is None else max(old, new)
            self._set_meta(w, f"floor_{name}", floors[lvl])
        coarse = self._meta(w, "coarse_wm")
        if coarse is not None:  # what the coarse levels do not hold yet stays (see _read)
            floors[0] = min(floors[0], coarse)
            floors[MINUTE] = min(floors[MINUTE], coarse)
        # Raw: whole slices only (reads hide the rest); buckets once they end at the floor.
        return {0: floors[0] - CHUNK, **{lvl: floors[lvl] - lvl for lvl in GPU_LEVELS}}

    @staticmethod
    def _retain_targets(
        cuts: dict[int, int], levels: set[int]
    ) -> list[tuple[str, tuple[int, ...]]]:
        """Deletes of aged-out rows at `levels` (0: raw chunks), each taking a row limit as its
        last argument. Each reaches its rows through the series keys (the tables are keyed
        kind or level, series, time), so finding nothing costs one seek per series."""
        out: list[tuple[str, tuple[int, ...]]] = []
        if 0 in levels:
            for kind in _KINDS:
                keys, col = _KEY_TABLE[kind]
                out.append((
                    "DELETE FROM chunk WHERE rowid IN (SELECT c.rowid FROM"
                    f" {keys} k CROSS JOIN chunk c ON c.kind = ? AND c.key = k.{col}"
                    " AND c.t0 <= ? LIMIT ?)", (kind, cuts[0])))
        for lvl in GPU_LEVELS:
            if lvl not in levels:
                continue
            cut = cuts[lvl]
            for table, keys, col in (("gpu_roll", "gpu", "gid"), ("host_roll", "host", "hid"),
                                     ("disk_roll", "disk", "did")):
                if table == "disk_roll" and lvl not in DISK_LEVELS:
                    continue
                out.append((
                    f"DELETE FROM {table} WHERE lvl = ? AND ({col}, t) IN (SELECT r.{col}, r.t"
                    f" FROM {keys} k CROSS JOIN {table} r ON r.lvl = ? AND r.{col} = k.{col}"
                    " AND r.t <= ? LIMIT ?)", (lvl, lvl, cut)))
            for table, key in (("user_roll", "uid"), ("job_roll", "job, uid")):  # jobs: as users
                if lvl in USER_LEVELS:
                    out.append((
                        f"DELETE FROM {table} WHERE lvl = ? AND (t, {key}) IN (SELECT t, {key}"
                        f" FROM {table} WHERE lvl = ? AND t <= ? LIMIT ?)", (lvl, lvl, cut)))
            if lvl == HOUR:  # where jobs ran, per hour
                out.append(("DELETE FROM job_seen WHERE (job, uid, hid, t) IN (SELECT job, uid,"
                            " hid, t FROM job_seen WHERE t <= ? LIMIT ?)", (cut,)))
            if lvl in GPU_USER_LEVELS:
                out.append((
                    "DELETE FROM gpu_user_roll WHERE lvl = ? AND (gid, t, uid) IN"
                    " (SELECT r.gid, r.t, r.uid FROM gpu g CROSS JOIN gpu_user_roll r"
                    " ON r.lvl = ? AND r.gid = g.gid AND r.t <= ? LIMIT ?)", (lvl, lvl, cut)))
        return out
