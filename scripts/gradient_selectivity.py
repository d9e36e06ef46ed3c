"""Where the demo's training signal sits in the SAE basis: the gradient of the YaPO/BiPO loss with respect to
``v`` at ``v = 0`` over the demo's training pairs (both directions; at ``v = 0`` they give the same gradient),
ranked by ``|g_i|·‖W_dec[i]‖``, with each latent's country selectivity (AUROC of its maximum activation on the
country's culture texts against the other countries', as in the demo's ``country_selectivity``).

It answers whether a different optimiser or sparsity rule could put the demo vector's weight on
country-selective latents: if the latents the loss pulls on hardest are not selective, no vector trained on
that objective in that basis will be. Optionally scores a trained vector the same way (``--vector``), e.g. the
demo's, for its concentration (share of ``|v_i|·‖W_dec[i]‖`` on its top k latents).

    python scripts/gradient_selectivity.py --vector benchmarks/results/demo/yapo/vector.safetensors \
        --output benchmarks/results/basis/gradient_selectivity.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def concentration(score: torch.Tensor, auroc: torch.Tensor, threshold: float,
                  ks: tuple[int, ...] = (8, 32, 64, 256, 1024)) -> list[dict[str, float]]:
    """For each k: the share of ``score`` on its top k entries, their mean AUROC, how many are selective, and the
    share of their score on selective ones."""
    order = score.argsort(descending=True)
    total = float(score.sum())
    rows = []
    for k in ks:
        top = order[:k]
        top = top[score[top] > 0]  # a vector with fewer than k non-zero latents: only those
        sel = auroc[top] >= threshold
        part = float(score[top].sum())
        rows.append({"k": k, "share": part / total if total > 0 else 0.0, "mean_auroc": float(auroc[top].mean()),
                     "n_selective": int(sel.sum()),
                     "selective_share": float(score[top][sel].sum()) / part if part > 0 else 0.0})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--country", default="morocco")
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="the demo's seed (its training/validation stem split)")
    p.add_argument("--vector", default=None, help="also score this saved YaPO vector (e.g. the demo's)")
    p.add_argument("--output", default=None, help="write the figures to this JSON file")
    args = p.parse_args()
    if args.vector and not Path(args.vector).is_file():
        p.error(f"--vector: file not found: {args.vector}")

    from interp_steer import load_model, load_sae
    from interp_steer.demo import demo_data
    from interp_steer.interpret.features import culture_texts, latent_auroc
    from interp_steer.methods import preference as pref
    from interp_steer.steering.vector import SteeringVector

    t0 = time.perf_counter()
    model = load_model()
    sae = load_sae(model=model)
    vector = SteeringVector.load(args.vector, model=model, sae=sae) if args.vector else None  # fail before the work
    pairs = demo_data(args.country, args.seed)[0]
    hook = sae.cfg.metadata.hook_name
    data = pref.prepare_pairs(model, pairs)
    pref.compute_reference_logp(model, data, hook, cache_prefix=True)
    v = torch.zeros(int(sae.cfg.d_sae), requires_grad=True)
    intervention = pref.make_intervention("yapo", v, sae)
    for direction in (1.0, -1.0):
        for start in range(0, len(pairs), 4):
            idx = list(range(start, min(start + 4, len(pairs))))
            loss, _ = pref.fast_step_loss(model, data, idx, intervention, hook, direction, 1.0, 0.1)
            (loss * len(idx) / (2 * len(pairs))).backward()
    assert v.grad is not None
    grad = v.grad.detach()
    norms = sae.W_dec.detach().float().norm(dim=-1)
    texts = culture_texts(args.country)
    positive = texts[args.country]
    negative = [t for c, ts in texts.items() if c != args.country for t in ts]
    auroc = torch.tensor(latent_auroc(model, sae, list(range(int(sae.cfg.d_sae))), positive, negative,
                                      max_length=96))
    score = grad.abs() * norms
    order = score.argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    selective = (auroc >= args.threshold).nonzero().flatten().tolist()
    out: dict = {
        "country": args.country, "threshold": args.threshold, "n_pairs": len(pairs), "hook": hook,
        "sae_width": int(sae.cfg.d_sae), "n_nonzero_gradient": int((grad != 0).sum()),
        "gradient": concentration(score, auroc, args.threshold),
        "selective_latents": [{"index": i, "auroc": float(auroc[i]), "gradient_rank": int(rank[i])}
                              for i in selective],
        "top_gradient_latents": [{"index": int(i), "auroc": float(auroc[i]), "score": float(score[i])}
                                 for i in order[:16]],
    }
    if vector is not None:
        vs = vector.tensors[hook]["latent"].detach().float().abs() * norms
        vorder = vs.argsort(descending=True)
        out["vector"] = {"path": args.vector, "nnz": int((vs > 0).sum()),
                         "concentration": concentration(vs, auroc, args.threshold),
                         # how many of the vector's k heaviest latents are among the gradient's k heaviest
                         "overlap_with_gradient": {str(k): len(set(vorder[:k].tolist()) & set(order[:k].tolist()))
                                                   for k in (8, 32, 256)}}
    out["auroc"] = [round(float(a), 4) for a in auroc]  # every latent's, for other analyses
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
