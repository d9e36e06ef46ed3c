"""Culture MCQ scoring throughput (items/s), option log-likelihood and letter scoring, unsteered.

    python benchmarks/bench_mcq.py [--batch-size 16]
"""

from __future__ import annotations

import argparse

from common import save, timed

from interp_steer import load_model
from interp_steer.data.loaders import load_culture
from interp_steer.evaluation.mcq import culture_report, score_mcq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    model = load_model()
    items = load_culture(split="test")
    results = {}
    for method in ("loglik", "letter"):
        seconds, scores = timed(lambda m=method: score_mcq(model, items, method=m, batch_size=args.batch_size),
                                repeats=args.repeats, warmup=0)
        report = culture_report(scores)["overall"]
        results[method] = {"seconds": round(seconds, 2), "items_per_s": round(len(items) / seconds, 2),
                           "accuracy": report["accuracy"], "rca": report.get("rca"), "pnlg": report.get("pnlg")}
        print(method, results[method])
    save("mcq", {"settings": {"items": len(items), "options_per_item": 4, "batch_size": args.batch_size,
                              "model": model.cfg.model_name}, "results": results})


if __name__ == "__main__":
    main()
