"""Multiple-choice scoring (optionally steered) and the culture metrics.

Scoring methods:

* ``"loglik"`` (default): each option is scored as the assistant's answer to the bare question by its
  length-normalised log-likelihood (mean log-prob per option token, end-of-turn excluded); the highest wins.
  A 135M model cannot pick letters reliably, so this is the default.
* ``"letter"``: the question is shown with lettered options (:func:`interp_steer.data.format_mcq`), the answer
  is primed with ``"("`` and the option letters' next-token log-probs are compared.

Metrics (per country and overall):

* accuracy on localized prompts (the country is named) and non-localized prompts (no cue);
* localization gap = acc_loc − acc_nonloc;
* **RCA** (robust cultural accuracy) = harmonic mean of the two, ``2·a_loc·a_non / (a_loc + a_non)`` (0 when
  both are 0): high only when the model is right in both regimes;
* **PNLG** (normalised localization gap) = ``(a_loc − a_non) / mean(a_loc, a_non)`` (0 when both are 0):
  lower is better; 0 means the cue does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from interp_steer.chat import chat_tokens, common_prefix, pad_left, pad_right, pad_token_id, scored_option
from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.shared_layers import SharedLayers, run, usable
from interp_steer.steering.interventions import steer
from interp_steer.steering.vector import SteeringVector


@dataclass
class ItemScore:
    item_index: int
    scores: list[float]
    predicted: int
    answer: int
    correct: bool
    country: str | None
    localization_status: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rca(acc_localized: float, acc_nonlocalized: float) -> float:
    """Robust cultural accuracy: the harmonic mean of localized and non-localized accuracy."""
    total = acc_localized + acc_nonlocalized
    return 0.0 if total == 0 else 2 * acc_localized * acc_nonlocalized / total


def pnlg(acc_localized: float, acc_nonlocalized: float) -> float:
    """Normalised localization gap ``(a_loc − a_non) / mean(a_loc, a_non)``; lower is better."""
    total = acc_localized + acc_nonlocalized
    return 0.0 if total == 0 else (acc_localized - acc_nonlocalized) / (total / 2)


def _steering(model: Any, vector: SteeringVector | None, strength: float, sae: Any | None,
              positions: str | None, starts: torch.Tensor | None, shared: SharedLayers | None = None, *,
              check: bool = True):
    """The steering context of one scored forward (none when unsteered); with ``shared`` the hooks are keyed
    as they fire in :meth:`SharedLayers.forward`. ``check=False``: the caller checked the vector already."""
    if vector is None or strength == 0:
        return nullcontext()
    policy = positions or vector.positions
    starts = starts if policy != "all" else None
    if shared is not None:
        if check:
            vector.check_compatible(model, sae)
        return steer(model, shared.interventions(vector, sae), strength, positions=policy, starts=starts,
                     require_fired=True)
    return steer(model, vector, strength, sae=sae, positions=policy, starts=starts, check=check,
                 require_fired=True)


def _starts_for(policy: str, instruction_end: list[int], response_start: list[int]) -> torch.Tensor:
    return torch.tensor(instruction_end if policy == "after_instruction" else response_start)


def _option_sequences(tok: Any, items: Sequence[MCQItem]) -> list[list[tuple[list[int], int, int]]]:
    """Per item, per option: :func:`~interp_steer.chat.scored_option` (the option's own tokens, not the
    end-of-turn marker, are scored)."""
    return [[scored_option(tok, item.question, option) for option in item.options] for item in items]


def _span_logits(model: Any, resid: torch.Tensor, spans: Sequence[tuple[int, int, int]]) -> list[torch.Tensor]:
    """Vocabulary logits only at the positions that are scored: ``spans`` = ``(row, start, stop)`` of the
    last block's residual stream ``resid`` [batch, pos, d]; one final norm + unembedding for all of them
    (padding and end-of-turn positions are never unembedded)."""
    rows = torch.cat([torch.full((b - a,), r, dtype=torch.long) for r, a, b in spans]).to(resid.device)
    cols = torch.cat([torch.arange(a, b) for _, a, b in spans]).to(resid.device)
    logits = model.unembed(model.ln_final(resid[rows, cols][None]))[0]
    return list(torch.split(logits, [b - a for _, a, b in spans]))


def _mean_option_logp(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean log-prob of ``targets`` [n] under ``logits`` [n, vocab] (log-softmax only at these rows)."""
    logp = torch.log_softmax(logits.float(), -1)
    return float(logp.gather(-1, targets[:, None].to(logp.device)).mean())


@torch.no_grad()
def _loglik_scores(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None, strength: float,
                   sae: Any | None, positions: str | None, batch_size: int, progress: bool,
                   shared: SharedLayers | None = None) -> list[list[float]]:
    """One forward per option sequence (the reference path; see :func:`_loglik_scores_shared`)."""
    tok = model.tokenizer
    seqs, owners = [], []
    for i, per_item in enumerate(_option_sequences(tok, items)):
        for j, seq in enumerate(per_item):
            seqs.append(seq)
            owners.append((i, j))
    # longest first keeps padding small
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k][0]))
    values = [0.0] * len(seqs)
    pad = pad_token_id(tok)
    policy = positions or (vector.positions if vector is not None else "all")
    for b in tqdm(range(0, len(order), batch_size), desc="MCQ", disable=not progress, leave=False):
        idx = order[b : b + batch_size]
        tokens, mask = pad_right([seqs[k][0] for k in idx], pad)
        starts = _starts_for(policy, [seqs[k][2] for k in idx], [seqs[k][1] for k in idx])
        with _steering(model, vector, strength, sae, positions, starts, shared):
            resid = run(model, shared, tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
        spans = [(row, seqs[k][1] - 1, len(seqs[k][0]) - 1) for row, k in enumerate(idx)]
        for (row, a, b), logits, k in zip(spans, _span_logits(model, resid, spans), idx, strict=True):
            values[k] = _mean_option_logp(logits, tokens[row, a + 1 : b + 1])
    out = [[0.0] * len(it.options) for it in items]
    for k, (i, j) in enumerate(owners):
        out[i][j] = values[k]
    return out


@torch.no_grad()
def _loglik_scores_shared(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None, strength: float,
                          sae: Any | None, positions: str | None, batch_size: int,
                          progress: bool, shared: SharedLayers | None = None) -> list[list[float]]:
    """Option log-likelihoods with each item's prompt computed once.

    The tokens every option of an item shares (the chat-rendered question up to the assistant turn) run once,
    left-padded, through the model into a frozen TransformerLens KV cache; the cache rows are repeated per
    option and only the option tokens (plus the prompt's last token, whose logits predict the first option
    token) run on top of it, right-padded. Equal to :func:`_loglik_scores` up to float rounding; the chunks
    hold at most ``batch_size`` option sequences. Steering hooks see absolute positions through
    :class:`~interp_steer.steering.interventions.StepState` (offset and left-padding-shifted starts).
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    from interp_steer.models import kv_cache

    tok = model.tokenizer
    pad = pad_token_id(tok)
    device = model.cfg.device
    policy = positions or (vector.positions if vector is not None else "all")
    per_item = _option_sequences(tok, items)
    # prefix = the shared tokens except the last one (that one starts every option's continuation)
    prefix_len = [min(min(common_prefix(opts[0][0], s[0]) for s in opts), min(s[1] for s in opts)) - 1
                  for opts in per_item]
    if min(prefix_len) < 1:  # nothing to share (no template, one-token prompt): score full sequences
        return _loglik_scores(model, items, vector, strength, sae, positions, batch_size, progress, shared)
    order = sorted(range(len(items)), key=lambda i: -prefix_len[i])
    chunks: list[list[int]] = [[]]
    for i in order:
        if chunks[-1] and sum(len(per_item[k]) for k in chunks[-1]) + len(per_item[i]) > batch_size:
            chunks.append([])
        chunks[-1].append(i)
    out = [[0.0] * len(it.options) for it in items]
    for chunk in tqdm(chunks, desc="MCQ", disable=not progress, leave=False):
        prefixes = [per_item[i][0][0][: prefix_len[i]] for i in chunk]
        p_tokens, p_mask = pad_left(prefixes, pad)
        shift = [p_tokens.shape[1] - len(p) for p in prefixes]  # left padding per item
        rows = [(i, c, j) for c, i in enumerate(chunk) for j in range(len(per_item[i]))]
        conts = [per_item[i][j][0][prefix_len[i]:] for i, _, j in rows]
        c_tokens, c_mask = pad_right(conts, pad)
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, batch_size=len(chunk))
        starts = _starts_for(policy, [per_item[i][0][2] + shift[c] for c, i in enumerate(chunk)],
                             [per_item[i][0][1] + shift[c] for c, i in enumerate(chunk)])
        with _steering(model, vector, strength, sae, positions, starts, shared) as handle:
            run(model, shared, p_tokens.to(device), attention_mask=p_mask.to(device), past_kv_cache=cache,
                return_type=None)
            pick = torch.tensor([c for _, c, _ in rows], device=p_tokens.device)
            expanded = kv_cache([(e.past_keys.index_select(0, pick.to(e.past_keys.device)),
                                  e.past_values.index_select(0, pick.to(e.past_values.device))) for e in cache.entries],
                                frozen=True,
                                mask=cache.previous_attention_mask.index_select(
                                    0, pick.to(cache.previous_attention_mask.device)))
            if handle is not None:
                handle.state.offset = p_tokens.shape[1]
                if handle.state.starts is not None:
                    handle.state.starts = handle.state.starts.index_select(0, pick.to(handle.state.starts.device))
            resid = run(model, shared, c_tokens.to(device), attention_mask=c_mask.to(device),
                        past_kv_cache=expanded, stop_at_layer=model.cfg.n_layers)
        # continuation index whose logits predict the first option token, and the end of the option tokens
        spans = [(row, per_item[i][j][1] - 1 - prefix_len[i], len(per_item[i][j][0]) - 1 - prefix_len[i])
                 for row, (i, _, j) in enumerate(rows)]
        for (row, a, b), logits, (i, _, j) in zip(spans, _span_logits(model, resid, spans), rows, strict=True):
            out[i][j] = _mean_option_logp(logits, c_tokens[row, a + 1 : b + 1])
    return out


@torch.no_grad()
def _letter_scores(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None, strength: float,
                   sae: Any | None, positions: str | None, batch_size: int, progress: bool,
                   shared: SharedLayers | None = None) -> list[list[float]]:
    from interp_steer.data.loaders import format_mcq

    tok = model.tokenizer
    seqs, letter_ids = [], []
    for item in items:
        ct = chat_tokens(tok, format_mcq(item.question, item.options))
        primed = ct.ids + tok("(", add_special_tokens=False)["input_ids"]
        seqs.append((primed, ct.response_start, ct.instruction_end))
        letter_ids.append([tok(letter, add_special_tokens=False)["input_ids"][0] for letter in item.letters])
    pad = pad_token_id(tok)
    policy = positions or (vector.positions if vector is not None else "all")
    out: list[list[float]] = []
    for b in tqdm(range(0, len(seqs), batch_size), desc="MCQ letters", disable=not progress, leave=False):
        chunk = seqs[b : b + batch_size]
        tokens, mask = pad_right([c[0] for c in chunk], pad)
        starts = _starts_for(policy, [c[2] for c in chunk], [c[1] for c in chunk])
        with _steering(model, vector, strength, sae, positions, starts, shared):
            logits = run(model, shared, tokens.to(model.cfg.device))
        last = mask.sum(-1) - 1
        logp = torch.log_softmax(logits[torch.arange(len(chunk)), last.to(logits.device)].float(), -1)
        for row, ids in enumerate(letter_ids[b : b + batch_size]):
            out.append([float(logp[row, t]) for t in ids])
    return out


def score_mcq(
    model: Any,
    items: Sequence[MCQItem],
    vector: SteeringVector | None = None,
    strength: float = 1.0,
    *,
    sae: Any | None = None,
    method: str = "loglik",
    positions: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
    shared_prefix: bool = True,
    shared: SharedLayers | None = None,
) -> list[ItemScore]:
    """Score every item (steered by ``vector`` at ``strength`` when given).

    ``batch_size`` counts option sequences (``loglik``) or items (``letter``) per forward. With
    ``shared_prefix`` (default) the ``loglik`` method computes each item's prompt once and only the option
    tokens per option, through a KV cache; ``shared_prefix=False`` runs every option sequence in full (same
    scores up to float rounding; kept as the reference and for the benchmark).
    """
    if not items:
        raise InterpSteerError("no MCQ items to score")
    if batch_size < 1:
        raise InterpSteerError(f"batch_size must be at least 1, got {batch_size}")
    if method == "loglik":
        fn = _loglik_scores_shared if shared_prefix else _loglik_scores
        scores = fn(model, items, vector, strength, sae, positions, batch_size, progress, usable(shared, vector))
    elif method == "letter":
        scores = _letter_scores(model, items, vector, strength, sae, positions, batch_size, progress,
                                usable(shared, vector))
    else:
        raise InterpSteerError(f"unknown MCQ scoring method {method!r}; expected loglik or letter")
    results = []
    for i, (item, sc) in enumerate(zip(items, scores, strict=True)):
        pred = max(range(len(sc)), key=sc.__getitem__)
        results.append(ItemScore(i, sc, pred, item.answer, pred == item.answer, item.country,
                                 item.localization_status))
    return results


def _acc(scores: Sequence[ItemScore]) -> float | None:
    return sum(s.correct for s in scores) / len(scores) if scores else None


def culture_report(scores: Sequence[ItemScore]) -> dict[str, Any]:
    """Per-country and overall accuracy by localization status, gap, RCA and PNLG."""
    def block(subset: Sequence[ItemScore]) -> dict[str, Any]:
        loc = _acc([s for s in subset if s.localization_status == "localized"])
        non = _acc([s for s in subset if s.localization_status == "nolocalized"])
        out: dict[str, Any] = {"n": len(subset), "accuracy": _acc(subset), "acc_localized": loc,
                               "acc_nonlocalized": non}
        if loc is not None and non is not None:
            out.update(gap=loc - non, rca=rca(loc, non), pnlg=pnlg(loc, non))
        return out

    countries = sorted({s.country for s in scores if s.country is not None})
    return {"overall": block(scores), "per_country": {c: block([s for s in scores if s.country == c]) for c in countries}}
