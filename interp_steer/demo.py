"""The main job on the embedded default: learn a YaPO vector for one country of the culture set, then show
MCQ accuracy and generations with and without steering, and which SAE latents the vector uses."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any


def run_demo(country: str = "morocco", *, steps: int = 80, batch_size: int = 4, lr: float = 5e-2,
             strengths: tuple[float, ...] = (1.0, 2.0, 4.0), n_generations: int = 4, max_new_tokens: int = 40,
             output_dir: str | Path = "runs/demo", seed: int = 0) -> dict[str, Any]:
    from interp_steer.data.loaders import culture_preferences, load_culture
    from interp_steer.evaluation.mcq import culture_report, score_mcq
    from interp_steer.generation import generate
    from interp_steer.interpret.features import top_latents
    from interp_steer.methods.preference import train_vector
    from interp_steer.models import load_model
    from interp_steer.saes import load_sae

    out = Path(output_dir)
    t0 = time.perf_counter()
    print("[1/5] loading the embedded SmolLM2-135M-Instruct and its shipped SAE ...", flush=True)
    model = load_model()
    sae = load_sae(model=model)
    train_pairs = culture_preferences(countries=country, split="train", form="mcq", seed=seed)
    test_pairs = culture_preferences(countries=country, split="test", form="mcq", seed=seed)
    test_items = load_culture(countries=country, split="test", seed=seed)
    print(f"      {len(train_pairs)} training pairs, {len(test_items)} test questions ({country}); "
          f"SAE {sae.cfg.metadata.hook_name} with {sae.cfg.d_sae} latents", flush=True)

    print(f"[2/5] training a YaPO vector ({steps} steps, batch {batch_size}) ...", flush=True)
    res = train_vector(model, train_pairs, "yapo", sae=sae, eval_data=test_pairs, output_dir=out / "yapo",
                       max_steps=steps, epochs=max(1, -(-steps * batch_size // len(train_pairs))),
                       batch_size=batch_size, lr=lr, seed=seed)
    vector = res.vector

    print("[3/5] culture MCQ on held-out questions (option log-likelihood), λ sweep ...", flush=True)
    before = culture_report(score_mcq(model, test_items))
    sweep = {lam: culture_report(score_mcq(model, test_items, vector, lam, sae=sae))["overall"] for lam in strengths}
    # generations at the strength with the best robust accuracy (RCA), the larger one on ties
    strength = max(strengths, key=lambda lam: (sweep[lam].get("rca") or 0.0, sweep[lam]["accuracy"] or 0.0, lam))

    print("[4/5] generations on non-localized test questions ...", flush=True)
    questions = [it.question for it in test_items if it.localization_status == "nolocalized"][:n_generations]
    plain = generate(model, questions, max_new_tokens=max_new_tokens)
    steered = generate(model, questions, vector, strength, sae=sae, max_new_tokens=max_new_tokens)

    print("[5/5] SAE latents the vector uses ...", flush=True)
    features = top_latents(vector, sae, model, k=8)

    summary = {
        "country": country, "steps": len(res.history), "final_train_loss": res.history[-1]["loss"],
        "heldout_eval": res.evals[-1] if res.evals else None, "strength": strength,
        "mcq_before": before["overall"], "mcq_sweep": {str(k): v for k, v in sweep.items()},
        "generations": [{"prompt": q, "unsteered": a, "steered": b} for q, a, b in zip(questions, plain, steered, strict=True)],
        "features": features, "vector": str(out / "yapo" / "vector.safetensors"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    _print_summary(summary)
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _print_summary(s: dict[str, Any]) -> None:
    b = s["mcq_before"]
    print("\n" + "=" * 78)
    print(f"YaPO vector for {s['country']}: {s['steps']} steps, final training loss {s['final_train_loss']:.4f}")
    ev = s.get("heldout_eval") or {}
    if ev:
        print(f"held-out preference accuracy: +λ {_pct(ev['pref_acc_plus'])}, −λ {_pct(ev['pref_acc_minus'])}")
    print("\nculture MCQ accuracy on held-out questions:")
    print(f"  {'':14}{'localized':>12}{'non-local':>12}{'RCA':>8}{'PNLG':>8}")
    rows = [("unsteered", b)] + [(f"steered λ={lam}", r) for lam, r in s["mcq_sweep"].items()]
    for name, r in rows:
        print(f"  {name:14}{_pct(r['acc_localized']):>12}{_pct(r['acc_nonlocalized']):>12}"
              f"{r.get('rca', 0):>8.3f}{r.get('pnlg', 0):>8.3f}")
    print(f"\ngenerations (greedy; steered at λ = {s['strength']}):")
    for g in s["generations"]:
        print(f"\n  Q: {g['prompt']}")
        print(textwrap.indent(textwrap.fill("unsteered: " + g["unsteered"], 74), "    "))
        print(textwrap.indent(textwrap.fill("steered:   " + g["steered"], 74), "    "))
    f = s["features"]
    print(f"\nSAE latents used: {f['n_nonzero']} non-zero; {f['n_for_50pct']} carry 50% and "
          f"{f['n_for_90pct']} carry 90% of the decoded effect. Top latents:")
    for lat in f["latents"]:
        lens = ", ".join(repr(t) for t in lat["logit_lens"]["promoted"][:5])
        print(f"  #{lat['index']:<6} v={lat['value']:+.3f}  share≤{_pct(lat['cumulative_share']):>6}  promotes {lens}")
    print(f"\nvector: {s['vector']}   ({s['seconds']} s)")
