"""Behaviour scores, steered or not.

* :func:`ab_probability` – CAA style: the question with its lettered choices, the assistant's answer primed
  with ``"("``; the probability mass of the matching-behaviour letter among the option letters, averaged.
* :func:`pair_probability` – on preference pairs: ``σ(log p(matching) − log p(not matching))`` with full
  response log-probs, i.e. the probability of the matching answer among the two, averaged.
* :func:`pair_effect` – that probability as the metric :func:`~interp_steer.evaluation.calibration.calibrate_strength`
  maximises: ``p(+λ) − p(−λ)`` for vectors used both ways, ``p(+λ)`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from interp_steer.data.schemas import MCQItem, PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.mcq import _steering, score_mcq
from interp_steer.evaluation.shared_layers import SharedLayers, run, usable
from interp_steer.steering.vector import SteeringVector


def ab_probability(model: Any, items: Sequence[MCQItem], vector: SteeringVector | None = None,
                   strength: float = 1.0, *, sae: Any | None = None, positions: str | None = None,
                   batch_size: int = 16, shared: SharedLayers | None = None) -> dict[str, float]:
    """Mean probability of the matching letter (normalised over the option letters) and accuracy.

    ``shared``: lower blocks reused across calls (see :mod:`interp_steer.evaluation.shared_layers`)."""
    scores = score_mcq(model, items, vector, strength, sae=sae, method="letter", positions=positions,
                       batch_size=batch_size, shared=shared)
    probs = [float(torch.softmax(torch.tensor(s.scores), 0)[s.answer]) for s in scores]
    return {"p_matching": sum(probs) / len(probs), "accuracy": sum(s.correct for s in scores) / len(scores),
            "n": len(scores)}


@torch.no_grad()
def pair_probability(model: Any, pairs: Sequence[PreferenceExample], vector: SteeringVector | None = None,
                     strength: float = 1.0, *, sae: Any | None = None, positions: str | None = None,
                     batch_size: int = 8, shared: SharedLayers | None = None) -> dict[str, float]:
    """Mean ``σ(log p(chosen) − log p(rejected))`` and mean log-prob margin over the pairs.

    ``shared``: a :class:`~interp_steer.evaluation.shared_layers.SharedLayers` reused across calls, so a
    strength sweep runs the blocks below the vector's layer once per batch (same scores)."""
    from interp_steer.methods.preference import _batch_tokens, _policy_starts, _response_index, prepare_pairs

    if not pairs:
        raise InterpSteerError("no preference pairs to evaluate")
    data = prepare_pairs(model, pairs)
    policy = positions or (vector.positions if vector is not None else "all")
    lower = usable(shared, vector)
    margins: list[float] = []
    for start in range(0, len(data), batch_size):
        seqs = [j for i in range(start, min(start + batch_size, len(data))) for j in (2 * i, 2 * i + 1)]
        tokens, mask, starts = _batch_tokens(model, data, seqs)
        with _steering(model, vector, strength, sae, positions, _policy_starts(data, seqs, policy), lower):
            resid = run(model, lower, tokens, stop_at_layer=model.cfg.n_layers)  # logits only where needed
        row, col, target = _response_index(tokens, mask, starts)
        logits = model.unembed(model.ln_final(resid[row, col])[None])[0].float()
        picked = torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0]
        logp = torch.zeros(tokens.shape[0], dtype=picked.dtype, device=picked.device).index_add(0, row, picked)
        margins.extend((logp[0::2] - logp[1::2]).tolist())
    m = torch.tensor(margins)
    return {"p_matching": float(torch.sigmoid(m).mean()), "mean_margin": float(m.mean()), "n": len(margins)}


def pair_effect(model: Any, pairs: Sequence[PreferenceExample], vector: SteeringVector, *,
                sae: Any | None = None, bidirectional: bool = True,
                shared: SharedLayers | None = None) -> Callable[[float], float]:
    """The matching-answer metric of a strength on ``pairs`` (training or validation pairs, never test items),
    for :func:`~interp_steer.evaluation.calibration.calibrate_strength`: ``λ ↦ p(+λ) − p(−λ)`` of
    :func:`pair_probability` when ``bidirectional`` (a vector used toward and away from the behaviour), else
    ``λ ↦ p(+λ)``. ``sae`` is only used for SAE-latent vectors; ``shared`` as for :func:`pair_probability`
    (pass the one given to ``calibrate_strength`` so both share the lower blocks)::

        cal = calibrate_strength(model, vec, pair_effect(model, val_pairs, vec))
    """
    if not pairs:
        raise InterpSteerError("no preference pairs for the calibration metric")
    data = list(pairs)
    vsae = sae if vector.kind == "sae" else None

    def p(lam: float) -> float:
        return pair_probability(model, data, vector, lam, sae=vsae, shared=shared)["p_matching"]

    def effect(lam: float) -> float:
        return p(lam) - p(-lam) if bidirectional else p(lam)

    return effect
