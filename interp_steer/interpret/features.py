"""Which SAE latents a steering vector uses.

For an SAE-latent vector (YaPO/SAS) the latents are the entries of ``v``; each is ranked by its decoded
contribution norm ``|v_i|·‖W_dec[i]‖`` (how far it moves the residual stream per unit strength, when active).
For a dense vector (CAA/BiPO) the latents are the SAE decoder directions it aligns with (cosine similarity).
:func:`latent_logit_lens` reads a decoder direction through the unembedding: the tokens it promotes and suppresses.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

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


def _auroc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """AUROC per column of ``pos`` [n_pos, k] against ``neg`` [n_neg, k] (Mann–Whitney, ties count half)."""
    both = torch.cat([pos, neg]).float()
    out = torch.empty(both.shape[1])
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    for j in range(both.shape[1]):
        col = both[:, j]
        order = col.argsort()
        ranks = torch.empty_like(col)
        sorted_vals = col[order]
        # average ranks over ties
        uniq, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).float()
        avg = ends - (counts.float() - 1) / 2
        ranks[order] = avg[inverse]
        u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
        out[j] = u / (n_pos * n_neg)
    return out


@torch.no_grad()
def latent_max_activations(model: Any, sae: Any, latents: list[int], texts: list[str], *, max_length: int = 96,
                           batch_size: int = 8) -> Float[torch.Tensor, "n_texts n_latents"]:
    """Each latent's maximum activation per text (special tokens excluded), ``[len(texts), len(latents)]``."""
    from interp_steer.interpret.latents import _special_mask, encode_latents, hook_activations, tokenize_texts

    hook = sae.cfg.metadata.hook_name
    idx = torch.tensor(latents, dtype=torch.long)
    maxima = []
    ids = tokenize_texts(model.tokenizer, list(texts), max_length)
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(len(x) for x in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        valid = torch.zeros(len(chunk), width, dtype=torch.bool)
        for r, x in enumerate(chunk):
            tokens[r, : len(x)] = torch.tensor(x)
            valid[r, : len(x)] = True
        tokens = tokens.to(model.cfg.device)
        acts = encode_latents(sae, hook_activations(model, tokens, hook), idx).cpu()
        keep = valid & ~_special_mask(tokens.cpu(), model.tokenizer)
        acts = acts.masked_fill(~keep[..., None], 0.0)
        maxima.append(acts.amax(1))
    return torch.cat(maxima)


@torch.no_grad()
def latent_auroc(model: Any, sae: Any, latents: list[int], positive: list[str], negative: list[str], *,
                 max_length: int = 96, batch_size: int = 8) -> list[float]:
    """How selective each latent is for the ``positive`` texts: the AUROC of its maximum activation per text
    (special tokens excluded) on ``positive`` against ``negative`` texts. 0.5 = no selectivity, 1 = every
    positive text activates it more than every negative one."""
    if not positive or not negative:
        raise InterpSteerError("latent_auroc needs positive and negative texts")
    if not latents:
        return []
    table = latent_max_activations(model, sae, latents, list(positive) + list(negative), max_length=max_length,
                                   batch_size=batch_size)
    return [float(x) for x in _auroc(table[: len(positive)], table[len(positive) :])]


def culture_texts(country: str | None = None) -> dict[str, list[str]]:
    """The culture set's questions with their correct option, per country (``{country: [text, ...]}``), for
    selectivity checks: every split and both forms (localized questions name the country, others do not)."""
    from interp_steer.data.loaders import load_culture

    out: dict[str, list[str]] = {}
    for it in load_culture():
        out.setdefault(str(it.country), []).append(f"{it.question} {it.options[it.answer]}")
    if country is not None and country not in out:
        raise InterpSteerError(f"no culture texts for {country!r}; countries: {sorted(out)}")
    return out


def country_selectivity(model: Any, sae: Any, vector: SteeringVector, country: str, *, k: int = 8,
                        threshold: float = 0.7, max_length: int = 96) -> dict[str, Any]:
    """For the vector's top-``k`` latents: each one's AUROC for ``country``'s culture texts against the other
    countries', and the share of the vector's decoded effect (``|v_i|·‖W_dec[i]‖``, all latents) carried by
    latents with AUROC ≥ ``threshold`` (every non-zero latent is scored for the share, not only the top k).

    Every latent of the SAE is scored, so the result also says what the basis offers: ``n_basis_selective``
    (latents of the whole SAE with AUROC ≥ ``threshold``), ``max_basis_auroc`` and ``basis_top`` (the ``k``
    most selective latents of the basis, whether or not the vector uses them). A basis without
    country-selective latents bounds what any vector in it can show."""
    texts = culture_texts(country)
    positive = texts[country]
    negative = [t for c, ts in texts.items() if c != country for t in ts]
    d_sae = int(sae.cfg.d_sae)
    ranked = top_latents(vector, sae, None, k=d_sae)
    every = latent_auroc(model, sae, list(range(d_sae)), positive, negative, max_length=max_length)
    contributions = [entry["contribution"] for entry in ranked["latents"]]
    auroc = [every[entry["index"]] for entry in ranked["latents"]]
    total = sum(contributions)
    selective = sum(c for c, a in zip(contributions, auroc, strict=True) if a >= threshold)
    top = [{**entry, "auroc": a} for entry, a in zip(ranked["latents"][:k], auroc[:k], strict=True)]
    basis = torch.tensor(every)
    order = basis.argsort(descending=True)[:k]
    return {"country": country, "threshold": threshold, "n_scored": len(auroc),
            "selective_share": selective / total if total > 0 else 0.0,
            "n_selective": sum(a >= threshold for a in auroc), "latents": top,
            "n_basis_selective": int((basis >= threshold).sum()), "n_basis": d_sae,
            "max_basis_auroc": float(basis.max()),
            "basis_top": [{"index": int(i), "auroc": float(basis[i])} for i in order],
            "n_positive_texts": len(positive), "n_negative_texts": len(negative)}
