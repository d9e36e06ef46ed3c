"""Activation collection shared by the training-free methods (CAA, SAS, contrastive).

Sequences are right-padded: with causal attention, padding after a sequence never changes the activations of
its real positions, so no attention mask is needed and results equal unbatched forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from interp_steer.chat import ChatTokens, chat_tokens, pad_right, pad_token_id
from interp_steer.data.schemas import PreferenceExample, as_preference_examples
from interp_steer.errors import InterpSteerError

TokenPolicy = Literal["response_mean", "last_prompt", "answer_letter"]
TOKEN_POLICIES: tuple[str, ...] = ("response_mean", "last_prompt", "last_response", "answer_letter")


def resid_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def hook_layer(hook: str) -> int:
    parts = hook.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise InterpSteerError(f"hook {hook!r} is not a per-layer hook point (blocks.L.<name>)")
    return int(parts[1])


def _content_end(tokenizer: Any, ct: ChatTokens) -> int:
    """Index after the last response token that is not an end-of-turn/special token."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    end = len(ct.ids)
    while end > ct.response_start + 1 and ct.ids[end - 1] in special:
        end -= 1
    return end


def select_positions(tokenizer: Any, ct: ChatTokens, policy: str) -> list[int]:
    """Token positions whose activations represent the example under a token policy.

    * ``response_mean`` – every response token (incl. the end-of-turn token): their mean is used.
    * ``last_prompt`` – the last prompt token (the position that predicts the first response token; chosen and
      rejected share it, so a contrast there is zero unless the prompts differ).
    * ``last_response`` – the last response token before the end-of-turn marker (steering-vectors' default read
      position, -1, on text without the marker).
    * ``answer_letter`` – the response token that carries the answer letter of an A/B answer such as "(A)".
    """
    if policy == "last_prompt":
        return [ct.response_start - 1]
    if policy == "last_response":
        return [_content_end(tokenizer, ct) - 1]
    if policy == "response_mean":
        if len(ct.ids) <= ct.response_start:
            raise InterpSteerError("response_mean needs a response")
        return list(range(ct.response_start, len(ct.ids)))
    if policy == "answer_letter":
        end = _content_end(tokenizer, ct)
        for i in range(ct.response_start, end):
            text = tokenizer.decode([ct.ids[i]]).strip().strip("()")
            if len(text) == 1 and text.isalpha() and text.isupper():
                return [i]
        return [end - 1]
    raise InterpSteerError(f"unknown token policy {policy!r}; expected one of {TOKEN_POLICIES}")


@torch.no_grad()
def collect_activations(
    model: Any,
    chats: Sequence[ChatTokens],
    hooks: Sequence[str],
    policy: str,
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "activations",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Float[torch.Tensor, "n d"]]:
    """Per-example activation (mean over the policy's positions) at each hook, in one forward per batch.

    ``transform`` maps each selected token's activation before averaging (e.g. ``sae.encode``: the mean of
    codes, not the code of the mean).
    """
    if not chats:
        raise InterpSteerError("no examples to collect activations from")
    tokenizer = model.tokenizer
    pad = pad_token_id(tokenizer)
    stop = max(hook_layer(h) for h in hooks) + 1
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    positions = [select_positions(tokenizer, ct, policy) for ct in chats]
    for start in tqdm(range(0, len(chats), batch_size), desc=desc, disable=not progress, leave=False):
        batch = chats[start : start + batch_size]
        tokens, _ = pad_right([ct.ids for ct in batch], pad)
        _, cache = model.run_with_cache(
            tokens.to(model.cfg.device), names_filter=list(hooks),
            stop_at_layer=stop if stop < model.cfg.n_layers else None,
        )
        for hook in hooks:
            acts = cache[hook]
            for row, pos in enumerate(positions[start : start + batch_size]):
                picked = acts[row, pos]
                if transform is not None:
                    picked = transform(picked)
                out[hook].append(picked.float().mean(0).cpu())
    return {h: torch.stack(v) for h, v in out.items()}


def preference_chats(model: Any, examples: Sequence[PreferenceExample]) -> tuple[list[ChatTokens], list[ChatTokens]]:
    """Chat-templated (prompt, chosen) and (prompt, rejected) token sequences."""
    examples = as_preference_examples(examples)
    if not examples:
        raise InterpSteerError("no preference examples")
    tok = model.tokenizer
    chosen = [chat_tokens(tok, ex.prompt, ex.chosen) for ex in examples]
    rejected = [chat_tokens(tok, ex.prompt, ex.rejected) for ex in examples]
    return chosen, rejected


def layers_to_hooks(model: Any, layers: int | Sequence[int] | None, template: str) -> list[str]:
    if layers is None:
        layers = list(range(model.cfg.n_layers))
    elif isinstance(layers, int):
        layers = [layers]
    hooks = [template.format(layer=L) for L in layers]
    for L, h in zip(layers, hooks, strict=True):
        if not 0 <= L < model.cfg.n_layers or h not in model.hook_dict:
            raise InterpSteerError(f"layer {L} / hook {h!r} does not exist (model has {model.cfg.n_layers} layers)")
    return hooks
