"""The recorder: what the poller calls after every round. It hands the round to the store in one
transaction, maintains the store at its cadence (more often while there is a backlog), and tells
storage faults in one line a minute, never a traceback per round; the poller's thread goes on
whatever the disk does."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hmonitor.web.history.backend import IdleHog
from hmonitor.web.history.store import SqliteHistory
from hmonitor.web.hoststate import HostSample
from hmonitor.web.settings import Settings
from hmonitor.web.storage import FaultLog

log = logging.getLogger(__name__)

MAINTAIN_EVERY_S = 120.0  # rollups, compaction and retention: incremental, off the request path
MAINTAIN_BUDGET_S = 2.0
CATCH_UP_SHARE = 0.4  # of the polling interval, per round, while maintenance has a backlog
CATCH_UP_MAX_S = 5.0


class MaintainSchedule:
    """When the poller's callback thread maintains the history, and for how long.

    Every `every` seconds with `budget` seconds, which keeps up with a lab of hundreds of GPUs
    in one short call. When a call leaves work (`done` False: a backlog, as with 100,000
    processes a round, or after downtime), again at the next round, with `share` of the polling
    interval (at most `catch_up_max`): the backlog is worked off within minutes, and the thread
    still finishes each round well before the next one (the poller skips rounds otherwise).
    After a failure, the next try waits `every` (a full disk fails every attempt).
    """

    def __init__(
        self,
        interval: float,
        *,
        every: float = MAINTAIN_EVERY_S,
        budget: float = MAINTAIN_BUDGET_S,
        share: float = CATCH_UP_SHARE,
        catch_up_max: float = CATCH_UP_MAX_S,
    ) -> None:
        self.every = every
        self.normal_budget = budget
        self.catch_up_budget = max(0.25, min(catch_up_max, share * interval))
        self._last: float | None = None
        self._behind = False

    def due(self, now: float) -> bool:
        return self._behind or self._last is None or now - self._last >= self.every

    @property
    def budget(self) -> float:
        return self.catch_up_budget if self._behind else self.normal_budget

    def ran(self, now: float, done: bool) -> None:
        self._last = now
        self._behind = not done

    def failed(self, now: float) -> None:
        self._last = now
        self._behind = False


HISTORY_FILE = "history.sqlite"


class HistoryRecorder:
    """Feeds the SQLite history (``store``, also the dashboard's ``HistoryBackend``)."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        *,
        fault_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Opens `data_dir`/history.sqlite; a file that cannot be used raises
        `hmonitor.web.storage.StorageError`, whose message is one line naming it."""
        self.path = path = data_dir / HISTORY_FILE
        self.store = SqliteHistory(
            path,
            raw_days=settings.history_raw_days,
            keep_days=settings.history_keep_days,
            interval=settings.interval,
        )
        self.schedule = MaintainSchedule(settings.interval)
        self._idle_rule = (settings.idle_util_threshold, settings.idle_minutes * 60)
        #: The processes holding an idle GPU for long, as of the last round stored (None until
        #: one is): worked out here, once a round, rather than by whichever page asks (a
        #: quarter of a second at 8,000 GPUs).
        self.idle_hogs: list[IdleHog] | None = None
        self._fault_clock = fault_clock
        # Rounds and maintenance fail apart (a nearly full disk may take rounds but not the
        # blobs compaction writes): each logs once a minute, and its recovery once.
        self._round_faults = FaultLog(path, log, clock=fault_clock)
        self._maintain_faults = FaultLog(path, log, clock=fault_clock)
        self._messages = {"round": "", "maintain": ""}
        self._last_bug: float | None = None

    @property
    def fault(self) -> str:
        """The history file's current fault in one line, "" when the last writes worked."""
        if self._round_faults.problem:
            return self._messages["round"]
        if self._maintain_faults.problem:
            return self._messages["maintain"]
        return ""

    def on_round(self, states: Sequence[HostSample], started: float) -> None:
        """The poller's callback (its own thread): one transaction per round, then maintenance
        when due. Never raises: storage faults are logged once a minute (FaultLog)."""
        try:
            self.store.ingest(states, started)
        except (sqlite3.Error, OSError) as err:
            self._messages["round"] = self._round_faults.failed(
                f"storing the round of {time.ctime(started)}", err)
            return
        except Exception:  # noqa: BLE001 - logged by _bug; the poller's thread must go on
            self._bug(f"history: could not store the round of {time.ctime(started)}")
            return
        self._round_faults.worked()
        try:
            util, seconds = self._idle_rule
            self.idle_hogs = self.store.idle_hogs(started, util_threshold=util,
                                                  min_seconds=seconds)
        except (sqlite3.Error, OSError):
            self.idle_hogs = None  # the pages ask the store themselves
        if not self.schedule.due(started):
            return
        try:
            report = self.store.maintain(started, budget_s=self.schedule.budget)
        except (sqlite3.Error, OSError) as err:
            self.schedule.failed(started)
            self._messages["maintain"] = self._maintain_faults.failed(
                "maintenance (roll-ups, compaction, retention)", err)
            return
        except Exception:  # noqa: BLE001 - as above
            self.schedule.failed(started)
            self._bug("history: maintenance failed")
            return
        self.schedule.ran(started, report.done)
        self._maintain_faults.worked()

    def _bug(self, what: str) -> None:
        """Not a storage fault: a traceback, at most once a minute (it may recur each round)."""
        now = self._fault_clock()
        if self._last_bug is None or now - self._last_bug >= 60:
            self._last_bug = now
            log.exception("%s", what)

    def close(self) -> None:
        self.store.close()
