"""``interp-steer contrastive``: steer toward one prompt set and away from another, from cached activations."""

from __future__ import annotations

import argparse
from typing import Any

from interp_steer import cli  # shared helpers, looked up at call time (tests replace cli._model)
from interp_steer.validation import check_number


def cmd_contrastive(args: argparse.Namespace) -> int:
    from interp_steer.methods.contrastive import ActivationCache, default_cache_dir, run_contrastive

    check_number(args.n_samples, "--n-samples", minimum=1, integer=True)
    check_number(args.inference_n_samples, "--inference-n-samples", minimum=1, integer=True)
    check_number(args.max_tokens, "--max-tokens", minimum=1, integer=True)
    check_number(args.batch_size, "--batch-size", minimum=1, integer=True)
    check_number(args.temperature, "--temperature", minimum=0)
    for scale in args.scale:
        check_number(scale, "--scale")
    for layer in args.layer:
        cli._check_layer(layer, args)
    from interp_steer.data.registry import load_prompts

    for key in (args.target, args.baseline) + ((args.inference_dataset,) if args.inference_dataset else ()):
        load_prompts(key, 1)  # validates keys/paths before the model loads (one-line error otherwise)
    model = cli._model(args)
    cache = ActivationCache(args.cache_dir or default_cache_dir())
    written = []
    for layer in args.layer:
        for scale in args.scale:
            written.append(run_contrastive(
                model, args.target, args.baseline, layer, scale, n_samples=args.n_samples, seed=args.seed,
                inference_dataset=args.inference_dataset, inference_n_samples=args.inference_n_samples,
                max_tokens=args.max_tokens, temperature=args.temperature, output_dir=args.output_dir, cache=cache,
                batch_size=args.batch_size))
    for path in written:
        print(path)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("contrastive", help="steer toward one dataset and away from another",
                       description="Contrastive steering: mean last-prompt-token activations of the target set "
                                   "minus those of the baseline set (all layers cached), then baseline vs steered "
                                   "generations written to results.json.")
    cli._add_model_args(p)
    p.add_argument("--target", required=True, help="registry key (see interp_steer.data.DATASETS) or prompt file")
    p.add_argument("--baseline", required=True, help="registry key or prompt file")
    p.add_argument("--layer", type=int, action="append", required=True, help="layer (repeatable)")
    p.add_argument("--scale", type=float, action="append", default=None,
                   help="steering scale (repeatable; negative reverses; default 4)")
    p.add_argument("--n-samples", type=int, default=100)
    p.add_argument("--inference-dataset", default=None, help="prompts to generate from (default: built-in)")
    p.add_argument("--inference-n-samples", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="activation cache (default: ~/.cache/interp_steer/contrastive)")
    p.add_argument("--output-dir", default="runs/contrastive")
    p.set_defaults(func=cmd_contrastive, scale=None)
