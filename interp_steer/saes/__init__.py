"""SAEs: load any sae-lens SAE (hub release + id, local folder, or the shipped default), validate it against
the model, train new ones (:mod:`interp_steer.saes.training`) and measure them (:mod:`interp_steer.saes.quality`).
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp_steer.errors import InterpSteerError

SHIPPED_DIR = Path(__file__).resolve().parent / "files"
# the SAE shipped for the embedded default model (trained with `interp-steer train-sae`, see its metadata)
DEFAULT_SAE = "smollm2-135m-instruct/blocks.15.hook_resid_post"

_SAE_REFS: weakref.WeakKeyDictionary[Any, SAEReference] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SAEReference:
    """Where an SAE came from and a hash of its weights (stored in sparse steering artifacts)."""

    hook: str
    d_in: int
    d_sae: int
    architecture: str
    content_hash: str
    release: str | None = None
    sae_id: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEReference:
        keys = ("hook", "d_in", "d_sae", "architecture", "content_hash", "release", "sae_id", "path")
        return cls(**{k: data.get(k) for k in keys})  # type: ignore[arg-type]


def sae_content_hash(sae: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sae_reference(sae: Any) -> SAEReference:
    """The reference recorded for ``sae`` when it was loaded (computed now if it was built by hand)."""
    ref = _SAE_REFS.get(sae)
    if ref is None:
        ref = SAEReference(
            hook=sae.cfg.metadata.hook_name, d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae),
            architecture=sae.cfg.architecture(), content_hash=sae_content_hash(sae),
        )
        _SAE_REFS[sae] = ref
    return ref


def list_shipped_saes() -> list[str]:
    """Names of SAEs shipped inside the package (``<model>/<hook>``)."""
    return sorted(
        str(p.parent.relative_to(SHIPPED_DIR)) for p in SHIPPED_DIR.glob("**/cfg.json")
    ) if SHIPPED_DIR.is_dir() else []


def _shipped_cfg(name: str) -> dict[str, Any]:
    return json.loads((SHIPPED_DIR / name / "cfg.json").read_text())


def shipped_sae_name(width: int, hook: str | None = None) -> str:
    """The name of the shipped SAE with ``width`` latents at ``hook`` (default: the default SAE's hook), for the
    embedded default model; an error lists the widths that are shipped."""
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise InterpSteerError(f"SAE width must be a positive integer, got {width!r}")
    hook = hook or DEFAULT_SAE.split("/", 1)[1]
    model_prefix = DEFAULT_SAE.split("/", 1)[0]
    found: dict[int, list[str]] = {}
    for name in list_shipped_saes():
        if not name.split("/", 1)[0].startswith(model_prefix):
            continue
        cfg = _shipped_cfg(name)
        if (cfg.get("metadata") or {}).get("hook_name", name.split("/", 1)[-1]) == hook:
            found.setdefault(int(cfg["d_sae"]), []).append(name)
    names = found.get(width, [])
    if len(names) != 1:
        have = ", ".join(f"{w} ({', '.join(n)})" for w, n in sorted(found.items())) or "none"
        what = "no" if not names else "more than one"
        raise InterpSteerError(f"{what} shipped SAE with {width} latents at {hook}; shipped widths: {have}")
    return names[0]


def validate_sae(sae: Any, model: Any) -> None:
    """Check that ``sae`` reads a hook that exists in ``model`` with the right width."""
    hook = sae.cfg.metadata.hook_name
    if hook not in model.hook_dict:
        raise InterpSteerError(
            f"SAE hook {hook!r} does not exist in model {model.cfg.model_name} "
            f"(e.g. blocks.0.hook_resid_post ... blocks.{model.cfg.n_layers - 1}.hook_resid_post)"
        )
    width = _hook_width(model, hook)
    if int(sae.cfg.d_in) != width:
        raise InterpSteerError(
            f"SAE d_in={sae.cfg.d_in} does not match the width {width} of {hook} in {model.cfg.model_name}"
        )


def _hook_width(model: Any, hook: str) -> int:
    from interp_steer.validation import hook_width

    known = hook_width(model, hook)  # from the config for the usual hooks; one tiny forward otherwise
    if known is not None:
        return known
    tokens = torch.zeros((1, 1), dtype=torch.long, device=model.cfg.device)
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    return int(cache[hook].shape[-1])


def load_sae(
    release: str | None = None,
    sae_id: str | None = None,
    *,
    path: str | Path | None = None,
    model: Any | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float32",
    width: int | None = None,
):
    """Load an SAE as a sae-lens ``SAE``.

    * ``load_sae()`` – the SAE shipped for the embedded default model (offline).
    * ``load_sae(width=16384)`` – the shipped SAE of that width at the default SAE's hook
      (:func:`shipped_sae_name`); a CLI ``--sae 16384`` means the same.
    * ``load_sae(path=folder)`` – a local sae-lens folder (``cfg.json`` + ``sae_weights.safetensors``), or
      the name of a shipped SAE (see :func:`list_shipped_saes`).
    * ``load_sae("gemma-scope-2b-pt-res-canonical", "layer_15/width_65k/canonical")`` – a sae-lens release.

    With ``model`` the SAE is validated against it (hook exists, ``d_in`` equals the hooked width) and
    moved to its device. Standard/ReLU, JumpReLU and TopK SAEs all load through this one interface.
    """
    from sae_lens import SAE

    if device is None and model is not None:
        device = model.cfg.device
    device_str = str(device or "cpu")
    if width is not None:
        if release is not None or sae_id is not None or path is not None:
            raise InterpSteerError("load_sae: pass width= alone (it picks a shipped SAE), not with a release, "
                                   "sae_id or path")
        path = shipped_sae_name(width)
    if release is not None and sae_id is None and path is None and _looks_like_folder(release):
        release, path = None, release  # load_sae("/a/folder") means the folder, not a hub release
    if release is not None:
        if sae_id is None:
            raise InterpSteerError(
                f"load_sae({release!r}): a sae-lens release needs its sae_id (load_sae(release, sae_id)); "
                "for a local folder pass path=..."
            )
        try:
            sae = SAE.from_pretrained(release, sae_id, device=device_str, dtype=dtype)
        except Exception as exc:  # sae-lens raises ValueError/OSError/HTTP errors
            raise InterpSteerError(f"could not load SAE {release}/{sae_id}: {exc}") from exc
        ref_kwargs: dict[str, Any] = {"release": release, "sae_id": sae_id}
    else:
        folder = resolve_sae_folder(path)
        if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
            raise InterpSteerError(
                f"{folder} is not a sae-lens SAE folder: expected cfg.json and sae_weights.safetensors"
            )
        sae = SAE.load_from_disk(str(folder), device=device_str, dtype=dtype)
        ref_kwargs = {"path": _display_path(folder)}
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    if model is not None:
        validate_sae(sae, model)
    _SAE_REFS[sae] = SAEReference(
        hook=sae.cfg.metadata.hook_name, d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae),
        architecture=sae.cfg.architecture(), content_hash=sae_content_hash(sae), **ref_kwargs,
    )
    return sae


def _looks_like_folder(name: str | Path) -> bool:
    """A local path (it exists, is absolute or relative, has a separator) or a shipped SAE name."""
    text = str(name)
    return (Path(text).exists() or os.sep in text or text.startswith(("~", "."))
            or (SHIPPED_DIR / text).is_dir())


def resolve_sae_folder(path: str | Path | None) -> Path:
    """The folder :func:`load_sae` would read for ``path`` (``None``: the shipped default; a width such as
    ``"16384"``: the shipped SAE of that width; a shipped name; or a local sae-lens folder), without reading it:
    the commands call it to refuse a bad ``--sae`` before the model loads. Raises :class:`InterpSteerError`
    naming the problem."""
    if path is None:
        folder = SHIPPED_DIR / DEFAULT_SAE
        if not folder.is_dir():
            raise InterpSteerError(f"the shipped default SAE is missing from the package ({folder})")
        return folder
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if str(path).isdigit():  # --sae 16384: the shipped SAE of that width
        return SHIPPED_DIR / shipped_sae_name(int(str(path)))
    shipped = SHIPPED_DIR / str(path)
    if shipped.is_dir():
        return shipped
    if folder.exists():
        raise InterpSteerError(f"SAE path {path} is a file; expected a sae-lens SAE folder (cfg.json + "
                               "sae_weights.safetensors)")
    raise InterpSteerError(
        f"SAE folder not found: {path} (shipped SAEs: {', '.join(list_shipped_saes()) or 'none'})"
    )


def _display_path(folder: Path) -> str:
    try:
        return "shipped:" + str(folder.resolve().relative_to(SHIPPED_DIR))
    except ValueError:
        return str(folder.resolve())


def sae_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """The ``interp_steer.json`` metadata (training command, corpus hash, quality) of a local SAE folder."""
    folder = resolve_sae_folder(path)
    meta = folder / "interp_steer.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


__all__ = [
    "DEFAULT_SAE", "SAEReference", "list_shipped_saes", "load_sae", "sae_content_hash", "sae_metadata",
    "resolve_sae_folder", "sae_reference", "shipped_sae_name", "validate_sae",
]
