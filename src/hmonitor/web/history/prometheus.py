"""The history read from Prometheus (or any PromQL store: VictoriaMetrics, Thanos, Mimir).

``PrometheusHistory`` implements the read side of ``HistoryBackend`` with the PromQL HTTP API
(``/api/v1/query`` and ``/api/v1/query_range``) over the agents' own families, as Prometheus
scrapes them: job ``hmonitor``, every target labelled ``host`` = its name in settings.py (see
docs/prometheus.md). Every request has a deadline; a store that cannot be reached, is too slow or
answers an error raises ``HistoryUnavailable`` (one line, no URL credentials), which the pages
and API turn into "history unavailable".

How the SQLite semantics map, and where this is an approximation:

* ``series``: one ``query_range`` with step = window / max_points; a point is
  ``avg_over_time`` (or ``max_over_time``) over the step that ends at the evaluation time, shown
  at the middle of that step (SQLite shows the mean time of the samples). Units as SQLite: util
  and fan in %, memory in bytes, temperature in °C.
* ``sparklines``: one ``query_range`` per metric for all hosts, grouped by (host, gpu).
* ``user_usage``: GPU-hours = the time integral of each user's share of each GPU: at every
  subquery step a GPU on which k users hold memory counts 1/k for each of them; the sum over the
  steps times the step is the integral. The step is ``usage_step`` (60 s) or window / 5000 when
  longer, so a 30-day window is 5000 evaluations per series; holdings shorter than a step may be
  missed or counted for a whole step. GiB-hours likewise from the memory itself.
* ``idle_hogs``: per (host, gpu, user) holding memory throughout the last ``min_seconds`` (and
  already ``min_seconds`` ago) on a GPU whose maximum utilization stayed below the threshold.
  The agents' families carry no pid or process name: ``pid`` is 0 and ``basename`` "", and the
  idle run's start is not searched for: ``since`` = now - min_seconds.
* ``job_usage``: as ``user_usage``, from ``hmonitor_gpu_job_memory_bytes{slurm_job, user}``
  (exported for GPUs running a Slurm job; ``slurm_job=""`` for a user's processes outside a
  job, so a user's share of a GPU is split between them as SQLite splits it). First and last
  seen are the first and last step in the window with the job holding memory (SQLite's are
  over the whole history kept); hosts, those it held memory on in the window.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from .backend import GPU_METRICS, Agg, IdleHog, JobUsage, UsageTotals

__all__ = ["HistoryUnavailable", "PrometheusHistory"]

GIB = float(1 << 30)
# metric -> (PromQL family, factor to the SQLite backend's unit)
_FAMILIES: dict[str, tuple[str, float]] = {
    "util": ("hmonitor_gpu_utilization_ratio", 100.0),
    "mem": ("hmonitor_gpu_memory_used_bytes", 1.0),
    "mem_total": ("hmonitor_gpu_memory_total_bytes", 1.0),
    "temp": ("hmonitor_gpu_temperature_celsius", 1.0),
    "fan": ("hmonitor_gpu_fan_speed_ratio", 100.0),
}


class HistoryUnavailable(RuntimeError):
    """The history store cannot answer now (unreachable, too slow, or an error); one line.
    ``unreachable``: no answer at all (refused, timed out), rather than an error answered."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def _str(value: str) -> str:
    """A PromQL string literal (Go escapes, which JSON's are a subset of). Non-ASCII as it is:
    JSON's surrogate pairs for characters outside the BMP are not valid in PromQL."""
    return json.dumps(value, ensure_ascii=False)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would carry the Authorization header elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy from the environment (an HTTP_PROXY meant for the internet would take the queries to
# an intranet store with it) and no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
T = TypeVar("T")
USAGE_TTL = 60.0  # seconds: users' and jobs' hours over days barely move in a minute


def _dur(seconds: float) -> str:
    """A PromQL duration, in whole milliseconds (at least 1 ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


class PrometheusHistory:
    """``HistoryBackend`` (read side) over the PromQL HTTP API at ``url``."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, bearer_token: str | None = None,
        bearer_token_file: Path | None = None, username: str | None = None,
        password: str | None = None, job: str = "hmonitor", usage_step: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.job = job
        self.usage_step = usage_step
        self._token_file = bearer_token_file  # read at every query: a rotated token is taken
        self._headers = {"Accept": "application/json"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        elif username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._usage: dict[tuple[Any, ...], tuple[float, Any]] = {}  # key -> (made at, answer)

    # --- the HTTP API -----------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str] | list[tuple[str, str]]) -> Any:
        """GET the API; its ``data``, or HistoryUnavailable in one line."""
        pairs = list(params.items()) if isinstance(params, dict) else list(params)
        query = urllib.parse.urlencode([*pairs, ("timeout", _dur(self.timeout))])
        where = f"Prometheus at {_safe(self.url)}"
        headers = dict(self._headers)
        if self._token_file is not None:
            try:
                token = self._token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeError) as err:
                raise HistoryUnavailable(f"{where}: cannot read the bearer token file "
                                         f"{self._token_file}: {err}") from None
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{self.url}{path}?{query}", headers=headers)
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read()).get("error") or err.reason
            except (ValueError, AttributeError, OSError, http.client.HTTPException):
                detail = err.reason
            raise HistoryUnavailable(f"{where}: HTTP {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            raise HistoryUnavailable(f"{where} cannot be reached: {err.reason}",
                                     unreachable=True) from None
        except TimeoutError:
            raise HistoryUnavailable(f"{where} did not answer within {self.timeout:g} s",
                                     unreachable=True) from None
        except (OSError, ValueError, http.client.HTTPException) as err:
            # A reset, a garbled status line (not an HTTP server: a gRPC port?), a cut body
            raise HistoryUnavailable(f"{where}: bad answer: {err!r}", unreachable=True) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else "not a JSON object"
            raise HistoryUnavailable(f"{where}: query failed: {detail}")
        return body.get("data") or {}

    def query(self, expr: str, t: float) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{t:.3f}"})
        try:
            if data.get("resultType") != "vector":
                return []
            return [(dict(r.get("metric", {})), float(r["value"][1]))
                    for r in data.get("result", [])]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
            raise HistoryUnavailable(f"Prometheus at {_safe(self.url)}: a vector not as the "
                                     f"API documents it: {err!r}") from None

    def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range matrix: (labels, [(t, value), ...]) per series."""
        data = self._get("/api/v1/query_range", {
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}",
        })
        try:
            if data.get("resultType") != "matrix":
                return []
            return [(dict(r.get("metric", {})), [(float(t), float(v)) for t, v in r["values"]])
                    for r in data.get("result", [])]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
            raise HistoryUnavailable(f"Prometheus at {_safe(self.url)}: a matrix not as the "
                                     f"API documents it: {err!r}") from None

    def _sel(self, family: str, *matchers: str, **labels: str) -> str:
        """``family{job="...", label="value", ..., matchers...}``."""
        parts = [f"job={_str(self.job)}", *(f"{k}={_str(v)}" for k, v in labels.items()),
                 *matchers]
        return f"{family}{{{', '.join(parts)}}}"

    # --- HistoryBackend ---------------------------------------------------------------------------

    def series(
        self, host: str, gpu: int, metric: str, since: float, until: float,
        max_points: int = 1000, agg: Agg = "avg",
    ) -> tuple[list[float], list[float]]:
        """One GPU metric over [since, until) in the SQLite backend's units; see the module."""
        if metric not in _FAMILIES:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(GPU_METRICS)}")
        if agg not in ("avg", "max"):
            raise ValueError(f"agg {agg!r} is not avg or max")
        if until <= since or max_points < 1:
            return [], []
        family, factor = _FAMILIES[metric]
        step = max((until - since) / max_points, 0.001)
        sel = self._sel(family, host=host, gpu=str(gpu))
        expr = f"{agg} by (host, gpu) ({agg}_over_time({sel}[{_dur(step)}]))"
        if factor != 1.0:
            expr = f"{expr} * {factor:g}"
        rows = self.query_range(expr, since + step, until, step)
        times: list[float] = []
        values: list[float] = []
        for _, points in rows[:1]:
            for t, v in points:
                if not math.isnan(v):
                    times.append(t - step / 2)
                    values.append(v)
        return times, values

    def sparklines(
        self, window: float, now: float, points: int = 60, hosts: Iterable[str] | None = None,
    ) -> dict[tuple[str, int], dict[str, list[float]]]:
        """Per GPU with data in [now - window, now): util (%) and mem (fraction of total), one
        value per equal stretch, NaN where there is none."""
        if points < 1 or window <= 0:
            return {}
        only: list[str] = []
        if hosts is not None:
            names = sorted(set(hosts))
            if not names:
                return {}
            only.append(f"host=~{_str('|'.join(re.escape(h) for h in names))}")
        step = window / points
        start = now - window + step
        rng = _dur(step)

        def sel(family: str) -> str:
            return self._sel(family, *only)

        exprs = {
            "util": f"avg by (host, gpu) (avg_over_time({sel(_FAMILIES['util'][0])}[{rng}]))"
                    " * 100",
            "mem": f"avg by (host, gpu) (avg_over_time({sel(_FAMILIES['mem'][0])}[{rng}]))"
                   f" / avg by (host, gpu) (max_over_time({sel(_FAMILIES['mem_total'][0])}"
                   f"[{rng}]) > 0)",
        }
        out: dict[tuple[str, int], dict[str, list[float]]] = {}
        for name, expr in exprs.items():
            for labels, pts in self.query_range(expr, start, now, step):
                key = _gpu_key(labels)
                if key is None:
                    continue
                lines = out.setdefault(key, {"util": [math.nan] * points,
                                             "mem": [math.nan] * points})
                for t, v in pts:
                    i = round((t - start) / step)
                    if 0 <= i < points:
                        lines[name][i] = v
        return out

    def process_series(
        self, host: str, gpu: int, since: float, until: float, max_points: int = 1000
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Per-user GPU memory (bytes, averaged per stretch) on one GPU; 0 where a user is
        absent from a stretch that has others."""
        if until <= since or max_points < 1:
            return [], {}
        step = max((until - since) / max_points, 0.001)
        sel = self._sel("hmonitor_gpu_user_memory_bytes", host=host, gpu=str(gpu))
        rows = self.query_range(f"sum by (user) (avg_over_time({sel}[{_dur(step)}]))",
                                since + step, until, step)
        stamps = sorted({t for _, pts in rows for t, _ in pts})
        index = {t: i for i, t in enumerate(stamps)}
        users: dict[str, list[float]] = {}
        for labels, pts in rows:
            line = users.setdefault(labels.get("user", ""), [0.0] * len(stamps))
            for t, v in pts:
                line[index[t]] += v
        return [t - step / 2 for t in stamps], users

    def _cached(self, key: tuple[Any, ...], now: float, make: Callable[[], T]) -> T:
        """``make()``, or its answer for ``key`` made less than USAGE_TTL from ``now``: a page
        of users' hours asks for windows of days, each a subquery over every user's series."""
        hit = self._usage.get(key)
        if hit is not None and abs(now - hit[0]) < USAGE_TTL:
            return cast(T, hit[1])
        out = make()
        self._usage = {k: v for k, v in self._usage.items() if abs(now - v[0]) < USAGE_TTL}
        self._usage[key] = (now, out)
        return out

    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]:
        """Per user, per window w: GPU-hours and GiB-hours over [now - w, now); see the module
        for the approximation."""
        return self._cached(("users", tuple(windows)), now,
                            lambda: self._user_usage(now, windows))

    def _user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]:
        mem = self._sel("hmonitor_gpu_user_memory_bytes")
        holding = f"count by (host, gpu, user) ({mem} > 0)"
        share = f"({holding} / on (host, gpu) group_left count by (host, gpu) ({holding}))"
        own = f"sum by (host, gpu, user) ({mem})"
        out: dict[str, dict[float, UsageTotals]] = {}
        for w in windows:
            if w <= 0:
                continue
            step = max(self.usage_step, w / 5000)
            sub = f"[{_dur(w)}:{_dur(step)}]"
            hours = step / 3600
            gpu_h = self.query(f"sum by (user) (sum_over_time({share}{sub})) * {hours!r}", now)
            mem_h = self.query(
                f"sum by (user) (sum_over_time({own}{sub})) * {hours / GIB!r}", now)
            totals: dict[str, list[float]] = {}
            for i, rows in enumerate((gpu_h, mem_h)):
                for labels, v in rows:
                    totals.setdefault(labels.get("user", ""), [0.0, 0.0])[i] += v
            for user, (g, m) in totals.items():
                out.setdefault(user, {})[w] = UsageTotals(gpu_hours=g, gpu_mem_gib_hours=m)
        return out

    def job_usage(self, now: float, window: float, limit: int = 200) -> list[JobUsage]:
        """Slurm jobs in [now - window, now), most GPU-hours first: per (job, user), the
        integral of its share of each GPU (a user's share split between the user's jobs on it
        and the processes outside any, as SQLite splits it) and of its memory; see the module
        for the approximation."""
        return self._cached(("jobs", window, limit), now,
                            lambda: self._job_usage(now, window, limit))

    def _job_usage(self, now: float, window: float, limit: int) -> list[JobUsage]:
        if window <= 0:
            return []
        family = "hmonitor_gpu_job_memory_bytes"
        jobs = self._sel(family, 'slurm_job!=""')
        held, in_job = f"{self._sel(family)} > 0", f"{jobs} > 0"
        group = f"count by (host, gpu, user, slurm_job) ({in_job})"
        groups = f"count by (host, gpu, user) ({held})"
        users = f"count by (host, gpu) ({groups})"
        share = (f"({group} / on (host, gpu, user) group_left {groups}"
                 f" / on (host, gpu) group_left {users})")
        own = f"sum by (host, gpu, user, slurm_job) ({in_job})"
        step = max(self.usage_step, window / 5000)
        sub = f"[{_dur(window)}:{_dur(step)}]"
        hours = step / 3600
        by = "by (slurm_job, user)"
        rows: dict[tuple[int, str], list[Any]] = {}  # gpu_h, gib_h, first, last, hosts

        def each(expr: str) -> Iterable[tuple[list[Any], dict[str, str], float]]:
            for labels, v in self.query(expr, now):
                job = labels.get("slurm_job", "")
                if job.isdigit():
                    key = (int(job), labels.get("user", ""))
                    yield rows.setdefault(key, [0.0, 0.0, now, now, set()]), labels, v

        for acc, _, v in each(f"sum {by} (sum_over_time({share}{sub})) * {hours!r}"):
            acc[0] = v
        if not rows:
            return []
        for acc, _, v in each(f"sum {by} (sum_over_time({own}{sub})) * {hours / GIB!r}"):
            acc[1] = v
        stamps = f"timestamp({own})"
        for acc, _, v in each(f"min {by} (min_over_time({stamps}{sub}))"):
            acc[2] = v
        for acc, _, v in each(f"max {by} (max_over_time({stamps}{sub}))"):
            acc[3] = v
        for acc, labels, _ in each(
                f"count by (slurm_job, user, host) (max_over_time({jobs}[{_dur(window)}]))"):
            acc[4].add(labels.get("host", ""))
        top = sorted(rows.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        return [JobUsage(job=job, user=user, gpu_hours=g, gpu_mem_gib_hours=m, first_seen=first,
                         last_seen=last, hosts=tuple(sorted(hosts)))
                for (job, user), (g, m, first, last, hosts) in top[: max(0, limit)]]

    def idle_hogs(
        self, now: float, util_threshold: float = 5.0, min_seconds: float = 7200
    ) -> list[IdleHog]:
        """(host, gpu, user) holding memory on a GPU idle for min_seconds; see the module."""
        n = _dur(min_seconds)
        mem = self._sel("hmonitor_gpu_user_memory_bytes")
        util = self._sel(_FAMILIES["util"][0])
        expr = (
            f"{mem} > 0"
            f" and on (host, gpu, user) (min_over_time({mem}[{n}]) > 0)"
            f" and on (host, gpu, user) ({mem} offset {n})"
            f" and on (host, gpu) (max by (host, gpu) (max_over_time({util}[{n}]))"
            f" * 100 < {util_threshold!r})"
        )
        hogs = []
        for labels, v in self.query(expr, now):
            key = _gpu_key(labels)
            if key is None:
                continue
            hogs.append(IdleHog(host=key[0], gpu=key[1], pid=0, user=labels.get("user", ""),
                                basename="", mem=int(v), since=now - min_seconds,
                                idle_seconds=min_seconds))
        hogs.sort(key=lambda h: (h.host, h.gpu, h.user))
        return hogs

    def host_uptime(self, host: str, since: float, until: float) -> float | None:
        """Fraction of the polls of ``host`` in [since, until) that succeeded; None if none:
        the dashboard's ``hmonitor_host_up`` where Prometheus scrapes the dashboard, else the
        scrapes of the agent (``up``)."""
        if until <= since:
            return None
        rng = _dur(until - since)
        polled = f"avg(avg_over_time({self._sel('hmonitor_host_up', host=host)}[{rng}]))"
        scraped = f"avg(avg_over_time({self._sel('up', host=host)}[{rng}]))"
        rows = self.query(f"{polled} or {scraped}", until)
        values = [v for _, v in rows if not math.isnan(v)]
        return values[0] if values else None

    def gpus(self) -> list[tuple[str, int, str]]:
        """(host, GPU index, model) of every GPU with a memory total in the last 30 days, from
        the series index (no samples read)."""
        now = time.time()
        data = self._get("/api/v1/series", [
            ("match[]", self._sel(_FAMILIES["mem_total"][0])),
            ("start", f"{now - 30 * 86400:.3f}"), ("end", f"{now:.3f}")])
        found = set()
        for labels in data if isinstance(data, list) else []:
            key = _gpu_key(labels) if isinstance(labels, dict) else None
            if key is not None:
                found.add((key[0], key[1], str(labels.get("model", ""))))
        return sorted(found)

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""


def _gpu_key(labels: dict[str, str]) -> tuple[str, int] | None:
    host, gpu = labels.get("host"), labels.get("gpu", "")
    if host is None or not gpu.isdigit():
        return None
    return host, int(gpu)


def _safe(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
