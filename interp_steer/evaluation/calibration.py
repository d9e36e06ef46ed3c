"""Strength calibration bounded by fluency: the one place a steering strength λ is chosen.

:func:`calibrate_strength` measures, for each λ of a grid (ascending), the perplexity of held-out general text
steered at ``+λ`` (and ``−λ`` when ``bidirectional``) divided by the unsteered perplexity. A strength is
*fluent* when every measured ratio is ``≤ max_ratio`` (default 1.2). Among the fluent strengths it returns the
one with the largest ``effect(λ)`` — the user's metric, computed on training or validation data, never on the
test items — or, with no metric, the largest fluent λ. The grid is walked upwards and stops at the first
strength that breaks the bound (larger ones are reported as not measured). When no strength is fluent the
result has ``strength=None``: callers must say so instead of presenting a result at a failing λ.

The calibration texts are held-out corpus documents disjoint from the default preservation texts
(:func:`interp_steer.evaluation.preservation.default_texts`), so a perplexity ratio reported at the chosen λ on
the preservation texts stays an independent check.

The bound is about general text, not about the particular documents measured. With ``confidence=c`` a strength
is fluent only when the one-sided ``c`` upper confidence bound of the ratio stays ``≤ max_ratio``: a bootstrap
over the documents (each resample draws as many documents, with replacement, and takes the token-weighted
ratio ``exp(Σ ΔNLL / Σ tokens)``; :func:`ratio_upper_bound`). Without it (``confidence=None``) the measured
ratio itself must keep the bound, and a λ at the edge of the bound on one sample of documents can read above it
on another: the demo's λ = 14.9 read ×1.166 on its 32 calibration documents and ×1.272 on 32 others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.openended import _summarise
from interp_steer.evaluation.shared_layers import SharedLayers, resolve
from interp_steer.steering.vector import SteeringVector

# up to 32: sparse SAE vectors often stay fluent at λ = 8, and a grid whose top is still fluent caps the effect
# (``Calibration.grid_limited``); the walk stops at the first failing strength, so the extra points cost nothing
# for vectors that break fluency earlier
DEFAULT_STRENGTHS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
DEFAULT_MAX_RATIO = 1.2
BOOTSTRAP_RESAMPLES = 2000  # resamples of the documents for the ratio's confidence bound (fixed seed)


@dataclass
class Calibration:
    """The calibrated strength, its worst perplexity ratio and effect, and every measured row."""

    strength: float | None  # None: no strength of the grid stays within the bound
    ppl_ratio: float | None  # the worst measured ratio (over directions) at ``strength``
    effect: float | None  # effect(strength), when a metric was given
    max_ratio: float
    bidirectional: bool
    perplexity_unsteered: float
    n_texts: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    # the strength chosen is the grid's largest: nothing above it was tried, so a larger λ may be stronger and
    # still fluent (extend ``strengths``)
    grid_limited: bool = False
    # with ``confidence``: the fluency test used the ratio's one-sided upper confidence bound over documents;
    # ``ppl_ratio_upper`` is that bound (worst direction) at ``strength``
    confidence: float | None = None
    ppl_ratio_upper: float | None = None

    @property
    def found(self) -> bool:
        return self.strength is not None

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.strength is None:
            tried = [r["strength"] for r in self.rows if r.get("ppl_ratio") is not None]
            return (f"no strength keeps held-out perplexity within ×{self.max_ratio:g} of the unsteered model "
                    f"(tried {', '.join(f'{s:g}' for s in tried)})")
        eff = "" if self.effect is None else f", effect {self.effect:+.3f}"
        top = (" — the grid's largest strength: a larger one may be stronger and still fluent"
               if self.grid_limited else "")
        if self.confidence is not None and self.ppl_ratio_upper is not None:
            return (f"λ = {self.strength:g} (perplexity ×{self.ppl_ratio:.3f}, its {100 * self.confidence:g} % upper "
                    f"bound over documents ×{self.ppl_ratio_upper:.3f} ≤ ×{self.max_ratio:g}{eff}){top}")
        return f"λ = {self.strength:g} (perplexity ×{self.ppl_ratio:.3f} ≤ ×{self.max_ratio:g}{eff}){top}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_texts(tokenizer: Any | None = None, n: int = 16, *, exclude: Sequence[str] | None = None,
                      seed: int = 1) -> list[str]:
    """``n`` held-out corpus documents for calibration, none of them among ``exclude`` (default: the default
    preservation texts, so the two perplexity checks never share a document)."""
    from interp_steer.evaluation.preservation import default_texts

    if n < 1:
        raise InterpSteerError(f"the calibration needs at least one text, got n={n}")
    taken = set(default_texts(tokenizer=tokenizer) if exclude is None else exclude)
    pool = default_texts(n + len(taken), seed=seed, tokenizer=tokenizer)
    texts = [t for t in pool if t not in taken][:n]
    if not texts:
        raise InterpSteerError("no held-out documents are left for the strength calibration")
    return texts


def calibrate_strength(
    model: Any,
    vector: SteeringVector,
    effect: Callable[[float], float] | None = None,
    *,
    sae: Any | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    texts: Sequence[str] | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
    bidirectional: bool = True,
    max_tokens: int = 128,
    n_texts: int = 16,
    perplexity_unsteered: float | None = None,
    refine: int = 2,
    log: Callable[[str], None] | None = None,
    shared: SharedLayers | bool = True,
    confidence: float | None = None,
) -> Calibration:
    """The strongest-effect λ of ``strengths`` whose held-out perplexity ratio stays ``≤ max_ratio``.

    ``effect(λ)`` is the metric to maximise (e.g. the validation shift ``p(+λ) − p(−λ)``); it is only called on
    fluent strengths. ``bidirectional``: the bound must hold at ``−λ`` too (for vectors used both ways).
    ``texts``: the calibration documents (default :func:`calibration_texts`); ``perplexity_unsteered``: their
    unsteered perplexity at ``max_tokens`` when the caller has it already (computed here otherwise).
    ``refine``: bisection steps between the last fluent and the first failing strength of the grid (each one
    measured like a grid point, and marked ``"refined": True`` in ``rows``); ``0`` keeps to the grid, which a
    metric that is only defined on the grid needs. ``shared`` (default ``True``): the perplexity passes run the
    blocks below the vector's layer once for every λ (:mod:`interp_steer.evaluation.shared_layers`); pass the
    same ``SharedLayers`` to ``effect`` to share its passes too, ``False`` to run every λ in full.
    ``confidence`` (e.g. 0.9): a strength is fluent only when the ratio's one-sided upper confidence bound over
    the documents (:func:`ratio_upper_bound`) keeps the bound, so that other general text is likely to keep it
    too; ``None`` tests the measured ratio itself.
    """
    if not (math.isfinite(max_ratio) and max_ratio > 1.0):
        raise InterpSteerError(f"max_ratio must be a finite perplexity ratio above 1, got {max_ratio}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise InterpSteerError(f"refine must be a whole number of bisection steps >= 0, got {refine!r}")
    grid = sorted({float(s) for s in strengths})
    if not grid or any(not math.isfinite(s) or s <= 0 for s in grid):
        raise InterpSteerError(f"strengths must be positive finite numbers, got {list(strengths)}")
    docs = list(texts) if texts is not None else calibration_texts(model.tokenizer, n_texts)
    if not docs:
        raise InterpSteerError("no texts for the strength calibration")
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                   or not 0.5 <= confidence < 1.0):
        raise InterpSteerError(f"confidence must be a probability in [0.5, 1), got {confidence!r}")
    say = log or (lambda _msg: None)
    vsae = sae if vector.kind == "sae" else None
    lower = resolve(model, vector, shared)
    seqs = _sequences(model, docs, max_tokens)
    base_nll = _doc_nll(model, seqs, None, 0.0, None, lower) if (
        confidence is not None or not perplexity_unsteered) else None
    base = perplexity_unsteered or _perplexity(base_nll or [])
    signs = (1.0, -1.0) if bidirectional else (1.0,)
    empty = {"ppl_ratio_plus": None, "ppl_ratio_minus": None, "ppl_ratio": None}
    if confidence is not None:
        empty.update(ppl_ratio_plus_upper=None, ppl_ratio_minus_upper=None, ppl_ratio_upper=None)

    def measure(lam: float) -> dict[str, Any]:
        row: dict[str, Any] = {"strength": lam, **empty, "fluent": None, "effect": None}
        for sign in signs:
            side = "plus" if sign > 0 else "minus"
            steered = _doc_nll(model, seqs, vector, sign * lam, vsae, lower)
            ppl = _perplexity(steered)
            ratio = ppl / base if math.isfinite(ppl) else math.inf
            row[f"ppl_ratio_{side}"] = ratio
            if confidence is not None:
                assert base_nll is not None
                ratio = ratio_upper_bound(base_nll, steered, confidence)
                row[f"ppl_ratio_{side}_upper"] = ratio
            if ratio > max_ratio:
                break  # one direction already fails: the other need not be measured
        row["ppl_ratio"] = max(r for r in (row["ppl_ratio_plus"], row["ppl_ratio_minus"]) if r is not None)
        tested = row["ppl_ratio"]
        if confidence is not None:
            tested = row["ppl_ratio_upper"] = max(
                r for r in (row["ppl_ratio_plus_upper"], row["ppl_ratio_minus_upper"]) if r is not None)
        row["fluent"] = tested <= max_ratio
        if row["fluent"] and effect is not None:
            value = float(effect(lam))
            if not math.isfinite(value):
                raise InterpSteerError(f"the calibration metric returned {value} at λ = {lam:g}")
            row["effect"] = value
        upper = "" if confidence is None else f" (upper bound ×{row['ppl_ratio_upper']:.3f})"
        say(f"calibration λ={lam:g}: perplexity ×{row['ppl_ratio']:.3f}{upper}"
            + ("" if row["effect"] is None else f", effect {row['effect']:+.4f}"))
        return row

    rows: list[dict[str, Any]] = []
    broken = False
    for lam in grid:
        if broken:
            rows.append({"strength": lam, **empty, "fluent": None, "effect": None})
            continue
        rows.append(measure(lam))
        broken = not rows[-1]["fluent"]
    failing = next((r["strength"] for r in rows if r["fluent"] is False), None)
    passing = [r["strength"] for r in rows if r["fluent"]]
    if failing is not None and passing:
        lo, hi = passing[-1], failing
        for _ in range(refine):
            mid = float(f"{math.sqrt(lo * hi):.3g}")
            if not lo < mid < hi:
                break
            row = measure(mid)
            row["refined"] = True
            rows.append(row)
            lo, hi = (mid, hi) if row["fluent"] else (lo, mid)
        rows.sort(key=lambda r: r["strength"])
    fluent = [r for r in rows if r["fluent"]]
    if not fluent:
        return Calibration(None, None, None, max_ratio, bidirectional, base, len(docs), rows, confidence=confidence)
    if effect is None:
        best = fluent[-1]
    else:  # the largest effect; the smaller λ on ties
        best = max(fluent, key=lambda r: (r["effect"], -r["strength"]))
    return Calibration(best["strength"], best["ppl_ratio"], best["effect"], max_ratio, bidirectional, base,
                       len(docs), rows, grid_limited=best["strength"] == grid[-1], confidence=confidence,
                       ppl_ratio_upper=best.get("ppl_ratio_upper"))


def ratio_upper_bound(unsteered: Sequence[tuple[float, int]], steered: Sequence[tuple[float, int]],
                      confidence: float, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """One-sided ``confidence`` upper bound of the token-weighted perplexity ratio, by a bootstrap over documents.

    ``unsteered`` / ``steered``: per document ``(Σ NLL, n tokens)`` (:func:`interp_steer.evaluation.openended.
    token_nll`) of the same documents. Each resample draws as many documents with replacement and takes
    ``exp(Σ (NLL_steered − NLL_unsteered) / Σ n)``; the bound is the ``confidence`` quantile of those ratios
    (deterministic: a fixed ``seed``). ``inf`` when a steered NLL overflows."""
    ratios = _bootstrap_ratios(unsteered, steered, resamples, seed)
    return math.inf if ratios is None else float(ratios.quantile(confidence))


def heldout_ratio(model: Any, docs: Sequence[str], vector: SteeringVector, strength: float, *, sae: Any | None = None,
                  max_tokens: int = 128, level: float = 0.9, shared: SharedLayers | bool = True) -> dict[str, Any]:
    """The perplexity ratio of ``docs`` at ``strength`` with its two-sided ``level`` bootstrap interval over the
    documents: ``{"ppl_ratio", "lower", "upper", "level", "n_texts", "max_tokens"}`` (what a report prints
    beside a calibrated λ, measured on documents the calibration did not use)."""
    if not 0 < level < 1:
        raise InterpSteerError(f"level must be in (0, 1), got {level}")
    lower = resolve(model, vector, shared)
    seqs = _sequences(model, docs, max_tokens)
    base = _doc_nll(model, seqs, None, 0.0, None, lower)
    steered = _doc_nll(model, seqs, vector, strength, sae if vector.kind == "sae" else None, lower)
    ppl0, ppl = _perplexity(base), _perplexity(steered)
    ratios = _bootstrap_ratios(base, steered, BOOTSTRAP_RESAMPLES, 0)
    tail = (1 - level) / 2
    return {"ppl_ratio": ppl / ppl0 if math.isfinite(ppl) else math.inf,
            "lower": math.inf if ratios is None else float(ratios.quantile(tail)),
            "upper": math.inf if ratios is None else float(ratios.quantile(1 - tail)),
            "level": level, "n_texts": len(seqs), "max_tokens": max_tokens}


def _bootstrap_ratios(unsteered: Sequence[tuple[float, int]], steered: Sequence[tuple[float, int]],
                      resamples: int, seed: int):
    """Token-weighted ratios of ``resamples`` bootstrap resamples of the documents (``None``: a steered NLL
    overflowed)."""
    import torch

    if len(unsteered) != len(steered) or not unsteered:
        raise InterpSteerError(f"bootstrap of the perplexity ratio: it needs the same documents on both sides, got {len(unsteered)} "
                               f"and {len(steered)}")
    if any(k0 != k1 for (_, k0), (_, k1) in zip(unsteered, steered, strict=True)):
        raise InterpSteerError("bootstrap of the perplexity ratio: the two sides scored different numbers of tokens")
    if not all(math.isfinite(s) for s, _ in steered):
        return None
    delta = torch.tensor([s1 - s0 for (s0, _), (s1, _) in zip(unsteered, steered, strict=True)], dtype=torch.float64)
    n = torch.tensor([float(k) for _, k in unsteered], dtype=torch.float64)
    if float(n.sum()) == 0:
        raise InterpSteerError("bootstrap of the perplexity ratio: no scored tokens")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(delta), (resamples, len(delta)), generator=g)
    counts = torch.zeros(resamples, len(delta), dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(resamples, len(delta), dtype=torch.float64))
    tokens = counts @ n
    return torch.exp((counts @ delta) / tokens.clamp(min=1.0))


def _sequences(model: Any, docs: Sequence[str], max_tokens: int) -> list[list[int]]:
    from interp_steer.evaluation.preservation import _text_sequences

    return _text_sequences(model.tokenizer, docs, max_tokens)


def _doc_nll(model: Any, seqs: Sequence[Sequence[int]], vector: SteeringVector | None, strength: float,
             sae: Any | None, shared: SharedLayers | None) -> list[tuple[float, int]]:
    """Per document ``(Σ NLL, n)`` of ``BOS + first max_tokens tokens`` (what :func:`text_perplexity` sums)."""
    from interp_steer.evaluation.openended import token_nll

    return token_nll(model, seqs, [1] * len(seqs), vector=vector, strength=strength, sae=sae, shared=shared)


def _perplexity(pairs: Sequence[tuple[float, int]]) -> float:
    return _summarise(pairs).perplexity


def _ratio(model: Any, docs: Sequence[str], vector: SteeringVector, strength: float, sae: Any | None,
           base: float, max_tokens: int, shared: SharedLayers | None = None) -> float:
    """Steered over unsteered perplexity of ``docs`` (``inf`` when the steered one overflows)."""
    ppl = _perplexity(_doc_nll(model, _sequences(model, docs, max_tokens), vector, strength, sae, shared))
    return ppl / base if math.isfinite(ppl) else math.inf


def fluency_check(model: Any, vector: SteeringVector, strength: float, *, sae: Any | None = None,
                  texts: Sequence[str] | None = None, max_ratio: float = DEFAULT_MAX_RATIO, max_tokens: int = 128,
                  n_texts: int = 8, perplexity_unsteered: float | None = None) -> dict[str, Any]:
    """The held-out perplexity ratio at one strength and whether it keeps the bound (``{"strength",
    "ppl_ratio", "max_ratio", "within_bound", "n_texts"}``): what a command reports next to a result at a λ
    the user chose."""
    from interp_steer.evaluation.preservation import text_perplexity

    if not math.isfinite(strength):
        raise InterpSteerError(f"strength must be a finite number, got {strength}")
    docs = list(texts) if texts is not None else calibration_texts(model.tokenizer, n_texts)
    vsae = sae if vector.kind == "sae" else None
    base = perplexity_unsteered or text_perplexity(model, docs, max_tokens=max_tokens).perplexity
    ratio = _ratio(model, docs, vector, strength, vsae, base, max_tokens)
    return {"strength": float(strength), "ppl_ratio": ratio if math.isfinite(ratio) else None,
            "max_ratio": max_ratio, "within_bound": bool(ratio <= max_ratio), "n_texts": len(docs)}
