"""Preference-optimised steering: BiPO (dense) and YaPO (sparse, SAE latent space), one trainer.

Objective (per step, one direction ``d ∈ {−1, +1}`` drawn for the whole batch):

    logits = [log π_v(y_w|x) − log π_v(y_l|x)] − [log π_0(y_w|x) − log π_0(y_l|x)],  negated when d < 0
    loss   = −log σ(β · logits)                                                      (β = 0.1)

``π_v`` is the model steered by ``d·λ·v`` at one hook point (all positions by default), ``π_0`` the same model
unsteered; log-probs are sums over response tokens only. ``v`` starts at zero and is the only trainable tensor.

* BiPO: ``h' = h + d·λ·v`` (``v ∈ R^d_model``).
* YaPO: ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))`` with a frozen SAE (``v ∈ R^d_sae``).

The fast step (default) uses three facts: activations before the hook do not depend on ``v`` (computed once
without gradient, or cached), reference log-probs never change (computed once), and only positions that predict
response tokens need vocabulary logits. :func:`reference_step_loss` is the direct implementation (steered
forward + backward through the whole model, a separate unsteered forward, full logits at every position); the
tests check both give the same loss and gradient.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp_steer.chat import chat_tokens, pad_right, pad_token_id
from interp_steer.data.schemas import PreferenceExample, as_preference_examples
from interp_steer.errors import InterpSteerError
from interp_steer.io import save_safetensors_atomic, write_figure_atomic
from interp_steer.methods.activations import hook_layer
from interp_steer.models import model_fingerprint
from interp_steer.steering.interventions import (
    POLICIES,
    DenseIntervention,
    Intervention,
    SAEIntervention,
    StepState,
    steer,
)
from interp_steer.steering.vector import SteeringVector
from interp_steer.validation import dumps as _strict_dumps

METHODS = ("bipo", "yapo")


@dataclass
class PreferenceConfig:
    """Settings of :func:`train_vector` (stored in the artifact's ``config``).

    Sparsity options (YaPO; each off by default, so the paper's method stays exact):

    * ``support``: restrict ``v`` to a set of latents fixed before training — ``"active"`` (latents that fire
      on at least ``support_min_freq`` of the training response tokens, capped at the ``support_size`` most
      frequent) or ``"contrast"`` (the ``support_size`` latents with the largest ``|mean Enc(chosen) − mean
      Enc(rejected)|`` over response tokens).
    * ``prox_l1``: a proximal soft-threshold after every optimiser step, ``v ← sign(v)·max(|v| − prox_l1·lr, 0)``
      (in units of the current learning rate: Adam moves a coordinate by ≈ lr per step whatever its gradient's
      size, so a coordinate survives only where its gradient keeps one sign; an L1 term inside Adam would be
      normalised away).
    * ``top_k``: keep the ``top_k`` largest ``|v_i|`` after every step.
    * ``max_edit_norm``: cap the norm of the decoded edit ``‖v·W_dec‖`` (BiPO: ``‖v‖``) after every step.
    * ``final_top_k``: after training and selection, keep the ``final_top_k`` coordinates carrying most of the
      decoded effect (``|v_i|·‖W_dec[i]‖``; BiPO: ``|v_i|``) — :func:`interp_steer.methods.sparsify.top_k_truncate`.
      This is :data:`SPARSE_DEFAULT` (256 latents): the step-wise options above shrink ``v`` while it is being
      learned and, measured in the efficacy benchmark, left 19–42 latents that steer nothing.

    Symmetric steering (YaPO, off by default): ``symmetric=True`` trains and steers with
    ``h + ½·[e(λ) − e(−λ)]``, ``e(λ) = Dec(ReLU(s + λ·v)) − Dec(s)`` (the vector's ``operator="symmetric"``), so
    that ``d = −1`` applies exactly the opposite edit of ``d = +1``, as BiPO's does. In the formula itself every
    latent of ``v`` is switched on at one of the two signs, and SAE decoder rows share a common direction, so the
    ``+λ`` and ``−λ`` edits of a trained vector point largely the same way (``scripts/yapo_asymmetry.py``).

    Fluency (off by default): with ``fluency_weight`` ``γ`` each step's loss gains
    ``γ · mean over ±μ of max(0, c(±μ) − log fluency_max_ratio)``, where ``c(μ)`` is the mean per-token increase
    of the negative log-likelihood of general text (``fluency_texts`` of :func:`train_vector`; ``fluency_docs``
    documents of at most ``fluency_tokens`` tokens per micro-batch) steered at ``μ`` at every position
    (``μ = fluency_strength``, default the training ``strength``). ``exp c`` is the perplexity ratio that
    :func:`interp_steer.evaluation.calibrate_strength` bounds, so the term is that bound as a training penalty:
    zero while the vector keeps it at ``μ``. Both signs every step (the first-order change of the NLL flips
    with ``d``), and a hinge rather than the raw increase: measured on survival-instinct, a raw two-sided term
    (γ 2, μ 4) taught a vector that lowers general-text perplexity (×0.90 at λ 8) and moves no preference.

    Selection: with held-out pairs the vector kept is the one with the lowest held-out loss (mean of the
    ``+λ`` and ``−λ`` losses) among the evaluations (every ``eval_every`` steps, else every epoch, and at the
    end); ``select="last"`` keeps the last step. The choice is recorded in the artifact's ``metrics``.
    """

    method: str = "yapo"
    layer: int | None = None  # default: the SAE's layer (yapo) or the middle layer (bipo)
    hook: str | None = None  # default: blocks.{layer}.hook_resid_post (yapo: the SAE's hook)
    preset: str | None = None  # the PRESETS entry the settings started from (recorded only)
    lr: float = 5e-4
    weight_decay: float = 0.0
    beta: float = 0.1
    strength: float = 1.0  # λ during training
    epochs: int = 1
    batch_size: int = 4  # pairs per forward (micro-batch)
    grad_accum: int = 1  # micro-batches per optimiser step (effective batch = batch_size × grad_accum)
    max_steps: int | None = None  # optimiser steps
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio
    grad_clip: float = 1.0
    seed: int = 0
    positions: str = "all"
    l1_penalty: float = 0.0  # an L1 term in the loss (Adam normalises it away: prefer prox_l1)
    top_k: int | None = None
    prox_l1: float = 0.0
    support: str | None = None  # None, "active" or "contrast"
    support_size: int = 256
    support_min_freq: float = 0.01
    max_edit_norm: float | None = None
    symmetric: bool = False  # YaPO: train and steer with the symmetric operator (see above)
    final_top_k: int | None = None  # truncate the selected vector to its heaviest coordinates (see above)
    eval_fraction: float = 0.1  # held-out share when no eval set is given
    eval_every: int = 0  # steps between held-out evaluations; 0 = every epoch
    select: str = "best"  # "best" (lowest held-out loss) or "last"
    checkpoint_every: int = 0  # steps; 0 = no checkpoints
    save_every_epoch: bool = False
    fast: bool = True
    cache_prefix: bool | None = None  # keep hook activations in memory (None: when under cache_limit_gb)
    cache_limit_gb: float = 2.0
    reference_cache: str | None = None  # folder keeping the unsteered pass across runs (compute_reference_logp)
    max_length: int = 512
    fluency_weight: float = 0.0  # γ: weight of the general-text NLL increase (needs fluency_texts; see above)
    fluency_docs: int = 2  # general-text documents per micro-batch
    fluency_tokens: int = 128  # tokens per general-text document (after BOS)
    fluency_strength: float | None = None  # μ at which the fluency cost is measured (default: strength)
    fluency_max_ratio: float = 1.0  # perplexity ratio at ±μ below which the fluency term is zero


# The official YaPO/BiPO hyper-parameters (AdamW without weight decay, cosine schedule with 100 warm-up steps,
# clipping 1.0, β 0.1, 4 pairs × 8 accumulation = 32 pairs per optimiser step, 20 epochs), and a preset for
# a few hundred pairs on a CPU (fewer, larger steps; the kept vector is chosen on held-out pairs).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 5e-4, "weight_decay": 0.0, "warmup_steps": 100, "grad_clip": 1.0, "beta": 0.1,
              "batch_size": 4, "grad_accum": 8, "epochs": 20, "strength": 1.0, "positions": "all"},
    "small": {"lr": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.1, "grad_clip": 1.0, "beta": 0.1,
              "batch_size": 4, "grad_accum": 1, "epochs": 2, "strength": 1.0, "positions": "all"},
}
# The sparse YaPO default: the exact method, then its 256 heaviest latents (see PreferenceConfig's docstring and
# the README's efficacy table; the step-wise support + soft-threshold variant moved nothing there).
SPARSE_DEFAULT: dict[str, Any] = {"final_top_k": 256}


def preference_config(preset: str | None = None, **overrides: Any) -> PreferenceConfig:
    """A :class:`PreferenceConfig` from a preset (``"paper"``, ``"small"`` or ``None``) and field overrides."""
    cfg = PreferenceConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise InterpSteerError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        for key, value in PRESETS[preset].items():
            setattr(cfg, key, value)
        cfg.preset = preset
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise InterpSteerError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    return cfg


@dataclass
class TrainResult:
    vector: SteeringVector
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path | None = None


# ------------------------------------------------------------------------------------------------ data


@dataclass
class PreparedPairs:
    """Tokenized pairs: sequence ``2i`` is (prompt, chosen_i), ``2i+1`` is (prompt, rejected_i)."""

    ids: list[list[int]]
    response_start: list[int]
    instruction_end: list[int]
    ref_logp: torch.Tensor | None = None  # [2n] unsteered response log-probs
    prefix: list[torch.Tensor] | None = None  # per sequence [len, d]: activation at the hook (no v dependence)

    def __len__(self) -> int:
        return len(self.ids) // 2


def prepare_pairs(model: Any, examples: Sequence[PreferenceExample], max_length: int = 512) -> PreparedPairs:
    if not examples:
        raise InterpSteerError("no preference examples to train on")
    tok = model.tokenizer
    ids, starts, instr = [], [], []
    n_cut = 0
    for i, ex in enumerate(examples):
        if not ex.chosen or not ex.rejected:
            raise InterpSteerError(f"example {i} has an empty chosen or rejected answer")
        for answer in (ex.chosen, ex.rejected):
            ct = chat_tokens(tok, ex.prompt, answer)
            if len(ct.ids) > max_length:  # keep the response: cut the prompt's start
                cut = len(ct.ids) - max_length
                n_cut += 1
                if cut >= ct.response_start - 1:
                    raise InterpSteerError(f"example {i}: the response alone exceeds max_length={max_length}")
                ids.append(ct.ids[cut:])
                starts.append(ct.response_start - cut)
                instr.append(max(ct.instruction_end - cut, 0))
            else:
                ids.append(ct.ids)
                starts.append(ct.response_start)
                instr.append(ct.instruction_end)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(ids)} prompt+answer sequences exceed max_length={max_length} tokens: "
                      "their prompts were cut from the start (the answers are kept whole)", stacklevel=2)
    return PreparedPairs(ids, starts, instr)


def prepare_texts(model: Any, texts: Sequence[str], max_tokens: int = 128) -> PreparedPairs:
    """General-text documents for the fluency term: ``BOS + first max_tokens tokens`` each, every token after
    BOS scored (``response_start`` 1), as :func:`interp_steer.evaluation.text_perplexity` scores them."""
    from interp_steer.evaluation.preservation import _text_sequences

    ids = [ids for ids in _text_sequences(model.tokenizer, texts, max_tokens) if len(ids) > 1]
    if not ids:
        raise InterpSteerError("no fluency text has a token to score")
    return PreparedPairs(ids, [1] * len(ids), [0] * len(ids))


def _batch_tokens(model: Any, data: PreparedPairs, seqs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens, mask = pad_right([data.ids[j] for j in seqs], pad_token_id(model.tokenizer))
    starts = torch.tensor([data.response_start[j] for j in seqs])
    return tokens.to(model.cfg.device), mask.to(model.cfg.device), starts


def _policy_starts(data: PreparedPairs, seqs: Sequence[int], positions: str) -> torch.Tensor | None:
    if positions == "all":
        return None
    if positions == "after_instruction":
        return torch.tensor([data.instruction_end[j] for j in seqs])
    return torch.tensor([data.response_start[j] for j in seqs])


def _response_logp_from_logits(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                               starts: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each row's response tokens, from full logits [S, T, V]."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
    pos = torch.arange(1, tokens.shape[1], device=tokens.device)[None, :]
    keep = (pos >= starts.to(tokens.device)[:, None]) & mask[:, 1:].bool()
    return (logp * keep).sum(-1)


def _response_index(tokens: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor):
    """(row, position) of every position that predicts a response token, and the token it predicts."""
    lengths = mask.sum(-1)
    rows, cols = [], []
    for r in range(tokens.shape[0]):
        s, n = int(starts[r]), int(lengths[r])
        rows.append(torch.full((n - s,), r, dtype=torch.long))
        cols.append(torch.arange(s - 1, n - 1))
    row = torch.cat(rows).to(tokens.device)
    col = torch.cat(cols).to(tokens.device)
    return row, col, tokens[row, col + 1]


# ----------------------------------------------------------------------------------------------- steps


class _Forward:
    """Forward passes for one hook point: prefix (no grad), steered suffix, response-only logits."""

    def __init__(self, model: Any, hook: str):
        self.model = model
        self.hook = hook
        layer = hook_layer(hook)
        name = hook.split(".", 2)[2]
        self.split: int | None
        if name == "hook_resid_post":
            self.split = layer + 1
        elif name == "hook_resid_pre":
            self.split = layer
        else:
            self.split = None  # other hook points: hooks on a full forward (still response-only logits)

    @torch.no_grad()
    def prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, stop_at_layer=self.split)

    def response_logp(self, tokens: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor,
                      transform: Callable[[torch.Tensor], torch.Tensor] | None,
                      prefix: torch.Tensor | None = None) -> torch.Tensor:
        model = self.model
        if self.split is not None:
            h = self.prefix(tokens) if prefix is None else prefix
            if transform is not None:
                h = transform(h)
            if self.split < model.cfg.n_layers:
                h = model(h, start_at_layer=self.split, stop_at_layer=model.cfg.n_layers)
        else:
            fwd = [] if transform is None else [(self.hook, lambda act, hook: transform(act))]
            h = model.run_with_hooks(tokens, fwd_hooks=fwd, stop_at_layer=model.cfg.n_layers)
        row, col, target = _response_index(tokens, mask, starts)
        resid = model.ln_final(h[row, col])
        logp = torch.log_softmax(model.unembed(resid[None])[0].float(), -1)
        picked = logp.gather(-1, target[:, None])[:, 0]
        return torch.zeros(tokens.shape[0], device=picked.device, dtype=picked.dtype).index_add(0, row, picked)


def dpo_loss(logp_v: torch.Tensor, logp_0: torch.Tensor, direction: float, beta: float):
    """BiPO loss from interleaved (chosen, rejected) log-probs; returns (loss, logits)."""
    margin_v = logp_v[0::2] - logp_v[1::2]
    margin_0 = logp_0[0::2] - logp_0[1::2]
    logits = (margin_v - margin_0) * (1.0 if direction > 0 else -1.0)
    return -F.logsigmoid(beta * logits).mean(), logits


def make_intervention(method: str, v: torch.Tensor, sae: Any | None, *, symmetric: bool = False) -> Intervention:
    if method == "bipo":
        return DenseIntervention(v)
    if sae is None:
        raise InterpSteerError("YaPO needs an SAE (pass sae=)")
    return SAEIntervention(sae, v, sparse=False, symmetric=symmetric)


class _Counted(Intervention):
    """An intervention that counts its applications: the proof that each training forward was steered."""

    def __init__(self, inner: Intervention):
        self.inner = inner
        self.calls = 0

    def __call__(self, h: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(h, strength)


def _masked(intervention: Intervention, strength: float, starts: torch.Tensor | None):
    state = StepState(starts=starts)

    def transform(h: torch.Tensor) -> torch.Tensor:
        steered = intervention(h, strength)
        mask = state.mask(h.shape[0], h.shape[1], h.device)
        return steered if mask is None else torch.where(mask[..., None], steered, h)

    return transform


def length_buckets(lengths: Sequence[int], slack: float = 1.15) -> list[list[int]]:
    """Positions of ``lengths`` grouped into forward batches with little padding: sorted by length, a batch
    grows while its padded size (rows × longest) stays within ``slack`` × its real tokens.

    A (prompt, chosen) / (prompt, rejected) batch padded to its longest answer can be mostly padding (jailbreak:
    ≈ 250-token chosen against ≈ 50-token rejected sequences), and causal attention makes each row's result
    independent of the others, so the buckets give the same log-probs for less compute."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    buckets: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if current and (len(current) + 1) * n > slack * (real + n):
            buckets.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        buckets.append(current)
    return buckets


def _steered_logp(model: Any, data: PreparedPairs, seqs: Sequence[int], intervention: Intervention, hook: str,
                  strength: float, positions: str = "all") -> torch.Tensor:
    """Response log-prob sums of sequences ``seqs`` of ``data`` steered at ``strength`` (with grad), in the
    order of ``seqs``; batched by :func:`length_buckets`, the cached hook activations used when present."""
    fwd = _Forward(model, hook)
    parts, where = [], []
    for bucket in length_buckets([len(data.ids[j]) for j in seqs]):
        group = [seqs[b] for b in bucket]
        tokens, mask, starts = _batch_tokens(model, data, group)
        transform = _masked(intervention, strength, _policy_starts(data, group, positions))
        prefix = _cached_prefix(data, group, tokens.shape[1], tokens.device) if data.prefix is not None else None
        parts.append(fwd.response_logp(tokens, mask, starts, transform, prefix))
        where.extend(bucket)
    inverse = torch.empty(len(seqs), dtype=torch.long)
    inverse[torch.tensor(where)] = torch.arange(len(seqs))
    return torch.cat(parts)[inverse.to(parts[0].device)]


def fast_step_loss(model: Any, data: PreparedPairs, pair_idx: Sequence[int], intervention: Intervention,
                   hook: str, direction: float, strength: float, beta: float, positions: str = "all"):
    """Loss of one step with the optimised forward (prefix without grad, cached reference, response logits,
    sequences batched by length: :func:`length_buckets`)."""
    if data.ref_logp is None:
        raise InterpSteerError("reference log-probs missing: call compute_reference_logp first")
    seqs = [j for i in pair_idx for j in (2 * i, 2 * i + 1)]
    logp_v = _steered_logp(model, data, seqs, intervention, hook, direction * strength, positions)
    logp_0 = data.ref_logp[seqs].to(logp_v.device)
    return dpo_loss(logp_v, logp_0, direction, beta)


def fluency_loss(model: Any, docs: PreparedPairs, doc_idx: Sequence[int], intervention: Intervention, hook: str,
                 strength: float) -> torch.Tensor:
    """Mean per-token increase of the negative log-likelihood of general-text documents ``doc_idx`` (from
    :func:`prepare_texts`, reference log-probs computed) when steered at ``strength`` at every position:
    ``log(steered perplexity / unsteered perplexity)`` of those tokens."""
    if docs.ref_logp is None:
        raise InterpSteerError("reference log-probs of the fluency texts missing: call compute_reference_logp")
    seqs = list(doc_idx)
    logp_v = _steered_logp(model, docs, seqs, intervention, hook, strength)
    n_tokens = sum(len(docs.ids[j]) - 1 for j in seqs)
    return (docs.ref_logp[seqs].to(logp_v.device).sum() - logp_v.sum()) / n_tokens


def fluency_batch(seed: int, step: int, micro: int, n_docs: int, k: int) -> list[int]:
    """The general-text documents of micro-batch ``micro`` of step ``step``: a function of the seed and the
    position alone, so a resumed run draws the same ones."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 64 + micro)
    return torch.randperm(n_docs, generator=gen)[: min(k, n_docs)].tolist()


def reference_step_loss(model: Any, data: PreparedPairs, pair_idx: Sequence[int], intervention: Intervention,
                        hook: str, direction: float, strength: float, beta: float, positions: str = "all"):
    """The direct implementation: steered full forward (hooks, full logits) + a separate unsteered forward."""
    seqs = [j for i in pair_idx for j in (2 * i, 2 * i + 1)]
    tokens, mask, starts = _batch_tokens(model, data, seqs)
    with steer(model, {hook: intervention}, direction * strength, check=False, positions=positions,
               starts=_policy_starts(data, seqs, positions)):
        logp_v = _response_logp_from_logits(model(tokens), tokens, mask, starts)
    with torch.no_grad():
        logp_0 = _response_logp_from_logits(model(tokens), tokens, mask, starts)
    return dpo_loss(logp_v, logp_0, direction, beta)


def _cached_prefix(data: PreparedPairs, seqs: Sequence[int], width: int, device: Any) -> torch.Tensor:
    assert data.prefix is not None
    first = data.prefix[seqs[0]]
    out = torch.zeros(len(seqs), width, first.shape[-1], dtype=first.dtype, device=device)
    for row, j in enumerate(seqs):
        out[row, : data.prefix[j].shape[0]] = data.prefix[j].to(device)
    return out


def _weights_hash(model: Any) -> str:
    """SHA-256 of every parameter's bytes (names included): a reference cache never outlives a weight change."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            t = p.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def reference_cache_key(model: Any, data: PreparedPairs, hook: str, batch_size: int, keep_prefix: bool) -> str:
    """What the unsteered pass of ``data`` depends on: the model's weights and settings, the hook, every token id
    and response start, the batch size (padding) and the torch build."""
    h = hashlib.sha256()
    h.update(_strict_dumps({"fingerprint": model_fingerprint(model).to_dict(), "weights": _weights_hash(model),
                            "hook": hook, "batch_size": batch_size, "prefix": keep_prefix,
                            "torch": torch.__version__, "device": str(model.cfg.device),
                            "dtype": str(model.cfg.dtype)}).encode())
    for ids, start in zip(data.ids, data.response_start, strict=True):
        h.update(f"{start}:{','.join(map(str, ids))};".encode())
    return h.hexdigest()


def _load_reference(file: Path, key: str, data: PreparedPairs, keep: bool) -> bool:
    """Fill ``data.ref_logp`` (and ``data.prefix``) from a cache file written for ``key``; False if it cannot."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            if json.loads((fh.metadata() or {}).get("interp_steer_reference", "{}")).get("key") != key:
                return False
            ref = fh.get_tensor("ref_logp")
            lengths = fh.get_tensor("lengths").tolist() if keep else None
            flat = fh.get_tensor("prefix") if keep else None
    except Exception as exc:  # unreadable or truncated by hand: recompute and rewrite it
        warnings.warn(f"reference cache {file} could not be read ({exc}); recomputing it", stacklevel=3)
        return False
    n = len(data.ids)
    if ref.shape != (n,) or not torch.isfinite(ref).all():
        return False
    if keep:
        assert lengths is not None and flat is not None
        if lengths != [len(i) for i in data.ids] or flat.shape[0] != sum(lengths):
            return False
        data.prefix = list(torch.split(flat, lengths))
    else:
        data.prefix = None
    data.ref_logp = ref
    return True


def _save_reference(file: Path, key: str, data: PreparedPairs, keep: bool) -> None:
    assert data.ref_logp is not None
    tensors = {"ref_logp": data.ref_logp.contiguous()}
    if keep and data.prefix is not None:
        tensors["lengths"] = torch.tensor([p.shape[0] for p in data.prefix], dtype=torch.int64)
        tensors["prefix"] = torch.cat([p.cpu() for p in data.prefix]).contiguous()
    save_safetensors_atomic(tensors, file, metadata={"interp_steer_reference": _strict_dumps({"key": key})})


@torch.no_grad()
def compute_reference_logp(model: Any, data: PreparedPairs, hook: str, batch_size: int = 8,
                           progress: bool = False, cache_prefix: bool = False,
                           cache_dir: str | Path | None = None) -> torch.Tensor:
    """Unsteered response log-probs of every sequence (once); with ``cache_prefix`` also keep each
    sequence's activation at ``hook`` (it does not depend on ``v``) for the fast steps.

    ``cache_dir``: keep the result in ``<cache_dir>/reference-<key>.safetensors`` and read it back on a later
    call with the same model weights, hook, token ids and settings (:func:`reference_cache_key`), so that a
    resumed run skips the pass (≈ 20 min for 1,000 jailbreak pairs on one CPU thread). A file made for
    anything else is never used."""
    fwd = _Forward(model, hook)
    keep = cache_prefix and fwd.split is not None
    file: Path | None = None
    key = ""
    if cache_dir is not None:
        key = reference_cache_key(model, data, hook, batch_size, keep)
        file = Path(cache_dir) / f"reference-{key[:24]}.safetensors"
        if file.is_file() and _load_reference(file, key, data, keep):
            return data.ref_logp  # type: ignore[return-value]
    n = len(data.ids)
    ref = torch.zeros(n)
    prefix: list[torch.Tensor | None] = [None] * n
    order = sorted(range(n), key=lambda i: (len(data.ids[i]), i))  # batches of similar length: little padding
    for start in tqdm(range(0, n, batch_size), desc="reference log-probs", disable=not progress, leave=False):
        seqs = order[start : start + batch_size]
        tokens, mask, starts = _batch_tokens(model, data, seqs)
        h = fwd.prefix(tokens) if fwd.split is not None else None
        ref[torch.tensor(seqs)] = fwd.response_logp(tokens, mask, starts, None, h).cpu().float()
        if keep and h is not None:
            for row, j in enumerate(seqs):
                prefix[j] = h[row, : len(data.ids[j])].clone()
    data.ref_logp = ref
    data.prefix = [p for p in prefix if p is not None] if keep else None
    if file is not None:
        _save_reference(file, key, data, keep)
    return data.ref_logp


def _prefix_fits(model: Any, data: PreparedPairs, cfg: PreferenceConfig) -> bool:
    if cfg.cache_prefix is not None:
        return cfg.cache_prefix
    n_tokens = sum(len(i) for i in data.ids)
    return n_tokens * model.cfg.d_model * 4 < cfg.cache_limit_gb * 2**30


# ------------------------------------------------------------------------------------------ schedule/rng


def lr_at(step: int, total: int, base: float, warmup_ratio: float, warmup_steps: int | None = None) -> float:
    """Linear warm-up then cosine decay to zero (a function of the step alone: trivially resumable).

    ``warmup_steps`` (else ``round(total · warmup_ratio)``) steps rise linearly to ``base``; step ``warmup``
    is at ``base``; the cosine reaches zero at ``total``."""
    warmup = warmup_steps if warmup_steps is not None else int(round(total * warmup_ratio))
    warmup = min(warmup, total)
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def direction_at(seed: int, step: int) -> float:
    """d ∈ {−1, +1} for a step: from a generator seeded by (seed, step), so resuming reproduces it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return 1.0 if torch.rand((), generator=g).item() < 0.5 else -1.0


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    return torch.randperm(n, generator=g).tolist()


# -------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_pairs(model: Any, data: PreparedPairs, intervention: Intervention, hook: str, strength: float,
                   beta: float, positions: str = "all", batch_size: int = 8) -> dict[str, float]:
    """Mean loss and preference accuracy on held-out pairs at +λ and −λ.

    Accuracy at +λ: share of pairs whose chosen-vs-rejected margin grows under steering (shrinks at −λ).
    """
    out: dict[str, float] = {}
    for sign, name in ((1.0, "plus"), (-1.0, "minus")):
        losses, hits, shift = [], [], []
        for start in range(0, len(data), batch_size):
            idx = list(range(start, min(start + batch_size, len(data))))
            loss, logits = fast_step_loss(model, data, idx, intervention, hook, sign, strength, beta, positions)
            losses.append(float(loss) * len(idx))
            hits.extend((logits > 0).float().tolist())
            shift.extend((logits * sign).tolist())
        out[f"loss_{name}"] = sum(losses) / len(data)
        out[f"pref_acc_{name}"] = sum(hits) / len(hits)
        out[f"margin_shift_{name}"] = sum(shift) / len(shift)
    return out


# ---------------------------------------------------------------------------------------- checkpointing


def _save_checkpoint(path: Path, v: torch.Tensor, opt: torch.optim.Optimizer, step: int, epoch: int,
                     order: list[int], cfg: PreferenceConfig, best: dict[str, Any] | None = None) -> None:
    state = opt.state[opt.param_groups[0]["params"][0]]
    tensors = {"v": v.detach().cpu().contiguous()}
    if state:
        tensors.update(exp_avg=state["exp_avg"].cpu().contiguous(), exp_avg_sq=state["exp_avg_sq"].cpu().contiguous())
    if best is not None:
        tensors["best_v"] = best["v"].detach().cpu().contiguous()
    meta = {"step": step, "epoch": epoch, "order": order, "adam_step": float(state["step"]) if state else 0.0,
            "config": asdict(cfg), "torch_rng": torch.get_rng_state().tolist(),
            "best": None if best is None else {"step": best["step"], "value": best["value"]}}
    save_safetensors_atomic(tensors, path / "checkpoint.safetensors", metadata={"interp_steer_ckpt": _strict_dumps(meta)})


# settings that do not change the trajectory: a run may resume with other values
_RESUME_FREE = frozenset({"checkpoint_every", "save_every_epoch", "fast", "cache_prefix", "cache_limit_gb", "preset",
                          "reference_cache"})


def _check_resumable(saved: dict[str, Any], cfg: PreferenceConfig, where: Path) -> None:
    """Refuse to resume a checkpoint whose settings differ from ``cfg`` (a field the checkpoint predates counts
    as its default)."""
    now, defaults = asdict(cfg), asdict(PreferenceConfig())
    diff = [k for k in now if k not in _RESUME_FREE and saved.get(k, defaults[k]) != now[k]]
    if diff:
        changes = ", ".join(f"{k} {saved.get(k, defaults[k])!r} -> {now[k]!r}" for k in diff)
        raise InterpSteerError(f"{where} was made with other settings ({changes}): resume with the same settings, "
                               "or use another output_dir (or resume=False) to start afresh")


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    from safetensors import safe_open

    file = path / "checkpoint.safetensors"
    if not file.is_file():
        return None
    with safe_open(str(file), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["interp_steer_ckpt"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return tensors, meta


# ---------------------------------------------------------------------------------------------- trainer


def _resolve(model: Any, cfg: PreferenceConfig, sae: Any | None) -> str:
    if cfg.method not in METHODS:
        raise InterpSteerError(f"unknown method {cfg.method!r}; expected one of {METHODS}")
    if cfg.positions not in POLICIES:
        raise InterpSteerError(f"unknown position policy {cfg.positions!r}; expected one of {POLICIES}")
    if cfg.method == "yapo":
        if sae is None:
            raise InterpSteerError("YaPO trains in SAE latent space: pass sae= (e.g. interp_steer.load_sae())")
        from interp_steer.saes import validate_sae

        validate_sae(sae, model)
        hook = sae.cfg.metadata.hook_name
        if cfg.hook not in (None, hook):
            raise InterpSteerError(f"YaPO hook {cfg.hook!r} differs from the SAE's hook {hook!r}")
        if cfg.layer is not None and hook_layer(hook) != cfg.layer:
            raise InterpSteerError(f"layer={cfg.layer} but the SAE reads {hook}")
        return hook
    if cfg.hook is not None:
        if cfg.hook not in model.hook_dict:
            raise InterpSteerError(f"hook {cfg.hook!r} does not exist in {model.cfg.model_name}")
        return cfg.hook
    layer = cfg.layer if cfg.layer is not None else model.cfg.n_layers // 2
    if not 0 <= layer < model.cfg.n_layers:
        raise InterpSteerError(f"layer {layer} out of range (model has {model.cfg.n_layers} layers)")
    return f"blocks.{layer}.hook_resid_post"


def split_examples(examples: Sequence[PreferenceExample], fraction: float, seed: int):
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = int(round(len(examples) * fraction))
    if n_eval == 0 or n_eval >= len(examples):
        return list(examples), []
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def train_vector(
    model: Any,
    data: Sequence[PreferenceExample],
    method: str = "yapo",
    *,
    sae: Any | None = None,
    eval_data: Sequence[PreferenceExample] | None = None,
    output_dir: str | Path | None = None,
    config: PreferenceConfig | None = None,
    preset: str | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    fluency_texts: Sequence[str] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a BiPO (``method="bipo"``) or YaPO (``method="yapo"``, needs ``sae``) steering vector.

    ``preset`` (``"paper"``, ``"small"``; see :data:`PRESETS`) sets the starting hyper-parameters;
    ``overrides`` set :class:`PreferenceConfig` fields (``layer=``, ``lr=``, ``epochs=``, ``batch_size=``,
    ``prox_l1=``, ``support=``...). The returned vector is the one with the lowest held-out loss among the
    evaluations (``select="best"``, the default) or the last one (``select="last"``); ``metrics["selected"]``
    records which. With ``output_dir``: per-step ``log.jsonl``, ``curves.html``, ``vector.safetensors`` (+ per
    epoch with ``save_every_epoch``) and, with ``checkpoint_every``, a checkpoint from which a killed run resumes
    exactly. ``callback(step, record)`` is called after every optimisation step (and after its checkpoint).
    ``fluency_texts``: general-text documents for the fluency term (``fluency_weight=``; see
    :class:`PreferenceConfig`); keep them apart from the texts the strength is later calibrated on.
    """
    if config is not None and preset is not None:
        raise InterpSteerError("pass either config= or preset=, not both")
    cfg = config or preference_config(preset)
    cfg.method = method
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise InterpSteerError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    _check_config(cfg)
    if cfg.fluency_weight > 0 and not fluency_texts:
        raise InterpSteerError("fluency_weight > 0 needs fluency_texts (general-text documents)")
    if fluency_texts and cfg.fluency_weight == 0:
        raise InterpSteerError("fluency_texts were given but fluency_weight is 0: set fluency_weight= to use them")
    data = as_preference_examples(data)
    if eval_data is not None:
        eval_data = as_preference_examples(eval_data)
    hook = _resolve(model, cfg, sae)
    ckpt_dir = Path(output_dir) / "checkpoint" if output_dir else None
    loaded = _load_checkpoint(ckpt_dir) if (ckpt_dir is not None and resume) else None
    if ckpt_dir is not None and loaded is not None:  # before any forward pass: other settings are refused
        _check_resumable(loaded[1].get("config", {}), cfg, ckpt_dir)
    if eval_data is None:
        train_ex, eval_ex = split_examples(data, cfg.eval_fraction, cfg.seed)
    else:
        train_ex, eval_ex = list(data), list(eval_data)
    train = prepare_pairs(model, train_ex, cfg.max_length)
    held = prepare_pairs(model, eval_ex, cfg.max_length) if eval_ex else None
    cache = cfg.reference_cache
    compute_reference_logp(model, train, hook, progress=progress, cache_prefix=_prefix_fits(model, train, cfg),
                           cache_dir=cache)
    if held is not None:
        compute_reference_logp(model, held, hook, cache_prefix=_prefix_fits(model, held, cfg), cache_dir=cache)
    docs = prepare_texts(model, fluency_texts, cfg.fluency_tokens) if fluency_texts else None
    if docs is not None:
        compute_reference_logp(model, docs, hook, cache_prefix=_prefix_fits(model, docs, cfg), cache_dir=cache)

    yapo = cfg.method == "yapo"
    width = int(sae.cfg.d_sae) if sae is not None and yapo else int(model.cfg.d_model)
    device = model.cfg.device
    v = torch.zeros(width, device=device, dtype=torch.float32, requires_grad=True)
    support = latent_support(model, sae, train, hook, cfg) if (yapo and cfg.support) else None
    opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay)
    intervention = _Counted(make_intervention(cfg.method, v, sae, symmetric=cfg.symmetric))
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(train) / per_step)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    decoder = sae.W_dec.detach().float() if (yapo and sae is not None) else None

    out_dir = Path(output_dir) if output_dir else None
    step = 0
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None  # {"step", "value", "v"}
    resumed_from: int | None = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if loaded is not None:
        tensors, meta = loaded
        with torch.no_grad():
            v.copy_(tensors["v"])
        if "exp_avg" in tensors:
            opt.state[v] = {"step": torch.tensor(meta["adam_step"]), "exp_avg": tensors["exp_avg"].to(device),
                            "exp_avg_sq": tensors["exp_avg_sq"].to(device)}
        step = resumed_from = int(meta["step"])
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        if "best_v" in tensors and meta.get("best") is not None:
            best = {**meta["best"], "v": tensors["best_v"].to(device)}
        if out_dir:
            history, evals = _read_log(out_dir / "log.jsonl", step)
    elif out_dir is not None:
        (out_dir / "log.jsonl").write_text("")

    step_fn = fast_step_loss if cfg.fast else reference_step_loss
    log_fh = open(out_dir / "log.jsonl", "a") if out_dir else None  # noqa: SIM115
    bar = tqdm(total=total, initial=step, desc=f"{cfg.method} L{hook_layer(hook)}", disable=not progress)
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            order = epoch_order(cfg.seed, epoch, len(train))
            idx = order[offset * per_step : (offset + 1) * per_step]
            direction = direction_at(cfg.seed, step)
            lr = lr_at(step, total, cfg.lr, cfg.warmup_ratio, cfg.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            losses, all_logits = [], []
            fluency: list[tuple[float, float]] = []
            micro = [idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
            fired = intervention.calls
            for m, chunk in enumerate(micro):  # gradient accumulation: the mean over the step's pairs
                before = intervention.calls
                loss, logits = step_fn(model, train, chunk, intervention, hook, direction, cfg.strength, cfg.beta,
                                       cfg.positions)
                if intervention.calls == before:  # every micro-batch forward must have been steered
                    raise InterpSteerError(f"training step {step + 1} ran without steering: the intervention at "
                                           f"{hook} was never applied in its forward pass")
                part = loss * (len(chunk) / len(idx))
                if cfg.l1_penalty:
                    part = part + cfg.l1_penalty * v.abs().sum() / len(micro)
                if docs is not None:
                    pick = fluency_batch(cfg.seed, step, m, len(docs.ids), cfg.fluency_docs)
                    mu = cfg.strength if cfg.fluency_strength is None else cfg.fluency_strength
                    costs = [fluency_loss(model, docs, pick, intervention, hook, sign * mu) for sign in (1, -1)]
                    hinge = (torch.relu(costs[0] - math.log(cfg.fluency_max_ratio))
                             + torch.relu(costs[1] - math.log(cfg.fluency_max_ratio))) / 2
                    part = part + cfg.fluency_weight * hinge / len(micro)
                    fluency.append((float((costs[0] + costs[1]).detach()) / 2, float(hinge.detach())))
                part.backward()
                losses.append(float(loss.detach()) * len(chunk))
                all_logits.append(logits.detach())
            if cfg.grad_clip:
                grad_norm = float(torch.nn.utils.clip_grad_norm_([v], cfg.grad_clip))
            else:
                grad_norm = float(v.grad.norm()) if v.grad is not None else 0.0
            opt.step()
            _constrain(v, cfg, lr, support, decoder)
            step += 1
            logits = torch.cat(all_logits)
            record = {"step": step, "epoch": epoch, "loss": sum(losses) / len(idx),
                      "pref_acc": float((logits > 0).float().mean()), "direction": direction, "lr": lr,
                      "grad_norm": grad_norm, "v_norm": float(v.detach().norm()),
                      "nnz": int((v.detach() != 0).sum()), "hook_calls": intervention.calls - fired,
                      "seconds": time.perf_counter() - t0}
            if fluency:  # mean NLL increase per general-text token (mean of +μ and −μ), and the hinge penalised
                record["fluency_nll_increase"] = sum(c for c, _ in fluency) / len(fluency)
                record["fluency_penalty"] = sum(h for _, h in fluency) / len(fluency)
            history.append(record)
            if log_fh:
                log_fh.write(_strict_dumps(record) + "\n")
                log_fh.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['pref_acc']:.2f}")
            epoch_done = step % steps_per_epoch == 0 or step == total
            due = (step % cfg.eval_every == 0 or step == total) if cfg.eval_every else epoch_done
            if due and held is not None:
                ev = {"step": step, "epoch": epoch, "nnz": record["nnz"],
                      **evaluate_pairs(model, held, make_intervention(cfg.method, v.detach(), sae,
                                                                      symmetric=cfg.symmetric), hook,
                                       cfg.strength, cfg.beta, cfg.positions)}
                ev["loss"] = (ev["loss_plus"] + ev["loss_minus"]) / 2
                evals.append(ev)
                if best is None or ev["loss"] < best["value"]:
                    best = {"step": step, "value": ev["loss"], "v": v.detach().clone()}
                if log_fh:
                    log_fh.write(_strict_dumps({"eval": ev}) + "\n")
                    log_fh.flush()
            if epoch_done and cfg.save_every_epoch and out_dir is not None:
                _artifact(model, sae, cfg, hook, v, history, evals).save(out_dir / f"vector_epoch{epoch + 1}")
            if ckpt_dir is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt_dir, v, opt, step, epoch, order, cfg, best)
            if callback is not None:
                callback(step, record)
    finally:
        bar.close()
        if log_fh:
            log_fh.close()
    if cfg.select == "best" and best is not None:
        kept, selected = best["v"], {"step": best["step"], "criterion": "heldout_loss", "value": best["value"]}
    else:
        reason = "select='last'" if cfg.select == "last" else "no held-out pairs"
        kept, selected = v.detach(), {"step": step, "criterion": "last", "reason": reason}
    if resumed_from is not None:
        selected["resumed_from_step"] = resumed_from
    if support is not None:
        selected["support_size"] = int(support.numel())
    if docs is not None:
        selected["fluency_texts"] = len(docs.ids)
    vector = _artifact(model, sae, cfg, hook, kept, history, evals, selected)
    if cfg.final_top_k is not None:
        from interp_steer.methods.sparsify import top_k_truncate

        vector = top_k_truncate(vector, cfg.final_top_k, sae=sae if yapo else None)
    if out_dir is not None:
        vector.save(out_dir / "vector")
        write_curves(history, evals, out_dir / "curves.html", title=f"{cfg.method} on {hook}")
    return TrainResult(vector, history, evals, out_dir)


def _check_config(cfg: PreferenceConfig) -> None:
    def bad(msg: str) -> InterpSteerError:
        return InterpSteerError(f"invalid training option: {msg}")

    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise bad(f"lr must be a positive finite number, got {cfg.lr}")
    for name in ("batch_size", "grad_accum", "epochs"):
        if int(getattr(cfg, name)) < 1:
            raise bad(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise bad(f"max_steps must be >= 1, got {cfg.max_steps}")
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise bad(f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.select not in ("best", "last"):
        raise bad(f"select must be 'best' or 'last', got {cfg.select!r}")
    if cfg.support not in (None, "active", "contrast"):
        raise bad(f"support must be None, 'active' or 'contrast', got {cfg.support!r}")
    if cfg.support is not None and cfg.method != "yapo":
        raise bad("support= restricts SAE latents: YaPO only")
    if cfg.support_size < 1:
        raise bad(f"support_size must be >= 1, got {cfg.support_size}")
    if not (math.isfinite(cfg.prox_l1) and cfg.prox_l1 >= 0):
        raise bad(f"prox_l1 must be >= 0, got {cfg.prox_l1}")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise bad(f"top_k must be >= 1, got {cfg.top_k}")
    if cfg.final_top_k is not None and (isinstance(cfg.final_top_k, bool) or not isinstance(cfg.final_top_k, int)
                                        or cfg.final_top_k < 1):
        raise bad(f"final_top_k must be a positive integer, got {cfg.final_top_k!r}")
    if cfg.max_edit_norm is not None and not (math.isfinite(cfg.max_edit_norm) and cfg.max_edit_norm > 0):
        raise bad(f"max_edit_norm must be a positive finite number, got {cfg.max_edit_norm}")
    if not isinstance(cfg.symmetric, bool):
        raise bad(f"symmetric must be True or False, got {cfg.symmetric!r}")
    if cfg.symmetric and cfg.method != "yapo":
        raise bad("symmetric= is an SAE-latent operator: YaPO only (BiPO's edit is symmetric already)")
    if cfg.eval_every < 0:
        raise bad(f"eval_every must be >= 0, got {cfg.eval_every}")
    if cfg.reference_cache is not None and Path(cfg.reference_cache).exists() and not Path(cfg.reference_cache).is_dir():
        raise bad(f"reference_cache must be a folder, got the file {cfg.reference_cache}")
    if isinstance(cfg.fluency_weight, bool) or not isinstance(cfg.fluency_weight, (int, float)) or not (
            math.isfinite(cfg.fluency_weight) and cfg.fluency_weight >= 0):
        raise bad(f"fluency_weight must be a finite number >= 0, got {cfg.fluency_weight!r}")
    if int(cfg.fluency_docs) < 1:
        raise bad(f"fluency_docs must be >= 1, got {cfg.fluency_docs}")
    if int(cfg.fluency_tokens) < 1:
        raise bad(f"fluency_tokens must be >= 1, got {cfg.fluency_tokens}")
    if cfg.fluency_strength is not None and not (math.isfinite(cfg.fluency_strength) and cfg.fluency_strength > 0):
        raise bad(f"fluency_strength must be a positive finite number, got {cfg.fluency_strength}")
    if not (math.isfinite(cfg.fluency_max_ratio) and cfg.fluency_max_ratio >= 1.0):
        raise bad(f"fluency_max_ratio must be a finite perplexity ratio >= 1, got {cfg.fluency_max_ratio}")
    for name, low, strict in (("strength", None, False), ("beta", 0.0, True), ("weight_decay", 0.0, False),
                              ("grad_clip", 0.0, False), ("warmup_ratio", 0.0, False), ("eval_fraction", 0.0, False),
                              ("l1_penalty", 0.0, False)):
        value = getattr(cfg, name)
        if value is None and name == "grad_clip":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                low is not None and (value <= low if strict else value < low)):
            raise bad(f"{name} must be a finite number{'' if low is None else (' > ' if strict else ' >= ') + str(low)}, "
                      f"got {value}")
    if cfg.strength == 0:
        raise bad("strength must be non-zero (it scales the vector during training)")
    if not cfg.warmup_ratio < 1 or not cfg.eval_fraction < 1:
        raise bad(f"warmup_ratio and eval_fraction must be < 1, got {cfg.warmup_ratio} and {cfg.eval_fraction}")
    if cfg.max_length < 8:
        raise bad(f"max_length must be >= 8 tokens, got {cfg.max_length}")


def _constrain(v: torch.Tensor, cfg: PreferenceConfig, lr: float, support: torch.Tensor | None,
               decoder: torch.Tensor | None) -> None:
    """The sparsity and norm constraints after an optimiser step (support, soft-threshold, top-k, edit cap)."""
    with torch.no_grad():
        if support is not None:
            keep = torch.zeros_like(v, dtype=torch.bool)
            keep[support] = True
            v.masked_fill_(~keep, 0.0)
        if cfg.prox_l1:
            v.copy_(torch.sign(v) * torch.clamp(v.abs() - cfg.prox_l1 * lr, min=0.0))
        if cfg.top_k is not None:
            _project_top_k(v, cfg.top_k)
        if cfg.max_edit_norm is not None:
            edit = float((v @ decoder).norm()) if decoder is not None else float(v.norm())
            if edit > cfg.max_edit_norm:
                v.mul_(cfg.max_edit_norm / edit)


@torch.no_grad()
def latent_support(model: Any, sae: Any, data: PreparedPairs, hook: str, cfg: PreferenceConfig,
                   batch_size: int = 8) -> torch.Tensor:
    """Latent indices YaPO may use (``cfg.support``), from the SAE codes of the training response tokens."""
    fwd = _Forward(model, hook)
    d_sae = int(sae.cfg.d_sae)
    fires = torch.zeros(2, d_sae)  # chosen, rejected: number of response tokens where the latent fires
    sums = torch.zeros(2, d_sae)
    counts = [0, 0]
    for start in range(0, len(data.ids), batch_size):
        seqs = list(range(start, min(start + batch_size, len(data.ids))))
        tokens, mask, starts = _batch_tokens(model, data, seqs)
        if data.prefix is not None:
            h = _cached_prefix(data, seqs, tokens.shape[1], tokens.device)
        elif fwd.split is not None:
            h = fwd.prefix(tokens)
        else:
            _, cache = model.run_with_cache(tokens, names_filter=[hook])
            h = cache[hook]
        codes = sae.encode(h.to(sae.dtype)).float().cpu()
        for row, j in enumerate(seqs):
            n = int(mask[row].sum())
            c = codes[row, int(starts[row]) : n]
            side = j % 2
            fires[side] += (c > 0).float().sum(0)
            sums[side] += c.sum(0)
            counts[side] += c.shape[0]
    freq = fires.sum(0) / max(1, sum(counts))
    if cfg.support == "active":
        active = torch.nonzero(freq >= cfg.support_min_freq).flatten()
        if active.numel() > cfg.support_size:
            active = active[freq[active].topk(cfg.support_size).indices]
        idx = active
    else:
        contrast = (sums[0] / max(1, counts[0]) - sums[1] / max(1, counts[1])).abs()
        k = min(cfg.support_size, int((contrast > 0).sum()))
        idx = contrast.topk(k).indices if k else torch.zeros(0, dtype=torch.long)
    if idx.numel() == 0:
        raise InterpSteerError(f"support={cfg.support!r} selected no latents on the training responses")
    return torch.sort(idx).values.to(model.cfg.device)


def _project_top_k(v: torch.Tensor, k: int) -> None:
    with torch.no_grad():
        if k < v.numel():
            keep = v.abs().topk(k).indices
            mask = torch.zeros_like(v, dtype=torch.bool)
            mask[keep] = True
            v.masked_fill_(~mask, 0.0)


def _read_log(path: Path, upto: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and eval records up to step ``upto`` (a resumed run rewrites the log without the lost tail)."""
    if not path.is_file():
        return [], []
    rows, evals = [], []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if "step" in row and row["step"] <= upto:
            rows.append(row)
        elif "eval" in row and row["eval"].get("step", upto + 1) <= upto:
            rows.append(row)
            evals.append(row["eval"])
    path.write_text("".join(_strict_dumps(r) + "\n" for r in rows))
    return [r for r in rows if "step" in r], evals


def _artifact(model: Any, sae: Any | None, cfg: PreferenceConfig, hook: str, v: torch.Tensor,
              history: list[dict[str, Any]], evals: list[dict[str, Any]],
              selected: dict[str, Any] | None = None) -> SteeringVector:
    from interp_steer.saes import sae_reference

    tensor = v.detach().float().cpu().clone()
    last = history[-1] if history else {}
    metrics = {"steps": len(history), "final_loss": last.get("loss"), "evals": evals,
               "nnz": int((tensor != 0).sum()),
               # applications of the steering intervention over training (per step: one per forward batch, i.e. per length bucket of each micro-batch, fluency forwards included)
               "hook_calls": {hook: sum(int(r.get("hook_calls", 0)) for r in history)}}
    if selected is not None:
        metrics["selected"] = selected
    if cfg.method == "yapo":
        return SteeringVector("yapo", "sae", {hook: {"latent": tensor}}, model_fingerprint(model).to_dict(),
                              sae=sae_reference(sae).to_dict(), positions=cfg.positions, config=asdict(cfg),
                              metrics=metrics, operator="symmetric" if cfg.symmetric else "add")
    return SteeringVector("bipo", "dense", {hook: {"vector": tensor}}, model_fingerprint(model).to_dict(),
                          positions=cfg.positions, config=asdict(cfg), metrics=metrics)


def write_curves(history: list[dict[str, Any]], evals: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Offline plotly HTML (plotly.js inlined) of loss and preference accuracy per step."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "preference accuracy"))
    steps = [r["step"] for r in history]
    fig.add_trace(go.Scatter(x=steps, y=[r["loss"] for r in history], name="train loss"), row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[r["pref_acc"] for r in history], name="train acc"), row=1, col=2)
    for sign in ("plus", "minus"):
        if evals:
            es = [e["step"] for e in evals]
            fig.add_trace(go.Scatter(x=es, y=[e[f"loss_{sign}"] for e in evals], mode="lines+markers",
                                     name=f"eval loss {sign}"), row=1, col=1)
            fig.add_trace(go.Scatter(x=es, y=[e[f"pref_acc_{sign}"] for e in evals], mode="lines+markers",
                                     name=f"eval acc {sign}"), row=1, col=2)
    fig.update_layout(title=title)
    write_figure_atomic(fig, path)
