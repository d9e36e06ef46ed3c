"""Model loading, the chat helper and fingerprints."""

from __future__ import annotations

import copy

import pytest
import torch

from interp_steer.chat import chat_tokens, render_prompt
from interp_steer.errors import InterpSteerError
from interp_steer.models import hf_twin, load_model, model_fingerprint

GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\n'}}{% endif %}"
)


def test_chat_tokens_bookkeeping(tokenizer):
    ct = chat_tokens(tokenizer, "What is the capital of France?", "Paris.")
    prompt_only = chat_tokens(tokenizer, "What is the capital of France?")
    assert ct.prompt_ids == prompt_only.ids
    assert ct.response_start == len(prompt_only.ids)
    assert tokenizer.decode(ct.response_ids).startswith("Paris.")
    assert tokenizer.decode(ct.response_ids).endswith("<|im_end|>")
    assert 0 < ct.instruction_end < ct.response_start
    # the instruction ends right before the user turn's end-of-turn marker
    assert tokenizer.decode(ct.ids[ct.instruction_end]) == "<|im_end|>"
    assert tokenizer.decode(ct.ids[: ct.instruction_end]).endswith("France?")


def test_template_without_system_role_gets_no_system_prefix(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = GEMMA_LIKE_TEMPLATE
    text = render_prompt(tok, "Hi there")
    assert "system" not in text and text.endswith("<start_of_turn>model\n")
    merged = render_prompt(tok, "Hi there", system="Be brief.")
    assert "system" not in merged and "Be brief.\n\nHi there" in merged
    # SmolLM's template has a system role: the system message is used as such
    assert "<|im_start|>system\nBe brief." in render_prompt(tokenizer, "Hi", system="Be brief.")


def test_tiny_model_matches_its_hf_twin(tiny_model):
    tokens = torch.tensor([chat_tokens(tiny_model.tokenizer, "Hello", "Hi!").ids])
    with torch.no_grad():
        hf = torch.log_softmax(hf_twin(tiny_model)(tokens).logits, -1)
    torch.testing.assert_close(torch.log_softmax(tiny_model(tokens), -1), hf, atol=1e-4, rtol=1e-4)


def test_fingerprint_separates_models(tokenizer, tiny_model):
    from .conftest import make_tiny_model

    other = make_tiny_model(tokenizer, seed=1, name=tiny_model.cfg.model_name)
    a, b = model_fingerprint(tiny_model), model_fingerprint(other)
    assert a.name == b.name and a.config_hash != b.config_hash
    assert model_fingerprint(tiny_model) == a


def test_bad_model_names_are_clear(tmp_path):
    with pytest.raises(InterpSteerError, match="GGUF file not found"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(InterpSteerError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(InterpSteerError, match="neither a local path nor a TransformerLens official"):
        load_model("not-a-model-anyone-knows")


@pytest.mark.slow
def test_default_model_matches_hf_logprobs(model):
    hf = hf_twin(model)
    assert hf is not None and model.cfg.n_layers == 30 and model.cfg.d_model == 576
    assert model.cfg.default_prepend_bos is False
    texts = [("What is the capital of France?", "The capital of France is Paris."),
             ("Name a spice used in curries.", "Turmeric is common.")]
    for prompt, response in texts:
        tokens = torch.tensor([chat_tokens(model.tokenizer, prompt, response).ids])
        with torch.no_grad():
            ref = torch.log_softmax(hf(tokens).logits, -1)
            ours = torch.log_softmax(model(tokens), -1)
        assert (ref - ours).abs().max().item() < 1e-4


@pytest.mark.slow
def test_default_model_loads_offline_and_fingerprint_is_stable(model):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    fp = model_fingerprint(model)
    assert fp.name == "SmolLM2-135M-Instruct" and fp.n_layers == 30
    assert len(fp.config_hash) == 16 and len(fp.tokenizer_hash) == 16
