"""Side by side with the toolkits users would pick instead: steering-vectors and repeng, one run, same model,
pairs, vector and strength.

* **CAA extraction** from the same preference pairs (power-seeking free text, layer 15 = the output of decoder
  block 15): ours (:func:`interp_steer.compute_caa`, batched) vs ``steering_vectors.train_steering_vector`` (its
  default batch size 1) at the **same token position** (the last response token of each chat-templated pair,
  ``token_policy="last_response"``), and
  the two vectors' agreement; repeng's ``ControlVector.train`` (its own method, PCA of differences over every
  layer) timed only.
* **Steered greedy generation**, batch 1 and batch 8, 64 new tokens (EOS ignored): tokens/s of our
  :func:`interp_steer.generate` vs steering-vectors' hooks on the Hugging Face model vs repeng's ``ControlModel``,
  all with our CAA vector at the same strength, and the token agreement of their outputs with ours.

Peers are installed without their pins (``pip install --no-deps steering-vectors repeng``): repeng 0.4 still
uses ``np.float_``, removed in NumPy 2, so this script aliases it before the import. Results:
``benchmarks/results/peers.json``.

    python benchmarks/bench_peers.py [--pairs 64 --strength 4 --repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, STEERING_PROMPTS, environment, save  # noqa: E402

PROMPTS = STEERING_PROMPTS


def _timed(fn, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of generated positions where the two token sequences agree (position by position)."""
    same = total = 0
    for x, y in zip(a, b, strict=True):
        total += max(len(x), len(y))
        same += sum(p == q for p, q in zip(x, y, strict=False))
    return same / max(total, 1)


def _generation_row(model: Any, hf: Any, tok: Any, vector: Any, sv_steer: Any, rep_model: Any, prompts: list[str],
                    lam: float, args: argparse.Namespace) -> dict[str, Any]:
    """Tokens/s of each toolkit on one batch of prompts (same vector, strength and left-padded inputs) and the
    position-by-position agreement of their greedy tokens with ours."""
    import torch

    from interp_steer import generate
    from interp_steer.chat import chat_tokens, pad_left, pad_token_id

    batch = len(prompts)
    tokens, mask = pad_left([chat_tokens(tok, q).prompt_ids for q in prompts], pad_token_id(tok))
    width = tokens.shape[1]
    kw = dict(attention_mask=mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
              do_sample=False, pad_token_id=pad_token_id(tok))

    def ours() -> list[list[int]]:
        out = generate(model, prompts, vector, lam, max_new_tokens=args.new_tokens, batch_size=batch,
                       return_tokens=True, ignore_eos=True)
        return [g.tokens for g in out]  # type: ignore[union-attr]

    def steering_vectors_() -> list[list[int]]:
        with torch.no_grad(), sv_steer.apply(hf, multiplier=lam):
            out = hf.generate(tokens, **kw)
        return out[:, width:].tolist()

    def repeng_() -> list[list[int]]:
        with torch.no_grad():
            out = rep_model.generate(input_ids=tokens, **kw)
        return out[:, width:].tolist()

    def plain() -> list[list[int]]:
        with torch.no_grad():
            out = hf.generate(tokens, **kw)
        return out[:, width:].tolist()

    row: dict[str, Any] = {}
    outs = {}
    for name, fn in (("ours", ours), ("steering_vectors", steering_vectors_), ("repeng", repeng_),
                     ("hf_unsteered", plain)):
        seconds, outs[name] = _timed(fn, args.repeats)
        row[f"{name}_tokens_per_s"] = batch * args.new_tokens / seconds
    for name in ("steering_vectors", "repeng", "hf_unsteered"):
        row[f"agreement_{name}_vs_ours"] = _agreement(outs[name], outs["ours"])
        row[f"ratio_ours_over_{name}"] = row["ours_tokens_per_s"] / row[f"{name}_tokens_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--strength", type=float, default=4.0)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if not (SHARED_DATA / "bipo" / "power-seeking").is_dir():
        print(f"skipped: {SHARED_DATA}/bipo/power-seeking not found")
        return 0
    try:
        import numpy as np

        if not hasattr(np, "float_"):
            np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 on NumPy 2
        import repeng
        import steering_vectors as sv
    except ImportError as exc:
        print(f"skipped: a peer is not installed ({exc}); pip install --no-deps steering-vectors repeng")
        return 0
    import torch

    from interp_steer import compute_caa, load_model, load_pairs
    from interp_steer.chat import chat_tokens
    from interp_steer.methods.activations import select_positions
    from interp_steer.models import hf_twin

    torch.set_num_threads(1)
    model = load_model()
    hf, tok = hf_twin(model), model.tokenizer
    pairs = load_pairs("bipo:power-seeking", form="text")[: args.pairs]
    L = args.layer
    result: dict[str, Any] = {"pairs": len(pairs), "layer": L, "strength": args.strength,
                              "new_tokens": args.new_tokens, "environment": environment(),
                              "peers": {"steering-vectors": sv.__version__ if hasattr(sv, "__version__") else "0.12.2",
                                        "repeng": getattr(repeng, "__version__", "0.4.0")}}

    # ---------------------------------------------------------------- CAA extraction, same token positions
    t_ours, ours_vec = _timed(lambda: compute_caa(model, pairs, layers=L, token_policy="last_response")[L],
                              args.repeats)
    samples, index = [], {}
    for ex in pairs:
        texts = []
        for answer in (ex.chosen, ex.rejected):
            ct = chat_tokens(tok, ex.prompt, answer)
            text = tok.decode(ct.ids)
            if tok(text, add_special_tokens=True)["input_ids"] != ct.ids:
                raise SystemExit("the tokenizer does not round-trip the chat text: positions would not match")
            index[text] = select_positions(tok, ct, "last_response")[0]  # the same position as ours
            texts.append(text)
        samples.append((texts[0], texts[1]))
    t_sv, sv_vec = _timed(lambda: sv.train_steering_vector(hf, tok, samples, layers=[L],
                                                           read_token_index=lambda s: index[s]), args.repeats)
    a, b = ours_vec.vector().float(), sv_vec.layer_activations[L].float().cpu()
    if float(a.norm()) == 0.0:
        raise SystemExit("the CAA contrast is zero at this position: nothing to compare")
    entries = [repeng.DatasetEntry(positive=x, negative=y) for x, y in samples]
    t_rep, _ = _timed(lambda: repeng.ControlVector.train(hf, tok, entries, batch_size=8), 1)
    result["caa_extraction"] = {
        "ours_s": t_ours, "steering_vectors_s": t_sv, "repeng_s": t_rep,
        "ratio_steering_vectors_over_ours": t_sv / t_ours, "ratio_repeng_over_ours": t_rep / t_ours,
        "max_abs_diff": float((a - b).abs().max()), "relative_diff": float((a - b).norm() / a.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
        "note": "steering-vectors at its default batch size 1; repeng computes PCA directions for every layer",
    }
    print(f"CAA: ours {t_ours:.2f} s, steering-vectors {t_sv:.2f} s ({t_sv / t_ours:.2f}×), repeng {t_rep:.2f} s; "
          f"max |Δ| {result['caa_extraction']['max_abs_diff']:.2e}", flush=True)

    # ----------------------------------------------------------------------- steered greedy generation
    vector = compute_caa(model, pairs, layers=L)[L]  # the response-mean CAA vector of the efficacy benchmark
    v = vector.vector().float()
    lam = args.strength
    sv_steer = sv.SteeringVector({L: v.clone()}, "decoder_block")
    rep_model = repeng.ControlModel(copy.deepcopy(hf), [L])
    rep_model.set_control(repeng.ControlVector(hf.config.model_type, {L: v.numpy()}), lam)
    gen: dict[str, Any] = {}
    for batch in (1, 8):
        row = _generation_row(model, hf, tok, vector, sv_steer, rep_model, PROMPTS[:batch], lam, args)
        gen[f"batch_{batch}"] = row
        print(f"generation batch {batch}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    result["generation"] = gen
    path = save("peers", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
