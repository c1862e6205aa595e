"""The notifier's work after each polling round, at cluster scale, against the history's.

    python bench/notify.py [--hosts 1000]

Both run on the poller's notifier thread after every round, one after the other, so together
they must stay well inside the polling interval. The cluster is tests/builders.py's ``cluster``:
N hosts x 8 H200s x 4 processes, every host's /scratch at 93 % (a disk_full alert each).

* the notifier (``Notifier.on_round`` on a real alerts.sqlite, admins' e-mail and a webhook):
  the round where N alerts start (N events grouped into 2 messages), the steady rounds while
  they fire, and the round where they all end;
* baseline: ``SqliteHistory.ingest`` of the same round, the recorder's work per round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from _table import print_table  # noqa: E402
from builders import cluster  # noqa: E402

from hmonitor._pb import hm_pb2  # noqa: E402
from hmonitor.web.history import SqliteHistory  # noqa: E402
from hmonitor.web.notify.config import check_notify  # noqa: E402
from hmonitor.web.notify.engine import Notifier  # noqa: E402
from hmonitor.web.notify.store import AlertStore  # noqa: E402

ROUNDS = 10


def _ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()
    states = cluster(args.hosts, 8, 4)
    calm = cluster(args.hosts, 8, 4)
    for s in calm:
        assert s.info is not None
        for d in s.info.disks:
            d.CopyFrom(hm_pb2.DiskInfo(device=d.device, mount=d.mount, total=d.total,
                                       used=d.total // 2))
    config, problems = check_notify({
        "smtp_host": "smtp.lab.example", "mail_from": "hmonitor@lab.example",
        "admin_emails": ["admins@lab.example"], "webhooks": ["https://hooks.example/in"],
        "user_email": "{user}@lab.example"})
    assert not problems, problems
    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(tmp) / "alerts.sqlite")
        notifier = Notifier(store, config, hogs=lambda now: [])
        start = _ms(lambda: notifier.on_round(states, time.time()))
        steady = [_ms(lambda: notifier.on_round(states, time.time())) for _ in range(ROUNDS)]
        end = _ms(lambda: notifier.on_round(calm, time.time()))
        quiet = [_ms(lambda: notifier.on_round(calm, time.time())) for _ in range(ROUNDS)]
        messages = len(store.deliveries(10_000))
        store.close()
        history = SqliteHistory(Path(tmp) / "history.sqlite")
        t = time.time()
        ingest = []
        for i in range(ROUNDS):
            at = t + i * 10
            ingest.append(_ms(lambda: history.ingest(states, at)))  # noqa: B023 - called now
        history.close()
    n = args.hosts
    print_table(
        f"After each round: {n:,} hosts x 8 GPUs x 4 processes ({n:,} disks at 93 %), "
        f"median of {ROUNDS} rounds",
        ["work", "ms", "note"],
        [
            [f"notifier: {n:,} alerts start", f"{start:.1f}", f"{messages} messages queued in "
             f"all: per round that starts or ends alerts, one e-mail and one webhook post"],
            ["notifier: steady, all firing", f"{statistics.median(steady):.1f}", ""],
            [f"notifier: {n:,} alerts end", f"{end:.1f}", ""],
            ["notifier: nothing wrong", f"{statistics.median(quiet):.1f}", ""],
            ["baseline: history ingest of the round", f"{statistics.median(ingest):.1f}",
             "the recorder, on the same thread"],
        ],
    )


if __name__ == "__main__":
    main()
