"""``interp-steer evaluate``: one vector at a grid of strengths (culture MCQ or behaviour A/B), with the fluency
bound and, optionally, knowledge preservation at each strength."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError


def _strengths(values: list[float] | None, default: list[float]) -> list[float]:
    out = [float(v) for v in (values or default)]
    if not out:
        raise InterpSteerError("--strengths needs at least one value")
    return out


def _check_counts(args: argparse.Namespace) -> None:
    """Positive counts (before any model is loaded or vector trained)."""
    ratio = getattr(args, "max_ppl_ratio", None)
    if ratio is not None and not ratio > 1:
        raise InterpSteerError(f"--max-ppl-ratio must be above 1 (a perplexity ratio), got {ratio:g}")
    for name in ("preservation_texts", "preservation_items", "guard_texts", "steps", "lineas_steps", "batch_size",
                 "max_train_pairs", "max_items", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InterpSteerError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from interp_steer.cli import _model, _write_json_atomic
    from interp_steer.commands.generate import _load_vector_and_sae
    from interp_steer.evaluation.compare import behaviour_sweep, strength_sweep, write_sweep_html

    if not Path(args.vector).exists() and not Path(args.vector + ".safetensors").exists():
        raise InterpSteerError(f"steering vector file not found: {args.vector}")
    strengths = _strengths(args.strengths, [0.0, 0.5, 1.0, 2.0, 4.0])
    _check_counts(args)
    if args.data != "culture" and not args.data.startswith(("bipo:", "mwe:")):
        raise InterpSteerError(f"--data {args.data!r}: expected culture, bipo:<behaviour> or mwe:<name>")
    out = Path(args.output_dir)
    model = _model(args)
    vector, sae = _load_vector_and_sae(args, model)
    if args.data == "culture":
        from interp_steer.data.loaders import load_culture

        items = load_culture(countries=args.country, split=args.split, seed=args.seed)
        if args.limit:
            items = items[: args.limit]
        rows = strength_sweep(model, vector, items, strengths, sae=sae, method=args.scoring)
        kind = "culture_mcq"
    else:
        items = _behaviour_items(args.data)[: args.limit or None]
        rows = behaviour_sweep(model, vector, items, strengths, sae=sae)
        kind = "behaviour_ab"
    if not args.no_fluency_check:  # every strength is shown with its fluency cost
        from interp_steer.evaluation.calibration import calibration_texts, fluency_check
        from interp_steer.evaluation.preservation import text_perplexity

        docs = calibration_texts(model.tokenizer, 8)
        base = text_perplexity(model, docs, max_tokens=128).perplexity  # once, not per strength
        for r in rows:
            if r["strength"] != 0:
                f = fluency_check(model, vector, r["strength"], sae=sae, texts=docs, max_ratio=args.max_ppl_ratio,
                                  max_tokens=128, perplexity_unsteered=base)
                r["ppl_ratio"], r["within_bound"] = f["ppl_ratio"], f["within_bound"]
    result: dict[str, Any] = {"vector": str(args.vector), "data": args.data, "split": args.split, "kind": kind,
                              "n_items": len(items), "strengths": strengths, "sweep": rows,
                              "max_ppl_ratio": None if args.no_fluency_check else args.max_ppl_ratio}
    if args.preservation:
        from interp_steer.evaluation.preservation import (
            default_texts,
            knowledge_preservation_sweep,
            load_knowledge,
        )

        texts = default_texts(args.preservation_texts, seed=args.seed)
        mcq = load_knowledge(max_items=args.preservation_items)
        steered = [lam for lam in strengths if lam != 0]
        reports = knowledge_preservation_sweep(model, vector, steered, sae, texts=texts, mcq=mcq, max_texts=None)
        result["preservation"] = {str(lam): rep.to_dict() for lam, rep in zip(steered, reports, strict=True)}
    _write_json_atomic(out / "evaluation.json", result)
    write_sweep_html(rows, out / "evaluation.html", title=f"{Path(args.vector).name}: {args.data} ({args.split})")
    for r in rows:
        o = r.get("overall", r)
        parts = [f"λ={r['strength']:g}"] + [f"{k} {o[k]:.3f}" for k in
                                             ("accuracy", "acc_localized", "acc_nonlocalized", "rca", "pnlg",
                                              "p_matching") if o.get(k) is not None]
        if r.get("ppl_ratio") is not None or r.get("within_bound") is False:
            ratio = "inf" if r["ppl_ratio"] is None else f"{r['ppl_ratio']:.3f}"
            parts.append(f"ppl ×{ratio}" + ("" if r["within_bound"] else
                                            f"  [breaks the fluency bound ×{args.max_ppl_ratio:g}]"))
        print("  ".join(parts))
    print(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.html'}")
    return 0


def _behaviour_items(spec: str) -> list[Any]:
    """Behaviour A/B test items: BiPO's ``test_infer.csv`` or the last 20 % of a model-written-evals file."""
    from interp_steer.data import loaders
    from interp_steer.data.specs import _shared

    name = spec.split(":", 1)[1]
    if spec.startswith("bipo:"):
        return loaders.load_bipo_ab(_shared("bipo", name, "test_infer.csv"))
    items = loaders.load_mwe(_shared("model-written-evals", f"{name}.jsonl"), as_="mcq")
    return list(items[int(len(items) * 0.8):])


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args

    p = sub.add_parser("evaluate", help="λ sweep of one steering vector (culture MCQ or behaviour A/B)",
                       description="Score one vector at a grid of strengths; writes evaluation.json and an offline "
                                   "plotly evaluation.html (accuracy vs λ; localized vs non-localized per country).")
    _add_model_args(p)
    p.add_argument("--vector", required=True, help="a SteeringVector (.safetensors with its JSON sidecar)")
    p.add_argument("--sae", default=None, help="SAE folder for SAE-latent vectors, shipped name, or a shipped width such as 16384 (default: the vector's own)")
    p.add_argument("--data", default="culture", help="culture (MCQ) | bipo:<behaviour> | mwe:<name> (A/B)")
    p.add_argument("--country", action="append", help="culture country (repeatable; default: all)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--strengths", type=float, nargs="+", default=None, help="default: 0 0.5 1 2 4")
    p.add_argument("--scoring", choices=["loglik", "letter"], default="loglik", help="culture MCQ scoring")
    p.add_argument("--limit", type=int, default=None, help="at most this many items")
    p.add_argument("--preservation", action="store_true",
                   help="also measure knowledge preservation (perplexity, knowledge MCQ) at each strength")
    p.add_argument("--preservation-texts", type=int, default=32, help="held-out corpus documents for perplexity")
    p.add_argument("--preservation-items", type=int, default=None,
                   help="knowledge-set questions, evenly spaced (default: all 63)")
    p.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency bound: strengths whose held-out perplexity ratio exceeds it are flagged (default 1.2)")
    p.add_argument("--no-fluency-check", action="store_true", help="do not measure held-out perplexity per strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/evaluate")
    p.set_defaults(func=cmd_evaluate)
