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

from interp_steer.chat import chat_tokens, pad_right, pad_token_id
from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
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
              positions: str | None, starts: torch.Tensor | None):
    if vector is None or strength == 0:
        return nullcontext()
    policy = positions or vector.positions
    return steer(model, vector, strength, sae=sae, positions=policy, starts=starts if policy != "all" else None)


def _starts_for(policy: str, instruction_end: list[int], response_start: list[int]) -> torch.Tensor:
    return torch.tensor(instruction_end if policy == "after_instruction" else response_start)


@torch.no_grad()
def _loglik_scores(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None, strength: float,
                   sae: Any | None, positions: str | None, batch_size: int, progress: bool) -> list[list[float]]:
    tok = model.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    seqs, owners = [], []
    for i, item in enumerate(items):
        for j, option in enumerate(item.options):
            ct = chat_tokens(tok, item.question, option)
            end = len(ct.ids)
            while end > ct.response_start + 1 and ct.ids[end - 1] in special:
                end -= 1  # score the option's own tokens, not the end-of-turn marker
            seqs.append((ct.ids[:end], ct.response_start, ct.instruction_end))
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
        with _steering(model, vector, strength, sae, positions, starts):
            logits = model(tokens.to(model.cfg.device))
        targets = tokens.to(logits.device)
        for row, k in enumerate(idx):
            ids, rs, _ = seqs[k]
            # log-softmax only where option tokens are predicted (not over the whole batch × vocabulary)
            logp = torch.log_softmax(logits[row, rs - 1 : len(ids) - 1].float(), -1)
            values[k] = float(logp.gather(-1, targets[row, rs : len(ids), None]).mean())
    out = [[0.0] * len(it.options) for it in items]
    for k, (i, j) in enumerate(owners):
        out[i][j] = values[k]
    return out


@torch.no_grad()
def _letter_scores(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None, strength: float,
                   sae: Any | None, positions: str | None, batch_size: int, progress: bool) -> list[list[float]]:
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
        with _steering(model, vector, strength, sae, positions, starts):
            logits = model(tokens.to(model.cfg.device))
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
) -> list[ItemScore]:
    """Score every item (steered by ``vector`` at ``strength`` when given)."""
    if not items:
        raise InterpSteerError("no MCQ items to score")
    if method == "loglik":
        scores = _loglik_scores(model, items, vector, strength, sae, positions, batch_size, progress)
    elif method == "letter":
        scores = _letter_scores(model, items, vector, strength, sae, positions, batch_size, progress)
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
