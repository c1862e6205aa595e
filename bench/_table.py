"""A plain-text table for the benchmarks' output (no dependencies)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The title, then columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    ncols = max(len(r) for r in cells)
    for r in cells:
        r.extend([""] * (ncols - len(r)))
    widths = [max(len(r[i]) for r in cells) for i in range(ncols)]
    numeric = [
        all(_is_number(row[i]) for row in rows if i < len(row)) and bool(rows)
        for i in range(ncols)
    ]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            (c.rjust(w) if num else c.ljust(w))
            for c, w, num in zip(r, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, rule, line(cells[0]), rule, *(line(r) for r in cells[1:]), rule])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(format_table(title, headers, rows), flush=True)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
