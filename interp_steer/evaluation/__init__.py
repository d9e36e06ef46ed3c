"""Evaluation: culture MCQ (accuracy, localization gap, RCA, PNLG), behaviour A/B, sweeps."""

from interp_steer.evaluation.mcq import (
    ItemScore,
    culture_report,
    pnlg,
    rca,
    score_mcq,
)

__all__ = ["ItemScore", "culture_report", "pnlg", "rca", "score_mcq"]
