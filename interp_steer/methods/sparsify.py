"""Sparsify a trained vector after the fact: keep the ``k`` coordinates that carry most of its decoded effect.

For an SAE-latent (YaPO) vector, latent ``i`` contributes ``v_i · W_dec[i]`` to the edit before the ReLU, so its
weight is ``|v_i| · ‖W_dec[i]‖``; for a dense vector, ``|v_i|``. This is how the sparse YaPO default is built:
train the exact method, select on held-out pairs, then keep the top ``k`` latents (the efficacy benchmark
measured that training-time thresholds leave nothing that steers, while truncating the exact vector keeps most
of its effect at a fluency-bounded strength).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from interp_steer.errors import InterpSteerError
from interp_steer.steering.vector import TENSOR_NAMES, SteeringVector


def contribution(vector: SteeringVector, sae: Any | None = None, hook: str | None = None) -> Float[torch.Tensor, " d"]:
    """Per-coordinate weight of ``vector`` at ``hook``: ``|v_i|·‖W_dec[i]‖`` (SAE kind) or ``|v_i|``."""
    v = vector.vector(hook).detach().float()
    if vector.kind == "sae":
        if sae is None:
            raise InterpSteerError("sparsifying an SAE-latent vector needs its SAE (decoder norms)")
        return v.abs() * sae.W_dec.detach().float().norm(dim=1).to(v.device)
    if vector.kind == "dense":
        return v.abs()
    raise InterpSteerError(f"cannot sparsify a {vector.kind} vector (only SAE-latent and dense vectors)")


def top_k_truncate(vector: SteeringVector, k: int, *, sae: Any | None = None) -> SteeringVector:
    """A copy of ``vector`` with only its ``k`` heaviest coordinates per hook point (see :func:`contribution`).

    ``metrics["truncation"]`` records ``k``, the non-zeros before and after, and ``kept_share``, the share of the
    summed contribution that the kept coordinates carry.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InterpSteerError(f"k must be a positive integer, got {k!r}")
    if vector.kind == "sae" and sae is not None:
        vector.check_sae(sae)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    record: dict[str, Any] = {"k": k, "hooks": {}}
    for hook in vector.hook_points:
        weight = contribution(vector, sae, hook)
        v = vector.vector(hook)
        keep = torch.zeros_like(v, dtype=torch.bool)
        keep[weight.topk(min(k, v.numel())).indices] = True
        keep &= v != 0
        total = float(weight.sum())
        record["hooks"][hook] = {"nnz_before": int((v != 0).sum()), "nnz_after": int(keep.sum()),
                                 "kept_share": float(weight[keep].sum()) / total if total > 0 else 1.0}
        name = TENSOR_NAMES[vector.kind][0]
        tensors[hook] = {**vector.tensors[hook], name: torch.where(keep, v, torch.zeros_like(v))}
    metrics = {**vector.metrics, "truncation": record, "nnz": sum(h["nnz_after"] for h in record["hooks"].values())}
    config = {**vector.config, "final_top_k": k}
    return SteeringVector(vector.method, vector.kind, tensors, dict(vector.model), vector.sae, vector.positions,
                          config, metrics, vector.created, vector.operator)


__all__ = ["contribution", "top_k_truncate"]
