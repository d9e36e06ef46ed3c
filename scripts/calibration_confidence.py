"""How often does a λ chosen on one sample of held-out documents break the fluency bound on another sample?

The measurement behind ``calibrate_strength(confidence=...)`` and the demo's ``--ppl-confidence 0.9``. It scores
the demo's YaPO vector (Morocco, sparse default; the one saved by the basis ablation under
``benchmarks/results/basis/2026-12-04/demo_4096``) on 192 held-out corpus documents (the demo's 32 calibration documents,
its 32 report documents and 128 others, 128 tokens each) at the strengths around the demo's edge of the bound,
then draws random disjoint (calibration, report) samples from those documents. For each draw it walks the grid
upwards like :func:`calibrate_strength` — with the measured ratio, or with its one-sided bootstrap upper bound
(:func:`ratio_upper_bound`) — and checks the ratio of the chosen λ on the report sample.

    python scripts/calibration_confidence.py [--draws 200] [--output benchmarks/results/calibration_confidence.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTOR = ROOT / "benchmarks/results/basis/2026-12-04/demo_4096/yapo/vector.safetensors"
STRENGTHS = (8.0, 12.0, 13.9, 14.9)  # the demo's grid around its edge (13.9, 14.9 were its refinement points)


def _ratio(docs: list[dict], lam: str) -> float:
    return math.exp(sum(d[lam][0] - d["base"][0] for d in docs) / sum(d["base"][1] for d in docs))


def simulate(docs: list[dict], n_cal: int, n_rep: int, confidence: float | None, draws: int,
             max_ratio: float = 1.2) -> dict:
    from interp_steer.evaluation.calibration import ratio_upper_bound

    lams = [str(x) for x in STRENGTHS]
    rng = random.Random(0)
    picks, reports = [], []
    pool = list(docs)
    for _ in range(draws):
        rng.shuffle(pool)
        cal, rep = pool[:n_cal], pool[n_cal : n_cal + n_rep]
        pick = None
        for lam in lams:
            r = _ratio(cal, lam) if confidence is None else ratio_upper_bound(
                [d["base"] for d in cal], [d[lam] for d in cal], confidence, resamples=500)
            if r > max_ratio:
                break
            pick = lam
        picks.append(pick)
        if pick is not None:
            reports.append(_ratio(rep, pick))
    return {"n_calibration": n_cal, "n_report": n_rep, "confidence": confidence, "draws": draws,
            "chosen": dict(Counter(str(p) for p in picks)),
            "report_above_bound": sum(r > max_ratio for r in reports) / max(1, len(reports)),
            "report_mean": sum(reports) / max(1, len(reports)), "report_max": max(reports, default=None)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--output", default=str(ROOT / "benchmarks/results/calibration_confidence.json"))
    args = p.parse_args(argv)

    from interp_steer import SteeringVector, load_model, load_sae
    from interp_steer.evaluation.calibration import calibration_texts
    from interp_steer.evaluation.openended import token_nll
    from interp_steer.evaluation.preservation import _text_sequences, default_texts
    from interp_steer.evaluation.shared_layers import SharedLayers
    from interp_steer.io import write_text_atomic

    model = load_model()
    sae = load_sae(model=model)
    vec = SteeringVector.load(VECTOR, model=model, sae=sae)
    cal = calibration_texts(model.tokenizer, 32)  # the demo's calibration documents
    rep = default_texts(32, tokenizer=model.tokenizer)  # the demo's report documents
    taken = set(cal) | set(rep)
    extra = [t for t in default_texts(192, seed=7, tokenizer=model.tokenizer) if t not in taken][:128]
    shared = SharedLayers.for_vectors(model, [vec])
    docs: list[dict] = []
    samples: dict[str, dict] = {}
    for name, texts in (("calibration", cal), ("report", rep), ("other", extra)):
        seqs = _text_sequences(model.tokenizer, texts, 128)
        base = token_nll(model, seqs, [1] * len(seqs), shared=shared)
        steered = {str(lam): token_nll(model, seqs, [1] * len(seqs), vector=vec, strength=lam, sae=sae,
                                       shared=shared) for lam in STRENGTHS}
        part = [{"sample": name, "base": base[i], **{k: v[i] for k, v in steered.items()}} for i in range(len(seqs))]
        samples[name] = {"n": len(part), **{f"ratio_{k}": _ratio(part, k) for k in steered}}
        docs.extend(part)
        print(name, samples[name], flush=True)
    pooled = {f"ratio_{k}": _ratio(docs, str(k)) for k in STRENGTHS}
    print("all", len(docs), pooled, flush=True)
    sims = [simulate(docs, n, n, c, args.draws) for n in (32, 64) for c in (None, 0.8, 0.9, 0.95)]
    for s in sims:
        print(json.dumps(s), flush=True)
    out = {"vector": str(VECTOR.relative_to(ROOT)), "strengths": STRENGTHS, "ppl_tokens": 128, "samples": samples,
           "pooled": pooled, "n_documents": len(docs), "simulations": sims}
    write_text_atomic(Path(args.output), json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
