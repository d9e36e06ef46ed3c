"""Plain-text corpora for SAE training, perplexity and latent inspection.

Reads JSONL (optionally gzipped, field ``text`` or a custom one), plain ``.txt`` (one document per blank-line
separated block) or a Hugging Face dataset name. hh-rlhf style dialogues (``\\n\\nHuman: … \\n\\nAssistant: …``)
are rendered with the model's chat template when a tokenizer is given, so that SAEs see the same format the
steered model sees. The held-out split is a seeded, deterministic ``heldout_fraction`` of the documents.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any, Literal

from interp_steer.errors import InterpSteerError

_TURN = re.compile(r"\n\n(Human|Assistant):\s?")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_dialogue(text: str) -> list[dict[str, str]] | None:
    """Split an hh-rlhf transcript into chat messages; ``None`` when the text is not such a dialogue."""
    if "Human:" not in text or "Assistant:" not in text:
        return None
    parts = _TURN.split("\n\n" + text.lstrip("\n"))
    messages: list[dict[str, str]] = []
    for role, content in zip(parts[1::2], parts[2::2], strict=False):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not messages or messages[0]["role"] != "user":
        return None
    return messages


def render_document(text: str, tokenizer: Any | None) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return text
    messages = parse_dialogue(text)
    if messages is None:
        return text
    return tokenizer.apply_chat_template(messages, tokenize=False)


def _read_jsonl(path: Path, field: str) -> list[str]:
    from interp_steer.data.jsonl import read_jsonl_rows
    from interp_steer.data.loaders import malformed_message

    rows, problems = read_jsonl_rows(path)
    problems += [(n, f"no field {field!r} (fields: {sorted(row)})") for n, row in rows if field not in row]
    if problems:
        raise InterpSteerError(malformed_message(str(path), sorted(problems)))
    return [str(row[field]) for _, row in rows]


def read_corpus(source: str | Path, *, field: str = "text") -> list[str]:
    """All documents of a corpus file or HF dataset, in file order."""
    from interp_steer.validation import check_file, decode_error, read_text

    path = Path(source)
    if path.exists():
        check_file(path, "corpus file")
        name = path.name
        if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
            try:
                texts = _read_jsonl(path, field)
            except UnicodeDecodeError as exc:
                raise decode_error(path, exc) from None
        elif name.endswith(".txt"):
            raw = read_text(path, "corpus file")
            texts = [block.strip() for block in re.split(r"\n\s*\n", raw) if block.strip()]
        else:
            raise InterpSteerError(f"{path}: unsupported corpus format (use .jsonl, .jsonl.gz or .txt)")
    else:
        if "/" not in str(source):
            raise InterpSteerError(f"corpus not found: {source}")
        from datasets import load_dataset

        ds = load_dataset(str(source), split="train")
        if field not in ds.column_names:
            raise InterpSteerError(f"{source}: no column {field!r} (columns: {ds.column_names})")
        texts = [str(t) for t in ds[field]]
    if not texts:
        raise InterpSteerError(f"corpus {source} is empty")
    return texts


def split_corpus(
    texts: list[str], *, heldout_fraction: float = 0.05, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded split into (train, held-out) documents."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_held = int(round(len(texts) * heldout_fraction))
    held = sorted(order[:n_held])
    held_set = set(held)
    return [t for i, t in enumerate(texts) if i not in held_set], [texts[i] for i in held]


def load_corpus(
    source: str | Path,
    *,
    split: Literal["train", "heldout", "all"] = "all",
    heldout_fraction: float = 0.05,
    seed: int = 0,
    tokenizer: Any | None = None,
    field: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """Documents of a corpus (dialogues chat-templated when ``tokenizer`` is given)."""
    texts = read_corpus(source, field=field)
    if split != "all":
        train, held = split_corpus(texts, heldout_fraction=heldout_fraction, seed=seed)
        texts = train if split == "train" else held
    if max_documents is not None:
        texts = texts[:max_documents]
    return [render_document(t, tokenizer) for t in texts]


def shared_corpus_path() -> Path | None:
    """``../shared/data/corpus/mixed-text.jsonl.gz`` relative to the checkout or the CWD, if present."""
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        cand = base.parent / "shared" / "data" / "corpus" / "mixed-text.jsonl.gz"
        if cand.is_file():
            return cand
    return None
