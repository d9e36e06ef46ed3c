"""``interp-steer evaluate``: one vector at a grid of strengths (culture MCQ, or a behaviour set's free-text
matching-answer probability with its A/B letters beside it — a shared set's split or a user's own held-out file,
scored whole), with the fluency bound at each strength, optionally the strength calibrated on training pairs under
that bound (``--calibrate``; ``--val-data`` for where they come from), and knowledge preservation."""

from __future__ import annotations

import argparse
import math
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
                 "max_train_pairs", "max_items", "limit", "val_pairs", "calibration_texts", "epochs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InterpSteerError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    grid = getattr(args, "calibration_strengths", None)
    if getattr(args, "calibrate", False) and grid is not None and not all(math.isfinite(v) and v > 0 for v in grid):
        raise InterpSteerError(f"--calibration-strengths must be positive finite numbers, got {grid}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from interp_steer.cli import _model, _write_json_atomic
    from interp_steer.commands.generate import _load_vector_and_sae
    from interp_steer.data.loaders import looks_like_path
    from interp_steer.evaluation.compare import behaviour_sweep, strength_sweep, write_sweep_html

    if not Path(args.vector).exists() and not Path(args.vector + ".safetensors").exists():
        raise InterpSteerError(f"steering vector file not found: {args.vector}")
    strengths = _strengths(args.strengths, [0.0, 0.5, 1.0, 2.0, 4.0])
    _check_counts(args)
    is_file = args.data != "culture" and not args.data.startswith(("bipo:", "mwe:"))
    if is_file and not looks_like_path(args.data):
        raise InterpSteerError(f"--data {args.data!r}: expected culture, bipo:<behaviour>, mwe:<name> or a data file")
    if is_file and args.split is not None:
        raise InterpSteerError(f"--split {args.split}: a data file has no split; {args.data} is scored whole")
    args.split = args.split or "test"
    if args.val_data is not None and args.data == "culture":
        raise InterpSteerError("--val-data is for behaviour sets; culture calibrates on its own training questions")
    if args.val_data is not None and not args.calibrate:
        raise InterpSteerError("--val-data only sets where --calibrate draws its pairs: add --calibrate")
    if args.calibrate and is_file and args.val_data is None:
        raise InterpSteerError(f"--calibrate on a data file needs --val-data (the pairs λ is chosen on, never the "
                               f"scored items): bipo:<behaviour>, mwe:<name> or another file, not {args.data}")
    if args.calibrate and args.split != "test":
        raise InterpSteerError("--calibrate chooses λ on training pairs, so it scores the test split: drop --split train")
    if args.calibrate and args.no_fluency_check:
        raise InterpSteerError("--calibrate bounds λ by held-out perplexity: it cannot be used with --no-fluency-check")
    out = Path(args.output_dir)
    behaviour = args.data != "culture"
    if behaviour:
        items, pairs = _behaviour_data(args.data, args.split)
        items, pairs = items[: args.limit or None], pairs[: args.limit or None]
    # data problems surface before the model loads; λ is never chosen on a scored question
    val = (_calibration_pairs(args, exclude=_questions(items, pairs) if behaviour else None)
           if args.calibrate else None)
    model = _model(args)
    vector, sae = _load_vector_and_sae(args, model)
    report_docs: list[str] = []
    base = None
    calibration: dict[str, Any] | None = None
    if not args.no_fluency_check:
        from interp_steer.evaluation.calibration import calibration_texts
        from interp_steer.evaluation.preservation import text_perplexity

        docs = calibration_texts(model.tokenizer, 8 + (args.calibration_texts if args.calibrate else 0))
        report_docs = docs[:8]  # the ratio shown per strength; the calibration documents are the others
        base = text_perplexity(model, report_docs, max_tokens=128).perplexity  # once, not per strength
        if val is not None:
            calibration = _calibrate(model, vector, sae, val, docs[8:], args, bidirectional=behaviour)
            lam = calibration["strength"]
            if lam is not None:
                strengths = sorted({*strengths, lam, *((-lam,) if behaviour else ())})
    if args.data == "culture":
        from interp_steer.data.loaders import load_culture

        items = load_culture(countries=args.country, split=args.split, seed=args.seed)
        if args.limit:
            items = items[: args.limit]
        rows = strength_sweep(model, vector, items, strengths, sae=sae, method=args.scoring)
        kind = "culture_mcq"
        n_items = len(items)
    else:
        rows = behaviour_sweep(model, vector, items, strengths, sae=sae, pairs=pairs)
        kind = "behaviour"
        n_items = len(pairs)
    if base is not None:  # every strength is shown with its fluency cost
        from interp_steer.evaluation.calibration import fluency_check

        for r in rows:
            if r["strength"] != 0:
                f = fluency_check(model, vector, r["strength"], sae=sae, texts=report_docs,
                                  max_ratio=args.max_ppl_ratio, max_tokens=128, perplexity_unsteered=base)
                r["ppl_ratio"], r["within_bound"] = f["ppl_ratio"], f["within_bound"]
    if calibration is not None and calibration["strength"] is not None:
        lam = calibration["strength"]
        for r in rows:
            if r["strength"] == lam or (behaviour and r["strength"] == -lam):
                r["calibrated"] = True
    result: dict[str, Any] = {"vector": str(args.vector), "data": args.data,
                              "split": "whole file" if is_file else args.split, "kind": kind,
                              "n_items": n_items, "strengths": strengths, "sweep": rows,
                              "max_ppl_ratio": None if args.no_fluency_check else args.max_ppl_ratio}
    if behaviour:
        result["n_ab_items"] = len(items)
        if val is not None:
            result["val_data"] = args.val_data or f"{args.data} (train split)"
    if calibration is not None:
        result["calibration"] = calibration
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
    if calibration is not None:
        print(f"calibrated on {calibration['n_pairs']} training pairs: {calibration['describe']}")
    for r in rows:
        o = r.get("overall", r)
        parts = [f"λ={r['strength']:g}"] + [f"{label} {o[k]:.3f}" for k, label in
                                             (("accuracy", "A/B accuracy" if behaviour else "accuracy"),
                                              ("acc_localized", "acc_localized"),
                                              ("acc_nonlocalized", "acc_nonlocalized"), ("rca", "rca"),
                                              ("pnlg", "pnlg"), ("p_text", "p(matching answer)"),
                                              ("p_matching", "A/B p(matching letter)")) if o.get(k) is not None]
        if r.get("ppl_ratio") is not None or r.get("within_bound") is False:
            ratio = "inf" if r["ppl_ratio"] is None else f"{r['ppl_ratio']:.3f}"
            parts.append(f"ppl ×{ratio}" + ("" if r["within_bound"] else
                                            f"  [breaks the fluency bound ×{args.max_ppl_ratio:g}]"))
        if r.get("calibrated"):
            parts.append("[calibrated]")
        print("  ".join(parts))
    print(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.html'}")
    return 0


def _calibration_pairs(args: argparse.Namespace, exclude: set[str] | None = None) -> list[Any]:
    """``--val-pairs`` free-text pairs drawn (``--seed``) from the **training** split (or ``--val-data``): what
    ``--calibrate`` chooses λ on (the test items are scored afterwards and never enter the choice). Pairs whose
    question is in ``exclude`` (:func:`_questions` of the scored items) are passed over — the public BiPO
    power-seeking files share 3 questions between train and test — and an error says so when none is left."""
    import random

    from interp_steer.data.specs import load_pairs

    source = args.val_data or args.data
    if args.data == "culture":
        pool = load_pairs("culture", split="train", countries=args.country, form="mcq", seed=args.seed)
    elif source.startswith(("bipo:", "mwe:")):
        pool = load_pairs(source, split="train", form="text")
    else:
        pool = _behaviour_data(source, "test")[1]
        if not pool:
            raise InterpSteerError(f"--val-data {source}: no free-text pairs to calibrate on (A/B items only)")
    order = list(range(len(pool)))
    random.Random(args.seed).shuffle(order)  # drawn before the exclusion, so a clean pool draws the same pairs
    if exclude:
        kept = [i for i in order if _bare(pool[i].prompt) not in exclude]
        if not kept:
            raise InterpSteerError(f"--val-data {source}: all {len(pool)} of its pairs share a question with the "
                                   f"scored items of {args.data}; choose λ on other items")
        if len(kept) < len(order):
            print(f"calibration: passed over {len(order) - len(kept)} pair(s) of {source} whose question is scored")
        order = kept
    return [pool[i] for i in order[: args.val_pairs]]


def _calibrate(model: Any, vector: Any, sae: Any, val: list[Any], docs: list[str], args: argparse.Namespace, *,
               bidirectional: bool) -> dict[str, Any]:
    """:func:`calibrate_strength` with the validation metric: ``p(+λ) − p(−λ)`` of the matching answer
    (behaviour vectors, used both ways; the bound must hold at ±λ) or ``p(+λ)`` (culture vectors)."""
    from interp_steer.evaluation.behaviour import pair_effect
    from interp_steer.evaluation.calibration import calibrate_strength
    from interp_steer.evaluation.shared_layers import SharedLayers

    shared = SharedLayers.for_vectors(model, [vector])
    effect = pair_effect(model, val, vector, sae=sae, bidirectional=bidirectional, shared=shared)
    cal = calibrate_strength(model, vector, effect, sae=sae, strengths=args.calibration_strengths, texts=docs,
                             max_ratio=args.max_ppl_ratio, bidirectional=bidirectional, shared=shared)
    return {**cal.to_dict(), "describe": cal.describe(), "n_pairs": len(val),
            "metric": "p(+λ) − p(−λ) of the matching answer" if bidirectional else "p(+λ) of the matching answer"}


def _behaviour_data(spec: str, split: str) -> tuple[list[Any], list[Any]]:
    """A behaviour set's A/B items and free-text pairs (question, matching answer, other answer) of ``split``;
    a file (``load_behaviour_file``) whole."""
    from interp_steer.data.specs import load_ab_items, load_behaviour_file, load_pairs

    if not spec.startswith(("bipo:", "mwe:")):
        return load_behaviour_file(spec)
    pairs = load_pairs(spec, split=split, form="text")  # checks the set's name first
    return load_ab_items(spec, split=split), list(pairs)


def _bare(text: str) -> str:
    """A question without its ``Choices:`` block, whitespace and case: what two items must differ in."""
    from interp_steer.data.loaders import parse_mwe_question

    parsed = parse_mwe_question(text)
    return " ".join((parsed[0] if parsed else text).split()).lower()


def _questions(items: list[Any], pairs: list[Any]) -> set[str]:
    """The scored questions: free-text pairs' bare questions and A/B items' questions."""
    return {_bare(p.prompt) for p in pairs} | {_bare(i.question) for i in items}


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args

    p = sub.add_parser("evaluate", help="λ sweep of one steering vector (culture MCQ or behaviour free text + A/B)",
                       description="Score one vector at a grid of strengths; writes evaluation.json and an offline "
                                   "plotly evaluation.html (accuracy or matching-answer probability vs λ; localized "
                                   "vs non-localized per country). Behaviour sets are scored as free text (p of the "
                                   "matching answer against the other after the bare question) with the A/B letter "
                                   "probability beside it. --calibrate adds the strength chosen on training pairs "
                                   "under the fluency bound (and its negative for behaviour vectors).")
    _add_model_args(p)
    p.add_argument("--vector", required=True, help="a SteeringVector (.safetensors with its JSON sidecar)")
    p.add_argument("--sae", default=None, help="SAE folder for SAE-latent vectors, shipped name, or a shipped width such as 16384 (default: the vector's own)")
    p.add_argument("--data", default="culture",
                   help="culture (MCQ) | bipo:<behaviour> | mwe:<name> (free-text pairs and A/B letters) | a "
                        "JSONL/CSV/Parquet file of your own held-out behaviour items, scored whole: model-written-"
                        "evals columns (free text + A/B), BiPO's question/matching/not_matching or "
                        "prompt/chosen/rejected (free text), BiPO's question/A/B/matching (A/B)")
    p.add_argument("--country", action="append", help="culture country (repeatable; default: all)")
    p.add_argument("--split", choices=["train", "test"], default=None,
                   help="default test; a data file has no split (it is scored whole)")
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
    p.add_argument("--calibrate", action="store_true",
                   help="also score the strength calibrate_strength chooses on --val-pairs training pairs: the "
                        "largest p(+λ) − p(−λ) (behaviour; bound at ±λ) or p(+λ) (culture) whose perplexity ratio on "
                        "--calibration-texts held-out documents stays within --max-ppl-ratio")
    p.add_argument("--val-pairs", type=int, default=32, help="--calibrate: training pairs it chooses on (default 32)")
    p.add_argument("--val-data", default=None,
                   help="--calibrate on a behaviour set: where the --val-pairs come from (default: the training split "
                        "of --data; needed when --data is a file): bipo:<behaviour> or mwe:<name> (their training "
                        "split) or a behaviour file; pairs whose question is a scored one are passed over")
    p.add_argument("--calibration-texts", type=int, default=24,
                   help="--calibrate: held-out documents for its bound (others than the 8 the sweep reports on)")
    p.add_argument("--calibration-strengths", type=float, nargs="+", default=[0.5, 1, 2, 4, 8, 16, 32],
                   help="--calibrate: grid, refined by bisection below the first strength that breaks the bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/evaluate")
    p.set_defaults(func=cmd_evaluate)
