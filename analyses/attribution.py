"""Which SAE latents carry the culture steering vectors' effects (issue #9, "Explain the vectors").

On the embedded SmolLM2-135M-Instruct with the shipped SAE (blocks.15.hook_resid_post) and the culture set:

1. one SAS vector per country (train pairs, top-32 latents) and, for the attributed countries, one CAA vector
   at the SAE's hook (dense, response-mean contrast);
2. for the attributed countries, gradient × Δ attribution of the culture-MCQ correct-option margin (held-out
   questions of that country) to latents, checked by ablating the top latents one by one; for the CAA vector
   the same on its decoder decomposition (OMP atoms);
3. cross-country comparison of the SAS vectors (Jaccard of top latents, cosine matrices).

A YaPO vector trained by ``make demo`` (``runs/demo/yapo/vector.safetensors``) is attributed and compared too
when present and made with the same SAE (``--vector PATH`` adds others). Writes ``results/attribution/``:
``attribution_<name>.json/.html``, ``compare.json/.html`` and ``summary.json``.

    python analyses/attribution.py                          # ~3-5 min on 2 CPU cores
    python analyses/attribution.py --attribute egypt morocco india --ablate-top 10 --items 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

COUNTRIES = ("egypt", "morocco", "india", "mexico", "brazil", "uk")


def _write_json(path: Path, data: Any) -> None:
    from interp_steer.io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def _brief(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"method": report["method"], "kind": report["kind"], "seconds": round(seconds, 1)}
    if "usage" in report:
        u = report["usage"]
        out.update(n_nonzero=u["n_nonzero"], n_for_50pct=u["n_for_50pct"], n_for_90pct=u["n_for_90pct"])
    else:
        dec = report["projection"]["decomposition"]
        out.update(best_cosine=report["projection"]["cosine"][0],
                   omp_atoms=len(dec["atoms"]), omp_explained=dec["explained"])
    attr = report.get("attribution")
    if attr:
        out.update(metric=attr["metric"], strength=attr["strength"], effect=attr["effect"],
                   agreement=attr["agreement"],
                   top=[{k: e.get(k) for k in ("latent", "grad_x_delta", "ablation_effect")} for e in attr["top"][:5]])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--countries", nargs="+", default=list(COUNTRIES), help="SAS vectors to compare")
    p.add_argument("--attribute", nargs="+", default=["morocco"], help="countries whose vectors are attributed")
    p.add_argument("--pairs", type=int, default=24, help="train pairs per country for SAS/CAA (0 = all)")
    p.add_argument("--items", type=int, default=8, help="held-out MCQ items per attributed country (0 = all)")
    p.add_argument("--sas-top-k", type=int, default=32)
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--ablate-top", type=int, default=8)
    p.add_argument("--vector", action="append", default=None,
                   help="extra SAE-latent/dense vectors to attribute (default: the demo's YaPO vector if present)")
    p.add_argument("--no-caa", action="store_true", help="skip the dense CAA vectors")
    p.add_argument("--output-dir", default="results/attribution")
    args = p.parse_args(argv)
    unknown = sorted((set(args.countries) | set(args.attribute)) - set(COUNTRIES))
    if unknown:
        p.error(f"unknown countries {unknown}; expected some of {list(COUNTRIES)}")

    import torch

    from interp_steer.data.loaders import culture_preferences, load_culture
    from interp_steer.errors import InterpSteerError
    from interp_steer.interpret.attribution import (
        compare_vectors,
        explain,
        mcq_margin_metric,
        write_attribution_html,
        write_compare_html,
    )
    from interp_steer.methods.caa import compute_caa
    from interp_steer.methods.sas import compute_sas
    from interp_steer.models import load_model
    from interp_steer.saes import load_sae
    from interp_steer.steering.vector import SteeringVector

    torch.manual_seed(0)
    out = Path(args.output_dir)
    t_start = time.perf_counter()
    print("loading the embedded model and the shipped SAE ...", flush=True)
    model = load_model()
    sae = load_sae(model=model)
    hook = sae.cfg.metadata.hook_name
    layer = int(hook.split(".")[1])
    timings: dict[str, float] = {"load": time.perf_counter() - t_start}

    vectors: dict[str, SteeringVector] = {}
    t0 = time.perf_counter()
    for country in dict.fromkeys([*args.countries, *args.attribute]):
        pairs = culture_preferences(countries=country, split="train")
        pairs = pairs[: args.pairs] if args.pairs else pairs
        vectors[f"sas-{country}"] = compute_sas(model, sae, pairs, top_k=args.sas_top_k)
        if country in args.attribute and not args.no_caa:
            vectors[f"caa-{country}"] = compute_caa(model, pairs, layers=layer)[layer]
        print(f"  vectors for {country} ({len(pairs)} pairs): {time.perf_counter() - t0:.0f} s", flush=True)
    timings["vectors"] = time.perf_counter() - t0

    extra = list(args.vector or [])
    demo = Path("runs/demo/yapo/vector.safetensors")
    if args.vector is None and demo.is_file():
        extra.append(str(demo))
    skipped: dict[str, str] = {}
    for path in extra:
        name = "yapo-demo" if Path(path) == demo else Path(path).stem
        try:
            vec = SteeringVector.load(path, model=model, sae=sae)
        except InterpSteerError as exc:
            skipped[path] = str(exc)
            print(f"  skipping {path}: {exc}", flush=True)
            continue
        vectors[name] = vec

    summary: dict[str, Any] = {"model": model.cfg.model_name, "sae_hook": hook, "strength": args.strength,
                               "pairs_per_country": args.pairs, "items_per_country": args.items,
                               "skipped": skipped, "vectors": {}}
    targets = [n for n in vectors if n.split("-", 1)[-1] in args.attribute or not n.startswith(("sas-", "caa-"))]
    for name in targets:
        vec = vectors[name]
        country = name.split("-", 1)[1] if name.startswith(("sas-", "caa-")) else (
            vec.config.get("country") or args.attribute[0])
        items = load_culture(countries=country, split="test")
        items = items[: args.items] if args.items else items
        metric = mcq_margin_metric(model, items)
        t0 = time.perf_counter()
        report = explain(model, vec, sae, metric, k=args.k, ablate_top=args.ablate_top, strength=args.strength)
        report["metric_data"] = f"culture:{country} (test, {len(items)} items)"
        seconds = time.perf_counter() - t0
        _write_json(out / f"attribution_{name}.json", report)
        write_attribution_html(report, out / f"attribution_{name}.html", title=f"{name}: culture:{country} MCQ margin")
        summary["vectors"][name] = _brief(report, seconds)
        agr = report["attribution"]["agreement"]
        eff = report["attribution"]["effect"]
        print(f"  {name}: Δ margin {eff['total']:+.4f}, Spearman(grad×Δ, ablation) {agr['spearman']}, "
              f"top-{agr['k']} overlap {agr['topk_overlap']} ({seconds:.0f} s)", flush=True)

    comparable = {n: v for n, v in vectors.items() if n.startswith("sas-") or v.kind == "sae"}
    cmp = compare_vectors(comparable, sae, k=args.k)
    _write_json(out / "compare.json", cmp)
    write_compare_html(cmp, out / "compare.html", title="culture steering vectors: shared SAE latents")
    names = cmp["names"]
    off = [(a, b, cmp["jaccard"][i][j], cmp["cosine"][i][j])
           for i, a in enumerate(names) for j, b in enumerate(names) if i < j]
    summary["compare"] = {"names": names, "mean_offdiag_jaccard": sum(o[2] for o in off) / max(len(off), 1),
                          "mean_offdiag_cosine": sum(o[3] for o in off) / max(len(off), 1),
                          "max_jaccard_pair": max(off, key=lambda o: o[2])[:3] if off else None}
    timings["total"] = time.perf_counter() - t_start
    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    summary["command"] = "python analyses/attribution.py " + " ".join(sys.argv[1:] if argv is None else argv)
    _write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("compare", "seconds")}, indent=2))
    print(f"wrote {out}/summary.json, compare.json/.html and attribution_*.json/.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
