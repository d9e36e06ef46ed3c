"""Culture MCQ scoring throughput (items/s), unsteered, side by side in one run:

* ``loglik`` with shared prompt prefixes (each question through the model once, options on a KV cache: the
  default), ``loglik`` one full sequence per option (the reference path), and ``letter`` scoring;
* the largest score difference between the two ``loglik`` paths (they compute the same thing).

    python benchmarks/bench_mcq.py [--batch-size 16] [--repeats 1] [--max-items N]
"""

from __future__ import annotations

import argparse

from common import save, timed

from interp_steer import load_model
from interp_steer.data.loaders import load_culture
from interp_steer.evaluation.mcq import culture_report, score_mcq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16, help="option sequences (loglik) or items (letter) per forward")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-items", type=int, default=None)
    args = ap.parse_args()
    model = load_model()
    items = load_culture(split="test")[: args.max_items]
    variants = {"loglik_shared_prefix": {"method": "loglik", "shared_prefix": True},
                "loglik_full_sequences": {"method": "loglik", "shared_prefix": False},
                "letter": {"method": "letter"}}
    results, scores = {}, {}
    for name, kw in variants.items():
        seconds, scored = timed(lambda kw=kw: score_mcq(model, items, batch_size=args.batch_size, **kw),
                                repeats=args.repeats, warmup=0)
        scores[name] = scored
        report = culture_report(scored)["overall"]
        results[name] = {"seconds": round(seconds, 2), "items_per_s": round(len(items) / seconds, 2),
                         "accuracy": report["accuracy"], "rca": report.get("rca"), "pnlg": report.get("pnlg")}
        print(name, results[name], flush=True)
    diff = max(abs(a - b) for x, y in zip(scores["loglik_shared_prefix"], scores["loglik_full_sequences"], strict=True)
               for a, b in zip(x.scores, y.scores, strict=True))
    speedup = results["loglik_full_sequences"]["seconds"] / results["loglik_shared_prefix"]["seconds"]
    save("mcq", {"settings": {"items": len(items), "options_per_item": 4, "batch_size": args.batch_size,
                              "repeats": args.repeats, "model": model.cfg.model_name},
                 "results": results, "shared_prefix_speedup": round(speedup, 2),
                 "max_abs_score_difference": diff})


if __name__ == "__main__":
    main()
