"""The owner label lives in ``hmonitor.wire`` (the agent's uid encoding is part of the rule);
re-exported here for the web modules that import it from this place."""

from __future__ import annotations

from hmonitor.wire import owner_label

__all__ = ["owner_label"]
