"""``SteeringVector``: the one artifact every method produces (CAA, SAS, BiPO, YaPO, LinEAS, contrastive).

Saved as ``<name>.safetensors`` (tensors; the JSON metadata is also embedded in the safetensors header) plus a
human-readable ``<name>.json`` sidecar, both written atomically. Loading never unpickles: anything that is
not a safetensors file is refused. Compatibility with the model (name + config/tokenizer hash) and, for
SAE-latent vectors, with the SAE (content hash) is checked before use.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float

from interp_steer.errors import InterpSteerError
from interp_steer.validation import finite_json

Kind = Literal["dense", "sae", "affine"]
KINDS: tuple[str, ...] = ("dense", "sae", "affine")
# the operators each kind accepts: a dense vector is added, its direction projected out of h, or projected out then
# added (refusal-direction work); an SAE-latent vector follows the formula (add) or its odd part (symmetric)
KIND_OPERATORS: dict[str, tuple[str, ...]] = {"dense": ("add", "ablate", "ablate_add"), "sae": ("add", "symmetric"),
                                              "affine": ("add",)}
OPERATORS: tuple[str, ...] = tuple(dict.fromkeys(op for ops in KIND_OPERATORS.values() for op in ops))
FORMAT = "interp_steer.vector/1"
# tensor names per hook point for each kind
TENSOR_NAMES: dict[str, tuple[str, ...]] = {"dense": ("vector",), "sae": ("latent",), "affine": ("scale", "bias")}


@dataclass
class SteeringVector:
    """A steering intervention learned or computed by one method.

    Attributes:
        method: "caa", "sas", "bipo", "yapo", "lineas", "contrastive", ...
        kind: how it is applied — ``dense`` (``h + λ·v``), ``sae`` (``Dec(ReLU(Enc(h) + λ·v)) + h − Dec(Enc(h))``)
            or ``affine`` (``λ·(ω⊙h + b) + (1 − λ)·h``).
        tensors: ``{hook_point: {"vector"|"latent"|"scale"|"bias": tensor}}``.
        model: model fingerprint dict (name, config_hash, tokenizer_hash, d_model, n_layers).
        sae: SAE reference dict (hook, d_sae, architecture, content_hash, release/sae_id or path) for ``sae`` kind.
        positions: default position policy when applied ("all", "after_instruction", "generated").
        config: the method's settings; metrics: what it measured (losses, accuracies, norms).
        operator: for dense vectors, ``add`` (``h + λ·v``, the default), ``ablate`` (``h − λ·(h·v̂)·v̂``: λ = 1
            removes the direction) or ``ablate_add`` (``h − (h·v̂)·v̂ + λ·v``). For ``sae`` vectors, ``add`` (the
            formula above, YaPO's) or ``symmetric``: ``h + ½·[e(λ) − e(−λ)]`` with ``e(λ) = Dec(ReLU(s + λ·v)) −
            Dec(s)``, so that −λ applies exactly the opposite edit of +λ (the formula's two signs share a common
            component: every latent of ``v`` is switched on at one of them). Switch with
            ``dataclasses.replace(vec, operator="ablate")``.
    """

    method: str
    kind: Kind
    tensors: dict[str, dict[str, torch.Tensor]]
    model: dict[str, Any]
    sae: dict[str, Any] | None = None
    positions: str = "all"
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    operator: str = "add"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InterpSteerError(f"unknown steering kind {self.kind!r}; expected one of {KINDS}")
        if not self.tensors:
            raise InterpSteerError("a SteeringVector needs at least one hook point")
        for hook, parts in self.tensors.items():
            missing = set(TENSOR_NAMES[self.kind]) - set(parts)
            if missing:
                raise InterpSteerError(f"{self.kind} vector at {hook} lacks tensors {sorted(missing)}")
        if self.operator not in OPERATORS:
            raise InterpSteerError(f"unknown operator {self.operator!r}; expected one of {OPERATORS}")
        if self.operator not in KIND_OPERATORS[self.kind]:
            raise InterpSteerError(f"operator {self.operator!r} does not apply to a {self.kind} vector; expected one of "
                                   f"{KIND_OPERATORS[self.kind]}")
        if self.kind == "sae" and self.sae is None:
            raise InterpSteerError("an SAE-latent vector must record its SAE reference")
        from interp_steer.validation import check_tensor

        for hook, parts in self.tensors.items():
            for name in TENSOR_NAMES[self.kind]:
                check_tensor(parts[name], f"{self.method} {name} at {hook}")

    # ------------------------------------------------------------------------------------------ access
    @property
    def hook_points(self) -> list[str]:
        return list(self.tensors)

    def vector(self, hook: str | None = None) -> Float[torch.Tensor, " d"]:
        """The main tensor at ``hook`` (the only hook when ``None``): vector, latent code, or scale."""
        if hook is None:
            if len(self.tensors) != 1:
                raise InterpSteerError(f"vector has {len(self.tensors)} hook points; name one: {self.hook_points}")
            hook = self.hook_points[0]
        if hook not in self.tensors:
            raise InterpSteerError(f"no hook point {hook!r} in this vector (has {self.hook_points})")
        return self.tensors[hook][TENSOR_NAMES[self.kind][0]]

    def norms(self) -> dict[str, float]:
        return {h: float(self.vector(h).float().norm()) for h in self.hook_points}

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> SteeringVector:
        tensors = {h: {k: v.to(device=device, dtype=dtype) for k, v in p.items()} for h, p in self.tensors.items()}
        return SteeringVector(self.method, self.kind, tensors, dict(self.model), self.sae, self.positions,
                              dict(self.config), dict(self.metrics), self.created, self.operator)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "method": self.method, "kind": self.kind, "hook_points": self.hook_points,
            "model": self.model, "sae": self.sae, "positions": self.positions, "config": self.config,
            "metrics": self.metrics, "created": self.created, "operator": self.operator,
            "norms": self.norms(),
        }

    # ---------------------------------------------------------------------------------- compatibility
    def check_compatible(self, model: Any, sae: Any | None = None) -> None:
        """Raise :class:`InterpSteerError` when this vector was made for another model or SAE."""
        from interp_steer.models import model_fingerprint

        fp = model_fingerprint(model).to_dict()
        mine = self.model
        if mine.get("config_hash") != fp["config_hash"] or mine.get("tokenizer_hash") != fp["tokenizer_hash"]:
            raise InterpSteerError(
                f"steering vector was made for model {mine.get('name')} (config {mine.get('config_hash')}, "
                f"tokenizer {mine.get('tokenizer_hash')}) but is applied to {fp['name']} "
                f"(config {fp['config_hash']}, tokenizer {fp['tokenizer_hash']})"
            )
        from interp_steer.validation import hook_width

        for hook in self.hook_points:
            if hook not in model.hook_dict:
                raise InterpSteerError(f"hook point {hook!r} of the vector does not exist in {fp['name']}")
            width = hook_width(model, hook)
            if self.kind != "sae" and width is not None:
                for name in TENSOR_NAMES[self.kind]:
                    got = int(self.tensors[hook][name].shape[-1])
                    if got != width:
                        raise InterpSteerError(f"{self.method} {name} at {hook} has {got} entries but "
                                               f"{fp['name']} is {width} wide there")
        if self.kind == "sae":
            if sae is None:
                raise InterpSteerError(
                    f"this {self.method} vector steers in SAE latent space: pass the SAE it was trained with "
                    f"({self.sae.get('release') or self.sae.get('path')}, hook {self.sae.get('hook')})"
                    if self.sae else "this vector needs its SAE"
                )
            self.check_sae(sae)

    def check_sae(self, sae: Any) -> None:
        """Raise :class:`InterpSteerError` unless ``sae`` is the SAE this latent vector was made with (content
        hash) and as wide as the vector."""
        from interp_steer.saes import sae_reference

        if self.kind != "sae" or self.sae is None:
            raise InterpSteerError(f"this {self.kind} vector does not steer in SAE latent space")
        ref = sae_reference(sae).to_dict()
        if ref["content_hash"] != self.sae.get("content_hash"):
            raise InterpSteerError(
                f"SAE mismatch: the vector was made with SAE {self.sae.get('release') or self.sae.get('path')} "
                f"(hash {self.sae.get('content_hash')}) but got {ref.get('release') or ref.get('path')} "
                f"(hash {ref['content_hash']})"
            )
        if int(self.vector().numel()) != int(sae.cfg.d_sae):
            raise InterpSteerError(f"latent vector has {self.vector().numel()} entries but the SAE has {sae.cfg.d_sae}")

    # ------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.safetensors`` appended if missing) and a ``.json`` sidecar, atomically."""
        from safetensors.torch import save_file

        target = Path(path)
        if target.suffix != ".safetensors":
            target = target.with_name(target.name + ".safetensors")
        target.parent.mkdir(parents=True, exist_ok=True)
        flat = {f"{hook}::{name}": t.detach().to("cpu").contiguous()
                for hook, parts in self.tensors.items() for name, t in parts.items()}
        meta = self.metadata()
        text = json.dumps(finite_json(meta), indent=2, default=_json_default)  # strict JSON: NaN → null
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp_json = target.with_suffix(".json").with_name(f".{target.stem}.json.tmp-{os.getpid()}")
        try:
            save_file(flat, str(tmp), metadata={"interp_steer": text})
            tmp_json.write_text(text)
            os.replace(tmp_json, target.with_suffix(".json"))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            tmp_json.unlink(missing_ok=True)
        return target

    def to_gguf(self, path: str | os.PathLike[str], *, strength: float = 1.0, model: Any | None = None,
                hint: str | None = None, sae: Any | None = None, approximate: bool = False) -> Path:
        """Export as a llama.cpp control vector (see :mod:`interp_steer.steering.gguf`)."""
        from interp_steer.steering.gguf import to_gguf

        return to_gguf(self, path, strength=strength, model=model, hint=hint, sae=sae, approximate=approximate)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str], model: Any) -> SteeringVector:
        """Read a llama.cpp control vector (written by llama.cpp tools, repeng, EasySteer or :meth:`to_gguf`)."""
        from interp_steer.steering.gguf import from_gguf

        return from_gguf(path, model)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, model: Any | None = None, sae: Any | None = None,
        device: str | torch.device | None = None,
    ) -> SteeringVector:
        """Load a vector saved by :meth:`save`; with ``model`` (and ``sae``) check compatibility."""
        from safetensors import safe_open

        from interp_steer.validation import check_file

        file = Path(path)
        if not file.exists() and file.with_name(file.name + ".safetensors").exists():
            file = file.with_name(file.name + ".safetensors")
        check_file(file, "steering vector file")  # not found / a directory / unreadable, named as such
        _refuse_non_safetensors(file)
        try:
            with safe_open(str(file), framework="pt", device="cpu") as fh:
                header = fh.metadata() or {}
                flat = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # corrupt header
            raise InterpSteerError(f"{file}: not a readable safetensors file ({exc})") from exc
        if "interp_steer" not in header:
            raise InterpSteerError(f"{file}: safetensors file without interp_steer metadata")
        try:
            meta = json.loads(header["interp_steer"])
        except json.JSONDecodeError as exc:
            raise InterpSteerError(f"{file}: its interp_steer metadata is not valid JSON ({exc.msg})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise InterpSteerError(f"{file}: unsupported format {got!r} (expected {FORMAT})")
        tensors: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in flat.items():
            hook, _, name = key.rpartition("::")
            tensors.setdefault(hook, {})[name] = tensor.to(device) if device is not None else tensor
        missing = [k for k in ("method", "kind", "hook_points", "model") if k not in meta]
        if missing:
            raise InterpSteerError(f"{file}: its interp_steer metadata lacks {missing}")
        absent = [h for h in meta["hook_points"] if h not in tensors]
        if absent:
            raise InterpSteerError(f"{file}: no tensors for hook point(s) {absent} named in its metadata")
        try:
            vec = cls(
                method=meta["method"], kind=meta["kind"], tensors={h: tensors[h] for h in meta["hook_points"]},
                model=meta["model"], sae=meta.get("sae"), positions=meta.get("positions", "all"),
                config=meta.get("config", {}), metrics=meta.get("metrics", {}), created=meta.get("created", ""),
                operator=meta.get("operator", "add"),
            )
        except InterpSteerError as exc:
            raise InterpSteerError(f"{file}: {exc}") from None
        if model is not None:
            vec.check_compatible(model, sae)
        return vec


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


# safetensors headers are JSON; cap what is read to decide whether a file is one
_MAX_HEADER = 100 * 1024 * 1024


def _refuse_non_safetensors(file: Path) -> None:
    """Accept a file only when it *is* safetensors (an 8-byte little-endian length, then that many bytes of
    JSON object); name pickles (``torch.save`` zips, pickle streams) as such, and never parse them."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = fh.read(n) if 2 <= n <= min(size - 8, _MAX_HEADER) else b""
    if header:
        try:
            if isinstance(json.loads(header.decode("utf-8")), dict):
                return
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise InterpSteerError(
            f"{file}: refusing to load a pickle/torch.save file (unsafe); steering vectors are safetensors"
        )
    raise InterpSteerError(f"{file}: not a safetensors file (no valid safetensors header)")
