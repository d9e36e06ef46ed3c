"""Strength sweeps that run the unsteered lower blocks once, against today's full forwards, side by side.

A 4-strength sweep (plus the unsteered row every sweep reports) of a vector at the shipped SAE's hook
(``blocks.15.hook_resid_post`` of 30 blocks), on the same items, timed both ways in one run:

* free-text pair probability (the efficacy measure) on a behaviour set's test pairs, for a dense vector
  (BiPO) and an SAE vector (sparse YaPO);
* the culture MCQ sweep (:func:`interp_steer.strength_sweep`, option log-likelihood with shared prompt prefixes);
* held-out perplexity at each strength (what the fluency calibration measures).

Each row reports both wall times, the ratio and the largest score difference between the two paths.

    python benchmarks/bench_shared_layers.py [--pairs 64] [--strengths 1 2 4 8] [--set bipo:power-seeking]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, save  # noqa: E402

VECTORS = RESULTS / "efficacy" / "vectors"


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="bipo:power-seeking", help="behaviour set whose test pairs are scored")
    ap.add_argument("--pairs", type=int, default=64, help="test pairs scored per strength")
    ap.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--texts", type=int, default=16, help="held-out documents for the perplexity sweep")
    ap.add_argument("--max-items", type=int, default=None, help="culture test questions (default: all)")
    args = ap.parse_args(argv)
    if not SHARED_DATA.exists():
        print(f"skipped: {SHARED_DATA} is absent (the behaviour pairs live there)")
        return 0

    from interp_steer import (
        SharedLayers,
        SteeringVector,
        load_culture,
        load_model,
        load_pairs,
        load_sae,
        pair_probability,
        strength_sweep,
        text_perplexity,
    )
    from interp_steer.evaluation.calibration import calibration_texts

    model = load_model()
    sae = load_sae(model=model)
    name = args.set.split(":")[-1]
    vectors = {kind: SteeringVector.load(VECTORS / f"{name}__{kind}", model=model, sae=sae)
               for kind in ("bipo", "yapo-sparse")}
    pairs = load_pairs(args.set, split="test", form="text")[: args.pairs]
    items = load_culture(split="test")[: args.max_items]
    texts = calibration_texts(model.tokenizer, args.texts)
    lams = [0.0, *args.strengths]
    rows: list[dict[str, Any]] = []

    def compare(label: str, run: Any, flatten: Any, n: int) -> None:
        t_full, full = _timed(lambda: run(None))
        shared = SharedLayers.for_vectors(model, [v for v in vectors.values()])
        t_shared, fast = _timed(lambda: run(shared))
        diff = max(abs(a - b) for a, b in zip(flatten(full), flatten(fast), strict=True))
        row = {"sweep": label, "strengths": lams, "n": n, "split_block": shared.split,
               "seconds_full": round(t_full, 2), "seconds_shared": round(t_shared, 2),
               "speedup": round(t_full / t_shared, 2), "max_abs_difference": diff,
               "lower_passes": shared.misses, "reused": shared.hits}
        rows.append(row)
        print(row, flush=True)

    for kind, vec in vectors.items():
        vsae = sae if vec.kind == "sae" else None
        compare(f"pair_probability/{kind}",
                lambda sh, vec=vec, vsae=vsae: [pair_probability(model, pairs, vec, lam, sae=vsae, shared=sh)
                                                 for lam in lams],
                lambda res: [r[k] for r in res for k in ("p_matching", "mean_margin")], len(pairs))
    vec = vectors["bipo"]
    compare("strength_sweep/mcq",
            lambda sh: strength_sweep(model, vec, items, args.strengths, shared=sh if sh is not None else False),
            lambda res: [r["answer_margin"] for r in res] + [r["score_shift"] for r in res], len(items))
    compare("text_perplexity",
            lambda sh: [text_perplexity(model, texts, vec, lam, max_tokens=128, shared=sh).perplexity
                        for lam in lams],
            lambda res: res, len(texts))
    save("shared_layers", {"settings": {"set": args.set, "pairs": len(pairs), "items": len(items),
                                        "texts": len(texts), "strengths": lams,
                                        "hook": next(iter(vec.tensors)), "n_layers": model.cfg.n_layers},
                           "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
