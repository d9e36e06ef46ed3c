"""``interp-steer demo``: the main job on the embedded default (see :mod:`interp_steer.demo`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from interp_steer.errors import InterpSteerError
from interp_steer.validation import confidence_arg


def cmd_demo(args: argparse.Namespace) -> int:
    from interp_steer.demo import run_demo

    _positive(args.epochs, "--epochs")
    _positive(args.batch_size, "--batch-size")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise InterpSteerError(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.max_ppl_ratio) and args.max_ppl_ratio > 1):
        raise InterpSteerError(f"--max-ppl-ratio must be a perplexity ratio above 1, got {args.max_ppl_ratio}")
    if args.strength and any(not (math.isfinite(x) and x > 0) for x in args.strength):
        raise InterpSteerError(f"--strength values must be positive numbers, got {args.strength}")
    model: Any = None
    sae: Any = None
    if args.sae:
        from interp_steer.saes import resolve_sae_folder

        resolve_sae_folder(args.sae)  # a missing folder or unshipped width fails here, before the model loads
        from interp_steer.models import load_model
        from interp_steer.saes import load_sae

        model = load_model()
        sae = load_sae(path=args.sae, model=model)
    run_demo(args.country, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, sparse=not args.exact,
             symmetric=args.symmetric,
             max_ratio=args.max_ppl_ratio, ppl_confidence=args.ppl_confidence, strengths=tuple(args.strength) if args.strength else None,
             output_dir=args.output_dir, seed=args.seed, model=model, sae=sae)
    return 0


def _positive(value: int, name: str) -> None:
    if value < 1:
        raise InterpSteerError(f"{name} must be at least 1, got {value}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="learn a YaPO vector on the embedded default and explain it",
                       description="Learn a YaPO vector for one country of the culture set on the embedded "
                                   "model, choose λ on validation pairs under a perplexity bound, show held-out "
                                   "MCQ accuracy and generations steered vs unsteered, and its SAE latents with "
                                   "their country selectivity.")
    p.add_argument("--country", default="morocco", choices=["egypt", "morocco", "india", "mexico", "brazil", "uk"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the 'small' preset's)")
    p.add_argument("--exact", action="store_true",
                   help="keep every latent of the trained vector (default: the sparse default, its 256 heaviest "
                        "latents; methods.preference.SPARSE_DEFAULT)")
    p.add_argument("--symmetric", action="store_true",
                   help="train and steer with the symmetric operator ½[e(λ) − e(−λ)] (−λ is exactly the opposite "
                        "edit) instead of the paper's formula; see README 'The symmetric operator'")
    p.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency bound: held-out perplexity steered / unsteered (default 1.2)")
    p.add_argument("--ppl-confidence", type=confidence_arg, default=0.9,
                   help="the bound must hold at this one-sided upper confidence bound of the perplexity ratio "
                        "(a bootstrap over the calibration documents; default 0.9; 'none': the measured ratio)")
    p.add_argument("--strength", type=float, action="append",
                   help="candidate λ values for the calibration (repeatable; default 0.25 … 32)")
    p.add_argument("--sae", default=None,
                   help="SAE folder, shipped name or shipped width such as 16384 (default: the shipped "
                        "4096-latent SAE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/demo")
    p.set_defaults(func=cmd_demo)
