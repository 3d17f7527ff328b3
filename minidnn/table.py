"""Plain-text tables for summaries and result reports."""
from __future__ import annotations


def format_table(rows: list[tuple[str, ...]], footer: str, right_align: bool = False) -> str:
    """Header row, a rule, the body, a rule and a footer line; columns padded to fit."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    pad = str.rjust if right_align else str.ljust
    lines = ["  ".join(pad(cell, width) for cell, width in zip(row, widths)) for row in rows]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:], rule, footer])
