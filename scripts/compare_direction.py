"""margin_shift at λ = 4 of every method in `tests/test_compare.py`'s end-to-end configuration (same builder,
same 8 Morocco test questions), next to random dense directions of the same edit norm (5 seeds): the
measurement behind the decision not to assert an effect direction in that test (see the session note).
``--full``: CAA only, every training pair and the whole test split (62 questions) of each ``--countries``,
at λ = 2 and 4 — the measurement behind the thresholds of
``test_compare_reports_the_direction_and_size_of_caa_on_every_test_question``.

    python scripts/compare_direction.py
    python scripts/compare_direction.py --full --countries morocco egypt
"""

from __future__ import annotations

import argparse
import json

import torch

from interp_steer import SteeringVector, load_model, load_sae
from interp_steer.evaluation.compare import CompareConfig, _items, build_vector, strength_sweep


def _random_shifts(model, v, sae, items) -> list[float]:
    """margin_shift at λ = 4 of 5 random dense directions with the norm of ``v``'s decoded edit."""
    hook, t = next(iter(v.tensors.items()))
    edit = t["latent"].float() @ sae.W_dec.float() if v.kind == "sae" else t["vector"].float()
    rnd = []
    for seed in range(5):
        g = torch.Generator().manual_seed(100 + seed)
        d = torch.randn(edit.shape, generator=g)
        d = d / d.norm() * edit.norm()
        rv = SteeringVector("random", "dense", {hook: {"vector": d}}, v.model)
        rnd.append(strength_sweep(model, rv, items, [4.0])[-1]["margin_shift"])
    return rnd


def full(model, sae, countries: list[str]) -> None:
    out = {}
    for country in countries:
        cfg = CompareConfig(countries=[country])
        test_items = _items(country, "test", cfg)
        v = build_vector(model, sae, "caa", country, cfg)
        rec: dict = {"n_test": len(test_items)}
        for lam in (2.0, 4.0):
            rec[f"margin_shift_{lam:g}"] = strength_sweep(model, v, test_items, [lam])[-1]["margin_shift"]
        rec["random_margin_shifts_4"] = _random_shifts(model, v, sae, test_items)
        out[country] = rec
        print(country, rec, flush=True)
    print(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--countries", nargs="+", default=["morocco"])
    args = p.parse_args()
    model = load_model()
    sae = load_sae(model=model)
    if args.full:
        full(model, sae, args.countries)
        return
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
            rec["random_margin_shifts"] = _random_shifts(model, v, sae, test_items)
        out[method] = rec
        print(method, rec, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
