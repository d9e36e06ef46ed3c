"""λ sweeps and the method comparison: strength choice, table, offline HTML, CLI errors, end to end."""

from __future__ import annotations

import json
import re

import pytest
import torch

from interp_steer import cli
from interp_steer.data.loaders import load_culture
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.compare import (
    CompareConfig,
    choose_strength,
    compare_methods,
    format_table,
    strength_sweep,
    summary_table,
    write_report_html,
)
from interp_steer.steering.vector import SteeringVector

from .conftest import TINY_HOOK, make_sae


def _row(strength, acc, rca):
    return {"strength": strength, "overall": {"accuracy": acc, "rca": rca}}


def test_choose_strength_prefers_rca_then_accuracy_then_smaller_magnitude():
    assert choose_strength([_row(1, 0.5, 0.2), _row(2, 0.4, 0.3), _row(4, 0.9, 0.1)]) == 2
    assert choose_strength([_row(1, 0.5, 0.3), _row(2, 0.6, 0.3)]) == 2
    assert choose_strength([_row(-2, 0.5, 0.3), _row(1, 0.5, 0.3), _row(4, 0.5, 0.3)]) == 1
    assert choose_strength([_row(1, 0.5, None), _row(2, 0.6, None)]) == 2  # no RCA when one regime is empty


def _dense(model, scale):
    torch.manual_seed(1)
    from interp_steer.models import model_fingerprint

    return SteeringVector("test", "dense", {"blocks.1.hook_resid_post": {"vector": scale * torch.randn(model.cfg.d_model)}},
                          model_fingerprint(model).to_dict())


def test_sweep_at_zero_is_unsteered_and_a_strong_vector_changes_scores(tiny_model):
    items = load_culture(countries="egypt", split="test")[:6]
    base = strength_sweep(tiny_model, None, items, [0.0])[0]
    vec = _dense(tiny_model, 50.0)
    rows = strength_sweep(tiny_model, vec, items, [0.0, 1.0])
    assert rows[0]["overall"] == base["overall"]
    assert rows[0]["per_country"] == base["per_country"]
    assert rows[0]["score_shift"] == 0.0 and base["score_shift"] == 0.0
    from interp_steer.evaluation.mcq import score_mcq

    plain = [s.scores for s in score_mcq(tiny_model, items)]
    steered = [s.scores for s in score_mcq(tiny_model, items, vec, 1.0)]
    shifts = [abs(a - b) for p, q in zip(plain, steered, strict=True) for a, b in zip(p, q, strict=True)]
    assert rows[1]["score_shift"] == pytest.approx(sum(shifts) / len(shifts), rel=1e-5)
    assert rows[1]["score_shift"] > 1e-3
    # the direction: answer option minus the mean of the others, recomputed here item by item
    answers = [it.answer for it in items]

    def margin(table):
        return sum(sc[a] - (sum(sc) - sc[a]) / (len(sc) - 1) for sc, a in zip(table, answers, strict=True)) / len(items)

    assert rows[0]["margin_shift"] == 0.0 and rows[0]["answer_margin"] == pytest.approx(margin(plain), rel=1e-5)
    assert rows[1]["answer_margin"] == pytest.approx(margin(steered), rel=1e-5)
    assert rows[1]["margin_shift"] == pytest.approx(margin(steered) - margin(plain), rel=1e-4, abs=1e-6)


def test_compare_methods_on_tiny_model_writes_a_complete_table(tiny_model, tmp_path):
    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    cfg = CompareConfig(countries=["egypt"], strengths=[1.0, 2.0], steps=2, lineas_steps=2, batch_size=2,
                        preservation=False, max_train_pairs=6, max_items=6)
    res = compare_methods(tiny_model, sae, cfg)
    entry = res["countries"]["egypt"]
    assert set(entry["methods"]) == {"caa", "sas", "bipo", "yapo", "lineas"}
    for method, row in entry["methods"].items():
        assert row["strength"] in (1.0, 2.0)
        assert row["strength"] == choose_strength(row["train_sweep"]), method  # chosen on train, not test
        assert [r["strength"] for r in row["sweep"]] == [1.0, 2.0]
    assert entry["n_test_items"] == 6 and entry["n_train_items"] == 6
    assert entry["methods"]["yapo"]["vector_kind"] == "sae" and entry["methods"]["lineas"]["vector_kind"] == "affine"
    table = summary_table(res)
    assert [r["method"] for r in table] == ["none", "prompt", "caa", "sas", "bipo", "yapo", "lineas"]
    base = entry["baseline"]["overall"]
    assert table[1]["acc_nonlocalized"] == base["acc_localized"]  # prompting = asking the localized question
    for r in table[2:]:  # the guard is on by default: each row says whether its λ keeps the bound
        assert r["within_bound"] is any(t["fluent"] for t in entry["methods"][r["method"]]["train_sweep"])
    md = format_table(table)
    assert md.count("\n") == len(table) + 1 and "| egypt | none | 0 |" in md
    html = write_report_html(res, tmp_path / "compare.html").read_text()
    assert "Plotly.newPlot" in html and not re.search(r"<script[^>]+src=[\"']https?:", html)
    assert html.count("plotly.js v") <= 2  # plotly.js inlined once (its banner), not per figure
    json.dumps(res)  # the result is plain JSON


def test_compare_trains_bipo_and_yapo_with_the_small_preset_and_the_sparse_default(tiny_model):
    from interp_steer.evaluation.compare import build_vector
    from interp_steer.methods.preference import PRESETS, SPARSE_DEFAULT

    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    cfg = CompareConfig(countries=["egypt"], max_train_pairs=6, batch_size=2, steps=3)
    yapo = build_vector(tiny_model, sae, "yapo", "egypt", cfg)
    bipo = build_vector(tiny_model, sae, "bipo", "egypt", cfg)
    for vec in (yapo, bipo):
        assert vec.config["preset"] == "small" and vec.config["lr"] == PRESETS["small"]["lr"]
        assert vec.config["epochs"] == 2 and vec.config["max_steps"] == 3
        assert vec.config["eval_fraction"] == 0.15  # the kept vector is chosen on held-out training pairs
    assert yapo.config["final_top_k"] == SPARSE_DEFAULT["final_top_k"] and bipo.config["final_top_k"] is None
    exact = build_vector(tiny_model, sae, "yapo", "egypt",
                         CompareConfig(countries=["egypt"], max_train_pairs=6, batch_size=2, steps=1, yapo_sparse=False,
                                       lr={"yapo": 3e-3}))
    assert exact.config["final_top_k"] is None and exact.config["lr"] == 3e-3


def test_compare_computes_the_preservation_baseline_once(tiny_model, monkeypatch):
    from interp_steer.evaluation import preservation

    calls = []
    real = preservation.preservation_baseline
    monkeypatch.setattr(preservation, "default_texts", lambda n, seed=0: ["Tea is served hot.", "Rain fell."][:n])
    monkeypatch.setattr(preservation, "preservation_baseline", lambda *a, **k: calls.append(1) or real(*a, **k))
    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    cfg = CompareConfig(countries=["egypt"], methods=["caa", "sas"], strengths=[1.0], preservation_texts=2,
                        preservation_items=5, max_train_pairs=4, max_items=4, max_ppl_ratio=None)
    res = compare_methods(tiny_model, sae, cfg)
    assert len(calls) == 1
    for row in res["countries"]["egypt"]["methods"].values():
        pres = row["preservation"]
        assert pres["n_texts"] == 2 and pres["n_items"] == 5
        assert pres["perplexity_steered"] != pres["perplexity_unsteered"]


def test_choose_strength_skips_strengths_the_fluency_guard_rejects():
    rows = [dict(_row(1, 0.2, 0.1), fluent=True), dict(_row(4, 0.9, 0.8), fluent=False)]
    assert choose_strength(rows) == 1
    assert choose_strength([dict(r, fluent=False) for r in rows]) == 1  # nothing passes: the smallest |λ|


def test_fluency_guard_marks_a_destructive_strength(tiny_model, monkeypatch):
    from interp_steer.evaluation import preservation

    docs = ["Tea is served hot after lunch.", "Rain fell on the old city.", "The market opens early.",
            "Bread is baked at home.", "A long road runs south."]
    monkeypatch.setattr(preservation, "default_texts", lambda n, seed=0, tokenizer=None: docs[seed:][:n])
    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    cfg = CompareConfig(countries=["egypt"], methods=["sas"], strengths=[1.0, 400.0], max_ppl_ratio=1.5,
                        guard_texts=2, preservation_texts=2, max_train_pairs=4, max_items=4)
    res = compare_methods(tiny_model, sae, cfg)
    guard = res["fluency_guard"]
    assert guard["n_texts"] == 2 and guard["max_perplexity"] == pytest.approx(1.5 * guard["perplexity_unsteered"])
    row = res["countries"]["egypt"]["methods"]["sas"]
    by_strength = {r["strength"]: r for r in row["train_sweep"]}
    assert by_strength[400.0]["fluent"] is False and by_strength[400.0]["guard_perplexity"] > guard["max_perplexity"]
    assert by_strength[1.0]["fluent"] is True and row["strength"] == 1.0
    with pytest.raises(InterpSteerError, match="max_ppl_ratio"):
        compare_methods(tiny_model, sae, CompareConfig(countries=["egypt"], max_ppl_ratio=0.9))


def test_load_knowledge_max_items_is_evenly_spaced():
    from interp_steer.evaluation.preservation import load_knowledge

    full = load_knowledge()
    some = load_knowledge(max_items=7)
    assert len(some) == 7 and some[0] == full[0]
    assert len({it.metadata["topic"] for it in some}) > 1
    with pytest.raises(InterpSteerError, match="max_items"):
        load_knowledge(max_items=0)


def _run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, *capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (("compare", "--country", "narnia"), "unknown country 'narnia'"),
    (("compare", "--methods", "magic"), "invalid choice"),
    (("evaluate", "--vector", "missing.safetensors"), "steering vector file not found"),
    (("evaluate",), "--vector"),
    (("compare", "--preservation-items", "0"), "--preservation-items must be at least 1, got 0"),
    (("compare", "--steps", "-3"), "--steps must be at least 1, got -3"),
    (("compare", "--max-ppl-ratio", "0.8"), "--max-ppl-ratio must be above 1"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.slow
def test_compare_command_end_to_end_on_the_embedded_model(monkeypatch, model, tmp_path, capsys):
    monkeypatch.setattr(cli, "_model", lambda args: model)
    out = tmp_path / "cmp"
    code, stdout, err = _run(capsys, "compare", "--country", "morocco", "--steps", "10", "--lineas-steps", "10",
                             "--strengths", "4", "--max-items", "8", "--max-train-pairs", "16", "--preservation-texts", "8",
                             "--preservation-items", "16", "--max-ppl-ratio", "1000", "--guard-texts", "4",
                             "--output-dir", str(out))
    assert code == 0, err
    res = json.loads((out / "compare.json").read_text())
    rows = res["table"]
    assert [r["method"] for r in rows] == ["none", "prompt", "caa", "sas", "bipo", "yapo", "lineas"]
    print("\n" + (out / "compare.md").read_text())
    entry = res["countries"]["morocco"]
    for method, row in entry["methods"].items():
        # every method's vector acts: at λ = 4 the option log-likelihoods move (mean |Δ| in nats per token)
        assert row["sweep"][-1]["score_shift"] > 0.01, (method, row["sweep"][-1]["score_shift"])
        pres = row["preservation"]
        assert pres["perplexity_steered"] > 0 and pres["perplexity_unsteered"] > 0
        assert pres["n_texts"] == 8 and pres["n_items"] == 16
        assert row["train_sweep"][0]["guard_perplexity"] > 0 and "fluent" in row["train_sweep"][0]
    assert res["fluency_guard"]["n_texts"] == 4
    assert (out / "compare.html").stat().st_size > 100_000 and "| morocco | yapo |" in stdout


class _Split(list):
    split = ""


@pytest.mark.parametrize("guard", [None, 1000.0])
def test_the_strength_is_chosen_on_the_training_questions_even_when_the_test_ones_disagree(tiny_model, monkeypatch,
                                                                                           guard):
    """Train rows favour λ = 1 and test rows λ = 2: a comparison that looked at the test split would pick 2."""
    from interp_steer.evaluation import compare as cmp

    real_items, real_sweep = cmp._items, cmp.strength_sweep

    def items(country, split, cfg):
        out = _Split(real_items(country, split, cfg))
        out.split = split
        return out

    def sweep(model, vector, its, strengths, **kw):
        rows = real_sweep(model, vector, its, strengths, **kw)
        favoured = {"train": 1.0, "test": 2.0}.get(getattr(its, "split", ""))
        for r in rows:
            if favoured is not None and vector is not None:
                r["overall"]["rca"] = 0.9 if r["strength"] == favoured else 0.1
        return rows

    monkeypatch.setattr(cmp, "_items", items)
    monkeypatch.setattr(cmp, "strength_sweep", sweep)
    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    cfg = CompareConfig(countries=["egypt"], methods=["caa", "bipo"], strengths=[1.0, 2.0], steps=1, batch_size=2,
                        preservation=False, max_train_pairs=4, max_items=4, max_ppl_ratio=guard, guard_texts=2)
    res = compare_methods(tiny_model, sae, cfg)
    for method, row in res["countries"]["egypt"]["methods"].items():
        assert row["strength"] == 1.0, (method, guard)
        assert row["at_strength"]["overall"]["rca"] == 0.1  # reported on test, where λ = 1 is the worse one


@pytest.mark.slow
def test_compare_reports_the_direction_and_size_of_caa_on_every_test_question(model):
    """`compare`'s CAA row for Morocco on the whole test split (62 questions) moves the answer margin towards
    Morocco's options by about as much as measured, far beyond random directions of the same norm.

    Measured 2026-12-04 (the 612-stem set, every training pair, layer 15, λ = 4): margin_shift +0.495 (λ = 2:
    +0.248); 5 random dense directions of the same norm (6.73): −0.097, +0.074, −0.084, +0.021, +0.110. (Egypt,
    the same way: +0.795 against random −0.211 … +0.091.)
    The training questions move by +0.535. Threshold +0.25 on both: half the measured shift and more than twice
    the largest random one, so a vector that only acts (a random or reversed contrast) fails. The 8-question
    end-to-end test above cannot tell the direction: there random directions span −0.8 … +0.5."""
    from interp_steer.evaluation.compare import compare_methods
    from interp_steer.saes import load_sae

    sae = load_sae(model=model)
    cfg = CompareConfig(countries=["morocco"], methods=["caa"], strengths=[4.0], preservation=False,
                        max_ppl_ratio=None)
    res = compare_methods(model, sae, cfg)
    entry = res["countries"]["morocco"]
    assert entry["n_test_items"] == 62
    row = entry["methods"]["caa"]
    assert row["strength"] == 4.0
    shift = row["at_strength"]["margin_shift"]
    print(f"\nCAA morocco λ = 4: test margin_shift {shift:+.3f}, train {row['train_sweep'][0]['margin_shift']:+.3f}")
    assert shift >= 0.25, shift
    assert row["at_strength"]["answer_margin"] == pytest.approx(entry["baseline"]["answer_margin"] + shift)
    # the vector was built on the training questions: it moves them the same way
    assert row["train_sweep"][0]["margin_shift"] > 0.25, row["train_sweep"][0]["margin_shift"]
