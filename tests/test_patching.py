"""Activation patching (localized → non-localized culture prompts): alignment, invariants, agreement with a
manual hook-based patch and with transformer_lens.patching, aggregation, files and the CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.interpret import patching as P


@pytest.fixture(scope="module")
def pairs(tokenizer):
    out, skipped = P.build_pairs(tokenizer, countries=["egypt", "morocco"], n_items=3)
    return out, skipped


def _equal_cue(pairs_):
    return next(p for p in pairs_ if p.shift == 0)


def _manual_metric(model, pair, component, layer, sites, head=None, score="option", reduce="mean"):
    """Full-sequence reference: run the clean prompt (+ each option) with a cache, write its activations into
    a plain run_with_hooks on the corrupted prompt (+ each option), score the options."""
    name = P.hook_name(component, layer)
    _, cache = model.run_with_cache(P.pair_tokens(pair, "clean", score), names_filter=[name])
    clean = cache[name]

    def hook(act, hook):
        act = act.clone()
        for q, c in sites:
            if head is None:
                act[:, q] = clean[:, c]
            else:
                act[:, q, head] = clean[:, c, head]
        return act

    logits = model.run_with_hooks(P.pair_tokens(pair, "corrupt", score), fwd_hooks=[(name, hook)])
    return float(P.pair_metric(logits, pair, len(pair.corrupt_ids), score, reduce)[0])


# --------------------------------------------------------------------------------------------- alignment


def test_pairs_align_cue_and_suffix(tokenizer, pairs):
    pairs_, skipped = pairs
    assert {p.country for p in pairs_} == {"egypt", "morocco"}
    assert sum(p.country == "egypt" for p in pairs_) == 3  # n_items per country
    for pair in pairs_:
        p = pair.prefix_len
        assert pair.clean_ids[:p] == pair.corrupt_ids[:p]
        cue = tokenizer.decode(pair.clean_ids[slice(*pair.cue_clean)])
        assert pair.country.capitalize() in cue, cue  # the differing span is where the country is named
        assert pair.country.lower() not in tokenizer.decode(pair.corrupt_ids).lower()
        for q, c in pair.aligned(pair.cue_corrupt[1]):  # after the cue: the same token, shifted
            assert pair.corrupt_ids[q] == pair.clean_ids[c] and c - q == pair.shift
        assert pair.clean_position(len(pair.corrupt_ids) - 1) == len(pair.clean_ids) - 1  # answer position
        assert pair.answer_token not in pair.other_tokens and pair.other_tokens
    # egypt-03 is reworded ("what are ... called" vs "what do we call ..."): skipped with the reason
    reasons = {s["item_id"]: s["reason"] for s in skipped}
    assert "egypt-03" in reasons and "reworded" in reasons["egypt-03"]


def test_cue_alignment_is_right_aligned_with_surplus(tokenizer):
    from interp_steer.data import load_culture

    items = load_culture(countries="egypt")
    # egypt-02: "In Egypt, ..." vs "In my family, ...": clean cue " Egypt" (1 token), corrupt " my family" (2)
    both = [i for i in items if i.metadata["stem_id"] == "egypt-02"]
    pair = P.make_pair(tokenizer, both[0], both[1])
    (cs, ce), (xs, xe) = pair.cue_clean, pair.cue_corrupt
    assert (ce - cs, xe - xs) == (1, 2)
    assert pair.clean_position(xe - 1) == ce - 1  # last ↔ last
    assert pair.clean_position(xs) is None  # surplus corrupted cue token: no counterpart
    slots = P.position_slots(pair, tokenizer)
    assert slots[0].label == "cue" and slots[0].positions == [(xe - 1, ce - 1)]
    with pytest.raises(InterpSteerError, match="reworded"):
        P.make_pair(tokenizer, both[0], both[1], max_cue_tokens=1)
    with pytest.raises(InterpSteerError, match="same options"):
        P.make_pair(tokenizer, both[0], items[-1])


def test_slot_layout(tokenizer, pairs):
    pair = pairs[0][0]
    slots = P.position_slots(pair, tokenizer, "slots")
    labels = [s.label for s in slots]
    assert labels[:4] == ["cue", "after cue", "question", "question end"]
    assert labels[-1] == "option tokens" and slots[-1].positions == pair.option_sites()
    assert labels[-2].endswith("[answer]") and slots[-2].positions == [(len(pair.corrupt_ids) - 1,
                                                                        len(pair.clean_ids) - 1)]
    covered = sorted(q for s in slots for q, _ in s.positions)
    assert covered == [q for q, _ in P.all_sites(pair)]  # every position that can differ, exactly once
    assert tokenizer.decode([pair.corrupt_ids[slots[3].positions[0][0]]]).strip() == "?"
    first = P.position_slots(pair, tokenizer, "slots", score="first_token")
    assert [s.label for s in first] == labels[:-1]  # no option tokens to patch when only the first is scored
    tokens = P.position_slots(pair, tokenizer, "tokens", score="first_token")
    assert len(tokens) == len(pair.corrupt_ids) - pair.prefix_len
    with pytest.raises(InterpSteerError, match="layout"):
        P.position_slots(pair, tokenizer, "words")


# --------------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("score", P.SCORES)
def test_last_layer_full_residual_recovers_everything(tiny_model, pairs, score):
    pair = pairs[0][0]
    last = tiny_model.cfg.n_layers - 1
    everything = [P.Slot("all", P.all_sites(pair, score)), P.Slot("nothing", [])]
    res = P.patch_pair(tiny_model, pair, "resid_post", layers=[last], layout=everything, score=score)
    assert abs(res.gap) > 1e-3  # the two prompts do differ at the answer
    assert res.recovery[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert math.isnan(float(res.recovery[0, 1]))  # an empty slot is not a patch
    slots = P.patch_pair(tiny_model, pair, "resid_post", layers=[last], score=score)
    if score == "first_token":  # only the answer position reaches the first-token logits at the last layer
        assert slots.recovery[0, -1] == pytest.approx(1.0, abs=1e-4)
        assert slots.recovery[0, :-1].abs().max() < 1e-4
    else:  # at the last layer only the answer position and the option tokens reach the option scores
        assert float(slots.recovery[0, -2:].sum()) == pytest.approx(1.0, abs=1e-4)
        assert slots.recovery[0, :-2].nan_to_num().abs().max() < 1e-4


@pytest.mark.parametrize("score", P.SCORES)
def test_first_layer_full_patch_reproduces_clean_run(tiny_model, pairs, score):
    pair = _equal_cue(pairs[0])  # same length: patching every position at layer 0 *is* the clean run
    res = P.patch_pair(tiny_model, pair, "resid_pre", layers=[0], score=score,
                       layout=[P.Slot("all", P.all_sites(pair, score))])
    assert res.recovery[0, 0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("component", "score"), [("resid_pre", "option"), ("attn_out", "first_token"),
                                                  ("z", "option")])
def test_self_patch_recovers_nothing(tiny_model, pairs, component, score):
    pair = pairs[0][0]
    res = P.patch_pair(tiny_model, pair, component, source="corrupt", score=score)
    finite = res.recovery[~torch.isnan(res.recovery)]
    assert finite.numel() > 0 and finite.abs().max() < 1e-4
    real = P.patch_pair(tiny_model, pair, component, score=score)
    assert real.recovery.nan_to_num().abs().max() > 1e-2  # the real patch does move the metric


@pytest.mark.parametrize("component", sorted(P.COMPONENTS))
def test_shapes(tiny_model, pairs, component):
    pair = pairs[0][0]
    n_slots = len(P.position_slots(pair, tiny_model.tokenizer))
    res = P.patch_pair(tiny_model, pair, component, layers=[1, 0], batch_size=5)  # chunks of 1 job × 4 options
    extra = (tiny_model.cfg.n_heads,) if component == "z" else ()
    assert tuple(res.patched.shape) == (2, n_slots, *extra)
    assert res.layers == [1, 0]
    assert not torch.isnan(res.patched[:, 0]).any()  # the cue slot is never empty


# --------------------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(("component", "layer", "head", "score"), [
    ("resid_pre", 1, None, "option"), ("mlp_out", 0, None, "option"), ("resid_post", 0, None, "first_token"),
    ("z", 1, 2, "option"), ("attn_out", 1, None, "first_token"),
])
def test_matches_manual_hook_patch(tiny_model, pairs, component, layer, head, score):
    pair = pairs[0][1]
    slots = P.position_slots(pair, tiny_model.tokenizer, score=score)
    res = P.patch_pair(tiny_model, pair, component, layers=[layer], score=score, reduce="max")
    for si in (0, 2, len(slots) - 2, len(slots) - 1):  # cue, question block, answer position, last slot
        expected = _manual_metric(tiny_model, pair, component, layer, slots[si].positions, head, score, "max")
        got = res.patched[0, si] if head is None else res.patched[0, si, head]
        assert float(got) == pytest.approx(expected, abs=1e-4)
    assert res.m_corrupt == pytest.approx(_manual_metric(tiny_model, pair, component, layer, [], None, score,
                                                         "max"), abs=1e-4)


@pytest.mark.parametrize(("component", "score"), [("resid_pre", "option"), ("attn_out", "first_token"),
                                                  ("z", "first_token")])
def test_matches_transformer_lens_patching(tiny_model, pairs, component, score):
    pair = pairs[0][1]
    ref = P.transformer_lens_patching(tiny_model, pair, component, score=score)  # [layer, every pos(, head)]
    res = P.patch_pair(tiny_model, pair, component, layout="tokens", score=score)
    mine = res.patched if score == "first_token" else res.patched[:, :-1]  # prompt tokens (not "option tokens")
    theirs = ref[:, pair.prefix_len : len(pair.corrupt_ids)]
    ok = ~torch.isnan(mine)
    assert ok.any()
    torch.testing.assert_close(mine[ok], theirs[ok].float(), atol=1e-4, rtol=1e-4)
    # prefix positions patch identical activations: transformer_lens measures m_corrupt there
    assert (ref[:, : pair.prefix_len] - res.m_corrupt).abs().max() < 1e-4


def test_option_scores_equal_score_mcq_loglik(tiny_model, pairs):
    from interp_steer.data import load_culture
    from interp_steer.evaluation.mcq import score_mcq

    pair = pairs[0][0]
    items = [i for i in load_culture(countries=pair.country) if i.metadata["stem_id"] == pair.item_id]
    mcq = {i.localization_status: s.scores for i, s in zip(items, score_mcq(tiny_model, items), strict=True)}
    for which, form in (("clean", "localized"), ("corrupt", "nolocalized")):
        expected = _margin(mcq[form], pair.answer)
        logits = tiny_model(P.pair_tokens(pair, which))
        prompt_len = len(pair.clean_ids if which == "clean" else pair.corrupt_ids)
        assert float(P.pair_metric(logits, pair, prompt_len)[0]) == pytest.approx(expected, abs=1e-4)
    m_clean, m_corrupt = P.pair_baseline(tiny_model, pair)  # the prefix-cached path gives the same numbers
    assert m_clean == pytest.approx(_margin(mcq["localized"], pair.answer), abs=1e-4)
    assert m_corrupt == pytest.approx(_margin(mcq["nolocalized"], pair.answer), abs=1e-4)


def _margin(scores, answer):
    sc = torch.tensor(scores)
    return float(sc[answer] - (sc.sum() - sc[answer]) / (len(sc) - 1))


def test_option_metric_reductions():
    logits = torch.tensor([[1.0, 3.0, 0.0, 2.0]])
    assert float(P.option_metric(logits, 1, [0, 2, 3])[0]) == pytest.approx(2.0)
    assert float(P.option_metric(logits, 1, [0, 2, 3], "max")[0]) == pytest.approx(1.0)
    # a log-prob difference equals the logit difference
    logp = torch.log_softmax(logits, -1)
    assert float(P.option_metric(logp, 1, [0, 3])[0]) == pytest.approx(float(P.option_metric(logits, 1, [0, 3])[0]))


# --------------------------------------------------------------------------------------------- aggregate + files


def test_aggregate_screens_and_excludes_small_gaps(tiny_model, pairs):
    pairs_ = pairs[0][:3]
    layers = [0, 1]
    res = P.activation_patching(tiny_model, pairs_, "resid_pre", layers=layers, min_gap=-math.inf)
    assert bool(res.included.all()) and [i["row"] for i in res.items] == [0, 1, 2]
    assert tuple(res.recovery.shape) == (2, len(res.labels))
    per_item = torch.stack([P.patch_pair(tiny_model, p, "resid_pre", layers=layers).recovery for p in pairs_])
    torch.testing.assert_close(res.recovery, per_item.nanmean(0), equal_nan=True, atol=1e-5, rtol=1e-5)
    gaps = res.m_clean - res.m_corrupt
    cut = float(gaps.median())
    keep = gaps >= cut
    assert 0 < int(keep.sum()) < 3
    res2 = P.activation_patching(tiny_model, pairs_, "resid_pre", layers=layers, min_gap=cut)
    assert [i["included"] for i in res2.items] == keep.tolist()
    assert res2.recovery_per_item.shape[0] == int(keep.sum())  # excluded items are not patched by default
    torch.testing.assert_close(res2.recovery, per_item[keep].nanmean(0), equal_nan=True, atol=1e-5, rtol=1e-5)
    excluded = [i for i in res2.items if not i["included"]]
    assert excluded and all("min_gap" in i["reason"] and i["row"] is None for i in excluded)
    assert res2.summary()["n_items_used"] == int(keep.sum())
    res3 = P.activation_patching(tiny_model, pairs_, "resid_pre", layers=layers, min_gap=cut, patch_excluded=True)
    assert res3.recovery_per_item.shape[0] == 3 and res3.included.tolist() == keep.tolist()
    torch.testing.assert_close(res3.recovery, res2.recovery, equal_nan=True)  # excluded rows never averaged
    # n_per_country: screening of a country stops once enough items are in
    res4 = P.activation_patching(tiny_model, pairs[0], "resid_pre", layers=[1], min_gap=-math.inf,
                                 n_per_country=1)
    assert sorted(i["country"] for i in res4.items) == ["egypt", "morocco"]
    with pytest.raises(InterpSteerError, match="min_gap"):
        P.activation_patching(tiny_model, pairs_, "resid_pre", layers=[1], min_gap=math.inf)


def test_save_load_and_self_contained_heatmap(tiny_model, pairs, tmp_path):
    res = P.activation_patching(tiny_model, pairs[0][:2], "z", layers=[0, 1], min_gap=-math.inf,
                                skipped=pairs[1], score="first_token")
    paths = res.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"patching.safetensors", "patching.json", "heatmap.html"}
    tensors, meta = P.load_patching(tmp_path)
    torch.testing.assert_close(tensors["recovery"], res.recovery, equal_nan=True)
    assert tensors["recovery"].shape == (2, len(res.labels), tiny_model.cfg.n_heads)
    assert meta["hooks"] == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    assert meta["positions"] == res.labels and meta["axes"]["recovery"] == ["layer", "position", "head"]
    assert [i["item_id"] for i in meta["items"]] == [p.item_id for p in pairs[0][:2]]
    assert meta["skipped"] and "alignment" in meta and "first answer token" in meta["metric"]
    html = paths["html"].read_text(encoding="utf-8")
    assert len(html) > 1_000_000 and "Plotly" in html  # plotly.js is inlined
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
    assert json.loads((tmp_path / "patching.json").read_text())["component"] == "z"


def test_tokens_layout_aggregates_end_aligned(tiny_model, pairs):
    res = P.activation_patching(tiny_model, pairs[0][:3], "resid_post", layers=[1], layout="tokens",
                                min_gap=-math.inf, score="first_token")
    assert res.labels[-1].startswith("'\\n'") and res.labels[-1].endswith("(-1)")
    assert res.recovery[0, -1] == pytest.approx(1.0, abs=1e-4)  # last layer, answer position


# --------------------------------------------------------------------------------------------- CLI


def _parser():
    from interp_steer.cli import _Parser
    from interp_steer.commands import patch

    parser = _Parser(prog="interp-steer")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    patch.add_parser(sub)
    return parser


def test_parse_layers():
    from interp_steer.commands.patch import parse_layers

    assert parse_layers(None, 30) is None and parse_layers("all", 30) is None
    assert parse_layers("0-2,10, 5", 30) == [0, 1, 2, 5, 10]
    for bad in ("30", "3-1", "x", "-1", ""):
        with pytest.raises(InterpSteerError):
            parse_layers(bad, 30)


def test_cli_patch_end_to_end(tiny_model, monkeypatch, tmp_path):
    import interp_steer.cli as cli

    monkeypatch.setattr(cli, "_model", lambda args: tiny_model)
    out = tmp_path / "patch"
    args = _parser().parse_args(["patch", "--country", "egypt", "--country", "uk", "--n-items", "1",
                                 "--component", "mlp_out", "--layers", "0-1", "--min-gap", "-100",
                                 "--output-dir", str(out)])
    assert args.func(args) == 0
    tensors, meta = P.load_patching(out)
    assert tensors["recovery"].shape == (2, len(meta["positions"]))
    assert sorted({i["country"] for i in meta["items"]}) == ["egypt", "uk"] and len(meta["items"]) == 2
    assert meta["config"]["component"] == "mlp_out" and meta["config"]["score"] == "option"
    assert (out / "heatmap.html").is_file()


def test_cli_bad_input_is_one_error(tiny_model, monkeypatch, tmp_path):
    import interp_steer.cli as cli

    monkeypatch.setattr(cli, "_model", lambda args: tiny_model)
    for argv, match in ((["--country", "atlantis"], "atlantis"), (["--layers", "7"], "layers"),
                        (["--n-items", "0"], "n-items"), (["--min-gap", "1e9", "--country", "uk",
                                                            "--n-items", "1"], "min_gap")):
        args = _parser().parse_args(["patch", *argv, "--output-dir", str(tmp_path / "x")])
        with pytest.raises(InterpSteerError, match=match):
            args.func(args)
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        _parser().parse_args(["patch", "--component", "embed", "--output-dir", str(tmp_path)])


# --------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_model_invariants_and_manual_agreement(model):
    pairs_, _ = P.build_pairs(model.tokenizer, countries="morocco", n_items=2)
    pair = _equal_cue(pairs_)
    last = model.cfg.n_layers - 1
    full = [P.Slot("all", P.all_sites(pair))]
    assert P.patch_pair(model, pair, "resid_post", layers=[last], layout=full).recovery[0, 0] == \
        pytest.approx(1.0, abs=1e-3)
    assert P.patch_pair(model, pair, "resid_pre", layers=[0], layout=full).recovery[0, 0] == \
        pytest.approx(1.0, abs=1e-3)
    res = P.patch_pair(model, pair, "resid_pre", layers=[8])
    for si in (0, len(res.slots) - 1):
        expected = _manual_metric(model, pair, "resid_pre", 8, res.slots[si].positions)
        assert float(res.patched[0, si]) == pytest.approx(expected, abs=2e-3)
    ctrl = P.patch_pair(model, pair, "attn_out", layers=[0, last], source="corrupt")
    assert ctrl.recovery.nan_to_num().abs().max() < 1e-3


@pytest.mark.slow
def test_real_model_cue_moves_from_cue_tokens_to_answer_tokens(model):
    """resid_pre on the embedded model: the country information sits on the cue tokens up to the middle
    layers and on the answer (option) tokens at the end; the chat-template tokens carry none of it."""
    res = P.run_patching(model, countries=["egypt", "india"], n_items=1, component="resid_pre",
                         layers=[0, 12, 29], min_gap=0.5)
    assert int(res.included.sum()) == 2 and all(i["cue_corrupt"] == "Around here" for i in res.items
                                                if i["included"])
    cue, options = res.labels.index("cue"), res.labels.index("option tokens")
    tail = slice(res.labels.index("question end") + 1, res.labels.index(res.labels[-2]))
    assert float(res.recovery[0, cue]) == pytest.approx(1.0, abs=1e-3)  # same-length cue: the clean run
    assert float(res.recovery[1, cue]) > 0.6
    assert float(res.recovery[2, options]) > 0.6 and abs(float(res.recovery[2, cue])) < 0.1
    assert res.recovery[:, tail].abs().max() < 0.05
