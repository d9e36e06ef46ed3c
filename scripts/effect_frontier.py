"""Effect per unit of fluency cost: which method moves the validation pairs furthest at a given perplexity ratio?

The efficacy benchmark calibrates each vector on its set's validation pairs: at every strength of its grid it
records the validation effect ``p(+λ) − p(−λ)`` (matching-answer probability, free text) and the perplexity ratio
on the 24 calibration documents (the larger of +λ and −λ). All methods of a set share those pairs and documents, so
their curves can be compared at the same cost. This script reads the saved run records (no model is loaded) and
reads each curve at fixed ratios (default ×1.05, ×1.1, ×1.15), interpolating linearly in the ratio between the last
strength below the ratio and the first above it (from ratio 1, effect 0 below the first strength). A curve that
never reaches the ratio on its grid is reported at its largest measured ratio and marked as a lower bound ``≥``.

Everything here is on validation pairs and calibration documents, the data the strengths were chosen on; the test
items are not read.

    python scripts/effect_frontier.py --output benchmarks/results/efficacy/frontier.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = ("benchmarks/results/efficacy", "benchmarks/results/efficacy_symmetric")
DEFAULT_METHODS = ("caa", "bipo", "yapo", "yapo-sparse", "yapo:symmetric=true", "yapo:symmetric=true,final_top_k=256")


def effect_at(rows: list[dict[str, Any]], ratio: float) -> tuple[float, bool]:
    """The validation effect at perplexity ``ratio`` along one calibration curve, and whether the curve reached it
    (``False``: the effect at the largest measured ratio below it, a lower bound)."""
    curve = sorted((r for r in rows if r.get("effect") is not None), key=lambda r: r["strength"])
    prev_ratio, prev_effect = 1.0, 0.0
    for r in curve:
        if r["ppl_ratio"] >= ratio:
            if r["ppl_ratio"] <= prev_ratio:  # not above the previous point: take this point's effect
                return float(r["effect"]), True
            t = (ratio - prev_ratio) / (r["ppl_ratio"] - prev_ratio)
            return float(prev_effect + t * (r["effect"] - prev_effect)), True
        prev_ratio, prev_effect = r["ppl_ratio"], r["effect"]
    return float(prev_effect), False


def collect(dirs: list[str], methods: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(set, method): run record}``; a method found in several folders is taken from the first."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in dirs:
        for path in sorted((ROOT / folder / "runs").glob("*.json")):
            run = json.loads(path.read_text())
            key = (run["set"], run["method"])
            if run["method"] in methods and key not in out and run.get("calibration", {}).get("rows"):
                out[key] = {**run, "source": str(path.relative_to(ROOT))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dirs", nargs="+", default=list(DEFAULT_DIRS), help="efficacy result folders (with runs/)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--ratios", nargs="+", type=float, default=[1.05, 1.1, 1.15])
    p.add_argument("--output", default=None, help="JSON file to write (the table is printed either way)")
    args = p.parse_args()
    if any(not r > 1 for r in args.ratios):
        p.error(f"--ratios must be perplexity ratios above 1, got {args.ratios}")
    runs = collect(args.dirs, args.methods)
    if not runs:
        p.error(f"no efficacy run records for {args.methods} under {args.dirs}")
    sets = sorted({s for s, _ in runs})
    rows = []
    for s in sets:
        for m in args.methods:
            run = runs.get((s, m))
            if run is None:
                continue
            cells = {f"{r:g}": dict(zip(("effect", "reached"), effect_at(run["calibration"]["rows"], r),
                                        strict=True)) for r in args.ratios}
            rows.append({"set": s, "method": m, "source": run["source"], "at_ratio": cells,
                         "p_val_unsteered": run.get("p_val_unsteered")})
    head = "| set | method | " + " | ".join(f"effect at ×{r:g}" for r in args.ratios) + " |"
    print(head + "\n" + "|---" * (2 + len(args.ratios)) + "|")
    for row in rows:
        cells = [("" if c["reached"] else "≥") + f"{c['effect']:+.3f}" for c in row["at_ratio"].values()]
        print(f"| {row['set']} | {row['method']} | " + " | ".join(cells) + " |")
    if args.output:
        from interp_steer.io import write_text_atomic

        record = {"ratios": args.ratios, "dirs": args.dirs, "rows": rows,
                  "measure": "validation p(+λ) − p(−λ), perplexity ratio on the calibration documents (max of ±λ)"}
        out = write_text_atomic(args.output, json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
