"""SteeringVector artifacts: round trip, compatibility checks, refusal of pickles."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference
from interp_steer.steering import SteeringVector

from .conftest import TINY_HOOK, make_sae, make_tiny_model


def _dense(model, v=None):
    v = torch.randn(model.cfg.d_model) if v is None else v
    return SteeringVector("caa", "dense", {TINY_HOOK: {"vector": v}}, model_fingerprint(model).to_dict(),
                          config={"layer": 1}, metrics={"n": 3})


def test_round_trip_all_kinds(tmp_path, tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK)
    fp = model_fingerprint(tiny_model).to_dict()
    d = tiny_model.cfg.d_model
    vectors = [
        _dense(tiny_model),
        SteeringVector("yapo", "sae", {TINY_HOOK: {"latent": torch.randn(64)}}, fp,
                       sae=sae_reference(sae).to_dict(), positions="after_instruction"),
        SteeringVector("lineas", "affine", {TINY_HOOK: {"scale": torch.rand(d), "bias": torch.randn(d)},
                                            "blocks.0.hook_resid_post": {"scale": torch.rand(d), "bias": torch.randn(d)}}, fp),
    ]
    for i, vec in enumerate(vectors):
        path = vec.save(tmp_path / f"v{i}")
        assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
        loaded = SteeringVector.load(path, model=tiny_model, sae=sae if vec.kind == "sae" else None)
        assert loaded.method == vec.method and loaded.kind == vec.kind and loaded.positions == vec.positions
        assert loaded.hook_points == vec.hook_points and loaded.config == vec.config
        for hook in vec.hook_points:
            for name, t in vec.tensors[hook].items():
                assert torch.equal(loaded.tensors[hook][name], t)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["method"] == vec.method and sidecar["model"]["config_hash"] == fp["config_hash"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_vector_for_another_model_is_refused(tmp_path, tiny_model, tokenizer):
    path = _dense(tiny_model).save(tmp_path / "v")
    other = make_tiny_model(tokenizer, seed=5)
    with pytest.raises(InterpSteerError, match="was made for model"):
        SteeringVector.load(path, model=other)


def test_sae_vector_needs_its_own_sae(tmp_path, tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK, seed=1)
    other = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK, seed=2)
    vec = SteeringVector("yapo", "sae", {TINY_HOOK: {"latent": torch.randn(64)}},
                         model_fingerprint(tiny_model).to_dict(), sae=sae_reference(sae).to_dict())
    path = vec.save(tmp_path / "y")
    with pytest.raises(InterpSteerError, match="pass the SAE"):
        SteeringVector.load(path, model=tiny_model)
    with pytest.raises(InterpSteerError, match="SAE mismatch"):
        SteeringVector.load(path, model=tiny_model, sae=other)


def test_pickles_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "vector.safetensors"
    torch.save({"vector": torch.ones(3)}, evil)
    with pytest.raises(InterpSteerError, match="refusing to load a pickle"):
        SteeringVector.load(evil)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InterpSteerError, match="refusing"):
        SteeringVector.load(raw)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello world, not a tensor file")
    with pytest.raises(InterpSteerError, match="not a safetensors file"):
        SteeringVector.load(junk)
    with pytest.raises(InterpSteerError, match="not found"):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_invalid_vectors_are_refused(tiny_model):
    fp = model_fingerprint(tiny_model).to_dict()
    with pytest.raises(InterpSteerError, match="unknown steering kind"):
        SteeringVector("x", "weird", {TINY_HOOK: {"vector": torch.ones(2)}}, fp)  # type: ignore[arg-type]
    with pytest.raises(InterpSteerError, match="lacks tensors"):
        SteeringVector("x", "affine", {TINY_HOOK: {"scale": torch.ones(2)}}, fp)
    with pytest.raises(InterpSteerError, match="must record its SAE"):
        SteeringVector("x", "sae", {TINY_HOOK: {"latent": torch.ones(2)}}, fp)
