"""Contrastive workflow: first pass (activations of both datasets, all layers) vs the cached sweep.

Target: after the first pass, the vector for another layer takes < 1 s (no model forward).

    python benchmarks/bench_contrastive.py [--n-samples 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import save

from interp_steer import load_model
from interp_steer.methods.contrastive import ActivationCache, contrastive_vector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="local:reviews")
    ap.add_argument("--baseline", default="local:news")
    ap.add_argument("--n-samples", type=int, default=64)
    args = ap.parse_args()
    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache(tmp)
        t0 = time.perf_counter()
        contrastive_vector(model, args.target, args.baseline, 0, n_samples=args.n_samples, cache=cache)
        first = time.perf_counter() - t0
        per_layer = []
        sweep_cache = ActivationCache(tmp)
        for layer in range(model.cfg.n_layers):
            t = time.perf_counter()
            contrastive_vector(model, args.target, args.baseline, layer, n_samples=args.n_samples, cache=sweep_cache)
            per_layer.append(time.perf_counter() - t)
        assert sweep_cache.forward_passes == 0
    save("contrastive", {
        "settings": {"target": args.target, "baseline": args.baseline, "n_samples": args.n_samples,
                     "layers": model.cfg.n_layers, "model": model.cfg.model_name},
        "first_pass_seconds": round(first, 2),
        "sweep_all_layers_seconds": round(sum(per_layer), 3),
        "max_seconds_per_layer_from_cache": round(max(per_layer), 4),
        "model_forwards_during_sweep": 0,
        "target": "< 1 s per additional layer",
    })


if __name__ == "__main__":
    main()
