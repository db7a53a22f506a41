"""Helpers shared by the example scripts: tables in Markdown, and the output directory.

Not part of the library. Each example imports this file from its own directory, so the scripts run
as ``python examples/NAME.py`` from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: the examples never open a window


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a GitHub Markdown table (what the README shows, exactly as printed)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def output_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) and return the directory that receives PNGs and TensorBoard event files."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
