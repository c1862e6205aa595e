"""Reading Prometheus exposition text in tests: every sample by (name, labels), and look-ups.

Used by the tests of the agent's /metrics (unit and integration) and by bench/.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition (text format 0.0.4 or OpenMetrics' common subset)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def of(found: Samples, name: str) -> dict[Labels, float]:
    """The samples of one metric name, by their label sets."""
    return {labels: v for (n, labels), v in found.items() if n == name}


def one(found: Samples, name: str, **labels: str) -> float:
    """The value of the one sample with exactly these labels (KeyError when absent)."""
    return found[(name, frozenset(labels.items()))]


def names(found: Samples) -> set[str]:
    """The metric names that have samples."""
    return {n for n, _ in found}
