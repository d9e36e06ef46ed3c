"""MCQ option scoring: the shared-prefix (KV-cache) path equals the one-sequence-per-option reference, with and
without steering, under every position policy and with uneven option counts and batch sizes."""

from __future__ import annotations

import pytest
import torch

from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.mcq import score_mcq
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference
from interp_steer.steering.vector import SteeringVector

from .conftest import TINY_HOOK, make_sae

ITEMS = [
    MCQItem("Which drink is served after lunch in Rabat?", ["Mint tea", "Masala chai", "Coffee", "Mate"], 0),
    MCQItem("Which bread is common?", ["Naan", "Khobz", "A tortilla with beans and cheese"], 1),
    MCQItem("Pick one.", ["Yes", "No"], 1),
    MCQItem("What do families eat on Friday afternoon after the prayer, usually together at home?",
            ["Couscous with seven vegetables", "Fish and chips", "Pasta", "Sushi", "Tacos"], 0),
]


def _scores(model, items, **kw):
    return [s.scores for s in score_mcq(model, items, **kw)]


def _assert_same(a, b, tol=1e-4):
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, abs=tol)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_prefix_matches_the_reference_unsteered(tiny_model, batch_size):
    ref = _scores(tiny_model, ITEMS, shared_prefix=False, batch_size=batch_size)
    _assert_same(_scores(tiny_model, ITEMS, batch_size=batch_size), ref)


@pytest.mark.parametrize("positions", ["all", "after_instruction", "generated"])
def test_shared_prefix_matches_the_reference_with_dense_steering(tiny_model, positions):
    torch.manual_seed(3)
    vec = SteeringVector("test", "dense", {"blocks.1.hook_resid_pre": {"vector": 20 * torch.randn(tiny_model.cfg.d_model)}},
                         model_fingerprint(tiny_model).to_dict(), positions=positions)
    ref = _scores(tiny_model, ITEMS, vector=vec, strength=1.0, shared_prefix=False, batch_size=5)
    got = _scores(tiny_model, ITEMS, vector=vec, strength=1.0, batch_size=5)
    _assert_same(got, ref)
    plain = _scores(tiny_model, ITEMS)
    assert max(abs(a - b) for p, q in zip(plain, got, strict=True) for a, b in zip(p, q, strict=True)) > 1e-2


def test_position_policies_differ_so_the_offsets_matter(tiny_model):
    torch.manual_seed(3)
    direction = 20 * torch.randn(tiny_model.cfg.d_model)
    out = {}
    for positions in ("all", "after_instruction", "generated"):
        vec = SteeringVector("test", "dense", {"blocks.1.hook_resid_pre": {"vector": direction}},
                             model_fingerprint(tiny_model).to_dict(), positions=positions)
        out[positions] = _scores(tiny_model, ITEMS, vector=vec, strength=1.0)
    assert out["all"] != out["after_instruction"] and out["after_instruction"] != out["generated"]
    assert out["all"] != out["generated"]


def test_shared_prefix_matches_the_reference_with_an_sae_vector(tiny_model):
    sae = make_sae("topk", tiny_model.cfg.d_model, 96, TINY_HOOK)
    latent = torch.zeros(96)
    latent[[3, 17, 40]] = torch.tensor([4.0, -2.0, 3.0])
    vec = SteeringVector("yapo", "sae", {TINY_HOOK: {"latent": latent}}, model_fingerprint(tiny_model).to_dict(),
                         sae=sae_reference(sae).to_dict())
    ref = _scores(tiny_model, ITEMS, vector=vec, strength=2.0, sae=sae, shared_prefix=False)
    _assert_same(_scores(tiny_model, ITEMS, vector=vec, strength=2.0, sae=sae), ref)


def test_bad_batch_size_is_refused(tiny_model):
    with pytest.raises(InterpSteerError, match="batch_size"):
        score_mcq(tiny_model, ITEMS, batch_size=0)


@pytest.mark.slow
def test_shared_prefix_matches_the_reference_on_the_embedded_model(model):
    from interp_steer.data.loaders import load_culture

    items = load_culture(countries="morocco", split="test")[:6]
    ref = _scores(model, items, shared_prefix=False)
    _assert_same(_scores(model, items), ref, tol=1e-3)
