"""Durable history of the cluster: what the poller saw each round, kept in SQLite.

Layout (details in schema.sql):

* **head**: each round appends its raw rows (time-first keys, so a round writes a few pages),
  and what accounting needs of it, already summed per user, per GPU and user, and per Slurm
  job, user and host;
* **rollups**: `maintain` folds every closed minute of the head into 1-minute buckets, then every
  10-minute stretch of those into 10-minute and 1-hour buckets (sum, count and max per metric,
  plus GPU-seconds and GiB-seconds per user and per Slurm job), so long windows are answered
  from a few rows and nothing is rolled up twice: one watermark per step, advanced in the same
  transaction as the work it covers;
* **chunks**: `maintain` moves closed 10-minute slices of the head into one compressed blob per
  series, kept `raw_days`.

Queries pick the resolution from the window (`series`: raw up to ~10 samples per point, then the
finest bucket level that keeps the work small) and stitch coarser levels in where the finer one
has been deleted, finer ones where the coarser one is not filled yet. Windows are half-open:
[since, until).

Maintenance is done in pieces, each one short transaction bounded by rows, not by time: a piece
rolls up at most about `_ROLL_ROWS` head rows (but at least one minute), folds one 10-minute
stretch (one row per GPU, host, user and GPU-user pair), compacts the series of one slice whose
rows add up to about `_COMPACT_ROWS` (at least one series), or deletes at most `_RETAIN_ROWS`
aged-out rows. A `maintain` call takes one piece of each kind of work that is due in turn
(roll-up, compaction, retention) until its budget is spent, so no kind starves another however
big the rounds are; `done` is False while work is left, and the caller comes back sooner.

Size bound (measured on 2 cores by bench/history.py, 1,000 hosts x 8 GPUs x 12-13 processes =
100,000 processes a round at 10 s, and bench/history_soak.py, a month of 25 hosts x 8 GPUs):

* Head: the open 10-minute slice plus what maintenance has not caught up with, at most about
  15 minutes of rounds while it keeps up (at 100,000 processes a round: at most 77 rounds,
  12.8 minutes, with `HistoryRecorder` maintaining at every round while behind). A round costs
  there ~32 bytes per process and ~38 per GPU (3.5 MB at 100,000 processes, so ~270 MB at the
  worst moment); compacted pages are reused, so the file does not grow by it.
* Raw samples in chunks, kept `raw_days`: about 3 bytes per GPU-sample and 0.4-1 per
  process-sample (a series compresses to what changes in it).
* Roll-ups: about 44 bytes per bucket row; with the default retention (1-minute buckets 30
  days, 10-minute 90, hours 365) ~65,000 rows, ~2.9 MB, per GPU, ~2 MB per host, and ~20 %
  more for per-user and per-GPU-user accounting.

So a GPU costs about 3 MB after a year with the defaults (0.25 MB of it raw samples at 10 s),
plus ~35 KB per process running at a time (its 10 days of raw samples): a lab of 100 hosts x 8
GPUs ends near 3 GB, 1,000 hosts with 100,000 processes near 35 GB. The file stops growing once
the longest-kept level starts cutting (the soak, with retention of 5/10/15/20 days: flat at
~240 MB from day 20).

At 100,000 processes a round, ingest (~1.1 s a round on one core) is the limit, not
maintenance (compaction moves ~150,000 process rows a second); past some 500,000 processes a
round at 10 s the poller would skip rounds. Few huge hosts give the same rows as many small
ones (the poller caps an agent at 64 GPUs and 256 processes per GPU).

Concurrency: one writer (the poller thread calls `ingest` and `maintain`), any number of readers;
each reading thread gets its own connection and reads one consistent snapshot per call (WAL).
A kill -9 loses at most the round being written: every round is one transaction.
"""

from __future__ import annotations

from .accounting import _Accounting
from .ingest import _Ingest
from .maintenance import _Maintenance
from .queries import _Queries

__all__ = ["SqliteHistory"]


class SqliteHistory(_Ingest, _Maintenance, _Queries, _Accounting):
    """``HistoryBackend`` and ``HistoryWriter`` in one SQLite file (WAL); see above. Its parts
    live in ingest.py, maintenance.py, queries.py and accounting.py, over _core.py."""

    def __enter__(self) -> SqliteHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
