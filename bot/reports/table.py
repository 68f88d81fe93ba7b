"""Plain-text tables for the terminal and for Discord code blocks."""

from __future__ import annotations

from collections.abc import Sequence

# Discord refuses messages longer than this.
DISCORD_MESSAGE_CHARS = 2000


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def code_block(text: str, limit: int = DISCORD_MESSAGE_CHARS) -> str:
    """`text` in a Discord code block of at most `limit` characters, cut at a line."""
    fence = "```"
    room = limit - 2 * len(fence) - 2
    if len(text) <= room:
        return f"{fence}\n{text}\n{fence}"
    lines = text.splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        note = f"… {len(lines) - index} more lines"
        if sum(len(k) + 1 for k in kept) + len(line) + 1 + len(note) > room:
            kept.append(note)
            break
        kept.append(line)
    return f"{fence}\n" + "\n".join(kept) + f"\n{fence}"


def _is_number(cell: str) -> bool:
    try:
        float(cell.rstrip("%").replace(",", ""))
    except ValueError:
        return False
    return True
