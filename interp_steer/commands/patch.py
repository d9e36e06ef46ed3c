"""``interp-steer patch``: activation patching from localized into non-localized culture prompts.

Writes ``patching.safetensors`` (recovery ``[layer, position(, head)]``, per item and per country),
``patching.json`` (hooks, position labels, alignment and metric, items used and excluded, a summary) and
``heatmap.html`` (offline plotly) into ``--output-dir``. See :mod:`interp_steer.interpret.patching`.
"""

from __future__ import annotations

import argparse
from typing import Any

from interp_steer.errors import InterpSteerError


def parse_layers(spec: str | None, n_layers: int) -> list[int] | None:
    """``None``/``"all"`` → all layers; ``"0-5,10,20-29"`` → those layers (sorted, unique), range-checked."""
    if spec is None or spec.strip().lower() == "all":
        return None
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise InterpSteerError(f"--layers: empty range {part!r}")
                layers.update(range(lo, hi + 1))
            else:
                layers.add(int(part))
        except ValueError:
            raise InterpSteerError(f"--layers: {part!r} is not a layer number or range (e.g. 0-5,10)") from None
    resolved = sorted(layers)
    bad = [i for i in resolved if not 0 <= i < n_layers]
    if bad or not resolved:
        raise InterpSteerError(f"--layers {spec!r}: layers must be in 0..{n_layers - 1}")
    return resolved


def _countries(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    return None if "all" in names else names


def cmd_patch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from interp_steer.cli import _model
    from interp_steer.interpret.patching import run_patching

    if args.n_items is not None and args.n_items < 1:
        raise InterpSteerError(f"--n-items must be at least 1, got {args.n_items}")
    if args.batch_size < 1:
        raise InterpSteerError(f"--batch-size must be at least 1, got {args.batch_size}")
    countries = _countries(args.country)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise InterpSteerError(f"--output-dir {out} exists and is not a folder")
    if countries is not None:  # fail on a bad country before loading the model
        from interp_steer.data import load_culture

        load_culture(countries=countries, split=args.split)
    model = _model(args)
    layers = parse_layers(args.layers, model.cfg.n_layers)
    result = run_patching(model, countries=countries, n_items=args.n_items, component=args.component,
                          layers=layers, layout=args.positions, score=args.score, reduce=args.reduce,
                          min_gap=args.min_gap, split=args.split, max_cue_tokens=args.max_cue_tokens,
                          patch_excluded=args.patch_excluded, batch_size=args.batch_size, progress=True)
    paths = result.save(out)
    summary: dict[str, Any] = result.summary()
    print(f"{summary['n_items_used']} items used of {summary['n_items_screened']} screened (gap ≥ "
          f"{args.min_gap}); {summary['n_stems_skipped']} stems not alignable")
    for cell in summary["top_cells"]:
        print(f"  layer {cell['layer']:>2}  {cell['position']:<16} recovery {cell['recovery']:.3f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args
    from interp_steer.interpret.patching import COMPONENTS, LAYOUTS, REDUCTIONS, SCORES

    p = sub.add_parser(
        "patch", help="activation patching: where the country cue of localized culture questions lives",
        description="Patch activations of localized culture questions (clean: names the country) into runs on "
                    "the matching non-localized questions (corrupted: no cue), per layer x position, and report "
                    "how much of the correct option's margin is recovered.")
    _add_model_args(p)
    p.add_argument("--country", action="append", default=None,
                   help="country of the culture set (repeatable or comma-separated; 'all' = every country, "
                        "the default)")
    p.add_argument("--n-items", type=int, default=4,
                   help="items per country: stems are screened in file order until this many have a "
                        "clean-corrupted gap ≥ --min-gap (default 4)")
    p.add_argument("--component", choices=sorted(COMPONENTS), default="resid_pre",
                   help="resid_pre, resid_post, attn_out, mlp_out or z (per attention head)")
    p.add_argument("--layers", default=None, help="e.g. 0-29, 0,5,10 or all (default: all)")
    p.add_argument("--positions", choices=LAYOUTS, default="slots",
                   help="slots: cue / question / template-tail columns shared by all items (default); "
                        "tokens: every position from the cue on, aligned from the end")
    p.add_argument("--score", choices=SCORES, default="option",
                   help="option: mean log-prob per option token, as score_mcq (default); first_token: logit of "
                        "the option's first token at the answer position (about 2.5x faster)")
    p.add_argument("--reduce", choices=REDUCTIONS, default="mean",
                   help="compare the correct option with the mean (default) or best other option")
    p.add_argument("--min-gap", type=float, default=0.5,
                   help="exclude items whose clean-corrupted gap m_clean - m_corrupt is below this (default 0.5)")
    p.add_argument("--split", choices=["train", "test"], default=None, help="culture split (default: both)")
    p.add_argument("--max-cue-tokens", type=int, default=4,
                   help="skip stems whose two forms differ in a longer token span (default 4)")
    p.add_argument("--patch-excluded", action="store_true",
                   help="also patch (and store) screened items below --min-gap; they never enter the means")
    p.add_argument("--batch-size", type=int, default=256, help="patched rows per forward pass (default 256)")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_patch)
