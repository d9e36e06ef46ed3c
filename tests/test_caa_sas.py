"""CAA and SAS on a tiny model: hand-computed mean differences, exact sparsity, consistent decoding."""

from __future__ import annotations

import pytest
import torch

from interp_steer.chat import chat_tokens
from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.methods.activations import select_positions
from interp_steer.methods.caa import compute_caa, merge_layers
from interp_steer.methods.sas import compute_sas, sparsify

from .conftest import TINY_HOOK, make_sae

PAIRS = [
    PreferenceExample("Question one?\n(A) yes\n(B) no", "(A)", "(B)"),
    PreferenceExample("Another question, longer than the first one?\n(A) maybe\n(B) never", "(B)", "(A)"),
    PreferenceExample("Third?\n(A) red\n(B) blue", "(A)", "(B)"),
]


def _hand_caa(model, hook, policy):
    diffs = []
    for ex in PAIRS:
        acts = []
        for answer in (ex.chosen, ex.rejected):
            ct = chat_tokens(model.tokenizer, ex.prompt, answer)
            _, cache = model.run_with_cache(torch.tensor([ct.ids]), names_filter=[hook])
            pos = select_positions(model.tokenizer, ct, policy)
            acts.append(cache[hook][0, pos].mean(0))
        diffs.append(acts[0] - acts[1])
    return torch.stack(diffs).mean(0)


@pytest.mark.parametrize("policy", ["response_mean", "last_prompt", "last_response", "answer_letter"])
def test_caa_equals_hand_computed_mean_difference(tiny_model, policy):
    vecs = compute_caa(tiny_model, PAIRS, layers=[0, 1], token_policy=policy, batch_size=2)
    assert set(vecs) == {0, 1}
    for layer, vec in vecs.items():
        hook = f"blocks.{layer}.hook_resid_post"
        torch.testing.assert_close(vec.vector(hook), _hand_caa(tiny_model, hook, policy), atol=1e-5, rtol=1e-5)
        assert vec.method == "caa" and vec.kind == "dense"


def test_answer_letter_policy_finds_the_letter(tokenizer):
    ct = chat_tokens(tokenizer, "Pick one\n(A) x\n(B) y", "(B)")
    (pos,) = select_positions(tokenizer, ct, "answer_letter")
    assert tokenizer.decode([ct.ids[pos]]).strip("( )") == "B"


def test_caa_normalisation_and_merge(tiny_model):
    vecs = compute_caa(tiny_model, PAIRS, layers=[0, 1], normalize_to=3.0)
    assert all(abs(v.norms()[h] - 3.0) < 1e-4 for v in vecs.values() for h in v.hook_points)
    merged = merge_layers(vecs, [0, 1])
    assert merged.hook_points == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with pytest.raises(InterpSteerError, match="does not exist"):
        compute_caa(tiny_model, PAIRS, layers=[7])
    with pytest.raises(InterpSteerError, match="unknown token policy"):
        compute_caa(tiny_model, PAIRS, layers=[0], token_policy="middle")


@pytest.mark.parametrize("k", [1, 5, 17])
def test_sas_keeps_exactly_top_k(tiny_model, k):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    vec = compute_sas(tiny_model, sae, PAIRS, top_k=k)
    code = vec.vector()
    assert int((code != 0).sum()) == k
    dense = compute_sas(tiny_model, sae, PAIRS, top_k=96).vector()
    kept = dense.abs().topk(k).indices
    torch.testing.assert_close(code[kept], dense[kept])


def test_sas_threshold_and_decoding_consistency(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    vec = compute_sas(tiny_model, sae, PAIRS, top_k=None, threshold=0.01)
    code = vec.vector()
    assert torch.all((code == 0) | (code.abs() >= 0.01))
    # the stored decoded direction is the code through the decoder ...
    torch.testing.assert_close(vec.tensors[TINY_HOOK]["decoded"], code @ sae.W_dec, atol=1e-5, rtol=1e-5)
    # ... and is exactly the SAE-path shift Dec(ReLU(s + λv)) − Dec(s) when the steered latents stay active
    s = torch.rand(4, 96) + 10.0 * (code != 0)
    delta = sae.decode(torch.relu(s + 0.1 * code)) - sae.decode(s)
    torch.testing.assert_close(delta, (0.1 * vec.tensors[TINY_HOOK]["decoded"]).expand(4, -1), atol=1e-5, rtol=1e-4)


def test_sparsify_needs_a_rule():
    with pytest.raises(InterpSteerError, match="top_k or threshold"):
        sparsify(torch.ones(3))


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_sas_equals_an_independent_contrast_of_response_codes(tiny_model, architecture):
    """mean over pairs of [mean over chosen response tokens of Enc(h)] − the same for rejected, computed here by
    hand (one run per sequence); a swapped contrast, another token policy or a code of the mean all fail it."""
    sae = make_sae(architecture, tiny_model.cfg.d_model, 96, TINY_HOOK)
    pairs = [PreferenceExample("Name a colour.", "Deep ocean blue, like the sea at night.", "Grey."),
             PreferenceExample("Pick a drink.", "Mint tea.", "A tall glass of cold orange juice, please."),
             PreferenceExample("Say something.", "Hello there, friend!", "No.")]
    per_side = {0: [], 1: []}
    for ex in pairs:
        for side, answer in enumerate((ex.chosen, ex.rejected)):
            ct = chat_tokens(tiny_model.tokenizer, ex.prompt, answer)
            _, cache = tiny_model.run_with_cache(torch.tensor([ct.ids]), names_filter=[TINY_HOOK])
            codes = sae.encode(cache[TINY_HOOK][0, ct.response_start :])
            per_side[side].append(codes.mean(0))
    expected = torch.stack(per_side[0]).mean(0) - torch.stack(per_side[1]).mean(0)
    got = compute_sas(tiny_model, sae, pairs, top_k=96).vector()
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-4)
    assert (expected > 0).any() and (expected < 0).any()  # a swapped contrast would differ in sign


def test_last_response_policy_reads_the_last_answer_token_not_the_end_of_turn(tokenizer):
    ct = chat_tokens(tokenizer, "Which drink?", "Mint tea, always")
    (pos,) = select_positions(tokenizer, ct, "last_response")
    assert ct.response_start <= pos < len(ct.ids)
    assert tokenizer.decode([ct.ids[pos]]).strip() == "always"
    assert all(t in tokenizer.all_special_ids or not tokenizer.decode([t]).strip() for t in ct.ids[pos + 1:])
