"""``interp-steer attribute``: which SAE latents a steering vector uses and which carry its effect on a metric.

    interp-steer attribute --vector v.safetensors --data culture:morocco --output-dir runs/attr
    interp-steer attribute --vector v.safetensors --data pairs.jsonl --metric preference --ablate-top 10 ...
    interp-steer attribute --compare egypt.safetensors morocco.safetensors india.safetensors --output-dir runs/cmp

Single-vector mode writes ``attribution.json`` + ``attribution.html`` (usage or dense projection, and with
``--data`` gradient × Δ estimates checked by ablation); ``--compare`` writes ``compare.json`` + ``compare.html``
(Jaccard overlap of top latents, cosine similarity matrices).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError

METRICS = ("auto", "mcq", "preference")
SPLITS = ("test", "train", "all")


def metric_from_spec(model: Any, spec: str, *, metric: str = "auto", split: str = "test",
                     localization: str | None = None, limit: int | None = None, batch_size: int = 16,
                     seed: int = 0):
    """A :class:`~interp_steer.interpret.attribution.SequenceMetric` named by a data spec.

    * ``culture`` / ``culture:<country>[,<country>...]`` — the culture set; ``metric="auto"`` or ``"mcq"``: the MCQ
      correct-option margin; ``"preference"``: the log-prob margin of its (MCQ-form) preference pairs.
    * any other :func:`interp_steer.data.specs.load_pairs` spec (``bipo:<behaviour>``, ``mwe:<name>``, ``dcl``)
      or a JSONL/CSV/Parquet file with ``prompt, chosen, rejected`` — the preference margin.
    """
    from interp_steer.data import loaders
    from interp_steer.data.specs import has_splits, load_pairs
    from interp_steer.interpret.attribution import mcq_margin_metric, preference_margin_metric

    if metric not in METRICS:
        raise InterpSteerError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if split not in SPLITS:
        raise InterpSteerError(f"unknown split {split!r}; expected one of {SPLITS}")
    if limit is not None and limit < 1:
        raise InterpSteerError("--limit must be at least 1")
    which = None if split == "all" else split
    if spec == "culture" or spec.startswith("culture:"):
        countries = [c.strip() for c in spec.split(":", 1)[1].split(",") if c.strip()] if ":" in spec else None
        if spec.startswith("culture:") and not countries:
            raise InterpSteerError("culture:<country> names no country")
        items = loaders.load_culture(countries=countries, localization=localization, split=which, seed=seed)
        if limit is not None:
            items = items[:limit]
        if metric == "preference":
            pairs = loaders.culture_preferences(items, form="mcq", seed=seed)
            return preference_margin_metric(model, pairs, batch_size=max(1, batch_size // 2))
        return mcq_margin_metric(model, items, batch_size=batch_size)
    if metric == "mcq":
        raise InterpSteerError(f"--metric mcq needs culture data (culture or culture:<country>), not {spec!r}")
    if split == "all" and has_splits(spec):
        pairs = load_pairs(spec, split="train", seed=seed) + load_pairs(spec, split="test", seed=seed)
    else:
        pairs = load_pairs(spec, split=split if split != "all" else "train", seed=seed)
    if limit is not None:
        pairs = pairs[:limit]
    return preference_margin_metric(model, pairs, batch_size=max(1, batch_size // 2))


def _load_sae_for(vector: Any, sae_arg: str | None, model: Any | None):
    from interp_steer.saes import load_sae

    if sae_arg:
        return load_sae(path=sae_arg, model=model)
    ref = (vector.sae or {}) if vector is not None else {}
    if ref.get("release"):
        return load_sae(ref["release"], ref["sae_id"], model=model)
    path = str(ref.get("path") or "")
    return load_sae(path=path.removeprefix("shipped:") or None, model=model)


def _names(paths: list[str]) -> list[str]:
    """Short unique labels: file stems, or parent/stem where stems collide (runs/x/vector, runs/y/vector)."""
    stems = [Path(p).name.removesuffix(".safetensors") for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    labels = [f"{Path(p).parent.name}/{s}" for p, s in zip(paths, stems, strict=True)]
    return labels if len(set(labels)) == len(labels) else [str(Path(p)) for p in paths]


def _write_outputs(out: Path, stem: str, data: dict[str, Any], html_writer: Any, title: str) -> None:
    from interp_steer.cli import _write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(out / f"{stem}.json", data)
    html_writer(data, out / f"{stem}.html", title=title)


def _cmd_compare(args: argparse.Namespace) -> int:
    from interp_steer.interpret.attribution import compare_vectors, write_compare_html
    from interp_steer.saes import sae_reference
    from interp_steer.steering.vector import SteeringVector

    paths = list(args.compare)
    if len(paths) < 2:
        raise InterpSteerError("--compare needs at least two vectors")
    vectors = [SteeringVector.load(p) for p in paths]
    hashes = {v.model.get("config_hash") for v in vectors}
    if len(hashes) > 1:
        raise InterpSteerError("--compare: the vectors were made for different models")
    first_sae = next((v for v in vectors if v.kind == "sae"), None)
    sae = _load_sae_for(first_sae, args.sae, None)
    ref = sae_reference(sae).content_hash
    for path, v in zip(paths, vectors, strict=True):
        if v.kind == "affine":
            raise InterpSteerError(f"{path}: affine (LinEAS) maps have no SAE latents to compare")
        if v.kind == "sae" and (v.sae or {}).get("content_hash") != ref:
            raise InterpSteerError(f"{path}: made with another SAE (hash {(v.sae or {}).get('content_hash')}, "
                                   f"got {ref}); pass the matching --sae")
    names = _names(paths)
    t0 = time.perf_counter()
    result = compare_vectors(dict(zip(names, vectors, strict=True)), sae, k=args.k)
    result["paths"] = paths
    result["sae_hook"] = sae.cfg.metadata.hook_name
    result["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(args.output_dir)
    _write_outputs(out, "compare", result, write_compare_html, f"{len(names)} steering vectors compared")
    print(f"compared {len(names)} vectors (top-{args.k} latents); wrote {out / 'compare.json'} and compare.html")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from interp_steer.cli import _model
    from interp_steer.interpret.attribution import explain, write_attribution_html
    from interp_steer.steering.vector import SteeringVector

    if args.compare:
        if args.vector:
            raise InterpSteerError("pass either --vector or --compare, not both")
        return _cmd_compare(args)
    if not args.vector:
        raise InterpSteerError("attribute needs --vector PATH (or --compare V1 V2 ...)")
    for flag in ("k", "ablate_top", "steps", "atoms", "batch_size"):
        if getattr(args, flag) < (0 if flag == "ablate_top" else 1):
            raise InterpSteerError(f"--{flag.replace('_', '-')} must be positive")
    vector = SteeringVector.load(args.vector)
    if vector.kind == "affine":
        raise InterpSteerError(f"{args.vector}: affine (LinEAS) maps have no SAE latents to attribute to")
    t0 = time.perf_counter()
    model = _model(args)
    sae = _load_sae_for(vector if vector.kind == "sae" else None, args.sae, model)
    vector.check_compatible(model, sae if vector.kind == "sae" else None)
    metric = None
    if args.data:
        metric = metric_from_spec(model, args.data, metric=args.metric, split=args.split,
                                  localization=args.localization, limit=args.limit, batch_size=args.batch_size)
    report = explain(model, vector, sae, metric, k=args.k, ablate_top=args.ablate_top, strength=args.strength,
                     positions=args.positions, steps=args.steps, atoms=args.atoms)
    report["vector"] = str(args.vector)
    report["data"] = args.data
    report["split"] = args.split if args.data else None
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.output_dir)
    _write_outputs(out, "attribution", report, write_attribution_html, f"{vector.method} vector: {args.vector}")
    _print_summary(report)
    print(f"wrote {out / 'attribution.json'} and attribution.html")
    return 0


def _print_summary(report: dict[str, Any]) -> None:
    if "usage" in report:
        u = report["usage"]
        print(f"{report['method']} vector: {u['n_nonzero']} non-zero latents; {u['n_for_50pct']} carry 50 % and "
              f"{u['n_for_90pct']} carry 90 % of the decoded effect")
    else:
        dec = report["projection"]["decomposition"]
        top = report["projection"]["cosine"][:3]
        print(f"{report['method']} vector (dense): best-aligned latents "
              + ", ".join(f"{c['index']} (cos {c['cosine']:.2f})" for c in top)
              + f"; {len(dec['atoms'])} OMP atoms explain {100 * dec['explained']:.1f} % of ‖v‖²")
    attr = report.get("attribution")
    if attr:
        eff, agr = attr["effect"], attr["agreement"]

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        print(f"{attr['metric']}: unsteered {eff['unsteered']:.4f} → steered {eff['steered']:.4f} "
              f"(Δ {eff['total']:+.4f}; sum of grad × Δ {eff['sum_of_estimates']:+.4f})")
        print(f"grad × Δ vs ablation on {agr['n']} {attr['units']}s: Spearman {fmt(agr['spearman'])}, "
              f"top-{agr['k']} overlap {fmt(agr['topk_overlap'])}, sign agreement {fmt(agr['sign_agreement'])}")


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args

    p = sub.add_parser(
        "attribute", help="which SAE latents a steering vector uses and which carry its effect",
        description="Explain a YaPO/SAS (SAE-latent) or CAA/BiPO (dense) vector in terms of SAE latents: its top "
                    "latents and their share, gradient × Δ attribution of a metric checked by ablation "
                    "(--data), or cross-vector overlap matrices (--compare).")
    _add_model_args(p)
    p.add_argument("--vector", default=None, help="steering vector (.safetensors)")
    p.add_argument("--compare", nargs="+", default=None, metavar="VECTOR",
                   help="compare two or more vectors (Jaccard of top latents, cosine matrices)")
    p.add_argument("--sae", default=None,
                   help="SAE folder, shipped name, or a shipped width such as 16384 (default: the vector's own SAE, or the shipped one for dense)")
    p.add_argument("--data", default=None,
                   help="metric data: culture, culture:<country>[,...], bipo:<behaviour>, mwe:<name>, dcl[:file] "
                        "or a prompt/chosen/rejected file (omit: usage/projection only)")
    p.add_argument("--metric", choices=METRICS, default="auto",
                   help="mcq: correct-option margin (culture); preference: chosen−rejected log-prob margin "
                        "(auto: mcq for culture, preference otherwise)")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--localization", choices=["localized", "nolocalized"], default=None, help="(culture)")
    p.add_argument("--limit", type=int, default=None, help="use at most N items/pairs")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--positions", choices=["all", "after_instruction", "generated"], default=None,
                   help="position policy (default: the vector's)")
    p.add_argument("--k", type=int, default=20, help="top latents to report (and compare)")
    p.add_argument("--ablate-top", type=int, default=10, help="latents/atoms to ablate one by one")
    p.add_argument("--steps", type=int, default=1,
                   help="gradient points along s → s̃ (1: gradient at the steered point; >1: integrated gradients)")
    p.add_argument("--atoms", type=int, default=32, help="OMP atoms for dense vectors")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_attribute)
