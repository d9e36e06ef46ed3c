"""YaPO vs BiPO convergence on the same preference data, layer and batch (issue #6, item 5).

For each method and learning rate, trains a vector with the BiPO objective for ``--max-steps`` steps and
reports the first step at which the training loss — smoothed by a moving average over ``--window`` steps,
because each step's loss is one batch's at a random sign d — falls below ``--threshold`` (0.1 by default, the
YaPO paper's criterion), plus the held-out preference accuracy at +λ and −λ. Writes
``results/convergence/convergence.json`` and an offline plotly figure ``convergence.html``.

    python analyses/convergence.py                       # culture (morocco), layer 15, batch 4, lr 5e-2
    python analyses/convergence.py --data bipo:power-seeking --max-steps 300 --lrs 5e-4 5e-3
    python analyses/convergence.py --data bipo:jailbreak --max-pairs 1000 --preset paper --checkpoint-every 5 \
        --methods yapo --output-dir benchmarks/results/convergence_paper/yapo   # the official recipe, resumable
    # (the same with bipo in a second process), then both in one table and figure, without retraining:
    python analyses/convergence.py --data bipo:jailbreak --max-pairs 1000 --preset paper --checkpoint-every 5 \
        --include-runs benchmarks/results/convergence_paper/{yapo,bipo}/convergence.json \
        --output-dir benchmarks/results/convergence_paper

With ``--preset paper`` the run uses the official hyper-parameters (lr 5e-4, 4 pairs × 8 accumulation = 32 pairs
per optimiser step, 100 warm-up steps, cosine, 20 epochs) unless ``--lrs`` / ``--batch-size`` /
``--max-steps`` are given. ``--checkpoint-every N`` writes each run's checkpoint under
``<output-dir>/runs/<method>_lr<lr>/``; a rerun resumes every unfinished run exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def steps_to_threshold(losses: list[float], threshold: float, window: int) -> int | None:
    """First step (1-based) at which the mean of the last ``window`` losses is below ``threshold``."""
    for end in range(window, len(losses) + 1):
        if sum(losses[end - window : end]) / window < threshold:
            return end
    return None


def steps_to_by_direction(losses: dict[int, float], directions: dict[int, float], levels: list[float],
                          window: int) -> dict[str, dict[str, int | None]]:
    """Per steering direction ``d`` drawn (``"+1"``, ``"-1"``): the step of the run at which the mean loss of the
    last ``window`` steps *with that direction* first fell below each level. The training loss of one step scores
    one direction only, so the run's moving average mixes the two in whatever proportion a window holds."""
    out: dict[str, dict[str, int | None]] = {}
    for d in (1.0, -1.0):
        steps = [k for k in sorted(losses) if directions.get(k) == d]
        if not steps:
            continue
        seq = [losses[k] for k in steps]
        hit = {t: steps_to_threshold(seq, t, window) for t in levels}
        out[f"{d:+.0f}"] = {str(t): (steps[i - 1] if i else None) for t, i in hit.items()}
    return out


def moving_average(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Without a preset: batch 4 and 150 steps (this script's settings before presets existed)."""
    if not args.preset:
        args.batch_size = 4 if args.batch_size is None else args.batch_size
        args.max_steps = 150 if args.max_steps is None else args.max_steps
    return args


def training_settings(args: argparse.Namespace, method: str, lr: float | None, n_train: int,
                      out: Path, base: Any | None = None) -> dict[str, Any]:
    """The :func:`train_vector` keyword arguments of one run: the preset's hyper-parameters with the command
    line's explicit values on top (``args`` as :func:`resolve_defaults` leaves it). ``base``: the preset's
    ``PreferenceConfig`` when the caller has built it already."""
    from interp_steer.methods.preference import preference_config

    kw: dict[str, Any] = {"layer": args.layer, "seed": args.seed, "progress": False}
    if args.preset:
        kw["preset"] = args.preset
    base = base if base is not None else preference_config(args.preset)
    batch = args.batch_size if args.batch_size is not None else base.batch_size
    steps = args.max_steps
    kw["batch_size"] = batch
    if lr is not None:
        kw["lr"] = lr
    if steps is not None:
        per_step = batch * (base.grad_accum if args.preset else 1)
        kw["max_steps"] = steps
        kw["epochs"] = max(1, -(-steps * per_step // n_train))
    if args.reference_cache:
        kw["reference_cache"] = args.reference_cache
    if args.checkpoint_every:
        kw["checkpoint_every"] = args.checkpoint_every
        kw["output_dir"] = out / "runs" / f"{method}_lr{lr if lr is not None else base.lr:g}"
    return kw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="culture", help="culture | bipo:<behaviour> | mwe:<name> | dcl[:file] | file")
    p.add_argument("--country", action="append", default=None, help="culture country (default: morocco)")
    p.add_argument("--layer", type=int, default=15, help="layer of the shipped SAE's hook (blocks.L.hook_resid_post)")
    p.add_argument("--preset", choices=["paper", "small"], default=None,
                   help="start from this PRESETS entry (paper: the official recipe, 32 pairs per step)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per forward (default: 4, or the preset's)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimiser steps (default: 150, or all of the preset's epochs)")
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="learning rates, each method (default: 5e-2, or the preset's)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="steps between checkpoints (each run resumes from its own on a rerun)")
    p.add_argument("--reference-cache", default=None, metavar="DIR",
                   help="keep the unsteered reference pass here and reuse it when a run resumes (the same "
                        "weights, pairs and settings only); saves ≈ 20 min per resume for 1,000 jailbreak pairs")
    p.add_argument("--methods", nargs="+", default=["yapo", "bipo"], choices=["yapo", "bipo"])
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--also", type=float, nargs="*", default=[0.6, 0.5, 0.3],
                   help="further loss levels reported as steps-to-level (the ratio needs both methods to reach one)")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--max-pairs", type=int, default=None, help="cap on training pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-runs", nargs="+", default=None,
                   help="convergence.json files of earlier runs with the same settings (e.g. one per method, run "
                        "side by side in two processes): their runs are reused")
    p.add_argument("--output-dir", default="results/convergence")
    p.add_argument("--status", action="store_true",
                   help="no training: summarise the step logs of the runs under --output-dir (finished or not) "
                        "and write <output-dir>/progress.json")
    args = resolve_defaults(p.parse_args(argv))
    if args.status:
        return status(Path(args.output_dir), args)

    from interp_steer.data.specs import has_splits, load_pairs
    from interp_steer.io import write_text_atomic
    from interp_steer.methods.preference import train_vector
    from interp_steer.models import load_model
    from interp_steer.saes import load_sae

    model = load_model()
    sae = load_sae(model=model)
    hook = f"blocks.{args.layer}.hook_resid_post"
    if sae.cfg.metadata.hook_name != hook:
        sys.exit(f"convergence: the shipped SAE is at {sae.cfg.metadata.hook_name}, not {hook}")
    countries = args.country or (["morocco"] if args.data == "culture" else None)
    train = load_pairs(args.data, split="train", countries=countries, seed=args.seed)
    test = load_pairs(args.data, split="test", countries=countries, seed=args.seed) if has_splits(args.data) else None
    if not test:
        cut = max(1, len(train) // 10)
        train, test = train[cut:], train[:cut]
    if args.max_pairs:
        train = train[: args.max_pairs]
    runs: list[dict[str, Any]] = []
    for earlier_path in args.include_runs or []:
        earlier = json.loads(Path(earlier_path).read_text())
        same = ("data", "country", "layer", "batch_size", "max_steps", "seed", "max_pairs", "preset")
        diff = [k for k in same if earlier["settings"].get(k) != vars(args).get(k)]
        if diff:
            sys.exit(f"convergence: {earlier_path} was made with other settings: {', '.join(diff)}")
        levels = sorted({args.threshold, *args.also}, reverse=True)
        for r in earlier["runs"]:  # older files lack the per-level figures: recompute them from the losses
            if any(q["method"] == r["method"] and q["lr"] == r["lr"] for q in runs):
                continue
            r["steps_to"] = {str(t): steps_to_threshold(r["losses"], t, args.window) for t in levels}
            runs.append(r)
    from interp_steer.methods.preference import preference_config

    base = preference_config(args.preset)
    lrs = args.lrs or ([base.lr] if args.preset else [5e-2])
    for lr in lrs:
        for method in args.methods:
            if any(r["method"] == method and r["lr"] == lr for r in runs):
                continue
            t0 = time.perf_counter()
            kw = training_settings(args, method, lr, len(train), Path(args.output_dir), base)
            res = train_vector(model, train, method, sae=sae if method == "yapo" else None, eval_data=test, **kw)
            losses = [r["loss"] for r in res.history]
            reached = steps_to_threshold(losses, args.threshold, args.window)
            ev = res.evals[-1] if res.evals else {}
            levels = sorted({args.threshold, *args.also}, reverse=True)
            per_step = kw["batch_size"] * (base.grad_accum if args.preset else 1)
            run = {"method": method, "lr": lr, "steps": len(losses), "pairs_per_step": per_step, "steps_to_threshold": reached,
                   "steps_to": {str(t): steps_to_threshold(losses, t, args.window) for t in levels},
                   "final_loss_ma": moving_average(losses, args.window)[-1], "losses": losses,
                   "heldout": {k: ev.get(k) for k in ("pref_acc_plus", "pref_acc_minus", "loss_plus", "loss_minus")},
                   "seconds": round(time.perf_counter() - t0, 1)}
            runs.append(run)
            print(f"{method:5s} lr={lr:g}: loss(ma{args.window}) {run['final_loss_ma']:.4f} after {len(losses)} steps; "
                  f"below {args.threshold} at step {reached}; held-out acc +λ {ev.get('pref_acc_plus')} "
                  f"−λ {ev.get('pref_acc_minus')} ({run['seconds']} s)", flush=True)

    def best(method: str) -> dict[str, Any] | None:
        done = [r for r in runs if r["method"] == method]
        if not done:
            return None
        return min(done, key=lambda r: (r["steps_to_threshold"] is None, r["steps_to_threshold"] or 0,
                                        r["final_loss_ma"]))

    methods = sorted({r["method"] for r in runs})
    summary = {m: {k: v for k, v in (best(m) or {}).items() if k != "losses"} for m in methods}
    ratio = None
    if all(summary.get(m, {}).get("steps_to_threshold") for m in ("yapo", "bipo")):
        ratio = summary["bipo"]["steps_to_threshold"] / summary["yapo"]["steps_to_threshold"]
    ratios = _level_ratios(runs)
    result = {"settings": {k: v for k, v in vars(args).items()}, "hook": hook, "n_train": len(train),
              "n_test": len(test), "runs": runs, "best": summary, "bipo_over_yapo_steps": ratio,
              "bipo_over_yapo_steps_by_level": ratios}
    out = Path(args.output_dir)
    write_text_atomic(out / "convergence.json", json.dumps(result, indent=2))
    _plot(runs, args, out / "convergence.html")
    print(json.dumps({"best": summary, "bipo_over_yapo_steps": ratio, "bipo_over_yapo_steps_by_level": ratios},
                     indent=2))
    return 0


def status(root: Path, args: argparse.Namespace) -> int:
    """Progress of every run under ``root`` (``**/runs/<method>_lr<lr>/log.jsonl``), finished or not: steps
    logged, the moving-average loss now, the steps at which it first fell below each level (also per direction
    drawn, :func:`steps_to_by_direction`), held-out evaluations (both directions' losses)."""
    from interp_steer.io import write_text_atomic

    logs = sorted(root.glob("**/runs/*/log.jsonl"))
    if not logs:
        sys.exit(f"convergence: no run logs under {root}")
    levels = sorted({args.threshold, *args.also}, reverse=True)
    runs = []
    for log in logs:
        steps: dict[int, float] = {}
        directions: dict[int, float] = {}
        evals = []
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if "eval" in row:
                evals.append({k: row["eval"].get(k) for k in ("step", "loss", "loss_plus", "loss_minus",
                                                               "pref_acc_plus", "pref_acc_minus")})
            elif "loss" in row:
                steps[int(row["step"])] = float(row["loss"])
                if row.get("direction") is not None:
                    directions[int(row["step"])] = float(row["direction"])
        losses = [steps[k] for k in sorted(steps)]
        if sorted(steps) != list(range(1, len(steps) + 1)):
            sys.exit(f"convergence: {log} has gaps in its steps")
        method, _, lr = log.parent.name.partition("_lr")
        ma = moving_average(losses, args.window)
        runs.append({"method": method, "lr": float(lr), "log": str(log), "steps": len(losses),
                     "loss_ma_now": ma[-1] if ma else None, "min_loss_ma": min(ma) if ma else None,
                     "steps_to": {str(t): steps_to_threshold(losses, t, args.window) for t in levels},
                     "steps_to_by_direction": steps_to_by_direction(steps, directions, levels, args.window),
                     "evals": evals, "losses": losses})
        print(f"{method:5s} lr={lr}: {len(losses)} steps; loss (ma{args.window}) now {ma[-1]:.4f}, min {min(ma):.4f}; "
              + ", ".join(f"< {t}: {runs[-1]['steps_to'][str(t)]}" for t in levels), flush=True)
    write_text_atomic(root / "progress.json", json.dumps({"window": args.window, "runs": runs}, indent=2))
    _plot(runs, args, root / "progress.html")
    return 0


def _level_ratios(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per loss level: fewest steps any BiPO run needed over fewest any YaPO run needed (None: one never got there)."""
    levels = sorted({lvl for r in runs for lvl in r.get("steps_to", {})}, key=float, reverse=True)
    out: dict[str, float | None] = {}
    for lvl in levels:
        fewest = {m: min((r["steps_to"][lvl] for r in runs if r["method"] == m and r.get("steps_to", {}).get(lvl)),
                         default=None) for m in ("bipo", "yapo")}
        out[lvl] = fewest["bipo"] / fewest["yapo"] if fewest["bipo"] and fewest["yapo"] else None
    return out


def _plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import plotly.graph_objects as go

    from interp_steer.io import write_figure_atomic

    fig = go.Figure()
    for r in runs:
        fig.add_trace(go.Scatter(y=moving_average(r["losses"], args.window), mode="lines",
                                 name=f"{r['method']} lr={r['lr']:g}"))
    fig.add_hline(y=args.threshold, line_dash="dash", annotation_text=f"loss {args.threshold}")
    fig.update_layout(title=f"YaPO vs BiPO training loss ({args.data}, layer {args.layer}, "
                            f"{runs[0].get('pairs_per_step', args.batch_size) if runs else args.batch_size} pairs per step; "
                            f"moving average over {args.window} steps)", xaxis_title="step", yaxis_title="loss",
                      yaxis_type="log")
    write_figure_atomic(fig, path)


if __name__ == "__main__":
    sys.exit(main())
