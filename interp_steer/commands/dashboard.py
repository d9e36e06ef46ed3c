"""``interp-steer dashboard``: an offline HTML feature dashboard and a JSON export for one steering vector.

    interp-steer dashboard --vector v.safetensors [--sae FOLDER] [--texts FILE|KEY] [--n-latents 8]
                           [--strengths 1 2 4] [--sweep sweep.json] [--patching patching.json] --output-dir DIR
                           [--neuronpedia NP_DIR [--neuronpedia-set NAME] [--neuronpedia-model-id ID]]

writes ``DIR/dashboard.html`` (self-contained, plotly.js inlined) and ``DIR/features.json`` (schema in
:mod:`interp_steer.interpret.dashboard`); with ``--neuronpedia``, also ``NP_DIR/batch-0.json`` … in the
batch format of SAEDashboard's NeuronpediaRunner (:mod:`interp_steer.interpret.neuronpedia`), ready for
Neuronpedia's converter. An existing ``NP_DIR`` is overwritten: stale ``batch-N.json`` files are removed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError


def _load_sae(args: argparse.Namespace, vector: Any, model: Any) -> Any:
    from interp_steer.saes import load_sae

    if args.sae:
        return load_sae(path=args.sae, model=model)
    ref = vector.sae or {}
    if vector.kind == "sae" and ref.get("release"):
        return load_sae(ref["release"], ref["sae_id"], model=model)
    if vector.kind == "sae" and ref.get("path"):
        return load_sae(path=str(ref["path"]).removeprefix("shipped:"), model=model)
    return load_sae(model=model)  # the SAE shipped for the embedded default model


def _check_texts(source: str | None) -> None:
    if source is None:
        return
    from interp_steer.data.registry import DATASETS

    if source not in DATASETS and not Path(source).is_file():
        raise InterpSteerError(f"--texts: not a file and not a registry key: {source} "
                               "(e.g. a .txt file with one text per line, or local:news)")


_NEURONPEDIA_FLAGS = {"model_id": "--neuronpedia-model-id", "layer": "--neuronpedia-layer",
                      "sae_set": "--neuronpedia-set", "features_per_batch": "--neuronpedia-features-per-batch"}


def cmd_dashboard(args: argparse.Namespace) -> int:
    from interp_steer.cli import _model
    from interp_steer.interpret.dashboard import build_dashboard, load_patching, load_sweep
    from interp_steer.interpret.latents import corpus_texts
    from interp_steer.interpret.neuronpedia import (
        check_options,
        check_output,
        neuronpedia_batches,
        write_batches,
    )
    from interp_steer.steering.vector import SteeringVector

    if args.n_latents < 1 or args.n_texts < 1 or args.n_snippets < 0 or args.max_length < 2:
        raise InterpSteerError("--n-latents and --n-texts must be ≥ 1, --n-snippets ≥ 0, --max-length ≥ 2")
    vec_path = Path(args.vector)
    if not vec_path.exists() and not vec_path.with_name(vec_path.name + ".safetensors").exists():
        raise InterpSteerError(f"steering vector file not found: {args.vector}")
    _check_texts(args.texts)
    np_options = {"model_id": args.neuronpedia_model_id, "layer": args.neuronpedia_layer,
                  "sae_set": args.neuronpedia_set, "features_per_batch": args.neuronpedia_features_per_batch}
    for key, flag in _NEURONPEDIA_FLAGS.items():  # bad options fail before the model loads, naming the flag
        try:
            check_options(**{key: np_options[key]})
        except InterpSteerError as exc:
            raise InterpSteerError(f"{flag}: {exc}") from exc
    if args.neuronpedia:
        try:
            check_output(args.neuronpedia, overwrite=True)
        except InterpSteerError as exc:
            raise InterpSteerError(f"--neuronpedia: {exc}") from exc
    sweep = load_sweep(args.sweep) if args.sweep else None  # bad files fail before the model loads
    patching = load_patching(args.patching) if args.patching else None
    vector = SteeringVector.load(vec_path)
    if vector.kind == "affine":
        raise InterpSteerError("dashboards explain dense or SAE-latent vectors, not affine maps (LinEAS)")
    t0 = time.perf_counter()
    model = _model(args)
    sae = _load_sae(args, vector, model)
    texts = corpus_texts(args.texts, n=args.n_texts, seed=args.seed, tokenizer=model.tokenizer)
    dash = build_dashboard(
        model, sae, vector, texts, sweep=sweep, patching=patching, n_latents=args.n_latents,
        strengths=args.strengths, n_snippets=args.n_snippets, max_length=args.max_length,
        batch_size=args.batch_size, vector_name=vec_path.name,
        corpus_source=args.texts or "held-out ../shared/data/corpus/mixed-text.jsonl.gz", progress=True,
    )
    batches = neuronpedia_batches(dash.features, **np_options) if args.neuronpedia else []  # refuse first
    html_path, json_path = dash.write(args.output_dir)
    batch_paths = write_batches(batches, args.neuronpedia, overwrite=True) if args.neuronpedia else []
    n = len(dash.features["features"])
    print(f"{n} latents over {len(texts)} texts in {time.perf_counter() - t0:.1f} s")
    print(html_path)
    print(json_path)
    for path in batch_paths:
        print(path)
    return 0


def add_parser(sub: Any) -> None:
    from interp_steer.cli import _add_model_args

    p = sub.add_parser(
        "dashboard", help="offline HTML feature dashboard + JSON export for a steering vector",
        description="Rank the SAE latents a steering vector uses and show, for each, its top-activating snippets, "
                    "logit lens, activation density and its response to steering; writes dashboard.html "
                    "(self-contained, opens offline) and features.json (Neuronpedia-like).",
    )
    _add_model_args(p)
    p.add_argument("--vector", required=True, help="a .safetensors steering vector saved by interp-steer")
    p.add_argument("--sae", default=None, help="SAE folder, shipped name, or a shipped width such as 16384 (default: the vector's own SAE "
                                               "for SAE-latent vectors, else the shipped default)")
    p.add_argument("--texts", default=None,
                   help=".txt (one text per line), JSONL/CSV/Parquet with a text/prompt column, or a registry key "
                        "(default: held-out part of ../shared/data/corpus)")
    p.add_argument("--n-texts", type=int, default=200, help="texts to read (default: 200)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (default: 128)")
    p.add_argument("--n-latents", type=int, default=8, help="latents to show (default: 8)")
    p.add_argument("--n-snippets", type=int, default=8, help="top-activating snippets per latent (default: 8)")
    p.add_argument("--strengths", type=float, nargs="*", default=[1.0, 2.0, 4.0],
                   help="λ values for the latents' response to steering (default: 1 2 4; none: skip)")
    p.add_argument("--sweep", default=None, help="λ-sweep JSON to plot ({strength: metric} or {name: {...}})")
    p.add_argument("--patching", default=None, help="patching heatmap JSON ({values: 2-D list, x_labels, y_labels})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="sampling seed for registry/file texts")
    p.add_argument("--output-dir", required=True, help="folder for dashboard.html and features.json")
    p.add_argument("--neuronpedia", default=None, metavar="DIR",
                   help="also write DIR/batch-0.json … in SAEDashboard's Neuronpedia batch format (for Neuronpedia's "
                        "convert-saedashboard-to-neuronpedia-export converter); stale batch files there are removed")
    p.add_argument("--neuronpedia-set", default=None, metavar="NAME",
                   help="Neuronpedia source set (sae_set, e.g. res-jb; default: a slug of the SAE id)")
    p.add_argument("--neuronpedia-model-id", default=None, metavar="ID",
                   help="Neuronpedia model id (default: the model's name)")
    p.add_argument("--neuronpedia-layer", type=int, default=None,
                   help="layer number (default: from the SAE hook, blocks.N.…)")
    p.add_argument("--neuronpedia-features-per-batch", type=int, default=128,
                   help="latents per batch-N.json (default: 128, as SAEDashboard)")
    p.set_defaults(func=cmd_dashboard)
