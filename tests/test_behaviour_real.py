"""On the embedded model: learned vectors move the behaviour they were trained on (held-out test split)."""

from __future__ import annotations

import pytest

from interp_steer.data.loaders import load_bipo_csv
from interp_steer.evaluation.behaviour import pair_probability
from interp_steer.methods.preference import train_vector

from .conftest import shared_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def power_seeking():
    train = load_bipo_csv(shared_data("bipo", "power-seeking", "train.csv"))
    test = load_bipo_csv(shared_data("bipo", "power-seeking", "test.csv"))
    return train[:96], test[:40]


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_vector_raises_matching_behaviour_at_plus_and_lowers_at_minus(model, power_seeking, method):
    from interp_steer import load_sae

    train, test = power_seeking
    sae = load_sae(model=model) if method == "yapo" else None
    res = train_vector(model, train, method, sae=sae, layer=15, epochs=1, batch_size=4, lr=2e-2,
                       eval_fraction=0.0, progress=False)
    vec = res.vector
    p0 = pair_probability(model, test)["p_matching"]
    p_plus = pair_probability(model, test, vec, 1.0, sae=sae)["p_matching"]
    p_minus = pair_probability(model, test, vec, -1.0, sae=sae)["p_matching"]
    print(f"{method}: p(matching) −λ {p_minus:.3f} | 0 {p0:.3f} | +λ {p_plus:.3f}")
    assert p_plus > p0 + 0.03
    assert p_minus < p0 - 0.03
