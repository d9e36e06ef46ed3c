"""SAS (sparse activation steering): the CAA contrast in SAE latent space, kept sparse.

``v = mean Enc(h_chosen) − mean Enc(h_rejected)`` at the SAE's hook, then only the ``top_k`` largest-|v|
entries (or those with ``|v| ≥ threshold``) are kept. It is applied through the SAE path of the intervention
layer (``Dec(ReLU(Enc(h) + λv)) + h − Dec(Enc(h))``); the artifact stores the sparse code and, for inspection,
its decoded direction ``v @ W_dec``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.methods.activations import collect_activations, preference_chats
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference, validate_sae
from interp_steer.steering.vector import SteeringVector


def sparsify(code: torch.Tensor, *, top_k: int | None = None, threshold: float | None = None) -> torch.Tensor:
    """Keep the ``top_k`` largest-magnitude entries and/or those with ``|v| ≥ threshold``."""
    if top_k is None and threshold is None:
        raise InterpSteerError("SAS needs top_k or threshold to keep the code sparse")
    keep = torch.ones_like(code, dtype=torch.bool)
    if threshold is not None:
        keep &= code.abs() >= threshold
    if top_k is not None:
        if top_k < 1:
            raise InterpSteerError("top_k must be at least 1")
        top = torch.zeros_like(keep)
        top[code.abs().topk(min(top_k, code.numel())).indices] = True
        keep &= top
    return torch.where(keep, code, torch.zeros_like(code))


@torch.no_grad()
def compute_sas(
    model: Any,
    sae: Any,
    examples: Sequence[PreferenceExample],
    *,
    top_k: int | None = 32,
    threshold: float | None = None,
    token_policy: str = "response_mean",
    positions: str = "all",
    batch_size: int = 8,
    progress: bool = False,
) -> SteeringVector:
    validate_sae(sae, model)
    hook = sae.cfg.metadata.hook_name
    chosen, rejected = preference_chats(model, examples)  # accepts pairs, tuples and dicts
    # encode per token, then average the codes (the SAE is non-linear: mean of codes != code of the mean)
    def encode(acts: torch.Tensor) -> torch.Tensor:
        return sae.encode(acts.to(sae.dtype))

    codes = {
        name: collect_activations(model, chats, [hook], token_policy, batch_size=batch_size, progress=progress,
                                  desc=f"SAS {name}", transform=encode)[hook]
        for name, chats in (("chosen", chosen), ("rejected", rejected))
    }
    dense = codes["chosen"].mean(0) - codes["rejected"].mean(0)
    code = sparsify(dense, top_k=top_k, threshold=threshold)
    ref = sae_reference(sae).to_dict()
    decoded = code.to(sae.W_dec.dtype) @ sae.W_dec
    return SteeringVector(
        method="sas", kind="sae",
        tensors={hook: {"latent": code.float(), "decoded": decoded.float()}},
        model=model_fingerprint(model).to_dict(), sae=ref, positions=positions,
        config={"top_k": top_k, "threshold": threshold, "token_policy": token_policy, "hook": hook,
                "n_examples": len(chosen)},
        metrics={"nnz": int((code != 0).sum()), "dense_nnz": int((dense != 0).sum()),
                 "kept_l1_fraction": float(code.abs().sum() / dense.abs().sum().clamp_min(1e-12))},
    )
