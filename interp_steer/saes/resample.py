"""Dead-latent resampling for TopK SAEs.

A TopK latent fires on a token when its pre-activation is among the token's k largest (and positive). A latent
that never gets there receives no reconstruction gradient; AuxK (sae-lens' TopK auxiliary loss) trains it to
explain the residual error, but it must still outgrow the k-th pre-activation before it fires. The 16k SAE
shipped with the package ended its first pass with half its latents in that state: their pre-activations sit a
median of ≈ 1.4 below the k-th value (≈ 5.8), their encoder columns a third as long as the live ones'.

:func:`resample_dead_latents` gives every latent that never fires on a sample of training activations a new
direction, in the spirit of Anthropic's resampling for ReLU SAEs but made for TopK: the new directions are
spherical k-means centroids of the sample's residuals ``x − x̂`` (seeded with tokens drawn ∝ ‖x − x̂‖²), so that
each poorly reconstructed token is covered by one new latent and not by every latent seeded near it; each new
latent's encoder is the linear regression of that residual component on the input. (Seeding each latent with
one token's residual, the first version, either fired only on that token and stayed dead on held-out text, or,
scaled to fire more widely, stacked many latents on the same tokens: explained variance −0.5 on the 16k SAE's
sample.)

The live latents are untouched, so a fine-tuning run (``train_sae(init_from=..., resample_dead=True)``) starts
from the trained SAE with every latent firing somewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float

from interp_steer.errors import InterpSteerError


@dataclass
class ResampleReport:
    """What :func:`resample_dead_latents` did, on its sample of activations."""

    sample_tokens: int
    dead_before: int
    resampled: int
    mean_cluster_size: float  # sample tokens per new latent's k-means cluster
    dead_after: int  # latents still never firing on the sample after resampling
    explained_variance_before: float
    explained_variance_after: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_topk(sae: Any) -> None:
    arch = sae.cfg.architecture() if callable(getattr(sae.cfg, "architecture", None)) else None
    if arch != "topk":
        raise InterpSteerError(
            f"dead-latent resampling is implemented for TopK SAEs (the architecture of the shipped SAEs); "
            f"this SAE is {arch!r}"
        )
    if getattr(sae.cfg, "normalize_activations", "none") != "none":
        raise InterpSteerError(
            "resample_dead_latents needs an SAE that reads raw activations (normalize_activations='none', as "
            f"an exported SAE does); this one has {sae.cfg.normalize_activations!r}"
        )


@torch.no_grad()
def _statistics(sae: Any, acts: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-latent fire counts on ``acts`` and the residuals ``x − x̂``."""
    counts = torch.zeros(int(sae.cfg.d_sae), dtype=torch.long, device=acts.device)
    residuals = []
    for start in range(0, acts.shape[0], chunk):
        x = acts[start : start + chunk]
        feats = sae.encode(x)
        counts += (feats > 0).sum(0)
        residuals.append(x - sae.decode(feats))
    return counts, torch.cat(residuals)


def _explained_variance(acts: torch.Tensor, residuals: torch.Tensor) -> float:
    total = (acts - acts.mean(0)).pow(2).sum()
    return float(1 - residuals.pow(2).sum() / total) if total > 0 else float("nan")


@torch.no_grad()
def _spherical_kmeans(
    residuals: torch.Tensor, centroids: torch.Tensor, iters: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit centroids of the residual directions (each the normalised sum of its tokens' residuals, so
    badly reconstructed tokens weigh more) and each token's cluster. Empty clusters keep their centroid."""
    assign = torch.empty(residuals.shape[0], dtype=torch.long, device=residuals.device)
    for it in range(iters + 1):
        for start in range(0, residuals.shape[0], chunk):
            assign[start : start + chunk] = (residuals[start : start + chunk] @ centroids.T).argmax(-1)
        if it == iters:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assign, residuals)
        norms = sums.norm(dim=-1, keepdim=True)
        centroids = torch.where(norms > 0, sums / norms.clamp_min(1e-12), centroids)
    return centroids, assign


@torch.no_grad()
def resample_dead_latents(
    sae: Any,
    acts: Float[torch.Tensor, "tokens d_in"],
    *,
    iters: int = 10,
    seed: int = 0,
    chunk: int = 2048,
) -> ResampleReport:
    """Give each latent of the TopK ``sae`` that never fires on ``acts`` a new direction (in place).

    ``acts`` are raw activations at the SAE's hook (special-token positions left out, as in training).

    * Directions: spherical k-means (``iters`` rounds) of the sample's residuals ``x − x̂`` into as many
      clusters as there are dead latents, seeded with tokens drawn with probability ∝ ‖x − x̂‖². Each token's
      residual is then covered by one new latent, rather than by every new latent seeded near it.
    * Encoder: the ridge regression of the residual on the SAE's input, read along the new direction, so the
      pre-activation predicts the residual's component ``r · u`` (the activation the latent should have); the
      latent fires where that prediction clears the token's k-th pre-activation.

    Returns a :class:`ResampleReport`; the latents that fire are unchanged.
    """
    _check_topk(sae)
    if acts.ndim != 2 or acts.shape[-1] != int(sae.cfg.d_in):
        raise InterpSteerError(f"acts must be (tokens, {int(sae.cfg.d_in)}); got {tuple(acts.shape)}")
    if acts.shape[0] == 0:
        raise InterpSteerError("resample_dead_latents needs at least one activation")
    if not torch.isfinite(acts).all():
        raise InterpSteerError("acts contain NaN or infinite values")
    if int(iters) != iters or iters < 0:
        raise InterpSteerError(f"iters must be a whole number >= 0; got {iters}")
    acts = acts.to(sae.W_enc.dtype)
    n_tokens = int(acts.shape[0])
    counts, residuals = _statistics(sae, acts, chunk)
    ev_before = _explained_variance(acts, residuals)
    dead = torch.nonzero(counts == 0).flatten()
    if dead.numel() == 0:
        return ResampleReport(n_tokens, 0, 0, 0.0, 0, ev_before, ev_before, seed)
    weights = residuals.pow(2).sum(-1).double().cpu()
    if not (weights > 0).any():
        raise InterpSteerError("the SAE reconstructs every sample activation exactly; nothing to resample toward")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    replace = int((weights > 0).sum()) < dead.numel()
    seeds = torch.multinomial(weights, dead.numel(), replacement=replace, generator=generator).to(acts.device)
    start_dirs = residuals[seeds] / residuals[seeds].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    directions, assign = _spherical_kmeans(residuals, start_dirs, int(iters), chunk)
    sizes = torch.bincount(assign, minlength=dead.numel())
    alive = counts > 0
    dec_norm = sae.W_dec[alive].norm(dim=-1).mean() if alive.any() else sae.W_dec.norm(dim=-1).mean()
    rescale = bool(sae.cfg.rescale_acts_by_decoder_norm)
    # the pre-activation is (x_in · W_enc_j + b_enc_j) · R and the latent adds act · G · u to the reconstruction
    pre_factor = dec_norm if rescale else torch.ones_like(dec_norm)
    gain = torch.ones_like(dec_norm) if rescale else dec_norm
    # encoder: the ridge regression of the residual on the SAE's input, x_in ↦ r̂ = x_in · A + a0, read along u:
    # the new latent's pre-activation predicts r · u, the activation it should have. (u · x_in itself mostly
    # measures the reconstructed part of x, so an encoder along u fires with activations far above r · u.)
    sae_in = sae.process_sae_in(acts)
    ones = torch.ones(n_tokens, 1, dtype=acts.dtype, device=acts.device)
    design = torch.cat([sae_in, ones], dim=-1).double()
    gram = design.T @ design
    ridge = 1e-3 * gram.diagonal().mean()
    coef = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device),
                              design.T @ residuals.double()).to(acts.dtype)  # (d_in + 1, d_in)
    enc = (coef[:-1] @ directions.T) / gain  # (d_in, n_dead)
    bias = (coef[-1] @ directions.T) / gain
    sae.W_dec.data[dead] = directions * dec_norm
    sae.W_enc.data[:, dead] = enc / pre_factor
    sae.b_enc.data[dead] = bias / pre_factor
    counts_after, residuals_after = _statistics(sae, acts, chunk)
    return ResampleReport(
        sample_tokens=n_tokens, dead_before=int(dead.numel()), resampled=int(dead.numel()),
        mean_cluster_size=float(sizes.float().mean()), dead_after=int((counts_after == 0).sum()),
        explained_variance_before=ev_before, explained_variance_after=_explained_variance(acts, residuals_after),
        seed=seed,
    )
