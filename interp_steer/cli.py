"""``interp-steer`` command line. Bad input prints one line naming the problem and exits with status 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_file, check_number, check_output_dir, check_output_file
from interp_steer.validation import dumps as _strict_dumps


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage + message by default)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _model(args: argparse.Namespace):
    from interp_steer.models import load_model

    return load_model(args.model, device=getattr(args, "device", None), dtype=getattr(args, "dtype", None))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="TransformerLens name, HF folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")


def _write_json_atomic(path: Path, data: Any) -> None:
    from interp_steer.io import write_text_atomic
    from interp_steer.validation import dumps

    write_text_atomic(path, dumps(data, indent=2, ensure_ascii=False))  # strict JSON: NaN/inf → null


def _check_layer(layer: int | None, args: argparse.Namespace, flag: str = "--layer") -> None:
    """A block index in range for the model about to load (read from its config, before the load)."""
    if layer is None:
        return
    from interp_steer.models import layer_count

    n = layer_count(getattr(args, "model", None))
    if layer < 0 or (n is not None and layer >= n):
        raise InterpSteerError(f"{flag} {layer} is out of range: the model has layers 0 … "
                               f"{'n-1' if n is None else n - 1}")


def _check_hook(hook: str, args: argparse.Namespace, flag: str = "--hook") -> None:
    import re

    match = re.fullmatch(r"blocks\.(\d+)\.[A-Za-z0-9_.]+", hook) or re.fullmatch(r"hook_embed|hook_pos_embed", hook)
    if match is None:
        raise InterpSteerError(f"{flag} {hook!r} is not a TransformerLens hook name (e.g. blocks.15.hook_resid_post)")
    if match.groups():
        _check_layer(int(match.group(1)), args, flag)


# ------------------------------------------------------------------------------------------------ train-sae


def cmd_train_sae(args: argparse.Namespace) -> int:
    from interp_steer.data.corpus import file_sha256, load_corpus, shared_corpus_path
    from interp_steer.saes.training import SAETrainingConfig, export_checkpoint, train_sae

    for flag, value, low, strict, integer in (
            ("--d-sae", args.d_sae, 1, False, True), ("--k", args.k, 1, False, True),
            ("--training-tokens", args.training_tokens, 1, False, True),
            ("--context-size", args.context_size, 2, False, True), ("--batch-tokens", args.batch_tokens, 1, False, True),
            ("--lr", args.lr, 0, True, False), ("--l1-coefficient", args.l1_coefficient, 0, False, False),
            ("--l0-coefficient", args.l0_coefficient, 0, False, False),
            ("--dead-feature-window", args.dead_feature_window, 1, False, True),
            ("--checkpoints", args.checkpoints, 0, False, True), ("--quality-tokens", args.quality_tokens, 1, False, True)):
        check_number(value, flag, minimum=low, strict_min=strict, integer=integer)
    check_number(args.heldout_fraction, "--heldout-fraction", minimum=0, maximum=0.5, strict_min=True)
    if args.architecture == "topk" and args.k > args.d_sae:
        raise InterpSteerError(f"--k {args.k} is larger than --d-sae {args.d_sae}")
    _check_hook(args.hook, args)
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
    model = _model(args)
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
        cfg = SAETrainingConfig(
            hook=args.hook, d_sae=args.d_sae, architecture=args.architecture, k=args.k,
            l1_coefficient=args.l1_coefficient, l0_coefficient=args.l0_coefficient,
            training_tokens=args.training_tokens, context_size=args.context_size,
            train_batch_size_tokens=args.batch_tokens, lr=args.lr, seed=args.seed,
            n_checkpoints=args.checkpoints, resume_from_checkpoint=args.resume_from,
            dead_feature_window=args.dead_feature_window,
        )
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


def _add_train_sae(sub: Any) -> None:
    p = sub.add_parser("train-sae", help="train a sae-lens SAE on a local corpus",
                       description="Train an SAE with sae-lens on the model's activations over a text corpus.")
    _add_model_args(p)
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


# ------------------------------------------------------------------------------------------------ generate


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        from interp_steer.validation import read_text

        path = check_file(args.prompts_file, "prompts file")
        if path.suffix == ".txt":
            prompts.extend(line.strip() for line in read_text(path, "prompts file").splitlines() if line.strip())
        else:  # JSONL/CSV/Parquet with a prompt (or question/text) column
            from interp_steer.data.registry import load_prompts

            prompts.extend(load_prompts(path))
    if not prompts:
        raise InterpSteerError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def _read_vector(args: argparse.Namespace) -> Any:
    """The ``--vector`` file, read and checked (safetensors, finite, plausible) before any model loads."""
    from interp_steer.steering.vector import SteeringVector

    if not getattr(args, "vector", None):
        return None
    path = Path(args.vector)
    if not path.exists() and Path(args.vector + ".safetensors").exists():
        path = Path(args.vector + ".safetensors")
    check_file(path, "steering vector file")
    vector = SteeringVector.load(path)
    if vector.kind == "sae" and getattr(args, "sae", None):
        from interp_steer.saes import _resolve_folder

        _resolve_folder(args.sae)
    return vector


def _load_vector_and_sae(args: argparse.Namespace, model: Any, vector: Any = None):
    vector = vector if vector is not None else _read_vector(args)
    if vector is None:
        return None, None
    sae = None
    if vector.kind == "sae":
        from interp_steer.saes import load_sae

        ref = vector.sae or {}
        if getattr(args, "sae", None):
            sae = load_sae(path=args.sae, model=model)
        elif ref.get("release"):
            sae = load_sae(ref["release"], ref["sae_id"], model=model)
        else:
            path = str(ref.get("path") or "")
            sae = load_sae(path=path.removeprefix("shipped:") or None, model=model)
    vector.check_compatible(model, sae)
    return vector, sae


def _strength_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"the strength must be a finite number, got {text!r}")
    return value


def cmd_generate(args: argparse.Namespace) -> int:
    from interp_steer.evaluation.calibration import calibrate_strength, fluency_check
    from interp_steer.generation import generate

    check_number(args.max_new_tokens, "--max-new-tokens", minimum=1, integer=True)
    check_number(args.batch_size, "--batch-size", minimum=1, integer=True)
    check_number(args.temperature, "--temperature", minimum=0)
    if not (math.isfinite(args.max_ppl_ratio) and args.max_ppl_ratio > 1):
        raise InterpSteerError(f"--max-ppl-ratio must be a perplexity ratio above 1, got {args.max_ppl_ratio}")
    if args.strength == "auto" and not args.vector:
        raise InterpSteerError("--strength auto needs a --vector to calibrate")
    prompts = _read_prompts(args)
    read = _read_vector(args)  # file, format and values checked before the model loads
    model = _model(args)
    vector, sae = _load_vector_and_sae(args, model, read)
    fluency: dict[str, Any] | None = None
    strength = args.strength
    if vector is not None and strength == "auto":
        cal = calibrate_strength(model, vector, sae=sae, max_ratio=args.max_ppl_ratio, bidirectional=False)
        print(f"calibrated strength: {cal.describe()}", file=sys.stderr)
        if cal.strength is None:
            raise InterpSteerError(f"--strength auto: {cal.describe()}")
        strength = cal.strength
        fluency = {"strength": strength, "ppl_ratio": cal.ppl_ratio, "max_ratio": cal.max_ratio,
                   "within_bound": True, "n_texts": cal.n_texts, "calibrated": True}
    elif vector is not None and float(strength) != 0.0 and not args.no_fluency_check:
        fluency = fluency_check(model, vector, float(strength), sae=sae, max_ratio=args.max_ppl_ratio)
        if not fluency["within_bound"]:
            shown = "inf" if fluency["ppl_ratio"] is None else f"{fluency['ppl_ratio']:.2f}"
            print(f"warning: at λ = {float(strength):g} held-out perplexity is ×{shown} the unsteered model's "
                  f"(bound ×{args.max_ppl_ratio:g}): these generations may not be fluent", file=sys.stderr)
    strength = float(strength)  # "auto" was replaced above (it is refused without a vector)
    gens = generate(model, prompts, vector, strength, sae=sae, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, batch_size=args.batch_size, positions=args.positions,
                    seed=args.seed, progress=True, return_tokens=True)
    outputs = [g.text for g in gens]  # type: ignore[union-attr]
    hook_calls: dict[str, int] = {}
    for start in range(0, len(gens), args.batch_size):  # each batch's counts sit on each of its generations
        for hook, n in gens[start].hook_calls.items():  # type: ignore[union-attr]
            hook_calls[hook] = hook_calls.get(hook, 0) + n
    baseline = None
    if vector is not None and args.compare:
        baseline = generate(model, prompts, None, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, batch_size=args.batch_size, seed=args.seed)
    rows = []
    for i, (prompt, text) in enumerate(zip(prompts, outputs, strict=True)):
        row: dict[str, Any] = {"prompt": prompt, "output": text}
        if baseline is not None:
            row["baseline"] = baseline[i]
        rows.append(row)
    result = {
        "model": model.cfg.model_name, "vector": args.vector, "strength": strength, "fluency": fluency,
        "hook_calls": hook_calls,  # steering applications per hook point: the proof that the vector acted
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
        "positions": args.positions, "generations": rows,
    }
    if args.output:
        _write_json_atomic(Path(args.output), result)
        print(f"wrote {len(rows)} generations to {args.output}")
    else:
        print(_strict_dumps(result, indent=2, ensure_ascii=False))
    return 0


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate (optionally steered) answers",
                       description="Generate chat-templated answers, optionally steered by a saved vector.")
    _add_model_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help=".txt (one prompt per line) or JSONL/CSV with a 'prompt' column")
    p.add_argument("--vector", help="a .safetensors steering vector saved by interp-steer")
    p.add_argument("--sae", help="SAE folder for SAE-latent vectors (default: the one recorded in the vector)")
    p.add_argument("--strength", type=_strength_arg, default=1.0,
                   help="steering strength λ (negative reverses), or 'auto': the largest λ whose held-out "
                        "perplexity stays within --max-ppl-ratio of the unsteered model's")
    p.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency bound for 'auto' and for the warning at a given λ (default 1.2)")
    p.add_argument("--no-fluency-check", action="store_true",
                   help="skip measuring held-out perplexity at the given λ")
    p.add_argument("--positions", choices=["all", "after_instruction", "generated"], default=None,
                   help="where to steer (default: the vector's own policy)")
    p.add_argument("--compare", action="store_true", help="also generate unsteered baselines")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write JSON here (default: print)")
    p.set_defaults(func=cmd_generate)


# ---------------------------------------------------------------------------------------------------- train


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
    _check_config(preference_config(args.preset, method=args.method, **options))  # before any model load
    _check_layer(args.layer, args)
    if args.sae:
        from interp_steer.saes import _resolve_folder

        _resolve_folder(args.sae)
    train, _test = _train_eval_pairs(args)  # the vector is selected on a held-out share of train, never on test
    out = Path(args.output_dir)
    model = _model(args)
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
    model = _model(args)
    res = train_lineas(model, source, target, config=cfg)
    res.vector.save(out / "vector")
    history = [{"step": i + 1, "loss": loss, "pref_acc": float("nan")} for i, loss in enumerate(res.losses)]
    write_curves(history, [], out / "curves.html", title=f"LinEAS {args.source} -> {args.target}")
    print(_strict_dumps({"loss_first": res.losses[0], "loss_last": res.losses[-1], "active_hooks": res.active_hooks,
                      "active_dims": res.active_dims, "vector": str(out / "vector.safetensors")}, indent=2))
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a BiPO (dense) or YaPO (sparse SAE-latent) steering vector",
                       description="Train a steering vector from preference pairs with the BiPO objective.")
    _add_model_args(p)
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
    p.add_argument("--sae", help="SAE folder for yapo (default: the shipped SAE)")
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


# ----------------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from interp_steer.demo import run_demo

    _positive(args.epochs, "--epochs")
    _positive(args.batch_size, "--batch-size")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise InterpSteerError(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.max_ppl_ratio) and args.max_ppl_ratio > 1):
        raise InterpSteerError(f"--max-ppl-ratio must be a perplexity ratio above 1, got {args.max_ppl_ratio}")
    if args.strength and any(not (math.isfinite(x) and x > 0) for x in args.strength):
        raise InterpSteerError(f"--strength values must be positive numbers, got {args.strength}")
    run_demo(args.country, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, sparse=args.sparse,
             max_ratio=args.max_ppl_ratio, strengths=tuple(args.strength) if args.strength else None,
             output_dir=args.output_dir, seed=args.seed)
    return 0


def _positive(value: int, name: str) -> None:
    if value < 1:
        raise InterpSteerError(f"{name} must be at least 1, got {value}")


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="learn a YaPO vector on the embedded default and explain it",
                       description="Learn a YaPO vector for one country of the culture set on the embedded "
                                   "model, choose λ on validation pairs under a perplexity bound, show held-out "
                                   "MCQ accuracy and generations steered vs unsteered, and its SAE latents with "
                                   "their country selectivity.")
    p.add_argument("--country", default="morocco", choices=["egypt", "morocco", "india", "mexico", "brazil", "uk"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the 'small' preset's)")
    p.add_argument("--sparse", action="store_true",
                   help="add the sparse options (methods.preference.SPARSE_DEFAULT; see the README's efficacy table)")
    p.add_argument("--max-ppl-ratio", type=float, default=1.2,
                   help="fluency bound: held-out perplexity steered / unsteered (default 1.2)")
    p.add_argument("--strength", type=float, action="append",
                   help="candidate λ values for the calibration (repeatable; default 0.25 … 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/demo")
    p.set_defaults(func=cmd_demo)


# ---------------------------------------------------------------------------------------------- contrastive


def cmd_contrastive(args: argparse.Namespace) -> int:
    from interp_steer.methods.contrastive import ActivationCache, default_cache_dir, run_contrastive

    check_number(args.n_samples, "--n-samples", minimum=1, integer=True)
    check_number(args.inference_n_samples, "--inference-n-samples", minimum=1, integer=True)
    check_number(args.max_tokens, "--max-tokens", minimum=1, integer=True)
    check_number(args.batch_size, "--batch-size", minimum=1, integer=True)
    check_number(args.temperature, "--temperature", minimum=0)
    for scale in args.scale:
        check_number(scale, "--scale")
    for layer in args.layer:
        _check_layer(layer, args)
    from interp_steer.data.registry import load_prompts

    for key in (args.target, args.baseline) + ((args.inference_dataset,) if args.inference_dataset else ()):
        load_prompts(key, 1)  # validates keys/paths before the model loads (one-line error otherwise)
    model = _model(args)
    cache = ActivationCache(args.cache_dir or default_cache_dir())
    written = []
    for layer in args.layer:
        for scale in args.scale:
            written.append(run_contrastive(
                model, args.target, args.baseline, layer, scale, n_samples=args.n_samples, seed=args.seed,
                inference_dataset=args.inference_dataset, inference_n_samples=args.inference_n_samples,
                max_tokens=args.max_tokens, temperature=args.temperature, output_dir=args.output_dir, cache=cache,
                batch_size=args.batch_size))
    for path in written:
        print(path)
    return 0


def _add_contrastive(sub: Any) -> None:
    p = sub.add_parser("contrastive", help="steer toward one dataset and away from another",
                       description="Contrastive steering: mean last-prompt-token activations of the target set "
                                   "minus those of the baseline set (all layers cached), then baseline vs steered "
                                   "generations written to results.json.")
    _add_model_args(p)
    p.add_argument("--target", required=True, help="registry key (see interp_steer.data.DATASETS) or prompt file")
    p.add_argument("--baseline", required=True, help="registry key or prompt file")
    p.add_argument("--layer", type=int, action="append", required=True, help="layer (repeatable)")
    p.add_argument("--scale", type=float, action="append", default=None,
                   help="steering scale (repeatable; negative reverses; default 4)")
    p.add_argument("--n-samples", type=int, default=100)
    p.add_argument("--inference-dataset", default=None, help="prompts to generate from (default: built-in)")
    p.add_argument("--inference-n-samples", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="activation cache (default: ~/.cache/interp_steer/contrastive)")
    p.add_argument("--output-dir", default="runs/contrastive")
    p.set_defaults(func=cmd_contrastive, scale=None)


# --------------------------------------------------------------------------------------------------- main


_COMMAND_MODULES = ("evaluate", "dashboard", "attribute", "patch", "export")  # interp_steer/commands/<name>.py, each with add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="interp-steer", description="Learn, apply and explain steering vectors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_contrastive(sub)
    _add_demo(sub)
    _add_generate(sub)
    _add_train(sub)
    _add_train_sae(sub)
    from interp_steer.data.rejected import add_prep_rejected_parser

    add_prep_rejected_parser(sub)
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"interp_steer.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "command", None) == "contrastive" and args.scale is None:
        args.scale = [4.0]
    try:
        # output locations first: a file where a folder goes (or the reverse) is refused before any work
        if getattr(args, "output_dir", None):
            check_output_dir(args.output_dir)
        if getattr(args, "output", None):
            check_output_file(args.output)
        return int(args.func(args) or 0)
    except InterpSteerError as exc:
        sys.stderr.write(f"interp-steer: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interp-steer: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
