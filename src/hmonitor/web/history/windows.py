"""The named history windows people pick from (label -> seconds); the API also takes seconds."""

from __future__ import annotations

# The overview's sparklines and the spec-style windows of /api/v1/history and /sparklines.
SPARK_WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "10d": 10 * 86400.0}
DEFAULT_SPARK_WINDOW = "24h"
# The GPU detail page's charts.
DETAIL_WINDOWS: dict[str, float] = {
    "1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "10d": 10 * 86400.0,
    "30d": 30 * 86400.0, "1y": 365 * 86400.0,
}
DEFAULT_DETAIL_WINDOW = "24h"
