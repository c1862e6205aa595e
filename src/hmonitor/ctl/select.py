"""Which GPUs are free for a job, and which host to start a K-GPU job on.

"Free" is the dashboard's rule (``hmonitor.rules.gpu_is_free``: no process, utilization under
5 %, under 5 % of memory used, not lost, not in MIG mode) on up hosts only; a down host's last
snapshot says nothing about now. On top of it a user may ask for free memory (``--min-mem``),
a stricter or looser utilization threshold (``--max-util``) and hosts (``--host``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hmonitor.ctl.model import Gpu, Host

__all__ = ["Criteria", "Pick", "Placement", "could_fit", "free_gpus", "host_matches",
           "pick_host"]


@dataclass(frozen=True)
class Criteria:
    min_mem: int = 0  # bytes free at least
    max_util: float | None = None  # utilization under this %; None: the dashboard's threshold
    host: str | None = None  # a glob over the host's names (see host_matches)


@dataclass(frozen=True)
class Pick:
    host: Host
    gpu: Gpu


@dataclass(frozen=True)
class Placement:
    host: Host
    gpus: tuple[Gpu, ...]  # in index order, as CUDA_VISIBLE_DEVICES lists them


def host_matches(host: Host, pattern: str | None) -> bool:
    """A shell-style glob (``gpu0*``), without case, over the dashboard's name for the host and
    the agent's own hostname, full or short: ``--host "$(hostname)"`` works on the host itself
    whatever settings.py calls it."""
    if pattern is None:
        return True
    short = host.hostname.split(".")[0]
    names = {n.lower() for n in (host.name, host.hostname, short) if n}
    return any(fnmatch.fnmatchcase(n, pattern.lower()) for n in names)


def _fits(gpu: Gpu, criteria: Criteria) -> bool:
    return gpu.free(criteria.max_util) and gpu.mem_free >= criteria.min_mem


def _best_first(pick: tuple[int, Pick]) -> tuple[int, int, int, int, int]:
    order, p = pick
    # Most memory free first (the bigger GPU), then the idlest and coolest; ties in the
    # dashboard's host order and by index, so the answer is the same every time.
    return (-p.gpu.mem_free, p.gpu.utilization, p.gpu.temp, order, p.gpu.index)


def free_gpus(hosts: Iterable[Host], criteria: Criteria = Criteria()) -> list[Pick]:
    """Every GPU that fits, best first."""
    found = [(order, Pick(h, g)) for order, h in enumerate(hosts)
             if h.up and host_matches(h, criteria.host)
             for g in h.gpus if _fits(g, criteria)]
    return [p for _, p in sorted(found, key=_best_first)]


def pick_host(hosts: Sequence[Host], k: int, criteria: Criteria = Criteria()
              ) -> Placement | None:
    """K free GPUs on one host, or None. Of the hosts with K or more, the one with the fewest
    free GPUs (best fit), so that hosts with many free GPUs stay whole for bigger jobs; among
    those, the one whose K-th best GPU has the most memory free, then the first listed."""
    by_host: dict[str, list[Pick]] = {}
    order = {h.name: i for i, h in enumerate(hosts)}
    for pick in free_gpus(hosts, criteria):
        by_host.setdefault(pick.host.name, []).append(pick)
    fitting = [picks for picks in by_host.values() if len(picks) >= k]
    if not fitting:
        return None
    best = min(fitting, key=lambda ps: (len(ps), -ps[k - 1].gpu.mem_free,
                                        order[ps[0].host.name]))
    chosen = sorted((p.gpu for p in best[:k]), key=lambda g: g.index)
    return Placement(best[0].host, tuple(chosen))


def could_fit(hosts: Iterable[Host], k: int, criteria: Criteria = Criteria()) -> bool:
    """Whether some matching host (up or down) has K GPUs that could ever fit: big enough, not
    lost, not in MIG mode. ``wait`` warns when none has, since it would wait for ever."""
    for h in hosts:
        if host_matches(h, criteria.host):
            usable = [g for g in h.gpus if not g.lost and not g.mig_enabled
                      and g.mem_total >= criteria.min_mem]
            if len(usable) >= k:
                return True
    return False
