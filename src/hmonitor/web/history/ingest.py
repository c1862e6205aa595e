"""Ingest: each polling round appended to the head in one transaction, names turned into
ids, and what the idle rule and accounting need of it kept up to date."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from hmonitor._pb.hm_pb2 import ProcInfo
from hmonitor.web.hoststate import HostSample
from hmonitor.wire import proc_owner

from ._core import _Core
from ._layout import (
    _HALF_MIB,
    _I64_MAX,
    _UNREAD,
    CHUNK,
    GIB,
    MINUTE,
    TEN_MINUTES,
    _clean,
    _DiskRow,
    _floor_to,
    _GpuRow,
    _GpuUserRow,
    _HeadProc,
    _HostRow,
    _JobRow,
    _ms,
    _ProcRow,
    _push,
    _UserRow,
)

log = logging.getLogger(__name__)

_has = ProcInfo.HasField


def _job_of(p: ProcInfo) -> int:
    """The Slurm job a process belongs to; -1 for none (ids are unsigned; garbage past SQLite's
    integers is one job)."""
    return min(p.job.id, _I64_MAX) if _has(p, "job") else -1


class _Ingest(_Core):
    def _id(self, cache: dict[str, int], table: str, name: str) -> int:
        found = cache.get(name)
        if found is None:
            # Two odd names may clean to the same text: then they share the row.
            stored = _clean(name)
            self._w.execute(f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                            (stored,))
            row = self._w.execute(f"SELECT rowid FROM {table} WHERE name = ?", (stored,))
            found = cache[name] = int(row.fetchone()[0])
        return found

    def _gpu_id(self, hid: int, idx: int, name: str) -> int:
        found = self._gpus.get((hid, idx))
        if found is None:
            cur = self._w.execute(
                "INSERT INTO gpu (hid, idx, name) VALUES (?, ?, ?)", (hid, idx, _clean(name))
            )
            gid = int(cur.lastrowid or 0)
            self._gpus[(hid, idx)] = (gid, name)
            self._gpu_host[gid] = hid
            return gid
        gid, known = found
        if name != known:
            self._w.execute("UPDATE gpu SET name = ? WHERE gid = ?", (_clean(name), gid))
            self._gpus[(hid, idx)] = (gid, name)
        return gid

    def _disk_id(self, hid: int, mount: str, device: str) -> int:
        found = self._disks.get((hid, mount))
        if found is None:
            w = self._w
            stored = _clean(mount)
            w.execute("INSERT INTO disk (hid, mount, device) VALUES (?, ?, ?)"
                      " ON CONFLICT (hid, mount) DO NOTHING", (hid, stored, _clean(device)))
            did = int(w.execute("SELECT did FROM disk WHERE hid = ? AND mount = ?",
                                (hid, stored)).fetchone()[0])
            self._disks[(hid, mount)] = (did, device)
            return did
        did, known = found
        if device != known:
            self._w.execute("UPDATE disk SET device = ? WHERE did = ?", (_clean(device), did))
            self._disks[(hid, mount)] = (did, device)
        return did

    def ingest(self, states: Sequence[HostSample], t: float) -> None:
        """Store one polling round (one transaction). Rounds must come in time order."""
        tm = _ms(t)
        with self._wlock:
            self._writable()
            if self._last_t is not None and tm <= self._last_t:
                log.warning("history: round at %.3f is not after the last one (%.3f); skipped",
                            t, self._last_t / 1000)
                return
            self._tx(lambda: self._ingest(states, tm))
            self._last_t = tm

    def _ingest(self, states: Sequence[HostSample], tm: int) -> None:
        w = self._w
        cap = self._cap_ms
        disks_due = self._disk_t is None or tm - self._disk_t >= self._disk_ms
        r_host: list[_HostRow] = []
        r_gpu: list[_GpuRow] = []
        r_proc: list[_HeadProc] = []
        r_disk: list[_DiskRow] = []
        r_gpu_user: list[_GpuUserRow] = []
        stretch = _floor_to(tm, TEN_MINUTES)
        # Per user: GPU-milliseconds (a GPU's dt split equally between its users), byte-ms.
        acct: dict[int, list[float]] = {}
        r_job: list[_JobRow] = []
        lh_put: list[tuple[int, int | None, int | None]] = []
        lp_put: list[tuple[int, int, int, int, int]] = []
        lp_del: list[tuple[int, int]] = []
        users, bnames, stacks, lproc = self._users, self._bnames, self._stacks, self._lproc
        seen_hosts: set[int] = set()
        for state in states:
            hid = self._id(self._hosts, "host", state.name)
            if hid in seen_hosts:
                continue
            seen_hosts.add(hid)
            info = state.info if state.up else None
            rtt_ms = state.rtt_ms
            rtt = -1
            if state.up and rtt_ms is not None and math.isfinite(rtt_ms):
                rtt = min(max(round(rtt_ms * 1000), 0), _I64_MAX)
            lh = self._lhost.get(hid)
            if info is None:
                # Down (or up without a snapshot): only the up/down row; the runs are broken.
                r_host.append((tm, hid, 1 if state.up else 0, rtt, 0))
                if lh is not None and lh[1] is not None:
                    lh[1] = None
                    lh_put.append((hid, lh[0], None))
                continue
            prev_t = lh[0] if lh is not None else None
            dt = 0 if prev_t is None else min(tm - prev_t, cap)
            cont = (lh is not None and prev_t is not None and lh[1] is not None
                    and tm - prev_t <= cap)
            run_start = lh[1] if cont and lh is not None else tm
            self._lhost[hid] = [tm, run_start]
            lh_put.append((hid, tm, run_start))
            r_host.append((tm, hid, 1, rtt, dt))
            old_keys = self._host_procs.get(hid, set())
            # Per (Slurm job, user) on this host: as acct (see `_job_shares` for the split).
            jacct: dict[tuple[int, int], list[float]] = {}
            new_keys: set[tuple[int, int]] = set()
            seen_idx: set[int] = set()
            for g in info.gpus:
                idx = g.id
                if idx in seen_idx:
                    continue
                seen_idx.add(idx)
                gid = self._gpu_id(hid, idx, g.name)
                util = g.utilization
                r_gpu.append((tm, gid, util, min(g.mem_used, _I64_MAX),
                              min(g.mem_total, _I64_MAX), g.temp, g.fanspeed))
                stack = stacks.get(gid)
                if stack is None:
                    stack = stacks[gid] = []
                _push(stack, tm, util)
                if not g.procs:
                    continue
                procs: dict[int, list[Any]] = {}  # pid -> [uid, bid, mem, util, ProcInfo]
                for p in g.procs:
                    pid = p.pid
                    mem = min(p.mem, _I64_MAX)
                    cur = procs.get(pid)
                    if cur is not None:  # listed twice (e.g. compute and graphics): one process
                        cur[2] = min(cur[2] + mem, _I64_MAX)
                        cur[3] = max(cur[3], p.utilization)
                        continue
                    uname = proc_owner(p)  # a container, or its rootless owner, not "root"
                    uid = users.get(uname)
                    if uid is None:
                        uid = self._id(users, "user", uname)
                    bid = bnames.get(p.basename)
                    if bid is None:
                        bid = self._id(bnames, "bname", p.basename)
                    procs[pid] = [uid, bid, mem, p.utilization, p]
                by_user: dict[int, list[int]] = {}  # uid -> [bytes, MiB rounded per process]
                in_jobs = False
                for pid, (uid, bid, mem, putil, p) in procs.items():
                    r_proc.append((tm, gid, pid, uid, bid, mem, putil))
                    mib = (mem + _HALF_MIB) >> 20
                    mine = by_user.get(uid)
                    if mine is None:
                        by_user[uid] = [mem, mib]
                    else:
                        mine[0] += mem
                        mine[1] += mib
                    key = (gid, pid)
                    new_keys.add(key)
                    old = lproc.get(key)
                    if (cont and old is not None and old[0] == uid and old[1] == bid
                            and key in old_keys):
                        # The same process, still there: nothing to write, and the same Slurm
                        # job (read when it first shows: a process starts in its job's cgroup
                        # and is never moved), so a round costs no proto read for it.
                        if old[3] != -1:  # in a job, or not read yet (since a restart)
                            job = old[3]
                            if job == _UNREAD:
                                job = _job_of(p)
                                lproc[key] = (uid, bid, old[2], job)
                            if job >= 0:
                                in_jobs = True
                    else:
                        job = _job_of(p)
                        lproc[key] = (uid, bid, tm, job)
                        lp_put.append((gid, pid, uid, bid, tm))
                        if job >= 0:
                            in_jobs = True
                share = dt / len(by_user)  # users sharing a GPU split it equally
                for uid, (mem, mib) in by_user.items():
                    r_gpu_user.append((stretch, gid, uid, mib))
                    acc = acct.get(uid)
                    if acc is None:
                        acct[uid] = [share, mem * dt]
                    else:
                        acc[0] += share
                        acc[1] += mem * dt
                if in_jobs:
                    by_job: dict[tuple[int, int], int] = {}  # (job or -1, uid) -> bytes
                    for pid, (uid, _, mem, _, _) in procs.items():
                        job = lproc[(gid, pid)][3]
                        by_job[(job, uid)] = by_job.get((job, uid), 0) + mem
                    self._job_shares(by_job, len(by_user), share, dt, jacct)
            for (job, uid), (ms, byte_ms) in jacct.items():
                r_job.append((tm, job, uid, hid, ms / 1000.0, byte_ms / 1000.0 / GIB))
            for key in old_keys - new_keys:
                lproc.pop(key, None)
                lp_del.append(key)
            self._host_procs[hid] = new_keys
            if disks_due:
                for d in info.disks:
                    did = self._disk_id(hid, d.mount, d.device)
                    r_disk.append((tm, did, min(d.used, _I64_MAX), min(d.total, _I64_MAX)))
        r_user = [(tm, uid, ms / 1000.0, byte_ms / 1000.0 / GIB)
                  for uid, (ms, byte_ms) in acct.items()]
        self._write_head([tm], r_host, r_gpu, r_proc, r_disk, r_user, r_gpu_user, r_job)
        w.executemany(
            "INSERT INTO live_host (hid, t, run_start) VALUES (?, ?, ?) ON CONFLICT (hid)"
            " DO UPDATE SET t = excluded.t, run_start = excluded.run_start",
            lh_put,
        )
        w.executemany("INSERT OR REPLACE INTO live_proc VALUES (?, ?, ?, ?, ?)", lp_put)
        w.executemany("DELETE FROM live_proc WHERE gid = ? AND pid = ?", lp_del)

    @staticmethod
    def _job_shares(
        by_job: dict[tuple[int, int], int], users: int, share: float, dt: int,
        jacct: dict[tuple[int, int], list[float]],
    ) -> None:
        """Add one GPU's sample to its jobs' sums (`by_job`: the bytes of each (job, user) on it,
        job -1 for a user's processes outside any job). Each user's share of the GPU (1/k of dt
        with k users on it, as in user accounting) is split equally between that user's jobs
        on it, the processes outside any job counting as one more (which no job gets): a GPU
        shared by two jobs, of one user or of two, counts half for each, and a user's jobs
        never add up to more GPU-seconds than the user. Memory: the job's own processes'."""
        count: dict[int, int] | None = None
        if len(by_job) > users:  # someone has more than one job (or one and none) here
            count = {}
            for _, uid in by_job:
                count[uid] = count.get(uid, 0) + 1
        for key, mem in by_job.items():
            if key[0] < 0:
                continue
            part = share if count is None else share / count[key[1]]
            acc = jacct.get(key)
            if acc is None:
                jacct[key] = [part, mem * dt]
            else:
                acc[0] += part
                acc[1] += mem * dt

    def _write_head(
        self,
        rounds: Sequence[int],
        r_host: Sequence[_HostRow],
        r_gpu: Sequence[_GpuRow],
        r_proc: Sequence[_HeadProc],
        r_disk: Sequence[_DiskRow],
        r_user: Sequence[_UserRow],
        r_gpu_user: Sequence[_GpuUserRow],
        r_job: Sequence[_JobRow] = (),
    ) -> None:
        w = self._w
        w.executemany("INSERT INTO h_round (t) VALUES (?)", [(t,) for t in rounds])
        w.executemany("INSERT INTO h_host VALUES (?, ?, ?, ?, ?)", r_host)
        w.executemany("INSERT INTO h_gpu VALUES (?, ?, ?, ?, ?, ?, ?)", r_gpu)
        w.executemany("INSERT INTO h_proc VALUES (?, ?, ?, ?, ?, ?, ?)", r_proc)
        w.executemany("INSERT INTO h_user VALUES (?, ?, ?, ?)", r_user)
        if r_job:
            w.executemany("INSERT INTO h_job VALUES (?, ?, ?, ?, ?, ?)", r_job)
        w.executemany("INSERT INTO h_gpu_user VALUES (?, ?, ?, ?) ON CONFLICT (t, gid, uid)"
                      " DO UPDATE SET mem = mem + excluded.mem", r_gpu_user)
        if r_disk:
            w.executemany("INSERT OR REPLACE INTO h_disk VALUES (?, ?, ?, ?)", r_disk)
            self._disk_t = max(r[0] for r in r_disk)
            self._set_meta(w, "disk_t", self._disk_t)
        if self._last_t is None and self._meta(w, "roll_wm") is None:
            first = rounds[0]
            self._set_meta(w, "roll_wm", _floor_to(first, MINUTE))
            self._set_meta(w, "coarse_wm", _floor_to(first, TEN_MINUTES))
            self._set_meta(w, "chunk_wm", _floor_to(first, CHUNK))
        # What rolling up a round reads (not the processes; per-GPU-user pairs wait for _fold).
        self._round_rows = (len(r_host) + len(r_gpu) + len(r_user) + len(r_disk)
                            + len(r_job)) // len(rounds)

    def _bulk_append(
        self,
        rounds: Sequence[int],
        r_host: Sequence[_HostRow],
        r_gpu: Sequence[_GpuRow],
        r_proc: Sequence[_ProcRow],
        r_disk: Sequence[_DiskRow] = (),
    ) -> None:
        """Append ready-made head rows of many rounds in one transaction.

        For benchmarks and importers that synthesize years of samples: rows are in the head
        tables' formats (ids, times in ms, each row's t one of `rounds`, rounds ascending and
        after the last one; a process row also carries its dt and share, see `_ProcRow`) and go
        through the same rollup, compaction and retention as ingested ones. The idle-process
        state is not updated.
        """
        with self._wlock:
            if not rounds:
                return
            self._writable()
            if self._last_t is not None and rounds[0] <= self._last_t:
                raise ValueError("rounds must come after the last stored one")
            known = set(rounds)
            if any(r[0] not in known for rows in (r_host, r_gpu, r_proc, r_disk) for r in rows):
                raise ValueError("a row's t is not one of the rounds")  # compaction needs it
            procs: list[_HeadProc] = []
            acct: dict[tuple[int, int], list[float]] = {}
            pairs: dict[tuple[int, int, int], int] = {}
            for t, gid, pid, uid, bid, mem, util, dt, share in r_proc:
                procs.append((t, gid, pid, uid, bid, mem, util))
                acc = acct.get((t, uid))
                if acc is None:
                    acc = acct[(t, uid)] = [0.0, 0.0]
                acc[0] += dt * share / 1000.0
                acc[1] += mem * dt / 1000.0 / GIB
                key = (_floor_to(t, TEN_MINUTES), gid, uid)
                pairs[key] = pairs.get(key, 0) + ((mem + _HALF_MIB) >> 20)
            r_user = [(t, uid, g, m) for (t, uid), (g, m) in sorted(acct.items())]
            r_gpu_user = [(*k, mib) for k, mib in sorted(pairs.items())]
            self._tx(lambda: self._write_head(rounds, r_host, r_gpu, procs, r_disk, r_user,
                                              r_gpu_user))
            self._last_t = rounds[-1]
