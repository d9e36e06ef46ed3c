"""Two-dataset contrastive steering: vector, cache hits without forwards, invalidation, outputs, effect."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer.methods.contrastive import (
    ActivationCache,
    contrastive_vector,
    loglik_margin_metric,
    run_contrastive,
    sweep,
    text_loglik,
)

TARGET = [f"Review {i}: the pasta was wonderful and the waiter was kind." for i in range(12)]
BASELINE = [f"Report {i}: the council approved the new harbour budget today." for i in range(12)]


@pytest.fixture()
def prompt_files(tmp_path):
    a, b = tmp_path / "target.jsonl", tmp_path / "baseline.jsonl"
    a.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TARGET))
    b.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in BASELINE))
    return str(a), str(b)


def test_vector_is_difference_of_means_and_cache_hit_runs_no_forward(tiny_model, prompt_files, tmp_path, monkeypatch):
    from interp_steer.chat import chat_tokens

    target, baseline = prompt_files
    cache = ActivationCache(tmp_path / "cache")
    vec = contrastive_vector(tiny_model, target, baseline, 1, n_samples=None, cache=cache)
    assert cache.forward_passes == 2
    hook = "blocks.1.hook_resid_post"

    def last_token_mean(texts):
        acts = []
        for t in texts:
            ids = chat_tokens(tiny_model.tokenizer, t).ids
            _, c = tiny_model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
            acts.append(c[hook][0, -1])
        return torch.stack(acts).mean(0)

    torch.testing.assert_close(vec.vector(), last_token_mean(TARGET) - last_token_mean(BASELINE), atol=1e-5, rtol=1e-5)
    # another layer, from the cache: the model must not run at all
    cache2 = ActivationCache(tmp_path / "cache")

    def boom(*a, **k):
        raise AssertionError("model forward on a cache hit")

    monkeypatch.setattr(type(tiny_model), "forward", boom)
    monkeypatch.setattr(type(tiny_model), "run_with_cache", boom)
    other = contrastive_vector(tiny_model, target, baseline, 0, n_samples=None, cache=cache2)
    assert cache2.forward_passes == 0 and other.hook_points == ["blocks.0.hook_resid_post"]


def test_changed_model_invalidates_the_cache(tiny_model, tokenizer, prompt_files, tmp_path, capsys):
    from .conftest import make_tiny_model

    target, baseline = prompt_files
    cache = ActivationCache(tmp_path / "c")
    contrastive_vector(tiny_model, target, baseline, 1, n_samples=None, cache=cache)
    other = make_tiny_model(tokenizer, seed=9, name=tiny_model.cfg.model_name)
    cache_b = ActivationCache(tmp_path / "c")
    vec = contrastive_vector(other, target, baseline, 1, n_samples=None, cache=cache_b)
    assert cache_b.forward_passes == 2  # rebuilt, not reused
    assert "rebuilding" in capsys.readouterr().out
    assert vec.model["config_hash"] != contrastive_vector(tiny_model, target, baseline, 1, n_samples=None,
                                                          cache=ActivationCache(tmp_path / "fresh")).model["config_hash"]


def test_run_writes_results_with_metadata(tiny_model, prompt_files, tmp_path):
    target, baseline = prompt_files
    out = run_contrastive(tiny_model, target, baseline, 1, -2.0, n_samples=8, inference_n_samples=2, max_tokens=5,
                          output_dir=tmp_path / "runs", cache=ActivationCache(tmp_path / "cache"), progress=False)
    assert out.parent.name == "layer_1_scale_-2"
    data = json.loads(out.read_text())
    meta = data["metadata"]
    assert meta["layer"] == 1 and meta["scale"] == -2.0 and meta["n_samples"] == 8
    assert meta["effective_magnitude"] == pytest.approx(-2.0 * meta["vector_norm"])
    assert {"target_norm", "baseline_norm", "model", "inference_dataset"} <= set(meta)
    assert len(data["results"]) == 2 and set(data["results"][0]) == {"prompt", "baseline", "steered"}


def test_sweep_reuses_cache_and_plots(tiny_model, prompt_files, tmp_path):
    target, baseline = prompt_files
    cache = ActivationCache(tmp_path / "cache")
    metric = loglik_margin_metric(tiny_model, TARGET[8:], BASELINE[8:])
    res = sweep(tiny_model, target, baseline, [0, 1], [0.0, 2.0], metric, n_samples=8, cache=cache,
                output_html=tmp_path / "sweep.html", metric_name="loglik margin")
    assert cache.forward_passes == 2  # two datasets once, whatever the grid
    assert len(res["values"]) == 2 and res["values"][0][0] == pytest.approx(0.0, abs=1e-6)
    assert "Plotly.newPlot" in (tmp_path / "sweep.html").read_text()


@pytest.mark.slow
def test_real_model_steering_raises_target_text_likelihood(model, tmp_path):
    from interp_steer.data.registry import load_prompts

    from .conftest import shared_data

    shared_data("corpus", "mixed-text.jsonl.gz")  # the local:* keys are slices of the shared corpus

    target, baseline = "local:reviews", "local:news"
    cache = ActivationCache(tmp_path / "cache")
    vec = contrastive_vector(model, target, baseline, 12, n_samples=48, cache=cache)
    sampled_t = set(load_prompts(target, 48))
    sampled_b = set(load_prompts(baseline, 48))
    held_t = [t for t in load_prompts(target) if t not in sampled_t][:16]
    held_b = [t for t in load_prompts(baseline) if t not in sampled_b][:16]
    margin0 = text_loglik(model, held_t) - text_loglik(model, held_b)
    margin = text_loglik(model, held_t, vec, 4.0) - text_loglik(model, held_b, vec, 4.0)
    print(f"contrastive: target-minus-baseline log-likelihood per token {margin0:.3f} -> {margin:.3f}")
    assert margin - margin0 > 0.05, (margin0, margin)
