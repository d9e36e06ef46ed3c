"""The one line-numbered JSONL reader (plain or gzip) behind the data loaders and the culture-set checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

Row = tuple[int, dict[str, Any]]


def read_jsonl_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """``(line number, object)`` for every JSON-object line and ``(line number, problem)`` for every bad one.

    Blank lines are skipped; line numbers are 1-based so error messages can point at the file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[Row] = []
    bad: list[tuple[int, str]] = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for lineno, line in enumerate(fh, 1):
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
