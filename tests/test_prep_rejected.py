"""prep-rejected: file format, validation and resume after an interruption.

The fast tests swap the generator for a deterministic fake whose answers depend on the batch's seed and
composition (as sampled decoding does), so they check the resume guarantee itself. The slow tests run the
embedded model (session fixture ``model`` from conftest.py) greedily and with sampling.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from interp_steer.data import PreferenceExample, culture_preferences, load_preferences, prep_rejected
from interp_steer.errors import InterpSteerError


class Interrupted(RuntimeError):
    """Raised by a generator wrapper to simulate a run killed between batches."""


def _examples(n: int) -> list[PreferenceExample]:
    return [PreferenceExample(f"prompt number {i}?", f"chosen {i}", "", {"id": f"row-{i}", "country": "egypt"})
            for i in range(n)]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _truncate_last_line(path: Path, n_bytes: int = 7) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-n_bytes])


@pytest.fixture
def fake_generation(monkeypatch):
    """Replace the generator and the model fingerprint; returns the list of generate calls."""
    import interp_steer.generation
    import interp_steer.models

    calls: list[dict] = []

    def fake_generate(model, prompts, *, max_new_tokens, temperature, top_p, batch_size, seed):
        calls.append({"prompts": list(prompts), "seed": seed, "batch_size": batch_size})
        return [f"{p[:15]}|seed={seed}|n={len(prompts)}|pos={i}|t={temperature}" for i, p in enumerate(prompts)]

    monkeypatch.setattr(interp_steer.generation, "generate", fake_generate)
    monkeypatch.setattr(interp_steer.models, "model_fingerprint",
                        lambda model: SimpleNamespace(to_dict=lambda: {"name": "fake", "config_hash": "0"}))
    return calls


def _interrupt_after(monkeypatch, n_calls: int) -> None:
    """Make the (already patched or real) generator raise after ``n_calls`` successful calls."""
    import interp_steer.generation

    inner = interp_steer.generation.generate
    count = {"n": 0}

    def flaky(*args, **kwargs):
        if count["n"] >= n_calls:
            raise Interrupted("killed")
        count["n"] += 1
        return inner(*args, **kwargs)

    monkeypatch.setattr(interp_steer.generation, "generate", flaky)


def test_rows_format_and_reload(tmp_path, fake_generation):
    out = prep_rejected(None, _examples(5), tmp_path / "out.jsonl", batch_size=2, seed=10, progress=False)
    rows = _rows(out)
    assert [r["id"] for r in rows] == [f"row-{i}" for i in range(5)]
    assert rows[0]["rejected"] == "prompt number 0|seed=10|n=2|pos=0|t=0.7"
    assert rows[4]["generation"] == {"model": {"name": "fake", "config_hash": "0"}, "max_new_tokens": 128,
                                     "temperature": 0.7, "top_p": 0.9, "seed": 10, "batch_size": 2,
                                     "batch_seed": 14}
    assert [c["seed"] for c in fake_generation] == [10, 12, 14]
    pairs = load_preferences(out)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(r["prompt"], r["chosen"], r["rejected"])
                                                                 for r in rows]
    assert pairs[0].metadata["country"] == "egypt" and pairs[0].metadata["id"] == "row-0"


def test_resume_after_crash_and_truncated_line_matches_uninterrupted_run(tmp_path, fake_generation, monkeypatch):
    examples = _examples(7)
    full = prep_rejected(None, examples, tmp_path / "full.jsonl", batch_size=3, progress=False)
    part = tmp_path / "part.jsonl"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            prep_rejected(None, examples, part, batch_size=3, progress=False)
    assert len(_rows(part)) == 6
    _truncate_last_line(part)  # killed in the middle of writing row-5
    fake_generation.clear()
    prep_rejected(None, examples, part, batch_size=3, progress=False)
    assert part.read_bytes() == full.read_bytes()
    assert [c["seed"] for c in fake_generation] == [3, 6]  # only the batches with missing rows
    fake_generation.clear()
    prep_rejected(None, examples, part, batch_size=3, progress=False)
    assert fake_generation == [] and part.read_bytes() == full.read_bytes()
    ids = [r["id"] for r in _rows(part)]
    assert sorted(ids) == sorted(set(ids)) == sorted(f"row-{i}" for i in range(7))


def test_resume_extends_to_new_rows(tmp_path, fake_generation):
    examples = _examples(10)
    full = prep_rejected(None, examples, tmp_path / "full.jsonl", batch_size=4, progress=False)
    grown = tmp_path / "grown.jsonl"
    prep_rejected(None, examples[:8], grown, batch_size=4, progress=False)  # like --limit 8
    prep_rejected(None, examples, grown, batch_size=4, progress=False)
    assert grown.read_bytes() == full.read_bytes()


def test_resume_refuses_other_settings_or_inputs(tmp_path, fake_generation):
    out = prep_rejected(None, _examples(4), tmp_path / "out.jsonl", batch_size=2, temperature=0.0, progress=False)
    before = out.read_bytes()
    for kwargs, message in [
        ({"temperature": 0.7}, r"written with other settings \(temperature=0.0\)"),
        ({"batch_size": 4}, r"other settings \(batch_size=2\)"),
    ]:
        with pytest.raises(InterpSteerError, match=message):
            prep_rejected(None, _examples(4), out, **{"batch_size": 2, "temperature": 0.0, **kwargs})
    changed = _examples(4)
    changed[1].prompt = "another prompt"
    with pytest.raises(InterpSteerError, match=r"the prompts of ids \['row-1'\] differ"):
        prep_rejected(None, changed, out, batch_size=2, temperature=0.0)
    with pytest.raises(InterpSteerError, match=r"rows for ids not in this input \(\['row-2', 'row-3'\]\)"):
        prep_rejected(None, _examples(2), out, batch_size=2, temperature=0.0)
    assert out.read_bytes() == before and fake_generation[2:] == []


def test_bad_input_creates_no_file(tmp_path, fake_generation):
    out = tmp_path / "sub" / "out.jsonl"
    duplicate = _examples(3)
    duplicate[2].metadata["id"] = "row-0"
    empty_prompt = _examples(3)
    empty_prompt[1].prompt = "  "
    for examples, kwargs, message in [
        ([], {}, "no examples"),
        (duplicate, {}, r"input ids are not unique: \['row-0'\]"),
        (empty_prompt, {}, r"example 1: empty prompt"),
        (_examples(2), {"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        (_examples(2), {"batch_size": 0}, "batch_size must be at least 1"),
        (tmp_path / "missing.jsonl", {}, "file not found"),
    ]:
        with pytest.raises(InterpSteerError, match=message):
            prep_rejected(None, examples, out, **kwargs)
    assert not out.exists() and not out.parent.exists() and fake_generation == []


def test_refuses_corrupt_output(tmp_path, fake_generation):
    out = prep_rejected(None, _examples(2), tmp_path / "out.jsonl", batch_size=2, progress=False)
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0], "{broken", lines[1]]) + "\n")
    with pytest.raises(InterpSteerError, match=r"line 2: invalid JSON"):
        prep_rejected(None, _examples(2), out, batch_size=2)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_real_model_resume_is_identical(model, tmp_path, monkeypatch, temperature):
    examples = culture_preferences(countries="egypt", localization="nolocalized", form="open_ended")[:4]
    settings = {"max_new_tokens": 8, "temperature": temperature, "batch_size": 2, "seed": 3, "progress": False}
    full = prep_rejected(model, examples, tmp_path / "full.jsonl", **settings)
    rows = _rows(full)
    assert [r["id"] for r in rows] == [ex.metadata["id"] for ex in examples]
    assert all(isinstance(r["rejected"], str) and "<|im_end|>" not in r["rejected"] for r in rows)
    assert any(r["rejected"].strip() for r in rows)
    assert rows[0]["generation"]["model"]["name"] == model.cfg.model_name

    part = tmp_path / "part.jsonl"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        with pytest.raises(Interrupted):
            prep_rejected(model, examples, part, **settings)
    assert [r["id"] for r in _rows(part)] == [ex.metadata["id"] for ex in examples[:2]]
    _truncate_last_line(part)
    prep_rejected(model, examples, part, **settings)
    assert _rows(part) == rows
    assert part.read_bytes() == full.read_bytes()
