"""The users page: who holds which GPUs now, their account expiry, GPU-hours over 1/7/30 days
and their idle processes, from the same report as ``GET /api/v1/users``; and GPU-hours per Slurm
job, as ``GET /api/v1/jobs``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from hmonitor.web.history import JobUsage
from hmonitor.web.pages.display import expiry, idle_text, moment, size_text
from hmonitor.web.reports import USAGE_WINDOWS, UserReport
from hmonitor.web.state import get_state
from hmonitor.wire import EXPIRATION_NEVER, EXPIRATION_UNKNOWN


@dataclass(slots=True)
class UserRow:
    user: str
    gpus: list[tuple[str, int, str, str]]  # host, GPU, memory text, title (pids and commands)
    mem_now: int  # bytes held now, for sorting
    exp_text: str
    exp_class: str
    exp_sort: int  # sorts unknown < expired < dates < never
    usage: dict[str, tuple[float, float]]  # window -> (GPU-hours, GiB-hours)
    hogs: list[str]  # one text per idle process


def user_row(u: UserReport, now: float) -> UserRow:
    held: dict[tuple[str, int], list[Any]] = {}
    for g in u.gpus_now:
        entry = held.setdefault((g.host, g.gpu), [0, []])
        entry[0] += g.mem
        entry[1].append(f"pid {g.pid} {g.basename}")
    text, cls = expiry(u.expiration, now)
    exp_sort = {EXPIRATION_UNKNOWN: -1, EXPIRATION_NEVER: 2**62}.get(u.expiration, u.expiration)
    return UserRow(
        user=u.user,
        gpus=[(host, gpu, size_text(mem), ", ".join(titles))
              for (host, gpu), (mem, titles) in sorted(held.items())],
        mem_now=u.mem_now,
        exp_text=text,
        exp_class=cls,
        exp_sort=exp_sort,
        usage={w: (round(t.gpu_hours, 3), round(t.gpu_mem_gib_hours, 3))
               for w, t in u.usage.items()},
        hogs=[f"idle {idle_text(h.idle_seconds)} on {h.host}:{h.gpu} "
              f"({h.basename}, pid {h.pid}, {size_text(h.mem)})" for h in u.idle_hogs],
    )


@dataclass(slots=True)
class JobRow:
    job: int
    user: str
    gpu_hours: float
    gib_hours: float
    hosts: str
    span: str  # "09:12 to 14:40"


def job_row(j: JobUsage, now: float) -> JobRow:
    return JobRow(j.job, j.user, round(j.gpu_hours, 3), round(j.gpu_mem_gib_hours, 3),
                  ", ".join(j.hosts), f"{moment(j.first_seen, now)} to {moment(j.last_seen, now)}")


def add_routes(bp: Blueprint) -> None:
    @bp.get("/users")
    def users() -> ResponseReturnValue:
        now = time.time()
        state = get_state()
        rows = [user_row(u, now) for u in state.users(now)]
        jobs_window = request.args.get("jobs", "7d")
        if jobs_window not in USAGE_WINDOWS:
            jobs_window = "7d"
        jobs = [job_row(j, now)
                for j in state.backend.job_usage(now, USAGE_WINDOWS[jobs_window])]
        return render_template(
            "users.html", rows=rows, windows=list(USAGE_WINDOWS), now=now,
            n_holding=sum(1 for r in rows if r.gpus), n_hogs=sum(len(r.hogs) for r in rows),
            jobs=jobs, jobs_window=jobs_window)
