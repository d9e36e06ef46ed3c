"""Generation: the fast HF path and the TransformerLens hook path agree token for token (greedy)."""

from __future__ import annotations

import pytest
import torch

from interp_steer.generation import generate
from interp_steer.models import model_fingerprint
from interp_steer.steering import DenseIntervention, SteeringVector

PROMPTS = ["What do people eat for breakfast?", "Name a festival.", "Describe a typical wedding in detail, please."]


@pytest.mark.parametrize("positions", ["all", "after_instruction", "generated"])
def test_backends_agree_with_steering(tiny_model, positions):
    torch.manual_seed(0)
    iv = {"blocks.0.hook_resid_post": DenseIntervention(torch.randn(tiny_model.cfg.d_model) * 2)}
    fast = generate(tiny_model, PROMPTS, iv, 1.0, max_new_tokens=10, backend="hf", positions=positions,
                    return_tokens=True)
    ref = generate(tiny_model, PROMPTS, iv, 1.0, max_new_tokens=10, backend="tl", positions=positions,
                   return_tokens=True)
    assert [g.tokens for g in fast] == [g.tokens for g in ref]
    plain = generate(tiny_model, PROMPTS, max_new_tokens=10, backend="hf", return_tokens=True)
    assert [g.tokens for g in plain] != [g.tokens for g in fast]


def test_batched_equals_one_by_one(tiny_model):
    batched = generate(tiny_model, PROMPTS, max_new_tokens=8, batch_size=3)
    single = [generate(tiny_model, p, max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == single


def test_generated_policy_leaves_first_token_unsteered(tiny_model):
    iv = {"blocks.0.hook_resid_post": DenseIntervention(torch.randn(tiny_model.cfg.d_model) * 50)}
    plain = generate(tiny_model, PROMPTS, max_new_tokens=3, return_tokens=True)
    steered = generate(tiny_model, PROMPTS, iv, max_new_tokens=3, positions="generated", return_tokens=True)
    assert [g.tokens[0] for g in plain] == [g.tokens[0] for g in steered]


def test_non_mappable_hook_falls_back_to_tl(tiny_model):
    iv = {"blocks.0.hook_resid_mid": DenseIntervention(torch.randn(tiny_model.cfg.d_model))}
    out = generate(tiny_model, PROMPTS[:1], iv, max_new_tokens=4)  # auto → TL path, no error
    assert isinstance(out[0], str)


def test_sampling_is_seeded(tiny_model):
    a = generate(tiny_model, PROMPTS, max_new_tokens=6, temperature=1.0, seed=3)
    b = generate(tiny_model, PROMPTS, max_new_tokens=6, temperature=1.0, seed=3)
    assert a == b


@pytest.mark.slow
def test_default_model_backends_agree(model):
    torch.manual_seed(0)
    v = torch.randn(model.cfg.d_model)
    vec = SteeringVector("test", "dense", {"blocks.12.hook_resid_post": {"vector": v / v.norm() * 8}},
                         model_fingerprint(model).to_dict())
    prompts = ["What is a popular breakfast?", "Give me one tip for learning to cook."]
    by_strength = {}
    for strength in (0.0, 1.0):
        fast = generate(model, prompts, vec, strength, max_new_tokens=12, backend="hf", return_tokens=True)
        ref = generate(model, prompts, vec, strength, max_new_tokens=12, backend="tl", return_tokens=True)
        assert [g.tokens for g in fast] == [g.tokens for g in ref]
        by_strength[strength] = [g.tokens for g in fast]
    assert by_strength[1.0] != by_strength[0.0]  # the vector acts: a no-op steering hook fails here


@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_steered_generation_reports_how_often_each_hook_fired(tiny_model, backend):
    from interp_steer.generation import generate
    from interp_steer.models import model_fingerprint
    from interp_steer.steering import SteeringVector

    hook = "blocks.1.hook_resid_post"
    vec = SteeringVector("caa", "dense", {hook: {"vector": torch.ones(tiny_model.cfg.d_model)}},
                         model_fingerprint(tiny_model).to_dict())
    out = generate(tiny_model, ["Hi", "Hello there"], vec, 2.0, max_new_tokens=5, backend=backend,
                   return_tokens=True, ignore_eos=True)
    # one call for the prompt, then one per new token after the first (KV cache)
    assert out[0].hook_calls == {hook: 5} and out[1].hook_calls == {hook: 5}
    plain = generate(tiny_model, ["Hi"], max_new_tokens=3, backend=backend, return_tokens=True)
    assert plain[0].hook_calls == {}


def test_a_steering_block_whose_hook_never_fired_is_an_error(tiny_model):
    from interp_steer.errors import InterpSteerError
    from interp_steer.models import model_fingerprint
    from interp_steer.steering import SteeringVector, steer

    hook = "blocks.1.hook_resid_post"
    vec = SteeringVector("caa", "dense", {hook: {"vector": torch.ones(tiny_model.cfg.d_model)}},
                         model_fingerprint(tiny_model).to_dict())
    tokens = torch.tensor([[1, 2, 3]])
    with steer(tiny_model, vec, 1.0, require_fired=True) as handle:
        tiny_model(tokens)
    assert handle.calls == {hook: 1}
    with pytest.raises(InterpSteerError, match=r"never fired"):
        with steer(tiny_model, vec, 1.0, require_fired=True):
            tiny_model(tokens, stop_at_layer=1)  # stops before block 1's output
