"""One validation layer for what callers pass in: numbers, files, folders, tensors and JSON output.

The CLI and the Python API call the same checks, before any model loads, so a bad value gets one
:class:`~interp_steer.errors.InterpSteerError` naming the problem instead of a traceback (or a silently wrong
result) after the expensive part.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp_steer.errors import InterpSteerError

if TYPE_CHECKING:
    import torch

# Entries above this magnitude are refused in steering tensors: float32 activations built from them overflow
# (1e30² is inf) and a model steered by them only emits empty or garbage text.
MAX_ABS_ENTRY = 1e6


def confidence_arg(text: str) -> float | None:
    """A ``--ppl-confidence`` value: a probability in [0.5, 1), or ``none`` (the measured ratio itself)."""
    import argparse

    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0.5, 1) or 'none', got {text!r}") from None
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0.5, 1) or 'none', got {text!r}")
    return value


def check_number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 strict_min: bool = False, integer: bool = False) -> float:
    """``value`` as a float when it is a finite number in range; otherwise one error naming ``name``.

    ``strict_min`` makes ``minimum`` exclusive (``lr > 0``); ``integer`` requires a whole number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_scalar_tensor(value):
        raise InterpSteerError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise InterpSteerError(f"{name} must be a finite number, got {x}")
    if integer and x != int(x):
        raise InterpSteerError(f"{name} must be a whole number, got {x}")
    if minimum is not None and (x <= minimum if strict_min else x < minimum):
        bound = f"> {minimum:g}" if strict_min else f">= {minimum:g}"
        raise InterpSteerError(f"{name} must be {bound}, got {_show(x, integer)}")
    if maximum is not None and x > maximum:
        raise InterpSteerError(f"{name} must be <= {maximum:g}, got {_show(x, integer)}")
    return x


def _show(x: float, integer: bool) -> str:
    return str(int(x)) if integer else f"{x:g}"


def _tensor_type() -> Any:
    """``torch.Tensor`` when torch is imported (a value cannot be a tensor otherwise): keeps this module, and
    the CLI's argument checks, free of the torch import."""
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else ()


def _is_scalar_tensor(value: Any) -> bool:
    return isinstance(value, _tensor_type()) and value.numel() == 1


def check_strength(strength: Any, name: str = "strength") -> None:
    """A steering strength: a finite number, or a tensor of finite numbers (several strengths as rows)."""
    if isinstance(strength, _tensor_type()):
        import torch

        if not bool(torch.isfinite(strength).all()):
            raise InterpSteerError(f"{name} must be finite, got {strength.tolist()}")
        return
    check_number(strength, name)


def check_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` when it is an existing, readable regular file; otherwise one error saying which it is not."""
    p = Path(path)
    if p.is_dir():
        raise InterpSteerError(f"{what} {p} is a directory, expected a file")
    if not p.exists():
        raise InterpSteerError(f"{what} not found: {p}")
    if not p.is_file():
        raise InterpSteerError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise InterpSteerError(f"{what} {p} is not readable (permission denied)")
    return p


def check_output_dir(path: str | os.PathLike[str], name: str = "--output-dir") -> Path:
    """``path`` can be (or already is) a folder: neither it nor a parent is an existing file."""
    p = Path(path)
    for part in (p, *p.parents):
        if part.exists() and not part.is_dir():
            which = "is" if part == p else f"is inside {part}, which is"
            raise InterpSteerError(f"{name} {p} {which} an existing file, not a folder")
    return p


def check_output_file(path: str | os.PathLike[str], name: str = "--output") -> Path:
    """``path`` can be written as a file: it is not a folder and no parent is a file."""
    p = Path(path)
    if p.is_dir():
        raise InterpSteerError(f"{name} {p} is a directory, expected a file path")
    check_output_dir(p.parent, name=f"{name} folder")
    return p


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """The UTF-8 text of ``path``; undecodable bytes give one error with their offset."""
    p = check_file(path, what)
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(p, exc) from None


def decode_error(path: str | os.PathLike[str], exc: UnicodeDecodeError) -> InterpSteerError:
    """The one-line error for a file that is not UTF-8 text, with the first bad byte's offset and line.

    ``exc`` may come from a streaming decoder (offsets relative to a chunk), so the file is decoded again in
    full to locate the byte exactly."""
    data = exc.object
    where = exc.start
    try:
        raw = Path(path).read_bytes()
        if str(path).endswith(".gz"):
            import gzip

            raw = gzip.decompress(raw)
        raw.decode("utf-8")
    except UnicodeDecodeError as full:
        data, where = full.object, full.start
    except OSError:
        pass
    bad = bytes(data[where : where + 1])
    line = bytes(data[:where]).count(b"\n") + 1
    return InterpSteerError(f"{path} is not UTF-8 text (byte 0x{bad.hex()} at offset {where}, line {line}); "
                            "re-save it as UTF-8")


def check_tensor(tensor: torch.Tensor, what: str, *, width: int | None = None) -> None:
    """A steering tensor is finite, of plausible magnitude and (with ``width``) as wide as its hook."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InterpSteerError(f"{what} must be a tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise InterpSteerError(f"{what} must be a floating-point tensor, got {tensor.dtype}")
    if tensor.ndim != 1:
        raise InterpSteerError(f"{what} must be 1-D, got shape {tuple(tensor.shape)}")
    if width is not None and tensor.shape[0] != width:
        raise InterpSteerError(f"{what} has {tensor.shape[0]} entries but its hook point is {width} wide")
    if tensor.numel():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            n = int((~finite).sum())
            raise InterpSteerError(f"{what} contains {n} NaN or infinite value(s)")
        peak = float(tensor.detach().abs().max())
        if peak > MAX_ABS_ENTRY:
            raise InterpSteerError(f"{what} has an entry of magnitude {peak:.3g} (limit {MAX_ABS_ENTRY:g}): "
                                   "its activations would overflow")


def hook_width(model: Any, hook: str) -> int | None:
    """The width of ``hook``'s activations for the hook kinds steering uses, from the config (no forward)."""
    cfg = model.cfg
    if hook.endswith(("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")):
        return int(cfg.d_model)
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")) and getattr(cfg, "d_mlp", None):
        return int(cfg.d_mlp)
    return None


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, so strict parsers accept it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, _tensor_type()):
        return finite_json(obj.tolist())
    if isinstance(obj, Mapping):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no ``NaN``/``Infinity`` literals: non-finite floats become ``null``)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


__all__ = [
    "MAX_ABS_ENTRY", "check_file", "check_number", "check_output_dir", "check_output_file", "check_strength",
    "check_tensor", "decode_error", "dumps", "finite_json", "hook_width", "read_text",
]
