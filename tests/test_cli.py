"""CLI: bad input gives one line naming the problem and exit status 2, before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interp_steer import cli
from tests.conftest import SHARED_DATA as SHARED


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (("generate",), "no prompts"),
    (("generate", "--prompt", "hi", "--vector", "missing.safetensors"), "steering vector file not found"),
    (("generate", "--prompts-file", "nope.txt"), "prompts file not found"),
    # lists the valid behaviours; without ../shared/data it says that folder is missing
    (("train", "--data", "bipo:no-such-behaviour", "--output-dir", "x"), "takes one of" if SHARED.is_dir() else "not found"),
    (("train", "--data", "nonsense", "--output-dir", "x"), "unknown dataset"),
    (("contrastive", "--target", "no-such-key", "--baseline", "local:news", "--layer", "3"), "no-such-key"),
    (("generate", "--max-new-tokens", "many"), "invalid int value"),
    (("frobnicate",), "invalid choice"),
    (("train", "--method", "lineas", "--output-dir", "x"), "needs --source and --target"),
    (("train", "--method", "lineas", "--source", "culture:egypt", "--target", "nope", "--output-dir", "x"), "nope"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_train_sae_refuses_non_empty_output(capsys, tmp_path):
    (tmp_path / "x").write_text("keep me")
    code, _, err = _run(capsys, "train-sae", "--output-dir", str(tmp_path), "--corpus", str(tmp_path / "x"))
    assert code == 2 and "not empty" in err and (tmp_path / "x").read_text() == "keep me"


def test_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "interp_steer.cli", "generate", "--prompts-file",
                           str(tmp_path / "none.txt")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "prompts file not found" in proc.stderr


@pytest.mark.slow
def test_generate_command_writes_json(monkeypatch, model, tmp_path, capsys):
    monkeypatch.setattr(cli, "_model", lambda args: model)
    out = tmp_path / "gen.json"
    code, _, _ = _run(capsys, "generate", "--prompt", "Name a fruit.", "--prompt", "Say hello.",
                      "--max-new-tokens", "6", "--output", str(out))
    assert code == 0
    data = json.loads(out.read_text())
    assert [g["prompt"] for g in data["generations"]] == ["Name a fruit.", "Say hello."]
    assert all(isinstance(g["output"], str) and g["output"] for g in data["generations"])


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_model, tmp_path):
    """The demo's success path (train on validation-selected steps, calibrate, MCQ, generations, selectivity)
    on the tiny model: every reported strength is within the bound or flagged, and the numbers are consistent."""
    from interp_steer.demo import run_demo

    from .conftest import TINY_HOOK, make_sae

    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    s = run_demo("egypt", epochs=1, batch_size=8, strengths=(0.5, 1.0), n_generations=2, max_new_tokens=4,
                 output_dir=tmp_path, model=tiny_model, sae=sae)
    assert (tmp_path / "demo.json").is_file() and (tmp_path / "yapo" / "vector.safetensors").is_file()
    assert s["selected"]["criterion"] == "heldout_loss"
    assert 0 < s["n_nonzero"] <= 64
    assert s["ppl_confidence"] == 0.9 and s["calibration"]["confidence"] == 0.9  # the demo's default
    if s["within_bound"]:
        # the bound holds on the ratio's upper confidence bound over the calibration documents
        assert s["calibration"]["ppl_ratio_upper"] <= 1.2 and s["calibration"]["ppl_ratio"] <= 1.2
        # a measured, fluent strength: one of the grid's or of the refinement between its fluent/failing points
        assert s["strength"] in [r["strength"] for r in s["calibration"]["rows"] if r["fluent"]]
        assert 0.5 <= s["strength"] <= 1.0
    else:
        assert s["calibration"]["strength"] is None
    assert s["heldout_within_bound"] == (s["heldout_ppl_ratio"] <= 1.2) and s["max_ratio"] == 1.2
    assert s["calibration"]["n_texts"] == 32
    rep = s["heldout_report"]  # the independent report: other documents, with its interval
    assert rep["ppl_ratio"] == s["heldout_ppl_ratio"] and rep["lower"] <= rep["ppl_ratio"] <= rep["upper"]
    assert rep["n_texts"] == 128 and rep["level"] == 0.9
    assert set(s["generation_repetition"]) == {"unsteered", "steered"}
    assert all(0.0 <= x <= 1.0 for x in s["generation_repetition"].values())
    assert len(s["generations"]) == 2 and all(g["steered"] is not None for g in s["generations"])
    sel = s["selectivity"]
    assert 0.0 <= sel["selective_share"] <= 1.0 and sel["n_scored"] == s["n_nonzero"]
    assert sel["n_basis"] == 64 and sel["n_selective"] <= sel["n_basis_selective"]
    assert all(lat["auroc"] <= sel["max_basis_auroc"] for lat in sel["latents"])
    assert all(0.0 <= lat["auroc"] <= 1.0 for lat in sel["latents"])


def test_demo_symmetric_trains_and_saves_the_symmetric_operator(tiny_model, tmp_path):
    """``run_demo(symmetric=True)`` (``interp-steer demo --symmetric``) trains with the symmetric operator and
    the saved vector carries it, so re-applying the file steers the way the demo measured."""
    from interp_steer.demo import run_demo
    from interp_steer.steering.vector import SteeringVector

    from .conftest import TINY_HOOK, make_sae

    sae = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK)
    s = run_demo("egypt", epochs=1, batch_size=8, strengths=(0.5, 1.0), n_generations=1, max_new_tokens=2,
                 output_dir=tmp_path, model=tiny_model, sae=sae, symmetric=True)
    assert s["sparse_options"] == {"final_top_k": 256, "symmetric": True}
    vec = SteeringVector.load(tmp_path / "yapo" / "vector.safetensors")
    assert vec.kind == "sae" and vec.operator == "symmetric"
