"""What a shipped SAE offers for country steering: for each country of the culture set, how many of the SAE's
latents are selective for its culture texts (AUROC of the latent's maximum activation on that country's texts
against the other countries', as in the demo's ``country_selectivity``), the highest AUROC, and the logit lens of
the most selective latents. Every latent is scored on the 1,224 culture texts (question + correct option, both
forms), whose activations are computed once.

    python scripts/basis_selectivity.py                 # the default 4,096-latent SAE
    python scripts/basis_selectivity.py --sae 16384     # the shipped 16k SAE
"""

from __future__ import annotations

import argparse
import json

import torch

from interp_steer import load_model, load_sae
from interp_steer.interpret.features import _auroc, culture_texts, latent_logit_lens, latent_max_activations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", type=int, default=None, help="width of a shipped SAE (default: the default SAE)")
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--top", type=int, default=3, help="latents listed per country")
    p.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    model = load_model()
    sae = load_sae(width=args.sae, model=model) if args.sae else load_sae(model=model)
    texts = culture_texts()
    flat = [t for ts in texts.values() for t in ts]
    labels = [c for c, ts in texts.items() for _ in ts]
    d_sae = int(sae.cfg.d_sae)
    table = latent_max_activations(model, sae, list(range(d_sae)), flat)
    out = {"sae_width": d_sae, "threshold": args.threshold, "n_texts": len(flat), "countries": {}}
    for country in texts:
        mask = torch.tensor([c == country for c in labels])
        auroc = _auroc(table[mask], table[~mask])
        order = auroc.argsort(descending=True)[: args.top]
        out["countries"][country] = {
            "n_selective": int((auroc >= args.threshold).sum()), "n_above_0.8": int((auroc >= 0.8).sum()),
            "max_auroc": float(auroc.max()),
            "top": [{"index": int(i), "auroc": float(auroc[i]),
                     "promotes": latent_logit_lens(model, sae, int(i), 5)["promoted"]} for i in order]}
        r = out["countries"][country]
        print(f"{country:8} {r['n_selective']:3d} of {d_sae} latents with AUROC ≥ {args.threshold:g} "
              f"({r['n_above_0.8']} ≥ 0.8), highest {r['max_auroc']:.3f}; top: "
              + "; ".join(f"#{t['index']} {t['auroc']:.2f} {t['promotes']}" for t in r["top"]), flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
