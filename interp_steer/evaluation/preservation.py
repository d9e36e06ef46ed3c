"""Knowledge preservation: does a steering vector damage what the model knows and how well it models text?

:func:`knowledge_preservation` compares the model steered at ``strength`` with the unsteered model on

* **held-out general text**: token-weighted perplexity (each document as ``BOS + its first max_tokens
  tokens``, steered at every position). Default texts: the held-out 5 % of
  ``../shared/data/corpus/mixed-text.jsonl.gz`` (the same seeded split the shipped SAE was trained without,
  :func:`interp_steer.data.corpus.load_corpus` with ``split="heldout"``), evenly spaced across the file;
  without the shared corpus the knowledge set's questions with their correct answers (statements) are used.
  ``texts`` may also be a list of strings, a corpus file (its held-out split) or a registry key such as
  ``"local:news"``.
* **multiple-choice knowledge**: accuracy on ``knowledge_mini.jsonl`` (63 four-option questions on science,
  general facts, arithmetic and English; :func:`load_knowledge`), scored with
  :func:`interp_steer.evaluation.mcq.score_mcq` (length-normalised option log-likelihood by default), steered
  with the vector's own position policy.

Shifts are ``steered − unsteered`` (perplexity, mean NLL, accuracy, correct-option margin) and the
perplexity ratio. Strength 0 runs
no hooks, so its shifts are exactly zero. :func:`knowledge_preservation_sweep` computes the unsteered
baseline once for several strengths.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.mcq import ItemScore, score_mcq
from interp_steer.evaluation.openended import PerplexityResult, _summarise, token_nll
from interp_steer.evaluation.shared_layers import SharedLayers
from interp_steer.steering.vector import SteeringVector

T = TypeVar("T")
KNOWLEDGE_PATH = Path(__file__).resolve().parents[1] / "data" / "files" / "knowledge_mini.jsonl"
KNOWLEDGE_TOPICS = ("science", "general", "arithmetic", "language")
_FIELDS = ("id", "topic", "question", "options", "answer")


def load_knowledge(path: str | Path | None = None, *, topics: str | Sequence[str] | None = None,
                   max_items: int | None = None) -> list[MCQItem]:
    """The knowledge MCQ set as :class:`MCQItem` s (``country``/``localization_status`` are ``None``).

    ``max_items``: that many items, evenly spaced through the file (so every topic keeps its share).

    Schema, one JSON object per line: ``id``, ``topic``, ``question``, ``options`` (list of ≥ 2 distinct
    strings), ``answer`` (0-based index of the correct option). ``metadata`` keeps ``id``, ``topic`` and
    ``source``. Malformed rows raise one error naming their line numbers.
    """
    from interp_steer.data.jsonl import read_jsonl_rows
    from interp_steer.data.loaders import malformed_message

    file = Path(path) if path is not None else KNOWLEDGE_PATH
    if not file.is_file():
        raise InterpSteerError(f"knowledge set not found: {file}")
    rows, problems = read_jsonl_rows(file)
    for n, row in rows:
        missing = [f for f in _FIELDS if f not in row]
        if missing:
            problems.append((n, f"missing field(s) {missing}"))
            continue
        opts = row["options"]
        if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, str) and o.strip() for o in opts):
            problems.append((n, "options must be a list of at least 2 non-empty strings"))
        elif len(set(opts)) != len(opts):
            problems.append((n, "options repeat"))
        elif not isinstance(row["answer"], int) or isinstance(row["answer"], bool) \
                or not 0 <= row["answer"] < len(opts):
            problems.append((n, f"answer must be an option index 0..{len(opts) - 1} (got {row['answer']!r})"))
        elif not str(row["question"]).strip():
            problems.append((n, "empty question"))
    if problems:
        raise InterpSteerError(malformed_message(str(file), sorted(problems)))
    wanted = [topics] if isinstance(topics, str) else (list(topics) if topics is not None else None)
    present = sorted({str(row["topic"]) for _, row in rows})
    if wanted is not None:
        unknown = [t for t in wanted if t not in present]
        if unknown:
            raise InterpSteerError(f"unknown knowledge topic(s) {unknown}; the set has {present}")
    items = [
        MCQItem(question=str(row["question"]), options=list(row["options"]), answer=int(row["answer"]),
                metadata={"id": row["id"], "topic": row["topic"], "source": file.name})
        for _, row in rows if wanted is None or row["topic"] in wanted
    ]
    if not items:
        raise InterpSteerError(f"{file} has no questions")
    if max_items is not None and max_items < 1:
        raise InterpSteerError(f"max_items must be at least 1, got {max_items}")
    return _select(items, max_items)


def knowledge_statements(items: Sequence[MCQItem]) -> list[str]:
    """``"<question> <correct option>."`` per item: a tiny fallback text set."""
    return [f"{it.question} {it.options[it.answer].rstrip('.')}." for it in items]


def _select(texts: list[T], n: int | None, seed: int | None = None) -> list[T]:
    """``n`` entries: evenly spaced (``seed=None``) or a seeded random sample kept in file order."""
    if n is None or n >= len(texts):
        return texts
    if seed is None:
        return [texts[i * len(texts) // n] for i in range(n)]
    return [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), n))]


def heldout_texts(tokenizer: Any | None = None, *, max_documents: int | None = 32,
                  source: str | Path | None = None, seed: int | None = None) -> tuple[list[str], str]:
    """``(texts, description)``: held-out general text for the perplexity check.

    ``source``: ``None`` (the shared corpus' held-out split, else the knowledge statements), a registry key
    (``"local:news"``, ``"culture:egypt"``...; its prompts), or a corpus file (its held-out split).
    Dialogues are chat-templated with ``tokenizer`` like the SAE's training data. ``max_documents`` are
    taken evenly spaced, or sampled with ``seed``.
    """
    from interp_steer.data.corpus import load_corpus, shared_corpus_path

    if source is not None and not Path(source).exists():
        from interp_steer.data.registry import DATASETS

        key = str(source)
        if key not in DATASETS:
            raise InterpSteerError(f"text source {key!r} is neither a file nor a registry key "
                                   f"(keys: {sorted(DATASETS)})")
        return _select(DATASETS[key].load(), max_documents, seed), f"registry:{key}"
    path = Path(source) if source is not None else shared_corpus_path()
    if path is None:
        return _select(knowledge_statements(load_knowledge()), max_documents, seed), "knowledge_mini statements"
    texts = load_corpus(path, split="heldout", tokenizer=tokenizer)
    return _select(texts, max_documents, seed), f"{path.name} held-out split"


def default_texts(max_documents: int | None = 32, *, seed: int | None = 0, tokenizer: Any | None = None) -> list[str]:
    """The default perplexity texts (:func:`heldout_texts` with no source): ``max_documents`` held-out
    corpus documents sampled with ``seed`` (``None``: evenly spaced)."""
    return heldout_texts(tokenizer, max_documents=max_documents, seed=seed)[0]


def _text_sequences(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    from interp_steer.chat import pad_token_id

    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad_token_id(tokenizer)
    seqs = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids and ids[0] == bos:
            ids = ids[1:]
        seqs.append([int(bos)] + ids[:max_tokens])
    return seqs


def text_perplexity(model: Any, texts: Sequence[str], vector: SteeringVector | None = None,
                    strength: float = 0.0, *, sae: Any | None = None, max_tokens: int = 256,
                    batch_size: int = 4, shared: SharedLayers | None = None) -> PerplexityResult:
    """Token-weighted perplexity of ``texts`` (``BOS + first max_tokens tokens`` each), steered at every
    position when ``vector`` is given with a non-zero ``strength``. ``shared``: lower blocks reused across
    calls (a λ grid on the same texts runs them once, :mod:`interp_steer.evaluation.shared_layers`)."""
    if not texts:
        raise InterpSteerError("no texts for the perplexity check")
    seqs = _text_sequences(model.tokenizer, texts, max_tokens)
    return _summarise(token_nll(model, seqs, [1] * len(seqs), vector=vector, strength=strength, sae=sae,
                                batch_size=batch_size, shared=shared))


# ----------------------------------------------------------------------------------------- reports


def _accuracy(scores: Sequence[ItemScore]) -> float:
    return sum(s.correct for s in scores) / len(scores)


def _margin(scores: Sequence[ItemScore]) -> float:
    """Mean over items of ``score(correct) − max score(other options)`` (> 0: right with room to spare)."""
    return sum(s.scores[s.answer] - max(x for j, x in enumerate(s.scores) if j != s.answer)
               for s in scores) / len(scores)


def _per_topic(items: Sequence[MCQItem], scores: Sequence[ItemScore]) -> dict[str, float]:
    groups: dict[str, list[ItemScore]] = {}
    for item, score in zip(items, scores, strict=True):
        groups.setdefault(str(item.metadata.get("topic", "all")), []).append(score)
    return {t: _accuracy(g) for t, g in sorted(groups.items())}


@dataclass
class PreservationBaseline:
    """The unsteered side of a preservation check (reusable across strengths)."""

    perplexity: PerplexityResult
    mcq: list[ItemScore]
    texts: list[str]
    texts_source: str
    items: list[MCQItem]


@dataclass
class PreservationReport:
    """Steered vs unsteered perplexity on held-out text and accuracy on the knowledge MCQ set.

    ``margin_*``: the mean score margin of the correct option over the best wrong one (the MCQ method's
    units, mean log-prob per option token for ``loglik``): a continuous companion of accuracy that moves
    before answers flip. Shifts are ``steered − unsteered``; ``answers_changed`` counts items whose predicted
    option changed.
    """

    strength: float
    perplexity_unsteered: float
    perplexity_steered: float
    perplexity_shift: float
    perplexity_ratio: float
    nll_shift: float
    accuracy_unsteered: float
    accuracy_steered: float
    accuracy_shift: float
    margin_unsteered: float
    margin_steered: float
    margin_shift: float
    n_texts: int
    n_tokens: int
    n_items: int
    texts_source: str
    accuracy_by_topic_unsteered: dict[str, float] = field(default_factory=dict)
    accuracy_by_topic_steered: dict[str, float] = field(default_factory=dict)
    answers_changed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preservation_baseline(model: Any, *, texts: str | Path | Sequence[str] | None = None,
                          mcq: Sequence[MCQItem] | None = None, max_texts: int | None = 32,
                          max_tokens: int = 256, batch_size: int = 4, method: str = "loglik") -> PreservationBaseline:
    """Unsteered perplexity and MCQ scores (see :func:`knowledge_preservation` for the arguments)."""
    if texts is None or isinstance(texts, (str, Path)):
        text_list, source = heldout_texts(model.tokenizer, max_documents=max_texts, source=texts)
    else:
        text_list, source = _select(list(texts), max_texts), "given texts"
    items = list(mcq) if mcq is not None else load_knowledge()
    ppl = text_perplexity(model, text_list, max_tokens=max_tokens, batch_size=batch_size)
    scores = score_mcq(model, items, method=method, batch_size=batch_size * 4)
    return PreservationBaseline(ppl, scores, text_list, source, items)


def knowledge_preservation(
    model: Any,
    vector: SteeringVector,
    strength: float,
    sae: Any | None = None,
    texts: str | Path | Sequence[str] | None = None,
    mcq: Sequence[MCQItem] | None = None,
    *,
    max_texts: int | None = 32,
    max_tokens: int = 256,
    batch_size: int = 4,
    method: str = "loglik",
    positions: str | None = None,
    baseline: PreservationBaseline | None = None,
) -> PreservationReport:
    """Perplexity and knowledge-MCQ accuracy steered (``vector`` at ``strength``) vs unsteered.

    ``texts``: ``None`` (held-out corpus, see the module doc), a list of strings, a corpus file or a registry
    key; ``max_texts`` documents of at most ``max_tokens`` tokens each. ``mcq``: items (default: the knowledge
    set). ``method``/``positions`` go to :func:`~interp_steer.evaluation.mcq.score_mcq`. ``baseline``: a
    :func:`preservation_baseline` computed earlier with the same texts and items (skips the unsteered runs).
    """
    vector.check_compatible(model, sae)
    vector = vector.to(device=model.cfg.device)
    base = baseline or preservation_baseline(model, texts=texts, mcq=mcq, max_texts=max_texts,
                                             max_tokens=max_tokens, batch_size=batch_size, method=method)
    steered_ppl = text_perplexity(model, base.texts, vector, strength, sae=sae, max_tokens=max_tokens,
                                  batch_size=batch_size)
    steered = score_mcq(model, base.items, vector, strength, sae=sae, method=method, positions=positions,
                        batch_size=batch_size * 4)
    acc0, acc1 = _accuracy(base.mcq), _accuracy(steered)
    p0, p1 = base.perplexity, steered_ppl
    return PreservationReport(
        strength=float(strength), perplexity_unsteered=p0.perplexity, perplexity_steered=p1.perplexity,
        perplexity_shift=p1.perplexity - p0.perplexity, perplexity_ratio=p1.perplexity / p0.perplexity,
        nll_shift=p1.mean_nll - p0.mean_nll, accuracy_unsteered=acc0, accuracy_steered=acc1, accuracy_shift=acc1 - acc0,
        margin_unsteered=_margin(base.mcq), margin_steered=_margin(steered),
        margin_shift=_margin(steered) - _margin(base.mcq),
        n_texts=len(base.texts), n_tokens=p0.n_tokens, n_items=len(base.items), texts_source=base.texts_source,
        accuracy_by_topic_unsteered=_per_topic(base.items, base.mcq), accuracy_by_topic_steered=_per_topic(base.items, steered),
        answers_changed=sum(a.predicted != b.predicted for a, b in zip(base.mcq, steered, strict=True)),
    )


def knowledge_preservation_sweep(model: Any, vector: SteeringVector, strengths: Sequence[float],
                                 sae: Any | None = None, **kwargs: Any) -> list[PreservationReport]:
    """:func:`knowledge_preservation` at every strength, with the unsteered baseline computed once."""
    base_keys = ("texts", "mcq", "max_texts", "max_tokens", "batch_size", "method")
    baseline = kwargs.pop("baseline", None) or preservation_baseline(
        model, **{k: kwargs[k] for k in base_keys if k in kwargs})
    return [knowledge_preservation(model, vector, s, sae, baseline=baseline, **kwargs) for s in strengths]
