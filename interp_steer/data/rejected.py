"""``prep-rejected``: YaPO's data-preparation step. The current (still flawed) model answers every prompt and
its answer becomes the ``rejected`` side of a preference pair whose ``chosen`` side is the trusted answer.

Output: an append-only JSONL file, one self-contained row per input example::

    {"id": "egypt-02/localized/mcq", "prompt": "...", "chosen": "(B) Ful medames", "rejected": "<model answer>",
     "metadata": {...the input's metadata...},
     "generation": {"model": {...model_fingerprint...}, "max_new_tokens": 128, "temperature": 0.7,
                    "top_p": 0.9, "seed": 0, "batch_size": 8, "batch_seed": 16}}

``id`` is the input's own ``metadata["id"]`` when it has one, else its 0-based index. Answers are the
generator's output decoded with ``skip_special_tokens=True`` (cut at the end-of-turn token), nothing else.
The file loads back with :func:`~interp_steer.data.loaders.load_preferences`.

Resume guarantee: batches are fixed slices of the input (rows ``[k*batch_size, (k+1)*batch_size)``), each
generated in one call seeded with ``seed + k*batch_size``, and written + flushed + fsynced as a whole. A rerun
reads the file, drops a truncated last line (a run killed mid-write), skips ids already written and
regenerates only batches with missing rows (the whole batch, writing only the missing rows). So every row is
exactly what an uninterrupted run with the same settings, batch size and device would write, for greedy
and for sampled decoding alike; no id is written twice and none is lost. A rerun with other settings, another
model or other prompts for the same ids is refused. A rerun on a longer input (e.g. a larger ``--limit``)
keeps the rows written and fills in the rest on the same batch grid; when the shorter input ended inside a
batch, that batch's rows may differ from a single run on the longer input (its composition differed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from interp_steer.data.jsonl import parse_jsonl_lines
from interp_steer.data.loaders import (
    DCL_COLUMNS,
    FORMS,
    culture_preferences,
    is_local_source,
    load_deep_culture_lense,
    load_preferences,
    malformed_message,
    read_table,
)
from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError

log = logging.getLogger(__name__)

_SETTING_KEYS = ("model", "max_new_tokens", "temperature", "top_p", "seed", "batch_size")


def load_prep_input(source: str | Path, *, form: str = "mcq") -> list[PreferenceExample]:
    """The examples ``prep-rejected`` runs on.

    ``source``: ``"culture"`` (our culture set, :func:`culture_preferences` with ``form``), a Deep-Culture-Lense
    file or hub name (its ``form`` prompts and trusted answers), or a JSONL/CSV/Parquet file with ``prompt``
    and ``chosen`` columns (an ``id`` column, when present, becomes the row id).
    """
    if form not in FORMS:
        raise InterpSteerError(f"unknown form {form!r}; valid values: {list(FORMS)}")
    if str(source) == "culture":
        return culture_preferences(form=form, on_policy=False)
    if not is_local_source(source):
        if "/" in str(source):
            return load_deep_culture_lense(str(source), form=form, rejected_model="none")
        raise InterpSteerError(f"input {source!s} not found: expected 'culture', a Deep-Culture-Lense file or hub "
                               "name, or a .jsonl/.csv/.parquet file with prompt and chosen columns")
    table = read_table(source)
    if all(c in table.columns for c in DCL_COLUMNS):
        return load_deep_culture_lense(source, form=form, rejected_model="none")
    if table.rows and not all(c in table.columns for c in ("prompt", "chosen")):
        raise InterpSteerError(f"{source}: found columns {table.columns}; expected the Deep-Culture-Lense "
                               f"columns {list(DCL_COLUMNS)} or 'prompt' and 'chosen'")
    return load_preferences(source, rejected=None)


def _row_ids(examples: Sequence[PreferenceExample]) -> list[str]:
    ids = [str(ex.metadata["id"]) if "id" in ex.metadata else str(i) for i, ex in enumerate(examples)]
    duplicates = sorted(k for k, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise InterpSteerError(f"input ids are not unique: {duplicates[:5]}")
    return ids


def check_settings(*, max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    """Raise :class:`InterpSteerError` for settings ``generate`` cannot use."""
    if max_new_tokens < 1:
        raise InterpSteerError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise InterpSteerError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise InterpSteerError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise InterpSteerError(f"batch_size must be at least 1, got {batch_size}")


def _check_examples(examples: Sequence[PreferenceExample]) -> None:
    if not examples:
        raise InterpSteerError("no examples to generate rejected answers for")
    bad = [(i, "empty prompt") for i, ex in enumerate(examples) if not isinstance(ex.prompt, str) or not ex.prompt.strip()]
    if bad:
        raise InterpSteerError(malformed_message("input", bad, unit="example"))


def _read_output(path: Path) -> tuple[dict[str, dict[str, Any]], int | None]:
    """Rows already written (by id) and, when the last line is truncated, the byte offset to cut it at."""
    if not path.exists():
        return {}, None
    data = path.read_bytes()
    cut = None
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
    rows: dict[str, dict[str, Any]] = {}
    parsed, problems = parse_jsonl_lines(data.decode("utf-8").split("\n"))
    for lineno, row in parsed:
        if not all(k in row for k in ("id", "prompt", "rejected", "generation")):
            problems.append((lineno, "not a prep-rejected row (id, prompt, rejected, generation)"))
        elif str(row["id"]) in rows:
            problems.append((lineno, f"id {row['id']!r} appears twice"))
        else:
            rows[str(row["id"])] = row
    if problems:
        raise InterpSteerError(malformed_message(str(path), sorted(problems)) + " (not a prep-rejected output file?)")
    return rows, cut


def _check_resume(path: Path, done: dict[str, dict[str, Any]], examples: dict[str, PreferenceExample],
                  settings: dict[str, Any]) -> None:
    foreign = [i for i in done if i not in examples]
    if foreign:
        raise InterpSteerError(f"{path} has rows for ids not in this input ({foreign[:3]}); "
                               "use another --output for another input")
    changed = [i for i, row in done.items() if row["prompt"] != examples[i].prompt]
    if changed:
        raise InterpSteerError(f"{path}: the prompts of ids {changed[:3]} differ from this input's")
    for row in done.values():
        previous = {k: row["generation"].get(k) for k in _SETTING_KEYS}
        diff = sorted(k for k in _SETTING_KEYS if previous[k] != settings[k])
        if diff:
            raise InterpSteerError(
                f"{path} was written with other settings ({', '.join(f'{k}={previous[k]!r}' for k in diff)}); "
                "resume with the same model and settings or use another --output"
            )


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def prep_rejected(
    model: Any,
    examples_or_path: Sequence[PreferenceExample] | str | Path,
    output_path: str | Path,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    form: str = "mcq",
    progress: bool = True,
) -> Path:
    """Generate the model's answer to every prompt and store it as ``rejected`` (see the module docstring
    for the file format and the resume guarantee). ``examples_or_path`` is a list of examples or anything
    :func:`load_prep_input` accepts (``form`` applies to those). Everything is validated before the output
    file is created or appended to. Returns the output path.
    """
    from interp_steer.generation import generate
    from interp_steer.models import model_fingerprint

    examples = (load_prep_input(examples_or_path, form=form) if isinstance(examples_or_path, (str, Path))
                else list(examples_or_path))
    _check_examples(examples)
    check_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size)
    ids = _row_ids(examples)
    path = Path(output_path)
    settings = {"model": model_fingerprint(model).to_dict(), "max_new_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "seed": seed, "batch_size": batch_size}
    done, cut = _read_output(path)
    _check_resume(path, done, dict(zip(ids, examples, strict=True)), settings)
    if cut is not None:
        log.warning("%s: dropping a truncated last line (interrupted write)", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
            os.fsync(fh.fileno())
    starts = [s for s in range(0, len(examples), batch_size)
              if any(i not in done for i in ids[s: s + batch_size])]
    if starts:
        path.parent.mkdir(parents=True, exist_ok=True)
    for start in tqdm(starts, desc="prep-rejected", unit="batch", disable=not progress):
        batch = examples[start: start + batch_size]
        answers = generate(model, [ex.prompt for ex in batch], max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, batch_size=len(batch), seed=seed + start)
        rows = [
            {"id": rid, "prompt": ex.prompt, "chosen": ex.chosen, "rejected": answer,
             "metadata": _json_safe(ex.metadata), "generation": {**settings, "batch_seed": seed + start}}
            for rid, ex, answer in zip(ids[start: start + batch_size], batch, answers, strict=True)
            if rid not in done
        ]
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
    return path


# --------------------------------------------------------------------------------------------------- CLI


def cmd_prep_rejected(args: argparse.Namespace) -> int:
    """``interp-steer prep-rejected``: validate input, settings and any existing output, then generate."""
    from interp_steer.models import load_model

    examples = load_prep_input(args.input, form=args.form)
    if args.limit is not None:
        if args.limit < 1:
            raise InterpSteerError(f"--limit must be at least 1, got {args.limit}")
        examples = examples[: args.limit]
    _check_examples(examples)
    _row_ids(examples)
    check_settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                   batch_size=args.batch_size)
    output = Path(args.output)
    if is_local_source(args.input) and output.resolve() == Path(args.input).resolve():
        raise InterpSteerError("--output must differ from --input")
    _read_output(output)  # refuses a non-prep-rejected file before the model is loaded
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    path = prep_rejected(model, examples, output, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                         batch_size=args.batch_size)
    print(f"{len(examples)} rows with rejected answers in {path}")
    return 0


def add_prep_rejected_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``prep-rejected`` on an ``add_subparsers()`` object; sets ``func`` to the handler."""
    p = subparsers.add_parser(
        "prep-rejected", help="generate the model's own answers as 'rejected' (YaPO data prep)",
        description="Run the model over the prompts of a preference set and store its answers as the "
                    "rejected side beside the trusted chosen answers (append-only JSONL; resumable).",
    )
    p.add_argument("--input", required=True,
                   help="'culture', a Deep-Culture-Lense file or hub name, or a JSONL/CSV/Parquet file with "
                        "prompt and chosen columns")
    p.add_argument("--output", required=True, help="output JSONL (appended to and resumed when it exists)")
    p.add_argument("--form", choices=list(FORMS), default="mcq",
                   help="prompt form for culture / Deep-Culture-Lense input (default: mcq)")
    p.add_argument("--model", default=None,
                   help="TransformerLens name, HF folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.set_defaults(func=cmd_prep_rejected)
    return p
