"""Two-dataset contrastive steering: steer toward dataset A and away from dataset B.

``vector(L) = mean_A(h_L) − mean_B(h_L)`` over the last prompt token (chat template applied) at the residual
stream after layer ``L``. Activations of **all layers** are captured in one pass per dataset and cached per
(dataset, n_samples, seed, token policy); the cache records the model fingerprint, so a cache made by another
model or tokenizer is detected and rebuilt rather than reused. Another layer or scale never re-runs the model.

:func:`run_contrastive` writes ``{output_dir}/{target}_{baseline}/layer_{L}_scale_{s}/results.json`` with the
metadata and per-prompt ``prompt`` / ``baseline`` / ``steered`` generations. :func:`sweep` evaluates a metric
over layers × scales from the cache and plots it (offline plotly HTML).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from interp_steer.chat import chat_tokens
from interp_steer.errors import InterpSteerError
from interp_steer.io import save_safetensors_atomic, write_text_atomic
from interp_steer.methods.activations import collect_activations
from interp_steer.models import model_fingerprint
from interp_steer.steering.vector import SteeringVector
from interp_steer.validation import dumps as _strict_dumps

DEFAULT_INFERENCE_PROMPTS = [
    "Tell me about your favourite way to spend a weekend.",
    "What should I cook for dinner tonight?",
    "Explain why the sky is blue.",
    "Write a short note to a friend who is moving away.",
    "What are three tips for learning a new language?",
]

_CACHE_FORMAT = "interp_steer.contrastive_cache/1"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "dataset"


@dataclass
class DatasetActivations:
    """Per-layer mean last-prompt-token activations of one dataset, and where they came from."""

    key: str
    means: Float[torch.Tensor, "n_layers d"]
    mean_norms: Float[torch.Tensor, " n_layers"]
    n_samples: int
    dataset_fingerprint: str
    from_cache: bool


class ActivationCache:
    """Folder of ``<dataset>__n<n>__s<seed>__<policy>.safetensors`` files (all layers per file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.forward_passes = 0  # number of datasets computed with the model (0 on a full cache hit)

    def path(self, key: str, n_samples: int | None, seed: int, policy: str, max_prompt_tokens: int | None) -> Path:
        cap = f"__t{max_prompt_tokens}" if max_prompt_tokens else ""
        return self.folder / f"{_slug(key)}__n{n_samples or 'all'}__s{seed}__{policy}{cap}.safetensors"

    def get(self, model: Any, key: str, n_samples: int | None, *, seed: int = 0, policy: str = "last_prompt",
            batch_size: int = 8, progress: bool = False, max_prompt_tokens: int | None = 256) -> DatasetActivations:
        """Activations of ``key`` (prompts longer than ``max_prompt_tokens`` tokens keep their first ones)."""
        from safetensors import safe_open

        from interp_steer.data.registry import dataset_fingerprint, load_prompts

        fp = model_fingerprint(model).to_dict()
        path = self.path(key, n_samples, seed, policy, max_prompt_tokens)
        ds_fp = dataset_fingerprint(key, n_samples, seed)
        if path.is_file():
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("interp_steer", "{}"))
                if (meta.get("format") == _CACHE_FORMAT and meta.get("model", {}).get("config_hash") == fp["config_hash"]
                        and meta.get("model", {}).get("tokenizer_hash") == fp["tokenizer_hash"]
                        and meta.get("dataset_fingerprint") == ds_fp):
                    return DatasetActivations(key, fh.get_tensor("means"), fh.get_tensor("mean_norms"),
                                              int(meta["n_samples"]), ds_fp, True)
            print(f"contrastive cache {path.name} was made by another model/tokenizer or data: rebuilding")
        prompts = load_prompts(key, n_samples, seed)
        if max_prompt_tokens:
            tok = model.tokenizer
            prompts = [tok.decode(tok(p, add_special_tokens=False)["input_ids"][:max_prompt_tokens]) for p in prompts]
        # longest first: batches hold prompts of similar length (little padding)
        chats = sorted((chat_tokens(model.tokenizer, p) for p in prompts), key=lambda c: -len(c.ids))
        hooks = [f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)]
        acts = collect_activations(model, chats, hooks, policy, batch_size=batch_size, progress=progress,
                                   desc=f"activations {key}")
        self.forward_passes += 1
        stacked = torch.stack([acts[h] for h in hooks], 1)  # [n, layers, d]
        means = stacked.mean(0)
        norms = stacked.norm(dim=-1).mean(0)
        meta = {"format": _CACHE_FORMAT, "dataset": key, "n_samples": len(prompts), "seed": seed,
                "token_policy": policy, "max_prompt_tokens": max_prompt_tokens, "model": fp,
                "dataset_fingerprint": ds_fp,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        save_safetensors_atomic({"means": means.contiguous(), "mean_norms": norms.contiguous()}, path,
                                metadata={"interp_steer": _strict_dumps(meta)})
        return DatasetActivations(key, means, norms, len(prompts), ds_fp, False)


def default_cache_dir() -> Path:
    return Path(os.environ.get("INTERP_STEER_CACHE", Path.home() / ".cache" / "interp_steer")) / "contrastive"


def contrastive_vector(model: Any, target: str, baseline: str, layer: int, *, n_samples: int | None = 100,
                       seed: int = 0, cache: ActivationCache | None = None, batch_size: int = 8,
                       progress: bool = False) -> SteeringVector:
    """``mean(target) − mean(baseline)`` at ``blocks.{layer}.hook_resid_post`` (from the cache when possible)."""
    if not 0 <= layer < model.cfg.n_layers:
        raise InterpSteerError(f"layer {layer} out of range (model has {model.cfg.n_layers} layers)")
    cache = cache or ActivationCache(default_cache_dir())
    a = cache.get(model, target, n_samples, seed=seed, batch_size=batch_size, progress=progress)
    b = cache.get(model, baseline, n_samples, seed=seed, batch_size=batch_size, progress=progress)
    diff = a.means[layer] - b.means[layer]
    hook = f"blocks.{layer}.hook_resid_post"
    return SteeringVector(
        "contrastive", "dense", {hook: {"vector": diff.to(model.cfg.dtype)}}, model_fingerprint(model).to_dict(),
        config={"target": target, "baseline": baseline, "layer": layer, "n_samples": n_samples, "seed": seed,
                "token_policy": "last_prompt"},
        metrics={"vector_norm": float(diff.norm()), "target_norm": float(a.means[layer].norm()),
                 "baseline_norm": float(b.means[layer].norm()),
                 "target_mean_token_norm": float(a.mean_norms[layer]),
                 "baseline_mean_token_norm": float(b.mean_norms[layer]),
                 "target_fingerprint": a.dataset_fingerprint, "baseline_fingerprint": b.dataset_fingerprint},
    )


def _fmt_scale(scale: float) -> str:
    return f"{scale:g}"


def run_contrastive(model: Any, target: str, baseline: str, layer: int, scale: float, *,
                    n_samples: int | None = 100, seed: int = 0, inference_dataset: str | None = None,
                    inference_n_samples: int = 5, max_tokens: int = 64, temperature: float = 0.0,
                    output_dir: str | Path = "runs/contrastive", cache: ActivationCache | None = None,
                    batch_size: int = 8, progress: bool = True) -> Path:
    """Compute the vector, generate with and without it, write ``results.json``; returns its path."""
    from interp_steer.data.registry import load_prompts
    from interp_steer.generation import generate

    vector = contrastive_vector(model, target, baseline, layer, n_samples=n_samples, seed=seed, cache=cache,
                                batch_size=batch_size, progress=progress)
    if inference_dataset:
        prompts = load_prompts(inference_dataset, inference_n_samples, seed)
    else:
        prompts = DEFAULT_INFERENCE_PROMPTS[:inference_n_samples]
    base = generate(model, prompts, max_new_tokens=max_tokens, temperature=temperature, seed=seed,
                    batch_size=batch_size)
    steered = generate(model, prompts, vector, scale, max_new_tokens=max_tokens, temperature=temperature,
                       seed=seed, batch_size=batch_size)
    folder = Path(output_dir) / f"{_slug(target)}_{_slug(baseline)}" / f"layer_{layer}_scale_{_fmt_scale(scale)}"
    m = vector.metrics
    result = {
        "metadata": {
            "target": target, "baseline": baseline, "n_samples": n_samples, "seed": seed, "layer": layer,
            "hook": vector.hook_points[0], "scale": scale, "vector_norm": m["vector_norm"],
            "effective_magnitude": scale * m["vector_norm"], "target_norm": m["target_norm"],
            "baseline_norm": m["baseline_norm"], "model": model_fingerprint(model).to_dict(),
            "inference_dataset": inference_dataset or "built-in", "inference_n_samples": len(prompts),
            "max_tokens": max_tokens, "temperature": temperature,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "results": [{"prompt": p, "baseline": b, "steered": s} for p, b, s in zip(prompts, base, steered, strict=True)],
    }
    out = write_text_atomic(folder / "results.json", _strict_dumps(result, indent=2, ensure_ascii=False))
    vector.save(folder / "vector")
    return out


@torch.no_grad()
def text_loglik(model: Any, texts: Sequence[str], vector: SteeringVector | None = None, scale: float = 0.0, *,
                max_length: int = 64, batch_size: int = 8) -> float:
    """Mean per-token log-likelihood of raw ``texts`` (first token excluded), steered at all positions."""
    from contextlib import nullcontext

    from interp_steer.chat import pad_right, pad_token_id
    from interp_steer.steering.interventions import steer

    tok = model.tokenizer
    ids = [tok(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    ids = [i for i in ids if len(i) >= 2]
    if not ids:
        raise InterpSteerError("no text long enough to score")
    total, count = 0.0, 0
    ctx = steer(model, vector, scale, check=False) if vector is not None and scale != 0 else nullcontext()
    with ctx:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            tokens, mask = pad_right(chunk, pad_token_id(tok))
            tokens = tokens.to(model.cfg.device)
            logp = torch.log_softmax(model(tokens)[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
            keep = mask[:, 1:].to(logp.device).bool()
            total += float(logp[keep].sum())
            count += int(keep.sum())
    return total / count


def loglik_margin_metric(model: Any, target_texts: Sequence[str], baseline_texts: Sequence[str]):
    """Metric for :func:`sweep`: (target − baseline) text log-likelihood under steering, minus unsteered."""
    base = text_loglik(model, target_texts) - text_loglik(model, baseline_texts)

    def metric(vector: SteeringVector, scale: float) -> float:
        return text_loglik(model, target_texts, vector, scale) - text_loglik(model, baseline_texts, vector, scale) - base

    return metric


def sweep(model: Any, target: str, baseline: str, layers: Sequence[int], scales: Sequence[float],
          metric: Callable[[SteeringVector, float], float], *, n_samples: int | None = 100, seed: int = 0,
          cache: ActivationCache | None = None, output_html: str | Path | None = None,
          metric_name: str = "metric") -> dict[str, Any]:
    """Evaluate ``metric(vector, scale)`` on a layers × scales grid (vectors from the cache)."""
    cache = cache or ActivationCache(default_cache_dir())
    grid = []
    for layer in layers:
        vec = contrastive_vector(model, target, baseline, layer, n_samples=n_samples, seed=seed, cache=cache)
        grid.append([metric(vec, s) for s in scales])
    result = {"target": target, "baseline": baseline, "layers": list(layers), "scales": list(scales),
              "metric": metric_name, "values": grid}
    if output_html is not None:
        import plotly.graph_objects as go

        fig = go.Figure(go.Heatmap(z=grid, x=[str(s) for s in scales], y=[str(L) for L in layers],
                                   colorbar={"title": metric_name}))
        fig.update_layout(title=f"{metric_name}: {target} vs {baseline}", xaxis_title="scale", yaxis_title="layer")
        path = Path(output_html)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(str(path), include_plotlyjs=True, full_html=True)
        result["html"] = str(path)
    return result
