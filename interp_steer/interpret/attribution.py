"""Feature attribution for steering vectors: which SAE latents carry a vector's effect, and how much of it.

Three questions, one module:

1. **Usage** (:func:`latent_usage`) — which latents an SAE-latent vector (YaPO, SAS) contains: its entries ranked by
   their decoded contribution norm ``|v_i|·‖d_i‖`` (``d_i`` = the decoder direction the SAE actually adds per
   unit of latent ``i``; ``W_dec[i]``, or ``W_dec[i]/‖W_dec[i]‖`` for SAEs with ``rescale_acts_by_decoder_norm``),
   each one's share, and how many latents carry 50 % / 90 % of the total.
2. **Attribution** (:func:`attribute`) — how each latent moves an evaluation metric ``M`` (any callable that runs
   the model and returns a scalar, or a :class:`SequenceMetric`: preference log-prob margin, MCQ correct-option
   margin). The steered latents are ``s̃ = ReLU(s + λv)``; the estimate for latent ``i`` is gradient × change,

       a_i = Σ_positions ∂M/∂s̃_i · Δs̃_i,      Δs̃ = ReLU(s + λv) − s,

   with the gradient taken at the steered point (``steps=1``) or averaged along the straight path from ``s`` to
   ``s̃`` (``steps > 1``: integrated gradients, whose sum equals the total effect ``M(s̃) − M(s)``). It is
   checked by ablation: set ``v_i = 0``, re-measure ``M``; the effect of latent ``i`` is
   ``M(v) − M(v without i)``. Both are reported with their agreement (Spearman rank correlation, top-k overlap,
   sign agreement). For a metric that is linear in the latents the two are equal (tested).
   Dense vectors (CAA, BiPO) are attributed to the atoms of their decoder decomposition
   ``v ≈ Σ c_j d̂_j + r`` (ablation: subtract ``c_j d̂_j`` from ``v``).
3. **Projection and comparison** — :func:`dense_projection` names the decoder directions a dense vector aligns
   with (cosine with each unit decoder row, a greedy orthogonal-matching-pursuit decomposition, and the encoder's
   linear read ``v @ W_enc``); :func:`compare_vectors` gives Jaccard overlap of top latents and cosine similarity
   matrices across vectors (e.g. one per country), with :func:`write_compare_html` for an offline heatmap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp_steer.chat import chat_tokens, pad_right, pad_token_id
from interp_steer.data.schemas import MCQItem, PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.io import write_figure_atomic
from interp_steer.steering.interventions import (
    POLICIES,
    DenseIntervention,
    Intervention,
    SAEIntervention,
    StepState,
    resolve_starts,
    steer,
)
from interp_steer.steering.vector import SteeringVector

Metric = Callable[[Any], torch.Tensor]
"""A plain metric: ``metric(model) -> scalar tensor``; it runs the model (steering hooks are already attached)."""

# ---------------------------------------------------------------------------------------------------- usage


def decoder_directions(sae: Any) -> Float[torch.Tensor, "d_sae d_in"]:
    """What the SAE adds to the residual stream per unit of each latent (``W_dec``, unit rows for SAEs that
    rescale activations by the decoder norm)."""
    w = sae.W_dec.detach().float()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return w


def encoder_directions(sae: Any) -> Float[torch.Tensor, "d_in d_sae"]:
    """The encoder's linear read of each latent's pre-activation (bias excluded)."""
    w = sae.W_enc.detach().float()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        w = w * sae.W_dec.detach().float().norm(dim=-1)[None, :]
    return w


@dataclass
class LatentShares:
    """Latents ranked by contribution: ``order[r]`` is the latent at rank ``r`` and ``cumulative[r]`` the share
    of the total contribution carried by ranks ``0..r``."""

    contribution: Float[torch.Tensor, " d_sae"]
    order: torch.Tensor
    cumulative: Float[torch.Tensor, " d_sae"]
    total: float

    def n_for(self, share: float) -> int:
        """How many top latents carry at least ``share`` of the total (0 for an all-zero vector)."""
        if self.total <= 0:
            return 0
        below = int((self.cumulative < share - 1e-6).sum())
        return min(below + 1, int(self.cumulative.numel()))


def latent_shares(latent: Float[torch.Tensor, " d_sae"], decoder: Float[torch.Tensor, "d_sae d_in"]) -> LatentShares:
    """Contribution ``|v_i|·‖d_i‖`` of each entry of a latent-space vector and the cumulative shares."""
    v = latent.detach().float().to(decoder.device)
    if v.numel() != decoder.shape[0]:
        raise InterpSteerError(f"vector has {v.numel()} latents but the SAE has {decoder.shape[0]}")
    contribution = v.abs() * decoder.float().norm(dim=-1)
    total = float(contribution.sum())
    order = contribution.argsort(descending=True, stable=True)
    cumulative = contribution[order].cumsum(0) / max(total, 1e-30)
    return LatentShares(contribution.cpu(), order.cpu(), cumulative.cpu(), total)


def _sae_latent(vector: SteeringVector, sae: Any) -> torch.Tensor:
    if vector.kind != "sae":
        raise InterpSteerError(f"{vector.method} is a {vector.kind} vector, not an SAE-latent one")
    v = vector.vector().detach().float()
    if v.numel() != int(sae.cfg.d_sae):
        raise InterpSteerError(f"latent vector has {v.numel()} entries but the SAE has {sae.cfg.d_sae}")
    return v


def _dense_direction(vector: SteeringVector, sae: Any) -> tuple[str, torch.Tensor]:
    if vector.kind != "dense":
        raise InterpSteerError(f"{vector.method} is a {vector.kind} vector, not a dense one")
    hook = sae.cfg.metadata.hook_name
    if hook in vector.tensors:
        return hook, vector.vector(hook).detach().float()
    raise InterpSteerError(
        f"the {vector.method} vector acts at {', '.join(vector.hook_points)} but the SAE reads {hook}: "
        "pass an SAE for the vector's hook point"
    )


def latent_usage(vector: SteeringVector, sae: Any, model: Any | None = None, *, k: int = 20,
                 lens_tokens: int = 6) -> dict[str, Any]:
    """Which latents an SAE-latent vector uses: the top ``k`` entries by decoded contribution with their value,
    decoder norm, share and cumulative share (+ logit lens with ``model``), and ``n_for_50pct`` / ``n_for_90pct``."""
    from interp_steer.interpret.features import latent_logit_lens

    v = _sae_latent(vector, sae)
    decoder = decoder_directions(sae)
    shares = latent_shares(v, decoder)
    norms = decoder.norm(dim=-1).cpu()
    n_nonzero = int((shares.contribution > 0).sum())
    latents = []
    for rank in range(min(k, n_nonzero)):
        i = int(shares.order[rank])
        entry: dict[str, Any] = {
            "rank": rank, "index": i, "value": float(v[i]), "decoder_norm": float(norms[i]),
            "contribution": float(shares.contribution[i]), "share": float(shares.contribution[i]) / shares.total,
            "cumulative_share": float(shares.cumulative[rank]),
        }
        if model is not None:
            entry["logit_lens"] = latent_logit_lens(model, sae, i, lens_tokens)
        latents.append(entry)
    curve = shares.cumulative[: min(n_nonzero, 1024)].tolist()
    return {"kind": "sae", "n_nonzero": n_nonzero, "total_contribution": shares.total,
            "n_for_50pct": shares.n_for(0.5), "n_for_90pct": shares.n_for(0.9),
            "latents": latents, "cumulative_share_curve": curve}


# --------------------------------------------------------------------------------------- dense projection


@dataclass
class Decomposition:
    """``direction ≈ Σ_j coefficients[j]·d̂_{indices[j]} + residual`` over unit decoder directions ``d̂``.

    ``explained[j]``: fraction of ``‖direction‖²`` explained by the first ``j + 1`` atoms (least-squares fit)."""

    indices: list[int]
    coefficients: Float[torch.Tensor, " n_atoms"]
    explained: list[float]
    residual: Float[torch.Tensor, " d"]
    atoms: Float[torch.Tensor, "n_atoms d"]


def decoder_cosines(direction: Float[torch.Tensor, " d"], decoder: Float[torch.Tensor, "d_sae d"]
                    ) -> Float[torch.Tensor, " d_sae"]:
    """Cosine similarity of ``direction`` with every decoder row."""
    d = direction.float().to(decoder.device)
    return (decoder.float() @ d) / (decoder.float().norm(dim=-1) * d.norm()).clamp_min(1e-12)


def omp_decompose(direction: Float[torch.Tensor, " d"], decoder: Float[torch.Tensor, "d_sae d"], k: int = 20, *,
                  nonnegative: bool = False, tol: float = 1e-6) -> Decomposition:
    """Greedy orthogonal matching pursuit of ``direction`` on the unit decoder directions.

    Each step adds the atom most aligned with the current residual (most positively aligned with
    ``nonnegative=True``) and refits all coefficients by least squares. Stops after ``k`` atoms or when the
    residual is below ``tol`` of the norm.
    """
    v = direction.detach().double().cpu()
    unit = decoder.detach().double().cpu()
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    norm2 = float(v.pow(2).sum())
    chosen: list[int] = []
    coef = torch.zeros(0, dtype=torch.float64)
    residual = v.clone()
    explained: list[float] = []
    for _ in range(min(k, unit.shape[0])):
        if norm2 == 0 or float(residual.norm()) <= tol * math.sqrt(norm2):
            break
        scores = unit @ residual
        if not nonnegative:
            scores = scores.abs()
        if chosen:
            scores[chosen] = -math.inf
        best = int(scores.argmax())
        if nonnegative and float(scores[best]) <= 0:
            break
        chosen.append(best)
        atoms = unit[chosen]
        coef = torch.linalg.lstsq(atoms.T, v[:, None]).solution[:, 0]
        if nonnegative and bool((coef < 0).any()):
            coef = _nnls(atoms.T, v)
        residual = v - coef @ atoms
        explained.append(1.0 - float(residual.pow(2).sum()) / norm2)
    atoms = unit[chosen] if chosen else torch.zeros(0, unit.shape[1], dtype=torch.float64)
    return Decomposition(chosen, coef.float(), explained, residual.float(), atoms.float())


def _nnls(a: torch.Tensor, b: torch.Tensor, iters: int = 2000) -> torch.Tensor:
    """Nonnegative least squares ``min ‖a x − b‖, x ≥ 0`` by projected gradient (small problems)."""
    step = 1.0 / max(float(torch.linalg.matrix_norm(a, ord=2)) ** 2, 1e-12)
    x = torch.zeros(a.shape[1], dtype=a.dtype)
    for _ in range(iters):
        x = (x - step * (a.T @ (a @ x - b))).clamp_min(0)
    return x


@torch.no_grad()
def dense_projection(direction: Float[torch.Tensor, " d"] | SteeringVector, sae: Any, model: Any | None = None, *,
                     k: int = 20, atoms: int | None = None, nonnegative: bool = False,
                     lens_tokens: int = 6) -> dict[str, Any]:
    """The SAE latents a dense direction aligns with, three ways:

    * ``cosine`` — top ``k`` decoder directions by |cosine| with the vector;
    * ``decomposition`` — greedy OMP on the unit decoder directions (``atoms`` atoms, default ``k``): each atom's
      coefficient (residual-stream units), the latent activation that produces it, and the cumulative fraction of
      ``‖v‖²`` explained;
    * ``encoder`` — top ``k`` latents by the encoder's linear read ``v @ W_enc`` (pre-activation change per unit
      of strength, bias excluded).
    """
    from interp_steer.interpret.features import latent_logit_lens

    if isinstance(direction, SteeringVector):
        direction = _dense_direction(direction, sae)[1]
    d = direction.detach().float().cpu()
    decoder = decoder_directions(sae).cpu()
    cos = decoder_cosines(d, decoder)
    top = cos.abs().argsort(descending=True)[:k]
    dec_norms = decoder.norm(dim=-1)
    comp = omp_decompose(d, decoder, atoms or k, nonnegative=nonnegative)
    enc = d @ encoder_directions(sae).cpu()
    enc_top = enc.abs().argsort(descending=True)[:k]

    def lens(i: int) -> dict[str, Any]:
        return {"logit_lens": latent_logit_lens(model, sae, i, lens_tokens)} if model is not None else {}

    return {
        "kind": "dense", "norm": float(d.norm()),
        "cosine": [{"index": int(i), "cosine": float(cos[i]), **lens(int(i))} for i in top],
        "decomposition": {
            "nonnegative": nonnegative,
            "atoms": [{"index": i, "coefficient": float(c), "latent_activation": float(c / dec_norms[i]),
                       "explained": comp.explained[j], **lens(i)}
                      for j, (i, c) in enumerate(zip(comp.indices, comp.coefficients.tolist(), strict=True))],
            "explained": comp.explained[-1] if comp.explained else 0.0,
            "residual_norm": float(comp.residual.norm()),
        },
        "encoder": [{"index": int(i), "preactivation": float(enc[i])} for i in enc_top],
    }


# ------------------------------------------------------------------------------------------------- metrics


@dataclass
class SequenceMetric:
    """``M = Σ_j weights[j] · score_j`` over token sequences, where ``score_j`` is the sum (or, with
    ``normalize``, the mean) of the log-probs of tokens ``score_start[j] .. score_end[j] − 1`` of sequence ``j``.

    The attribution engine runs it batch by batch (longest first), computing the activations before the hook
    point once per batch and backpropagating one batch at a time; ``metric(model)`` evaluates it with whatever
    hooks are attached. ``instruction_end`` / ``response_start`` serve the position policies.
    """

    name: str
    ids: list[list[int]]
    score_start: list[int]
    score_end: list[int]
    weights: list[float]
    instruction_end: list[int]
    response_start: list[int]
    normalize: bool = False
    batch_size: int = 16
    description: str = ""
    n_items: int = 0

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise InterpSteerError(f"metric {self.name!r} has no sequences")
        for name in ("score_start", "score_end", "weights", "instruction_end", "response_start"):
            if len(getattr(self, name)) != n:
                raise InterpSteerError(f"metric {self.name!r}: {name} has {len(getattr(self, name))} entries, "
                                       f"expected {n}")
        for j, (a, b, ids) in enumerate(zip(self.score_start, self.score_end, self.ids, strict=True)):
            if not 1 <= a < b <= len(ids):
                raise InterpSteerError(f"metric {self.name!r}: sequence {j} scores tokens {a}..{b} of {len(ids)}")

    def batches(self) -> list[list[int]]:
        order = sorted(range(len(self.ids)), key=lambda j: -len(self.ids[j]))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def batch_score(self, model: Any, seqs: Sequence[int], h: torch.Tensor) -> torch.Tensor:
        """Weighted score of one batch from the residual stream ``h`` after the last block."""
        rows, cols, weights = [], [], []
        tokens = torch.zeros(len(seqs), h.shape[1], dtype=torch.long)
        for r, j in enumerate(seqs):
            tokens[r, : len(self.ids[j])] = torch.tensor(self.ids[j])
            a, b = self.score_start[j], self.score_end[j]
            rows.append(torch.full((b - a,), r, dtype=torch.long))
            cols.append(torch.arange(a - 1, b - 1))
            per_token = self.weights[j] / (b - a) if self.normalize else self.weights[j]
            weights.append(torch.full((b - a,), per_token, dtype=torch.float32))
        row, col = torch.cat(rows).to(h.device), torch.cat(cols).to(h.device)
        target = tokens.to(h.device)[row, col + 1]
        resid = model.ln_final(h[row, col])
        logp = torch.log_softmax(model.unembed(resid[None])[0].float(), -1)
        picked = logp.gather(-1, target[:, None])[:, 0]
        return (picked * torch.cat(weights).to(picked.device)).sum()

    def tokens(self, seqs: Sequence[int], model: Any) -> torch.Tensor:
        tokens, _ = pad_right([self.ids[j] for j in seqs], pad_token_id(model.tokenizer))
        return tokens.to(model.cfg.device)

    def __call__(self, model: Any) -> torch.Tensor:
        total = torch.zeros((), device=model.cfg.device)
        for seqs in self.batches():
            h = model(self.tokens(seqs, model), stop_at_layer=model.cfg.n_layers)
            total = total + self.batch_score(model, seqs, h)
        return total


def preference_margin_metric(model: Any, pairs: Sequence[PreferenceExample], *, batch_size: int = 8,
                             max_length: int = 512) -> SequenceMetric:
    """Mean preference log-prob margin ``log p(chosen|x) − log p(rejected|x)`` (sums over response tokens, chat
    template applied), the quantity YaPO/BiPO optimise."""
    from interp_steer.methods.preference import prepare_pairs

    data = prepare_pairs(model, pairs, max_length)
    n = len(data)
    ends = [len(ids) for ids in data.ids]
    weights = [(1.0 if j % 2 == 0 else -1.0) / n for j in range(2 * n)]
    return SequenceMetric("preference_margin", data.ids, list(data.response_start), ends, weights,
                          list(data.instruction_end), list(data.response_start), normalize=False,
                          batch_size=batch_size, n_items=n,
                          description=f"mean log p(chosen) − log p(rejected) over {n} pairs")


def mcq_margin_metric(model: Any, items: Sequence[MCQItem], *, batch_size: int = 16) -> SequenceMetric:
    """Mean correct-option margin of MCQ items under option log-likelihood scoring (as
    :func:`interp_steer.evaluation.mcq.score_mcq`: each option is the answer to the bare question, scored by its
    mean token log-prob, end-of-turn excluded): ``score(correct) − mean(score(other options))``."""
    if not items:
        raise InterpSteerError("no MCQ items for the metric")
    tok = model.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    ids, starts, ends, weights, instr, resp = [], [], [], [], [], []
    n = len(items)
    for item in items:
        if len(item.options) < 2:
            raise InterpSteerError("an MCQ margin needs at least two options per item")
        for j, option in enumerate(item.options):
            ct = chat_tokens(tok, item.question, option)
            end = len(ct.ids)
            while end > ct.response_start + 1 and ct.ids[end - 1] in special:
                end -= 1
            ids.append(ct.ids[:end])
            starts.append(ct.response_start)
            ends.append(end)
            instr.append(ct.instruction_end)
            resp.append(ct.response_start)
            weights.append((1.0 if j == item.answer else -1.0 / (len(item.options) - 1)) / n)
    return SequenceMetric("mcq_margin", ids, starts, ends, weights, instr, resp, normalize=True,
                          batch_size=batch_size, n_items=n,
                          description=f"mean correct-option margin (mean token log-prob) over {n} items")


# -------------------------------------------------------------------------------------------------- engine


class _LatentProbe(Intervention):
    """SAE steering whose steered latents are autograd leaves: ``s + α·Δ`` with ``Δ = ReLU(s + λv) − s``
    (``symmetric``: ``Δ = ½·[ReLU(s + λv) − ReLU(s − λv)]``, the symmetric operator's edit in latent space)."""

    def __init__(self, sae: Any, latent: torch.Tensor, alpha: float = 1.0, symmetric: bool = False):
        self.sae, self.latent, self.alpha, self.symmetric = sae, latent, alpha, symmetric
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, h: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        sae = self.sae
        s = sae.encode(h.detach().to(sae.dtype)).detach()
        v = strength * self.latent.to(s.dtype)
        delta = (0.5 * (torch.relu(s + v) - torch.relu(s - v)) if self.symmetric else torch.relu(s + v) - s).detach()
        leaf = (s + self.alpha * delta).requires_grad_(True)
        self.records.append((leaf, delta))
        return h + (sae.decode(leaf) - sae.decode(s)).to(h.dtype)


class _DenseProbe(Intervention):
    """Dense steering whose steered activation is an autograd leaf: ``h + α·λ·v``."""

    def __init__(self, vector: torch.Tensor, alpha: float = 1.0):
        self.vector, self.alpha = vector, alpha
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, h: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        leaf = (h.detach() + self.alpha * strength * self.vector.to(h.dtype)).requires_grad_(True)
        self.records.append((leaf, leaf))
        return leaf


@contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """Model parameters without gradients for the duration (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _Runner:
    """Evaluates a metric under interventions at one hook point (prefix cached for :class:`SequenceMetric`)."""

    def __init__(self, model: Any, hook: str, metric: SequenceMetric | Metric, positions: str,
                 cache_limit_bytes: float = 1e9):
        self.model, self.hook, self.metric, self.positions = model, hook, metric, positions
        if hook not in model.hook_dict:
            raise InterpSteerError(f"hook point {hook!r} does not exist in {model.cfg.model_name}")
        if positions not in POLICIES:
            raise InterpSteerError(f"unknown position policy {positions!r}; expected one of {POLICIES}")
        if not isinstance(metric, SequenceMetric) and positions != "all":
            raise InterpSteerError(f"positions={positions!r} needs a SequenceMetric (a plain callable metric runs "
                                   "with positions='all')")
        name = hook.split(".", 2)[2] if hook.startswith("blocks.") else ""
        layer = int(hook.split(".")[1]) if name else -1
        self.split = layer + 1 if name == "hook_resid_post" else layer if name == "hook_resid_pre" else None
        self._cache: dict[int, torch.Tensor] = {}
        self._keep = False
        if isinstance(metric, SequenceMetric):
            n_tokens = sum(len(i) for i in metric.ids)
            self._keep = n_tokens * model.cfg.d_model * 4 < cache_limit_bytes
        self.forwards = 0

    def _transform(self, intervention: Intervention, strength: float, state: StepState):
        def fn(h: torch.Tensor) -> torch.Tensor:
            steered = intervention(h, strength)
            mask = state.mask(h.shape[0], h.shape[1], h.device)
            return steered if mask is None else torch.where(mask[..., None], steered, h)

        return fn

    def run(self, intervention: Intervention | None, strength: float,
            on_chunk: Callable[[torch.Tensor], None] | None = None) -> float:
        """Metric value; with ``on_chunk`` the graph is kept and ``on_chunk(value)`` is called per chunk (batch)."""
        model, metric = self.model, self.metric
        grad = on_chunk is not None
        total = 0.0
        with _frozen(model), torch.set_grad_enabled(grad):
            if not isinstance(metric, SequenceMetric):
                if intervention is None:
                    value = metric(model)
                else:
                    with steer(model, {self.hook: intervention}, strength, check=False, positions="all"):
                        value = metric(model)
                self.forwards += 1
                if on_chunk is not None:
                    on_chunk(value)
                return float(value.detach())
            for b, seqs in enumerate(metric.batches()):
                tokens = metric.tokens(seqs, model)
                starts = resolve_starts(
                    self.positions, instruction_end=torch.tensor([metric.instruction_end[j] for j in seqs]),
                    response_start=torch.tensor([metric.response_start[j] for j in seqs]))
                transform = None if intervention is None else self._transform(intervention, strength,
                                                                              StepState(starts=starts))
                if self.split is not None:
                    h = self._prefix(b, tokens)
                    if transform is not None:
                        h = transform(h)
                    if self.split < model.cfg.n_layers:
                        h = model(h, start_at_layer=self.split, stop_at_layer=model.cfg.n_layers)
                else:
                    hooks = [] if transform is None else [(self.hook, lambda act, hook, _t=transform: _t(act))]
                    h = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
                value = metric.batch_score(model, seqs, h)
                self.forwards += 1
                if on_chunk is not None:
                    on_chunk(value)
                total += float(value.detach())
        return total

    def _prefix(self, b: int, tokens: torch.Tensor) -> torch.Tensor:
        if b in self._cache:
            return self._cache[b]
        with torch.no_grad():
            h = self.model(tokens, stop_at_layer=self.split)
        if self._keep:
            self._cache[b] = h
        return h


def _gradient_run(runner: _Runner, probe: _LatentProbe | _DenseProbe, strength: float,
                  reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[float, torch.Tensor | None]:
    """Metric value under ``probe`` and ``Σ reduce(∂M/∂leaf, Δ)`` over every chunk and probe call."""
    acc: list[torch.Tensor] = []

    def on_chunk(value: torch.Tensor) -> None:
        records = probe.records
        probe.records = []
        leaves = [leaf for leaf, _ in records]
        if not leaves or not value.requires_grad:
            return
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        for g, (_leaf, delta) in zip(grads, records, strict=True):
            if g is not None:
                acc.append(reduce(g.float(), delta.float()))

    value = runner.run(probe, strength, on_chunk)
    return value, (torch.stack(acc).sum(0) if acc else None)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); ``None`` with fewer than 2 points or no variance."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or a.size != b.size:
        return None
    ra, rb = _rankdata(a), _rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _rankdata(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size, dtype=float)
    ranks[order] = np.arange(a.size, dtype=float)
    for value in np.unique(a):
        tie = a == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def topk_overlap(x: Sequence[float], y: Sequence[float], k: int) -> float | None:
    """Share of the ``k`` largest-|x| entries that are also among the ``k`` largest-|y| entries."""
    if k < 1 or len(x) < k:
        return None
    top_x = set(np.argsort(-np.abs(np.asarray(x, dtype=float)), kind="stable")[:k].tolist())
    top_y = set(np.argsort(-np.abs(np.asarray(y, dtype=float)), kind="stable")[:k].tolist())
    return len(top_x & top_y) / k


def agreement(estimates: Sequence[float], ablations: Sequence[float], k: int | None = None) -> dict[str, Any]:
    """How well gradient estimates match ablation effects: Spearman, Pearson, top-k overlap, sign agreement."""
    n = len(estimates)
    k = k if k is not None else max(1, n // 2)
    a, b = np.asarray(estimates, dtype=float), np.asarray(ablations, dtype=float)
    pearson = float(np.corrcoef(a, b)[0, 1]) if n >= 2 and a.std() > 0 and b.std() > 0 else None
    nonzero = (a != 0) | (b != 0)
    sign = float((np.sign(a[nonzero]) == np.sign(b[nonzero])).mean()) if nonzero.any() else None
    return {"n": n, "spearman": spearman(a.tolist(), b.tolist()), "pearson": pearson, "k": k,
            "topk_overlap": topk_overlap(a.tolist(), b.tolist(), k), "sign_agreement": sign}


@dataclass
class Attribution:
    """Gradient × Δ estimates and ablation effects of one vector on one metric (see :func:`attribute`).

    ``units`` are SAE latents (``"latent"``) or, for dense vectors, decomposition atoms (``"atom"``: latent
    index of each atom in ``atom_latents``). ``estimates`` holds one value per unit (per atom + the residual
    last, for dense). ``ablated[i]`` units were removed one at a time: ``ablation[i] = M(v) − M(v without it)``.
    """

    metric: str
    hook: str
    strength: float
    positions: str
    steps: int
    units: str
    unsteered: float
    steered: float
    probe_value: float
    estimates: torch.Tensor
    ablated: list[int] = field(default_factory=list)
    ablation: list[float] = field(default_factory=list)
    atom_latents: list[int] = field(default_factory=list)
    atom_coefficients: list[float] = field(default_factory=list)
    forwards: int = 0

    @property
    def total_effect(self) -> float:
        return self.steered - self.unsteered

    def agreement(self, k: int | None = None) -> dict[str, Any]:
        return agreement([float(self.estimates[i]) for i in self.ablated], self.ablation, k)

    def latent_of(self, unit: int) -> int | None:
        if self.units == "latent":
            return unit
        return self.atom_latents[unit] if unit < len(self.atom_latents) else None

    def to_dict(self, k: int = 20) -> dict[str, Any]:
        est = self.estimates
        order = est.abs().argsort(descending=True, stable=True)
        ablation = dict(zip(self.ablated, self.ablation, strict=True))
        top = []
        for u in order[:k].tolist():
            if float(est[u]) == 0 and u not in ablation:
                break
            entry: dict[str, Any] = {"unit": u, "latent": self.latent_of(u), "grad_x_delta": float(est[u]),
                                     "ablation_effect": ablation.get(u)}
            if self.units == "atom":
                entry["coefficient"] = (self.atom_coefficients[u] if u < len(self.atom_coefficients) else None)
                entry["residual"] = u == len(self.atom_latents)
            top.append(entry)
        total_est = float(est.sum())
        return {
            "metric": self.metric, "hook": self.hook, "strength": self.strength, "positions": self.positions,
            "steps": self.steps, "units": self.units,
            "effect": {"unsteered": self.unsteered, "steered": self.steered, "total": self.total_effect,
                       "probe_value": self.probe_value, "sum_of_estimates": total_est,
                       "sum_of_ablations": sum(self.ablation),
                       "completeness": total_est / self.total_effect if self.total_effect else None},
            "n_units_nonzero": int((est != 0).sum()),
            "top": top,
            "ablation": {"units": self.ablated, "latents": [self.latent_of(u) for u in self.ablated],
                         "grad_x_delta": [float(est[u]) for u in self.ablated], "effect": self.ablation},
            "agreement": self.agreement(),
            "forwards": self.forwards,
        }


def attribute(model: Any, vector: SteeringVector, metric: SequenceMetric | Metric, *, sae: Any | None = None,
              strength: float = 1.0, positions: str | None = None, ablate_top: int = 10, steps: int = 1,
              atoms: int = 32, sparse: bool | str = "auto", check: bool = True) -> Attribution:
    """Attribute the change of ``metric`` caused by ``vector`` at ``strength`` to SAE latents.

    SAE-latent vectors (YaPO, SAS): one estimate per latent, ``a_i = Σ_pos ∂M/∂s̃_i · Δs̃_i`` (``steps`` > 1:
    the gradient averaged over ``s + α·Δ`` at ``α = (t + ½)/steps``, i.e. integrated gradients). Then the
    ``ablate_top`` latents with the largest |estimate| are ablated one by one (``v_i = 0``) and re-measured.

    Dense vectors (CAA, BiPO, contrastive): ``v`` is decomposed on the SAE's unit decoder directions (OMP,
    ``atoms`` atoms) into ``Σ c_j d̂_j + r``; unit ``j`` gets ``λ·c_j·d̂_j · Σ_pos ∂M/∂h`` (the residual ``r`` is
    the last unit) and its ablation subtracts ``c_j d̂_j`` from ``v``.

    ``metric`` is a :class:`SequenceMetric` (batched; activations before the hook computed once) or any callable
    ``metric(model) -> scalar`` (position policy "all" only).
    """
    if steps < 1:
        raise InterpSteerError("steps must be at least 1")
    if vector.kind == "affine":
        raise InterpSteerError("attribution explains dense or SAE-latent vectors, not affine maps")
    if sae is None:
        raise InterpSteerError("attribution to SAE latents needs the SAE (pass sae=)")
    if check:
        vector.check_compatible(model, sae if vector.kind == "sae" else None)
    policy = positions or vector.positions
    hook = sae.cfg.metadata.hook_name
    device = model.cfg.device
    metric_name = getattr(metric, "name", getattr(metric, "__name__", "metric"))
    alphas = [1.0] if steps == 1 else [(t + 0.5) / steps for t in range(steps)]
    if vector.kind == "sae":
        v = _sae_latent(vector, sae).to(device)
        symmetric = vector.operator == "symmetric"
        hook = vector.hook_points[0]
        runner = _Runner(model, hook, metric, policy)
        est = torch.zeros(v.numel())
        probe_value = 0.0
        for alpha in alphas:
            value, acc = _gradient_run(runner, _LatentProbe(sae, v, alpha, symmetric), strength,
                                       lambda g, d: (g * d).reshape(-1, d.shape[-1]).sum(0).cpu())
            if acc is not None:
                est += acc / len(alphas)
            probe_value = value
        unsteered = runner.run(None, strength)
        steered = runner.run(SAEIntervention(sae, v, sparse=sparse, symmetric=symmetric), strength)
        candidates = [int(i) for i in est.abs().argsort(descending=True, stable=True)
                      if float(v[int(i)]) != 0][:ablate_top]
        ablation = []
        for i in candidates:
            w = v.clone()
            w[i] = 0
            ablation.append(steered - runner.run(SAEIntervention(sae, w, sparse=sparse, symmetric=symmetric), strength))
        return Attribution(metric_name, hook, strength, policy, steps, "latent", unsteered, steered, probe_value,
                           est, candidates, ablation, forwards=runner.forwards)

    hook, d = _dense_direction(vector, sae)
    d = d.to(device)
    comp = omp_decompose(d, decoder_directions(sae), atoms)
    parts = [c * a for c, a in zip(comp.coefficients.tolist(), comp.atoms, strict=True)] + [comp.residual]
    runner = _Runner(model, hook, metric, policy)
    grad_sum = torch.zeros(d.numel())
    probe_value = 0.0
    for alpha in alphas:
        value, acc = _gradient_run(runner, _DenseProbe(d, alpha), strength,
                                   lambda g, _leaf: g.reshape(-1, g.shape[-1]).sum(0).cpu())
        if acc is not None:
            grad_sum += acc / len(alphas)
        probe_value = value
    est = torch.tensor([strength * float(p.cpu() @ grad_sum) for p in parts])
    unsteered = runner.run(None, strength)
    steered = runner.run(DenseIntervention(d), strength)
    candidates = [int(u) for u in est.abs().argsort(descending=True, stable=True)[:ablate_top]]
    ablation = [steered - runner.run(DenseIntervention(d - parts[u].to(device)), strength) for u in candidates]
    return Attribution(metric_name, hook, strength, policy, steps, "atom", unsteered, steered, probe_value, est,
                       candidates, ablation, atom_latents=list(comp.indices),
                       atom_coefficients=comp.coefficients.tolist(), forwards=runner.forwards)


# ------------------------------------------------------------------------------------------------- compare


def vector_profile(vector: SteeringVector, sae: Any, k: int = 20) -> dict[str, Any]:
    """What :func:`compare_vectors` compares: the decoded residual-stream direction, the latent vector (SAE-latent
    kind only) and the top-``k`` latents (by decoded contribution, or by |cosine| for dense vectors)."""
    decoder = decoder_directions(sae).cpu()
    if vector.kind == "sae":
        v = _sae_latent(vector, sae).cpu()
        shares = latent_shares(v, decoder)
        n = min(k, int((shares.contribution > 0).sum()))
        return {"kind": "sae", "decoded": v @ decoder, "latent": v, "top": [int(i) for i in shares.order[:n]]}
    _, d = _dense_direction(vector, sae)
    cos = decoder_cosines(d.cpu(), decoder)
    return {"kind": "dense", "decoded": d.cpu(), "latent": None,
            "top": [int(i) for i in cos.abs().argsort(descending=True)[:k]] if float(d.norm()) > 0 else []}


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    sa, sb = set(a), set(b)
    return 1.0 if not sa and not sb else len(sa & sb) / len(sa | sb)


def _cosine_matrix(rows: list[torch.Tensor]) -> list[list[float]]:
    m = torch.stack([r.double() for r in rows])
    norms = m.norm(dim=-1)
    unit = m / norms.clamp_min(1e-30)[:, None]
    sim = unit @ unit.T
    sim = (sim + sim.T) / 2
    for i in range(len(rows)):
        sim[i, i] = 1.0 if float(norms[i]) > 0 else 0.0
    return sim.clamp(-1, 1).tolist()


def compare_vectors(vectors: Mapping[str, SteeringVector], sae: Any, *, k: int = 20) -> dict[str, Any]:
    """Cross-vector matrices: ``jaccard`` of the top-``k`` latent sets, ``cosine`` of the decoded residual-stream
    directions (``v @ W_dec`` for SAE-latent vectors, ``v`` for dense ones) and, when every vector is SAE-latent,
    ``latent_cosine`` of the latent vectors. ``shared`` lists the top latents each pair has in common."""
    if len(vectors) < 2:
        raise InterpSteerError("compare needs at least two vectors")
    names = list(vectors)
    profiles = {n: vector_profile(vectors[n], sae, k) for n in names}
    jac = [[jaccard(profiles[a]["top"], profiles[b]["top"]) for b in names] for a in names]
    out: dict[str, Any] = {
        "names": names, "k": k, "kinds": [profiles[n]["kind"] for n in names],
        "methods": [vectors[n].method for n in names],
        "top_latents": {n: profiles[n]["top"] for n in names},
        "jaccard": jac,
        "cosine": _cosine_matrix([profiles[n]["decoded"] for n in names]),
        "latent_cosine": (_cosine_matrix([profiles[n]["latent"] for n in names])
                          if all(profiles[n]["kind"] == "sae" for n in names) else None),
        "shared": {f"{a}|{b}": sorted(set(profiles[a]["top"]) & set(profiles[b]["top"]))
                   for i, a in enumerate(names) for b in names[i + 1 :]},
    }
    return out


# --------------------------------------------------------------------------------------------------- plots


def write_compare_html(result: dict[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Offline plotly heatmaps (plotly.js inlined) of the matrices of :func:`compare_vectors`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [("jaccard", f"Jaccard of top-{result['k']} latents", 0.0), ("cosine", "cosine (decoded)", -1.0)]
    if result.get("latent_cosine") is not None:
        panels.append(("latent_cosine", "cosine (latent vectors)", -1.0))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], horizontal_spacing=0.08)
    names = result["names"]
    for col, (key, _, zmin) in enumerate(panels, start=1):
        z = result[key]
        fig.add_trace(go.Heatmap(z=z, x=names, y=names, zmin=zmin, zmax=1.0, colorscale="RdBu", reversescale=True,
                                 text=[[f"{x:.2f}" for x in row] for row in z], texttemplate="%{text}",
                                 showscale=col == len(panels)), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(title=title or "steering vectors compared", height=450, width=420 * len(panels) + 80)
    return write_figure_atomic(fig, path)


def write_attribution_html(report: dict[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Offline plotly figure of an attribution report (see :func:`explain`): cumulative share of the vector's
    effect, gradient × Δ vs ablation per ablated unit, and their scatter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "cumulative share of |v| (decoded)", "grad × Δ vs ablation (ablated units)", "ablation vs grad × Δ"))
    usage = report.get("usage")
    if usage and usage.get("cumulative_share_curve"):
        curve = usage["cumulative_share_curve"]
        fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve, name="cumulative share"), row=1, col=1)
    elif report.get("projection"):
        atoms_ = report["projection"]["decomposition"]["atoms"]
        fig.add_trace(go.Scatter(x=list(range(1, len(atoms_) + 1)), y=[a["explained"] for a in atoms_],
                                 name="‖v‖² explained (OMP)"), row=1, col=1)
    attr = report.get("attribution")
    if attr:
        ab = attr["ablation"]
        labels = [str(lat) if lat is not None else "residual" for lat in ab["latents"]]
        fig.add_trace(go.Bar(x=labels, y=ab["grad_x_delta"], name="grad × Δ"), row=1, col=2)
        fig.add_trace(go.Bar(x=labels, y=ab["effect"], name="ablation"), row=1, col=2)
        fig.update_xaxes(type="category", row=1, col=2)
        xs, ys = ab["grad_x_delta"], ab["effect"]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=labels, textposition="top center",
                                 name="latents"), row=1, col=3)
        if xs:
            lo, hi = min(xs + ys), max(xs + ys)
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot"}, name="y = x"),
                          row=1, col=3)
        fig.update_xaxes(title_text="grad × Δ", row=1, col=3)
        fig.update_yaxes(title_text="ablation effect", row=1, col=3)
    fig.update_layout(title=title or "steering vector attribution", height=480, width=1500)
    return write_figure_atomic(fig, path)


# ------------------------------------------------------------------------------------------------- explain


def explain(model: Any, vector: SteeringVector, sae: Any, metric: SequenceMetric | Metric | None = None, *,
            k: int = 20, ablate_top: int = 10, strength: float = 1.0, positions: str | None = None,
            steps: int = 1, atoms: int = 32, lens_tokens: int = 6) -> dict[str, Any]:
    """Everything about one vector as a JSON-ready dict: ``usage`` (SAE-latent vectors) or ``projection`` (dense
    vectors) and, with a ``metric``, ``attribution`` (:func:`attribute` → :meth:`Attribution.to_dict`) whose top
    entries carry the latents' logit lens."""
    from interp_steer.interpret.features import latent_logit_lens

    report: dict[str, Any] = {"method": vector.method, "kind": vector.kind, "hook_points": vector.hook_points,
                              "positions": vector.positions, "sae": vector.sae,
                              "sae_hook": sae.cfg.metadata.hook_name, "d_sae": int(sae.cfg.d_sae)}
    if vector.kind == "sae":
        report["usage"] = latent_usage(vector, sae, model, k=k, lens_tokens=lens_tokens)
    elif vector.kind == "dense":
        report["projection"] = dense_projection(vector, sae, model, k=k, atoms=atoms, lens_tokens=lens_tokens)
    else:
        raise InterpSteerError("attribution explains dense or SAE-latent vectors, not affine maps")
    if metric is not None:
        res = attribute(model, vector, metric, sae=sae, strength=strength, positions=positions,
                        ablate_top=ablate_top, steps=steps, atoms=atoms)
        out = res.to_dict(k)
        for entry in out["top"]:
            if entry["latent"] is not None and entry.get("residual") is not True:
                entry["logit_lens"] = latent_logit_lens(model, sae, entry["latent"], lens_tokens)
        if isinstance(metric, SequenceMetric):
            out["metric_description"] = metric.description
            out["metric_items"] = metric.n_items
        report["attribution"] = out
    return report
