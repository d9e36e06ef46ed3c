"""Which layer should CAA steer? Each layer's validation effect within the fluency bound, and the test shift.

CAA costs no training, so its layer can be chosen like its strength: on validation pairs. For one behaviour set
of the efficacy benchmark (same data, seed, calibration grid and documents as ``benchmarks/bench_efficacy.py``),
this builds the CAA vector (response-mean contrast of the 256 training pairs) at every layer of ``--layers``,
calibrates each with :func:`interp_steer.evaluation.calibration.calibrate_strength` on the validation pairs
(largest ``p(+λ) − p(−λ)`` with perplexity ratio ≤ 1.2 at ±λ on the 24 calibration documents), and records the
layer a user would pick: the one with the largest validation effect. With ``--test`` it also scores the set's
64 test items at each layer's calibrated λ, to see whether the validation choice carries over (the choice itself
never reads them).

    python scripts/caa_layers.py --set bipo:power-seeking --layers 6 9 12 15 18 21 24 27 --test \
        --output benchmarks/results/caa_layers/power-seeking.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True, help="bipo:<behaviour> or mwe:<name>")
    p.add_argument("--layers", type=int, nargs="+", required=True)
    p.add_argument("--train-pairs", type=int, default=256)
    p.add_argument("--val-pairs", type=int, default=32)
    p.add_argument("--test-pairs", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", action="store_true", help="also score the test items at each layer's λ")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    if any(layer < 0 for layer in args.layers):
        raise SystemExit(f"--layers must be block indices >= 0, got {args.layers}")

    import bench_efficacy as be

    from interp_steer.io import write_text_atomic
    from interp_steer.methods.caa import compute_caa
    from interp_steer.models import load_model

    model = load_model()
    if max(args.layers) >= model.cfg.n_layers:
        raise SystemExit(f"--layers: the model has {model.cfg.n_layers} blocks (0 … {model.cfg.n_layers - 1})")
    # the benchmark's defaults (grid, bound, documents), so each layer is calibrated as the table's CAA row was
    bench = be.parser().parse_args([])
    data = be.load_set(args.set, args.train_pairs, args.val_pairs, args.test_pairs, args.seed)
    train, val, test, _ = data
    base = be.baseline(model, data, bench)
    vectors = compute_caa(model, train, layers=args.layers)
    rows: list[dict[str, Any]] = []
    for layer in args.layers:
        t0 = time.perf_counter()
        vec = vectors[layer]
        row: dict[str, Any] = {"layer": layer,
                               **be.calibrated_shifts(model, vec, val, test if args.test else None, base, bench)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    found = [r for r in rows if r["val_effect"] is not None]
    chosen = max(found, key=lambda r: r["val_effect"])["layer"] if found else None
    out = {"set": args.set, "train_pairs": args.train_pairs, "val_pairs": args.val_pairs,
           "test_pairs": args.test_pairs, "seed": args.seed, "p_val_unsteered": base["p_val"],
           "p_test_unsteered": base["p_test"], "chosen_by_validation": chosen, "rows": rows}
    write_text_atomic(Path(args.output), json.dumps(out, indent=2))
    print(f"layer chosen on validation: {chosen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
