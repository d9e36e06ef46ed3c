"""Feature attribution for steering vectors (interp_steer.interpret.attribution, `interp-steer attribute`)."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer.data.schemas import MCQItem, PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.interpret.attribution import (
    agreement,
    attribute,
    compare_vectors,
    decoder_directions,
    dense_projection,
    explain,
    latent_shares,
    latent_usage,
    mcq_margin_metric,
    omp_decompose,
    preference_margin_metric,
    spearman,
    topk_overlap,
)
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference
from interp_steer.steering.vector import SteeringVector
from tests.conftest import TINY_HOOK, make_sae

POST0 = "blocks.0.hook_resid_post"  # read linearly by model(tokens, stop_at_layer=1)


def _sae_vector(model, sae, latent, method="yapo", positions="all"):
    return SteeringVector(method, "sae", {sae.cfg.metadata.hook_name: {"latent": latent}},
                          model_fingerprint(model).to_dict(), sae=sae_reference(sae).to_dict(), positions=positions)


def _dense_vector(model, hook, direction, method="caa"):
    return SteeringVector(method, "dense", {hook: {"vector": direction}}, model_fingerprint(model).to_dict())


def _sparse_latent(d_sae, n, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(d_sae)
    idx = torch.randperm(d_sae, generator=g)[:n]
    v[idx] = scale * torch.randn(n, generator=g)
    return v


def _linear_metric(tokenizer, d_model, seed=0):
    """M = Σ_pos w · resid_post(block 0): linear in the residual stream, hence in the steered SAE latents."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_model, generator=g)
    tokens = torch.tensor([tokenizer.encode("Hello there, how are you doing today? Fine, thanks.")] * 2)

    def metric(model):
        return (model(tokens, stop_at_layer=1) * w).sum()

    return metric


PAIRS = [
    PreferenceExample("What do we usually drink after lunch?", "Mint tea.", "Coffee with milk."),
    PreferenceExample("Name a breakfast dish.", "Msemen with honey", "Beans on toast"),
    PreferenceExample("Which city is the capital?", "Rabat", "Cairo, the big one"),
]
ITEMS = [
    MCQItem("Which drink is served after lunch?", ["Mint tea", "Masala chai", "Coffee", "Mate"], 0),
    MCQItem("Which bread is common?", ["Naan", "Khobz", "Tortilla"], 1),
]


# ------------------------------------------------------------------------------------------------- usage


def test_latent_shares_on_a_hand_made_vector():
    decoder = torch.ones(6, 4) * 0.5  # every row has norm 1 ...
    decoder[2] *= 2  # ... except row 2 (norm 2)
    v = torch.tensor([0.0, 3.0, -1.0, 0.0, 0.5, -4.5])  # contributions 0, 3, 2, 0, 0.5, 4.5 (total 10)
    shares = latent_shares(v, decoder)
    assert torch.allclose(shares.contribution, torch.tensor([0.0, 3.0, 2.0, 0.0, 0.5, 4.5]))
    assert shares.order[:4].tolist() == [5, 1, 2, 4]
    assert torch.allclose(shares.cumulative[:4], torch.tensor([0.45, 0.75, 0.95, 1.0]))
    assert shares.n_for(0.5) == 2 and shares.n_for(0.9) == 3 and shares.n_for(0.45) == 1 and shares.n_for(1.0) == 4
    assert latent_shares(torch.zeros(6), decoder).n_for(0.5) == 0


def test_latent_usage_reports_top_latents_and_rescaled_decoders(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    with torch.no_grad():
        sae.W_dec[7] *= 10.0  # latent 7 decodes 10× further per unit
    v = torch.zeros(96)
    v[[7, 3, 50]] = torch.tensor([1.0, -5.0, 2.0])
    norms = sae.W_dec.norm(dim=-1)
    usage = latent_usage(_sae_vector(tiny_model, sae, v), sae, tiny_model, k=5)
    contrib = {e["index"]: e["contribution"] for e in usage["latents"]}
    assert usage["n_nonzero"] == 3 and set(contrib) == {3, 7, 50}
    for i in (3, 7, 50):
        assert contrib[i] == pytest.approx(abs(float(v[i])) * float(norms[i]), rel=1e-5)
    assert [e["index"] for e in usage["latents"]] == sorted(contrib, key=lambda i: -contrib[i])
    assert usage["latents"][-1]["cumulative_share"] == pytest.approx(1.0)
    assert set(usage["latents"][0]["logit_lens"]) == {"promoted", "suppressed"}
    # an SAE that rescales activations by the decoder norm adds unit directions: shares follow |v| alone
    sae.cfg.rescale_acts_by_decoder_norm = True
    assert torch.allclose(decoder_directions(sae).norm(dim=-1), torch.ones(96), atol=1e-5)
    usage = latent_usage(_sae_vector(tiny_model, sae, v), sae, k=5)
    assert [e["index"] for e in usage["latents"]] == [3, 50, 7]


# ------------------------------------------------------------------------------------------- attribution


@pytest.mark.parametrize("operator", ["add", "symmetric"])
@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_grad_x_delta_is_exact_for_a_metric_linear_in_the_latents(tokenizer, tiny_model, arch, operator):
    import dataclasses

    sae = make_sae(arch, tiny_model.cfg.d_model, 96, POST0)
    vec = dataclasses.replace(_sae_vector(tiny_model, sae, _sparse_latent(96, 16)), operator=operator)
    metric = _linear_metric(tokenizer, tiny_model.cfg.d_model)
    res = attribute(tiny_model, vec, metric, sae=sae, strength=2.0, ablate_top=16)
    assert abs(res.total_effect) > 1.0  # the vector does move the metric
    assert float(res.estimates.sum()) == pytest.approx(res.total_effect, rel=1e-4, abs=1e-3)
    assert res.probe_value == pytest.approx(res.steered, rel=1e-5, abs=1e-4)
    assert len(res.ablated) >= 8
    for unit, effect in zip(res.ablated, res.ablation, strict=True):
        assert float(res.estimates[unit]) == pytest.approx(effect, rel=1e-3, abs=1e-3)
    agree = res.agreement()
    assert agree["spearman"] == pytest.approx(1.0) and agree["topk_overlap"] == 1.0 and agree["sign_agreement"] == 1.0
    # latents the vector cannot move (v_i = 0) get exactly zero
    assert (res.estimates[vec.vector() == 0] == 0).all()
    # integrated gradients along s → s̃ give the same exact answer for a linear metric
    ig = attribute(tiny_model, vec, metric, sae=sae, strength=2.0, ablate_top=0, steps=3)
    assert torch.allclose(ig.estimates, res.estimates, rtol=1e-4, atol=1e-4)


def test_dense_attribution_is_exact_for_a_linear_metric(tokenizer, tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, POST0)
    g = torch.Generator().manual_seed(3)
    direction = 2.0 * sae.W_dec[5] - 1.5 * sae.W_dec[40] + 0.3 * torch.randn(tiny_model.cfg.d_model, generator=g)
    vec = _dense_vector(tiny_model, POST0, direction)
    metric = _linear_metric(tokenizer, tiny_model.cfg.d_model, seed=1)
    res = attribute(tiny_model, vec, metric, sae=sae, strength=1.5, ablate_top=6, atoms=8)
    assert res.units == "atom" and res.estimates.numel() == len(res.atom_latents) + 1  # atoms + residual
    assert {5, 40} <= set(res.atom_latents[:3])
    assert float(res.estimates.sum()) == pytest.approx(res.total_effect, rel=1e-4, abs=1e-3)
    for unit, effect in zip(res.ablated, res.ablation, strict=True):
        assert float(res.estimates[unit]) == pytest.approx(effect, rel=1e-3, abs=1e-3)


def _logp_margin_reference(model, pairs, vector=None, sae=None, strength=1.0):
    """Independent implementation: full forward (steered through interp_steer.steer) + response log-probs."""
    from interp_steer.methods.preference import _batch_tokens, _response_logp_from_logits, prepare_pairs
    from interp_steer.steering import steer

    data = prepare_pairs(model, pairs)
    tokens, mask, starts = _batch_tokens(model, data, list(range(len(data.ids))))
    with torch.no_grad():
        if vector is None:
            logits = model(tokens)
        else:
            with steer(model, vector, strength, sae=sae):
                logits = model(tokens)
    logp = _response_logp_from_logits(logits, tokens, mask, starts)
    return float((logp[0::2] - logp[1::2]).mean())


@pytest.mark.parametrize("hook", [TINY_HOOK, POST0, "blocks.0.hook_mlp_out"])
def test_sequence_metric_engine_matches_the_plain_path(tiny_model, hook):
    """Batched engine (prefix computed once, response-only logits) = steer() + a plain callable, and the metric
    value matches an independent preference-margin implementation."""
    sae = make_sae("topk", tiny_model.cfg.d_model, 96, hook)
    vec = _sae_vector(tiny_model, sae, _sparse_latent(96, 12, seed=2, scale=2.0))
    metric = preference_margin_metric(tiny_model, PAIRS, batch_size=2)  # several batches
    fast = attribute(tiny_model, vec, metric, sae=sae, strength=1.0, ablate_top=4)
    plain = attribute(tiny_model, vec, lambda m: metric(m), sae=sae, strength=1.0, ablate_top=4)
    assert fast.unsteered == pytest.approx(_logp_margin_reference(tiny_model, PAIRS), abs=1e-4)
    assert fast.steered == pytest.approx(_logp_margin_reference(tiny_model, PAIRS, vec, sae), abs=1e-4)
    assert abs(fast.total_effect) > 1e-3
    assert fast.unsteered == pytest.approx(plain.unsteered, abs=1e-4)
    assert fast.steered == pytest.approx(plain.steered, abs=1e-4)
    assert torch.allclose(fast.estimates, plain.estimates, atol=1e-4, rtol=1e-3)
    assert fast.ablated == plain.ablated
    assert fast.ablation == pytest.approx(plain.ablation, abs=1e-4)


def test_mcq_margin_metric_matches_score_mcq(tiny_model):
    from interp_steer.evaluation.mcq import score_mcq

    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    vec = _sae_vector(tiny_model, sae, _sparse_latent(96, 10, seed=4, scale=3.0))

    def margin(scores):
        return sum(s.scores[s.answer] - (sum(s.scores) - s.scores[s.answer]) / (len(s.scores) - 1)
                   for s in scores) / len(scores)

    metric = mcq_margin_metric(tiny_model, ITEMS, batch_size=3)
    res = attribute(tiny_model, vec, metric, sae=sae, strength=1.0, ablate_top=3)
    assert res.unsteered == pytest.approx(margin(score_mcq(tiny_model, ITEMS)), abs=1e-4)
    assert res.steered == pytest.approx(margin(score_mcq(tiny_model, ITEMS, vec, 1.0, sae=sae)), abs=1e-4)


def test_integrated_gradients_are_complete_on_a_nonlinear_metric_with_a_position_policy(tiny_model):
    """Σ IG estimates → M(steered) − M(unsteered); only steered positions count (after_instruction policy)."""
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    vec = _sae_vector(tiny_model, sae, _sparse_latent(96, 12, seed=5, scale=2.0), positions="after_instruction")
    metric = preference_margin_metric(tiny_model, PAIRS, batch_size=4)
    res = attribute(tiny_model, vec, metric, sae=sae, strength=1.0, ablate_top=0, steps=16)
    everywhere = attribute(tiny_model, vec, metric, sae=sae, strength=1.0, positions="all", ablate_top=0)
    assert res.positions == "after_instruction"
    assert abs(res.steered - everywhere.steered) > 1e-4  # the policy matters
    assert float(res.estimates.sum()) == pytest.approx(res.total_effect, rel=0.02, abs=1e-4)
    with pytest.raises(InterpSteerError, match="SequenceMetric"):
        attribute(tiny_model, vec, lambda m: metric(m), sae=sae)


def test_agreement_helpers():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert topk_overlap([5, -4, 1, 0], [-6, 1, 3, 0], 2) == 0.5
    assert agreement([1.0, -2.0, 3.0], [1.1, -1.9, 2.5])["sign_agreement"] == 1.0


# ------------------------------------------------------------------------------------------ dense / compare


def test_dense_projection_recovers_planted_decoder_directions(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    w = sae.W_dec.detach()
    g = torch.Generator().manual_seed(0)
    single = 3.0 * w[17] + 0.01 * torch.randn(w.shape[1], generator=g)
    proj = dense_projection(single, sae, k=5)
    assert proj["cosine"][0]["index"] == 17 and proj["cosine"][0]["cosine"] > 0.99
    atom = proj["decomposition"]["atoms"][0]
    assert atom["index"] == 17 and atom["latent_activation"] == pytest.approx(3.0, rel=0.02)
    mixed = 3.0 * w[17] - 2.0 * w[42]
    comp = omp_decompose(mixed, decoder_directions(sae), k=4)
    assert comp.indices[:2] == [17, 42] and comp.explained[1] == pytest.approx(1.0, abs=1e-6)
    coef = dict(zip(comp.indices, (comp.coefficients / w[comp.indices].norm(dim=-1)).tolist(), strict=True))
    assert coef[17] == pytest.approx(3.0, rel=1e-4) and coef[42] == pytest.approx(-2.0, rel=1e-4)
    assert len(comp.indices) == 2  # stops once explained
    nonneg = omp_decompose(mixed, decoder_directions(sae), k=6, nonnegative=True)
    assert 17 in nonneg.indices and 42 not in nonneg.indices and (nonneg.coefficients >= 0).all()
    # the vector form and the dense path of explain()
    vec = _dense_vector(tiny_model, TINY_HOOK, single)
    report = explain(tiny_model, vec, sae, k=5)
    assert report["projection"]["cosine"][0]["index"] == 17 and "logit_lens" in report["projection"]["cosine"][0]
    with pytest.raises(InterpSteerError, match="SAE reads"):
        dense_projection(_dense_vector(tiny_model, POST0, single), sae)


def test_compare_matrices_are_symmetric_with_unit_diagonal(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    a = torch.zeros(96)
    a[[1, 2, 3, 4]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    b = torch.zeros(96)
    b[[3, 4, 5, 6]] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    c = _sparse_latent(96, 8, seed=9)
    vecs = {"a": _sae_vector(tiny_model, sae, a), "b": _sae_vector(tiny_model, sae, b),
            "c": _sae_vector(tiny_model, sae, c), "a2": _sae_vector(tiny_model, sae, 2 * a)}
    res = compare_vectors(vecs, sae, k=4)
    for key in ("jaccard", "cosine", "latent_cosine"):
        m = torch.tensor(res[key])
        assert torch.allclose(m, m.T) and torch.allclose(m.diagonal(), torch.ones(4)), key
        assert (m <= 1 + 1e-9).all()
    names = res["names"]
    jac = res["jaccard"]
    assert jac[names.index("a")][names.index("b")] == pytest.approx(2 / 6)
    assert jac[names.index("a")][names.index("a2")] == 1.0
    assert res["latent_cosine"][0][names.index("a2")] == pytest.approx(1.0)
    assert res["shared"]["a|b"] == [3, 4]
    # mixed kinds: no latent cosine, decoded cosine still defined
    mixed = compare_vectors({"a": vecs["a"], "d": _dense_vector(tiny_model, TINY_HOOK, a @ sae.W_dec)}, sae, k=4)
    assert mixed["latent_cosine"] is None and mixed["cosine"][0][1] == pytest.approx(1.0, abs=1e-5)
    assert mixed["jaccard"][0][1] == mixed["jaccard"][1][0]


# ----------------------------------------------------------------------------------------------------- CLI


def _parser():
    from interp_steer.cli import _Parser
    from interp_steer.commands.attribute import add_parser

    p = _Parser(prog="interp-steer")
    add_parser(p.add_subparsers(dest="command"))
    return p


def test_cli_attribute_and_compare(tmp_path, tiny_model, monkeypatch):
    import interp_steer.cli as cli
    from interp_steer.interpret.attribution import SequenceMetric

    monkeypatch.setattr(cli, "_model", lambda args: tiny_model)
    sae = make_sae("standard", tiny_model.cfg.d_model, 96, TINY_HOOK)
    sae.save_model(str(tmp_path / "sae"))
    paths = []
    for seed in (1, 2, 3):
        vec = _sae_vector(tiny_model, sae, _sparse_latent(96, 10, seed=seed, scale=2.0))
        paths.append(str(vec.save(tmp_path / f"v{seed}")))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in PAIRS))
    out = tmp_path / "attr"
    args = _parser().parse_args(["attribute", "--vector", paths[0], "--sae", str(tmp_path / "sae"), "--data",
                                 str(data), "--k", "5", "--ablate-top", "4", "--output-dir", str(out)])
    assert args.func(args) == 0
    report = json.loads((out / "attribution.json").read_text())
    assert report["usage"]["n_nonzero"] == 10 and len(report["usage"]["latents"]) == 5
    attr = report["attribution"]
    assert attr["metric"] == "preference_margin" and attr["agreement"]["n"] == 4
    html = (out / "attribution.html").read_text()
    assert len(html) > 1_000_000 and '<script src="http' not in html  # plotly.js inlined, no CDN
    assert not list(out.glob(".*tmp*"))
    cmp_out = tmp_path / "cmp"
    args = _parser().parse_args(["attribute", "--compare", *paths, "--sae", str(tmp_path / "sae"), "--k", "5",
                                 "--output-dir", str(cmp_out)])
    assert args.func(args) == 0
    res = json.loads((cmp_out / "compare.json").read_text())
    assert res["names"] == ["v1", "v2", "v3"] and len(res["jaccard"]) == 3
    assert (cmp_out / "compare.html").is_file()
    # bad input: one clear error
    for argv, match in ((["attribute", "--compare", paths[0], "--output-dir", str(cmp_out)], "at least two"),
                        (["attribute", "--output-dir", str(out)], "needs --vector"),
                        (["attribute", "--vector", paths[0], "--sae", str(tmp_path / "sae"), "--data",
                          str(data), "--metric", "mcq", "--output-dir", str(out)], "needs culture data")):
        args = _parser().parse_args(argv)
        with pytest.raises(InterpSteerError, match=match):
            args.func(args)
    # culture:<country> builds the MCQ margin on that country's items
    from interp_steer.commands.attribute import metric_from_spec

    metric = metric_from_spec(tiny_model, "culture:morocco", limit=3)
    assert isinstance(metric, SequenceMetric) and metric.name == "mcq_margin" and metric.n_items == 3
    with pytest.raises(InterpSteerError):
        metric_from_spec(tiny_model, "culture:atlantis")


# --------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_gradient_estimates_agree_with_ablation_on_the_real_model(model):
    """A SAS vector (Morocco, shipped SAE) on the culture MCQ margin: grad × Δ ranks the top latents as
    ablation does (measured: Spearman 1.00 at λ = 1 on 10 latents; asserted > 0.6)."""
    from interp_steer.data.loaders import culture_preferences, load_culture
    from interp_steer.methods.sas import compute_sas
    from interp_steer.saes import load_sae

    sae = load_sae(model=model)
    pairs = culture_preferences(countries="morocco", split="train")[:24]
    vec = compute_sas(model, sae, pairs, top_k=32)
    metric = mcq_margin_metric(model, load_culture(countries="morocco", split="test")[:8])
    res = attribute(model, vec, metric, sae=sae, strength=1.0, ablate_top=8)
    agree = res.agreement(k=4)
    assert abs(res.total_effect) > 1e-3
    assert agree["spearman"] is not None and agree["spearman"] > 0.6, agree
    assert agree["topk_overlap"] >= 0.5 and agree["sign_agreement"] >= 0.75, agree
    # grad × Δ at the steered point is not complete for a non-linear metric, but points the same way
    assert float(res.estimates.sum()) * res.total_effect > 0
    print(f"SAS morocco, λ=1: Δ margin {res.total_effect:+.4f}, Σ grad×Δ {float(res.estimates.sum()):+.4f}, {agree}")
