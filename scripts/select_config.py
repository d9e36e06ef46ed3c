"""Which configuration of a method should a user run? Chosen on validation pairs, then read on the test items.

The efficacy benchmark calibrates every vector on its set's validation pairs and records the validation effect at
the chosen strength (``calibration.effect`` = ``p(+λ) − p(−λ)``, the matching-answer probability in free text,
within the perplexity bound on the calibration documents). Candidate configurations of one method — an operator,
an SAE, a sparsity option — measured on the same sets with the same pairs can therefore be compared the way a user
would compare them before trusting one: on validation. This script reads the saved run records (no model is
loaded), picks the candidate with the **largest mean validation effect** over the sets (every candidate must cover
every set, with the same seed and the same training and validation pair counts, so all were chosen on the same
pairs), and only then reads the test shifts of the candidates, to report whether the choice carries over and
whether it meets the efficacy target (``--target``: ``Δp +λ ≥ t`` and ``Δp −λ ≤ −t`` with perplexity ratio ≤
``--max-ratio`` both ways on the report documents).

    python scripts/select_config.py \
        --candidate formula-4k benchmarks/results/efficacy yapo-sparse \
        --candidate symmetric-4k benchmarks/results/efficacy_symmetric yapo:symmetric=true,final_top_k=256 \
        --candidate symmetric-16k benchmarks/results/efficacy_sae16384 yapo:symmetric=true,final_top_k=256 \
        --output benchmarks/results/select_yapo.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SETTINGS_THAT_MUST_MATCH = ("seed", "train_pairs", "val_pairs", "test_pairs", "layer", "max_ratio")


def load_runs(folder: str, method: str) -> dict[str, dict[str, Any]]:
    """``{set: run record}`` of one method in one efficacy result folder (``<folder>/runs/*.json``)."""
    base = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    if not (base / "runs").is_dir():
        raise SystemExit(f"select_config: no runs/ folder under {folder}")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((base / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("method") == method and isinstance(run.get("calibration"), dict):
            source = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            out[run["set"]] = {**run, "source": str(source)}
    return out


def select(candidates: dict[str, dict[str, dict[str, Any]]], sets: list[str] | None = None) -> dict[str, Any]:
    """Pick the candidate with the largest mean validation effect over ``sets`` (default: the sets every candidate
    covers). Raises ``SystemExit`` naming the problem when a candidate lacks a set or was calibrated on other
    pairs. Reads only ``calibration.effect`` and the settings; the test fields are not looked at."""
    if not candidates:
        raise SystemExit("select_config: no candidates")
    if sets is None:
        common = set.intersection(*(set(runs) for runs in candidates.values()))
        sets = sorted(common)
    if not sets:
        raise SystemExit("select_config: the candidates share no set")
    for label, runs in candidates.items():
        missing = [s for s in sets if s not in runs]
        if missing:
            raise SystemExit(f"select_config: candidate {label!r} has no run for {missing}")
    ref_label, ref = next(iter(candidates.items()))
    for s in sets:
        for label, runs in candidates.items():
            for key in SETTINGS_THAT_MUST_MATCH:
                a, b = ref[s].get("settings", {}).get(key), runs[s].get("settings", {}).get(key)
                if a != b:
                    raise SystemExit(f"select_config: {s}: {label!r} has {key}={b}, {ref_label!r} has {key}={a}; "
                                     "candidates must be calibrated on the same validation pairs")
    means = {label: sum(float(runs[s]["calibration"]["effect"]) for s in sets) / len(sets)
             for label, runs in candidates.items()}
    chosen = max(means, key=lambda k: means[k])
    per_set = {s: max(candidates, key=lambda k: float(candidates[k][s]["calibration"]["effect"])) for s in sets}
    return {"sets": sets, "validation_mean": means, "chosen": chosen, "best_per_set": per_set}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", nargs=3, action="append", required=True, metavar=("LABEL", "FOLDER", "METHOD"),
                   help="a configuration: a label, an efficacy result folder and the method spec in it")
    p.add_argument("--sets", nargs="+", default=None, help="set specs (default: those every candidate covers)")
    p.add_argument("--target", type=float, default=0.15)
    p.add_argument("--max-ratio", type=float, default=1.2)
    p.add_argument("--output", default=None, help="JSON file to write (the table is printed either way)")
    args = p.parse_args(argv)
    labels = [c[0] for c in args.candidate]
    if len(set(labels)) != len(labels):
        p.error(f"candidate labels must differ, got {labels}")
    from bench_efficacy import target_met

    candidates = {label: load_runs(folder, method) for label, folder, method in args.candidate}
    choice = select(candidates, args.sets)

    rows = []
    for label, folder, method in args.candidate:
        for s in choice["sets"]:
            run = candidates[label][s]
            rows.append({"candidate": label, "folder": folder, "method": method, "set": s,
                         "val_effect": run["calibration"]["effect"], "strength": run["strength"], "nnz": run["nnz"],
                         "dp_plus": run["dp_plus"], "dp_minus": run["dp_minus"],
                         "ppl_ratio_plus": run["ppl_ratio_plus"], "ppl_ratio_minus": run["ppl_ratio_minus"],
                         "target_met": target_met(run, args.target, args.max_ratio), "source": run["source"]})
    print("| candidate | mean validation effect | sets meeting the target (test) |\n|---|---|---|")
    for label in labels:
        n = sum(r["target_met"] for r in rows if r["candidate"] == label)
        mark = " (chosen)" if label == choice["chosen"] else ""
        print(f"| {label}{mark} | {choice['validation_mean'][label]:.4f} | {n} of {len(choice['sets'])} |")
    print("\n| set | candidate | val. effect | λ | nnz | Δp +λ | Δp −λ | ppl× +λ | ppl× −λ | target met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set'].split(':', 1)[-1]} | {r['candidate']} | {r['val_effect']:.3f} | {r['strength']:.3g} | "
              f"{r['nnz']} | {r['dp_plus']:+.3f} | {r['dp_minus']:+.3f} | {r['ppl_ratio_plus']:.2f} | "
              f"{r['ppl_ratio_minus']:.2f} | {'yes' if r['target_met'] else 'no'} |")
    if args.output:
        sys.path.insert(0, str(ROOT))
        from interp_steer.io import write_text_atomic

        record = {**choice, "target": args.target, "max_ratio": args.max_ratio, "rows": rows,
                  "rule": "largest mean validation effect p(+λ) − p(−λ) at the calibrated λ; test items read after"}
        print(f"wrote {write_text_atomic(args.output, json.dumps(record, indent=1) + chr(10))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
