"""``interp-steer compare``: every method's vector from the same training split and layer, each strength chosen
on the training questions, the test questions reported with knowledge preservation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interp_steer.commands.evaluate import _check_counts, _strengths  # noqa: F401
from interp_steer.errors import InterpSteerError  # noqa: F401
from interp_steer.evaluation.compare import METHODS


def cmd_compare(args: argparse.Namespace) -> int:
    from interp_steer.cli import _model, _write_json_atomic
    from interp_steer.data.culture import read_culture_rows
    from interp_steer.evaluation.compare import (
        CompareConfig,
        compare_methods,
        format_table,
        write_report_html,
    )
    from interp_steer.io import write_text_atomic
    from interp_steer.saes import load_sae

    _check_counts(args)
    known = sorted({row["country"] for row in read_culture_rows()})
    countries = args.country or ["morocco"]
    bad = [c for c in countries if c not in known]
    if bad:
        raise InterpSteerError(f"unknown country {bad[0]!r}; the culture set has {', '.join(known)}")
    methods = args.methods or list(METHODS)
    cfg = CompareConfig(countries=countries, methods=methods,
                        strengths=_strengths(args.strengths, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]), layer=args.layer,
                        epochs=args.epochs, steps=args.steps, yapo_sparse=not args.yapo_exact,
                        lineas_steps=args.lineas_steps, batch_size=args.batch_size,
                        preservation=not args.no_preservation, seed=args.seed, scoring=args.scoring,
                        max_train_pairs=args.max_train_pairs, max_items=args.max_items,
                        preservation_texts=args.preservation_texts, preservation_items=args.preservation_items,
                        max_ppl_ratio=None if args.no_fluency_guard else args.max_ppl_ratio,
                        guard_texts=args.guard_texts)
    out = Path(args.output_dir)
    if args.sae:
        from interp_steer.saes import resolve_sae_folder

        resolve_sae_folder(args.sae)  # a missing folder or unshipped width fails before the model loads
    model = _model(args)
    sae = load_sae(path=args.sae, model=model) if args.sae else load_sae(model=model)
    result = compare_methods(model, sae, cfg, log=lambda m: print(m, flush=True))
    _write_json_atomic(out / "compare.json", result)
    write_report_html(result, out / "compare.html")
    table = format_table(result["table"])
    write_text_atomic(out / "compare.md", table + "\n")
    print(table)
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'} and {out / 'compare.html'}")
    return 0


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args

    c = sub.add_parser("compare", help="compare no steering, CAA, SAS, BiPO, YaPO and LinEAS on the culture set",
                       description="Build every method's vector from the same training split and layer, choose each "
                                   "strength on the training questions, and report the test questions (JSON table, "
                                   "markdown, offline plotly HTML) with knowledge preservation.")
    _add_model_args(c)
    c.add_argument("--country", action="append", help="culture country (repeatable; default: morocco)")
    c.add_argument("--methods", nargs="+", choices=list(METHODS), default=None, help="default: all")
    c.add_argument("--strengths", type=float, nargs="+", default=None, help="default: 0.5 1 2 4 8 16")
    c.add_argument("--layer", type=int, default=None, help="default: the SAE's layer")
    c.add_argument("--sae", default=None, help="SAE folder, shipped name, or a shipped width such as 16384 (default: the shipped 4096-latent SAE)")
    c.add_argument("--epochs", type=int, default=2, help="BiPO/YaPO epochs of the 'small' preset (default 2)")
    c.add_argument("--steps", type=int, default=None, help="cap on BiPO/YaPO optimiser steps (default: none)")
    c.add_argument("--yapo-exact", action="store_true",
                   help="YaPO's exact vector instead of the sparse default (its 256 heaviest latents)")
    c.add_argument("--lineas-steps", type=int, default=40)
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--scoring", choices=["loglik", "letter"], default="loglik")
    c.add_argument("--no-preservation", action="store_true", help="skip knowledge preservation")
    c.add_argument("--preservation-texts", type=int, default=32, help="held-out corpus documents for perplexity")
    c.add_argument("--preservation-items", type=int, default=None,
                   help="knowledge-set questions, evenly spaced (default: all 63)")
    c.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency guard: only strengths whose held-out perplexity stays within this factor of the "
                        "unsteered one are eligible (default 1.2)")
    c.add_argument("--no-fluency-guard", action="store_true", help="choose strengths without the fluency guard")
    c.add_argument("--guard-texts", type=int, default=8, help="held-out documents for the fluency guard")
    c.add_argument("--max-train-pairs", type=int, default=None, help="cap on training pairs (quick runs)")
    c.add_argument("--max-items", type=int, default=None, help="cap on questions per split (quick runs)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--output-dir", default="runs/compare")
    c.set_defaults(func=cmd_compare)
