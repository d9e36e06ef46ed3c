"""``interp-steer generate``: chat-templated answers, optionally steered by a saved vector (its strength given, or
``auto``: calibrated under the fluency bound), with the hook counts that prove the steering fired."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from interp_steer import cli  # shared helpers, looked up at call time (tests replace cli._model)
from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_file, check_number, confidence_arg
from interp_steer.validation import dumps as _strict_dumps


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        from interp_steer.validation import read_text

        path = check_file(args.prompts_file, "prompts file")
        if path.suffix == ".txt":
            prompts.extend(line.strip() for line in read_text(path, "prompts file").splitlines() if line.strip())
        else:  # JSONL/CSV/Parquet with a prompt (or question/text) column
            from interp_steer.data.registry import load_prompts

            prompts.extend(load_prompts(path))
    if not prompts:
        raise InterpSteerError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def _read_vector(args: argparse.Namespace) -> Any:
    """The ``--vector`` file, read and checked (safetensors, finite, plausible) before any model loads."""
    from interp_steer.steering.vector import SteeringVector

    if not getattr(args, "vector", None):
        return None
    vector = SteeringVector.load(args.vector)  # finds "<name>.safetensors" too; names a missing file or folder
    if vector.kind == "sae" and getattr(args, "sae", None):
        from interp_steer.saes import resolve_sae_folder

        resolve_sae_folder(args.sae)
    return vector


def _load_vector_and_sae(args: argparse.Namespace, model: Any, vector: Any = None):
    vector = vector if vector is not None else _read_vector(args)
    if vector is None:
        return None, None
    sae = None
    if vector.kind == "sae":
        from interp_steer.saes import load_sae

        ref = vector.sae or {}
        if getattr(args, "sae", None):
            sae = load_sae(path=args.sae, model=model)
        elif ref.get("release"):
            sae = load_sae(ref["release"], ref["sae_id"], model=model)
        else:
            path = str(ref.get("path") or "")
            sae = load_sae(path=path.removeprefix("shipped:") or None, model=model)
    vector.check_compatible(model, sae)
    return vector, sae


def _strength_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"the strength must be a finite number, got {text!r}")
    return value


def cmd_generate(args: argparse.Namespace) -> int:
    from interp_steer.evaluation.calibration import calibrate_strength, fluency_check
    from interp_steer.generation import generate

    check_number(args.max_new_tokens, "--max-new-tokens", minimum=1, integer=True)
    check_number(args.batch_size, "--batch-size", minimum=1, integer=True)
    check_number(args.temperature, "--temperature", minimum=0)
    if not (math.isfinite(args.max_ppl_ratio) and args.max_ppl_ratio > 1):
        raise InterpSteerError(f"--max-ppl-ratio must be a perplexity ratio above 1, got {args.max_ppl_ratio}")
    if args.strength == "auto" and not args.vector:
        raise InterpSteerError("--strength auto needs a --vector to calibrate")
    prompts = _read_prompts(args)
    read = _read_vector(args)  # file, format and values checked before the model loads
    model = cli._model(args)
    vector, sae = _load_vector_and_sae(args, model, read)
    fluency: dict[str, Any] | None = None
    strength = args.strength
    if vector is not None and strength == "auto":
        cal = calibrate_strength(model, vector, sae=sae, max_ratio=args.max_ppl_ratio, bidirectional=False,
                                 confidence=args.ppl_confidence)
        print(f"calibrated strength: {cal.describe()}", file=sys.stderr)
        if cal.strength is None:
            raise InterpSteerError(f"--strength auto: {cal.describe()}")
        strength = cal.strength
        fluency = {"strength": strength, "ppl_ratio": cal.ppl_ratio, "max_ratio": cal.max_ratio,
                   "within_bound": True, "n_texts": cal.n_texts, "calibrated": True,
                   "confidence": cal.confidence, "ppl_ratio_upper": cal.ppl_ratio_upper}
    elif vector is not None and float(strength) != 0.0 and not args.no_fluency_check:
        fluency = fluency_check(model, vector, float(strength), sae=sae, max_ratio=args.max_ppl_ratio)
        if not fluency["within_bound"]:
            shown = "inf" if fluency["ppl_ratio"] is None else f"{fluency['ppl_ratio']:.2f}"
            print(f"warning: at λ = {float(strength):g} held-out perplexity is ×{shown} the unsteered model's "
                  f"(bound ×{args.max_ppl_ratio:g}): these generations may not be fluent", file=sys.stderr)
    strength = float(strength)  # "auto" was replaced above (it is refused without a vector)
    gens = generate(model, prompts, vector, strength, sae=sae, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, batch_size=args.batch_size, positions=args.positions,
                    seed=args.seed, progress=True, return_tokens=True)
    outputs = [g.text for g in gens]  # type: ignore[union-attr]
    hook_calls: dict[str, int] = {}
    for start in range(0, len(gens), args.batch_size):  # each batch's counts sit on each of its generations
        for hook, n in gens[start].hook_calls.items():  # type: ignore[union-attr]
            hook_calls[hook] = hook_calls.get(hook, 0) + n
    baseline = None
    if vector is not None and args.compare:
        baseline = generate(model, prompts, None, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for i, (prompt, text) in enumerate(zip(prompts, outputs, strict=True)):
        row: dict[str, Any] = {"prompt": prompt, "output": text}
        if baseline is not None:
            row["baseline"] = baseline[i]
        rows.append(row)
    result = {
        "model": model.cfg.model_name, "vector": args.vector, "strength": strength, "fluency": fluency,
        "hook_calls": hook_calls,  # steering applications per hook point: the proof that the vector acted
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
        "positions": args.positions, "generations": rows,
    }
    if args.output:
        cli._write_json_atomic(Path(args.output), result)
        print(f"wrote {len(rows)} generations to {args.output}")
    else:
        print(_strict_dumps(result, indent=2, ensure_ascii=False))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate (optionally steered) answers",
                       description="Generate chat-templated answers, optionally steered by a saved vector.")
    cli._add_model_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help=".txt (one prompt per line) or JSONL/CSV with a 'prompt' column")
    p.add_argument("--vector", help="a .safetensors steering vector saved by interp-steer")
    p.add_argument("--sae", help="SAE folder for SAE-latent vectors, shipped name, or a shipped width such as 16384 (default: the one recorded in the vector)")
    p.add_argument("--strength", type=_strength_arg, default=1.0,
                   help="steering strength λ (negative reverses), or 'auto': the largest λ whose held-out "
                        "perplexity stays within --max-ppl-ratio of the unsteered model's")
    p.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency bound for 'auto' and for the warning at a given λ (default 1.2)")
    p.add_argument("--ppl-confidence", type=confidence_arg, default=0.9,
                   help="for 'auto': the bound must hold at this one-sided upper confidence bound of the ratio "
                        "(a bootstrap over the calibration documents; default 0.9; 'none': the measured ratio)")
    p.add_argument("--no-fluency-check", action="store_true",
                   help="skip measuring held-out perplexity at the given λ")
    p.add_argument("--positions", choices=["all", "after_instruction", "generated"], default=None,
                   help="where to steer (default: the vector's own policy)")
    p.add_argument("--compare", action="store_true", help="also generate unsteered baselines")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write JSON here (default: print)")
    p.set_defaults(func=cmd_generate)
