"""Sends the queued messages, off the polling path, each destination on its own thread.

A message that fails is tried again with backoff (by default 30 s, 1 min, 2 min ... at most an
hour apart, ``MAX_ATTEMPTS`` in all, about 8 hours; ``notify_retry_seconds`` sets the first)
unless the failure is permanent (a 4xx, a refused recipient, a wrong password). A destination
that hangs holds only its own thread, for at most its timeout: the others, and the rounds, go
on. The queue is the SQLite store, so a restart resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hmonitor.web.notify.senders import DeliveryError, Message, Sender
from hmonitor.web.notify.store import AlertStore, Delivery

__all__ = ["MAX_ATTEMPTS", "Outbox", "backoff"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
LONGEST_WAIT_S = 3600.0


def backoff(attempts: int, first: float = 30.0) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return float(min(first * 2 ** (attempts - 1), LONGEST_WAIT_S))


class Outbox:
    def __init__(self, store: AlertStore, senders: Callable[[str], Sender | None],
                 *, first_retry: float = 30.0) -> None:
        """``senders``: the sender of a channel ("email", "webhook:0"...), None if no longer
        configured. ``first_retry``: seconds before the first retry."""
        self.store = store
        self._senders = senders
        self._first = first_retry
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hmonitor-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                busy = set(self._busy)
            try:
                due, later = self.store.due(time.time(), busy)
            except Exception:  # a broken database must not end the thread silently
                log.exception("outbox: reading the queue failed")
                due, later = [], time.time() + 30
            for d in due:
                with self._cond:
                    self._busy.add(d.channel)
                threading.Thread(target=self._deliver, args=(d,), daemon=True,
                                 name=f"hmonitor-send-{d.channel}").start()
            with self._cond:
                if self._closed:
                    return
                wait = 60.0 if later is None else max(0.05, later - time.time())
                if not due:
                    self._cond.wait(timeout=wait)

    def _deliver(self, d: Delivery) -> None:
        try:
            sender = self._senders(d.channel)
            if sender is None:
                self.store.failed(d.id, f"{d.channel} is no longer configured", None)
                return
            try:
                sender.send(Message(d.subject, d.body, d.payload), d.recipients)
            except DeliveryError as err:
                attempts = d.attempts + 1
                retry = None
                if not err.permanent and attempts < MAX_ATTEMPTS:
                    retry = time.time() + backoff(attempts, self._first)
                self.store.failed(d.id, str(err), retry)
                log.warning("notification %d to %s failed (attempt %d%s): %s", d.id,
                            sender.name, attempts, ", retrying" if retry else ", giving up", err)
            except Exception as err:  # a sender's bug: recorded, tried again later
                log.exception("notification %d to %s failed", d.id, d.channel)
                self.store.failed(d.id, f"{type(err).__name__}: {err}",
                                  time.time() + backoff(d.attempts + 1, self._first))
            else:
                self.store.delivered(d.id, time.time())
        except Exception:
            log.exception("outbox: recording notification %d failed", d.id)
        finally:
            with self._cond:
                self._busy.discard(d.channel)
                self._cond.notify_all()
