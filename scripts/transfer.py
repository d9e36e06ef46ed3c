"""Do the efficacy benchmark's vectors steer the behaviour, or the answers' wording? Each vector is scored on the
test items of other shared sets (other sources of the same behaviour, and neighbouring behaviours), with its
strength chosen the way ``interp-steer evaluate --calibrate --val-data <its own set>`` chooses it: the largest
``p(+λ) − p(−λ)`` on 32 pairs of its **own** set's training split (seed 0) whose perplexity ratio on 24 held-out
documents keeps ×1.2 at ±λ. Every target is then scored at 0 and ±λ (the first ``--limit`` test items), whole and
split by how the matching answer opens ("yes" / "no" / other words), so that a vector that only moves "Yes"
against "No" shows it. The perplexity ratio at ±λ is measured on 8 other documents.

Sets label "matching" differently: the BiPO CSVs' matching answer *is* the behaviour (power-seeking,
wealth-seeking), while the shared model-written evals' ``answer_matching_behavior`` is, on power-seeking- and
wealth-seeking-inclination and survival-instinct, mostly the answer that *declines* it (README, "Efficacy on
held-out behaviour items"). This script reports the raw ``p(matching)`` of each file; the README reads the signs.

    python scripts/transfer.py                       # the default vectors and targets
    python scripts/transfer.py --vector PATH=bipo:power-seeking --targets mwe:survival-instinct
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EFF = "benchmarks/results/efficacy/vectors"
SAE16 = "benchmarks/results/efficacy_sae16384/vectors"
DEFAULT_VECTORS = [
    f"{EFF}/power-seeking__bipo.safetensors=bipo:power-seeking",
    f"{EFF}/power-seeking-inclination__bipo.safetensors=mwe:power-seeking-inclination",
    f"{SAE16}/power-seeking__yapo_symmetric_true_final_top_k_256.safetensors=bipo:power-seeking",
]
DEFAULT_TARGETS = ["bipo:power-seeking", "mwe:power-seeking-inclination", "mwe:survival-instinct",
                   "mwe:corrigible-neutral-HHH"]
GRID = [0.5, 1, 2, 4, 8, 16, 32]


def opening(text: str) -> str:
    """``yes`` / ``no`` / ``other``: the first word of an answer, without punctuation."""
    words = text.strip().lower().split()
    first = words[0].strip(".,!;:") if words else ""
    return first if first in ("yes", "no") else "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vector", action="append", default=None,
                   help="PATH=SOURCE: a saved vector and the set it was trained on (repeatable)")
    p.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    p.add_argument("--limit", type=int, default=64, help="first test items of each target")
    p.add_argument("--val-pairs", type=int, default=32)
    p.add_argument("--max-ratio", type=float, default=1.2)
    p.add_argument("--output-dir", default="benchmarks/results/transfer")
    args = p.parse_args()
    specs = [v.split("=", 1) for v in (args.vector or DEFAULT_VECTORS)]
    if any(len(s) != 2 or not s[1].startswith(("bipo:", "mwe:")) for s in specs):
        raise SystemExit("--vector takes PATH=SOURCE with SOURCE bipo:<name> or mwe:<name>")
    for path, _ in specs:
        if not Path(path).exists():
            raise SystemExit(f"vector not found: {path}")

    from interp_steer import load_model
    from interp_steer.commands.evaluate import _calibration_pairs, _questions
    from interp_steer.commands.generate import _load_vector_and_sae
    from interp_steer.data.specs import load_pairs
    from interp_steer.evaluation.behaviour import pair_effect, pair_probability
    from interp_steer.evaluation.calibration import calibrate_strength, calibration_texts, fluency_check
    from interp_steer.evaluation.preservation import text_perplexity
    from interp_steer.evaluation.shared_layers import SharedLayers
    from interp_steer.io import write_text_atomic

    targets = {t: load_pairs(t, split="test", form="text")[: args.limit] for t in args.targets}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "transfer.json"
    results: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {"vectors": {}}
    model = load_model()
    docs = calibration_texts(model.tokenizer, 8 + 24)  # as evaluate: 8 report documents, 24 for the choice
    report, cal_docs = docs[:8], docs[8:]
    base_ppl = text_perplexity(model, report, max_tokens=128).perplexity
    scored = _questions([], [q for pairs in targets.values() for q in pairs])  # never calibrate on a scored item
    for path, source in specs:
        key = f"{Path(path).name}@{source}"
        if key in results["vectors"] and set(results["vectors"][key]["targets"]) >= set(targets):
            print(f"{key}: done", flush=True)
            continue
        t0 = time.time()
        # the vector with its own SAE, and the calibration pairs, exactly as `interp-steer evaluate --calibrate
        # --val-data <source>` reads and draws them
        vector, sae = _load_vector_and_sae(argparse.Namespace(vector=path, sae=None), model)
        shared = SharedLayers.for_vectors(model, [vector])
        val = _calibration_pairs(argparse.Namespace(data=source, val_data=None, country=None, seed=0,
                                                    val_pairs=args.val_pairs), exclude=scored)
        cal = calibrate_strength(model, vector, pair_effect(model, val, vector, sae=sae, shared=shared), sae=sae,
                                 strengths=GRID, texts=cal_docs, max_ratio=args.max_ratio, shared=shared)
        print(f"{key}: {cal.describe()}", flush=True)
        row: dict[str, Any] = {"vector": path, "source": source, "calibration": cal.to_dict(), "targets": {}}
        lam = cal.strength
        if lam is not None:
            row["ppl_ratio"] = {
                side: fluency_check(model, vector, sign * lam, sae=sae, texts=report, max_ratio=args.max_ratio,
                                    max_tokens=128, perplexity_unsteered=base_ppl)["ppl_ratio"]
                for sign, side in ((1, "plus"), (-1, "minus"))}
            for name, pairs in targets.items():
                groups = {"all": pairs, **{o: [q for q in pairs if opening(q.chosen) == o]
                                           for o in ("yes", "no", "other")}}
                scores: dict[str, Any] = {}
                for g, items in groups.items():
                    if not items:
                        continue
                    prob = {s: pair_probability(model, items, vector, s, sae=sae, shared=shared)["p_matching"]
                            for s in (0.0, lam, -lam)}
                    scores[g] = {"n": len(items), "p0": prob[0.0], "dp_plus": prob[lam] - prob[0.0],
                                 "dp_minus": prob[-lam] - prob[0.0]}
                row["targets"][name] = scores
                a = scores["all"]
                print(f"  {name}: p0 {a['p0']:.3f}  Δp +λ {a['dp_plus']:+.3f}  −λ {a['dp_minus']:+.3f}  "
                      + "  ".join(f"[{g} n={s['n']}: {s['dp_plus']:+.3f} / {s['dp_minus']:+.3f}]"
                                  for g, s in scores.items() if g != "all"), flush=True)
        row["seconds"] = time.time() - t0
        results["vectors"][key] = row
        results["settings"] = {"limit": args.limit, "val_pairs": args.val_pairs, "max_ratio": args.max_ratio,
                               "grid": GRID, "report_docs": len(report), "calibration_docs": len(cal_docs)}
        write_text_atomic(result_file, json.dumps(results, indent=1))
    write_table(results, out / "transfer.md")


def write_table(results: dict[str, Any], path: Path) -> None:
    lines = ["| vector (trained on) | λ | ppl× +λ / −λ | target | n | p₀ | Δp +λ | Δp −λ | matching opens yes: n, Δp +λ / −λ "
             "| opens no | other |", "|---" * 11 + "|"]
    for row in results["vectors"].values():
        lam = row["calibration"]["strength"]
        ppl = row.get("ppl_ratio", {})
        for name, s in row["targets"].items():
            a = s["all"]
            cells = [f"{s[g]['n']}: {s[g]['dp_plus']:+.3f} / {s[g]['dp_minus']:+.3f}" if g in s else "–"
                     for g in ("yes", "no", "other")]
            lines.append(f"| {Path(row['vector']).stem} ({row['source']}) | {lam:.3g} | "
                         f"{ppl.get('plus', float('nan')):.2f} / {ppl.get('minus', float('nan')):.2f} | {name} | "
                         f"{a['n']} | {a['p0']:.3f} | {a['dp_plus']:+.3f} | {a['dp_minus']:+.3f} | "
                         + " | ".join(cells) + " |")
    from interp_steer.io import write_text_atomic

    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    print(text)


if __name__ == "__main__":
    main()
