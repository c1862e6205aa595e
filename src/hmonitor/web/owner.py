"""One name for a process owner everywhere (overview, users page, history, API)."""

from __future__ import annotations


def owner_label(username: str, uid: int) -> str:
    """The username; an owner without one (no passwd entry, a container's uid) by uid, never
    hidden; "unknown" when the agent could not look the process up at all (uid -1)."""
    if username:
        return username
    return f"uid {uid}" if uid >= 0 else "unknown"
