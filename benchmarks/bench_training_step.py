"""Per-step cost of the BiPO/YaPO trainer: fast step vs a reference-style step, side by side in one run.

Reference-style step: steered forward + backward through the whole model, a separate unsteered reference
forward every step, full-vocabulary logits at every position. Fast step: prefix up to the hook without grad,
cached reference log-probs, logits only where a response token is predicted, sequences batched by length
(``length_buckets``). ``fast_one_padded_batch`` is the fast step with every micro-batch padded to its longest
sequence, as before the length buckets: the buckets' own gain, measured side by side. Target: >= 3x against the
reference style, same loss to 1e-4.

    python benchmarks/bench_training_step.py [--method yapo --batch-size 4 --steps 5]
    python benchmarks/bench_training_step.py --data bipo:jailbreak   # long chosen, short rejected answers
"""

from __future__ import annotations

import argparse
import time

import torch
from common import SHARED_DATA, save

from interp_steer import load_model, load_sae
from interp_steer.methods import preference
from interp_steer.methods.preference import (
    compute_reference_logp,
    fast_step_loss,
    make_intervention,
    prepare_pairs,
    reference_step_loss,
)


def _pairs(n: int, behaviour: str = "power-seeking"):
    path = SHARED_DATA / "bipo" / behaviour / "train.csv"
    if path.is_file():
        from interp_steer.data.loaders import load_bipo_csv

        return load_bipo_csv(path)[:n], f"bipo/{behaviour}"
    from interp_steer.data.loaders import culture_preferences

    return culture_preferences(countries="morocco", split="train")[:n], "culture/morocco"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["yapo", "bipo"], default="yapo")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--data", choices=["bipo:power-seeking", "bipo:jailbreak"], default="bipo:power-seeking",
                    help="training pairs (culture/morocco when ../shared/data is absent)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model()
    sae = load_sae(model=model) if args.method == "yapo" else None
    hook = sae.cfg.metadata.hook_name if sae is not None else f"blocks.{args.layer}.hook_resid_post"
    examples, source = _pairs(args.batch_size * args.steps, args.data.split(":", 1)[1])
    data = prepare_pairs(model, examples)
    t0 = time.perf_counter()
    compute_reference_logp(model, data, hook, cache_prefix=True)
    ref_once = time.perf_counter() - t0
    cached_prefix = data.prefix
    width = sae.cfg.d_sae if sae is not None else model.cfg.d_model
    v = (torch.randn(width) * 0.05).requires_grad_(True)
    iv = make_intervention(args.method, v, sae)
    n_tokens = sum(len(data.ids[j]) for j in range(len(data.ids)))
    results, losses = {}, {}
    buckets = preference.length_buckets
    variants = (("reference_style", reference_step_loss, None), ("fast_prefix_recomputed", fast_step_loss, None),
                ("fast_one_padded_batch", fast_step_loss, cached_prefix), ("fast", fast_step_loss, cached_prefix))
    for name, fn, prefix in variants:
        data.prefix = prefix
        preference.length_buckets = (  # type: ignore[assignment]
            (lambda lengths, slack=0.0: [list(range(len(lengths)))]) if name == "fast_one_padded_batch" else buckets)
        times, step_losses = [], []
        for step in range(args.steps):
            idx = list(range(step * args.batch_size, (step + 1) * args.batch_size))
            direction = 1.0 if step % 2 == 0 else -1.0
            t = time.perf_counter()
            loss, _ = fn(model, data, idx, iv, hook, direction, 1.0, 0.1)
            loss.backward()
            times.append(time.perf_counter() - t)
            v.grad = None
            step_losses.append(loss.item())
        per_step = sorted(times)[len(times) // 2]
        results[name] = {"median_step_seconds": round(per_step, 4),
                         "tokens_per_s": round(n_tokens / sum(times), 1)}
        losses[name] = step_losses
        print(name, results[name])
    preference.length_buckets = buckets  # type: ignore[assignment]
    max_diff = max(abs(a - b) for a, b in zip(losses["fast"], losses["reference_style"], strict=True))
    ratio_recomputed = (results["reference_style"]["median_step_seconds"]
                        / results["fast_prefix_recomputed"]["median_step_seconds"])
    suffix = "" if args.data == "bipo:power-seeking" else "_" + args.data.split(":", 1)[1]
    save(f"training_step_{args.method}{suffix}", {
        "settings": {"method": args.method, "hook": hook, "batch_size": args.batch_size, "steps": args.steps,
                     "data": source, "sequences_per_step": 2 * args.batch_size, "model": model.cfg.model_name},
        "results": results,
        "speedup": round(results["reference_style"]["median_step_seconds"] / results["fast"]["median_step_seconds"], 2),
        "speedup_prefix_recomputed": round(ratio_recomputed, 2),
        "speedup_length_buckets": round(results["fast_one_padded_batch"]["median_step_seconds"]
                                        / results["fast"]["median_step_seconds"], 2),
        "max_abs_loss_difference": max_diff,
        "reference_logp_once_seconds": round(ref_once, 3),
        "target": "speedup >= 3 with the same loss to 1e-4",
    })


if __name__ == "__main__":
    main()
