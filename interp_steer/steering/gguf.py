"""Control vectors in llama.cpp's GGUF format: export a :class:`SteeringVector`, read one written by others.

The format llama.cpp's ``--control-vector`` loader reads (and repeng/EasySteer write): ``general.architecture =
"controlvector"``, ``controlvector.model_hint`` (the Hugging Face ``model_type``), ``controlvector.layer_count``
and one float32 1-D tensor ``direction.<k>`` of length ``d_model`` per steered layer. llama.cpp adds
``scale · direction.k`` to the **output of block k** at every position (``blocks.k.hook_resid_post`` here) and
refuses the whole file when ``direction.0`` is present.

Exact mappings only: ``blocks.L.hook_resid_post`` → ``direction.L``; ``blocks.L.hook_resid_pre`` →
``direction.(L−1)`` (the same tensor). Block 0's output and the embeddings cannot be expressed, nor can other
hook points or position policies other than ``"all"``: those are refused. Dense vectors (CAA, BiPO,
contrastive) export exactly. SAE-latent vectors (YaPO, SAS) are not additive (``Dec(ReLU(Enc(h) + λ·v))``);
with ``approximate=True`` they export as the decoded direction ``λ·v·W_dec``, labelled as an approximation in
the file's metadata. Affine (LinEAS) maps cannot be exported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.steering.vector import SteeringVector

ARCH = "controlvector"
_HOOK = re.compile(r"blocks\.(\d+)\.(hook_resid_post|hook_resid_pre)")


def gguf_layer(hook: str) -> int:
    """The llama.cpp control-vector layer that adds exactly where ``hook`` does, or an error saying why none."""
    match = _HOOK.fullmatch(hook)
    if match is None:
        raise InterpSteerError(f"{hook} has no llama.cpp control-vector equivalent (llama.cpp adds to block "
                               "outputs: blocks.L.hook_resid_post, or blocks.L.hook_resid_pre = block L−1's output)")
    layer = int(match.group(1)) - (1 if match.group(2) == "hook_resid_pre" else 0)
    if layer < 1:
        raise InterpSteerError(f"{hook} is block 0's output or the embeddings: llama.cpp refuses direction.0")
    return layer


def model_hint(model: Any) -> str:
    """The Hugging Face ``model_type`` of ``model`` (its twin's config, else its TransformerLens architecture)."""
    from interp_steer.models import hf_twin

    twin = hf_twin(model)
    if twin is not None and getattr(twin.config, "model_type", None):
        return str(twin.config.model_type)
    arch = str(getattr(model.cfg, "original_architecture", "") or "")
    if arch.endswith("ForCausalLM"):
        return arch[: -len("ForCausalLM")].lower()
    raise InterpSteerError("cannot tell the model's Hugging Face model_type: pass model_hint=")


def to_gguf(vector: SteeringVector, path: str | os.PathLike[str], *, strength: float = 1.0,
            model: Any | None = None, hint: str | None = None, sae: Any | None = None,
            approximate: bool = False) -> Path:
    """Write ``vector`` at ``strength`` as a llama.cpp control vector (atomically); returns the path.

    ``hint`` is ``controlvector.model_hint`` (default: from ``model``). llama.cpp's own scale
    (``--control-vector-scaled file s``) multiplies what is stored, so ``strength=1`` exports ``v`` itself.
    """
    from gguf import GGUFWriter

    from interp_steer.validation import check_number, check_output_file

    check_number(strength, "strength")
    target = check_output_file(path, "GGUF path")
    if vector.positions != "all":
        raise InterpSteerError(f"llama.cpp steers every position; this vector's policy is {vector.positions!r}")
    if vector.operator != "add":
        raise InterpSteerError(f"llama.cpp control vectors can only add a direction; operator {vector.operator!r} "
                               "(projection) cannot be expressed")
    if vector.kind == "affine":
        raise InterpSteerError("affine (LinEAS) vectors are not additive: llama.cpp control vectors cannot hold them")
    if vector.kind == "sae" and not approximate:
        raise InterpSteerError(
            f"{vector.method} steers in SAE latent space (Dec(ReLU(Enc(h) + λ·v))), which llama.cpp cannot "
            "express; pass approximate=True (and the SAE) to export its decoded direction λ·v·W_dec instead"
        )
    if vector.kind == "sae":
        if sae is None:
            raise InterpSteerError("approximate export of an SAE-latent vector needs its SAE (the decoder)")
        vector.check_sae(sae)  # the decoder it was trained with, whether or not a model is given
    if model is not None:
        vector.check_compatible(model, sae)
    hint = hint or (model_hint(model) if model is not None else None)
    if not hint:
        raise InterpSteerError("pass the model (or model_hint=) so the file records which model it steers")
    directions: dict[int, np.ndarray] = {}
    for hook in vector.hook_points:
        layer = gguf_layer(hook)
        v = vector.vector(hook).detach().float().cpu()
        if sae is not None and vector.kind == "sae":
            v = v @ sae.W_dec.detach().float().cpu()
        d = (float(strength) * v).numpy().astype(np.float32)
        directions[layer] = directions[layer] + d if layer in directions else d  # same point: the sum is exact
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        writer = GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string("interp_steer.method", vector.method)
        writer.add_float32("interp_steer.strength", float(strength))
        writer.add_string("interp_steer.hooks", ",".join(vector.hook_points))
        if vector.kind == "sae":
            writer.add_string("interp_steer.approximation",
                              "decoded SAE-latent direction strength*v@W_dec (the method itself is non-linear)")
        for layer in sorted(directions):
            writer.add_tensor(f"direction.{layer}", directions[layer])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def from_gguf(path: str | os.PathLike[str], model: Any) -> SteeringVector:
    """A dense :class:`SteeringVector` from a llama.cpp control-vector file (``direction.k`` →
    ``blocks.k.hook_resid_post``), checked against ``model``'s width and layer count."""
    from gguf import GGUFReader

    from interp_steer.models import model_fingerprint
    from interp_steer.validation import check_file

    file = check_file(path, "control vector file")
    try:
        reader = GGUFReader(str(file))
    except Exception as exc:  # not GGUF, truncated
        raise InterpSteerError(f"{file}: not a readable GGUF file ({exc})") from None
    arch = _field_str(reader, "general.architecture")
    if arch != ARCH:
        raise InterpSteerError(f"{file}: general.architecture is {arch!r}, not a control vector ({ARCH!r})")
    d_model, n_layers = int(model.cfg.d_model), int(model.cfg.n_layers)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for t in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", t.name)
        if match is None:
            continue
        layer = int(match.group(1))
        if layer == 0 or layer >= n_layers:
            raise InterpSteerError(f"{file}: {t.name} is not a steerable layer of a {n_layers}-layer model")
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if data.shape[0] != d_model:
            raise InterpSteerError(f"{file}: {t.name} has {data.shape[0]} entries but the model is {d_model} wide")
        tensors[f"blocks.{layer}.hook_resid_post"] = {"vector": torch.from_numpy(data.copy())}
    if not tensors:
        raise InterpSteerError(f"{file}: no direction.<layer> tensors")
    order = sorted(tensors, key=lambda h: int(h.split(".")[1]))
    return SteeringVector("controlvector", "dense", {h: tensors[h] for h in order},
                          model_fingerprint(model).to_dict(), positions="all",
                          config={"source": str(file), "model_hint": _field_str(reader, f"{ARCH}.model_hint")})


def _field_str(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


__all__ = ["from_gguf", "gguf_layer", "model_hint", "to_gguf"]
