"""margin_shift at λ = 4 of every method in `tests/test_compare.py`'s end-to-end configuration (same builder,
same 8 Morocco test questions), next to random dense directions of the same edit norm (5 seeds): the
measurement behind the decision not to assert an effect direction in that test (see the session note).

    python scripts/compare_direction.py
"""

from __future__ import annotations

import json

import torch

from interp_steer import SteeringVector, load_model, load_sae
from interp_steer.evaluation.compare import CompareConfig, _items, build_vector, strength_sweep


def main() -> None:
    model = load_model()
    sae = load_sae(model=model)
    cfg = CompareConfig(countries=["morocco"], steps=10, lineas_steps=10, strengths=[4.0], max_items=8,
                        max_train_pairs=16, preservation_texts=8, preservation_items=16, max_ppl_ratio=1000.0,
                        guard_texts=4)
    test_items = _items("morocco", "test", cfg)
    out = {}
    for method in ["caa", "sas", "bipo", "yapo", "lineas"]:
        v = build_vector(model, sae, method, "morocco", cfg)
        vsae = sae if v.kind == "sae" else None
        r = strength_sweep(model, v, test_items, [4.0], sae=vsae)[-1]
        rec: dict = {"margin_shift": r["margin_shift"], "score_shift": r["score_shift"]}
        if v.kind in ("dense", "sae"):
            hook, t = next(iter(v.tensors.items()))
            edit = t["latent"].float() @ sae.W_dec.float() if v.kind == "sae" else t["vector"].float()
            rnd = []
            for seed in range(5):
                g = torch.Generator().manual_seed(100 + seed)
                d = torch.randn(edit.shape, generator=g)
                d = d / d.norm() * edit.norm()
                rv = SteeringVector("random", "dense", {hook: {"vector": d}}, v.model)
                rnd.append(strength_sweep(model, rv, test_items, [4.0])[-1]["margin_shift"])
            rec["random_margin_shifts"] = rnd
        out[method] = rec
        print(method, rec, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
