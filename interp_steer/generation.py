"""Steered generation: batched, left-padded, chat-templated.

Backends:
* ``"hf"`` – Hugging Face ``generate`` (KV cache) on the model's HF twin, with the *same* intervention
  objects attached as PyTorch hooks on the matching HF modules (resid_pre/resid_post, attn_out, mlp_out).
* ``"tl"`` – TransformerLens ``generate`` with the steering hooks on its HookPoints (the reference path; any
  hook point works). ``"auto"`` picks ``"hf"`` when the twin exists and every hook point maps onto it.

Greedy outputs of both backends agree token for token (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from interp_steer.chat import ChatTokens, chat_tokens, pad_left, pad_token_id
from interp_steer.errors import InterpSteerError
from interp_steer.models import hf_twin
from interp_steer.steering.interventions import (
    Intervention,
    NotMappable,
    SteeringHandle,
    StepState,
    attach,
    attach_hf,
    interventions_for,
    resolve_starts,
)
from interp_steer.steering.vector import SteeringVector


@dataclass
class Generation:
    """One answer; ``hook_calls`` counts the steering applications per hook point in its batch (the proof that
    steering fired: a steered batch whose hooks never fired raises instead)."""

    prompt: str
    text: str
    tokens: list[int]
    hook_calls: dict[str, int] = field(default_factory=dict)


def _eos_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def _trim(tokens: list[int], eos: list[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens


def _starts(positions: str, chats: list[ChatTokens], width: int) -> torch.Tensor | None:
    pads = torch.tensor([width - len(c.prompt_ids) for c in chats])
    return resolve_starts(
        positions,
        instruction_end=pads + torch.tensor([c.instruction_end for c in chats]),
        response_start=torch.full((len(chats),), width),
    )


def _interventions(model: Any, vector: SteeringVector | dict[str, Intervention] | None, sae: Any | None,
                   check: bool) -> dict[str, Intervention]:
    if vector is None:
        return {}
    if isinstance(vector, SteeringVector):
        if check:
            vector.check_compatible(model, sae)
        return interventions_for(vector, sae)
    return vector


def generate(
    model: Any,
    prompts: str | list[str],
    vector: SteeringVector | dict[str, Intervention] | None = None,
    strength: float = 1.0,
    *,
    sae: Any | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    positions: str | None = None,
    seed: int | None = 0,
    system: str | None = None,
    chat: bool = True,
    backend: str = "auto",
    check: bool = True,
    progress: bool = False,
    return_tokens: bool = False,
    ignore_eos: bool = False,
) -> list[str] | list[Generation]:
    """Generate answers to ``prompts`` (chat template applied), optionally steered by ``vector``.

    ``temperature=0`` is greedy decoding (negative temperatures are refused). ``positions`` overrides the
    vector's default position policy. A prompt that does not fit in the model's context together with
    ``max_new_tokens`` is refused (nothing is truncated silently).
    ``ignore_eos`` always generates ``max_new_tokens`` tokens (benchmarks).
    Returns the answers as strings (or :class:`Generation` objects with ``return_tokens=True``).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise InterpSteerError("no prompts to generate from")
    from interp_steer.validation import check_number, check_strength

    check_number(max_new_tokens, "max_new_tokens", minimum=1, integer=True)
    check_number(batch_size, "batch_size", minimum=1, integer=True)
    check_number(temperature, "temperature", minimum=0)
    check_number(top_p, "top_p", minimum=0, maximum=1, strict_min=True)
    check_strength(strength)
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise InterpSteerError(f"prompts must be strings; prompt {bad[0]} is {type(prompts[bad[0]]).__name__}")
    tokenizer = model.tokenizer
    all_chats = [chat_tokens(tokenizer, p, system=system, chat=chat) for p in prompts]
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
    if n_ctx:  # TransformerLens has no positions beyond n_ctx: refuse rather than cut silently
        for i, c in enumerate(all_chats):
            if len(c.prompt_ids) + max_new_tokens > n_ctx:
                raise InterpSteerError(
                    f"prompt {i} is {len(c.prompt_ids)} tokens with its chat template; with max_new_tokens="
                    f"{max_new_tokens} that exceeds the model's context of {n_ctx} tokens: shorten the prompt "
                    "or ask for fewer new tokens"
                )
    interventions = _interventions(model, vector, sae, check)
    policy = positions or (vector.positions if isinstance(vector, SteeringVector) else "all")
    twin = hf_twin(model)
    if backend == "auto":
        backend = "hf" if twin is not None else "tl"
        if backend == "hf" and interventions:
            probe = SteeringHandle(interventions, strength, StepState())
            try:
                attach_hf(twin, probe)
            except NotMappable:
                backend = "tl"
            finally:
                probe.remove()
    if backend == "hf" and twin is None:
        raise InterpSteerError("backend='hf' needs the Hugging Face twin (load_model(..., keep_hf=True))")
    if backend not in ("hf", "tl"):
        raise InterpSteerError(f"unknown backend {backend!r}; expected auto, hf or tl")
    eos = _eos_ids(tokenizer)
    pad = pad_token_id(tokenizer)
    results: list[Generation] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress, leave=False):
        batch = prompts[start : start + batch_size]
        chats = all_chats[start : start + batch_size]
        tokens, mask = pad_left([c.prompt_ids for c in chats], pad)
        width = tokens.shape[1]
        starts = _starts(policy, chats, width) if interventions else None
        if seed is not None:
            torch.manual_seed(seed + start)
        if backend == "hf":
            new, calls = _hf_generate(twin, tokens, mask, interventions, strength, starts, max_new_tokens,
                                      temperature, top_p, pad, eos, ignore_eos)
        else:
            new, calls = _tl_generate(model, tokens, interventions, strength, starts, max_new_tokens,
                                      temperature, top_p, eos, ignore_eos)
        for prompt, row in zip(batch, new, strict=True):
            toks = row if ignore_eos else _trim(row, eos)
            results.append(Generation(prompt, tokenizer.decode(toks, skip_special_tokens=True), toks, dict(calls)))
    if return_tokens:
        return results
    return [r.text for r in results]


@torch.no_grad()
def _hf_generate(hf: Any, tokens: torch.Tensor, mask: torch.Tensor, interventions: dict[str, Intervention],
                 strength: float, starts: torch.Tensor | None, max_new_tokens: int, temperature: float,
                 top_p: float, pad: int, eos: list[int], ignore_eos: bool = False) -> tuple[list[list[int]], dict[str, int]]:
    device = next(hf.parameters()).device
    handle = SteeringHandle(interventions, strength, StepState(starts=starts))
    try:
        if interventions:
            attach_hf(hf, handle)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        if ignore_eos:
            kwargs["min_new_tokens"] = max_new_tokens
        out = hf.generate(
            input_ids=tokens.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            pad_token_id=pad, eos_token_id=eos, use_cache=True, **kwargs,
        )
    finally:
        handle.remove()
    calls = handle.check_fired("steered generation (hf)") if interventions else {}
    return out[:, tokens.shape[1]:].tolist(), calls


@torch.no_grad()
def _tl_generate(model: Any, tokens: torch.Tensor, interventions: dict[str, Intervention], strength: float,
                 starts: torch.Tensor | None, max_new_tokens: int, temperature: float, top_p: float,
                 eos: list[int], ignore_eos: bool = False) -> tuple[list[list[int]], dict[str, int]]:
    state = StepState(starts=starts)
    seen = {"n": 0}
    trackers = []

    def track(module: Any, inputs: Any, output: torch.Tensor) -> None:
        # runs once per forward, before any steering hook: under the KV cache each call continues the sequence
        state.offset = seen["n"]
        seen["n"] += output.shape[1]

    if interventions:
        trackers.append(model.hook_dict["blocks.0.hook_resid_pre"].register_forward_hook(track))
    handle = attach(model, interventions, strength, check=False) if interventions else None
    if handle is not None:
        handle.state = state
    try:
        kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p if top_p < 1 else None)
        out = model.generate(
            tokens.to(model.cfg.device), max_new_tokens=max_new_tokens, stop_at_eos=not ignore_eos,
            eos_token_id=eos, use_past_kv_cache=True, padding_side="left", return_type="tokens",
            verbose=False, prepend_bos=False, **kwargs,
        )
    finally:
        for t in trackers:
            t.remove()
        if handle is not None:
            handle.remove()
    calls = handle.check_fired("steered generation (tl)") if handle is not None else {}
    return out[:, tokens.shape[1]:].tolist(), calls
