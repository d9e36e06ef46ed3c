"""Explanations: which SAE latents a vector uses, what they do (logit lens)."""

from interp_steer.interpret.features import latent_logit_lens, top_latents

__all__ = ["latent_logit_lens", "top_latents"]
