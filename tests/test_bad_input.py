"""The reliability battery: every bad input gets one clear error naming the problem (CLI: one line, exit 2, no
traceback, no file written, no model loaded first); valid vectors are never refused; no NaN reaches a result."""

from __future__ import annotations

import json
import math
import pickle
import struct

import pytest
import torch

from interp_steer import cli
from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.models import model_fingerprint
from interp_steer.steering.vector import SteeringVector
from tests.conftest import TINY_HOOK, make_sae, shared_data

PAIRS = [
    PreferenceExample("Which drink do you prefer in the morning?", "Mint tea, always.", "Coffee, black."),
    PreferenceExample("What is a good weekend activity?", "A long walk by the sea.", "Watching television."),
    PreferenceExample("Name a breakfast dish.", "Beans and bread.", "Cereal with milk."),
    PreferenceExample("What do you wear to a wedding?", "A bright embroidered dress.", "A plain grey suit."),
]


class ModelLoaded(Exception):
    """Raised by the patched model loader: a check that should come first came after the load."""


@pytest.fixture
def no_model(monkeypatch):
    def refuse(args):
        raise ModelLoaded("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_model", refuse)


def _run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    return code, err


def _one_line(capsys, argv, message: str) -> None:
    code, err = _run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]


def _dense(model, width: int | None = None, value: float = 0.1, hook: str = TINY_HOOK, **kw) -> SteeringVector:
    width = width or model.cfg.d_model
    return SteeringVector("caa", "dense", {hook: {"vector": torch.full((width,), value)}},
                          model_fingerprint(model).to_dict(), **kw)


def _write_raw_vector(path, vec: SteeringVector, tensor: torch.Tensor) -> None:
    """A vector file with ``tensor`` in place of the vector (bypassing the constructor's checks), as a
    corrupted or foreign file would be."""
    from safetensors.torch import save_file

    meta = vec.metadata()
    save_file({f"{vec.hook_points[0]}::vector": tensor}, str(path), metadata={"interp_steer": json.dumps(meta)})


# ------------------------------------------------------------------------------ 1. valid vectors, pickles


def test_vectors_with_any_metadata_length_round_trip(tiny_model, tmp_path):
    """Every low byte the header length can take occurs (safetensors pads it to a multiple of 8), 0x80
    included: a first byte of 0x80 was once refused as a pickle marker."""
    lows: set[int] = set()
    lengths = list(range(0, 300)) + list(range(300, 4097, 37)) + [4096]
    for n in lengths:
        vec = _dense(tiny_model, config={"pad": "x" * n})
        path = vec.save(tmp_path / f"v{n}")
        lows.add(path.read_bytes()[0])
        back = SteeringVector.load(path, model=tiny_model)
        assert torch.equal(back.vector(), vec.vector()) and back.config["pad"] == "x" * n
        path.unlink()
    assert lows == set(range(0, 256, 8)) and 0x80 in lows


def test_pickles_are_refused_as_pickles_and_other_files_as_not_safetensors(tmp_path):
    torch.save({"vector": torch.zeros(4)}, tmp_path / "v.safetensors")  # a zip archive holding a pickle
    with pytest.raises(InterpSteerError, match="refusing to load a pickle"):
        SteeringVector.load(tmp_path / "v.safetensors")
    for protocol in (2, 3, 4, 5):
        (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"v": [1.0]}, protocol=protocol))
        with pytest.raises(InterpSteerError, match="refusing to load a pickle"):
            SteeringVector.load(tmp_path / "p.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 5) + b"hello")
    with pytest.raises(InterpSteerError, match="not a safetensors file"):
        SteeringVector.load(tmp_path / "junk.safetensors")
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    with pytest.raises(InterpSteerError, match="not a safetensors file"):
        SteeringVector.load(tmp_path / "short.safetensors")


# --------------------------------------------------------------------------------- 2./3. vector values


@pytest.mark.parametrize("bad, message", [(math.nan, "NaN or infinite"), (math.inf, "NaN or infinite"),
                                          (1e30, "magnitude")])
def test_non_finite_or_huge_vectors_are_refused_at_construction_and_load(tiny_model, tmp_path, bad, message):
    with pytest.raises(InterpSteerError, match=message):
        _dense(tiny_model, value=bad)
    good = _dense(tiny_model)
    tensor = good.vector().clone()
    tensor[3] = bad
    _write_raw_vector(tmp_path / "bad.safetensors", good, tensor)
    with pytest.raises(InterpSteerError, match=message):
        SteeringVector.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("width", [100, 768])
def test_a_vector_of_the_wrong_width_is_refused_before_the_first_forward(tiny_model, width):
    from interp_steer.generation import generate

    vec = _dense(tiny_model, width=width)
    with pytest.raises(InterpSteerError, match=f"has {width} entries but .* is {tiny_model.cfg.d_model} wide"):
        vec.check_compatible(tiny_model)
    with pytest.raises(InterpSteerError, match="entries but"):
        generate(tiny_model, "Hello", vec, 1.0, max_new_tokens=2)


@pytest.mark.parametrize("strength", [math.nan, math.inf, -math.inf])
def test_non_finite_strengths_are_refused_everywhere(tiny_model, strength):
    from interp_steer.generation import generate
    from interp_steer.steering import steer

    vec = _dense(tiny_model)
    with pytest.raises(InterpSteerError, match="finite"):
        generate(tiny_model, "Hello", vec, strength, max_new_tokens=2)
    with pytest.raises(InterpSteerError, match="finite"):
        with steer(tiny_model, vec, strength):
            pass
    with pytest.raises(InterpSteerError, match="finite"):
        with steer(tiny_model, vec, torch.tensor([1.0, strength])):
            pass


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be >= 1"), ({"temperature": -1.0}, "temperature must be >= 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"), ({"temperature": math.nan}, "temperature must be a finite"),
    ({"top_p": 0.0}, "top_p must be > 0"),
])
def test_generate_refuses_bad_settings(tiny_model, kwargs, message):
    from interp_steer.generation import generate

    with pytest.raises(InterpSteerError, match=message):
        generate(tiny_model, "Hello", **kwargs)


def test_prompts_beyond_the_context_are_refused_with_their_length(tiny_model):
    from interp_steer.generation import generate

    long_prompt = "word " * (tiny_model.cfg.n_ctx + 10)
    with pytest.raises(InterpSteerError, match=r"prompt 1 is \d+ tokens .* context of 512 tokens"):
        generate(tiny_model, ["Hi", long_prompt], max_new_tokens=4)


def test_strict_json_sidecar_for_non_finite_metrics(tiny_model, tmp_path):
    vec = _dense(tiny_model, metrics={"pref_acc": math.nan, "loss": [1.0, math.inf]})
    path = vec.save(tmp_path / "v")

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    meta = json.loads(path.with_suffix(".json").read_text(), parse_constant=refuse)
    assert meta["metrics"] == {"pref_acc": None, "loss": [1.0, None]}
    assert SteeringVector.load(path).metrics["pref_acc"] is None


# ------------------------------------------------------------------------------------- inputs: pairs


def test_trainers_accept_tuples_and_dicts_like_preference_examples(tiny_model):
    from interp_steer.methods.caa import compute_caa
    from interp_steer.methods.preference import train_vector

    tuples = [(p.prompt, p.chosen, p.rejected) for p in PAIRS]
    dicts = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in PAIRS]
    ref = compute_caa(tiny_model, PAIRS, layers=1)[1].vector()
    for form in (tuples, dicts):
        assert torch.equal(compute_caa(tiny_model, form, layers=1)[1].vector(), ref)
    kw = dict(layer=1, max_steps=2, batch_size=2, eval_fraction=0.0, progress=False, lr=1e-2)
    a = train_vector(tiny_model, PAIRS, "bipo", **kw).vector.vector()
    b = train_vector(tiny_model, dicts, "bipo", **kw).vector.vector()
    assert torch.equal(a, b)


def test_sas_accepts_tuples(tiny_model):
    from interp_steer.methods.sas import compute_sas

    sae = make_sae("standard", tiny_model.cfg.d_model, 48, TINY_HOOK)
    tuples = [(p.prompt, p.chosen, p.rejected) for p in PAIRS]
    assert torch.equal(compute_sas(tiny_model, sae, tuples, top_k=4).vector(),
                       compute_sas(tiny_model, sae, PAIRS, top_k=4).vector())


@pytest.mark.parametrize("bad, message", [
    ([{"prompt": "q", "chosen": "a"}], r"pair 0 lacks key\(s\) \['rejected'\]"),
    ([("q", "a")], "pair 0 has 2 fields"),
    ([42], "pair 0 is a int"),
    ([("q", "a", 3)], "rejected must be a string"),
    ({"prompt": "q"}, "expected a sequence of preference pairs"),
])
def test_bad_pairs_are_named(tiny_model, bad, message):
    from interp_steer.methods.caa import compute_caa
    from interp_steer.methods.preference import train_vector

    with pytest.raises(InterpSteerError, match=message):
        compute_caa(tiny_model, bad, layers=1)
    with pytest.raises(InterpSteerError, match=message):
        train_vector(tiny_model, bad, "bipo", layer=1, progress=False)


# ------------------------------------------------------------------------------------ 4. named problems


def test_load_sae_names_the_real_problem(tmp_path):
    from interp_steer.saes import load_sae

    with pytest.raises(InterpSteerError, match="SAE folder not found: /no/such/path"):
        load_sae("/no/such/path")
    with pytest.raises(InterpSteerError, match="is not a sae-lens SAE folder"):
        load_sae(str(tmp_path))
    with pytest.raises(InterpSteerError, match="is not a sae-lens SAE folder"):
        load_sae(path=tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InterpSteerError, match="is a file"):
        load_sae(path=tmp_path / "f")
    with pytest.raises(InterpSteerError, match="needs its sae_id"):
        load_sae("some-release")


def test_data_specs_name_the_real_problem(tmp_path):
    from interp_steer.data.specs import load_pairs

    with pytest.raises(InterpSteerError, match="data file not found: .*missing.jsonl"):
        load_pairs(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InterpSteerError, match="is a directory"):
        load_pairs(str(tmp_path))
    with pytest.raises(InterpSteerError, match="unknown dataset 'nonsense'"):
        load_pairs("nonsense")


def test_unknown_behaviours_list_the_valid_ones():
    from interp_steer.data.specs import load_pairs

    shared_data("bipo", "power-seeking")
    with pytest.raises(InterpSteerError, match="bipo:<name> takes one of .*power-seeking"):
        load_pairs("bipo:no-such-behaviour")


def test_non_utf8_data_files_name_the_byte(tmp_path):
    from interp_steer.data.loaders import load_preferences

    bad = tmp_path / "pairs.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(InterpSteerError, match=r"not UTF-8 text \(byte 0xe9 at offset 15, line 1\)"):
        load_preferences(bad)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_non_utf8_files(capsys, tmp_path, no_model):
    bad = tmp_path / "pairs.jsonl"
    bad.write_bytes(b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    _one_line(capsys, ["train", "--data", str(bad), "--output-dir", str(tmp_path / "o")], "not UTF-8 text")
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"hello \xff\n")
    _one_line(capsys, ["generate", "--prompts-file", str(prompts)], "not UTF-8 text")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [
    ["train", "--data", "culture"], ["demo"], ["train-sae"],
    ["contrastive", "--target", "local:news", "--baseline", "local:news", "--layer", "3"],
])
def test_cli_output_dir_that_is_a_file(capsys, tmp_path, no_model, command):
    target = tmp_path / "taken"
    target.write_text("keep me")
    _one_line(capsys, [*command, "--output-dir", str(target)], "is an existing file, not a folder")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("command", [
    ["train", "--method", "yapo", "--data", "culture"], ["demo"], ["compare"],
])
def test_cli_sae_width_that_is_not_shipped(capsys, tmp_path, no_model, command):
    _one_line(capsys, [*command, "--sae", "12345", "--output-dir", str(tmp_path / "o")],
              "no shipped SAE with 12345 latents")
    assert not (tmp_path / "o").exists()


def test_cli_output_file_that_is_a_folder(capsys, tmp_path, no_model):
    _one_line(capsys, ["generate", "--prompt", "hi", "--output", str(tmp_path)], "is a directory")


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-0.5"], "lr must be a positive finite number"),
    (["train", "--lr", "nan"], "lr must be a positive finite number"),
    (["train", "--batch-size", "0"], "batch_size must be >= 1"),
    (["train", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "--beta", "0"], "beta must be a finite number > 0"),
    (["train", "--eval-fraction", "1.5"], "eval_fraction must be < 1"),
    (["train", "--layer", "999"], "--layer 999 is out of range: the model has layers 0 … 29"),
    (["train", "--layer", "-1"], "--layer -1 is out of range"),
    (["train", "--method", "lineas", "--source", "local:news", "--target", "local:news", "--batch-size", "0"],
     "batch_size must be >= 1"),
    (["train", "--method", "lineas", "--source", "local:news", "--target", "local:news", "--lr", "0"],
     "lr must be > 0"),
    (["train", "--data", "missing.jsonl"], "data file not found: missing.jsonl"),
    (["train", "--method", "bipo", "--symmetric"], "symmetric= is an SAE-latent operator: YaPO only"),
    (["demo", "--ppl-confidence", "0.2"], "expected a probability in [0.5, 1) or 'none'"),
    (["train-sae", "--lr", "-1"], "--lr must be > 0"),
    (["train-sae", "--hook", "blocks.99.hook_resid_post"], "--hook 99 is out of range"),
    (["train-sae", "--hook", "resid"], "is not a TransformerLens hook name"),
    (["train-sae", "--k", "0"], "--k must be >= 1"),
    (["train-sae", "--aux-coefficient", "-1"], "--aux-coefficient must be >= 0"),
    (["train-sae", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["train-sae", "--heldout-fraction", "0.9"], "--heldout-fraction must be <= 0.5"),
    (["train-sae", "--k", "64", "--d-sae", "32"], "--k 64 is larger than --d-sae 32"),
    (["train-sae", "--batch-tokens", "0"], "--batch-tokens must be >= 1"),
    (["train-sae", "--quality-tokens", "0"], "--quality-tokens must be >= 1"),
    (["train-sae", "--resample-dead"], "--resample-dead needs --init-from"),
    (["train-sae", "--init-from", "missing-sae-folder"], "SAE folder not found: missing-sae-folder"),
    (["train-sae", "--init-from", "16384"], "is a topk SAE with 16384 latents; pass the same --architecture and "
                                            "--d-sae (here topk, 4096)"),
    (["train-sae", "--init-from", "16384", "--d-sae", "16384", "--resume-from", "."],
     "--init-from cannot be combined with --resume-from"),
    (["contrastive", "--target", "local:news", "--baseline", "local:news", "--layer", "40"], "out of range"),
    (["contrastive", "--target", "local:news", "--baseline", "local:news", "--layer", "3", "--scale", "nan"],
     "--scale must be a finite number"),
])
def test_cli_bad_numbers_are_refused_before_the_model_loads(capsys, tmp_path, no_model, argv, message):
    _one_line(capsys, [*argv, "--output-dir", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (["--strength", "nan"], "the strength must be a finite number"),
    (["--strength", "inf"], "the strength must be a finite number"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--vector", "missing.safetensors"], "steering vector file not found"),
    (["--strength", "auto", "--ppl-confidence", "1.5"], "expected a probability in [0.5, 1) or 'none'"),
    (["--strength", "auto", "--ppl-confidence", "high"], "expected a probability in [0.5, 1) or 'none'"),
])
def test_cli_generate_checks_before_the_model_loads(capsys, tmp_path, no_model, extra, message):
    _one_line(capsys, ["generate", "--prompt", "hi", *extra, "--output", str(tmp_path / "g.json")], message)
    assert not (tmp_path / "g.json").exists()


def test_cli_generate_refuses_bad_vector_files_before_the_model_loads(capsys, tmp_path, tiny_model, no_model):
    _one_line(capsys, ["generate", "--prompt", "hi", "--vector", str(tmp_path)], "is a directory")
    torch.save({"v": torch.zeros(3)}, tmp_path / "p.safetensors")
    _one_line(capsys, ["generate", "--prompt", "hi", "--vector", str(tmp_path / "p.safetensors")], "pickle")
    good = _dense(tiny_model)
    tensor = good.vector().clone()
    tensor[0] = math.nan
    _write_raw_vector(tmp_path / "nan.safetensors", good, tensor)
    _one_line(capsys, ["generate", "--prompt", "hi", "--vector", str(tmp_path / "nan.safetensors")], "NaN")


def test_cli_generate_refuses_a_vector_of_the_wrong_width(capsys, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(cli, "_model", lambda args: tiny_model)
    path = _dense(tiny_model, width=100).save(tmp_path / "wide")
    _one_line(capsys, ["generate", "--prompt", "hi", "--vector", str(path), "--max-new-tokens", "2",
                       "--output", str(tmp_path / "g.json")], "has 100 entries but")
    assert not (tmp_path / "g.json").exists()


# -------------------------------------------------------------------------------------- 5. resume log


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
from transformers import AutoTokenizer
from interp_steer.models import embedded_gguf_path
from interp_steer.methods.preference import train_vector
from tests.conftest import make_tiny_model
from tests.test_bad_input import PAIRS, RESUME_KW
p = embedded_gguf_path()
model = make_tiny_model(AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name))
kill_at = int(sys.argv[2])
def cb(step, rec):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
train_vector(model, PAIRS, "bipo", eval_data=PAIRS[:2], output_dir=sys.argv[1], callback=cb, **RESUME_KW)
"""
RESUME_KW = dict(epochs=4, batch_size=2, lr=2e-2, checkpoint_every=2, eval_every=2, layer=1, progress=False)


@pytest.mark.parametrize("kill_at", [4])
def test_resume_keeps_the_eval_records_written_before_the_kill(tiny_model, tmp_path, kill_at):
    """A run SIGKILLed right after step 4 (its eval record and checkpoint written) resumes with every eval
    record in log.jsonl and in the vector's metrics, as an uninterrupted run has them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from interp_steer.methods.preference import train_vector

    full = train_vector(tiny_model, PAIRS, "bipo", eval_data=PAIRS[:2], output_dir=tmp_path / "full", **RESUME_KW)
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "r"), str(kill_at)], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "r"), "-1"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    def evals(path):
        return [json.loads(x)["eval"]["step"] for x in (path / "log.jsonl").read_text().splitlines() if '"eval"' in x]

    assert evals(tmp_path / "r") == evals(tmp_path / "full") == [2, 4, 6, 8]
    saved = SteeringVector.load(tmp_path / "r" / "vector.safetensors")
    assert [e["step"] for e in saved.metrics["evals"]] == [e["step"] for e in full.evals] == [2, 4, 6, 8]
    assert saved.metrics["selected"]["resumed_from_step"] == (2 if kill_at == 3 else 4)
    assert torch.equal(saved.vector(), full.vector.vector())
