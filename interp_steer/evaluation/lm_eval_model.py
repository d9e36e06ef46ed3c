"""An lm-eval ``LM`` that runs any interp_steer model with any steering artifact and strength.

From Python::

    from interp_steer.evaluation.lm_eval_model import InterpSteerLM
    lm = InterpSteerLM(vector="vec.safetensors", strength=4.0)        # embedded default model
    lm_eval.simple_evaluate(model=lm, tasks=["mmlu"], num_fewshot=5)

From the lm-eval command line (plain lm-eval; the wrapper only registers the model name first)::

    python -m interp_steer.evaluation.lm_eval_cli run --model interp_steer \\
        --model_args vector=vec.safetensors,strength=4 --tasks mmlu --num_fewshot 5

Steering is applied at every position of every request (the vector's hook points), so multiple-choice
log-likelihoods, rolling perplexities and generations all see the steered model.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from interp_steer.chat import pad_right, pad_token_id
from interp_steer.errors import InterpSteerError
from interp_steer.steering.interventions import steer
from interp_steer.steering.vector import SteeringVector

log = logging.getLogger(__name__)


def _batch_size(value: int | str | None) -> int:
    """lm-eval passes ``--batch_size`` through: an int, its string, or ``"auto"`` / ``"auto:N"`` (no
    automatic search here: 8)."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return 8
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise InterpSteerError(f"batch_size must be a positive integer or 'auto' (got {value!r})") from None
    if size < 1:
        raise InterpSteerError(f"batch_size must be a positive integer (got {size})")
    return size


def _available_device(device: str | None) -> str | None:
    """lm-eval's command line passes ``device="cuda:0"`` unless told otherwise: on a machine without CUDA
    fall back to the default device (CPU) instead of failing."""
    if device and str(device).startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available: using the CPU", device)
        return None
    return device


@register_model("interp_steer")
class InterpSteerLM(LM):
    """lm-eval adapter. ``model``: a loaded model, or a name/path for :func:`interp_steer.load_model`."""

    def __init__(self, model: Any = None, vector: str | SteeringVector | None = None, strength: float | str = 1.0,
                 sae: Any = None, batch_size: int | str | None = 8, max_length: int | str = 2048,
                 device: str | None = None, max_gen_toks: int | str = 256, **_: Any) -> None:
        super().__init__()
        from interp_steer.models import load_model

        if model is None or isinstance(model, str):
            model = load_model(model, device=_available_device(device))
        self.model = model
        self.tokenizer = self.model.tokenizer
        if isinstance(vector, str):
            vector = SteeringVector.load(vector)
        self.sae = None
        if vector is not None and vector.kind == "sae":
            self.sae = self._resolve_sae(sae, vector)
        if vector is not None:
            vector.check_compatible(self.model, self.sae)
            vector = vector.to(device=self.model.cfg.device)  # a vector loaded on CPU must follow the model
        self.vector = vector
        self.strength = float(strength)
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length)
        self.max_gen_toks = int(max_gen_toks)

    def _resolve_sae(self, sae: Any, vector: SteeringVector) -> Any:
        from interp_steer.saes import load_sae

        if sae is not None and not isinstance(sae, str):
            return sae
        if isinstance(sae, str):
            return load_sae(path=sae, model=self.model)
        ref = vector.sae or {}
        if ref.get("release"):
            return load_sae(ref["release"], ref["sae_id"], model=self.model)
        return load_sae(path=str(ref.get("path", "")).removeprefix("shipped:") or None, model=self.model)

    # ---------------------------------------------------------------------------------------- helpers
    def _steering(self):
        if self.vector is None or self.strength == 0:
            return nullcontext()
        return steer(self.model, self.vector, self.strength, sae=self.sae, positions="all", check=False)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_token(self) -> int:
        tok = self.tokenizer
        return int(tok.bos_token_id if tok.bos_token_id is not None else pad_token_id(tok))

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Sum log p(continuation | context) and whether the continuation is the greedy one."""
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        pad = pad_token_id(self.tokenizer)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seqs = []
            for i in idx:
                ctx, cont = pairs[i]
                full = (ctx + cont)[-(self.max_length + 1):]
                seqs.append(full)
            tokens, mask = pad_right([s[:-1] for s in seqs], pad)
            with self._steering():
                logits = self.model(tokens.to(self.model.cfg.device))
            for row, i in enumerate(idx):
                n_cont = len(pairs[i][1])
                seq = seqs[row]
                target = torch.tensor(seq[-n_cont:], device=logits.device)
                # log-softmax only where the continuation is predicted (not over batch × seq × vocab)
                picked = torch.log_softmax(logits[row, len(seq) - 1 - n_cont : len(seq) - 1].float(), -1)
                total = float(picked.gather(-1, target[:, None]).sum())
                greedy = bool((picked.argmax(-1) == target).all())
                out[i] = (total, greedy)
        return [o for o in out if o is not None]

    # ----------------------------------------------------------------------------------- LM interface
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for req in tqdm(requests, desc="loglikelihood", disable=disable_tqdm, leave=False):
            context, continuation = req.args
            # lm-eval convention: trailing spaces of the context belong to the continuation
            n_space = len(context) - len(context.rstrip())
            if n_space:
                continuation = context[-n_space:] + continuation
                context = context[:-n_space]
            ctx = self._encode(context) if context else [self._prefix_token()]
            cont = self._encode(continuation)
            if not cont:
                raise InterpSteerError(f"empty continuation for context {context[-40:]!r}")
            pairs.append((ctx, cont))
        return self._score(pairs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        results = []
        for req in tqdm(requests, desc="rolling loglikelihood", disable=disable_tqdm, leave=False):
            (text,) = req.args
            tokens = self._encode(text)
            windows = []
            for start in range(0, len(tokens), self.max_length):
                ctx = tokens[max(0, start - 1) : start] if start else [self._prefix_token()]
                windows.append((ctx, tokens[start : start + self.max_length]))
            results.append(sum(score for score, _ in self._score(windows)))
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from interp_steer.generation import generate

        outputs = []
        for req in tqdm(requests, desc="generate_until", disable=disable_tqdm, leave=False):
            context, gen_kwargs = req.args
            kwargs = dict(gen_kwargs or {})
            until = kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            text = str(generate(
                self.model, [context], self.vector, self.strength, sae=self.sae, chat=False,
                max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                temperature=float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0,
                positions="all", check=False,
            )[0])
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            outputs.append(text)
        return outputs

    # ------------------------------------------------------------------------------- chat templates
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or self.model.cfg.model_name).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
