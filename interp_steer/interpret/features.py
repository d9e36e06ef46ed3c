"""Which SAE latents a steering vector uses.

For an SAE-latent vector (YaPO/SAS) the latents are the entries of ``v``; each is ranked by its decoded
contribution norm ``|v_i|·‖W_dec[i]‖`` (how far it moves the residual stream per unit strength, when active).
For a dense vector (CAA/BiPO) the latents are the SAE decoder directions it aligns with (cosine similarity).
:func:`latent_logit_lens` reads a decoder direction through the unembedding: the tokens it promotes and suppresses.
"""

from __future__ import annotations

from typing import Any

import torch

from interp_steer.errors import InterpSteerError
from interp_steer.steering.vector import SteeringVector


@torch.no_grad()
def latent_logit_lens(model: Any, sae: Any, latent: int, k: int = 8) -> dict[str, list[str]]:
    """Top promoted and suppressed tokens of decoder direction ``latent`` (through ln_final scale-free W_U)."""
    direction = sae.W_dec[latent].to(model.W_U.dtype)
    logits = direction @ model.W_U
    tok = model.tokenizer
    return {
        "promoted": [tok.decode([int(i)]) for i in logits.topk(k).indices],
        "suppressed": [tok.decode([int(i)]) for i in (-logits).topk(k).indices],
    }


@torch.no_grad()
def top_latents(vector: SteeringVector, sae: Any, model: Any | None = None, *, k: int = 10,
                lens_tokens: int = 6) -> dict[str, Any]:
    """The latents a vector uses, ranked, with their share of the total effect and (with ``model``) logit lens.

    Returns ``{"latents": [...], "n_for_50pct": int, "n_for_90pct": int, "kind": ...}``; each latent has
    ``index``, ``value`` (``v_i`` or the cosine for dense vectors), ``contribution`` and ``cumulative_share``.
    """
    w_dec = sae.W_dec.float()
    if vector.kind == "sae":
        v = vector.vector().float().to(w_dec.device)
        if v.numel() != w_dec.shape[0]:
            raise InterpSteerError(f"vector has {v.numel()} latents but the SAE has {w_dec.shape[0]}")
        contribution = v.abs() * w_dec.norm(dim=-1)
        values = v
    elif vector.kind == "dense":
        hook = sae.cfg.metadata.hook_name
        dense = vector.vector(hook if hook in vector.tensors else None).float().to(w_dec.device)
        values = (w_dec @ dense) / (w_dec.norm(dim=-1) * dense.norm()).clamp_min(1e-12)
        contribution = values.abs()
    else:
        raise InterpSteerError("top_latents explains dense or SAE-latent vectors, not affine maps")
    total = float(contribution.sum())
    order = contribution.argsort(descending=True)
    shares = (contribution[order].cumsum(0) / max(total, 1e-12)).cpu()

    def n_for(q: float) -> int:
        return int((shares < q).sum()) + 1 if total > 0 else 0

    latents = []
    for rank in range(min(k, int((contribution > 0).sum()))):
        i = int(order[rank])
        entry: dict[str, Any] = {"index": i, "value": float(values[i]), "contribution": float(contribution[i]),
                                 "cumulative_share": float(shares[rank])}
        if model is not None:
            entry["logit_lens"] = latent_logit_lens(model, sae, i, lens_tokens)
        latents.append(entry)
    return {"kind": vector.kind, "latents": latents, "n_nonzero": int((contribution > 0).sum()),
            "n_for_50pct": n_for(0.5), "n_for_90pct": n_for(0.9)}
