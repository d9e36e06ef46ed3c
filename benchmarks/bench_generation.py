"""Steered generation speed vs plain Hugging Face ``generate`` (unsteered), side by side in one run.

Target (issue: foundation): steered tokens/s >= 0.9x plain HF generate; TransformerLens' own generate is the
reference path. All runs generate exactly ``--max-new-tokens`` tokens per prompt (EOS ignored), greedy.

    python benchmarks/bench_generation.py [--batch-size 8 --max-new-tokens 64 --repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from common import save, timed

from interp_steer import load_model
from interp_steer.chat import chat_tokens, pad_left, pad_token_id
from interp_steer.generation import generate
from interp_steer.models import hf_twin, model_fingerprint
from interp_steer.steering import SteeringVector

PROMPTS = [
    "What is a typical breakfast where you live?", "Describe a festival you enjoy.",
    "How do people greet each other at a wedding?", "Give me a short recipe for a cheap street food.",
    "What do families do on a public holiday?", "Which sport do children play after school?",
    "What music is played at celebrations?", "What do people drink in the afternoon?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model()
    hf = hf_twin(model)
    prompts = (PROMPTS * ((args.batch_size + len(PROMPTS) - 1) // len(PROMPTS)))[: args.batch_size]
    hook = f"blocks.{args.layer}.hook_resid_post"
    v = torch.randn(model.cfg.d_model)
    vec = SteeringVector("bench", "dense", {hook: {"vector": v / v.norm() * 4}}, model_fingerprint(model).to_dict())
    n_tokens = args.max_new_tokens * len(prompts)
    tok = model.tokenizer
    ids, mask = pad_left([chat_tokens(tok, p).ids for p in prompts], pad_token_id(tok))

    def plain_hf():
        with torch.no_grad():
            return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                               min_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=pad_token_id(tok))

    def ours(backend: str, vector=vec, positions="all"):
        return lambda: generate(model, prompts, vector, 1.0, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, backend=backend, ignore_eos=True, positions=positions)

    runs = {
        "hf_generate_unsteered": plain_hf,
        "interp_steer_unsteered": ours("hf", None),
        "interp_steer_steered": ours("hf"),
        "interp_steer_steered_after_instruction": ours("hf", vec, "after_instruction"),
        "transformer_lens_generate_steered": ours("tl"),
    }
    results = {}
    for name, fn in runs.items():
        seconds, _ = timed(fn, repeats=args.repeats if "transformer_lens" not in name else 1)
        results[name] = {"seconds": round(seconds, 3), "tokens_per_s": round(n_tokens / seconds, 1)}
        print(name, results[name])
    base = results["hf_generate_unsteered"]["tokens_per_s"]
    ratios = {k: round(r["tokens_per_s"] / base, 3) for k, r in results.items()}
    save("generation", {
        "settings": {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "greedy": True,
                     "hook": hook, "repeats": args.repeats, "model": model.cfg.model_name},
        "results": results, "ratio_vs_hf_generate_unsteered": ratios, "target": ">= 0.9 for interp_steer_steered",
    })


if __name__ == "__main__":
    main()
