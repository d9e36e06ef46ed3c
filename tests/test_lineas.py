"""LinEAS: exact sorted W1, training lowers it, λ = 0 is the identity, group sparsity, real-model effect."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.methods.contrastive import loglik_margin_metric
from interp_steer.methods.lineas import (
    distribution_distance,
    select_hooks,
    train_lineas,
    wasserstein_1d,
)
from interp_steer.steering import interventions_for, steer

from .conftest import shared_data

SOURCE = [f"The weather report for day {i} says rain, wind and cold temperatures in the north." for i in range(32)]
TARGET = [f"I loved this restaurant! Dish number {i} was delicious and the staff were so friendly." for i in range(32)]


def test_w1_matches_scipy_with_unequal_counts():
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    u = torch.randn(37, 5, dtype=torch.float64) * 2 + 1
    v = torch.randn(23, 5, dtype=torch.float64) ** 3
    ours = wasserstein_1d(u, v)
    ref = [scipy_stats.wasserstein_distance(u[:, j].numpy(), v[:, j].numpy()) for j in range(5)]
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-10, rtol=1e-10)
    assert float(wasserstein_1d(u, u).abs().max()) == 0.0


def test_w1_gradient_moves_samples_toward_target():
    u = torch.zeros(16, 3, requires_grad=True)
    v = torch.ones(20, 3)
    wasserstein_1d(u, v).sum().backward()
    assert torch.all(u.grad < 0)  # increasing any sample lowers the distance, ties included
    torch.testing.assert_close(u.grad, torch.full_like(u, -1 / 16))


def test_hook_selection(tiny_model):
    assert select_hooks(tiny_model, r"blocks\.\d+\.hook_resid_post") == ["blocks.0.hook_resid_post",
                                                                         "blocks.1.hook_resid_post"]
    with pytest.raises(InterpSteerError, match="no hook point matches"):
        select_hooks(tiny_model, r"blocks\.\d+\.hook_nothing")


def test_training_lowers_loss_and_zero_strength_is_identity(tiny_model):
    res = train_lineas(tiny_model, SOURCE, TARGET, steps=25, lr=5e-2, batch_size=16, progress=False)
    assert res.losses[-1] < 0.7 * res.losses[0]
    vec = res.vector
    assert vec.kind == "affine" and len(vec.hook_points) == 2
    tokens = tiny_model.to_tokens(SOURCE[0], prepend_bos=False)
    clean = tiny_model(tokens)
    with steer(tiny_model, vec, 0.0):
        torch.testing.assert_close(tiny_model(tokens), clean)
    with steer(tiny_model, vec, 1.0):
        assert not torch.allclose(tiny_model(tokens), clean)
    held_src = [s.replace("weather report", "forecast") for s in SOURCE[:8]]
    assert distribution_distance(tiny_model, held_src, TARGET, vec, 1.0) < distribution_distance(
        tiny_model, held_src, TARGET, vec, 0.0)


def test_strong_group_penalty_leaves_few_layers_active(tokenizer):
    from .conftest import make_tiny_model

    model = make_tiny_model(tokenizer, seed=2, n_layers=4)
    free = train_lineas(model, SOURCE, TARGET, steps=10, lr=5e-2, batch_size=16, progress=False)
    sparse = train_lineas(model, SOURCE, TARGET, steps=10, lr=5e-2, batch_size=16, group_penalty=50.0,
                          progress=False)
    assert len(free.active_hooks) == 4
    assert len(sparse.active_hooks) <= 1
    dims = train_lineas(model, SOURCE, TARGET, steps=10, lr=5e-2, batch_size=16, dim_penalty=2.0, progress=False)
    assert sum(dims.active_dims.values()) < sum(free.active_dims.values())


def test_bad_options(tiny_model):
    with pytest.raises(InterpSteerError, match="optimizer"):
        train_lineas(tiny_model, SOURCE, TARGET, steps=1, optimizer="lbfgs", progress=False)
    with pytest.raises(InterpSteerError, match="unknown LinEAS option"):
        train_lineas(tiny_model, SOURCE, TARGET, steps=1, learning_rate=1.0, progress=False)


def _corpus_texts(prefixes: tuple[str, ...], n: int) -> list[str]:
    path = shared_data("corpus", "mixed-text.jsonl.gz")
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    return [r["text"][:400] for r in rows if r["source"].startswith(prefixes)][:n]


@pytest.mark.slow
def test_real_model_map_moves_held_out_source_toward_target(model):
    source = _corpus_texts(("t0/xsum", "t0/gigaword"), 48)
    target = _corpus_texts(("t0/yelp", "t0/imdb", "t0/amazon"), 48)
    res = train_lineas(model, source[:32], target[:32], hooks=[f"blocks.{L}.hook_resid_post" for L in (4, 10, 16)],
                       steps=30, lr=2e-2, batch_size=16, max_length=48, progress=False)
    assert res.losses[-1] < 0.8 * res.losses[0]
    before = distribution_distance(model, source[32:], target[32:], res.vector, 0.0, max_length=48)
    after = distribution_distance(model, source[32:], target[32:], res.vector, 1.0, max_length=48)
    print(f"LinEAS: train loss {res.losses[0]:.1f} -> {res.losses[-1]:.1f}; held-out source-to-target W1 "
          f"{before:.1f} -> {after:.1f} ({100 * (1 - after / before):.1f}% closer)")
    assert after < 0.85 * before, (before, after)
    # likelihoods: under the map, held-out target-style text gains log-likelihood relative to held-out
    # source-style text (the model's next-token predictions move toward the target source)
    margin = loglik_margin_metric(model, target[32:], source[32:])
    shift = margin(res.vector, 1.0)
    print(f"LinEAS: held-out (target − source) log-likelihood per token shifts by {shift:+.3f} nats under the map")
    assert shift > 0.1, shift  # measured: +0.437
    assert abs(margin(res.vector, 0.0)) < 1e-6
    assert interventions_for(res.vector)  # the artifact applies through the shared intervention layer
