"""Dead-latent resampling for TopK SAEs.

A TopK latent fires on a token when its pre-activation is among the token's k largest (and positive). A latent
that never gets there receives no reconstruction gradient; AuxK (sae-lens' TopK auxiliary loss) trains it to
explain the residual error, but it must still outgrow the k-th pre-activation before it fires. The 16k SAE
shipped with the package ended its first pass with half its latents in that state: their pre-activations sit a
median of ≈ 1.4 below the k-th value (≈ 5.8), their encoder columns a third as long as the live ones'.

:func:`resample_dead_latents` gives every latent that never fires on a sample of training activations a new
direction, in the spirit of Anthropic's resampling for ReLU SAEs but calibrated for TopK:

* seeds: tokens drawn without replacement with probability ∝ their squared reconstruction error;
* decoder row = the seed's unit residual ``(x − x̂)/‖x − x̂‖`` at the live rows' mean norm;
* encoder column = the same direction, scaled so that on its seed the latent's activation restores the seed's
  residual (its magnitude); encoder bias = the cut that lets the latent clear the k-th pre-activation (and zero)
  on about ``fires`` tokens of the sample (by default the mean firing rate ``k / d_sae``).

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
    target_fires: int  # tokens of the sample each new latent was calibrated to fire on
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
def resample_dead_latents(
    sae: Any,
    acts: Float[torch.Tensor, "tokens d_in"],
    *,
    fires: int | None = None,
    seed: int = 0,
    chunk: int = 2048,
) -> ResampleReport:
    """Give each latent of the TopK ``sae`` that never fires on ``acts`` a new direction (in place).

    ``acts`` are raw activations at the SAE's hook (special-token positions left out, as in training). Each
    resampled latent is calibrated to fire on about ``fires`` of these tokens (default ``k / d_sae`` of them,
    the mean firing rate, at least 1). Returns a :class:`ResampleReport`; the latents that fire are unchanged.
    """
    _check_topk(sae)
    if acts.ndim != 2 or acts.shape[-1] != int(sae.cfg.d_in):
        raise InterpSteerError(f"acts must be (tokens, {int(sae.cfg.d_in)}); got {tuple(acts.shape)}")
    if acts.shape[0] == 0:
        raise InterpSteerError("resample_dead_latents needs at least one activation")
    if not torch.isfinite(acts).all():
        raise InterpSteerError("acts contain NaN or infinite values")
    acts = acts.to(sae.W_enc.dtype)
    n_tokens, d_sae, k = int(acts.shape[0]), int(sae.cfg.d_sae), int(sae.cfg.k)
    target = max(1, round(n_tokens * k / d_sae)) if fires is None else int(fires)
    if target < 1 or target > n_tokens:
        raise InterpSteerError(f"fires must be between 1 and the {n_tokens} sample tokens; got {fires}")
    counts, thresholds, residuals = _statistics(sae, acts, chunk)
    ev_before = _explained_variance(acts, residuals)
    dead = torch.nonzero(counts == 0).flatten()
    if dead.numel() == 0:
        return ResampleReport(n_tokens, 0, 0, target, 0, ev_before, ev_before, seed)
    err = residuals.pow(2).sum(-1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    weights = err.double().cpu()
    if not (weights > 0).any():
        raise InterpSteerError("the SAE reconstructs every sample activation exactly; nothing to resample toward")
    replace = int((weights > 0).sum()) < dead.numel()
    seeds = torch.multinomial(weights, dead.numel(), replacement=replace, generator=generator).to(acts.device)
    directions = residuals[seeds] / residuals[seeds].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = counts > 0
    dec_norm = sae.W_dec[alive].norm(dim=-1).mean() if alive.any() else sae.W_dec.norm(dim=-1).mean()
    rescale = bool(sae.cfg.rescale_acts_by_decoder_norm)
    # the pre-activation is (x_in · W_enc_j + b_enc_j) · R and the latent adds act · G · u to the reconstruction
    pre_factor = dec_norm if rescale else torch.ones_like(dec_norm)
    gain = torch.ones_like(dec_norm) if rescale else dec_norm
    sae_in = sae.process_sae_in(acts)
    seed_in, seed_err = sae_in[seeds], residuals[seeds].norm(dim=-1)
    enc_scale = torch.empty(dead.numel(), dtype=acts.dtype, device=acts.device)
    enc_bias = torch.empty_like(enc_scale)
    m = min(target, n_tokens)
    for start in range(0, dead.numel(), 512):
        u = directions[start : start + 512]
        proj = sae_in @ u.T  # (tokens, group)
        seed_proj = (seed_in[start : start + 512] * u).sum(-1)
        err = seed_err[start : start + 512]
        # magnitude: on its seed the latent's activation c · proj restores the seed's residual, err = u · r
        c = err / (gain * seed_proj.clamp_min(0.1 * err.clamp_min(1e-12)))
        # threshold: it fires on token t when c · proj_t + b > threshold_t, i.e. z_t = c · proj_t − threshold_t
        # > −b; b puts the cut at the m-th largest z (at 0 when fewer than m tokens clear it unbiased, at the
        # largest z when none does), so it fires on about m tokens
        z = proj * c - thresholds[:, None]
        z_m = z.topk(m, dim=0).values[-1]
        z_max = z.max(0).values
        level = torch.where(z_m > 0, z_m, torch.where(z_max > 0, torch.zeros_like(z_m), z_max))
        enc_scale[start : start + 512] = c
        enc_bias[start : start + 512] = -level + 1e-4 * (level.abs() + 1)
    sae.W_dec.data[dead] = directions * dec_norm
    sae.W_enc.data[:, dead] = (directions * (enc_scale / pre_factor)[:, None]).T
    sae.b_enc.data[dead] = enc_bias / pre_factor
    counts_after, _, residuals_after = _statistics(sae, acts, chunk)
    return ResampleReport(
        sample_tokens=n_tokens, dead_before=int(dead.numel()), resampled=int(dead.numel()), target_fires=target,
        dead_after=int((counts_after == 0).sum()), explained_variance_before=ev_before,
        explained_variance_after=_explained_variance(acts, residuals_after), seed=seed,
    )
