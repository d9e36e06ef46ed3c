"""The flat public API: ``import interp_steer as its`` gives the workflow, lazily (no torch on import)."""

from __future__ import annotations

import subprocess
import sys

import torch

import interp_steer as its


def test_import_is_lazy_and_every_public_name_resolves():
    code = "import sys, interp_steer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert set(its.__all__) == {"InterpSteerError", "__version__", *its._LAZY}
    for name in its.__all__:
        assert getattr(its, name) is not None, name
    assert set(its.__all__) <= set(dir(its))


def test_workflow_from_the_top_level_on_a_tiny_model(tiny_model, tmp_path):
    pairs = [("Which drink do you prefer?", "Mint tea, always.", "Coffee, black."),
             ("Name a breakfast dish.", "Beans and bread.", "Cereal with milk."),
             ("Best dessert?", "Sweet pastry with honey.", "Chocolate cake.")]
    vec = its.compute_caa(tiny_model, pairs, layers=1)[1]
    assert isinstance(vec, its.SteeringVector)
    plain = its.generate(tiny_model, "Hello there", max_new_tokens=6)
    steered = its.generate(tiny_model, "Hello there", vec, 40.0, max_new_tokens=6)
    assert plain != steered  # the vector acts
    tokens = torch.tensor([[1, 2, 3]])
    with its.steer(tiny_model, vec, 4.0):
        a = tiny_model(tokens)
    b = tiny_model(tokens)
    assert not torch.allclose(a, b)
    back = its.SteeringVector.load(vec.save(tmp_path / "v"), model=tiny_model)
    assert torch.equal(back.vector(), vec.vector())
    res = its.train_vector(tiny_model, pairs, "bipo", layer=1, max_steps=2, batch_size=2, eval_fraction=0.0,
                           progress=False)
    assert res.vector.method == "bipo" and len(res.history) == 2
    try:
        its.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown attributes must raise AttributeError")
