"""Named prompt sets for contrastive steering: a "target" set versus a "baseline" set of prompts.

Keys (see :data:`DATASETS`):

* hub subsets of the Tulu 3 SFT mixture (``numinamath``, ``flan``, ``coconot``, ``oasst1``,
  ``personahub_math``, ``evol_codealpaca``, ``wildchat``, ``aya``): messages-format datasets whose prompt is
  the first user message. ``datasets.load_dataset`` is called only when such a key is loaded.
* ``local:<group>``: offline prompts from ``../shared/data/corpus/mixed-text.jsonl.gz`` selected by source
  (``local:dialogue`` = the first human turn of the hh-rlhf dialogues; the other groups are T0 prompts, i.e.
  the text before the final line, which is the target answer). Exact duplicates are dropped.
* ``culture:<country>`` / ``culture-nonlocalized:<country>``: the localized / non-localized questions of our
  culture set for that country.

A path to a local ``.jsonl`` / ``.csv`` / ``.parquet`` / ``.json`` file with a ``prompt`` (or ``question``,
or ``text``) column works too.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from interp_steer.data.corpus import parse_dialogue, shared_corpus_path
from interp_steer.data.culture import read_culture_rows
from interp_steer.data.loaders import load_culture, looks_like_path, read_table
from interp_steer.errors import InterpSteerError

PROMPT_COLUMNS = ("prompt", "question", "text")


@dataclass(frozen=True)
class DatasetSpec:
    """One named prompt set: where its prompts come from and how to read them.

    ``kind`` is ``"hub"`` (``target`` = the hub dataset name), ``"local"`` (``target`` = a tuple of corpus
    source prefixes) or ``"culture"`` (``target`` = ``(country, localization)``).
    """

    key: str
    kind: str
    description: str
    target: str | tuple[str, ...]

    def load(self) -> list[str]:
        """All prompts of this set, in source order."""
        return _LOADERS[self.kind](self)


_TULU_SUBSETS = {
    "numinamath": ("ai2-adapt-dev/numinamath_tir_math_decontaminated", "competition math (NuminaMath TIR)"),
    "flan": ("ai2-adapt-dev/flan_v2_converted", "FLAN v2 instructions"),
    "coconot": ("ai2-adapt-dev/coconot_converted", "requests a model should refuse or qualify (CoCoNot)"),
    "oasst1": ("ai2-adapt-dev/oasst1_converted", "OpenAssistant conversations"),
    "personahub_math": ("ai2-adapt-dev/personahub_math_v5_regen_149960", "persona-driven math problems"),
    "evol_codealpaca": ("ai2-adapt-dev/evol_codealpaca_heval_decontaminated", "coding instructions"),
    "wildchat": ("ai2-adapt-dev/tulu_v3.9_wildchat_100k", "real user chats (WildChat)"),
    "aya": ("ai2-adapt-dev/tulu_v3.9_aya_100k", "multilingual instructions (Aya)"),
}

_LOCAL_GROUPS = {
    "dialogue": (("hh-rlhf/",), "first human turn of hh-rlhf harmless dialogues"),
    "news": (("t0/xsum_", "t0/gigaword_", "t0/ag_news_", "t0/cnn_dailymail_", "t0/multi_news_"),
             "news summarisation and classification prompts"),
    "reviews": (("t0/yelp_review_full_", "t0/imdb_", "t0/amazon_polarity_", "t0/rotten_tomatoes_",
                 "t0/app_reviews_"), "product, app and movie review prompts"),
    "science": (("t0/sciq_", "t0/qasc_", "t0/quartz_", "t0/quarel_", "t0/ropes_", "t0/wiqa_"),
                "science question prompts"),
    "qa": (("t0/adversarial_qa_", "t0/quoref_", "t0/duorc_", "t0/kilt_tasks_hotpotqa_", "t0/wiki_qa_",
            "t0/cosmos_qa_", "t0/social_i_qa_", "t0/commonsense_qa_", "t0/dream_"),
           "reading-comprehension and commonsense QA prompts"),
    "paraphrase": (("t0/glue_mrpc_", "t0/glue_qqp_", "t0/paws_labeled_final_"), "paraphrase-detection prompts"),
}


def _first_user_message(messages: object) -> str | None:
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict) and msg.get("role") == "user" and str(msg.get("content", "")).strip():
                return str(msg["content"])
    return None


def _load_hub(spec: DatasetSpec) -> list[str]:
    from datasets import load_dataset

    try:
        ds = load_dataset(str(spec.target), split="train")
    except Exception as exc:  # offline, unknown name, authentication: all user-fixable
        raise InterpSteerError(f"could not load hub dataset {spec.target!r} for key {spec.key!r}: {exc}") from exc
    if "messages" not in ds.column_names:
        raise InterpSteerError(f"{spec.target}: no 'messages' column (columns: {ds.column_names})")
    prompts = [p for p in (_first_user_message(m) for m in ds["messages"]) if p is not None]
    if not prompts:
        raise InterpSteerError(f"{spec.target}: no row has a user message")
    return prompts


@lru_cache(maxsize=2)
def _corpus_rows(path: str) -> tuple[tuple[str, str], ...]:
    table = read_table(path)
    table.require(("text", "source"))
    return tuple((str(row["source"]), str(row["text"])) for _, row in table.rows)


def _corpus_prompt(source: str, text: str) -> str | None:
    if source.startswith("hh-rlhf/"):
        messages = parse_dialogue(text)
        return messages[0]["content"] if messages else None
    prompt = text.rsplit("\n", 1)[0].strip() if "\n" in text.strip() else ""
    return prompt or None


def _load_local(spec: DatasetSpec) -> list[str]:
    path = shared_corpus_path()
    if path is None:
        raise InterpSteerError(f"key {spec.key!r} needs ../shared/data/corpus/mixed-text.jsonl.gz, "
                               "which was not found beside the checkout or the working directory")
    prompts = [_corpus_prompt(src, text) for src, text in _corpus_rows(str(path)) if src.startswith(spec.target)]
    unique = list(dict.fromkeys(p for p in prompts if p))
    if not unique:
        raise InterpSteerError(f"{path}: no rows for key {spec.key!r} (source prefixes {list(spec.target)})")
    return unique


def _load_culture(spec: DatasetSpec) -> list[str]:
    country, localization = tuple(spec.target)
    return [item.question for item in load_culture(countries=country, localization=localization)]


_LOADERS: dict[str, Callable[[DatasetSpec], list[str]]] = {
    "hub": _load_hub, "local": _load_local, "culture": _load_culture,
}


def _build_registry() -> dict[str, DatasetSpec]:
    specs = [DatasetSpec(key, "hub", desc, name) for key, (name, desc) in _TULU_SUBSETS.items()]
    specs += [DatasetSpec(f"local:{key}", "local", desc, prefixes) for key, (prefixes, desc) in _LOCAL_GROUPS.items()]
    for country in sorted({row["country"] for row in read_culture_rows()}):
        specs.append(DatasetSpec(f"culture:{country}", "culture", f"culture-set questions naming {country}",
                                 (country, "localized")))
        specs.append(DatasetSpec(f"culture-nonlocalized:{country}", "culture",
                                 f"culture-set questions about {country} without a country cue",
                                 (country, "nolocalized")))
    return {spec.key: spec for spec in specs}


DATASETS: dict[str, DatasetSpec] = _build_registry()
"""Every named prompt set, by key (hub sets are only downloaded when loaded)."""


def _file_prompts(path: Path) -> list[str]:
    table = read_table(path)
    column = next((c for c in PROMPT_COLUMNS if c in table.columns), None)
    if not table.rows:
        raise InterpSteerError(f"{path} is empty (expected a column named one of {list(PROMPT_COLUMNS)})")
    if column is None:
        raise InterpSteerError(f"{path}: no prompt column; found columns {table.columns}; "
                               f"expected one of {list(PROMPT_COLUMNS)}")
    empty = [(pos, f"field {column!r} is missing or empty") for pos, row in table.rows
             if not isinstance(row.get(column), str) or not row[column].strip()]
    table.malformed(empty)
    return [row[column] for _, row in table.rows]


def _resolve(key_or_path: str | Path) -> list[str]:
    key = str(key_or_path)
    if key in DATASETS:
        return DATASETS[key].load()
    path = Path(key_or_path)
    if path.is_file():
        return _file_prompts(path)
    if path.is_dir():
        raise InterpSteerError(f"prompt source {key} is a directory; expected a registry key or a file")
    if looks_like_path(key):
        raise InterpSteerError(f"prompt file not found: {key}")
    raise InterpSteerError(
        f"unknown dataset {key!r}: not a registry key and not a file; valid keys: {sorted(DATASETS)} "
        f"(or a .jsonl/.csv/.parquet file with a {'/'.join(PROMPT_COLUMNS)} column)"
    )


def load_prompts(key_or_path: str | Path, n_samples: int | None = None, seed: int = 0) -> list[str]:
    """Prompts of a registry key or local file.

    ``n_samples=None`` returns every prompt in source order; otherwise a seeded sample without replacement
    (``random.Random(seed).sample``). Asking for more prompts than the set has raises.
    """
    prompts = _resolve(key_or_path)
    if n_samples is None:
        return prompts
    if n_samples < 1 or n_samples > len(prompts):
        raise InterpSteerError(f"n_samples={n_samples} for {key_or_path!s}, which has {len(prompts)} prompts "
                               f"(expected 1..{len(prompts)})")
    return random.Random(seed).sample(prompts, n_samples)


def dataset_fingerprint(key_or_path: str | Path, n_samples: int | None = None, seed: int = 0) -> str:
    """16 hex characters of the sha256 of the resolved prompts (for cache keys)."""
    prompts = load_prompts(key_or_path, n_samples, seed)
    return hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()[:16]
