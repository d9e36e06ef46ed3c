"""CAA (contrastive activation addition): mean of (chosen − rejected) activations, per layer.

All requested layers come from one forward pass per batch. ``normalize_to`` rescales each layer's vector to a
reference norm (e.g. the mean residual norm, or a fixed number) so strengths are comparable across layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.methods.activations import (
    collect_activations,
    layers_to_hooks,
    preference_chats,
)
from interp_steer.models import model_fingerprint
from interp_steer.steering.vector import SteeringVector


def compute_caa(
    model: Any,
    examples: Sequence[PreferenceExample],
    *,
    layers: int | Sequence[int] | None = None,
    token_policy: str = "response_mean",
    hook_template: str = "blocks.{layer}.hook_resid_post",
    normalize_to: float | str | None = None,
    positions: str = "all",
    batch_size: int = 8,
    progress: bool = False,
) -> dict[int, SteeringVector]:
    """One CAA :class:`SteeringVector` per layer (``{layer: vector}``).

    Args:
        token_policy: ``response_mean`` (mean over response tokens), ``last_prompt`` or ``answer_letter``
            (the A/B letter token, as in the CAA paper).
        normalize_to: ``None`` keeps the raw mean difference; a float rescales every vector to that norm;
            ``"mean_resid"`` rescales to the mean activation norm at that layer over the examples.
        positions: the default position policy stored in the vectors.
    """
    hooks = layers_to_hooks(model, layers, hook_template)
    chosen, rejected = preference_chats(model, examples)  # accepts pairs, tuples and dicts
    pos_acts = collect_activations(model, chosen, hooks, token_policy, batch_size=batch_size, progress=progress,
                                   desc="CAA chosen")
    neg_acts = collect_activations(model, rejected, hooks, token_policy, batch_size=batch_size,
                                   progress=progress, desc="CAA rejected")
    fp = model_fingerprint(model).to_dict()
    out: dict[int, SteeringVector] = {}
    for hook in hooks:
        diff = (pos_acts[hook] - neg_acts[hook]).mean(0)
        raw_norm = float(diff.norm())
        if normalize_to is not None:
            if normalize_to == "mean_resid":
                target = float(torch.cat([pos_acts[hook], neg_acts[hook]]).norm(dim=-1).mean())
            elif isinstance(normalize_to, (int, float)):
                target = float(normalize_to)
            else:
                raise InterpSteerError(f"normalize_to must be a number or 'mean_resid', got {normalize_to!r}")
            diff = diff * (target / max(raw_norm, 1e-12))
        layer = int(hook.split(".")[1])
        out[layer] = SteeringVector(
            method="caa", kind="dense", tensors={hook: {"vector": diff.to(model.cfg.dtype)}}, model=fp,
            positions=positions,
            config={"token_policy": token_policy, "hook": hook, "normalize_to": normalize_to,
                    "n_examples": len(chosen)},
            metrics={"raw_norm": raw_norm, "mean_chosen_norm": float(pos_acts[hook].norm(dim=-1).mean()),
                     "mean_rejected_norm": float(neg_acts[hook].norm(dim=-1).mean())},
        )
    return out


def merge_layers(vectors: dict[int, SteeringVector], layers: Sequence[int]) -> SteeringVector:
    """One multi-layer vector from per-layer ones (applied together)."""
    picked = [vectors[L] for L in layers]
    tensors = {h: t for v in picked for h, t in v.tensors.items()}
    first = picked[0]
    return SteeringVector(first.method, first.kind, tensors, first.model, first.sae, first.positions,
                          {**first.config, "layers": list(layers)}, {"per_layer": {L: vectors[L].metrics for L in layers}})
