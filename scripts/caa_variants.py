"""Which CAA contrast steers free-text answers? Each variant's validation effect within the fluency bound.

The efficacy table's CAA is the mean over training pairs of (mean chosen − mean rejected response activation)
at the SAE's layer. That average runs over every response token, so it also carries the answers' content
words. This script builds other contrasts from the **same** training pairs and calibrates each exactly as the
table's CAA row (``bench_efficacy.calibrate``: largest validation ``p(+λ) − p(−λ)`` with perplexity ratio
≤ 1.2 at ±λ on the 24 calibration documents); the variant a user would pick is the one with the largest
validation effect. ``--test`` also scores the set's test items at each variant's λ (the choice never reads them).

Variants (``--variants``):

* ``response_mean`` – the table's CAA.
* ``last_response`` – the contrast at each answer's last token (steering-vectors' read position).
* ``ab_letter`` – the CAA paper's: each training pair becomes an A/B question (the two answers as options
  ``(A)`` / ``(B)`` in a seeded random order, the behaviour's letter as chosen) and the contrast is read at the
  answer-letter token.
* ``pca`` – repeng's reading: the first principal component of the per-pair response-mean differences, signed
  to agree with their mean and scaled to the mean contrast's norm (so the λ grid means the same).
* ``spread`` – the response-mean contrast of each of the seven layers ``layer − 3 … layer + 3``, each divided
  by the number of layers and applied together: the same total edit spread over more blocks.

    python scripts/caa_variants.py --set bipo:power-seeking --test \
        --output benchmarks/results/caa_variants/power-seeking.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = ("response_mean", "last_response", "ab_letter", "pca", "spread")


def ab_pairs(pairs: list[Any], seed: int) -> list[Any]:
    """Each free-text pair as an A/B question: options in a seeded random order, letters as the answers."""
    rng = random.Random(seed)
    out = []
    for p in pairs:
        first = rng.random() < 0.5  # the behaviour's answer is (A) when True
        a, b = (p.chosen, p.rejected) if first else (p.rejected, p.chosen)
        prompt = f"{p.prompt}\n\nChoices:\n(A) {a}\n(B) {b}"
        out.append(replace(p, prompt=prompt, chosen="(A)" if first else "(B)",
                           rejected="(B)" if first else "(A)"))
    return out


def pca_vector(model: Any, train: list[Any], reference: Any, hook: str) -> Any:
    """repeng-style vector: first principal component of the per-pair response-mean differences."""
    import torch

    from interp_steer.methods.activations import collect_activations, preference_chats

    chosen, rejected = preference_chats(model, train)
    diffs = (collect_activations(model, chosen, [hook], "response_mean")[hook]
             - collect_activations(model, rejected, [hook], "response_mean")[hook])
    mean = diffs.mean(0)
    _, _, vh = torch.linalg.svd(diffs - mean, full_matrices=False)
    pc = vh[0] * (1.0 if float(vh[0] @ mean) >= 0 else -1.0)
    vec = pc * mean.norm()
    tensors = {hook: {"vector": vec.to(model.cfg.dtype)}}
    return replace(reference, tensors=tensors,
                   config={**reference.config, "token_policy": "response_mean", "aggregate": "pca"},
                   metrics={**reference.metrics, "cos_with_mean": float(torch.nn.functional.cosine_similarity(
                       pc, mean, dim=0))})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True, help="bipo:<behaviour> or mwe:<name>")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--train-pairs", type=int, default=256)
    p.add_argument("--val-pairs", type=int, default=32)
    p.add_argument("--test-pairs", type=int, default=64, help="test items (0: the whole test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", action="store_true", help="also score the test items at each variant's λ")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    if args.layer < 0:
        raise SystemExit(f"--layer must be a block index >= 0, got {args.layer}")

    import bench_efficacy as be

    from interp_steer.io import write_text_atomic
    from interp_steer.methods.caa import compute_caa
    from interp_steer.models import load_model

    model = load_model()
    if args.layer >= model.cfg.n_layers:
        raise SystemExit(f"--layer: the model has {model.cfg.n_layers} blocks (0 … {model.cfg.n_layers - 1})")
    bench = be.parser().parse_args([])  # the benchmark's grid, bound and documents
    data = be.load_set(args.set, args.train_pairs, args.val_pairs, args.test_pairs, args.seed)
    train, val, test, _ = data
    base = be.baseline(model, data, bench)
    hook = f"blocks.{args.layer}.hook_resid_post"
    rows: list[dict[str, Any]] = []
    reference = None
    for variant in args.variants:
        share = 1
        t0 = time.perf_counter()
        if variant in ("response_mean", "last_response"):
            vec = compute_caa(model, train, layers=args.layer, token_policy=variant)[args.layer]
        elif variant == "ab_letter":
            vec = compute_caa(model, ab_pairs(train, args.seed), layers=args.layer,
                              token_policy="answer_letter")[args.layer]
        elif variant == "spread":
            from interp_steer.methods.caa import merge_layers

            span = [L for L in range(args.layer - 3, args.layer + 4) if 0 <= L < model.cfg.n_layers]
            per = compute_caa(model, train, layers=span)
            per = {L: replace(v, tensors={h: {"vector": t["vector"] / len(span)} for h, t in v.tensors.items()})
                   for L, v in per.items()}
            vec, share = merge_layers(per, span), len(span)
        else:
            reference = reference or compute_caa(model, train, layers=args.layer)[args.layer]
            vec = pca_vector(model, train, reference, hook)
        if variant == "response_mean":
            reference = vec
        v = vec.tensors[hook]["vector"].float() * share  # spread: this layer's undivided part
        row: dict[str, Any] = {"variant": variant, "norm": float(v.norm())}
        if reference is not None and variant != "response_mean":
            r = reference.tensors[hook]["vector"].float()
            row["cos_with_response_mean"] = float(v @ r / (v.norm() * r.norm()))
        row.update(be.calibrated_shifts(model, vec, val, test if args.test else None, base, bench))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    found = [r for r in rows if r["val_effect"] is not None]
    chosen = max(found, key=lambda r: r["val_effect"])["variant"] if found else None
    out = {"set": args.set, "layer": args.layer, "train_pairs": args.train_pairs, "val_pairs": args.val_pairs,
           "test_pairs": len(test), "seed": args.seed, "p_val_unsteered": base["p_val"],
           "p_test_unsteered": base["p_test"], "chosen_by_validation": chosen, "rows": rows}
    write_text_atomic(Path(args.output), json.dumps(out, indent=2))
    print(f"variant chosen on validation: {chosen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
