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
latent's scale is fitted to its cluster's residuals and its bias set to fire on about as many tokens as its
cluster holds. (Seeding each latent with one token's residual, the first version, either fired only on that token
and stayed dead on held-out text, or, scaled to fire more widely, stacked many latents on the same tokens:
explained variance −0.5 on the 16k SAE's sample.)

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
    mean_cluster_size: float  # sample tokens per new latent's cluster (each is calibrated to fire on about as many)
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


def _hidden_pre(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """TopK pre-activations exactly as sae-lens computes them (decoder-norm rescaling included)."""
    pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * sae.W_dec.norm(dim=-1)
    return pre


@torch.no_grad()
def _statistics(sae: Any, acts: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-latent fire counts, each token's firing threshold max(k-th pre-activation, 0), the residuals."""
    k = int(sae.cfg.k)
    counts = torch.zeros(int(sae.cfg.d_sae), dtype=torch.long, device=acts.device)
    thresholds, residuals = [], []
    for start in range(0, acts.shape[0], chunk):
        x = acts[start : start + chunk]
        pre = _hidden_pre(sae, x)
        feats = sae.encode(x)
        counts += (feats > 0).sum(0)
        thresholds.append(pre.topk(k, dim=-1).values[:, -1].clamp_min(0))
        residuals.append(x - sae.decode(feats))
    return counts, torch.cat(thresholds), torch.cat(residuals)


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
    * Magnitude: the encoder scale is the least-squares fit of the new latent's activation to its cluster's
      residual projections.
    * Firing: the encoder bias lets the latent clear the k-th pre-activation (and zero) on about as many
      sample tokens as its cluster holds.

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
    counts, thresholds, residuals = _statistics(sae, acts, chunk)
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
    sae_in = sae.process_sae_in(acts)
    # least-squares activation scale per cluster: c = Σ proj·e / Σ proj², e = (r · u) / G the wanted activation
    proj_own = (sae_in * directions[assign]).sum(-1)
    want_own = (residuals * directions[assign]).sum(-1) / gain
    num = torch.zeros(dead.numel(), dtype=acts.dtype, device=acts.device).index_add_(0, assign, proj_own * want_own)
    den = torch.zeros_like(num).index_add_(0, assign, proj_own.pow(2))
    seed_proj = (sae_in[seeds] * directions).sum(-1)
    seed_want = (residuals[seeds] * directions).sum(-1) / gain
    fallback = seed_want / seed_proj.abs().clamp_min(1e-6)
    enc_scale = torch.where((sizes > 0) & (den > 0) & (num > 0), num / den.clamp_min(1e-12), fallback).clamp_min(1e-6)
    enc_bias = torch.empty_like(enc_scale)
    for start in range(0, dead.numel(), 512):
        c = enc_scale[start : start + 512]
        proj = sae_in @ directions[start : start + 512].T  # (tokens, group)
        # it fires on token t when c · proj_t + b > threshold_t, i.e. z_t = c · proj_t − threshold_t > −b; b puts
        # the cut at the m-th largest z, m = the cluster's size (at 0 when fewer tokens clear it unbiased, at
        # the largest z when none does)
        z = proj * c - thresholds[:, None]
        m = sizes[start : start + 512].clamp(1, n_tokens)
        z_sorted = z.sort(dim=0, descending=True).values
        z_m = z_sorted.gather(0, (m - 1)[None]).squeeze(0)
        z_max = z_sorted[0]
        level = torch.where(z_m > 0, z_m, torch.where(z_max > 0, torch.zeros_like(z_m), z_max))
        enc_bias[start : start + 512] = -level + 1e-4 * (level.abs() + 1)
    sae.W_dec.data[dead] = directions * dec_norm
    sae.W_enc.data[:, dead] = (directions * (enc_scale / pre_factor)[:, None]).T
    sae.b_enc.data[dead] = enc_bias / pre_factor
    counts_after, _, residuals_after = _statistics(sae, acts, chunk)
    return ResampleReport(
        sample_tokens=n_tokens, dead_before=int(dead.numel()), resampled=int(dead.numel()),
        mean_cluster_size=float(sizes.float().mean()), dead_after=int((counts_after == 0).sum()),
        explained_variance_before=ev_before, explained_variance_after=_explained_variance(acts, residuals_after),
        seed=seed,
    )
