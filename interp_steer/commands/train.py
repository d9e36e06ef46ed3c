"""``interp-steer train``: a BiPO (dense), YaPO (SAE latents) or LinEAS (affine) vector from preference pairs or
source/target prompts; the vector kept is selected on a held-out share of the training pairs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interp_steer import cli  # shared helpers, looked up at call time (tests replace cli._model)
from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_number
from interp_steer.validation import dumps as _strict_dumps


def _add_data_args(p: argparse.ArgumentParser, default: str = "culture") -> None:
    p.add_argument("--data", default=default,
                   help="culture | bipo:<behaviour> | mwe:<name> | dcl[:<file>] | a JSONL/CSV with prompt/chosen/rejected")
    p.add_argument("--country", action="append", help="culture/dcl country (repeatable; default: all)")
    p.add_argument("--localization", choices=["localized", "nolocalized"], default=None,
                   help="culture/dcl prompts to use (default: both)")
    p.add_argument("--form", choices=["mcq", "open_ended"], default="mcq", help="culture/dcl answer form")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training pairs")


def _train_eval_pairs(args: argparse.Namespace):
    from interp_steer.data.specs import has_splits, load_pairs

    kw = dict(countries=args.country, localization=args.localization, form=args.form, seed=args.seed)
    train = load_pairs(args.data, split="train", limit=args.limit, **kw)
    test = load_pairs(args.data, split="test", **kw) if has_splits(args.data) else None
    return train, test


def cmd_train(args: argparse.Namespace) -> int:
    if args.method == "lineas":
        return _train_lineas(args)
    from interp_steer.methods.preference import SPARSE_DEFAULT, _check_config, preference_config, train_vector
    from interp_steer.saes import load_sae

    options: dict[str, Any] = dict(SPARSE_DEFAULT) if args.sparse else {}
    if args.sparse and args.method != "yapo":
        raise InterpSteerError("--sparse is a YaPO option (SAE latents)")
    for name in ("layer", "lr", "epochs", "batch_size", "grad_accum", "max_steps", "beta", "seed",
                 "checkpoint_every", "positions", "top_k", "final_top_k", "prox_l1", "support", "support_size",
                 "max_edit_norm", "eval_every", "select", "eval_fraction"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.l1:
        options["l1_penalty"] = args.l1
    if args.save_every_epoch:
        options["save_every_epoch"] = True
    if args.symmetric:
        options["symmetric"] = True
    _check_config(preference_config(args.preset, method=args.method, **options))  # before any model load
    cli._check_layer(args.layer, args)
    if args.sae:
        from interp_steer.saes import resolve_sae_folder

        resolve_sae_folder(args.sae)
    train, _test = _train_eval_pairs(args)  # the vector is selected on a held-out share of train, never on test
    out = Path(args.output_dir)
    model = cli._model(args)
    sae = None
    if args.method == "yapo":
        sae = load_sae(path=args.sae, model=model) if args.sae else load_sae(model=model)
    res = train_vector(model, train, args.method, sae=sae, output_dir=out, preset=args.preset, **options)
    last = res.evals[-1] if res.evals else {}
    print(_strict_dumps({"steps": len(res.history), "final_loss": res.history[-1]["loss"] if res.history else None,
                      "eval": last, "vector": str(out / "vector.safetensors")}, indent=2))
    return 0


def _train_lineas(args: argparse.Namespace) -> int:
    from interp_steer.data.registry import load_prompts
    from interp_steer.methods.lineas import train_lineas
    from interp_steer.methods.preference import write_curves

    if not args.source or not args.target:
        raise InterpSteerError("--method lineas needs --source and --target (registry keys or prompt files)")
    from interp_steer.methods.lineas import LinEASConfig, check_lineas_config

    cfg = LinEASConfig(hooks=args.hooks, steps=args.steps, lr=1e-2 if args.lr is None else args.lr,
                       optimizer=args.optimizer, batch_size=32 if args.batch_size is None else args.batch_size,
                       dim_penalty=args.dim_penalty, group_penalty=args.group_penalty, seed=args.seed)
    check_lineas_config(cfg)  # before any data or model load (a 0 is refused, not replaced by a default)
    check_number(args.n_samples, "--n-samples", minimum=1, integer=True)
    source = load_prompts(args.source, args.n_samples, args.seed)
    target = load_prompts(args.target, args.n_samples, args.seed)
    out = Path(args.output_dir)
    model = cli._model(args)
    res = train_lineas(model, source, target, config=cfg)
    res.vector.save(out / "vector")
    history = [{"step": i + 1, "loss": loss, "pref_acc": float("nan")} for i, loss in enumerate(res.losses)]
    write_curves(history, [], out / "curves.html", title=f"LinEAS {args.source} -> {args.target}")
    print(_strict_dumps({"loss_first": res.losses[0], "loss_last": res.losses[-1], "active_hooks": res.active_hooks,
                      "active_dims": res.active_dims, "vector": str(out / "vector.safetensors")}, indent=2))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a BiPO (dense) or YaPO (sparse SAE-latent) steering vector",
                       description="Train a steering vector from preference pairs with the BiPO objective.")
    cli._add_model_args(p)
    _add_data_args(p)
    p.add_argument("--method", choices=["yapo", "bipo", "lineas"], default="yapo")
    p.add_argument("--source", help="lineas: source prompts (registry key or file)")
    p.add_argument("--target", help="lineas: target prompts (registry key or file)")
    p.add_argument("--n-samples", type=int, default=32, help="lineas: texts per side (default 32)")
    p.add_argument("--hooks", default=r"blocks\.\d+\.hook_resid_post", help="lineas: hook names regex")
    p.add_argument("--steps", type=int, default=200, help="lineas: optimisation steps")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="lineas")
    p.add_argument("--dim-penalty", type=float, default=0.0, help="lineas: soft-threshold strength")
    p.add_argument("--group-penalty", type=float, default=0.0, help="lineas: per-layer group shrink")
    p.add_argument("--sae", help="SAE folder for yapo, shipped name, or a shipped width such as 16384 (default: the shipped 4096-latent SAE)")
    p.add_argument("--layer", type=int, default=None, help="bipo layer (yapo: the SAE's layer)")
    p.add_argument("--preset", choices=["paper", "small"], default=None,
                   help="bipo/yapo hyper-parameters: 'paper' (the official recipe: lr 5e-4, 100 warm-up steps, "
                        "4 × 8 accumulation, 20 epochs) or 'small' (a few hundred pairs on a CPU); options below "
                        "override it")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 5e-4; lineas: 1e-2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 4; lineas: source texts, 32)")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimiser step (default 1)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--beta", type=float, default=None, help="DPO β (default 0.1)")
    p.add_argument("--positions", choices=["all", "after_instruction", "generated"], default=None)
    p.add_argument("--l1", type=float, default=0.0, help="an L1 term in the loss (Adam normalises it: prefer --prox-l1)")
    p.add_argument("--top-k", type=int, default=None, help="yapo/bipo: keep the top-k entries of v after each step")
    p.add_argument("--final-top-k", type=int, default=None,
                   help="after training, keep the k coordinates carrying most of the decoded effect (|v_i|·‖W_dec,i‖)")
    p.add_argument("--prox-l1", type=float, default=None,
                   help="soft-threshold of v after each step, in units of the learning rate")
    p.add_argument("--support", choices=["active", "contrast"], default=None,
                   help="yapo: restrict v to latents active on the training responses, or to the top contrast ones")
    p.add_argument("--support-size", type=int, default=None, help="yapo: latents in the support (default 256)")
    p.add_argument("--max-edit-norm", type=float, default=None, help="cap on the norm of the decoded edit")
    p.add_argument("--sparse", action="store_true",
                   help="yapo: the sparse default (exact training, then its 256 heaviest latents: --final-top-k 256)")
    p.add_argument("--symmetric", action="store_true",
                   help="yapo: train and steer with the symmetric operator ½[e(λ) − e(−λ)], so that −λ is exactly "
                        "the opposite edit of +λ")
    p.add_argument("--eval-fraction", type=float, default=None,
                   help="share of the training pairs held out to select the vector (default 0.1)")
    p.add_argument("--eval-every", type=int, default=None, help="steps between held-out evaluations (default: epoch)")
    p.add_argument("--select", choices=["best", "last"], default=None,
                   help="keep the vector with the lowest held-out loss (default) or the last one")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (resume on rerun)")
    p.add_argument("--save-every-epoch", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_train)
