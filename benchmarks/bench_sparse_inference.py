"""YaPO inference cost: sparse-support SAE steering vs the full SAE formula vs a dense vector, one run.

The support path encodes only the latents where ``v != 0`` (exact for ReLU/JumpReLU SAEs). The comparison
uses a JumpReLU SAE of ``--d-sae`` latents (random weights: only the cost is measured; equality with the full
formula is asserted on the way) and, when present, the shipped SAE (TopK: full formula only).
Target: sparse-vector steered generation <= 1.1x the dense-vector cost.

    python benchmarks/bench_sparse_inference.py [--d-sae 16384 --nnz 32 --max-new-tokens 48]
"""

from __future__ import annotations

import argparse

import torch
from common import save, timed

from interp_steer import load_model
from interp_steer.generation import generate
from interp_steer.steering import DenseIntervention, SAEIntervention


def _jumprelu(d_in: int, d_sae: int, hook: str):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    sae.cfg.metadata.hook_name = hook
    with torch.no_grad():
        sae.W_enc.normal_(0, d_in**-0.5)
        sae.W_dec.normal_(0, d_sae**-0.5)
        sae.threshold.fill_(0.05)
    return sae.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--nnz", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = load_model()
    hook = "blocks.15.hook_resid_post"
    sae = _jumprelu(model.cfg.d_model, args.d_sae, hook)
    v = torch.zeros(args.d_sae)
    v[torch.randperm(args.d_sae)[: args.nnz]] = torch.randn(args.nnz)
    sparse_iv = SAEIntervention(sae, v)
    full_iv = SAEIntervention(sae, v, sparse=False)
    assert sparse_iv.support is not None
    h = torch.randn(4, 9, model.cfg.d_model) * 5
    torch.testing.assert_close(sparse_iv(h, 2.0), full_iv(h, 2.0), atol=1e-5, rtol=1e-5)
    dense_iv = DenseIntervention(torch.randn(model.cfg.d_model))
    prompts = ["Tell me about a festival you like.", "What do you eat for breakfast?"] * (args.batch_size // 2)
    n_tokens = len(prompts) * args.max_new_tokens

    def run(iv):
        return lambda: generate(model, prompts, {hook: iv} if iv is not None else None, 1.0,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, ignore_eos=True)

    variants = {"unsteered": None, "dense_vector": dense_iv, "sae_sparse_support": sparse_iv, "sae_full_formula": full_iv}
    try:
        from interp_steer import load_sae

        shipped = load_sae(model=model)
        sv = torch.zeros(shipped.cfg.d_sae)
        sv[: args.nnz] = 1.0
        variants[f"shipped_{shipped.cfg.architecture()}_sae_full"] = SAEIntervention(shipped, sv)
    except Exception as exc:  # noqa: BLE001 - the shipped SAE is optional here
        print(f"(shipped SAE not measured: {exc})")
    results = {}
    for name, iv in variants.items():
        seconds, _ = timed(run(iv), repeats=args.repeats)
        results[name] = {"seconds": round(seconds, 3), "tokens_per_s": round(n_tokens / seconds, 1)}
        print(name, results[name])
    dense = results["dense_vector"]["seconds"]
    save("sparse_inference", {
        "settings": {"d_sae": args.d_sae, "nnz": args.nnz, "batch_size": args.batch_size,
                     "max_new_tokens": args.max_new_tokens, "hook": hook, "sae": "random JumpReLU"},
        "results": results,
        "cost_vs_dense_vector": {k: round(r["seconds"] / dense, 3) for k, r in results.items()},
        "target": "sae_sparse_support <= 1.1x dense_vector",
    })


if __name__ == "__main__":
    main()
