"""llama.cpp control-vector export/import: the file format llama.cpp reads, exact hook mapping, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.models import model_fingerprint
from interp_steer.steering import SteeringVector, steer
from tests.conftest import TINY_HOOK, make_sae


def _vec(model, hook: str, *, kind: str = "dense", positions: str = "all", seed: int = 0) -> SteeringVector:
    torch.manual_seed(seed)
    if kind == "dense":
        tensors = {hook: {"vector": torch.randn(model.cfg.d_model)}}
        return SteeringVector("caa", "dense", tensors, model_fingerprint(model).to_dict(), positions=positions)
    tensors = {hook: {"scale": torch.ones(model.cfg.d_model), "bias": torch.zeros(model.cfg.d_model)}}
    return SteeringVector("lineas", "affine", tensors, model_fingerprint(model).to_dict())


def test_export_writes_the_llamacpp_control_vector_format(tiny_model, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    vec = _vec(tiny_model, "blocks.1.hook_resid_post")
    path = vec.to_gguf(tmp_path / "v.gguf", strength=2.5, model=tiny_model)
    reader = GGUFReader(str(path))

    def field(key):
        f = reader.fields[key]
        part = f.parts[f.data[0]]
        return bytes(part).decode() if f.types[0].name == "STRING" else part[0]

    assert field("general.architecture") == "controlvector"
    assert field("controlvector.model_hint") == "llama"
    assert field("controlvector.layer_count") == 1
    (tensor,) = reader.tensors
    assert tensor.name == "direction.1" and tensor.tensor_type == GGMLQuantizationType.F32
    assert np.allclose(np.asarray(tensor.data).reshape(-1), 2.5 * vec.vector().numpy())
    back = SteeringVector.from_gguf(path, tiny_model)
    assert back.hook_points == ["blocks.1.hook_resid_post"]
    assert torch.allclose(back.vector(), 2.5 * vec.vector())


def test_resid_pre_maps_to_the_previous_block_and_steers_identically(tiny_model, tmp_path):
    """A vector at blocks.2.hook_resid_pre (3-layer model) is direction.1: the same addition, so the
    re-imported vector (at blocks.1.hook_resid_post) gives the same logits."""
    from tests.conftest import make_tiny_model

    model = make_tiny_model(tiny_model.tokenizer, n_layers=3, seed=3)
    vec = _vec(model, "blocks.2.hook_resid_pre")
    back = SteeringVector.from_gguf(vec.to_gguf(tmp_path / "v.gguf", model=model), model)
    assert back.hook_points == ["blocks.1.hook_resid_post"]
    tokens = torch.tensor([[1, 5, 9, 13]])
    with steer(model, vec, 3.0):
        a = model(tokens)
    with steer(model, back, 3.0):
        b = model(tokens)
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, model(tokens), atol=1e-3)


@pytest.mark.parametrize("hook, message", [
    ("blocks.0.hook_resid_post", "refuses direction.0"),
    ("blocks.1.hook_resid_pre", "refuses direction.0"),
    ("blocks.1.hook_attn_out", "no llama.cpp control-vector equivalent"),
])
def test_hooks_without_an_exact_mapping_are_refused(tiny_model, tmp_path, hook, message):
    with pytest.raises(InterpSteerError, match=message):
        _vec(tiny_model, hook).to_gguf(tmp_path / "v.gguf", model=tiny_model)
    assert not (tmp_path / "v.gguf").exists()


def test_non_additive_vectors_are_refused_or_labelled(tiny_model, tmp_path):
    from gguf import GGUFReader

    with pytest.raises(InterpSteerError, match="not additive"):
        _vec(tiny_model, TINY_HOOK, kind="affine").to_gguf(tmp_path / "a.gguf", model=tiny_model)
    with pytest.raises(InterpSteerError, match="steers every position"):
        _vec(tiny_model, TINY_HOOK, positions="generated").to_gguf(tmp_path / "p.gguf", model=tiny_model)
    hook = "blocks.1.hook_resid_post"
    sae = make_sae("standard", tiny_model.cfg.d_model, 48, hook)
    from interp_steer.saes import sae_reference

    latent = torch.zeros(48)
    latent[[3, 7]] = torch.tensor([1.5, -0.5])
    yapo = SteeringVector("yapo", "sae", {hook: {"latent": latent}}, model_fingerprint(tiny_model).to_dict(),
                          sae=sae_reference(sae).to_dict())
    with pytest.raises(InterpSteerError, match="approximate=True"):
        yapo.to_gguf(tmp_path / "y.gguf", model=tiny_model, sae=sae)
    path = yapo.to_gguf(tmp_path / "y.gguf", model=tiny_model, sae=sae, approximate=True, strength=2.0)
    reader = GGUFReader(str(path))
    assert "interp_steer.approximation" in reader.fields
    direction = np.asarray(reader.tensors[0].data).reshape(-1)
    assert np.allclose(direction, (2.0 * latent @ sae.W_dec).numpy(), atol=1e-6)
    assert reader.tensors[0].name == "direction.1"


def test_reading_foreign_files_checks_width_and_layers(tiny_model, tmp_path):
    from gguf import GGUFWriter

    def write(name, tensors, arch="controlvector"):
        w = GGUFWriter(str(tmp_path / name), arch)
        for k, t in tensors.items():
            w.add_tensor(k, t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return tmp_path / name

    d = tiny_model.cfg.d_model
    with pytest.raises(InterpSteerError, match="has 7 entries"):
        SteeringVector.from_gguf(write("w.gguf", {"direction.1": np.ones(7, np.float32)}), tiny_model)
    with pytest.raises(InterpSteerError, match="not a steerable layer"):
        SteeringVector.from_gguf(write("z.gguf", {"direction.0": np.ones(d, np.float32)}), tiny_model)
    with pytest.raises(InterpSteerError, match="not a control vector"):
        SteeringVector.from_gguf(write("l.gguf", {"direction.1": np.ones(d, np.float32)}, arch="llama"), tiny_model)
    (tmp_path / "junk.gguf").write_bytes(b"not gguf at all")
    with pytest.raises(InterpSteerError, match="not a readable GGUF"):
        SteeringVector.from_gguf(tmp_path / "junk.gguf", tiny_model)


def test_export_command_is_one_line_on_bad_input(tmp_path, capsys, tiny_model):
    from interp_steer import cli

    vec = _vec(tiny_model, "blocks.0.hook_resid_post")
    path = vec.save(tmp_path / "v")
    code = cli.main(["export", "--vector", str(path), "--output", str(tmp_path / "v.gguf"), "--model-hint", "llama"])
    err = capsys.readouterr().err
    assert code == 2 and "refuses direction.0" in err and len(err.strip().splitlines()) == 1
    good = _vec(tiny_model, "blocks.1.hook_resid_post").save(tmp_path / "g")
    assert cli.main(["export", "--vector", str(good), "--output", str(tmp_path / "g.gguf"), "--model-hint",
                     "llama", "--strength", "3"]) == 0
    assert torch.allclose(SteeringVector.from_gguf(tmp_path / "g.gguf", tiny_model).vector(),
                          3 * SteeringVector.load(good).vector())
    code = cli.main(["export", "--vector", str(good), "--output", str(tmp_path / "x.gguf")])
    assert code == 2 and "--model-hint is needed" in capsys.readouterr().err


LIB = os.environ.get("LLAMA_CPP_CFFI_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not LIB, reason="set LLAMA_CPP_CFFI_DIR to llama-cpp-cffi's CPU library folder "
                                     "(and LLAMA_CPP_PRELOAD if its libstdc++ needs a shim) to run real llama.cpp")
def test_exported_caa_vector_steers_real_llamacpp(tmp_path):
    """benchmarks/bench_llamacpp.py on the embedded model: llama.cpp's output changes under the exported vector
    and agrees with ours at least as well as the unsteered outputs agree (the Q4_1-kernel floor)."""
    import json

    root = Path(__file__).resolve().parents[1]
    vector = root / "benchmarks" / "results" / "efficacy" / "vectors" / "power-seeking__caa.safetensors"
    if not vector.exists():
        pytest.skip(f"{vector} not found")
    out = tmp_path / "llamacpp.json"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_llamacpp.py"), "--vector", str(vector),
                           "--strengths", "4", "--max-new-tokens", "24", "--output", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows[1]["llamacpp_changed_by_steering"] >= 0.5
    assert rows[1]["first_16_identical"] >= rows[0]["first_16_identical"] - 0.25
