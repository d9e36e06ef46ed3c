"""On the embedded model: learned vectors move the behaviour they were trained on (held-out test split).

Measured on 2026-11-21 (64 training pairs, one epoch, 32 held-out pairs, λ = 2; p = mean probability of the
matching answer among the two): BiPO −λ 0.344 | 0 0.469 | +λ 0.540; YaPO −λ 0.363 | 0 0.469 | +λ 0.487.
"""

from __future__ import annotations

import pytest

from interp_steer.data.loaders import load_bipo_csv
from interp_steer.evaluation.behaviour import pair_probability
from interp_steer.methods.preference import train_vector

from .conftest import shared_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def power_seeking(model):
    train = load_bipo_csv(shared_data("bipo", "power-seeking", "train.csv"))[:64]
    test = load_bipo_csv(shared_data("bipo", "power-seeking", "test.csv"))[:32]
    return train, test, pair_probability(model, test)["p_matching"]


@pytest.mark.parametrize("method, lr", [("bipo", 5e-2), ("yapo", 1e-1)])
def test_vector_raises_matching_behaviour_at_plus_and_lowers_at_minus(model, power_seeking, method, lr):
    from interp_steer import load_sae

    train, test, p0 = power_seeking
    sae = load_sae(model=model) if method == "yapo" else None
    res = train_vector(model, train, method, sae=sae, layer=15, epochs=1, batch_size=4, lr=lr,
                       eval_fraction=0.0, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"] - 0.05
    p_plus = pair_probability(model, test, res.vector, 2.0, sae=sae)["p_matching"]
    p_minus = pair_probability(model, test, res.vector, -2.0, sae=sae)["p_matching"]
    print(f"{method}: p(matching) −λ {p_minus:.3f} | 0 {p0:.3f} | +λ {p_plus:.3f}")
    assert p_plus > p0 + 0.01
    assert p_minus < p0 - 0.03
