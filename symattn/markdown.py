"""The one Markdown table writer (benchmarks, the overhead bench, the analysis tables)."""

from __future__ import annotations


def markdown_table(head: list[str], body: list[list[str]], text_columns: int = 1) -> str:
    """A Markdown table of text cells, padded to line up: the first `text_columns` columns
    left-aligned, the others (numbers) right-aligned. `|` in a cell is escaped."""
    head = [_escape(c) for c in head]
    body = [[_escape(c) for c in row] for row in body]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if i < text_columns else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(head), rule, *(line(row) for row in body)])


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|")
