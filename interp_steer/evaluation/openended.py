"""Open-ended steering evaluation: steered generations per strength, a judge's score and a fluency guard.

For each strength λ, :func:`open_ended_eval` generates answers to the test prompts with the fast steered
generation path (:func:`interp_steer.generation.generate`), scores them with a judge
(:class:`~interp_steer.evaluation.judges.EmbeddingJudge`, :class:`~interp_steer.evaluation.judges.LLMJudge` or
any ``(prompts, outputs) -> scores`` callable) and measures their **perplexity under the unsteered model**:
``exp(Σ NLL / #tokens)`` over the generated response tokens given the chat-templated prompt (the same token
ids that were generated; end-of-turn excluded). A vector that "works" by breaking the model shows up as a
large perplexity. λ = 0 runs the unsteered model (no hooks), so its samples are the plain generations.

:func:`token_nll` (summed next-token NLL from a start index, batched, optionally steered) and
:func:`response_perplexity` are reused by :mod:`interp_steer.evaluation.preservation`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from interp_steer.chat import chat_tokens, pad_right, pad_token_id
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.judges import Judge
from interp_steer.evaluation.mcq import _steering
from interp_steer.evaluation.shared_layers import SharedLayers, run, usable
from interp_steer.steering.vector import SteeringVector


@dataclass
class PerplexityResult:
    """Token-weighted perplexity ``exp(Σ NLL / n_tokens)`` and the per-sequence mean NLLs.

    ``per_sequence_nll[i]`` is ``None`` for a sequence with no scored token (e.g. an empty response)."""

    perplexity: float
    mean_nll: float
    n_tokens: int
    n_sequences: int
    per_sequence_nll: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def token_nll(
    model: Any,
    sequences: Sequence[Sequence[int]],
    starts: Sequence[int],
    *,
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    sae: Any | None = None,
    batch_size: int = 4,
    progress: bool = False,
    shared: SharedLayers | None = None,
) -> list[tuple[float, int]]:
    """``(Σ_t −log p(ids[t] | ids[:t]), n)`` over ``t ≥ starts[i]`` for each sequence (``starts[i] ≥ 1``).

    Batches are right-padded (causal attention: padding never affects earlier positions), longest first.
    With ``vector`` and a non-zero ``strength`` the model is steered at every position. ``shared``: lower
    blocks reused across calls (:mod:`interp_steer.evaluation.shared_layers`).
    """
    if len(sequences) != len(starts):
        raise InterpSteerError(f"{len(sequences)} sequences but {len(starts)} start indices")
    if vector is not None and strength != 0:
        vector.check_compatible(model, sae)
        vector = vector.to(device=model.cfg.device)
    if any(int(s) < 1 for s in starts):
        raise InterpSteerError("the first scored token needs a preceding token (start index ≥ 1)")
    out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    todo = [i for i in range(len(sequences)) if len(sequences[i]) > int(starts[i])]
    order = sorted(todo, key=lambda i: -len(sequences[i]))
    pad = pad_token_id(model.tokenizer)
    device = model.cfg.device
    lower = usable(shared, vector)
    for b in tqdm(range(0, len(order), batch_size), desc="NLL", disable=not progress, leave=False):
        idx = order[b : b + batch_size]
        tokens, _ = pad_right([list(sequences[i]) for i in idx], pad)
        tokens = tokens.to(device)
        with _steering(model, vector, strength, sae, "all", None, lower, check=False):  # checked above
            logits = run(model, lower, tokens)
        for row, i in enumerate(idx):
            n = len(sequences[i])
            s = int(starts[i])
            logp = torch.log_softmax(logits[row, s - 1 : n - 1].float(), -1)
            nll = -logp.gather(-1, tokens[row, s:n, None])[..., 0]
            out[i] = (float(nll.sum()), n - s)
    return out


def repetition(texts: Sequence[str], n: int = 3) -> float:
    """Share of repeated word ``n``-grams over ``texts``: ``1 − distinct / total`` within each text, pooled
    (0: no ``n``-gram repeats; a text that loops one phrase tends to 1). Perplexity under the unsteered model
    does not flag such loops (a repeated phrase is predictable), so reports print this beside it."""
    if n < 1:
        raise InterpSteerError(f"n must be >= 1, got {n}")
    total = repeated = 0
    for text in texts:
        words = str(text).lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return repeated / total if total else 0.0


def _summarise(pairs: Sequence[tuple[float, int]]) -> PerplexityResult:
    """Token-weighted perplexity of ``(summed NLL, n tokens)`` per sequence; ``inf`` when it overflows."""
    total = sum(s for s, _ in pairs)
    n = sum(k for _, k in pairs)
    if n == 0:
        raise InterpSteerError("no tokens to compute a perplexity on (all sequences empty)")
    mean = total / n
    ppl = math.exp(mean) if math.isfinite(mean) and mean < 700 else math.inf
    return PerplexityResult(perplexity=ppl, mean_nll=mean, n_tokens=n, n_sequences=len(pairs),
                            per_sequence_nll=[s / k if k else None for s, k in pairs])


def response_perplexity(
    model: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    system: str | None = None,
    chat: bool = True,
    batch_size: int = 4,
) -> PerplexityResult:
    """Perplexity of ``responses`` (response tokens only, end-of-turn excluded) given their chat-templated
    ``prompts`` under the model as it is (unsteered unless hooks are attached by the caller).

    Empty responses contribute no tokens (their ``per_sequence_nll`` is ``None``).
    """
    if len(prompts) != len(responses):
        raise InterpSteerError(f"{len(prompts)} prompts for {len(responses)} responses")
    seqs, starts = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        if not response.strip():
            ct = chat_tokens(model.tokenizer, prompt, system=system, chat=chat)
            seqs.append(ct.ids)
        else:
            ct = chat_tokens(model.tokenizer, prompt, response, system=system, chat=chat, end_of_turn=False)
            seqs.append(ct.ids)
        starts.append(ct.response_start)
    return _summarise(token_nll(model, seqs, starts, batch_size=batch_size))


# ------------------------------------------------------------------------------------------ the sweep


@dataclass
class StrengthResult:
    """One strength of an open-ended sweep.

    ``mean_score``: the judge's mean over scored outputs (``None`` without a judge or when no output was
    scored); ``n_invalid``: outputs the judge could not score. ``perplexity``: of the outputs under the
    unsteered model (``None`` when every output is empty). ``samples``: prompt, output, score, NLL per item.
    """

    strength: float
    mean_score: float | None
    n_scored: int
    n_invalid: int
    perplexity: float | None
    mean_nll: float | None
    n_tokens: int
    n_empty: int
    samples: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


JudgeLike = Judge | Callable[[list[str], list[str]], Sequence[float | None]]


def _run_judge(judge: JudgeLike | None, prompts: list[str], outputs: list[str], chosen: list[str] | None,
               rejected: list[str] | None) -> list[float | None]:
    if judge is None:
        return [None] * len(outputs)
    if isinstance(judge, Judge):
        raw: Sequence[float | None] = judge.judge(prompts, outputs, chosen=chosen, rejected=rejected)
    else:
        raw = judge(prompts, outputs)
    scores = list(raw)
    if len(scores) != len(outputs):
        raise InterpSteerError(f"the judge returned {len(scores)} scores for {len(outputs)} outputs")
    return [None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s) for s in scores]


def _refs(name: str, value: str | Sequence[str] | None, n: int) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise InterpSteerError(f"{len(values)} {name} references for {n} prompts")
    return values


def open_ended_eval(
    model: Any,
    prompts: Sequence[str],
    vector: SteeringVector | None,
    strengths: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
    *,
    judge: JudgeLike | None = None,
    chosen: str | Sequence[str] | None = None,
    rejected: str | Sequence[str] | None = None,
    sae: Any | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    batch_size: int = 8,
    positions: str | None = None,
    system: str | None = None,
    seed: int | None = 0,
    backend: str = "auto",
    nll_batch_size: int = 4,
    progress: bool = False,
) -> list[StrengthResult]:
    """Generate, judge and perplexity-check the answers to ``prompts`` at every strength.

    ``chosen`` / ``rejected`` are the reference answers the embedding judge compares against (one per prompt
    or a single text); an LLM judge or a plain callable ``judge(prompts, outputs)`` ignores them.
    Generation is greedy by default (``temperature=0``); ``seed`` fixes sampling otherwise.
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise InterpSteerError("no prompts to evaluate")
    if not strengths:
        raise InterpSteerError("no strengths to evaluate")
    from interp_steer.generation import Generation, generate

    ch, rj = _refs("chosen", chosen, len(prompts)), _refs("rejected", rejected, len(prompts))
    if vector is not None:
        vector.check_compatible(model, sae)
        vector = vector.to(device=model.cfg.device)
    prompt_ids = [chat_tokens(model.tokenizer, p, system=system).prompt_ids for p in prompts]
    results = []
    for strength in tqdm(list(strengths), desc="strengths", disable=not progress, leave=False):
        steered = vector is not None and float(strength) != 0
        gens = [g for g in generate(
            model, prompts, vector if steered else None, float(strength), sae=sae if steered else None,
            max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, positions=positions,
            seed=seed, system=system, backend=backend, check=False, return_tokens=True,
        ) if isinstance(g, Generation)]
        outputs = [g.text for g in gens]
        seqs = [ids + list(g.tokens) for ids, g in zip(prompt_ids, gens, strict=True)]
        nll = token_nll(model, seqs, [len(ids) for ids in prompt_ids], batch_size=nll_batch_size)
        n_tok = sum(k for _, k in nll)
        mean_nll = sum(s for s, _ in nll) / n_tok if n_tok else None
        scores = _run_judge(judge, prompts, outputs, ch, rj)
        valid = [s for s in scores if s is not None]
        samples = [{"prompt": p, "output": o, "score": s, "n_tokens": k, "mean_nll": (t / k if k else None)}
                   for p, o, s, (t, k) in zip(prompts, outputs, scores, nll, strict=True)]
        results.append(StrengthResult(
            strength=float(strength),
            mean_score=sum(valid) / len(valid) if valid else None,
            n_scored=len(valid),
            n_invalid=len(scores) - len(valid) if judge is not None else 0,
            perplexity=math.exp(mean_nll) if mean_nll is not None else None,
            mean_nll=mean_nll, n_tokens=n_tok, n_empty=sum(1 for _, k in nll if k == 0), samples=samples,
        ))
    return results
