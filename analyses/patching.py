"""Where does the country cue live? Activation patching on the culture set (issue #9, "Explain the vectors").

On the embedded SmolLM2-135M-Instruct, the residual stream (or ``--component``) of the localized question
(clean: "In Egypt, ...") is patched into the run on the non-localized question (corrupted: "Around here, ...")
at every layer × position slot. The recovered share of the correct option's margin (mean log-prob per option
token, ``score_mcq``'s loglik score, minus the other options' mean) is averaged over ``--n-items`` stems per
country: alignable stems are screened in file order until that many have a clean−corrupted gap of at least
``--min-gap``; the others are reported (see :mod:`interp_steer.interpret.patching`). Writes
``results/patching/``: ``patching.json`` (hooks, positions, items used/excluded, summary), ``patching.safetensors``
and ``heatmap.html`` (offline plotly), and prints where the recovery is concentrated.

    python analyses/patching.py                      # resid_pre, 1 stem per country, all 30 layers (4 min 7 s
                                                     # measured on 1 thread of a busy 2-core machine)
    python analyses/patching.py --n-items 4 --component attn_out --output-dir results/patching-attn
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from interp_steer.interpret.patching import COMPONENTS, LAYOUTS, SCORES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-items", type=int, default=1, help="stems per country (default 1: 6 items, < 5 min)")
    ap.add_argument("--countries", nargs="*", default=None, help="default: every country of the culture set")
    ap.add_argument("--component", choices=sorted(COMPONENTS), default="resid_pre")
    ap.add_argument("--layers", default=None, help="e.g. 0-29 or 0,8,16 (default: all)")
    ap.add_argument("--positions", choices=LAYOUTS, default="slots")
    ap.add_argument("--score", choices=SCORES, default="option")
    ap.add_argument("--min-gap", type=float, default=0.5)
    ap.add_argument("--output-dir", default="results/patching")
    args = ap.parse_args(argv)

    import torch

    from interp_steer.commands.patch import parse_layers
    from interp_steer.interpret.patching import run_patching
    from interp_steer.models import load_model

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = load_model(device="cpu")
    t_load = time.perf_counter() - t0
    result = run_patching(model, countries=args.countries, n_items=args.n_items, component=args.component,
                          layers=parse_layers(args.layers, model.cfg.n_layers), layout=args.positions,
                          score=args.score, min_gap=args.min_gap, progress=True)
    result.config["command"] = "python analyses/patching.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result.config["seconds"] = {"load": round(t_load, 1), "patching": round(time.perf_counter() - t0 - t_load, 1)}
    paths = result.save(Path(args.output_dir))
    summary = result.summary()
    print(f"{summary['n_items_used']}/{summary['n_items_screened']} screened items used (gap ≥ {args.min_gap}), "
          f"{summary['n_stems_skipped']} stems skipped (cue not alignable); "
          f"{result.config['seconds']['patching']} s patching")
    for item in result.items:
        flag = "" if item["included"] else "  [excluded]"
        print(f"  {item['item_id']:<11} '{item['cue_clean'].strip()}' vs '{item['cue_corrupt'].strip()}': "
              f"m_clean {item['m_clean']:+.2f}  m_corrupt {item['m_corrupt']:+.2f}{flag}")
    z = result.recovery if result.heads is None else result.recovery.amax(-1)
    header = "layer " + " ".join(f"{label[:9]:>9}" for label in result.labels)
    print(header)
    for li, layer in enumerate(result.layers):
        print(f"{layer:>5} " + " ".join(f"{float(v):>9.2f}" for v in z[li]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
