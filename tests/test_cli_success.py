"""The CLI's success paths on the tiny model (the model loader patched): each command writes what it promises,
with the settings it was given."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer import cli
from interp_steer.models import model_fingerprint
from interp_steer.steering import SteeringVector


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
