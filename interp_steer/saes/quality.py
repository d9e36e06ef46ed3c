"""SAE quality on held-out text: explained variance, mean L0, dead/dense latents, CE-loss recovered.

CE-loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean), where CE_sae splices the SAE reconstruction into
the hooked activation and CE_zero replaces it with zeros (zero ablation). Positions holding special tokens
(the BOS/attention-sink token, chat markers) are excluded from reconstruction statistics and keep their clean
activations when splicing, matching how the SAE was trained (sae-lens ``exclude_special_tokens``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp_steer.errors import InterpSteerError


@dataclass
class SAEQuality:
    explained_variance: float
    mean_l0: float
    dead_fraction: float
    dense_fraction: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_loss_recovered: float
    n_tokens: int
    dense_threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _special_ids(tokenizer: Any) -> torch.Tensor:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    return torch.tensor(sorted(ids) or [-1], dtype=torch.long)


def _summed_ce(logits: torch.Tensor, targets: torch.Tensor) -> float:
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return float(F.cross_entropy(flat, targets.reshape(-1), reduction="sum"))


def _run_from_hook(model: Any, tokens: torch.Tensor, hook: str, patched: torch.Tensor):
    """Logits with ``hook`` replaced by ``patched``; residual-stream hooks restart from that layer."""
    parts = hook.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in ("hook_resid_pre", "hook_resid_post"):
        layer = int(parts[1]) + (1 if parts[2] == "hook_resid_post" else 0)
        if layer >= model.cfg.n_layers:
            return model.unembed(model.ln_final(patched))
        return model(patched, start_at_layer=layer, tokens=tokens)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda act, hook: patched.to(act.dtype))])


@torch.no_grad()
def sae_quality(
    model: Any,
    sae: Any,
    texts: list[str],
    *,
    context_size: int = 256,
    batch_size: int = 8,
    max_tokens: int = 100_000,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> SAEQuality:
    """Measure ``sae`` on ``texts`` (documents are packed into rows like in training)."""
    from interp_steer.saes.training import tokenize_corpus

    if not texts:
        raise InterpSteerError("sae_quality needs at least one text")
    hook = sae.cfg.metadata.hook_name
    rows = tokenize_corpus(texts, model.tokenizer, context_size, max_tokens=max_tokens, progress=False)
    rows = rows[: max(1, max_tokens // context_size)].to(model.cfg.device)
    special = _special_ids(model.tokenizer).to(rows.device)
    d_sae = int(sae.cfg.d_sae)
    fire_counts = torch.zeros(d_sae, dtype=torch.float64)
    sq_err = total_var = l0_sum = 0.0
    n_valid = 0
    sum_h = None
    sum_h2 = 0.0
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n_pred = 0
    for start in tqdm(range(0, rows.shape[0], batch_size), desc="SAE quality", disable=not progress, leave=False):
        tokens = rows[start : start + batch_size]
        valid = ~torch.isin(tokens, special)
        logits, cache = model.run_with_cache(tokens, names_filter=[hook])
        h = cache[hook]
        codes = sae.encode(h)
        recon = sae.decode(codes)
        hv, rv, cv = h[valid].double(), recon[valid].double(), codes[valid]
        sq_err += float(((hv - rv) ** 2).sum())
        sum_h = hv.sum(0) if sum_h is None else sum_h + hv.sum(0)
        sum_h2 += float((hv**2).sum())
        l0_sum += float((cv > 0).sum())
        fire_counts += (cv > 0).sum(0).double().cpu()
        n_valid += int(valid.sum())

        targets = tokens[:, 1:]
        ce["clean"] += _summed_ce(logits, targets)
        spliced = _run_from_hook(model, tokens, hook, torch.where(valid[..., None], recon, h))
        ce["sae"] += _summed_ce(spliced, targets)
        ce["zero"] += _summed_ce(_run_from_hook(model, tokens, hook, torch.where(valid[..., None], 0.0, h)), targets)
        n_pred += targets.numel()
    if n_valid == 0:
        raise InterpSteerError("no non-special tokens in the evaluation texts")
    assert sum_h is not None
    total_var = sum_h2 - float((sum_h**2).sum()) / n_valid
    freq = fire_counts / n_valid
    clean, spliced, zero = (ce[k] / n_pred for k in ("clean", "sae", "zero"))
    return SAEQuality(
        explained_variance=1.0 - sq_err / total_var,
        mean_l0=l0_sum / n_valid,
        dead_fraction=float((freq == 0).double().mean()),
        dense_fraction=float((freq > dense_threshold).double().mean()),
        ce_clean=clean,
        ce_sae=spliced,
        ce_zero=zero,
        ce_loss_recovered=(zero - spliced) / (zero - clean) if zero != clean else float("nan"),
        n_tokens=n_valid,
        dense_threshold=dense_threshold,
    )
