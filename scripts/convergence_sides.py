"""Where does a preference vector's held-out loss come from, direction by direction?

The paper-recipe convergence runs (``analyses/convergence.py --preset paper``) train on 1,000 jailbreak pairs whose
chosen (matching) answers are long compliances and whose rejected answers are short refusals, and the BiPO loss
sums each answer's log-probs. A strength that degrades the model everywhere lowers a long answer's summed log-prob
more than a short one's, so it could "win" the −λ direction (push the compliance down) without steering anything.
This script tells the two apart for each saved vector, at the training strength (λ = 1) and its negative, on the
first ``--pairs`` held-out (test-split) pairs:

* the summed log-prob margin shift (what the loss sees), its loss ``−log σ(β·d·Δmargin)``, and its two parts:
  the chosen answers' summed log-prob change and the rejected answers' (minus);
* the mean per-token NLL change of the chosen and of the rejected answers (a generic degradation raises both);
* the perplexity ratio on ``--docs`` held-out corpus documents (128 tokens each) at ±λ.

    python scripts/convergence_sides.py --output benchmarks/results/convergence_paper/sides.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "convergence_paper"
DEFAULT_VECTORS = [RUNS / "yapo" / "runs" / "yapo_lr0.0005" / "vector.safetensors",
                   RUNS / "bipo" / "runs" / "bipo_lr0.0005" / "vector.safetensors"]


def softplus(x: float) -> float:
    """``log(1 + e^x)`` without overflow: the loss ``−log σ(z)`` is ``softplus(−z)``."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def side(model: Any, data: Any, vector: Any, sae: Any, strength: float, base: list[tuple[float, int]],
         beta: float) -> dict[str, Any]:
    """The figures of one strength against the unsteered ``base`` token NLLs (one entry per sequence, chosen
    and rejected interleaved as :func:`prepare_pairs` gives them)."""
    from interp_steer.evaluation.openended import token_nll

    steered = token_nll(model, data.ids, data.response_start, vector=vector, strength=strength,
                        sae=sae if vector.kind == "sae" else None)
    n = len(base) // 2
    shifts, from_chosen, from_rejected, chosen_tok, rejected_tok = [], [], [], [], []
    for i in range(n):
        (c0, nc), (r0, nr) = base[2 * i], base[2 * i + 1]
        (c1, _), (r1, _) = steered[2 * i], steered[2 * i + 1]
        from_chosen.append(-(c1 - c0))  # Δ log p(chosen), summed over its tokens
        from_rejected.append(r1 - r0)  # −Δ log p(rejected)
        shifts.append(from_chosen[-1] + from_rejected[-1])  # Δ[log p(chosen) − log p(rejected)]
        chosen_tok.append((c1 - c0) / nc)
        rejected_tok.append((r1 - r0) / nr)
    sign = 1.0 if strength > 0 else -1.0  # the loss of direction d scores d·Δmargin
    losses = [softplus(-beta * sign * s) for s in shifts]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"strength": strength, "margin_shift": mean(shifts), "loss": mean(losses),
            "margin_shift_chosen": mean(from_chosen), "margin_shift_rejected": mean(from_rejected),
            "nll_per_token_chosen": mean(chosen_tok), "nll_per_token_rejected": mean(rejected_tok)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vector", nargs="+", type=Path, default=DEFAULT_VECTORS,
                    help="saved vectors (default: the two paper-recipe convergence runs' kept vectors)")
    ap.add_argument("--data", default="bipo:jailbreak", help="the pairs' set; its test split is scored")
    ap.add_argument("--pairs", type=int, default=32, help="first N test pairs (default 32)")
    ap.add_argument("--docs", type=int, default=24, help="held-out corpus documents for the perplexity ratio")
    ap.add_argument("--strength", type=float, default=1.0, help="λ (default 1, the training strength)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.vector if not p.exists()]
    if missing:
        sys.exit(f"convergence_sides: no vector at {', '.join(missing)}")
    if args.pairs < 1 or args.docs < 1 or not args.strength > 0:
        sys.exit("convergence_sides: --pairs and --docs must be ≥ 1 and --strength > 0")

    from interp_steer.commands.generate import _load_vector_and_sae
    from interp_steer.data.specs import load_pairs
    from interp_steer.evaluation.calibration import calibration_texts, heldout_ratio
    from interp_steer.evaluation.openended import token_nll
    from interp_steer.io import write_text_atomic
    from interp_steer.methods.preference import prepare_pairs
    from interp_steer.models import load_model
    from interp_steer.steering.vector import SteeringVector

    t0 = time.perf_counter()
    model = load_model()
    pairs = load_pairs(args.data, split="test")[: args.pairs]
    data = prepare_pairs(model, pairs)
    base = token_nll(model, data.ids, data.response_start)
    docs = calibration_texts(model.tokenizer, n=args.docs)
    lengths = [(base[2 * i][1], base[2 * i + 1][1]) for i in range(len(pairs))]
    rows = []
    for path in args.vector:
        vector, sae = _load_vector_and_sae(argparse.Namespace(sae=None), model, SteeringVector.load(path))
        row: dict[str, Any] = {"vector": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                               "method": vector.method, "kind": vector.kind}
        for lam in (args.strength, -args.strength):
            key = "plus" if lam > 0 else "minus"
            row[key] = side(model, data, vector, sae, lam, base, args.beta)
            row[key]["ppl_ratio"] = heldout_ratio(model, docs, vector, lam, sae=sae)["ppl_ratio"]
            print(f"{vector.method} λ={lam:+g}: " + ", ".join(f"{k} {v:.4g}" for k, v in row[key].items()
                                                            if k != "strength"), flush=True)
        rows.append(row)
    result = {"data": args.data, "split": "test", "n_pairs": len(pairs), "n_docs": len(docs), "beta": args.beta,
              "tokens_chosen_mean": sum(c for c, _ in lengths) / len(lengths),
              "tokens_rejected_mean": sum(r for _, r in lengths) / len(lengths),
              "vectors": rows, "seconds": round(time.perf_counter() - t0, 1)}
    write_text_atomic(args.output, json.dumps(result, indent=2))
    print(f"wrote {args.output} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
