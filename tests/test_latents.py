"""Latent inspection (interp_steer.interpret.latents) against brute-force computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.interpret.features import latent_logit_lens
from interp_steer.interpret.latents import (
    corpus_texts,
    hook_activations,
    inspect_latents,
    logit_lens,
    stop_layer,
    tokenize_texts,
)
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference
from interp_steer.steering import SteeringVector, steer

from .conftest import TINY_HOOK, make_sae, shared_data

TEXTS = [
    "The cat sat on the mat and looked at the bird outside.",
    "Paris is the capital of France.",
    "Hello!",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "In 1969, astronauts landed on the Moon for the first time in history.",
    "def add(a, b):\n    return a + b",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Breakfast in Morocco often means mint tea, msemen and olives.",
    "ok",
    "Why is the sky blue? Because of Rayleigh scattering of sunlight in the atmosphere.",
]


@pytest.fixture(scope="module", params=["topk", "standard"])
def sae(request, tiny_model):
    return make_sae(request.param, tiny_model.cfg.d_model, 96, TINY_HOOK, seed=3)


def _brute_force(model, sae, texts, latents, max_length=128):
    """Per text: the latent codes of every non-special token, each text run alone (no padding)."""
    special = set(model.tokenizer.all_special_ids)
    out = []
    for ids in tokenize_texts(model.tokenizer, texts, max_length):
        tokens = torch.tensor([ids])
        _, cache = model.run_with_cache(tokens, names_filter=[TINY_HOOK])
        codes = sae.encode(cache[TINY_HOOK])[0][:, latents]
        valid = torch.tensor([t not in special for t in ids])
        out.append((ids, codes * valid[:, None], valid))
    return out


def test_snippets_density_and_histogram_match_brute_force(tiny_model, sae):
    latents = list(range(0, 96, 7))
    insp = inspect_latents(tiny_model, sae, TEXTS, latents, n_snippets=4, batch_size=3, context_before=3,
                           context_after=2, bins=10)
    per_text = _brute_force(tiny_model, sae, TEXTS, latents)
    n_tokens = sum(int(v.sum()) for _, _, v in per_text)
    assert insp.n_tokens == n_tokens and insp.n_texts == len(TEXTS)
    fired_somewhere = 0
    for j, latent in enumerate(latents):
        rep = insp.report(latent)
        all_acts = torch.cat([codes[valid, j] for _, codes, valid in per_text])
        n_fire = int((all_acts > 0).sum())
        assert rep.n_firing == n_fire
        assert rep.density == pytest.approx(n_fire / n_tokens)
        assert rep.mean_activation == pytest.approx(float(all_acts.sum()) / n_tokens, rel=1e-4, abs=1e-6)
        assert rep.max_activation == pytest.approx(float(all_acts.max()), rel=1e-4, abs=1e-6)
        assert sum(rep.hist_counts) == n_fire
        if n_fire:
            fired_somewhere += 1
            assert rep.log10_density == pytest.approx(math.log10(n_fire / n_tokens))
            assert rep.hist_edges[0] == 0 and rep.hist_edges[-1] == pytest.approx(float(all_acts.max()), rel=1e-5)
        else:
            assert rep.log10_density is None and rep.hist_edges == []
        # top snippets = the texts with the largest per-text maxima, best first
        maxima = sorted((float(codes[:, j].max()) for _, codes, _ in per_text), reverse=True)
        expected = [m for m in maxima[:4] if m > 0]
        assert [s.max_value for s in rep.snippets] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        for snip in rep.snippets:
            ids, codes, _ = per_text[snip.text_index]
            column = codes[:, j]
            assert float(column[snip.position]) == pytest.approx(snip.max_value, rel=1e-4, abs=1e-6)
            assert float(column.max()) == pytest.approx(snip.max_value, rel=1e-4, abs=1e-6)
            lo = max(0, snip.position - 3)
            hi = min(len(ids), snip.position + 3)
            assert snip.token_ids == ids[lo:hi]  # the window around the max, cut at the text's ends
            assert snip.values == pytest.approx(column[lo:hi].tolist(), rel=1e-4, abs=1e-6)
            assert snip.max_index == snip.position - lo
            assert snip.values[snip.max_index] == pytest.approx(max(snip.values))
            assert snip.tokens == [tiny_model.tokenizer.decode([t]) for t in snip.token_ids]
    assert fired_somewhere >= 3  # the test is not vacuous


def test_batching_and_padding_do_not_change_results(tiny_model, sae):
    latents = [1, 5, 9, 40]
    a = inspect_latents(tiny_model, sae, TEXTS, latents, batch_size=1).to_dict()
    b = inspect_latents(tiny_model, sae, TEXTS, latents, batch_size=16).to_dict()
    for ra, rb in zip(a["reports"], b["reports"], strict=True):
        assert ra["n_firing"] == rb["n_firing"] and ra["hist_counts"] == rb["hist_counts"]
        assert [s["max_value"] for s in ra["snippets"]] == pytest.approx([s["max_value"] for s in rb["snippets"]],
                                                                          rel=1e-5, abs=1e-6)


def test_repeated_windows_are_shown_once(tiny_model, sae):
    base = inspect_latents(tiny_model, sae, TEXTS, list(range(96)), n_snippets=3, logit_lens_k=0)
    rep = max(base.reports, key=lambda r: r.max_activation)
    best = TEXTS[rep.snippets[0].text_index]
    texts = [best, best, *TEXTS, best]  # the best text four times
    plain = inspect_latents(tiny_model, sae, texts, [rep.index], n_snippets=3, distinct=False).reports[0]
    assert [s.tokens for s in plain.snippets[:3]] == [rep.snippets[0].tokens] * 3
    once = inspect_latents(tiny_model, sae, texts, [rep.index], n_snippets=3).reports[0]
    assert [s.tokens for s in once.snippets] == [s.tokens for s in rep.snippets]
    assert [s.max_value for s in once.snippets] == pytest.approx([s.max_value for s in rep.snippets])


def test_logit_lens_is_decoder_times_unembedding(tiny_model, sae):
    latents = [3, 17, 50]
    lenses = logit_lens(tiny_model, sae, latents, k=6)
    for latent, lens in zip(latents, lenses, strict=True):
        logits = sae.W_dec[latent] @ tiny_model.W_U
        order = logits.argsort(descending=True)
        assert lens.promoted_ids == order[:6].tolist()
        assert lens.suppressed_ids == order.flip(0)[:6].tolist()
        assert lens.promoted_values == pytest.approx(logits[order[:6]].tolist(), rel=1e-5, abs=1e-6)
        assert lens.suppressed_values == pytest.approx(logits[order.flip(0)[:6]].tolist(), rel=1e-5, abs=1e-6)
        assert lens.promoted_values == sorted(lens.promoted_values, reverse=True)
        old = latent_logit_lens(tiny_model, sae, latent, 6)  # the features.py helper agrees
        assert old["promoted"] == lens.promoted and old["suppressed"] == lens.suppressed


def test_logit_lens_applies_an_unfolded_final_norm_scale(tiny_model, sae):
    scale = torch.linspace(0.1, 3.0, tiny_model.cfg.d_model)
    tiny_model.ln_final.w = torch.nn.Parameter(scale)  # as if fold_ln were off
    try:
        lens = logit_lens(tiny_model, sae, [4], k=5)[0]
    finally:
        del tiny_model.ln_final.w
    logits = (sae.W_dec[4] * scale) @ tiny_model.W_U
    assert lens.promoted_ids == logits.topk(5).indices.tolist()


def _sae_vector(model, sae, latent, value):
    v = torch.zeros(sae.cfg.d_sae)
    v[latent] = value
    return SteeringVector("test", "sae", {TINY_HOOK: {"latent": v}}, model_fingerprint(model).to_dict(),
                          sae=sae_reference(sae).to_dict())


def test_steering_effect(tiny_model, sae):
    enc = sae.W_enc[:, 11].clone()
    dense = SteeringVector("test", "dense", {TINY_HOOK: {"vector": enc / enc.norm()}},
                           model_fingerprint(tiny_model).to_dict())
    insp = inspect_latents(tiny_model, sae, TEXTS, [11, 12], vector=dense, strengths=[0.0, 2.0, 8.0],
                           n_snippets=0)
    rep = insp.report(11)
    assert [e.strength for e in rep.steering] == [0.0, 2.0, 8.0]
    assert rep.steering[0].change == 0.0  # λ = 0 leaves every activation exactly unchanged
    assert rep.steering[0].mean_activation_unsteered == rep.mean_activation
    assert 0 < rep.steering[1].change < rep.steering[2].change  # pushing along the encoder row raises it
    # brute force: the mean over tokens of the latent with the vector added by hand
    special = set(tiny_model.tokenizer.all_special_ids)
    total = count = 0.0
    for ids in tokenize_texts(tiny_model.tokenizer, TEXTS, 128):
        with steer(tiny_model, dense, 8.0):
            h = hook_activations(tiny_model, torch.tensor([ids]), TINY_HOOK)
        codes = sae.encode(h)[0, :, 11]
        valid = torch.tensor([t not in special for t in ids])
        total += float(codes[valid].sum())
        count += int(valid.sum())
    assert rep.steering[2].mean_activation == pytest.approx(total / count, rel=1e-4)

    # an SAE-latent vector on a latent whose decoder row points along its encoder row, at the SAE's own hook:
    # λ = 0 changes nothing, λ > 0 raises the latent
    latent = int((sae.W_dec * sae.W_enc.T).sum(-1).argmax())
    assert float(sae.W_dec[latent] @ sae.W_enc[:, latent]) > 0
    vec = _sae_vector(tiny_model, sae, latent, 5.0)
    rep_s = inspect_latents(tiny_model, sae, TEXTS, [latent], vector=vec, strengths=[0.0, 2.0],
                            n_snippets=0).reports[0]
    assert rep_s.steering[0].change == 0.0
    assert rep_s.steering[1].change > 0


def test_stop_layer_and_early_stop_activations(tiny_model):
    assert stop_layer("blocks.1.hook_resid_pre", 2) == 2
    assert stop_layer("blocks.0.hook_resid_post", 2) == 1
    assert stop_layer("blocks.1.hook_resid_post", 2) == 2
    assert stop_layer("ln_final.hook_normalized", 2) is None
    tokens = torch.tensor([tokenize_texts(tiny_model.tokenizer, ["a short text"])[0]])
    _, cache = tiny_model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"])
    assert torch.equal(hook_activations(tiny_model, tokens, "blocks.0.hook_resid_post"),
                       cache["blocks.0.hook_resid_post"])


def test_bad_inputs(tiny_model, sae, tmp_path):
    with pytest.raises(InterpSteerError, match="latent indices"):
        inspect_latents(tiny_model, sae, TEXTS, [96])
    with pytest.raises(InterpSteerError, match="at least one text"):
        inspect_latents(tiny_model, sae, [], [1])
    with pytest.raises(InterpSteerError, match="steering vector"):
        inspect_latents(tiny_model, sae, TEXTS, [1], strengths=[1.0])
    with pytest.raises(InterpSteerError, match="not found"):
        corpus_texts(tmp_path / "missing.txt")
    f = tmp_path / "t.txt"
    f.write_text("first text\n\n second text \n")
    assert corpus_texts(f) == ["first text", "second text"]


def test_heldout_corpus_texts(tokenizer):
    shared_data("corpus", "mixed-text.jsonl.gz")
    from interp_steer.data.corpus import load_corpus, shared_corpus_path

    texts = corpus_texts(None, n=20, tokenizer=tokenizer, max_chars=None)
    train = set(load_corpus(shared_corpus_path(), split="train", tokenizer=tokenizer))
    assert len(texts) == 20 and not any(t in train for t in texts)  # held out from SAE training


def test_latent_auroc_ranks_by_max_activation(tiny_model, sae):
    from interp_steer.interpret.features import _auroc, latent_auroc

    pos = torch.tensor([[3.0, 0.0], [2.0, 1.0]])
    neg = torch.tensor([[1.0, 1.0], [0.0, 5.0], [2.0, 0.0]])
    # column 0: pairs (3>1,3>0,3>2, 2>1,2>0, 2=2 → ½) = 5.5 / 6; column 1: (0<1,0<5,0=0 ½, 1=1 ½,1<5,1>0) = 2/6
    torch.testing.assert_close(_auroc(pos, neg), torch.tensor([5.5 / 6, 2.0 / 6]))
    texts_a = ["The cat sat on the mat.", "A cat and a dog."]
    texts_b = ["Numbers: 1 2 3 4 5.", "Stocks fell sharply on Monday."]
    latents = list(range(8))
    a = latent_auroc(tiny_model, sae, latents, texts_a, texts_b)
    b = latent_auroc(tiny_model, sae, latents, texts_b, texts_a)
    assert all(0.0 <= x <= 1.0 for x in a)
    assert a == pytest.approx([1.0 - x for x in b])  # swapping the sides mirrors the AUROC
    with pytest.raises(InterpSteerError, match="positive and negative"):
        latent_auroc(tiny_model, sae, latents, texts_a, [])


def test_country_selectivity_share_counts_and_basis(tiny_model, sae):
    """The selective share is the decoded weight of the vector's latents at or above the threshold, computed
    here independently from an AUROC of every latent; the basis figures count the whole SAE."""
    from interp_steer.interpret.features import country_selectivity, culture_texts, latent_auroc

    texts = culture_texts()
    positive = texts["egypt"]
    negative = [t for c, ts in texts.items() if c != "egypt" for t in ts]
    d_sae = int(sae.cfg.d_sae)
    every = latent_auroc(tiny_model, sae, list(range(d_sae)), positive, negative)
    best = max(range(d_sae), key=every.__getitem__)
    worst = min(range(d_sae), key=every.__getitem__)
    assert every[best] > every[worst]
    v = torch.zeros(d_sae)
    v[best], v[worst] = 2.0, -1.0
    vector = SteeringVector("test", "sae", {TINY_HOOK: {"latent": v}}, model_fingerprint(tiny_model).to_dict(),
                            sae=sae_reference(sae).to_dict())
    sel = country_selectivity(tiny_model, sae, vector, "egypt", k=2, threshold=every[best])
    norms = sae.W_dec.float().norm(dim=-1)
    w_best, w_worst = 2.0 * float(norms[best]), float(norms[worst])
    assert sel["selective_share"] == pytest.approx(w_best / (w_best + w_worst), rel=1e-5)
    assert sel["n_scored"] == 2 and sel["n_selective"] == 1
    by_weight = [best, worst] if w_best >= w_worst else [worst, best]
    assert [lat["index"] for lat in sel["latents"]] == by_weight
    assert {lat["index"]: lat["auroc"] for lat in sel["latents"]} == pytest.approx({best: every[best],
                                                                                   worst: every[worst]})
    assert sel["n_basis"] == d_sae
    assert sel["n_basis_selective"] == sum(a >= every[best] for a in every) >= 1
    assert sel["max_basis_auroc"] == pytest.approx(every[best])
    tops = [b["auroc"] for b in sel["basis_top"]]
    assert len(tops) == 2 and tops == sorted(tops, reverse=True) and tops[0] == pytest.approx(every[best])
    # a threshold above every latent: nothing selective, in the vector or in the basis
    none = country_selectivity(tiny_model, sae, vector, "egypt", k=2, threshold=1.01)
    assert none["selective_share"] == 0.0 and none["n_selective"] == 0 and none["n_basis_selective"] == 0
