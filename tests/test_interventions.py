"""The shared intervention layer on a tiny random Llama: identities, formulas, masks, hook hygiene, HF twin."""

from __future__ import annotations

import pytest
import torch

from interp_steer.chat import chat_tokens
from interp_steer.errors import InterpSteerError
from interp_steer.models import hf_twin
from interp_steer.steering import (
    AffineIntervention,
    DenseIntervention,
    SAEIntervention,
    StepState,
    attach,
    steer,
)
from interp_steer.steering.interventions import SteeringHandle, attach_hf

from .conftest import TINY_HOOK, make_sae


def _tokens(model, text="Tell me about tea in the afternoon."):
    return torch.tensor([chat_tokens(model.tokenizer, text, "Tea is nice.").ids])


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_zero_dense_vector_is_identity(tiny_model):
    tokens = _tokens(tiny_model)
    clean = tiny_model(tokens)
    with steer(tiny_model, {TINY_HOOK: DenseIntervention(torch.zeros(tiny_model.cfg.d_model))}, 7.0):
        assert torch.equal(tiny_model(tokens), clean)


def test_zero_latent_vector_is_identity(tiny_model, tiny_sae):
    tokens = _tokens(tiny_model)
    clean = tiny_model(tokens)
    for sparse in (False, "auto"):
        iv = SAEIntervention(tiny_sae, torch.zeros(tiny_sae.cfg.d_sae), sparse=sparse)
        with steer(tiny_model, {TINY_HOOK: iv}, 5.0):
            torch.testing.assert_close(tiny_model(tokens), clean, atol=0, rtol=0)


def test_affine_identity_map_and_zero_strength_are_identity(tiny_model):
    tokens = _tokens(tiny_model)
    clean = tiny_model(tokens)
    d = tiny_model.cfg.d_model
    identity = AffineIntervention(torch.ones(d), torch.zeros(d))
    with steer(tiny_model, {TINY_HOOK: identity}, 3.0):
        torch.testing.assert_close(tiny_model(tokens), clean)
    moving = AffineIntervention(torch.rand(d) + 0.5, torch.randn(d))
    with steer(tiny_model, {TINY_HOOK: moving}, 0.0):
        torch.testing.assert_close(tiny_model(tokens), clean)
    with steer(tiny_model, {TINY_HOOK: moving}, 1.0):
        assert not torch.allclose(tiny_model(tokens), clean)


def test_formulas_match_their_definitions(tiny_sae):
    torch.manual_seed(1)
    h = torch.randn(2, 5, tiny_sae.cfg.d_in)
    v = torch.randn(tiny_sae.cfg.d_sae)
    lam = 0.7
    s = tiny_sae.encode(h)
    expected = tiny_sae.decode(torch.relu(s + lam * v)) + (h - tiny_sae.decode(s))
    torch.testing.assert_close(SAEIntervention(tiny_sae, v, sparse=False)(h, lam), expected, atol=1e-5, rtol=1e-5)
    dense = torch.randn(tiny_sae.cfg.d_in)
    torch.testing.assert_close(DenseIntervention(dense)(h, lam), h + lam * dense)
    w, b = torch.rand(tiny_sae.cfg.d_in), torch.randn(tiny_sae.cfg.d_in)
    torch.testing.assert_close(AffineIntervention(w, b)(h, lam), lam * (w * h + b) + (1 - lam) * h)


def _sparse_setup(architecture: str, sae_seed: int, seed: int):
    """A 256-latent SAE, a latent vector with 12 non-zeros and activations that fire it."""
    sae = make_sae(architecture, 32, 256, TINY_HOOK, seed=sae_seed)
    torch.manual_seed(seed)
    v = torch.zeros(256)
    idx = torch.randperm(256)[:12]
    v[idx] = torch.randn(12) * 2
    return sae, v, torch.randn(3, 7, 32) * 3


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_sparse_support_path_equals_full_formula(architecture):
    sae, v, h = _sparse_setup(architecture, 3, 2)
    fast = SAEIntervention(sae, v)
    assert fast.support is not None and fast.support.numel() == 12
    for lam in (-2.0, 0.5, 4.0):
        torch.testing.assert_close(fast(h, lam), SAEIntervention(sae, v, sparse=False)(h, lam), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu"])
def test_symmetric_operator_is_odd_in_lambda_and_matches_its_definition(architecture):
    sae, v, h = _sparse_setup(architecture, 4, 5)
    s = sae.encode(h)
    for sparse in (False, "auto"):
        sym = SAEIntervention(sae, v, sparse=sparse, symmetric=True)
        for lam in (0.5, 3.0):
            plus, minus = sym(h, lam) - h, sym(h, -lam) - h
            torch.testing.assert_close(minus, -plus, atol=1e-5, rtol=1e-5)  # -λ is exactly the opposite edit
            expected = 0.5 * (sae.decode(torch.relu(s + lam * v)) - sae.decode(torch.relu(s - lam * v)))
            torch.testing.assert_close(plus, expected, atol=1e-5, rtol=1e-5)
    # the formula itself is not odd: both signs switch latents on, so its two edits share a component
    plain = SAEIntervention(sae, v, sparse=False)
    assert not torch.allclose(plain(h, -3.0) - h, -(plain(h, 3.0) - h), atol=1e-3)


def test_symmetric_vectors_steer_symmetrically_through_steer(tiny_model, tiny_sae):
    import dataclasses

    from interp_steer.steering import interventions_for
    from interp_steer.steering.vector import SteeringVector

    torch.manual_seed(6)
    v = torch.randn(tiny_sae.cfg.d_sae)
    vec = SteeringVector("yapo", "sae", {TINY_HOOK: {"latent": v}}, {"name": "tiny"}, sae={"hook": TINY_HOOK},
                         operator="symmetric")
    (iv,) = interventions_for(vec, tiny_sae).values()
    assert iv.symmetric
    (plain,) = interventions_for(dataclasses.replace(vec, operator="add"), tiny_sae).values()
    assert not plain.symmetric
    with pytest.raises(InterpSteerError, match="does not apply to a dense vector"):
        SteeringVector("bipo", "dense", {TINY_HOOK: {"vector": torch.ones(4)}}, {"name": "tiny"}, operator="symmetric")
    with pytest.raises(InterpSteerError, match="does not apply to a sae vector"):
        dataclasses.replace(vec, operator="ablate")


def test_sparse_path_refused_for_topk():
    sae = make_sae("topk", 32, 64, TINY_HOOK)
    v = torch.zeros(64)
    v[3] = 1.0
    assert SAEIntervention(sae, v).support is None  # auto: falls back to the full formula
    with pytest.raises(InterpSteerError, match="elementwise"):
        SAEIntervention(sae, v, sparse=True)


def test_hooks_removed_after_steer_even_on_exception(tiny_model):
    before = _n_hooks(tiny_model)
    iv = {TINY_HOOK: DenseIntervention(torch.ones(tiny_model.cfg.d_model))}
    with steer(tiny_model, iv):
        assert _n_hooks(tiny_model) == before + 1
    assert _n_hooks(tiny_model) == before
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_model, iv):
        raise RuntimeError("boom")
    assert _n_hooks(tiny_model) == before
    twin = hf_twin(tiny_model)
    handle = SteeringHandle(iv, 1.0, StepState())
    attach_hf(twin, handle)
    handle.remove()
    assert _n_hooks(twin) == 0


def test_position_policy_masks_only_selected_positions(tiny_model):
    tokens = _tokens(tiny_model)
    start = 9
    v = torch.ones(tiny_model.cfg.d_model)
    seen = {}

    def grab(act, hook):
        seen["act"] = act.clone()

    clean = tiny_model.run_with_hooks(tokens, fwd_hooks=[(TINY_HOOK, grab)]) is not None and seen["act"]
    with steer(tiny_model, {TINY_HOOK: DenseIntervention(v)}, 2.0, positions="generated",
               starts=torch.tensor([start])):
        tiny_model.run_with_hooks(tokens, fwd_hooks=[(TINY_HOOK, grab)])
    diff = seen["act"] - clean
    assert torch.all(diff[0, :start] == 0)
    torch.testing.assert_close(diff[0, start:], torch.full_like(diff[0, start:], 2.0))


def test_policy_without_starts_is_refused(tiny_model):
    with pytest.raises(InterpSteerError, match="needs starts"):
        attach(tiny_model, {TINY_HOOK: DenseIntervention(torch.ones(tiny_model.cfg.d_model))},
               positions="after_instruction")
    with pytest.raises(InterpSteerError, match="unknown position policy"):
        attach(tiny_model, {TINY_HOOK: DenseIntervention(torch.ones(tiny_model.cfg.d_model))}, positions="some")


def test_unknown_hook_point_is_refused(tiny_model):
    with pytest.raises(InterpSteerError, match="does not exist"):
        attach(tiny_model, {"blocks.9.hook_resid_post": DenseIntervention(torch.ones(tiny_model.cfg.d_model))})


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre",
                                  "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out"])
def test_hf_twin_hooks_match_transformer_lens_hooks(tiny_model, hook):
    tokens = _tokens(tiny_model)
    torch.manual_seed(4)
    iv = {hook: DenseIntervention(torch.randn(tiny_model.cfg.d_model))}
    with steer(tiny_model, iv, 1.5):
        tl_logp = torch.log_softmax(tiny_model(tokens), -1)
    twin = hf_twin(tiny_model)
    handle = SteeringHandle(iv, 1.5, StepState())
    try:
        attach_hf(twin, handle)
        with torch.no_grad():
            hf_logp = torch.log_softmax(twin(tokens).logits, -1)
    finally:
        handle.remove()
    torch.testing.assert_close(hf_logp, tl_logp, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(tl_logp, torch.log_softmax(tiny_model(tokens), -1), atol=1e-3)


def test_strength_is_differentiable_through_the_latent(tiny_model, tiny_sae):
    v = torch.zeros(tiny_sae.cfg.d_sae, requires_grad=True)
    tokens = _tokens(tiny_model)
    with steer(tiny_model, {TINY_HOOK: SAEIntervention(tiny_sae, v)}, 1.0):
        loss = tiny_model(tokens).logsumexp(-1).mean()
    loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_directional_ablation_and_ablation_then_addition(tiny_model, tmp_path):
    """``ablate`` projects the direction out of h (λ = 1: nothing of it left), ``ablate_add`` sets the component
    along v̂ to λ·‖v‖; both survive save/load and go through the one intervention layer."""
    import dataclasses

    from interp_steer.errors import InterpSteerError
    from interp_steer.models import model_fingerprint
    from interp_steer.steering import SteeringVector, steer

    hook = "blocks.1.hook_resid_pre"
    torch.manual_seed(0)
    v = torch.randn(tiny_model.cfg.d_model)
    unit = v / v.norm()
    add = SteeringVector("caa", "dense", {hook: {"vector": v}}, model_fingerprint(tiny_model).to_dict())
    tokens = torch.tensor([[1, 2, 3, 4]])
    seen: dict[str, torch.Tensor] = {}
    for operator, lam, expected in (("ablate", 1.0, 0.0), ("ablate_add", 2.0, 2.0 * float(v.norm()))):
        vec = SteeringVector.load(dataclasses.replace(add, operator=operator).save(tmp_path / operator))
        assert vec.operator == operator
        with steer(tiny_model, vec, lam):
            # a forward hook registered after the steering hook sees the steered value
            handle = tiny_model.hook_dict[hook].register_forward_hook(lambda m, i, o: seen.__setitem__("h", o.detach()))
            tiny_model(tokens)
            handle.remove()
        component = seen["h"] @ unit
        assert torch.allclose(component, torch.full_like(component, expected), atol=1e-4), operator
    with pytest.raises(InterpSteerError, match="unknown operator"):
        dataclasses.replace(add, operator="multiply")
    with pytest.raises(InterpSteerError, match="llama.cpp control vectors can only add"):
        dataclasses.replace(add, operator="ablate").to_gguf(tmp_path / "a.gguf", hint="llama")
