"""Culture metrics on hand-computed examples, including the edge cases of RCA and PNLG."""

from __future__ import annotations

import pytest

from interp_steer.evaluation.mcq import ItemScore, culture_report, pnlg, rca


def test_rca_and_pnlg_hand_computed():
    assert rca(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2)  # 0.5333
    assert pnlg(0.8, 0.4) == pytest.approx(0.4 / 0.6)  # gap / mean
    assert pnlg(0.4, 0.8) == pytest.approx(-0.4 / 0.6)


def test_edge_cases():
    assert rca(0.0, 0.0) == 0.0 and pnlg(0.0, 0.0) == 0.0  # nothing right: defined as 0, not NaN
    assert rca(0.7, 0.7) == pytest.approx(0.7) and pnlg(0.7, 0.7) == 0.0  # equal accuracies: no gap
    assert rca(1.0, 0.0) == 0.0 and pnlg(1.0, 0.0) == pytest.approx(2.0)  # right only with the cue
    assert rca(1.0, 1.0) == 1.0


def _score(country, loc, correct):
    return ItemScore(0, [0.0, 1.0], 1 if correct else 0, 1, correct, country, loc)


def test_culture_report_per_country():
    scores = [
        _score("egypt", "localized", True), _score("egypt", "localized", True),
        _score("egypt", "nolocalized", True), _score("egypt", "nolocalized", False),
        _score("uk", "localized", False), _score("uk", "nolocalized", False),
    ]
    rep = culture_report(scores)
    eg = rep["per_country"]["egypt"]
    assert eg["acc_localized"] == 1.0 and eg["acc_nonlocalized"] == 0.5 and eg["gap"] == 0.5
    assert eg["rca"] == pytest.approx(2 / 3) and eg["pnlg"] == pytest.approx(0.5 / 0.75)
    uk = rep["per_country"]["uk"]
    assert uk["rca"] == 0.0 and uk["pnlg"] == 0.0
    overall = rep["overall"]
    assert overall["n"] == 6 and overall["acc_localized"] == pytest.approx(2 / 3)
    assert overall["acc_nonlocalized"] == pytest.approx(1 / 3)
