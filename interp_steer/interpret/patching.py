"""Activation patching: where does the country cue of a localized culture question live?

For one culture stem the **clean** run is the localized question (it names the country: "In Egypt, which
dish ...?") and the **corrupted** run is the non-localized question ("Around here, which dish ...?"); both are
chat-templated exactly like :func:`interp_steer.evaluation.mcq.score_mcq` renders them (user turn + the
generation prompt, the option as the assistant's answer). An activation of the clean run is copied into the
corrupted run at one (layer, position) and we measure how much of the correct option's advantage comes back.

**Metric** (``score``). ``m = s(correct option) − mean(s(other options))`` (``reduce="max"``: minus the best
other option), where ``s`` is

* ``"option"`` (default): the option's length-normalised log-likelihood as the assistant's answer — mean
  log-prob per option token, end-of-turn excluded: exactly ``score_mcq``'s default ``"loglik"`` score. Every
  patched run scores all options (one row per option, the prompt patched identically in each).
* ``"first_token"``: the logit of the option's first answer token at the answer position (the last prompt
  token); a logit difference equals the log-prob difference. One row per patch (≈ 4× cheaper), but on the
  embedded model its argmax agrees with the full-option score on only about a third of the culture questions;
  options sharing the correct option's first token are left out of the "other" options, stems where all do are
  skipped.

**Recovery** = ``(m_patched − m_corrupt) / (m_clean − m_corrupt)``: 0 = the corrupted run, 1 = the clean run.
Items whose gap ``m_clean − m_corrupt`` is below ``min_gap`` (the cue does not help the correct option, or
barely) are excluded from the means and reported.

**Alignment.** The two prompts differ in length and wording only where the cue is. Token sequences are split
into a common prefix (system prompt, ``<|im_start|>user\\n``, shared first words), one differing span (the
*cue*: "In Egypt" vs "Around here") and a common suffix (the rest of the question and the template tail up to
the answer position). Patches are written into the corrupted run, so positions are corrupted-run positions;
each gets its clean counterpart:

* common prefix: not patched (identical tokens, and by causal masking identical activations: the effect is
  exactly zero);
* cue: right-aligned inside the span (last cue token ↔ last cue token ...); when the spans differ in length
  the surplus tokens of the longer one have no counterpart (a corrupted surplus position keeps its own
  activation);
* common suffix: same token, right-aligned (clean position = corrupted position + length difference).

Stems whose differing span is longer than ``max_cue_tokens`` (the non-localized question was reworded beyond
the cue, e.g. "what are X called" vs "what do we call X") are skipped and reported: their tokens cannot be
aligned one to one. With ``score="option"`` the answer tokens after the prompt can be patched too (slot ``option
tokens``): the run scoring option ``k`` takes them from the clean run scoring option ``k``.

**Positions** (``layout``): ``"slots"`` (default) gives every item the same columns, so items can be
averaged: ``cue`` (the whole span at once), ``after cue`` (first token after it, usually ","), ``question``
(the rest of the question, all at once), ``question end`` (its last token, usually "?") and each template-tail
token after the question (``<|im_end|>``, ``\\n``, ``<|im_start|>``, ``assistant`` ..., the last of which is the
answer position), then (``score="option"``) ``option tokens``. ``"tokens"`` patches every prompt position from
the cue onward separately; items are aligned from the end of the prompt (columns are offsets; labels are the
token when all items share it).

**Computation.** The common prefix is run once and kept as a key/value cache; every patched run restarts at
the patched layer from the corrupted residual stream (``start_at_layer``), all patches of one layer in one
batch: the patched prompt once per patch, then (``score="option"``) the option tokens, one row per option, on
top of that prompt's keys/values; only the positions the score reads are unembedded. :func:`transformer_lens_patching` gives the same
numbers token by token with ``transformer_lens.patching.get_act_patch_*`` on an aligned clean cache (used as a
cross-check in the tests; it is one full forward per cell).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from interp_steer.chat import chat_tokens, common_prefix, pad_right, pad_token_id, scored_option
from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
from interp_steer.io import save_safetensors_atomic, write_figure_atomic, write_text_atomic
from interp_steer.models import kv_cache
from interp_steer.validation import dumps as _strict_dumps

COMPONENTS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
}
"""Patchable components and their TransformerLens hook names (``z``: per attention head)."""

LAYOUTS = ("slots", "tokens")
SCORES = ("option", "first_token")
REDUCTIONS = ("mean", "max")
FORMAT = "interp_steer.patching/1"

ALIGNMENT_NOTE = (
    "Patches go into the corrupted (non-localized) run. Common token prefix: not patched (identical "
    "activations). Differing span (the cue): right-aligned inside the span, surplus tokens of the longer span "
    "unpatched. Common suffix: same token, right-aligned (clean pos = corrupted pos + length difference). "
    "Option tokens (score=option, slot 'option tokens'): row k takes the clean run's activations of option k "
    "at the same offset after the prompt. Stems whose differing span exceeds max_cue_tokens are skipped."
)
METRIC_NOTES = {
    "option": "s = mean log-prob per option token as the assistant answer (end-of-turn excluded; score_mcq's "
              "loglik score)",
    "first_token": "s = logit of the option's first answer token at the answer position (last prompt token); "
                   "other options sharing the correct first token left out",
}


def metric_note(score: str, reduce: str) -> str:
    return (f"m = s(correct option) - {reduce}(s(other options)), {METRIC_NOTES[score]}. recovery = "
            "(m_patched - m_corrupt) / (m_clean - m_corrupt); items with m_clean - m_corrupt < min_gap are "
            "excluded from the means.")


def hook_name(component: str, layer: int) -> str:
    """The TransformerLens hook point of ``component`` at ``layer``."""
    if component not in COMPONENTS:
        raise InterpSteerError(f"unknown component {component!r}; expected one of {sorted(COMPONENTS)}")
    return COMPONENTS[component].format(layer=layer)


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise InterpSteerError(f"unknown {name} {value!r}; expected one of {tuple(valid)}")


# ------------------------------------------------------------------------------------------------ pairs


@dataclass
class PatchPair:
    """One culture stem as a clean (localized) / corrupted (non-localized) pair of prompt token lists.

    Spans are ``[start, end)`` token indices; ``cue_clean`` and ``cue_corrupt`` start at ``prefix_len``.
    ``instruction_end`` is the corrupted run's first token after the question (the end-of-turn marker).
    ``option_ids`` are the options' answer tokens (end-of-turn excluded), ``answer_token`` / ``other_tokens``
    the first answer token of the correct option / the distinct first tokens of the others.
    """

    item_id: str
    country: str | None
    clean_question: str
    corrupt_question: str
    options: list[str]
    answer: int
    clean_ids: list[int]
    corrupt_ids: list[int]
    prefix_len: int
    cue_clean: tuple[int, int]
    cue_corrupt: tuple[int, int]
    instruction_end: int
    option_ids: list[list[int]]
    answer_token: int
    other_tokens: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shift(self) -> int:
        """Clean length minus corrupted length (clean position of a common-suffix corrupted position - it)."""
        return len(self.clean_ids) - len(self.corrupt_ids)

    def clean_position(self, pos: int) -> int | None:
        """The clean counterpart of corrupted position ``pos`` (``None`` for a surplus cue token)."""
        if not 0 <= pos < len(self.corrupt_ids):
            raise IndexError(f"position {pos} outside the corrupted prompt ({len(self.corrupt_ids)} tokens)")
        if pos < self.prefix_len:
            return pos
        if pos >= self.cue_corrupt[1]:
            return pos + self.shift
        from_end = self.cue_corrupt[1] - pos  # 1 for the last cue token
        clean = self.cue_clean[1] - from_end
        return clean if clean >= self.cue_clean[0] else None

    def aligned(self, start: int = 0) -> list[tuple[int, int]]:
        """``(corrupted pos, clean pos)`` for every corrupted position ≥ ``start`` that has a counterpart."""
        out = []
        for pos in range(start, len(self.corrupt_ids)):
            clean = self.clean_position(pos)
            if clean is not None:
                out.append((pos, clean))
        return out

    def option_sites(self) -> list[tuple[int, int]]:
        """``(corrupted pos, clean pos)`` of the option tokens appended after each prompt (``score="option"``):
        row ``k`` of a patched run takes them from row ``k`` (option ``k``) of the clean run."""
        width = max(len(ids) for ids in self.option_ids)
        return [(len(self.corrupt_ids) + t, len(self.clean_ids) + t) for t in range(width)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def all_sites(pair: PatchPair, score: str = "option") -> list[tuple[int, int]]:
    """Every position where the clean and corrupted runs can differ: the aligned prompt positions after the
    common prefix, and the option tokens with ``score="option"``. Patching all of them at the last layer
    recovers exactly 1."""
    return pair.aligned(pair.prefix_len) + (pair.option_sites() if score == "option" else [])


def _common_suffix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _option_ids(tokenizer: Any, question: str, option: str) -> list[int]:
    """The option's answer tokens as ``score_mcq`` scores them (trailing end-of-turn/special tokens cut)."""
    ids, response_start, _ = scored_option(tokenizer, question, option)
    return ids[response_start:]


def make_pair(tokenizer: Any, localized: MCQItem, nonlocalized: MCQItem, *, max_cue_tokens: int = 4,
              score: str = "option") -> PatchPair:
    """Align the localized (clean) and non-localized (corrupted) forms of one stem.

    Raises :class:`InterpSteerError` when the two items are not forms of one question, when the prompts
    differ in more than ``max_cue_tokens`` consecutive tokens, or (``score="first_token"``) when every other
    option starts with the correct option's first token.
    """
    _check_choice("score", score, SCORES)
    if localized.options != nonlocalized.options or localized.answer != nonlocalized.answer:
        raise InterpSteerError("the two items must have the same options and answer (two forms of one stem)")
    clean = chat_tokens(tokenizer, localized.question)
    corrupt = chat_tokens(tokenizer, nonlocalized.question)
    x, y = clean.ids, corrupt.ids
    if x == y:
        raise InterpSteerError("the localized and non-localized prompts are identical")
    p = common_prefix(x, y)
    s = _common_suffix(x, y, min(len(x), len(y)) - p)
    if p == 0:
        raise InterpSteerError("the two prompts share no prefix token (no chat template?)")
    cue_clean, cue_corrupt = (p, len(x) - s), (p, len(y) - s)
    width = max(cue_clean[1] - cue_clean[0], cue_corrupt[1] - cue_corrupt[0])
    if width > max_cue_tokens:
        raise InterpSteerError(f"the prompts differ in a span of {width} tokens (> max_cue_tokens="
                               f"{max_cue_tokens}): the question is reworded beyond the cue")
    if cue_corrupt[1] > corrupt.instruction_end or s == 0:
        raise InterpSteerError("the prompts differ outside the question")
    option_ids = [_option_ids(tokenizer, nonlocalized.question, o) for o in nonlocalized.options]
    if option_ids != [_option_ids(tokenizer, localized.question, o) for o in localized.options]:
        raise InterpSteerError("the options tokenize differently after the two questions")
    firsts = [ids[0] for ids in option_ids]
    answer_token = firsts[nonlocalized.answer]
    others = sorted({t for j, t in enumerate(firsts) if j != nonlocalized.answer and t != answer_token})
    if score == "first_token" and not others:
        raise InterpSteerError("every option starts with the correct option's first token")
    meta = dict(nonlocalized.metadata)
    item_id = str(meta.get("stem_id") or meta.get("id") or nonlocalized.question)
    return PatchPair(
        item_id=item_id, country=nonlocalized.country, clean_question=localized.question,
        corrupt_question=nonlocalized.question, options=list(nonlocalized.options), answer=nonlocalized.answer,
        clean_ids=list(x), corrupt_ids=list(y), prefix_len=p, cue_clean=cue_clean, cue_corrupt=cue_corrupt,
        instruction_end=corrupt.instruction_end, option_ids=option_ids, answer_token=int(answer_token),
        other_tokens=[int(t) for t in others],
        metadata={k: v for k, v in meta.items() if k in ("stem_id", "topic", "split", "source")},
    )


def build_pairs(
    tokenizer: Any,
    items: Sequence[MCQItem] | None = None,
    *,
    countries: str | Iterable[str] | None = None,
    split: str | None = None,
    n_items: int | None = None,
    max_cue_tokens: int = 4,
    score: str = "option",
) -> tuple[list[PatchPair], list[dict[str, Any]]]:
    """Clean/corrupted pairs from culture items (default: the shipped culture set).

    Localized and non-localized items are matched by ``metadata["stem_id"]``. ``n_items`` keeps the first
    ``n_items`` usable stems per country (file order). Returns ``(pairs, skipped)``; each skipped entry names
    the stem and the reason.
    """
    if items is None:
        from interp_steer.data import load_culture

        items = load_culture(countries=countries, split=split)
    elif countries is not None or split is not None:
        raise InterpSteerError("pass either items or countries/split, not both")
    if n_items is not None and n_items < 1:
        raise InterpSteerError(f"n_items must be at least 1, got {n_items}")
    forms: dict[str, dict[str, MCQItem]] = {}
    for item in items:
        stem = item.metadata.get("stem_id")
        if stem is None or item.localization_status not in ("localized", "nolocalized"):
            raise InterpSteerError("patching needs culture items with metadata['stem_id'] and a localization_status")
        forms.setdefault(str(stem), {})[item.localization_status] = item
    pairs: list[PatchPair] = []
    skipped: list[dict[str, Any]] = []
    per_country: dict[str | None, int] = {}
    for stem, both in forms.items():
        if len(both) != 2:
            skipped.append({"item_id": stem, "reason": "only one localization form"})
            continue
        country = both["localized"].country
        if n_items is not None and per_country.get(country, 0) >= n_items:
            continue
        try:
            pair = make_pair(tokenizer, both["localized"], both["nolocalized"], max_cue_tokens=max_cue_tokens,
                             score=score)
        except InterpSteerError as exc:
            skipped.append({"item_id": stem, "country": country, "reason": str(exc)})
            continue
        pairs.append(pair)
        per_country[country] = per_country.get(country, 0) + 1
    if not pairs:
        raise InterpSteerError(f"no usable clean/corrupted pair ({len(skipped)} skipped)")
    return pairs, skipped


# ------------------------------------------------------------------------------------------------ positions


@dataclass
class Slot:
    """A patch site: every ``(corrupted pos, clean pos)`` in ``positions`` is patched at once."""

    label: str
    positions: list[tuple[int, int]]


def _token_label(tokenizer: Any, token: int) -> str:
    text = tokenizer.decode([token])
    return text.replace("\n", "\\n") if text.strip() or not text else repr(text)


def position_slots(pair: PatchPair, tokenizer: Any, layout: str = "slots", score: str = "option") -> list[Slot]:
    """The patch sites of ``pair`` under ``layout`` (see the module docstring). Empty slots are kept. With
    ``score="option"`` a last slot ``option tokens`` patches the answer tokens themselves (each option's run
    from its clean counterpart): later option tokens read the cue from there, not from the prompt."""
    _check_choice("position layout", layout, LAYOUTS)
    _check_choice("score", score, SCORES)
    tail = [Slot("option tokens", pair.option_sites())] if score == "option" else []
    start, cue_end = pair.cue_corrupt
    ie = pair.instruction_end
    n = len(pair.corrupt_ids)
    if layout == "tokens":
        slots = []
        for pos in range(start, n):
            clean = pair.clean_position(pos)
            tag = "cue " if pos < cue_end else ""
            label = f"{tag}{_token_label(tokenizer, pair.corrupt_ids[pos])}"
            slots.append(Slot(label, [] if clean is None else [(pos, clean)]))
        return slots + tail
    cue = [(q, c) for q in range(start, cue_end) if (c := pair.clean_position(q)) is not None]
    q_end = ie - 1
    after = [cue_end] if cue_end < q_end else []
    body = list(range(cue_end + 1, q_end))
    last = [q_end] if q_end >= cue_end else []

    def sites(positions: list[int]) -> list[tuple[int, int]]:
        return [(q, q + pair.shift) for q in positions]

    slots = [Slot("cue", cue), Slot("after cue", sites(after)), Slot("question", sites(body)),
             Slot("question end", sites(last))]
    for pos in range(max(ie, cue_end), n):
        label = _token_label(tokenizer, pair.corrupt_ids[pos])
        slots.append(Slot(f"{label} [answer]" if pos == n - 1 else label, sites([pos])))
    return slots + tail


# ------------------------------------------------------------------------------------------------ metric


def option_metric(
    logits: Float[torch.Tensor, "batch d_vocab"], answer_token: int, other_tokens: Sequence[int], reduce: str = "mean"
) -> Float[torch.Tensor, " batch"]:
    """``logit[answer] − mean|max(logit[others])`` (a log-prob difference: the normaliser cancels)."""
    others = logits[:, list(other_tokens)].float()
    rest = others.mean(-1) if reduce == "mean" else others.max(-1).values
    return logits[:, answer_token].float() - rest


def _continuations(pair: PatchPair, score: str) -> list[list[int]]:
    """Token lists appended to the prompt, one row each: nothing (first token) or each option (option)."""
    return [[]] if score == "first_token" else pair.option_ids


def _window(pair: PatchPair, score: str) -> int:
    """How many positions, from the last prompt token on, the score reads."""
    return 1 if score == "first_token" else max(len(ids) for ids in pair.option_ids)


def _metric_from_window(logits: Float[torch.Tensor, "rows window d_vocab"], pair: PatchPair, score: str,
                        reduce: str) -> Float[torch.Tensor, " jobs"]:
    """The metric per job from the logits of the score window (rows grouped per job, one per continuation)."""
    if score == "first_token":
        return option_metric(logits[:, 0], pair.answer_token, pair.other_tokens, reduce)
    k = len(pair.option_ids)
    logp = torch.log_softmax(logits.float(), -1)
    width = logits.shape[1]
    targets = torch.zeros((k, width), dtype=torch.long, device=logits.device)
    mask = torch.zeros((k, width), dtype=torch.bool, device=logits.device)
    for j, ids in enumerate(pair.option_ids):
        targets[j, : len(ids)] = torch.tensor(ids, device=logits.device)
        mask[j, : len(ids)] = True
    jobs = logits.shape[0] // k
    picked = logp.gather(-1, targets.repeat(jobs, 1)[..., None])[..., 0]
    m = mask.repeat(jobs, 1)
    scores = (picked * m).sum(-1) / m.sum(-1)  # mean log-prob per option token, [rows]
    scores = scores.view(jobs, k)
    others = torch.cat([scores[:, : pair.answer], scores[:, pair.answer + 1 :]], dim=1)
    rest = others.mean(-1) if reduce == "mean" else others.max(-1).values
    return scores[:, pair.answer] - rest


def pair_metric(logits: Float[torch.Tensor, "rows pos d_vocab"], pair: PatchPair, prompt_len: int,
                score: str = "option", reduce: str = "mean") -> Float[torch.Tensor, " jobs"]:
    """The metric from full-sequence logits of the rows ``prompt + continuation`` (see :func:`patch_pair`);
    ``prompt_len`` is the length of the prompt those rows start with (clean or corrupted)."""
    w = _window(pair, score)
    return _metric_from_window(logits[:, prompt_len - 1 : prompt_len - 1 + w], pair, score, reduce)


def pair_tokens(pair: PatchPair, which: str, score: str = "option", pad_id: int = 0) -> torch.Tensor:
    """The ``[rows, pos]`` tokens of the clean or corrupted prompt followed by each continuation (right-padded)."""
    prompt = pair.clean_ids if which == "clean" else pair.corrupt_ids
    tokens, _ = pad_right([prompt + c for c in _continuations(pair, score)], pad_id)
    return tokens


# ------------------------------------------------------------------------------------------------ engine


def _check_model(model: Any) -> None:
    if getattr(model.cfg, "positional_embedding_type", None) == "shortformer":
        raise InterpSteerError("activation patching does not support shortformer positional embeddings")


def _unembed(model: Any, resid: torch.Tensor, w_u: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from final residual streams [rows, pos, d_model]: final norm + unembedding (as TransformerLens
    computes them; ``w_u`` = ``W_U.T.contiguous()`` computed once, instead of once per call)."""
    import torch.nn.functional as F
    from transformer_lens.utilities.activation_functions import apply_softcap

    x = model.ln_final(resid) if model.cfg.normalization_type is not None else resid
    w = model.unembed.W_U.T.contiguous() if w_u is None else w_u
    return apply_softcap(F.linear(x, w, model.unembed.b_U), model.cfg.output_logits_soft_cap)


class _PrefixRunner:
    """Runs suffixes of one prompt prefix with the prefix's keys/values cached (shared by all rows)."""

    def __init__(self, model: Any, prefix_resid: torch.Tensor):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        self.model = model
        self.prefix_len = prefix_resid.shape[1]
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size=1)
        model(prefix_resid, start_at_layer=0, stop_at_layer=model.cfg.n_layers, past_kv_cache=cache)
        self.entries = [(e.past_keys, e.past_values) for e in cache.entries]
        self.w_u = model.unembed.W_U.T.contiguous()

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        return _unembed(self.model, resid, self.w_u)

    def cache(self, rows: int, frozen: bool = True) -> Any:
        """The prefix cache for ``rows`` rows; a non-frozen one collects the keys/values of what runs next."""
        return kv_cache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.entries],
                        frozen=frozen)

    def run(self, resid: torch.Tensor, start_at_layer: int, fwd_hooks: list | None = None,
            cache: Any | None = None) -> torch.Tensor:
        """Blocks ``start_at_layer..`` on residuals ``resid`` [rows, pos, d] after the cached positions;
        returns the final residual stream (before the final norm)."""
        model = self.model
        with model.hooks(fwd_hooks=fwd_hooks or []):
            return model(resid, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers,
                         past_kv_cache=self.cache(resid.shape[0]) if cache is None else cache)

    def window_logits(self, resid: torch.Tensor, start_at_layer: int, first: int, width: int,
                      fwd_hooks: list | None = None) -> torch.Tensor:
        """Logits at suffix positions ``first .. first + width - 1`` of :meth:`run`."""
        out = self.run(resid, start_at_layer, fwd_hooks)
        return self.unembed(out[:, first : first + width])


@dataclass
class _Prepared:
    runner: _PrefixRunner
    clean_cache: dict[str, torch.Tensor]  # suffix coordinates, [rows, pos, ...]
    corrupt_cache: dict[str, torch.Tensor]
    m_clean: float
    m_corrupt: float


def _prepare(model: Any, pair: PatchPair, score: str, reduce: str, clean_names: set[str],
             corrupt_names: set[str]) -> _Prepared:
    """Prefix cache, the clean and corrupted runs (caching ``*_names``) and their metrics."""
    _check_model(model)
    if score == "first_token" and not pair.other_tokens:
        raise InterpSteerError(f"{pair.item_id}: every option starts with the correct option's first token")
    device = model.cfg.device
    pad = pad_token_id(model.tokenizer)
    p = pair.prefix_len
    w = _window(pair, score)
    clean_resid = model.input_to_embed(pair_tokens(pair, "clean", score, pad).to(device))[0]
    corrupt_resid = model.input_to_embed(pair_tokens(pair, "corrupt", score, pad).to(device))[0]
    runner = _PrefixRunner(model, corrupt_resid[:1, :p])

    def run(resid: torch.Tensor, prompt_len: int, wanted: set[str]) -> tuple[float, dict[str, torch.Tensor]]:
        store: dict[str, torch.Tensor] = {}

        def save(act: torch.Tensor, hook: Any) -> None:
            store[hook.name] = act.detach()

        logits = runner.window_logits(resid[:, p:], 0, prompt_len - 1 - p, w, [(n, save) for n in wanted])
        return float(_metric_from_window(logits, pair, score, reduce)[0]), store

    m_clean, clean_cache = run(clean_resid, len(pair.clean_ids), clean_names)
    m_corrupt, corrupt_cache = run(corrupt_resid, len(pair.corrupt_ids), corrupt_names)
    return _Prepared(runner, clean_cache, corrupt_cache, m_clean, m_corrupt)


def pair_baseline(model: Any, pair: PatchPair, score: str = "option", reduce: str = "mean") -> tuple[float, float]:
    """``(m_clean, m_corrupt)`` of one pair, computed exactly as :func:`patch_pair` computes them."""
    with torch.no_grad():
        prep = _prepare(model, pair, score, reduce, set(), set())
    return prep.m_clean, prep.m_corrupt


@dataclass
class ItemPatching:
    """Patching results for one pair: raw metric per (layer, slot[, head]) and its recovery."""

    pair: PatchPair
    component: str
    layers: list[int]
    slots: list[Slot]
    m_clean: float
    m_corrupt: float
    patched: torch.Tensor  # [layer, slot] or [layer, slot, head]; NaN for empty slots

    @property
    def gap(self) -> float:
        return self.m_clean - self.m_corrupt

    @property
    def recovery(self) -> torch.Tensor:
        gap = self.gap
        if gap == 0:
            return torch.full_like(self.patched, float("nan"))
        return (self.patched - self.m_corrupt) / gap


def _set_sites(jobs: list[tuple[list[tuple[int, int]], int | None]], rows_per_job: int, clean_act: torch.Tensor,
               act_start: int, act_stop: int, clean_start: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """A hook writing clean activations into each job's rows (``rows_per_job`` consecutive rows per job, taking
    clean rows ``0..rows_per_job-1``), at the sites whose corrupted position lies in ``[act_start, act_stop)``
    (the positions the hooked run covers, starting at ``act_start``); ``clean_act`` starts at ``clean_start``."""
    todo = [(j, [(q - act_start, c - clean_start) for q, c in sites if act_start <= q < act_stop], head)
            for j, (sites, head) in enumerate(jobs)]
    src = clean_act[:rows_per_job]

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        for j, sites, head in todo:
            rows = slice(j * rows_per_job, (j + 1) * rows_per_job)
            for q, c in sites:
                if head is None:
                    act[rows, q] = src[:, c]
                else:
                    act[rows, q, head] = src[:, c, head]
        return act

    return hook


def _patched_metrics(model: Any, prep: _Prepared, pair: PatchPair, layer: int, name: str,
                     clean_act: torch.Tensor, jobs: list[tuple[list[tuple[int, int]], int | None]], score: str,
                     reduce: str) -> torch.Tensor:
    """The metric for each job (sites, head) patched at ``name`` of ``layer``.

    Stage 1: the patched prompt runs once per job (one row), from ``layer`` on: its activations are the same
    whichever option follows. Stage 2 (``score="option"``): the option tokens run as ``jobs × options`` rows on
    top of each job's prompt keys/values (layers before ``layer`` are never read). Each stage is one batched
    forward: TransformerLens has a fixed cost per block call that dwarfs these small batches.
    """
    p, n_prompt = pair.prefix_len, len(pair.corrupt_ids)
    start = prep.corrupt_cache[f"blocks.{layer}.hook_resid_pre"]  # [options, suffix pos, d]
    n_jobs = len(jobs)
    cache_a = prep.runner.cache(n_jobs, frozen=False)
    hook_a = _set_sites(jobs, 1, clean_act, p, n_prompt, p)
    out_a = prep.runner.run(start[:1, : n_prompt - p].expand(n_jobs, -1, -1), layer, [(name, hook_a)], cache_a)
    first = prep.runner.unembed(out_a[:, -1:])  # predicts the first answer token
    if score == "first_token":
        return _metric_from_window(first, pair, score, reduce)
    k, width = len(pair.option_ids), _window(pair, score)
    if width == 1:  # single-token options: the first token is the whole answer
        return _metric_from_window(first.repeat_interleave(k, 0), pair, score, reduce)
    entries = [(e.past_keys.repeat_interleave(k, 0), e.past_values.repeat_interleave(k, 0)) if i >= layer
               else (e.past_keys[:1].expand(n_jobs * k, -1, -1, -1), e.past_values[:1].expand(n_jobs * k, -1, -1, -1))
               for i, e in enumerate(cache_a.entries)]  # layers before `layer` are never read
    hook_b = _set_sites(jobs, k, clean_act, n_prompt, n_prompt + width - 1, p)
    resid_b = start[:, n_prompt - p : n_prompt - p + width - 1].repeat(n_jobs, 1, 1)  # option tokens but the last
    out_b = prep.runner.run(resid_b, layer, [(name, hook_b)], kv_cache(entries, frozen=True))
    logits = torch.cat([first.repeat_interleave(k, 0), prep.runner.unembed(out_b)], dim=1)  # [jobs·options, width]
    return _metric_from_window(logits, pair, score, reduce)


@torch.no_grad()
def patch_pair(
    model: Any,
    pair: PatchPair,
    component: str = "resid_pre",
    *,
    layers: Sequence[int] | None = None,
    layout: str | Sequence[Slot] = "slots",
    score: str = "option",
    reduce: str = "mean",
    source: str = "clean",
    batch_size: int = 256,
) -> ItemPatching:
    """Patch ``component`` of the clean run into the corrupted run at every (layer, slot[, head]).

    ``layout`` is a name (:data:`LAYOUTS`) or explicit :class:`Slot` objects. ``source="corrupt"`` patches the
    corrupted run's own activations (a no-op control: every cell equals ``m_corrupt``). ``batch_size`` counts
    rows (with ``score="option"`` each patch is one row per option).
    """
    _check_choice("reduction", reduce, REDUCTIONS)
    _check_choice("score", score, SCORES)
    _check_choice("source", source, ("clean", "corrupt"))
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise InterpSteerError(f"layers {bad or layers} out of range for a {n_layers}-layer model")
    hook_name(component, 0)  # validates the component
    slots = position_slots(pair, model.tokenizer, layout, score) if isinstance(layout, str) else list(layout)
    p = pair.prefix_len
    extra = _window(pair, score) if score == "option" else 0
    for slot in slots:
        for q, c in slot.positions:
            if q < p or c < p or q >= len(pair.corrupt_ids) + extra or c >= len(pair.clean_ids) + extra:
                raise InterpSteerError(f"slot {slot.label!r} patches inside the shared prefix or out of range")
    names = {hook_name(component, i) for i in layers}
    starts = {f"blocks.{i}.hook_resid_pre" for i in layers}
    prep = _prepare(model, pair, score, reduce, names, names | starts)
    clean_cache = prep.clean_cache
    if source == "corrupt":
        clean_cache = prep.corrupt_cache
        slots = [Slot(s.label, [(q, q) for q, _ in s.positions]) for s in slots]
    heads: list[int | None] = list(range(model.cfg.n_heads)) if component == "z" else [None]
    shape = (len(layers), len(slots)) + ((len(heads),) if component == "z" else ())
    patched = torch.full(shape, float("nan"))
    k = len(_continuations(pair, score))
    per_chunk = max(1, batch_size // k)
    for li, layer in enumerate(layers):
        name = hook_name(component, layer)
        jobs = [(si, hi, slot.positions, head) for si, slot in enumerate(slots) if slot.positions
                for hi, head in enumerate(heads)]
        for b in range(0, len(jobs), per_chunk):
            chunk = jobs[b : b + per_chunk]
            metric = _patched_metrics(model, prep, pair, layer, name, clean_cache[name],
                                      [(sites, head) for _, _, sites, head in chunk], score, reduce).cpu()
            for r, (si, hi, _, head) in enumerate(chunk):
                if head is None:
                    patched[li, si] = metric[r]
                else:
                    patched[li, si, hi] = metric[r]
    return ItemPatching(pair, component, layers, slots, prep.m_clean, prep.m_corrupt, patched)


# ------------------------------------------------------------------------------------------------ reference


def aligned_clean_cache(model: Any, pair: PatchPair, names: Iterable[str], score: str = "option") -> Any:
    """A ``transformer_lens.ActivationCache`` in corrupted-run coordinates (rows: one per continuation): each
    position of :func:`all_sites` holds the clean activation of its aligned position (row ``k`` from clean
    row ``k``), the others their own corrupted activation."""
    from transformer_lens import ActivationCache

    names = list(names)
    device = model.cfg.device
    pad = pad_token_id(model.tokenizer)
    _, clean = model.run_with_cache(pair_tokens(pair, "clean", score, pad).to(device), names_filter=names)
    _, corrupt = model.run_with_cache(pair_tokens(pair, "corrupt", score, pad).to(device), names_filter=names)
    out = {}
    for name in names:
        act = corrupt[name].clone()
        for q, c in all_sites(pair, score):
            act[:, q] = clean[name][:, c]
        out[name] = act
    return ActivationCache(out, model)


@torch.no_grad()
def transformer_lens_patching(model: Any, pair: PatchPair, component: str = "resid_pre", *,
                              score: str = "option", reduce: str = "mean") -> torch.Tensor:
    """Token-level patching with ``transformer_lens.patching`` (one full forward per cell).

    Returns the raw metric ``[layer, corrupted pos]`` (``[layer, pos, head]`` for ``z``) over *all* positions
    of the corrupted rows (prompt, then option tokens), patching each alone with its aligned clean activation
    (:func:`aligned_clean_cache`); prefix positions and surplus cue tokens patch their own value
    (≈ ``m_corrupt``). A slow reference for :func:`patch_pair`.
    """
    from transformer_lens import patching as tlp

    n = model.cfg.n_layers
    names = [hook_name(component, i) for i in range(n)]
    cache = aligned_clean_cache(model, pair, names, score)
    tokens = pair_tokens(pair, "corrupt", score, pad_token_id(model.tokenizer)).to(model.cfg.device)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return pair_metric(logits, pair, len(pair.corrupt_ids), score, reduce)[0]

    if component == "resid_pre":
        return tlp.get_act_patch_resid_pre(model, tokens, cache, metric)
    if component == "attn_out":
        return tlp.get_act_patch_attn_out(model, tokens, cache, metric)
    if component == "mlp_out":
        return tlp.get_act_patch_mlp_out(model, tokens, cache, metric)
    if component == "z":
        return tlp.get_act_patch_attn_head_out_by_pos(model, tokens, cache, metric)
    return tlp.generic_activation_patch(model, tokens, cache, metric, patch_setter=tlp.layer_pos_patch_setter,
                                        activation_name="resid_post", index_axis_names=("layer", "pos"))


# ------------------------------------------------------------------------------------------------ aggregate


@dataclass
class PatchingResult:
    """Recovery averaged over items, per (layer, position slot[, head]), with everything needed to redo it.

    ``recovery``: mean over included items (NaN-aware: an item without a slot does not count there);
    ``recovery_country_balanced``: mean of the per-country means; ``recovery_per_item`` / ``patched_per_item``:
    ``[item, layer, slot(, head)]`` for every *patched* item (``items[i]["row"]``); ``count``: included items per
    slot; ``by_country``: per-country means; ``items``: every screened item, included or not.
    """

    component: str
    layers: list[int]
    hooks: list[str]
    labels: list[str]
    heads: list[int] | None
    recovery: torch.Tensor
    recovery_country_balanced: torch.Tensor
    count: torch.Tensor
    recovery_per_item: torch.Tensor
    patched_per_item: torch.Tensor
    m_clean: torch.Tensor
    m_corrupt: torch.Tensor
    included: torch.Tensor
    by_country: dict[str, torch.Tensor]
    items: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    config: dict[str, Any]

    def summary(self, k: int = 5) -> dict[str, Any]:
        """Where recovery is concentrated: top cells, and per slot the layer of its maximum."""
        z = self.recovery if self.heads is None else self.recovery.amax(-1)
        flat = torch.nan_to_num(z, nan=-math.inf).flatten()
        top = []
        for idx in flat.argsort(descending=True)[:k].tolist():
            li, si = divmod(idx, z.shape[1])
            if math.isfinite(float(flat[idx])):
                top.append({"layer": self.layers[li], "position": self.labels[si], "recovery": float(z[li, si])})
        per_slot = {}
        for si, label in enumerate(self.labels):
            col = z[:, si]
            if torch.isnan(col).all():
                continue
            best = int(torch.nan_to_num(col, nan=-math.inf).argmax())
            per_slot[label] = {"best_layer": self.layers[best], "max": float(col[best]),
                               "first_layer": float(col[0]), "last_layer": float(col[-1])}
        return {"n_items_used": int(self.included.sum()), "n_items_screened": len(self.items),
                "n_items_patched": int(self.recovery_per_item.shape[0]), "n_stems_skipped": len(self.skipped),
                "top_cells": top, "per_position": per_slot}

    def to_json(self) -> dict[str, Any]:
        axes = ["layer", "position"] + (["head"] if self.heads is not None else [])
        return {
            "format": FORMAT, "component": self.component, "hooks": self.hooks, "layers": self.layers,
            "positions": self.labels, "heads": self.heads,
            "axes": {"recovery": axes, "recovery_per_item": ["item", *axes]},
            "alignment": ALIGNMENT_NOTE,
            "metric": metric_note(self.config.get("score", "option"), self.config.get("reduce", "mean")),
            "config": self.config, "summary": self.summary(), "items": self.items, "skipped": self.skipped,
            "countries": sorted(self.by_country),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"recovery": self.recovery, "recovery_country_balanced": self.recovery_country_balanced,
               "count": self.count, "recovery_per_item": self.recovery_per_item,
               "patched_per_item": self.patched_per_item, "m_clean": self.m_clean, "m_corrupt": self.m_corrupt}
        out.update({f"recovery_by_country.{c}": t for c, t in self.by_country.items()})
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in out.items()}
        tensors["included"] = self.included.to(torch.uint8).contiguous().cpu()
        return tensors

    def save(self, output_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
        """Write ``patching.safetensors``, ``patching.json`` and (``html``) ``heatmap.html``, each atomically."""
        out = Path(output_dir)
        paths = {"safetensors": out / "patching.safetensors", "json": out / "patching.json"}
        save_safetensors_atomic(self.tensors(), paths["safetensors"],
                                metadata={"format": FORMAT, "component": self.component})
        write_text_atomic(paths["json"], _strict_dumps(self.to_json(), indent=2, ensure_ascii=False))
        if html:
            paths["html"] = out / "heatmap.html"
            write_heatmap(self, paths["html"])
        return paths


def load_patching(output_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a saved result (safetensors + JSON; never unpickles)."""
    from safetensors.torch import load_file

    out = Path(output_dir)
    st, js = out / "patching.safetensors", out / "patching.json"
    if not st.is_file() or not js.is_file():
        raise InterpSteerError(f"{out} has no patching.safetensors + patching.json")
    return load_file(str(st)), json.loads(js.read_text(encoding="utf-8"))


def _nanmean(x: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ok = ~torch.isnan(x)
    count = ok.sum(dim)
    total = torch.where(ok, x, torch.zeros_like(x)).sum(dim)
    mean = total / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan"))), count


def _stack_end_aligned(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``[layer, slot(, head)]`` tensors with different slot counts, aligned at the last slot."""
    width = max(t.shape[1] for t in tensors)
    out = torch.full((len(tensors), tensors[0].shape[0], width, *tensors[0].shape[2:]), float("nan"))
    for i, t in enumerate(tensors):
        out[i, :, width - t.shape[1]:] = t
    return out


def _labels(results: list[ItemPatching], layout: str) -> list[str]:
    if layout == "slots":
        ref = [s.label for s in results[0].slots]
        for r in results[1:]:
            if [s.label for s in r.slots] != ref:
                raise InterpSteerError(f"item {r.pair.item_id} has a different template tail than "
                                       f"{results[0].pair.item_id}; cannot average position slots")
        return ref
    width = max(len(r.slots) for r in results)
    labels = []
    for col in range(width):
        offset = width - col
        seen = {r.slots[-offset].label for r in results if len(r.slots) >= offset}
        labels.append(f"{seen.pop()} (-{offset})" if len(seen) == 1 else f"pos -{offset}")
    return labels


def _item_record(model: Any, pair: PatchPair, m_clean: float, m_corrupt: float, included: bool,
                 min_gap: float) -> dict[str, Any]:
    tok = model.tokenizer
    gap = m_clean - m_corrupt
    return {
        "item_id": pair.item_id, "country": pair.country, "clean_question": pair.clean_question,
        "corrupt_question": pair.corrupt_question, "answer": pair.options[pair.answer],
        "m_clean": m_clean, "m_corrupt": m_corrupt, "gap": gap, "included": included,
        "reason": None if included else f"gap {gap:.3f} < min_gap {min_gap}",
        "cue_clean": tok.decode(pair.clean_ids[slice(*pair.cue_clean)]),
        "cue_corrupt": tok.decode(pair.corrupt_ids[slice(*pair.cue_corrupt)]),
        "n_tokens_clean": len(pair.clean_ids), "n_tokens_corrupt": len(pair.corrupt_ids), "row": None,
    }


def activation_patching(
    model: Any,
    pairs: Sequence[PatchPair],
    component: str = "resid_pre",
    *,
    layers: Sequence[int] | None = None,
    layout: str = "slots",
    score: str = "option",
    reduce: str = "mean",
    min_gap: float = 0.5,
    n_per_country: int | None = None,
    patch_excluded: bool = False,
    skipped: Sequence[dict[str, Any]] = (),
    batch_size: int = 256,
    progress: bool = False,
) -> PatchingResult:
    """Screen the pairs (clean and corrupted metric), patch those whose gap ``m_clean − m_corrupt ≥ min_gap``
    and average their recovery.

    Pairs are screened in order; with ``n_per_country`` screening of a country stops once that many of its
    pairs are included. Excluded items are reported (``items[i]["included"] = False`` with the reason) and,
    with ``patch_excluded``, patched and stored too (they never enter the means).
    """
    from tqdm.auto import tqdm

    if not pairs:
        raise InterpSteerError("no pairs to patch")
    _check_choice("position layout", layout, LAYOUTS)
    _check_choice("score", score, SCORES)
    _check_choice("reduction", reduce, REDUCTIONS)
    hook_name(component, 0)
    if n_per_country is not None and n_per_country < 1:
        raise InterpSteerError(f"n_per_country must be at least 1, got {n_per_country}")
    items: list[dict[str, Any]] = []
    to_patch: list[tuple[int, PatchPair]] = []
    used: dict[str | None, int] = {}
    for pair in tqdm(pairs, desc="screening", disable=not progress, leave=False):
        if n_per_country is not None and used.get(pair.country, 0) >= n_per_country:
            continue
        m_clean, m_corrupt = pair_baseline(model, pair, score, reduce)
        included = m_clean - m_corrupt >= min_gap
        used[pair.country] = used.get(pair.country, 0) + int(included)
        items.append(_item_record(model, pair, m_clean, m_corrupt, included, min_gap))
        if included or patch_excluded:
            to_patch.append((len(items) - 1, pair))
    if not to_patch:
        best = max(items, key=lambda i: i["gap"])
        raise InterpSteerError(f"no item has a clean-corrupted gap ≥ min_gap={min_gap} ({len(items)} screened; "
                               f"largest gap {best['gap']:.3f} for {best['item_id']})")
    results = []
    for row, (idx, pair) in enumerate(tqdm(to_patch, desc=f"patching {component}", disable=not progress)):
        results.append(patch_pair(model, pair, component, layers=layers, layout=layout, score=score,
                                  reduce=reduce, batch_size=batch_size))
        items[idx]["row"] = row
        if layout == "slots":
            items[idx]["slot_tokens"] = {
                s.label: model.tokenizer.decode([pair.corrupt_ids[q] for q, _ in s.positions])
                if s.label != "option tokens" else " | ".join(pair.options) for s in results[-1].slots}
    labels = _labels(results, layout)
    patched = _stack_end_aligned([r.patched for r in results])
    recov = _stack_end_aligned([r.recovery for r in results])
    m_clean_t = torch.tensor([r.m_clean for r in results])
    m_corrupt_t = torch.tensor([r.m_corrupt for r in results])
    included_t = torch.tensor([items[idx]["included"] for idx, _ in to_patch])
    use = recov[included_t]
    mean, count = _nanmean(use)
    count = count[0] if count.dim() == 2 else count[0, :, 0]  # per slot (the same over layers/heads)
    by_country = {}
    for country in sorted({str(r.pair.country) for r in results}):
        sel = torch.tensor([str(r.pair.country) == country for r in results]) & included_t
        if sel.any():
            by_country[country] = _nanmean(recov[sel])[0]
    balanced = _nanmean(torch.stack(list(by_country.values())))[0]
    layer_list = results[0].layers
    config = {"component": component, "layout": layout, "score": score, "reduce": reduce, "min_gap": min_gap,
              "n_per_country": n_per_country, "patch_excluded": patch_excluded,
              "model": getattr(model.cfg, "model_name", None), "n_layers": model.cfg.n_layers}
    return PatchingResult(
        component=component, layers=layer_list, hooks=[hook_name(component, i) for i in layer_list],
        labels=labels, heads=list(range(model.cfg.n_heads)) if component == "z" else None, recovery=mean,
        recovery_country_balanced=balanced, count=count.float(), recovery_per_item=recov,
        patched_per_item=patched, m_clean=m_clean_t, m_corrupt=m_corrupt_t, included=included_t,
        by_country=by_country, items=items, skipped=list(skipped), config=config,
    )


# ------------------------------------------------------------------------------------------------ heatmap


def write_heatmap(result: PatchingResult, path: str | Path, *, max_items: int = 40) -> Path:
    """An offline plotly heatmap (plotly.js embedded, no CDN) of recovery over layer × position.

    A dropdown switches between the mean over included items, the country-balanced mean, per-country means and
    single patched items (up to ``max_items``); for ``z`` every view is layer × head at one position slot.
    """
    import plotly.graph_objects as go

    views: list[tuple[str, torch.Tensor]] = [
        (f"mean over {int(result.included.sum())} items", result.recovery),
        (f"mean of {len(result.by_country)} country means", result.recovery_country_balanced),
    ]
    views += [(f"country: {c}", t) for c, t in result.by_country.items()]
    patched_items = [i for i in result.items if i["row"] is not None]
    for item in patched_items[:max_items]:
        flag = "" if item["included"] else " (excluded)"
        views.append((f"item {item['item_id']}{flag}", result.recovery_per_item[item["row"]]))
    y = [str(layer) for layer in result.layers]
    traces: list[tuple[str, list[str], torch.Tensor]] = []
    if result.heads is None:
        traces = [(name, result.labels, z) for name, z in views]
        x_title = "position (corrupted run; see patching.json for the alignment)"
    else:
        heads = [f"H{h}" for h in result.heads]
        for name, z in views:
            for si, label in enumerate(result.labels):
                if not torch.isnan(z[:, si]).all():
                    traces.append((f"{name} | {label}", heads, z[:, si]))
        x_title = "attention head (hook_z)"
    fig = go.Figure()
    for k, (name, x, z) in enumerate(traces):
        fig.add_trace(go.Heatmap(
            z=z.tolist(), x=x, y=y, colorscale="RdBu", zmid=0.0, visible=k == 0, name=name,
            colorbar={"title": {"text": "recovery"}},
            hovertemplate="layer %{y}<br>%{x}<br>recovery %{z:.3f}<extra></extra>",
        ))
    buttons = [{"label": name, "method": "update",
                "args": [{"visible": [j == k for j in range(len(traces))]}, {"title.text": _title(result, name)}]}
               for k, (name, _, _) in enumerate(traces)]
    fig.update_layout(
        title={"text": _title(result, traces[0][0] if traces else "")},
        xaxis={"title": {"text": x_title}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "type": "category"},
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right", "y": 1.15}],
        height=max(450, 22 * len(y) + 200),
    )
    return write_figure_atomic(fig, path)


def _title(result: PatchingResult, view: str) -> str:
    score = result.config.get("score", "option")
    return (f"Activation patching ({result.component}, {score} score): recovery of the correct-option margin, "
            f"localized → non-localized — {view}")


def run_patching(
    model: Any,
    *,
    countries: str | Iterable[str] | None = None,
    n_items: int | None = None,
    component: str = "resid_pre",
    layers: Sequence[int] | None = None,
    layout: str = "slots",
    score: str = "option",
    reduce: str = "mean",
    min_gap: float = 0.5,
    split: str | None = None,
    max_cue_tokens: int = 4,
    items: Sequence[MCQItem] | None = None,
    patch_excluded: bool = False,
    batch_size: int = 256,
    progress: bool = False,
) -> PatchingResult:
    """The whole pipeline: alignable pairs from the culture set (or ``items``), screened in file order until
    ``n_items`` per country pass ``min_gap``, patched and averaged (see :func:`activation_patching`)."""
    if items is not None:
        pairs, skipped = build_pairs(model.tokenizer, items, max_cue_tokens=max_cue_tokens, score=score)
    else:
        pairs, skipped = build_pairs(model.tokenizer, countries=countries, split=split,
                                     max_cue_tokens=max_cue_tokens, score=score)
    result = activation_patching(model, pairs, component, layers=layers, layout=layout, score=score,
                                 reduce=reduce, min_gap=min_gap, n_per_country=n_items,
                                 patch_excluded=patch_excluded, skipped=skipped, batch_size=batch_size,
                                 progress=progress)
    result.config.update(max_cue_tokens=max_cue_tokens, split=split,
                         countries=sorted({str(p.country) for p in pairs}))
    return result


__all__ = [
    "ALIGNMENT_NOTE", "COMPONENTS", "ItemPatching", "LAYOUTS", "PatchPair", "PatchingResult", "REDUCTIONS",
    "SCORES", "Slot", "activation_patching", "aligned_clean_cache", "all_sites", "build_pairs", "hook_name", "load_patching",
    "make_pair", "metric_note", "option_metric", "pair_baseline", "pair_metric", "pair_tokens", "patch_pair",
    "position_slots", "run_patching", "transformer_lens_patching", "write_heatmap",
]
