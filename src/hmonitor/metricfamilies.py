"""HostInfo -> Prometheus metric families, shared by the agent's and the dashboard's /metrics.

Like ``hmonitor.wire``, imported by agent and dashboard alike and importing neither. Two families:

- DCGM-compatible (``DCGM_FI_DEV_*``, labels ``gpu``, ``UUID``, ``device``, ``modelName``,
  ``hostname``) so dashboards made for NVIDIA's dcgm-exporter (Grafana 12239) fill in unchanged;
  units as dcgm-exporter has them (%, °C, MiB, W, MHz). The agent's only: from the dashboard their
  ``hostname`` would clash with the target labels, so ``HostFamilies(dcgm=False)`` leaves them out.
- Native (``hmonitor_*``) by the Prometheus naming guide: base units, ratios, ``_bytes``,
  ``_seconds``. The agent's have no host label (Prometheus adds the target's labels); the
  dashboard adds its own ``host`` label first on every series (``extra_labels``).

Families are made once and filled host by host (``add``), so one exposition holds each family
once, however many hosts fed it. A family keeps its rows as plain tuples: ``metrics()`` hands them
to prometheus_client (the agent's registry), ``text()`` writes the exposition directly, about ten
times faster than prometheus_client at the dashboard's 1,000 hosts (a few hundred ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from hmonitor._pb import hm_pb2
from hmonitor.wire import EXPIRED_AT_EPOCH, LOST_PREFIX, is_lost, proc_owner

__all__ = ["DCGM_LABELS", "GPU_LABELS", "MAX_USERS_PER_GPU", "OTHER_USER", "Family",
           "HostFamilies", "TextFamily", "exposition"]

MIB = 1 << 20
MAX_USERS_PER_GPU = 64
OTHER_USER = "(other)"  # no account name has parentheses, so it never hides a real user

# dcgm-exporter renamed its host label from "Hostname" to "hostname" (NVIDIA/dcgm-exporter#655);
# we follow the current name, so dashboards and rules written for today's exporter work.
DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "hostname"]
GPU_LABELS = ["gpu", "uuid", "model"]


_NOT_FINITE = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class Family:
    """A gauge family: name, help, label names and its rows (label values, value)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.rows: list[Any] = []

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.rows.append((values, value))

    def metric(self) -> GaugeMetricFamily:
        m = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for values, value in self.rows:
            m.add_metric(values, value)
        return m

    def header(self) -> str:
        doc = self.doc.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {doc}\n# TYPE {self.name} gauge\n"

    def text(self) -> str:
        """The family in the text format (0.0.4), as prometheus_client's generate_latest writes
        it, but labels in declared order and numbers in Python's repr."""
        out = TextFamily(self.name, self.doc, self.labels, {})
        for values, value in self.rows:
            out.add_metric(values, value)
        return out.text()


class TextFamily(Family):
    """A family that writes each row's line of text as it is added: the dashboard's, where
    1,000 hosts make 100,000s of rows. ``memo``, shared by the families of one exposition, keeps
    each label list's text by identity (and the list, so the identity stays unique): the families
    of one GPU share one list, so it is escaped and joined once."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 memo: dict[str, dict[int, tuple[Sequence[str], str]]]) -> None:
        super().__init__(name, doc, labels)
        self._memo = memo.setdefault(",".join(self.labels), {})  # by label names, then id
        # 'host="{}",gpu="{}"': one format call per label list (braces in a name: none, as
        # label names are [a-zA-Z_][a-zA-Z0-9_]*)
        self._template = "{{" + ",".join(f'{label}="{{}}"' for label in self.labels) + "}}"
        if not self.labels:
            self._template = ""

    def add_metric(self, values: Sequence[str], value: float) -> None:
        key = id(values)
        hit = self._memo.get(key)
        if hit is None:
            raw = "".join(values)
            if "\\" in raw or '"' in raw or "\n" in raw:
                values_text = self._template.format(*map(_escape, values))
            else:
                values_text = self._template.format(*values)
            hit = self._memo[key] = (values, values_text)
        # Integers (bytes, counts, timestamps) as they are; floats in Python's shortest repr,
        # which Prometheus parses as Go's (prometheus_client writes 1.5e+09 where this writes
        # 1500000000.0: the same number); only inf and nan differ.
        if type(value) is int:
            number = str(value)
        else:
            number = repr(float(value))
            if not number[-1].isdigit():
                number = _NOT_FINITE[number]
        self.rows.append(f"{self.name}{hit[1]} {number}\n")

    def text(self) -> str:
        return self.header() + "".join(self.rows)


def exposition(families: Iterable[Family]) -> str:
    """Families in the text format."""
    return "".join(f.text() for f in families)


class HostFamilies:
    """The metric families of one exposition: ``add`` each host's HostInfo, then ``metrics``
    (prometheus_client's families) or, made with ``text=True``, ``exposition(filled())``.

    ``extra_labels`` (say ``["host"]``) come first on every series; ``add`` takes their values.
    ``pids``: per-process series (churn: opt-in). ``dcgm``: the DCGM-compatible family too.
    """

    def __init__(self, *, pids: bool = False, dcgm: bool = True,
                 extra_labels: Sequence[str] = (), text: bool = False) -> None:
        self.pids = pids
        memo: dict[str, dict[int, tuple[Sequence[str], str]]] = {}
        self._family: Callable[[str, str, Sequence[str]], Family] = (
            (lambda name, doc, labels: TextFamily(name, doc, labels, memo)) if text else Family)
        self.extra = list(extra_labels)
        self.dcgm: dict[str, Family] = {}
        self.native: dict[str, Family] = {}
        if dcgm:
            self._dcgm_families()
        self._native_families()

    def _dcgm_families(self) -> None:
        def d(name: str, doc: str) -> None:
            self.dcgm[name] = self._family(name, doc, self.extra + DCGM_LABELS)

        d("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")
        d("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")
        d("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).")
        d("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).")
        d("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).")
        d("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).")
        d("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")
        d("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).")

    def _native_families(self) -> None:
        def n(name: str, doc: str, labels: list[str]) -> None:
            self.native[name] = self._family(f"hmonitor_{name}", doc, self.extra + labels)

        n("gpu_up", "1 for a working GPU, 0 for one the driver lost (reason in error).",
          ["gpu", "error"])
        n("gpu_utilization_ratio", "GPU utilization, 0 to 1 (not on a MIG GPU).", GPU_LABELS)
        n("gpu_memory_used_bytes", "GPU memory in use.", GPU_LABELS)
        n("gpu_memory_total_bytes", "GPU memory, total.", GPU_LABELS)
        n("gpu_temperature_celsius", "GPU temperature.", GPU_LABELS)
        n("gpu_fan_speed_ratio", "Fan speed, 0 to 1 (0 where the GPU has no fan).", GPU_LABELS)
        n("gpu_power_watts", "Power draw.", GPU_LABELS)
        n("gpu_power_limit_watts", "Enforced power limit.", GPU_LABELS)
        n("gpu_sm_clock_hertz", "SM clock frequency.", GPU_LABELS)
        n("gpu_user_memory_bytes", "GPU memory held by one user's processes (at most "
          f"{MAX_USERS_PER_GPU} users per GPU, the rest as user=\"{OTHER_USER}\").",
          ["gpu", "user"])
        n("gpu_user_processes", "Processes of one user on the GPU (bounded as the memory).",
          ["gpu", "user"])
        # Not "job": Prometheus's own target label (the exported one would become exported_job).
        n("gpu_job_memory_bytes", "GPU memory held by one user's processes in one Slurm job "
          "(slurm_job=\"\" for those outside a job), on GPUs running a job (bounded as the "
          "users).", ["gpu", "slurm_job", "user"])
        if self.pids:
            n("process_gpu_memory_bytes", "GPU memory held by one process (--metrics-pids).",
              ["gpu", "pid", "user", "command"])
        n("account_expiry_timestamp_seconds",
          "When the account of a user holding a GPU expires (accounts with an expiry date only).",
          ["user"])
        n("disk_used_bytes", "Disk space in use.", ["mount", "device"])
        n("disk_total_bytes", "Disk size.", ["mount", "device"])
        n("host_load1", "One-minute load average.", [])
        n("host_memory_used_bytes", "Host memory in use (total - available).", [])
        n("host_memory_total_bytes", "Host memory, total.", [])

    def add(self, info: hm_pb2.HostInfo, extra: Sequence[str] = ()) -> None:
        """One host's series; ``extra``: the values of ``extra_labels``."""
        x = tuple(extra)  # label values as tuples of str: the GC stops tracking them
        for g in info.gpus:
            self._gpu(g, info.hostname, x)
        self._expiry(info, x)
        nat = self.native
        for d in info.disks:
            labels = (*x, d.mount, d.device)
            nat["disk_used_bytes"].add_metric(labels, d.used)
            nat["disk_total_bytes"].add_metric(labels, d.total)
        if info.HasField("load1"):
            nat["host_load1"].add_metric(x, info.load1)
        if info.mem_total:
            nat["host_memory_used_bytes"].add_metric(x, info.mem_used)
            nat["host_memory_total_bytes"].add_metric(x, info.mem_total)

    def filled(self) -> list[Family]:
        """The families with samples (one with none says nothing: left out), DCGM first."""
        return [f for f in (*self.dcgm.values(), *self.native.values()) if f.rows]

    def metrics(self) -> list[Metric]:
        """``filled()`` as prometheus_client families."""
        return [f.metric() for f in self.filled()]

    def _gpu(self, g: hm_pb2.GPUInfo, hostname: str, x: tuple[str, ...]) -> None:
        nat, dc = self.native, self.dcgm
        index = str(g.id)
        if is_lost(g.name):  # only its index and reason are known: no readings, no DCGM series
            nat["gpu_up"].add_metric((*x, index, lost_reason(g.name)), 0)
            return
        nat["gpu_up"].add_metric((*x, index, ""), 1)
        own = (*x, index, g.uuid, g.name)
        mig = g.HasField("mig_enabled") and g.mig_enabled
        if not mig:  # NVML reports no utilization for a GPU in MIG mode
            nat["gpu_utilization_ratio"].add_metric(own, g.utilization / 100)
        nat["gpu_memory_used_bytes"].add_metric(own, g.mem_used)
        nat["gpu_memory_total_bytes"].add_metric(own, g.mem_total)
        nat["gpu_temperature_celsius"].add_metric(own, g.temp)
        nat["gpu_fan_speed_ratio"].add_metric(own, g.fanspeed / 100)
        power = g.HasField("power_mw")
        clock = g.HasField("sm_clock_mhz")
        if power:
            nat["gpu_power_watts"].add_metric(own, g.power_mw / 1000)
        if g.HasField("power_limit_mw"):
            nat["gpu_power_limit_watts"].add_metric(own, g.power_limit_mw / 1000)
        if clock:
            nat["gpu_sm_clock_hertz"].add_metric(own, g.sm_clock_mhz * 1_000_000)
        if dc:
            dcgm = (*x, index, g.uuid, f"nvidia{g.id}", g.name, hostname)
            if not mig:
                dc["DCGM_FI_DEV_GPU_UTIL"].add_metric(dcgm, g.utilization)
            dc["DCGM_FI_DEV_GPU_TEMP"].add_metric(dcgm, g.temp)
            # Whole MiB, truncated, as dcgm-exporter reports them.
            dc["DCGM_FI_DEV_FB_USED"].add_metric(dcgm, g.mem_used // MIB)
            dc["DCGM_FI_DEV_FB_FREE"].add_metric(dcgm, max(g.mem_total - g.mem_used, 0) // MIB)
            dc["DCGM_FI_DEV_FB_TOTAL"].add_metric(dcgm, g.mem_total // MIB)
            dc["DCGM_FI_DEV_FAN_SPEED"].add_metric(dcgm, g.fanspeed)
            if power:
                dc["DCGM_FI_DEV_POWER_USAGE"].add_metric(dcgm, g.power_mw / 1000)
            if clock:
                dc["DCGM_FI_DEV_SM_CLOCK"].add_metric(dcgm, g.sm_clock_mhz)
        self._users(index, g.procs, x)

    def _users(self, index: str, procs: Iterable[hm_pb2.ProcInfo], x: tuple[str, ...]) -> None:
        """Per-user memory and process counts on one GPU, at most MAX_USERS_PER_GPU users; on a
        GPU running a Slurm job, per (user, job) memory too (job "" for the user's processes
        outside a job: the history splits a user's share of the GPU between these groups, as
        the SQLite history does).

        A process is counted once per GPU: on a MIG GPU, NVML lists it once per (GPU instance,
        compute instance) it uses, and its memory is the sum of those entries."""
        held: dict[str, list[int]] = {}  # user -> [bytes, processes]
        groups: dict[tuple[str, str], list[int]] = {}  # (user, job) -> [bytes, processes]
        by_pid: dict[int, list[Any]] = {}  # pid -> [user, job, bytes, command]
        in_job = False
        for p in procs:
            seen = by_pid.get(p.pid)
            if seen is not None:  # the same process on another MIG instance of this GPU
                seen[2] += p.mem
                held[seen[0]][0] += p.mem
                groups[(seen[0], seen[1])][0] += p.mem
                continue
            user = proc_owner(p)
            job = ""
            if p.HasField("job"):
                job, in_job = str(p.job.id), True
            by_pid[p.pid] = [user, job, p.mem, p.basename]
            entry = held.setdefault(user, [0, 0])
            entry[0] += p.mem
            entry[1] += 1
            entry = groups.setdefault((user, job), [0, 0])
            entry[0] += p.mem
            entry[1] += 1
        if self.pids:
            family = self.native["process_gpu_memory_bytes"]
            for pid, (user, _, mem, command) in by_pid.items():
                family.add_metric((*x, index, str(pid), user, command), mem)
        memory, count = self.native["gpu_user_memory_bytes"], self.native["gpu_user_processes"]
        for user, (mem, n) in _bounded(held, OTHER_USER):
            labels = (*x, index, user)
            memory.add_metric(labels, mem)
            count.add_metric(labels, n)
        if in_job:
            family = self.native["gpu_job_memory_bytes"]
            for (user, job), (mem, _) in _bounded(groups, (OTHER_USER, "")):
                family.add_metric((*x, index, job, user), mem)

    def _expiry(self, info: hm_pb2.HostInfo, x: tuple[str, ...]) -> None:
        """Expiry of the accounts holding a GPU now, where the account has a date (not unknown or
        never); "expired on day 0" is the date 0. The earliest where one user's processes
        differ."""
        when: dict[str, int] = {}
        for g in info.gpus:
            for p in g.procs:
                if p.expiration >= EXPIRED_AT_EPOCH:
                    date = 0 if p.expiration == EXPIRED_AT_EPOCH else p.expiration
                    user = proc_owner(p)
                    when[user] = min(when.get(user, date), date)
        family = self.native["account_expiry_timestamp_seconds"]
        for user, date in sorted(when.items()):
            family.add_metric((*x, user), date)


def lost_reason(name: str) -> str:
    """A lost GPU's reason, from its wire name "GPU lost: <reason>" (the ``error`` label)."""
    return name[len(LOST_PREFIX):].strip() if is_lost(name) else name


def _bounded(held: dict[Any, list[int]], other: Any) -> list[tuple[Any, list[int]]]:
    """``held`` (key -> [bytes, processes]) most memory first, at most MAX_USERS_PER_GPU
    entries: the smallest summed under ``other``."""
    ranked = sorted(held.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    if len(ranked) > MAX_USERS_PER_GPU:
        kept, rest = ranked[: MAX_USERS_PER_GPU - 1], ranked[MAX_USERS_PER_GPU - 1 :]
        ranked = [*kept, (other, [sum(v[0] for _, v in rest), sum(v[1] for _, v in rest)])]
    return ranked
