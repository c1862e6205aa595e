"""What the history store's tests share: rounds fed with maintenance calls that fail part-way."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pytest

from hmonitor.web.history import SqliteHistory
from hmonitor.web.hoststate import HostState


def ingest_with_failing_maintenance(
    monkeypatch: pytest.MonkeyPatch, store: SqliteHistory, rounds: Sequence[Sequence[HostState]],
    t0: float, *, step: float = 10.0, fail_every: int = 7,
) -> int:
    """Ingest ``rounds`` (one every ``step`` seconds from ``t0``), maintaining with no time
    budget every third round while every ``fail_every``-th watermark write raises; returns how
    many maintenance calls failed. Each piece around a failure must vanish without a trace."""
    calls = {"n": 0, "on": False}
    real_set_meta = SqliteHistory._set_meta

    def failing_set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
        if calls["on"]:
            calls["n"] += 1
            if calls["n"] % fail_every == 0:
                raise sqlite3.OperationalError("injected failure")
        real_set_meta(conn, key, value)

    monkeypatch.setattr(SqliteHistory, "_set_meta", staticmethod(failing_set_meta))
    failed = 0
    for i, states in enumerate(rounds):
        store.ingest(states, t0 + step * i)
        if i % 3 == 0:
            calls["on"] = True
            try:
                store.maintain(t0 + step * i, budget_s=0)
            except sqlite3.OperationalError:
                failed += 1
            calls["on"] = False
    return failed
