"""The one intervention layer every method uses.

Three kinds of interventions act on an activation ``h`` at a hook point (TransformerLens hook names are the
interface; the same objects also run as PyTorch hooks on the Hugging Face twin for fast generation):

* :class:`DenseIntervention` – ``h + λ·v``
* :class:`SAEIntervention` – ``h + Dec(ReLU(Enc(h) + λ·v)) − Dec(Enc(h))``, i.e. ``Dec(ReLU(s + λv)) + (h − Dec(s))``
  with the SAE error term kept; when ``v`` is sparse and the SAE's encoder is elementwise (ReLU/JumpReLU),
  only the encoder columns on the support of ``v`` are computed (``ReLU(s + λv) − s`` vanishes elsewhere).
* :class:`AffineIntervention` – ``λ·(ω⊙h + b) + (1 − λ)·h``

A position policy restricts where they act: ``"all"`` positions; ``"after_instruction"`` (from the end of the
user's instruction onward, CAA's convention); ``"generated"`` (only response/generated tokens). Policies other
than "all" need per-row start indices (``starts``), which :func:`interp_steer.generate` and the trainers pass.
Under a KV cache, hooks see one position at a time; :class:`StepState.offset` tells them where they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from interp_steer.errors import InterpSteerError
from interp_steer.steering.vector import SteeringVector

PositionPolicy = Literal["all", "after_instruction", "generated"]
POLICIES: tuple[str, ...] = ("all", "after_instruction", "generated")

Act = Float[torch.Tensor, "batch pos d"]


class Intervention:
    """Maps an activation to its steered value at strength ``λ`` (differentiable in its tensors)."""

    def __call__(self, h: Act, strength: float | torch.Tensor) -> Act:
        raise NotImplementedError


class DenseIntervention(Intervention):
    """``add``: ``h + λ·v``; ``ablate``: ``h − λ·(h·v̂)·v̂``; ``ablate_add``: ``h − (h·v̂)·v̂ + λ·v``."""

    def __init__(self, vector: Float[torch.Tensor, " d"], operator: str = "add"):
        self.vector = vector
        self.operator = operator

    def __call__(self, h: Act, strength: float | torch.Tensor) -> Act:
        v = self.vector.to(h)
        if self.operator == "add":
            return h + strength * v
        unit = v / v.norm().clamp_min(1e-12)
        projection = (h @ unit)[..., None] * unit
        if self.operator == "ablate":
            return h - strength * projection
        return h - projection + strength * v


class AffineIntervention(Intervention):
    def __init__(self, scale: Float[torch.Tensor, " d"], bias: Float[torch.Tensor, " d"]):
        self.scale = scale
        self.bias = bias

    def __call__(self, h: Act, strength: float | torch.Tensor) -> Act:
        moved = h * self.scale.to(h) + self.bias.to(h)
        return h + strength * (moved - h)


_ELEMENTWISE = {"standard", "jumprelu"}


def _sparse_ok(sae: Any) -> bool:
    cfg = sae.cfg
    return (
        cfg.architecture() in _ELEMENTWISE
        and getattr(cfg, "normalize_activations", "none") in ("none", "expected_average_only_in")
        and getattr(cfg, "reshape_activations", "none") == "none"
    )


class SAEIntervention(Intervention):
    """YaPO/SAS steering in the latent space of a sae-lens SAE: ``h + e(λ)``, ``e(λ) = Dec(ReLU(s + λ·v)) − Dec(s)``.

    ``sparse``: ``"auto"`` uses the support-only encoder when ``v`` has at most ``sparse_fraction`` non-zeros
    and the SAE is elementwise; ``True`` forces it (error if impossible); ``False`` always runs the full SAE.
    ``symmetric``: apply ``½·[e(λ) − e(−λ)]`` instead, so that ``−λ`` is exactly the opposite edit of ``+λ``.
    """

    def __init__(self, sae: Any, latent: Float[torch.Tensor, " d_sae"], *, sparse: bool | str = "auto",
                 sparse_fraction: float = 0.25, symmetric: bool = False):
        if latent.shape[-1] != sae.cfg.d_sae:
            raise InterpSteerError(f"latent vector has {latent.shape[-1]} entries but the SAE has {sae.cfg.d_sae}")
        self.sae = sae
        self.latent = latent
        self.symmetric = symmetric
        support = None
        if sparse is not False and not latent.requires_grad:
            nz = torch.nonzero(latent.detach() != 0).flatten()
            small = nz.numel() <= sparse_fraction * latent.numel()
            if _sparse_ok(sae) and (small or sparse is True):
                support = nz
            elif sparse is True:
                raise InterpSteerError(
                    f"sparse SAE steering needs an elementwise SAE (standard/jumprelu), got {sae.cfg.architecture()}"
                )
        self.support = support

    def _codes(self, h: Act) -> tuple[Any, Any, Callable[[Any, Any], Any]] | None:
        """``(s, v, diff)``: the codes of ``h`` and ``v`` (on the support only, on the sparse path) and
        ``diff(a, b) = Dec(a) − Dec(b)``; ``None`` when ``v`` is all zero on the sparse path."""
        sae = self.sae
        if self.support is None:
            s = sae.encode(h.to(sae.dtype))
            return s, self.latent.to(s.dtype), lambda a, b: sae.decode(a) - sae.decode(b)
        idx = self.support
        if idx.numel() == 0:
            return None
        x = sae.process_sae_in(h.to(sae.dtype))
        pre = x @ sae.W_enc[:, idx] + sae.b_enc[idx]
        s = torch.relu(pre)
        if sae.cfg.architecture() == "jumprelu":
            s = s * (pre > sae.threshold[idx]).to(s.dtype)
        return s, self.latent[idx].to(s.dtype), lambda a, b: (a - b) @ sae.W_dec[idx]

    def __call__(self, h: Act, strength: float | torch.Tensor) -> Act:
        codes = self._codes(h)
        if codes is None:
            return h
        s, v, diff = codes
        steered = torch.relu(s + strength * v)
        if self.symmetric:  # ½·[e(λ) − e(−λ)] = ½·[Dec(ReLU(s + λv)) − Dec(ReLU(s − λv))]
            return h + (0.5 * diff(steered, torch.relu(s - strength * v))).to(h.dtype)
        return h + diff(steered, s).to(h.dtype)


def interventions_for(vector: SteeringVector, sae: Any | None = None, *, sparse: bool | str = "auto") -> dict[str, Intervention]:
    """Build the interventions a :class:`SteeringVector` describes."""
    out: dict[str, Intervention] = {}
    for hook, parts in vector.tensors.items():
        if vector.kind == "dense":
            out[hook] = DenseIntervention(parts["vector"], vector.operator)
        elif vector.kind == "affine":
            out[hook] = AffineIntervention(parts["scale"], parts["bias"])
        else:
            if sae is None:
                raise InterpSteerError(f"{vector.method} vector steers in SAE latent space: pass sae=")
            out[hook] = SAEIntervention(sae, parts["latent"], sparse=sparse, symmetric=vector.operator == "symmetric")
    return out


# ------------------------------------------------------------------------------------------ positions


@dataclass
class StepState:
    """Where the current forward pass is: ``offset`` = absolute index of its first position (KV cache), and
    ``starts`` = per-row first steered absolute position (``None``: every position)."""

    offset: int = 0
    starts: torch.Tensor | None = None

    def mask(self, batch: int, seq: int, device: torch.device) -> torch.Tensor | None:
        if self.starts is None:
            return None
        pos = torch.arange(self.offset, self.offset + seq, device=device)
        starts = self.starts.to(device)
        if starts.shape[0] != batch:
            raise InterpSteerError(f"position starts are given for {starts.shape[0]} rows but the batch has {batch}")
        return pos[None, :] >= starts[:, None]


def resolve_starts(
    positions: str, *, instruction_end: torch.Tensor | None = None, response_start: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Per-row first steered positions for a policy, from the chat bookkeeping of the batch."""
    if positions not in POLICIES:
        raise InterpSteerError(f"unknown position policy {positions!r}; expected one of {POLICIES}")
    if positions == "all":
        return None
    starts = instruction_end if positions == "after_instruction" else response_start
    if starts is None:
        raise InterpSteerError(f"positions={positions!r} needs the token indices of each row's "
                               "instruction end / response start (interp_steer.generate computes them)")
    return starts


# -------------------------------------------------------------------------------------------- hooks


class SteeringHandle:
    """Hooks attached to a model. ``strength`` and ``state`` can be changed while attached."""

    def __init__(self, interventions: dict[str, Intervention], strength: float | torch.Tensor, state: StepState):
        self.interventions = interventions
        self.strength = strength  # validated: a NaN or infinite strength never reaches the model
        self.state = state
        self._handles: list[Any] = []
        self.active = True
        self.calls: dict[str, int] = dict.fromkeys(interventions, 0)  # applications per hook point (proof it fired)

    def check_fired(self, what: str = "the steered call") -> dict[str, int]:
        """The per-hook application counts; an error naming the silent hooks when one never fired."""
        silent = [h for h, n in self.calls.items() if n == 0]
        if silent:
            raise InterpSteerError(
                f"{what} ran without steering: hook(s) {silent} never fired (the forward pass did not reach them, "
                "or the model was called outside the steering context)"
            )
        return dict(self.calls)

    @property
    def strength(self) -> float | torch.Tensor:
        return self._strength

    @strength.setter
    def strength(self, value: float | torch.Tensor) -> None:
        from interp_steer.validation import check_strength

        check_strength(value)
        self._strength = value

    def transform(self, hook: str, h: Act) -> Act:
        if not self.active:
            return h
        self.calls[hook] += 1
        steered = self.interventions[hook](h, self.strength)
        mask = self.state.mask(h.shape[0], h.shape[1], h.device)
        if mask is None:
            return steered
        return torch.where(mask[..., None], steered, h)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.active = False


def attach(
    model: Any,
    vector: SteeringVector | dict[str, Intervention],
    strength: float | torch.Tensor = 1.0,
    *,
    sae: Any | None = None,
    positions: str | None = None,
    starts: torch.Tensor | None = None,
    check: bool = True,
    sparse: bool | str = "auto",
) -> SteeringHandle:
    """Attach steering hooks to a TransformerLens model (remember to ``remove()``; prefer :func:`steer`)."""
    if isinstance(vector, SteeringVector):
        if check:
            vector.check_compatible(model, sae)
        interventions = interventions_for(vector, sae, sparse=sparse)
        policy = positions or vector.positions
    else:
        interventions = vector
        policy = positions or "all"
    if policy not in POLICIES:
        raise InterpSteerError(f"unknown position policy {policy!r}; expected one of {POLICIES}")
    if policy != "all" and starts is None:
        raise InterpSteerError(
            f"positions={policy!r} needs starts (first steered token index per row); "
            "interp_steer.generate and the trainers compute them from the chat template"
        )
    state = StepState(starts=starts if policy != "all" else None)
    handle = SteeringHandle(interventions, strength, state)
    for hook in interventions:
        if hook not in model.hook_dict:
            raise InterpSteerError(f"hook point {hook!r} does not exist in {model.cfg.model_name}")
        point = model.hook_dict[hook]

        def fn(module: Any, inputs: Any, output: torch.Tensor, _hook: str = hook) -> torch.Tensor:
            return handle.transform(_hook, output)

        handle._handles.append(point.register_forward_hook(fn))
    return handle


@contextmanager
def steer(
    model: Any,
    vector: SteeringVector | dict[str, Intervention],
    strength: float | torch.Tensor = 1.0,
    *,
    sae: Any | None = None,
    positions: str | None = None,
    starts: torch.Tensor | None = None,
    check: bool = True,
    sparse: bool | str = "auto",
    require_fired: bool = False,
) -> Iterator[SteeringHandle]:
    """Apply ``vector`` at ``strength`` inside the ``with`` block; hooks are always removed on exit.

    ``handle.calls`` counts the applications per hook point; with ``require_fired`` a block that ends without
    every hook having fired raises (the scoring functions use this, so a result is never silently unsteered).

    >>> with steer(model, vec, strength=4.0) as handle:
    ...     logits = model(tokens)
    >>> handle.calls   # {"blocks.15.hook_resid_post": 1}
    """
    handle = attach(model, vector, strength, sae=sae, positions=positions, starts=starts, check=check, sparse=sparse)
    try:
        yield handle
    finally:
        handle.remove()
    if require_fired:
        handle.check_fired()


# ----------------------------------------------------------------------------- Hugging Face twin hooks


class NotMappable(Exception):
    """A hook point without an exact Hugging Face equivalent (generation then uses the TL loop)."""


_HF_LLAMA_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}


def _hf_layers(hf_model: Any) -> Any:
    base = getattr(hf_model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise NotMappable("model has no .model.layers")
    return layers


def _hf_past_length(args: Any, kwargs: dict[str, Any]) -> int:
    """Tokens already in the KV cache when the HF base model's ``forward`` is called (the absolute index of
    this forward's first position).

    The cache kwarg is ``past_key_values`` in older transformers and ``cache`` in newer ones (the rename in the
    5.x series; ``generate`` passes only the new name, so reading only the old one saw no cache and steered
    every decoding step as position 0); a legacy tuple cache has no ``get_seq_length``. If no cache is found, the 2-D attention mask (which ``generate``
    keeps covering past + current tokens) gives the same number; a fresh forward without either is at 0.
    """
    for name in ("cache", "past_key_values"):
        cache = kwargs.get(name)
        if cache is None:
            continue
        if hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:
            return int(cache[0][0].shape[-2])
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    mask = kwargs.get("attention_mask")
    if ids is not None and isinstance(mask, torch.Tensor) and mask.ndim == 2:
        return max(int(mask.shape[1]) - int(ids.shape[1]), 0)
    return 0


def attach_hf(hf_model: Any, handle: SteeringHandle) -> None:
    """Register the interventions of ``handle`` on the HF twin (same objects, same math).

    Raises :class:`NotMappable` for hook points without an exact HF equivalent.
    """
    layers = _hf_layers(hf_model)
    arch = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
    plan: list[tuple[Any, str, str]] = []
    for hook in handle.interventions:
        parts = hook.split(".")
        if len(parts) != 3 or parts[0] != "blocks":
            raise NotMappable(hook)
        layer = layers[int(parts[1])]
        name = parts[2]
        if name == "hook_resid_post":
            plan.append((layer, "post", hook))
        elif name == "hook_resid_pre":
            plan.append((layer, "pre", hook))
        elif name == "hook_attn_out" and arch in _HF_LLAMA_ARCHS:
            plan.append((layer.self_attn, "post", hook))
        elif name == "hook_mlp_out" and arch in _HF_LLAMA_ARCHS:
            plan.append((layer.mlp, "post", hook))
        else:
            raise NotMappable(hook)

    def offset_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        handle.state.offset = _hf_past_length(args, kwargs)

    handle._handles.append(hf_model.model.register_forward_pre_hook(offset_hook, with_kwargs=True))
    for module, where, hook in plan:
        if where == "post":
            def post(module: Any, inputs: Any, output: Any, _hook: str = hook) -> Any:
                if isinstance(output, tuple):
                    return (handle.transform(_hook, output[0]), *output[1:])
                return handle.transform(_hook, output)

            handle._handles.append(module.register_forward_hook(post))
        else:
            def pre(module: Any, args: Any, kwargs: dict[str, Any], _hook: str = hook) -> Any:
                if args:
                    return (handle.transform(_hook, args[0]), *args[1:]), kwargs
                kwargs = dict(kwargs)
                kwargs["hidden_states"] = handle.transform(_hook, kwargs["hidden_states"])
                return args, kwargs

            handle._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
