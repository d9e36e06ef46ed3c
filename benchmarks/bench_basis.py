"""Basis ablation: YaPO in the 4,096-latent and the 16,384-latent SAE of the embedded model, same data, same recipe.

Two measurements per SAE, each the project's existing one with only the SAE changed:

* **behaviour** – :mod:`bench_efficacy` for ``yapo`` (exact) and ``yapo-sparse`` (its 256 heaviest latents) on
  the behaviour sets: 256 training pairs, 32 validation pairs, 64 unseen test items, preset ``small``, λ
  calibrated on the validation pairs under a ×1.2 perplexity bound; free-text Δp at ±λ and the perplexity
  ratio on held-out corpus documents. The default SAE's rows are the efficacy benchmark's own
  (``benchmarks/results/efficacy``, the same recipe); other SAEs get ``benchmarks/results/efficacy_sae<width>``.
* **culture** – :func:`interp_steer.demo.run_demo` (sparse YaPO for one country, 2 epochs, λ chosen on
  validation stems under the ×1.2 bound): held-out non-localized / localized accuracy before and after,
  perplexity ratio, non-zero latents and the share of the decoded effect on country-selective latents
  (AUROC ≥ 0.7). Written to ``benchmarks/results/basis/demo_<width>/demo.json``; the default SAE's Morocco row
  is the demo's own committed run, ``benchmarks/results/demo/demo.json``. The rows measured on 2026-12-04 (the
  16k SAE's first export, the demo before its confidence bound) are kept in ``benchmarks/results/basis/2026-12-04``.

Every part is skipped when its result exists, so the run resumes; ``--report`` only rebuilds the table.

    python benchmarks/bench_basis.py                                   # both SAEs, both parts
    python benchmarks/bench_basis.py --only culture --saes 16384       # one part of one SAE (parallel runs)
    python benchmarks/bench_basis.py --report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment  # noqa: E402

DEFAULT_SETS = ["bipo:power-seeking", "bipo:wealth-seeking", "mwe:survival-instinct"]
METHODS = ["yapo", "yapo-sparse"]
DEFAULT_WIDTH = 4096


def efficacy_dir(width: int) -> Path:
    return RESULTS / "efficacy" if width == DEFAULT_WIDTH else RESULTS / f"efficacy_sae{width}"


def demo_dir(width: int, country: str) -> Path:
    """The default SAE's Morocco row is ``make demo``'s own committed run (``benchmarks/results/demo``)."""
    if country == "morocco":
        return RESULTS / "demo" if width == DEFAULT_WIDTH else RESULTS / "basis" / f"demo_{width}"
    return RESULTS / "basis" / f"demo_{width}_{country}"


def run_behaviour(width: int, sets: list[str]) -> None:
    import bench_efficacy

    argv = ["--sets", *sets, "--methods", *METHODS, "--output-dir", str(efficacy_dir(width))]
    if width != DEFAULT_WIDTH:
        argv += ["--sae", str(width)]
    bench_efficacy.main(argv)


def run_culture(width: int, country: str) -> None:
    out = demo_dir(width, country)
    if (out / "demo.json").is_file():
        print(f"culture {width}: {out / 'demo.json'} exists, skipped", flush=True)
        return
    from interp_steer.demo import run_demo
    from interp_steer.models import load_model
    from interp_steer.saes import load_sae

    model = load_model()
    run_demo(country, output_dir=out, model=model, sae=load_sae(width=width, model=model))


def _behaviour_rows(width: int, sets: list[str]) -> list[dict[str, Any]]:
    from bench_efficacy import behaviour_name, slug

    rows = []
    for spec in sets:
        for m in METHODS:
            path = efficacy_dir(width) / "runs" / f"{behaviour_name(spec)}__{slug(m)}.json"
            if path.is_file():
                rows.append(json.loads(path.read_text()))
    return rows


def _f(x: Any, signed: bool = False, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def report(widths: list[int], sets: list[str], country: str) -> dict[str, Any]:
    from bench_efficacy import behaviour_name

    from interp_steer.io import write_text_atomic

    lines = ["| SAE | set | method | λ | nnz | p₀ | Δp +λ | Δp −λ | ppl× +λ | ppl× −λ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    behaviour: dict[str, list[dict[str, Any]]] = {}
    for spec in sets:
        for m in METHODS:
            for w in widths:
                for r in _behaviour_rows(w, [spec]):
                    if r["method"] != m:
                        continue
                    behaviour.setdefault(str(w), []).append(r)
                    lam = "none fluent" if r.get("strength") is None else f"{r['strength']:.3g}"
                    lines.append(f"| {w} | {behaviour_name(spec)} | {m} | {lam} | {r.get('nnz')} "
                                 f"| {_f(r['p_unsteered'])} | {_f(r.get('dp_plus'), True)} "
                                 f"| {_f(r.get('dp_minus'), True)} | {_f(r.get('ppl_ratio_plus'), digits=2)} "
                                 f"| {_f(r.get('ppl_ratio_minus'), digits=2)} |")
    culture: dict[str, Any] = {}
    lines += ["", f"| SAE | culture ({country}) | λ | nnz | non-loc before → after | loc before → after "
              "| ppl× | repeated 3-grams, unsteered → steered | selective share (AUROC ≥ 0.7) | selective latents "
              "| mean AUROC of top 8 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in widths:
        path = demo_dir(w, country) / "demo.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        culture[str(w)] = d
        b, a = d["mcq_before"], d["mcq_after"]
        sel = d["selectivity"]
        top_auroc = sum(lat["auroc"] for lat in sel["latents"]) / max(1, len(sel["latents"]))
        rep = d.get("generation_repetition")  # absent from demos before 2026-12-05
        rep_cell = f"{rep['unsteered']:.1%} → {rep['steered']:.1%}" if rep else "–"
        lines.append(
            f"| {w} | yapo-sparse | {d['strength']:.3g} | {d['n_nonzero']} "
            f"| {b['acc_nonlocalized']:.1%} → {a['acc_nonlocalized']:.1%} "
            f"| {b['acc_localized']:.1%} → {a['acc_localized']:.1%} | {d['heldout_ppl_ratio']:.3f} | {rep_cell} "
            f"| {sel['selective_share']:.1%} | {sel['n_selective']} of {sel['n_scored']} | {top_auroc:.3f} |")
    md = "\n".join(lines)
    out = RESULTS / "basis"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "basis.md", md + "\n")
    summary = {"environment": environment(), "widths": widths, "sets": sets, "country": country,
               "behaviour": behaviour, "culture": culture}
    write_text_atomic(out / "basis.json", json.dumps(summary, indent=2, ensure_ascii=False))
    print(md)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--saes", type=int, nargs="+", default=[DEFAULT_WIDTH, 16384], help="shipped SAE widths")
    p.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    p.add_argument("--country", default="morocco")
    p.add_argument("--only", choices=["behaviour", "culture"], default=None)
    p.add_argument("--report", action="store_true", help="only rebuild basis.md / basis.json")
    args = p.parse_args(argv)
    from interp_steer.errors import InterpSteerError
    from interp_steer.saes import shipped_sae_name

    for w in args.saes:
        try:
            shipped_sae_name(w)
        except InterpSteerError as exc:
            raise SystemExit(f"--saes: {exc}") from None
    if not args.report:
        for w in args.saes:
            if args.only in (None, "behaviour"):
                run_behaviour(w, args.sets)
            if args.only in (None, "culture"):
                run_culture(w, args.country)
    report(args.saes, args.sets, args.country)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
