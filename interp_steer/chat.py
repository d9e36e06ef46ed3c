"""Chat-template rendering with token-level bookkeeping.

:func:`chat_tokens` renders ``(prompt[, response])`` with the tokenizer's own chat template and returns the
token ids plus two indices every steering method needs:

* ``instruction_end`` – index of the first token after the user's instruction (the end-of-turn marker);
  "from the end of the instruction onward" steering starts here (CAA's convention).
* ``response_start`` – index of the first response token (== prompt length incl. the generation prompt).

Templates without a system role (Gemma) never get a system message: a ``system`` text is merged into the
user turn instead of inventing a prefix. Tokenizers without a chat template fall back to raw text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int

from interp_steer.errors import InterpSteerError


@dataclass
class ChatTokens:
    """Token ids of one rendered conversation and where its instruction and response are."""

    ids: list[int]
    instruction_end: int
    response_start: int
    text: str

    @property
    def prompt_ids(self) -> list[int]:
        return self.ids[: self.response_start]

    @property
    def response_ids(self) -> list[int]:
        return self.ids[self.response_start :]


def _supports_system(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    if not template:
        return False
    if "System role not supported" in template or "system role not supported" in template.lower():
        return False
    try:
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], tokenize=False
        )
    except Exception:  # template raised: no system role
        return False
    return True


def _messages(tokenizer: Any, prompt: str, system: str | None) -> list[dict[str, str]]:
    if system is None:
        return [{"role": "user", "content": prompt}]
    if _supports_system(tokenizer):
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return [{"role": "user", "content": f"{system}\n\n{prompt}"}]


def render_prompt(tokenizer: Any, prompt: str, *, system: str | None = None, chat: bool = True) -> str:
    """The prompt as text, with the generation prompt (e.g. ``<|im_start|>assistant\\n``) appended."""
    if not chat or not getattr(tokenizer, "chat_template", None):
        return prompt if system is None else f"{system}\n\n{prompt}"
    return tokenizer.apply_chat_template(
        _messages(tokenizer, prompt, system), tokenize=False, add_generation_prompt=True
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _instruction_end(tokenizer: Any, text: str, prompt: str, n_prompt_tokens: int) -> int:
    """First token index whose characters start at or after the end of the instruction text."""
    end_char = text.rfind(prompt)
    if end_char < 0 or not getattr(tokenizer, "is_fast", False):
        return max(n_prompt_tokens - 1, 0)
    end_char += len(prompt)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for i, (start, stop) in enumerate(enc["offset_mapping"]):
        if stop > end_char or start >= end_char:
            return i if start >= end_char else i + 1
    return n_prompt_tokens


def chat_tokens(
    tokenizer: Any,
    prompt: str,
    response: str | None = None,
    *,
    system: str | None = None,
    chat: bool = True,
    end_of_turn: bool = True,
) -> ChatTokens:
    """Render ``prompt`` (and optionally ``response``) and locate the instruction end and response start.

    The response tokens are the template's rendering of the assistant turn (including its end-of-turn
    token when ``end_of_turn``), tokenized so that ``ids[:response_start]`` is exactly the generation
    prompt's tokens (what the model sees when it generates).
    """
    if not isinstance(prompt, str) or not prompt:
        raise InterpSteerError("prompt must be a non-empty string")
    prompt_text = render_prompt(tokenizer, prompt, system=system, chat=chat)
    prompt_ids = _encode(tokenizer, prompt_text)
    instruction_end = _instruction_end(tokenizer, prompt_text, prompt, len(prompt_ids))
    if response is None:
        return ChatTokens(prompt_ids, instruction_end, len(prompt_ids), prompt_text)
    use_template = chat and getattr(tokenizer, "chat_template", None)
    if use_template:
        msgs = _messages(tokenizer, prompt, system) + [{"role": "assistant", "content": response}]
        full_text = tokenizer.apply_chat_template(msgs, tokenize=False)
        if full_text.startswith(prompt_text):
            tail = full_text[len(prompt_text):]
            if not end_of_turn:
                tail = tail[: tail.rfind(response) + len(response)] if response in tail else response
            tail = tail.rstrip("\n")  # the newline after the end-of-turn token is not part of the answer
        else:  # unusual template: fall back to the raw response + EOS
            tail = response
    else:
        tail = response
    response_ids = _encode(tokenizer, tail)
    if (not use_template) and end_of_turn and tokenizer.eos_token_id is not None:
        response_ids.append(int(tokenizer.eos_token_id))
    if not response_ids:
        raise InterpSteerError("response renders to zero tokens")
    return ChatTokens(prompt_ids + response_ids, instruction_end, len(prompt_ids), prompt_text + tail)


def scored_option(tokenizer: Any, question: str, option: str) -> tuple[list[int], int, int]:
    """``question`` answered with ``option``, cut after the option's own last token: the tokens that MCQ
    log-likelihood scoring scores. Returns ``(ids, response_start, instruction_end)``; trailing end-of-turn /
    special tokens are dropped, at least one response token is kept."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ct = chat_tokens(tokenizer, question, option)
    end = len(ct.ids)
    while end > ct.response_start + 1 and ct.ids[end - 1] in special:
        end -= 1
    return ct.ids[:end], ct.response_start, ct.instruction_end


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def pad_left(
    sequences: list[list[int]], pad_id: int
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Left-pad token lists; returns ``(tokens, attention_mask)``."""
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            tokens[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return tokens, mask


def pad_right(
    sequences: list[list[int]], pad_id: int
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Right-pad token lists; returns ``(tokens, attention_mask)``."""
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return tokens, mask


def pad_token_id(tokenizer: Any) -> int:
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0
