"""How symmetric is a YaPO vector's edit between +λ and −λ?

BiPO's edit is ``±λ·v``: the same size both ways. YaPO's is ``Dec(ReLU(s ± λ·v)) − Dec(s)``: at +λ a latent with
``v_i > 0`` is switched on at every token, but at −λ the same latent can only be lowered to zero where it already
fires, so the −λ edit is bounded by what the SAE encodes at each token. This script measures that at each vector's
calibrated λ (read from the efficacy benchmark's run records), per token of two kinds of text:

* the set's test items (question + matching answer, chat-templated: the positions the headline measure scores);
* the held-out report documents on which the perplexity ratio is measured.

For each: mean ‖edit(+λ)‖ and ‖edit(−λ)‖ (and their ratio), the mean cosine of edit(−λ) with −edit(+λ) (1 for an
odd edit), the norms of the edit's even part ``(e+ + e−)/2`` (the same at both signs) and odd part ``(e+ − e−)/2``,
and the mean number of latents the edit changes at each sign. Per vector: where its positive and negative parts
point once decoded, against the SAE's mean decoder row. Dense vectors (BiPO, CAA) are symmetric by construction (ratio 1,
cosine 1) and are listed for their edit size only.

    python scripts/yapo_asymmetry.py --output benchmarks/results/efficacy/asymmetry.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def token_acts(model: Any, hook: str, sequences: list[list[int]]) -> torch.Tensor:
    """Residual activations at ``hook`` for every token of every sequence, stacked ``[tokens, d_model]``."""
    from interp_steer.methods.activations import hook_layer

    layer = hook_layer(hook)
    out = []
    with torch.no_grad():
        for ids in sequences:
            _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=hook, stop_at_layer=layer + 1)
            out.append(cache[hook][0])
    return torch.cat(out)


def edit_stats(vector: Any, sae: Any, h: torch.Tensor, lam: float) -> dict[str, float]:
    from interp_steer.steering.interventions import interventions_for

    hook, inter = next(iter(interventions_for(vector, sae if vector.kind == "sae" else None).items()))
    with torch.no_grad():
        plus = inter(h, lam) - h
        minus = inter(h, -lam) - h
        row = {"edit_norm_plus": float(plus.norm(dim=-1).mean()), "edit_norm_minus": float(minus.norm(dim=-1).mean()),
               "cos_minus_vs_neg_plus": float(torch.nn.functional.cosine_similarity(minus, -plus, dim=-1).mean()),
               "resid_norm": float(h.norm(dim=-1).mean())}
        row["norm_ratio_minus_over_plus"] = row["edit_norm_minus"] / max(row["edit_norm_plus"], 1e-12)
        # the edit's even part (the same at both signs: it moves nothing between +λ and −λ) against its odd part
        # (what separates +λ from −λ)
        row["even_norm"] = float(((plus + minus) / 2).norm(dim=-1).mean())
        row["odd_norm"] = float(((plus - minus) / 2).norm(dim=-1).mean())
        if vector.kind == "sae":
            v = next(iter(vector.tensors.values()))["latent"].to(sae.dtype)
            s = sae.encode(h.to(sae.dtype))
            for sign, name in ((1.0, "plus"), (-1.0, "minus")):
                changed = (torch.relu(s + sign * lam * v) - s) != 0
                row[f"latents_changed_{name}"] = float(changed.sum(-1).float().mean())
            # the share of the vector's latents with v_i > 0 that fire at a token (only there can -λ lower them)
            pos = v > 0
            row["positive_latents"] = int(pos.sum())
            row["positive_firing_share"] = float((s[:, pos] > 0).float().mean()) if pos.any() else 0.0
    return row


def decoded_parts(vector: Any, sae: Any) -> dict[str, float]:
    """Where the positive and negative parts of ``v`` point once decoded: ``u+ = Σ_{v_i>0} v_i·W_dec[i]`` (switched
    on at +λ) and ``u− = Σ_{v_i<0} |v_i|·W_dec[i]`` (switched on at −λ), against the mean decoder row."""
    v = next(iter(vector.tensors.values()))["latent"].float()
    w = sae.W_dec.detach().float()
    mean = w.mean(0)
    up, un = v.clamp_min(0) @ w, (-v).clamp_min(0) @ w
    cos = torch.nn.functional.cosine_similarity
    return {"u_plus_norm": float(up.norm()), "u_minus_norm": float(un.norm()), "decoded_norm": float((v @ w).norm()),
            "cos_u_plus_u_minus": float(cos(up, un, dim=0)), "cos_u_plus_mean_row": float(cos(up, mean, dim=0)),
            "cos_u_minus_mean_row": float(cos(un, mean, dim=0)), "n_plus": int((v > 0).sum()),
            "n_minus": int((v < 0).sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/efficacy"),
                   help="an efficacy benchmark output folder (runs/ and vectors/)")
    p.add_argument("--methods", nargs="+", default=["bipo", "yapo", "yapo-sparse"])
    p.add_argument("--items", type=int, default=16, help="test items per set")
    p.add_argument("--documents", type=int, default=8, help="report documents (128 tokens each)")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    res = Path(args.results)
    runs = sorted((res / "runs").glob("*.json"))
    if not runs:
        raise SystemExit(f"no run records under {res / 'runs'}")

    from bench_efficacy import behaviour_name, load_set, slug

    from interp_steer.chat import chat_tokens
    from interp_steer.evaluation.preservation import default_texts
    from interp_steer.models import load_model
    from interp_steer.saes import load_sae
    from interp_steer.steering.vector import SteeringVector

    t0 = time.perf_counter()
    model = load_model()
    sae = load_sae(model=model)
    hook = sae.cfg.metadata.hook_name
    docs = default_texts(args.documents, tokenizer=model.tokenizer)
    doc_ids = [model.to_tokens(d)[0, :128].tolist() for d in docs]
    h_docs = token_acts(model, hook, doc_ids)
    rows = []
    sets = dict.fromkeys(json.loads(r.read_text())["set"] for r in runs)
    for spec in sets:
        name = behaviour_name(spec)
        items = None
        for method in args.methods:
            run = res / "runs" / f"{name}__{slug(method)}.json"
            vec = res / "vectors" / f"{name}__{slug(method)}.safetensors"
            if not (run.exists() and vec.exists()):
                continue
            rec = json.loads(run.read_text())
            if rec.get("strength") is None:
                continue
            if items is None:
                st = rec["settings"]
                test = load_set(spec, st["train_pairs"], st["val_pairs"], args.items, st["seed"])[2]
                items = token_acts(model, hook, [chat_tokens(model.tokenizer, ex.prompt, ex.chosen).ids for ex in test])
            vector = SteeringVector.load(vec, model=model, sae=sae)
            lam = float(rec["strength"])
            row = {"set": name, "method": method, "strength": lam, "dp_plus": rec.get("dp_plus"),
                   "dp_minus": rec.get("dp_minus"), "ppl_ratio_plus": rec.get("ppl_ratio_plus"),
                   "ppl_ratio_minus": rec.get("ppl_ratio_minus"),
                   "test_items": edit_stats(vector, sae, items, lam), "documents": edit_stats(vector, sae, h_docs, lam)}
            if vector.kind == "sae":
                row["decoded"] = decoded_parts(vector, sae)
            rows.append(row)
            ti, dc = row["test_items"], row["documents"]
            print(f"{name:28s} {method:12s} λ={lam:<6g} ‖e−‖/‖e+‖ items {ti['norm_ratio_minus_over_plus']:.2f} "
                  f"docs {dc['norm_ratio_minus_over_plus']:.2f}  cos {ti['cos_minus_vs_neg_plus']:.2f}  "
                  f"even/odd {ti['even_norm'] / max(ti['odd_norm'], 1e-12):.2f}  "
                  f"Δp {row['dp_plus']:+.3f} / {row['dp_minus']:+.3f}", flush=True)
    w = sae.W_dec.detach().float()
    mean_row = w.mean(0)
    out = {"mean_cos_decoder_row_to_mean_row": float((w @ mean_row / mean_row.norm() / w.norm(dim=-1)).mean()),
           "results": str(res.relative_to(ROOT)) if res.is_relative_to(ROOT) else str(res), "hook": hook,
           "items_per_set": args.items, "documents": args.documents, "seconds": round(time.perf_counter() - t0, 1),
           "rows": rows}
    if args.output:
        from interp_steer.io import write_text_atomic

        write_text_atomic(Path(args.output), json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
