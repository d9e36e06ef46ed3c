"""What an SAE latent does over a corpus: top-activating snippets, firing density, logit lens, steering response.

One batched pass over the texts computes every statistic for many latents at once: each batch runs the model
only up to the SAE's hook point (``stop_at_layer``), encodes the activations with the SAE and keeps, per
latent, running sums, the nonzero activations (for the histogram) and a running top-``n`` of texts by their
maximum activation (with the window of tokens around that maximum). With a steering vector and a list of
strengths λ, the same texts are run once more per λ with the vector applied (``positions="all"``) and the mean
activation of each latent is compared with the unsteered mean.

Conventions:

* texts are tokenized one by one (``BOS`` + tokens, no EOS), truncated to ``max_length`` tokens and
  right-padded in batches (the model is causal, so padding never changes the activations of real tokens);
* special tokens (BOS/attention sink, chat markers, padding) are excluded from every statistic, as in SAE
  training (sae-lens ``exclude_special_tokens``); their activation is shown as 0 in snippets;
* a snippet is the maximum-activating token of one text (one snippet per text), ranked by that maximum; only
  texts where the latent fires (maximum > 0) yield snippets, and (``distinct=True``) a window of tokens already
  shown is not shown again;
* density = fraction of (non-special) tokens with activation > 0; the histogram has ``bins`` equal-width bins
  from 0 to the maximum over the nonzero activations;
* the logit lens multiplies the decoder direction by the final norm's scale (when it is not folded into
  ``W_U``, as it is with ``fold_ln``) and reads it through ``W_U`` (no bias).

>>> insp = inspect_latents(model, sae, texts, [12, 345], vector=vec, strengths=[2.0, 4.0])
>>> insp.report(12).snippets[0].tokens, insp.report(12).density, insp.report(12).steering[0].change
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from interp_steer.errors import InterpSteerError


# --------------------------------------------------------------------------------------------- results
@dataclass
class Snippet:
    """A window of tokens around the maximum activation of a latent in one text."""

    tokens: list[str]
    token_ids: list[int]
    values: list[float]  # the latent's activation on each token of the window (0 on special tokens)
    max_index: int  # index in ``tokens`` of the max-activating token
    max_value: float
    text_index: int  # which input text
    position: int  # absolute token position of the maximum in that text (BOS = 0)


@dataclass
class LogitLens:
    """Tokens whose logits the decoder direction raises (promoted) and lowers (suppressed) most."""

    promoted: list[str]
    promoted_ids: list[int]
    promoted_values: list[float]
    suppressed: list[str]
    suppressed_ids: list[int]
    suppressed_values: list[float]


@dataclass
class SteeringEffect:
    """Mean activation of a latent over the same tokens with the vector applied at ``strength`` vs without."""

    strength: float
    mean_activation: float
    mean_activation_unsteered: float
    density: float  # fraction of tokens on which the latent fires under steering

    @property
    def change(self) -> float:
        return self.mean_activation - self.mean_activation_unsteered


@dataclass
class LatentReport:
    index: int
    n_tokens: int
    n_firing: int
    density: float
    log10_density: float | None  # None when the latent never fires
    max_activation: float
    mean_activation: float  # over all tokens (zeros included)
    mean_nonzero: float  # over the tokens where it fires (0 if none)
    hist_counts: list[int]
    hist_edges: list[float]  # len(hist_counts) + 1 edges ([] when it never fires)
    snippets: list[Snippet]
    logit_lens: LogitLens | None = None
    steering: list[SteeringEffect] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, effect in zip(data["steering"], self.steering, strict=True):
            entry["change"] = effect.change
        return data


@dataclass
class LatentInspection:
    """Statistics of several latents of one SAE over one corpus."""

    hook: str
    latents: list[int]
    n_texts: int
    n_tokens: int  # non-special tokens the statistics are over
    strengths: list[float]
    reports: list[LatentReport]

    def report(self, index: int) -> LatentReport:
        for rep in self.reports:
            if rep.index == index:
                return rep
        raise InterpSteerError(f"latent {index} was not inspected (inspected: {self.latents})")

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "latents": self.latents, "n_texts": self.n_texts, "n_tokens": self.n_tokens,
                "strengths": self.strengths, "reports": [r.to_dict() for r in self.reports]}


# ------------------------------------------------------------------------------------------ corpus
def corpus_texts(
    source: str | Path | None = None,
    *,
    n: int | None = 200,
    seed: int = 0,
    tokenizer: Any | None = None,
    max_chars: int | None = 2000,
    heldout_fraction: float = 0.05,
) -> list[str]:
    """Texts to inspect latents on.

    ``source=None``: the held-out documents of ``../shared/data/corpus/mixed-text.jsonl.gz`` (the split the
    shipped SAE was *not* trained on; same seed and fraction as ``train-sae``), the first ``n``. A registry
    key (``local:news``, ``culture:morocco``, … see :data:`interp_steer.data.registry.DATASETS`) or a
    JSONL/CSV/Parquet file with a ``prompt``/``question``/``text`` column: a seeded sample of ``n`` (all when
    there are fewer). A ``.txt`` file: one text per non-empty line. Texts are cut to ``max_chars`` characters.
    """
    from interp_steer.data.registry import DATASETS, load_prompts

    if source is None:
        from interp_steer.data.corpus import load_corpus, shared_corpus_path

        path = shared_corpus_path()
        if path is None:
            raise InterpSteerError("no texts given and ../shared/data/corpus/mixed-text.jsonl.gz not found "
                                   "(pass a .txt/.jsonl file or a registry key such as local:news)")
        texts = load_corpus(path, split="heldout", heldout_fraction=heldout_fraction, seed=0,
                            tokenizer=tokenizer, max_documents=n)
    elif str(source) in DATASETS or Path(source).suffix != ".txt":
        if str(source) not in DATASETS and not Path(source).is_file():
            raise InterpSteerError(f"texts not found: {source} (a file, or a registry key such as local:news)")
        texts = load_prompts(source)
        if n is not None and len(texts) > n:
            texts = load_prompts(source, n_samples=n, seed=seed)
    else:
        path = Path(source)
        if not path.is_file():
            raise InterpSteerError(f"texts file not found: {path}")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = texts[:n] if n is not None else texts
    texts = [t[:max_chars] if max_chars else t for t in texts if t.strip()]
    if not texts:
        raise InterpSteerError(f"no texts in {source or 'the held-out corpus'}")
    return texts


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int = 128) -> list[list[int]]:
    """``BOS`` + tokens of each text (no EOS), at most ``max_length`` tokens."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(([bos] if bos is not None else []) + list(ids)[: max_length - (bos is not None)])
    return out


# --------------------------------------------------------------------------------------- activations
def stop_layer(hook: str, n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still runs ``hook`` (``None``: the whole model is needed)."""
    parts = hook.split(".")
    if parts[0] == "blocks" and len(parts) >= 3 and parts[1].isdigit():
        return min(int(parts[1]) + 1, n_layers)
    if hook in ("hook_embed", "hook_pos_embed", "hook_tokens"):
        return 0
    return None


def hook_activations(
    model: Any, tokens: Int[torch.Tensor, "batch pos"], hook: str
) -> Float[torch.Tensor, "batch pos d"]:
    """Activations at ``hook`` (any hooks already attached, e.g. steering, act first); stops after its layer."""
    if hook not in model.hook_dict:
        raise InterpSteerError(f"hook point {hook!r} does not exist in {model.cfg.model_name}")
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> None:
        store["act"] = act.detach()

    with model.hooks(fwd_hooks=[(hook, grab)]):
        model(tokens, stop_at_layer=stop_layer(hook, model.cfg.n_layers))
    return store["act"]


def encode_latents(
    sae: Any, acts: Float[torch.Tensor, "batch pos d"], latents: torch.Tensor
) -> Float[torch.Tensor, "batch pos n_latents"]:
    """The SAE code restricted to ``latents`` (the full encoder runs: TopK needs every pre-activation)."""
    codes = sae.encode(acts.to(sae.W_enc.dtype))
    return codes[..., latents.to(codes.device)].float()


def _special_mask(tokens: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    ids = sorted(set(getattr(tokenizer, "all_special_ids", None) or []))
    if not ids:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype, device=tokens.device))


@torch.no_grad()
def logit_lens(model: Any, sae: Any, latents: Sequence[int], k: int = 10) -> list[LogitLens]:
    """Top ``k`` promoted and suppressed tokens of each decoder direction, batched (values are logit changes
    per unit activation: ``W_dec[i] · g @ W_U`` with ``g`` the final norm's scale when it is not folded)."""
    idx = torch.as_tensor(list(latents), dtype=torch.long, device=sae.W_dec.device)
    directions = sae.W_dec[idx].to(model.W_U.dtype).to(model.W_U.device)
    scale = getattr(getattr(model, "ln_final", None), "w", None)
    if isinstance(scale, torch.Tensor):
        directions = directions * scale.to(directions)
    logits = (directions @ model.W_U).float()
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1)
    bottom = (-logits).topk(k, dim=-1)
    tok = model.tokenizer
    out = []
    for row in range(len(idx)):
        pos_ids = [int(i) for i in top.indices[row]]
        neg_ids = [int(i) for i in bottom.indices[row]]
        out.append(LogitLens(
            promoted=[tok.decode([i]) for i in pos_ids], promoted_ids=pos_ids,
            promoted_values=[float(v) for v in top.values[row]],
            suppressed=[tok.decode([i]) for i in neg_ids], suppressed_ids=neg_ids,
            suppressed_values=[-float(v) for v in bottom.values[row]],
        ))
    return out


# --------------------------------------------------------------------------------------------- main
class _TopTexts:
    """Running top-``n`` texts per latent by their max activation, with the token window around it."""

    def __init__(self, n: int, n_latents: int, width: int):
        self.n = n
        self.vals = torch.full((0, n_latents), -math.inf)
        self.text = torch.zeros((0, n_latents), dtype=torch.long)
        self.pos = torch.zeros((0, n_latents), dtype=torch.long)
        self.win_vals = torch.zeros((0, n_latents, width))
        self.win_toks = torch.zeros((0, n_latents, width), dtype=torch.long)
        self.win_ok = torch.zeros((0, n_latents, width), dtype=torch.bool)

    def update(self, vals: torch.Tensor, text: torch.Tensor, pos: torch.Tensor, win_vals: torch.Tensor,
               win_toks: torch.Tensor, win_ok: torch.Tensor) -> None:
        all_vals = torch.cat([self.vals, vals])
        keep = all_vals.topk(min(self.n, all_vals.shape[0]), dim=0).indices  # [n, L]
        self.vals = all_vals.gather(0, keep)
        self.text = torch.cat([self.text, text]).gather(0, keep)
        self.pos = torch.cat([self.pos, pos]).gather(0, keep)
        wide = keep[..., None].expand(-1, -1, win_vals.shape[-1])
        self.win_vals = torch.cat([self.win_vals, win_vals]).gather(0, wide)
        self.win_toks = torch.cat([self.win_toks, win_toks]).gather(0, wide)
        self.win_ok = torch.cat([self.win_ok, win_ok]).gather(0, wide)


@torch.no_grad()
def inspect_latents(
    model: Any,
    sae: Any,
    texts: Sequence[str],
    latents: Sequence[int],
    *,
    n_snippets: int = 8,
    context_before: int = 12,
    context_after: int = 4,
    max_length: int = 128,
    batch_size: int = 8,
    bins: int = 32,
    logit_lens_k: int = 10,
    vector: Any | None = None,
    strengths: Sequence[float] = (),
    exclude_special: bool = True,
    distinct: bool = True,
    progress: bool = False,
) -> LatentInspection:
    """Snippets, density, histogram, logit lens and (with ``vector``) steering response of ``latents``.

    ``vector`` is a :class:`~interp_steer.steering.SteeringVector` (or a ``{hook: Intervention}`` dict),
    applied at every position with ``sae`` as its SAE for SAE-latent vectors; each strength in ``strengths``
    costs one more pass over the texts (running only up to the SAE's hook). With ``distinct``, snippets whose
    token window repeats one already shown (a system prompt in every chat-templated text, say) are skipped.
    """
    from interp_steer.steering import steer

    if not texts:
        raise InterpSteerError("inspect_latents needs at least one text")
    latent_list = [int(i) for i in latents]
    d_sae = int(sae.cfg.d_sae)
    bad = [i for i in latent_list if not 0 <= i < d_sae]
    if not latent_list or bad:
        raise InterpSteerError(f"latent indices must be in 0..{d_sae - 1}; got {bad or 'none'}")
    if strengths and vector is None:
        raise InterpSteerError("strengths need a steering vector (vector=...)")
    if max_length < 2:
        raise InterpSteerError("max_length must be at least 2 tokens")
    hook = sae.cfg.metadata.hook_name
    device = model.cfg.device
    idx = torch.tensor(latent_list, dtype=torch.long)
    n_lat = len(latent_list)
    width = context_before + 1 + context_after
    offsets = torch.arange(-context_before, context_after + 1)
    ids = tokenize_texts(model.tokenizer, texts, max_length)
    if vector is not None and not isinstance(vector, dict):
        vector.check_compatible(model, sae)

    firing = torch.zeros(n_lat, dtype=torch.long)
    act_sum = torch.zeros(n_lat, dtype=torch.float64)
    act_max = torch.zeros(n_lat)
    nonzero: list[list[torch.Tensor]] = [[] for _ in range(n_lat)]
    steer_sum = torch.zeros(len(strengths), n_lat, dtype=torch.float64)
    steer_fire = torch.zeros(len(strengths), n_lat, dtype=torch.long)
    top = _TopTexts(max(n_snippets, 0) * (4 if distinct else 1), n_lat, width)
    n_valid = 0

    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc="latent statistics", disable=not progress, leave=False):
        rows = ids[start : start + batch_size]
        seq = max(len(r) for r in rows)
        pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        tokens = torch.full((len(rows), seq), pad, dtype=torch.long)
        valid = torch.zeros((len(rows), seq), dtype=torch.bool)
        for r, row in enumerate(rows):
            tokens[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            valid[r, : len(row)] = True
        in_text = valid.clone()
        if exclude_special:
            valid &= ~_special_mask(tokens, model.tokenizer)
        acts = encode_latents(sae, hook_activations(model, tokens.to(device), hook), idx).cpu()  # [B, P, L]
        acts = acts * valid[..., None]
        n_valid += int(valid.sum())
        fires = (acts > 0) & valid[..., None]
        firing += fires.sum((0, 1))
        act_sum += acts.sum((0, 1)).double()
        act_max = torch.maximum(act_max, acts.amax((0, 1)))
        for j in range(n_lat):
            nonzero[j].append(acts[..., j][fires[..., j]])
        if n_snippets > 0:
            masked = acts.masked_fill(~valid[..., None], -math.inf)
            best, where = masked.max(dim=1)  # [B, L]
            q = where[..., None] + offsets  # [B, L, W] absolute positions of the window
            ok = (q >= 0) & (q < in_text.sum(1)[:, None, None])
            qc = q.clamp(0, seq - 1)
            win_vals = acts.permute(0, 2, 1).gather(2, qc) * ok
            win_toks = tokens[:, None, :].expand(-1, n_lat, -1).gather(2, qc)
            text_idx = torch.arange(start, start + len(rows))[:, None].expand(-1, n_lat)
            top.update(best, text_idx, where, win_vals, win_toks, ok)
        for s, strength in enumerate(strengths):
            assert vector is not None
            with steer(model, vector, float(strength), sae=sae, positions="all", check=False):
                steered = encode_latents(sae, hook_activations(model, tokens.to(device), hook), idx).cpu()
            steered = steered * valid[..., None]
            steer_sum[s] += steered.sum((0, 1)).double()
            steer_fire[s] += ((steered > 0) & valid[..., None]).sum((0, 1))

    if n_valid == 0:
        raise InterpSteerError("the texts hold no non-special tokens")
    lens = logit_lens(model, sae, latent_list, logit_lens_k) if logit_lens_k > 0 else [None] * n_lat
    tok = model.tokenizer
    reports = []
    for j, latent in enumerate(latent_list):
        values = torch.cat(nonzero[j]) if nonzero[j] else torch.zeros(0)
        density = int(firing[j]) / n_valid
        if values.numel():
            hi = float(values.max())
            counts = torch.histc(values, bins=bins, min=0.0, max=hi)
            edges = torch.linspace(0.0, hi, bins + 1)
            hist_counts, hist_edges = [int(c) for c in counts], [float(e) for e in edges]
        else:
            hist_counts, hist_edges = [], []
        snippets: list[Snippet] = []
        seen: set[tuple[int, ...]] = set()
        for r in range(top.vals.shape[0]):
            if not top.vals[r, j] > 0 or len(snippets) == n_snippets:
                continue
            ok = top.win_ok[r, j]
            tids = [int(t) for t in top.win_toks[r, j][ok]]
            key = (int(ok[:context_before].sum()), *tids)
            if distinct and key in seen:
                continue
            seen.add(key)
            snippets.append(Snippet(
                tokens=[tok.decode([t]) for t in tids], token_ids=tids,
                values=[float(v) for v in top.win_vals[r, j][ok]],
                max_index=context_before - int((~ok[:context_before]).sum()),
                max_value=float(top.vals[r, j]), text_index=int(top.text[r, j]), position=int(top.pos[r, j]),
            ))
        mean_unsteered = float(act_sum[j]) / n_valid
        effects = [SteeringEffect(float(strength), float(steer_sum[s, j]) / n_valid, mean_unsteered,
                                  int(steer_fire[s, j]) / n_valid) for s, strength in enumerate(strengths)]
        reports.append(LatentReport(
            index=latent, n_tokens=n_valid, n_firing=int(firing[j]), density=density,
            log10_density=math.log10(density) if density > 0 else None, max_activation=float(act_max[j]),
            mean_activation=mean_unsteered,
            mean_nonzero=float(values.double().mean()) if values.numel() else 0.0,
            hist_counts=hist_counts, hist_edges=hist_edges, snippets=snippets, logit_lens=lens[j],
            steering=effects,
        ))
    return LatentInspection(hook=hook, latents=latent_list, n_texts=len(ids), n_tokens=n_valid,
                            strengths=[float(s) for s in strengths], reports=reports)


__all__ = [
    "LatentInspection", "LatentReport", "LogitLens", "Snippet", "SteeringEffect", "corpus_texts",
    "encode_latents", "hook_activations", "inspect_latents", "logit_lens", "stop_layer", "tokenize_texts",
]
