"""The one line-numbered JSONL parser (plain or gzip files, or lines in memory) behind every JSONL reader."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Row = tuple[int, dict[str, Any]]
"""A table row with its 1-based line (JSONL/CSV) or row (Parquet, JSON array, hub) number."""


def parse_jsonl_lines(lines: Iterable[str]) -> tuple[list[Row], list[tuple[int, str]]]:
    """``(line number, object)`` for every JSON-object line and ``(line number, problem)`` for every bad one.

    Blank lines are skipped; line numbers are 1-based so error messages can point at the file.
    """
    rows: list[Row] = []
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((lineno, f"invalid JSON ({exc.msg})"))
            continue
        if isinstance(row, dict):
            rows.append((lineno, row))
        else:
            bad.append((lineno, "not a JSON object"))
    return rows, bad


def read_jsonl_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """:func:`parse_jsonl_lines` over a ``.jsonl`` or gzip-compressed ``.jsonl.gz`` / ``.json.gz`` file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        return parse_jsonl_lines(fh)
