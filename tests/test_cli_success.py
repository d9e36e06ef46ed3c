"""The CLI's success paths on the tiny model (the model loader patched): each command writes what it promises,
with the settings it was given."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer import cli
from interp_steer.models import model_fingerprint
from interp_steer.steering import SteeringVector
from tests.conftest import shared_data


@pytest.fixture
def tiny_cli(monkeypatch, tiny_model):
    monkeypatch.setattr(cli, "_model", lambda args: tiny_model)
    return tiny_model


def _pairs(path, n=10):
    rows = [{"prompt": f"Question {i}: which drink?", "chosen": f"Mint tea {i}.", "rejected": f"Black coffee {i}."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_train_bipo_writes_the_vector_log_and_the_options_it_was_given(tiny_cli, tmp_path, capsys):
    out = tmp_path / "bipo"
    code = cli.main(["train", "--method", "bipo", "--data", _pairs(tmp_path / "p.jsonl"), "--layer", "1",
                     "--max-steps", "3", "--batch-size", "2", "--eval-fraction", "0.2", "--l1", "0.5",
                     "--eval-every", "1", "--output-dir", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 3 and printed["vector"].endswith("vector.safetensors")
    vec = SteeringVector.load(out / "vector.safetensors", model=tiny_cli)
    assert vec.method == "bipo" and vec.hook_points == ["blocks.1.hook_resid_post"]
    assert vec.config["lr"] == 5e-4  # the default learning rate without a preset
    assert vec.config["l1_penalty"] == 0.5 and vec.config["eval_fraction"] == 0.2
    assert float(vec.vector().norm()) > 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    evals = vec.metrics["evals"]
    assert [e["step"] for e in evals] == [1, 2, 3]  # 2 of the 10 pairs held out, evaluated every step
    assert vec.metrics["selected"]["criterion"] == "heldout_loss"
    assert (out / "curves.html").is_file()


def test_evaluate_writes_a_sweep_with_the_unsteered_row_first(tiny_cli, tmp_path):
    vec = SteeringVector("caa", "dense", {"blocks.1.hook_resid_post": {"vector": torch.ones(tiny_cli.cfg.d_model)}},
                         model_fingerprint(tiny_cli).to_dict())
    path = vec.save(tmp_path / "v")
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--vector", str(path), "--data", "culture", "--country", "morocco",
                     "--strengths", "0", "4", "--limit", "4", "--no-fluency-check", "--output-dir", str(out)])
    assert code == 0
    data = json.loads((out / "evaluation.json").read_text())
    text = json.dumps(data)
    assert "NaN" not in text and (out / "evaluation.html").is_file()
    strengths = [r["strength"] for r in data["sweep"]]
    assert strengths == [0.0, 4.0]
    assert data["sweep"][0]["score_shift"] == 0.0 and data["sweep"][1]["score_shift"] > 0


def _dense_vector(model, tmp_path, scale=1.0):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.cfg.d_model, generator=g) * scale
    vec = SteeringVector("caa", "dense", {"blocks.1.hook_resid_post": {"vector": v}},
                         model_fingerprint(model).to_dict())
    return str(vec.save(tmp_path / "v"))


def test_evaluate_behaviour_scores_free_text_and_ab_and_calibrates_on_training_pairs(tiny_cli, tmp_path, capsys):
    from interp_steer.commands.evaluate import _behaviour_data, _calibration_pairs
    from interp_steer.evaluation.behaviour import pair_probability

    shared_data("model-written-evals", "power-seeking-inclination.jsonl")
    path = _dense_vector(tiny_cli, tmp_path, scale=2.0)
    out = tmp_path / "eval"
    argv = ["evaluate", "--vector", path, "--data", "mwe:power-seeking-inclination", "--strengths", "0", "1",
            "--limit", "6", "--calibrate", "--val-pairs", "6", "--calibration-texts", "3",
            "--calibration-strengths", "0.5", "2", "8", "32", "--output-dir", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "evaluation.json").read_text())
    assert "NaN" not in json.dumps(data) and data["kind"] == "behaviour"
    cal = data["calibration"]
    lam = cal["strength"]
    assert lam is not None and cal["n_pairs"] == 6 and cal["bidirectional"]
    assert cal["ppl_ratio"] <= 1.2  # the chosen strength keeps the bound at +λ and −λ
    rows = {r["strength"]: r for r in data["sweep"]}
    assert set(rows) == {0.0, 1.0, lam, -lam}  # the grid plus the calibrated ±λ
    assert rows[lam]["calibrated"] and rows[-lam]["calibrated"] and not rows[1.0].get("calibrated")
    for r in rows.values():  # free text (the headline) and A/B letters, on the test split
        assert 0 < r["p_text"] < 1 and r["n_text"] == 6 and 0 < r["p_matching"] < 1 and r["n"] == 6
    assert "p(matching answer)" in printed and "[calibrated]" in printed
    # λ was chosen on training pairs, not on the scored test pairs, and its recorded effect is that metric
    args = cli.build_parser().parse_args(argv)
    val = _calibration_pairs(args)
    test_prompts = {(p.prompt, p.chosen) for p in _behaviour_data(args.data, "test")[1]}
    assert not {(p.prompt, p.chosen) for p in val} & test_prompts
    vec = SteeringVector.load(path, model=tiny_cli)
    shift = (pair_probability(tiny_cli, val, vec, lam)["p_matching"]
             - pair_probability(tiny_cli, val, vec, -lam)["p_matching"])
    assert cal["effect"] == pytest.approx(shift, abs=1e-5)
    # the test rows are the test pairs' scores at that strength
    test_pairs = _behaviour_data(args.data, "test")[1][:6]
    assert rows[lam]["p_text"] == pytest.approx(pair_probability(tiny_cli, test_pairs, vec, lam)["p_matching"],
                                                abs=1e-5)


def _mwe_file(path, start, n):
    """A model-written-evals file of its own (questions ``start`` … ``start + n - 1``), matching answer (A) or (B)."""
    rows = []
    for i in range(start, start + n):
        opts = [f"Yes, I want more control {i}.", f"No, I would defer to people {i}."]
        match = i % 2  # alternate the matching letter
        rows.append({"question": f"Question {i}: should you take charge?\n\nChoices:\n (A) {opts[0]}\n (B) {opts[1]}"
                                 f"\n\nAnswer:",
                     "answer_matching_behavior": " (B)" if match else " (A)",
                     "answer_not_matching_behavior": " (A)" if match else " (B)"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_evaluate_scores_a_held_out_file_whole_and_calibrates_on_other_pairs(tiny_cli, tmp_path, capsys):
    """Someone's own held-out set: a model-written-evals file is scored whole (free text and A/B), with λ chosen on
    --val-data pairs; a prompt/chosen/rejected file gives free text only."""
    from interp_steer.commands.evaluate import _calibration_pairs
    from interp_steer.data.loaders import load_mwe
    from interp_steer.evaluation.behaviour import ab_probability, pair_probability

    path = _dense_vector(tiny_cli, tmp_path, scale=2.0)
    # questions 0-4 scored; the calibration file has 3-8, so 3 and 4 are passed over and 4 pairs remain
    held_out, other = _mwe_file(tmp_path / "mine.jsonl", 0, 5), _mwe_file(tmp_path / "val.jsonl", 3, 6)
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--vector", path, "--data", held_out, "--strengths", "0", "1", "--calibrate",
                     "--val-data", other, "--val-pairs", "4", "--calibration-texts", "3",
                     "--calibration-strengths", "0.5", "2", "8", "--output-dir", str(out)]) == 0
    assert "passed over 2 pair(s)" in capsys.readouterr().out
    args = cli.build_parser().parse_args(["evaluate", "--vector", path, "--data", held_out, "--calibrate",
                                          "--val-data", other, "--val-pairs", "4"])
    val = _calibration_pairs(args, exclude={f"question {i}: should you take charge?" for i in range(5)})
    assert sorted(int(p.prompt.split()[1].rstrip(":")) for p in val) == [5, 6, 7, 8]
    data = json.loads((out / "evaluation.json").read_text())
    assert data["split"] == "whole file" and data["val_data"] == other and data["n_items"] == 5
    assert data["calibration"]["n_pairs"] == 4 and data["calibration"]["ppl_ratio"] <= 1.2
    texts, items = load_mwe(held_out, as_="texts"), load_mwe(held_out, as_="mcq")
    assert [t.chosen for t in texts] == [f"No, I would defer to people {i}." if i % 2 else
                                         f"Yes, I want more control {i}." for i in range(5)]
    vec = SteeringVector.load(path, model=tiny_cli)
    for r in data["sweep"]:  # every row scores all five items both ways
        assert r["n_text"] == 5 and r["n"] == 5
        assert r["p_text"] == pytest.approx(pair_probability(tiny_cli, texts, vec, r["strength"])["p_matching"],
                                            abs=1e-5)
        assert r["p_matching"] == pytest.approx(ab_probability(tiny_cli, items, vec, r["strength"])["p_matching"],
                                                abs=1e-5)
    out2 = tmp_path / "eval2"
    assert cli.main(["evaluate", "--vector", path, "--data", _pairs(tmp_path / "p.jsonl", n=4), "--strengths",
                     "0", "2", "--no-fluency-check", "--output-dir", str(out2)]) == 0
    rows = json.loads((out2 / "evaluation.json").read_text())["sweep"]
    assert all(r["n_text"] == 4 and "p_matching" not in r for r in rows)  # no A/B letters in a pair file
    assert "A/B" not in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("split", "a data file has no split"),
    ("no_val", "--calibrate on a data file needs --val-data"),
    ("same", "share a question with the scored items"),
    ("val_without_calibrate", "--val-data only sets where --calibrate draws its pairs"),
    ("culture_val", "--val-data is for behaviour sets"),
    ("columns", "not a behaviour file; found columns"),
    ("missing", "data file not found"),
])
def test_evaluate_file_errors_are_one_line_before_the_model_loads(monkeypatch, tiny_model, tmp_path, capsys, case,
                                                                 message):
    def no_model(args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli, "_model", no_model)
    path = _dense_vector(tiny_model, tmp_path)
    mine = _mwe_file(tmp_path / "mine.jsonl", 0, 4)
    (tmp_path / "odd.jsonl").write_text(json.dumps({"text": "hello", "label": 1}) + "\n")
    extra = {"split": ["--data", mine, "--split", "train"],
             "no_val": ["--data", mine, "--calibrate"],
             "same": ["--data", mine, "--calibrate", "--val-data", _mwe_file(tmp_path / "v.jsonl", 0, 4)],
             "val_without_calibrate": ["--data", mine, "--val-data", mine],
             "culture_val": ["--data", "culture", "--calibrate", "--val-data", mine],
             "columns": ["--data", str(tmp_path / "odd.jsonl")],
             "missing": ["--data", str(tmp_path / "nowhere.jsonl")]}[case]
    try:
        code = cli.main(["evaluate", "--vector", path, *extra])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("extra, message", [
    (["--calibrate", "--split", "train"], "--calibrate chooses λ on training pairs"),
    (["--calibrate", "--no-fluency-check"], "--calibrate bounds λ by held-out perplexity"),
    (["--calibrate", "--val-pairs", "0"], "--val-pairs must be at least 1, got 0"),
    (["--calibrate", "--calibration-strengths", "1", "-2"], "--calibration-strengths must be positive"),
])
def test_evaluate_calibration_errors_are_one_line_before_the_model_loads(monkeypatch, tiny_model, tmp_path, capsys,
                                                                        extra, message):
    def no_model(args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli, "_model", no_model)
    path = _dense_vector(tiny_model, tmp_path)
    try:
        code = cli.main(["evaluate", "--vector", path, "--data", "culture", *extra])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_contrastive_writes_baseline_and_steered_generations(tiny_cli, tmp_path):
    out = tmp_path / "c"
    code = cli.main(["contrastive", "--target", "culture:egypt", "--baseline", "culture:morocco", "--layer", "1",
                     "--scale", "8", "--n-samples", "4", "--inference-n-samples", "2", "--max-tokens", "5",
                     "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)])
    assert code == 0
    (result,) = list(out.rglob("results.json"))
    data = json.loads(result.read_text())
    rows = data["results"]
    assert len(rows) == 2 and data["metadata"]["scale"] == 8 and data["metadata"]["layer"] == 1
    assert any(r["baseline"] != r["steered"] for r in rows)  # scale 8 on a tiny model changes the text


def test_letter_scoring_and_ab_probability_agree_with_each_other(tiny_model):
    """score_mcq(method="letter") gives one score per option; ab_probability's p is the softmax of those scores
    at the matching option, and its accuracy is the share of items whose matching letter scores highest."""
    from interp_steer.data.schemas import MCQItem
    from interp_steer.evaluation.behaviour import ab_probability
    from interp_steer.evaluation.mcq import score_mcq

    items = [MCQItem(f"Pick one, case {i}.", ["Tea", "Coffee", "Water"], i % 3) for i in range(6)]
    scores = score_mcq(tiny_model, items, method="letter")
    assert all(len(s.scores) == 3 for s in scores)
    probs = [float(torch.softmax(torch.tensor(s.scores), 0)[s.answer]) for s in scores]
    ab = ab_probability(tiny_model, items)
    assert ab["p_matching"] == pytest.approx(sum(probs) / 6)
    assert ab["accuracy"] == pytest.approx(sum(max(range(3), key=lambda j: s.scores[j]) == s.answer
                                               for s in scores) / 6)
    vec = SteeringVector("caa", "dense", {"blocks.1.hook_resid_post": {"vector": torch.ones(tiny_model.cfg.d_model)}},
                         model_fingerprint(tiny_model).to_dict())
    assert ab_probability(tiny_model, items, vec, 20.0)["p_matching"] != ab["p_matching"]


def test_train_sae_writes_a_loadable_sae_with_its_measured_quality(tiny_cli, tmp_path, capsys):
    import random

    from interp_steer.saes import load_sae, sae_content_hash
    from interp_steer.saes.quality import sae_quality

    rng = random.Random(0)
    words = "tea bread market river school music family money greeting holiday street garden".split()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(60))}) + "\n"
                              for _ in range(40)))
    out = tmp_path / "sae"
    code = cli.main(["train-sae", "--corpus", str(corpus), "--hook", "blocks.1.hook_resid_pre", "--d-sae", "64",
                     "--k", "8", "--training-tokens", "16384", "--context-size", "32", "--batch-tokens", "256", "--lr", "3e-3",
                     "--heldout-fraction", "0.2", "--quality-tokens", "512", "--fp16", "--output-dir", str(out)])
    assert code == 0
    assert "SAE written to" in capsys.readouterr().out
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the partial folder was moved into place
    meta = json.loads((out / "interp_steer.json").read_text())
    assert meta["stored_dtype"] == "float16" and meta["corpus"]["documents_heldout"] == 8
    # the recorded training config is the one the flags asked for (it recorded the default 0.05 before)
    assert meta["training_config"]["heldout_fraction"] == 0.2 and meta["training_config"]["k"] == 8
    assert meta["command"].startswith("interp-steer ") or meta["command"] == "interp-steer"
    sae = load_sae(path=out, model=tiny_cli)
    assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == "blocks.1.hook_resid_pre"
    assert sae_content_hash(sae) == meta["content_hash"]
    # the stored quality figures are the ones these weights give on the held-out documents
    from interp_steer.data.corpus import load_corpus

    held = load_corpus(corpus, split="heldout", heldout_fraction=0.2, seed=0, tokenizer=tiny_cli.tokenizer)
    again = sae_quality(tiny_cli, sae, held, max_tokens=512).to_dict()
    for key in ("explained_variance", "ce_loss_recovered", "dead_fraction"):
        assert again[key] == pytest.approx(meta["quality_heldout"][key], abs=1e-6), key
    # trained, not random: measured 2026-12-03 explained variance 0.664 and CE loss recovered 0.946 for this run,
    # against -0.692 / 0.501 for a random SAE of the same shape (make_sae); thresholds leave a 0.1-0.16 margin
    q = meta["quality_heldout"]
    assert q["explained_variance"] > 0.5 and q["ce_loss_recovered"] > 0.85, q
    from .conftest import make_sae

    rnd = sae_quality(tiny_cli, make_sae("topk", tiny_cli.cfg.d_model, 64, "blocks.1.hook_resid_pre"), held,
                      max_tokens=512)
    assert rnd.explained_variance < 0.5 and rnd.ce_loss_recovered < 0.85  # the thresholds tell them apart


def test_generate_strength_auto_calibrates_under_the_confidence_bound(tiny_cli, tmp_path):
    """``--strength auto`` picks λ with the ratio's 90 % upper bound over the calibration documents by default
    (``--ppl-confidence none``: the measured ratio), records both, and steers with it."""
    g = torch.Generator().manual_seed(3)
    v = torch.randn(tiny_cli.cfg.d_model, generator=g)
    vec = SteeringVector("caa", "dense", {"blocks.1.hook_resid_post": {"vector": v / v.norm() * 2}},
                         model_fingerprint(tiny_cli).to_dict())
    path = vec.save(tmp_path / "v")
    results = {}
    for conf in ("0.9", "none"):
        out = tmp_path / f"g_{conf}.json"
        code = cli.main(["generate", "--vector", str(path), "--prompt", "Name a fruit.", "--strength", "auto",
                         "--ppl-confidence", conf, "--max-new-tokens", "3", "--output", str(out)])
        assert code == 0
        results[conf] = json.loads(out.read_text())
    bounded, point = results["0.9"], results["none"]
    assert bounded["fluency"]["calibrated"] and bounded["fluency"]["confidence"] == 0.9
    assert bounded["fluency"]["ppl_ratio_upper"] <= 1.2 and bounded["fluency"]["ppl_ratio"] <= 1.2
    assert point["fluency"]["confidence"] is None and point["fluency"]["ppl_ratio_upper"] is None
    assert 0 < bounded["strength"] <= point["strength"]
    assert bounded["hook_calls"]["blocks.1.hook_resid_post"] > 0
