"""Dataset loader for the local lm-eval test task: the JSONL next to this file via the datasets "json" builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_local_json(data_file: str = "knowledge.jsonl", **_: Any) -> Any:
    """``DatasetDict({"test": ...})`` from ``data_file`` (relative to this folder). Extra lm-eval metadata
    keyword arguments are ignored."""
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(HERE / data_file)})
