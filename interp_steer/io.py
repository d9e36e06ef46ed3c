"""Atomic file writes shared by every command and report: write beside the target, then ``os.replace``, so a
crash or bad input never leaves a partial file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def save_safetensors_atomic(tensors: dict[str, Any], path: str | os.PathLike[str],
                            metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to a ``.safetensors`` file atomically (never a pickle), creating its folder."""
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_figure_atomic(fig: Any, path: str | os.PathLike[str]) -> Path:
    """A self-contained plotly HTML page (plotly.js inlined, no CDN) for one figure, written atomically."""
    return write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))
