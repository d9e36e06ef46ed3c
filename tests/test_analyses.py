"""The analyses' pure helpers (the scripts themselves run the real model; see README "Notebooks and analyses")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"analyses_{name}", ROOT / "analyses" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_to_threshold_uses_the_moving_average():
    conv = _load("convergence")
    losses = [0.7, 0.05, 0.7, 0.05, 0.05, 0.05]
    assert conv.steps_to_threshold(losses, 0.1, 1) == 2  # raw loss dips at step 2
    assert conv.steps_to_threshold(losses, 0.1, 3) == 6  # the 3-step mean first drops below 0.1 at step 6
    assert conv.steps_to_threshold(losses, 0.01, 3) is None
    assert conv.moving_average([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_level_ratios_take_the_fastest_run_per_method():
    conv = _load("convergence")
    runs = [{"method": "bipo", "steps_to": {"0.5": 40, "0.1": None}},
            {"method": "bipo", "steps_to": {"0.5": 30, "0.1": None}},
            {"method": "yapo", "steps_to": {"0.5": 10, "0.1": 90}}]
    assert conv._level_ratios(runs) == {"0.5": pytest.approx(3.0), "0.1": None}
