"""``interp-steer export``: write a saved vector in another tool's format (llama.cpp control-vector GGUF).

    interp-steer export --vector caa.safetensors --format gguf --output caa.gguf [--strength 4]
    llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --control-vector caa.gguf ...

Dense vectors (CAA, BiPO, contrastive) export exactly; SAE-latent vectors (YaPO, SAS) only with
``--approximate`` (their decoded direction, labelled so in the file); LinEAS cannot be exported. No model is
loaded: the model hint is ``--model-hint`` or, for vectors of the embedded default, ``llama``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError


def cmd_export(args: argparse.Namespace) -> int:
    from interp_steer.models import EMBEDDED_MODEL_NAME
    from interp_steer.steering.gguf import to_gguf
    from interp_steer.steering.vector import SteeringVector
    from interp_steer.validation import check_number

    check_number(args.strength, "--strength")
    vector = SteeringVector.load(args.vector)
    hint = args.model_hint or ("llama" if vector.model.get("name") == EMBEDDED_MODEL_NAME else None)
    if hint is None:
        raise InterpSteerError(f"--model-hint is needed (the Hugging Face model_type of {vector.model.get('name')}, "
                               "e.g. llama, mistral, gemma2)")
    sae = None
    if vector.kind == "sae" and args.approximate:
        from interp_steer.saes import load_sae

        ref = vector.sae or {}
        sae = load_sae(path=args.sae or str(ref.get("path") or "").removeprefix("shipped:") or None)
    out = to_gguf(vector, Path(args.output), strength=args.strength, hint=hint, sae=sae, approximate=args.approximate)
    print(f"wrote {out} ({', '.join(vector.hook_points)} at strength {args.strength:g}, model hint {hint})")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a vector for llama.cpp (control-vector GGUF)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--vector", required=True, help="a .safetensors steering vector saved by interp-steer")
    p.add_argument("--format", choices=["gguf"], default="gguf")
    p.add_argument("--output", required=True, help="the .gguf file to write")
    p.add_argument("--strength", type=float, default=1.0,
                   help="λ baked into the file (llama.cpp's --control-vector-scaled multiplies it again)")
    p.add_argument("--model-hint", default=None, help="Hugging Face model_type (default: llama for the embedded model)")
    p.add_argument("--approximate", action="store_true",
                   help="SAE-latent vectors (YaPO, SAS): export the decoded direction λ·v·W_dec (not exact)")
    p.add_argument("--sae", default=None, help="the vector's SAE folder, shipped name, or a shipped width such as 16384 (default: the one it records)")
    p.set_defaults(func=cmd_export)
