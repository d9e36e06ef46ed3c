"""``interp-steer train-sae``: train a sae-lens SAE on a local corpus, measure it on held-out text, store it."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from interp_steer import cli  # shared helpers, looked up at call time (tests replace cli._model)
from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_number
from interp_steer.validation import dumps as _strict_dumps

# SAETrainingConfig fields -> the flags that set them (validation errors name the flag)
FLAGS = {
    "hook": "--hook", "d_sae": "--d-sae", "architecture": "--architecture", "k": "--k",
    "l1_coefficient": "--l1-coefficient", "l0_coefficient": "--l0-coefficient", "training_tokens": "--training-tokens",
    "context_size": "--context-size", "train_batch_size_tokens": "--batch-tokens", "lr": "--lr",
    "heldout_fraction": "--heldout-fraction", "seed": "--seed", "n_checkpoints": "--checkpoints",
    "dead_feature_window": "--dead-feature-window", "resample_tokens": "--resample-tokens",
    "aux_loss_coefficient": "--aux-coefficient",
}


def cmd_train_sae(args: argparse.Namespace) -> int:
    from interp_steer.data.corpus import file_sha256, load_corpus, shared_corpus_path
    from interp_steer.saes.training import SAETrainingConfig, export_checkpoint, train_sae

    cfg = SAETrainingConfig(
        hook=args.hook, d_sae=args.d_sae, architecture=args.architecture, k=args.k,
        l1_coefficient=args.l1_coefficient, l0_coefficient=args.l0_coefficient,
        training_tokens=args.training_tokens, context_size=args.context_size,
        train_batch_size_tokens=args.batch_tokens, lr=args.lr, heldout_fraction=args.heldout_fraction, seed=args.seed,
        n_checkpoints=args.checkpoints, resume_from_checkpoint=args.resume_from,
        dead_feature_window=args.dead_feature_window, init_from=args.init_from,
        resample_dead=args.resample_dead, resample_tokens=args.resample_tokens,
        aux_loss_coefficient=args.aux_coefficient,
    )
    cfg.validate(names=FLAGS)  # every option, named by its flag, before the model loads
    check_number(args.quality_tokens, "--quality-tokens", minimum=1, integer=True)
    cli._check_hook(args.hook, args)
    corpus_path = Path(args.corpus) if args.corpus else shared_corpus_path()
    if corpus_path is None:
        raise InterpSteerError("no --corpus given and ../shared/data/corpus/mixed-text.jsonl.gz not found")
    if not corpus_path.exists() and "/" not in str(args.corpus):
        raise InterpSteerError(f"corpus not found: {corpus_path}")
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InterpSteerError(f"output folder {out} is not empty (pass --overwrite)")
    for flag, value in (("--resume-from", args.resume_from), ("--export-checkpoint", args.export_checkpoint)):
        if value and not Path(value).is_dir():
            raise InterpSteerError(f"{flag}: checkpoint folder not found: {value}")
    if args.resample_dead and not args.init_from:
        raise InterpSteerError("--resample-dead needs --init-from (the trained SAE whose dead latents to resample)")
    if args.init_from:
        if args.resume_from or args.export_checkpoint:
            raise InterpSteerError("--init-from cannot be combined with --resume-from or --export-checkpoint")
        from interp_steer.saes import resolve_sae_folder

        folder = resolve_sae_folder(args.init_from)
        if not (folder / "cfg.json").is_file():
            raise InterpSteerError(f"--init-from: {folder} is not a sae-lens SAE folder (cfg.json missing)")
        init_cfg = json.loads((folder / "cfg.json").read_text())
        if init_cfg.get("d_sae") != args.d_sae or init_cfg.get("architecture") != args.architecture:
            raise InterpSteerError(
                f"--init-from {args.init_from} is a {init_cfg.get('architecture')} SAE with {init_cfg.get('d_sae')} "
                f"latents; pass the same --architecture and --d-sae (here {args.architecture}, {args.d_sae})")
    model = cli._model(args)
    split = dict(heldout_fraction=args.heldout_fraction, seed=args.seed, tokenizer=model.tokenizer)
    held_docs = load_corpus(corpus_path, split="heldout", **split)
    corpus_info = {
        "path": corpus_path.name, "sha256": file_sha256(corpus_path) if corpus_path.is_file() else None,
        "documents_heldout": len(held_docs), "heldout_fraction": args.heldout_fraction, "split_seed": args.seed,
    }
    command = "interp-steer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    tmp_out = out.with_name(f".{out.name}.partial")
    if args.export_checkpoint:
        tmp_out = out.with_name(f".{out.name}.export")
        export_checkpoint(args.export_checkpoint, tmp_out, command=command, note=args.note)
    else:
        train_docs = load_corpus(corpus_path, split="train", **split)
        corpus_info["documents_train"] = len(train_docs)
        train_sae(model, train_docs, config=cfg, output_dir=tmp_out, command=command, corpus_info=corpus_info,
                  progress=True)
    meta = _finalize_sae(model, tmp_out, out, held_docs, corpus_info, args)
    print(_strict_dumps(meta["quality_heldout"], indent=2))
    print(f"SAE written to {out}")
    return 0


def _finalize_sae(model: Any, tmp_out: Path, out: Path, held_docs: list[str], corpus_info: dict[str, Any],
                  args: argparse.Namespace) -> dict[str, Any]:
    """fp16 storage (optional), held-out quality on the stored weights, metadata, then an atomic move."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from interp_steer.saes import load_sae
    from interp_steer.saes.quality import sae_quality

    meta_path = tmp_out / "interp_steer.json"
    meta = json.loads(meta_path.read_text())
    meta["corpus"] = {**meta.get("corpus", {}), **corpus_info}
    if args.fp16:
        weights = tmp_out / "sae_weights.safetensors"
        tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(weights))
        cfg_json = json.loads((tmp_out / "cfg.json").read_text())
        cfg_json["dtype"] = "float16"
        (tmp_out / "cfg.json").write_text(_strict_dumps(cfg_json, indent=2))
        meta["stored_dtype"] = "float16"
    sae = load_sae(path=tmp_out, model=model)
    # measured on the weights as stored (fp16 when --fp16)
    meta["quality_heldout"] = sae_quality(model, sae, held_docs, max_tokens=args.quality_tokens).to_dict()
    from interp_steer.saes import sae_content_hash

    meta["content_hash"] = sae_content_hash(sae)  # the weights the quality figures were measured on
    meta_path.write_text(_strict_dumps(meta, indent=2))
    (tmp_out / "sparsity.safetensors").unlink(missing_ok=True)
    if (tmp_out / "checkpoints").is_dir() and not args.keep_checkpoints:
        shutil.rmtree(tmp_out / "checkpoints")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp_out, out)
    return meta


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train-sae", help="train a sae-lens SAE on a local corpus",
                       description="Train an SAE with sae-lens on the model's activations over a text corpus.")
    cli._add_model_args(p)
    p.add_argument("--corpus", default=None,
                   help="JSONL(.gz) with a 'text' field, .txt, or HF dataset (default: ../shared/data/corpus)")
    p.add_argument("--hook", default="blocks.15.hook_resid_post")
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--architecture", choices=["topk", "jumprelu", "standard"], default="topk")
    p.add_argument("--k", type=int, default=32, help="active latents per token (topk)")
    p.add_argument("--l1-coefficient", type=float, default=5.0, help="(standard)")
    p.add_argument("--l0-coefficient", type=float, default=1.0, help="(jumprelu)")
    p.add_argument("--training-tokens", type=int, default=3_000_000)
    p.add_argument("--context-size", type=int, default=256)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--dead-feature-window", type=int, default=200,
                   help="steps without firing before a latent gets the TopK auxiliary loss (default: 200)")
    p.add_argument("--aux-coefficient", type=float, default=1.0,
                   help="weight of the TopK auxiliary (AuxK) loss that trains dead latents (default: 1.0)")
    p.add_argument("--init-from", default=None,
                   help="fine-tune this trained SAE (folder, shipped name or width) instead of a random one; "
                        "the same --architecture, --d-sae, --k and --hook")
    p.add_argument("--resample-dead", action="store_true",
                   help="with --init-from (TopK): first give latents that never fire on --resample-tokens training "
                        "tokens a new direction, toward the worst-reconstructed activations")
    p.add_argument("--resample-tokens", type=int, default=65_536,
                   help="training tokens sampled to find dead latents and seed their directions (default: 65536)")
    p.add_argument("--heldout-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", type=int, default=0, help="number of intermediate checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--export-checkpoint", default=None,
                   help="instead of training, export a training checkpoint of a (possibly unfinished) run")
    p.add_argument("--note", default=None, help="a note stored in the metadata (with --export-checkpoint)")
    p.add_argument("--resume-from", default=None,
                   help="continue an interrupted run from one of its checkpoints (<output-dir>/../.<name>.partial/checkpoints/...)")
    p.add_argument("--quality-tokens", type=int, default=60_000, help="held-out tokens for the quality report")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_train_sae)
