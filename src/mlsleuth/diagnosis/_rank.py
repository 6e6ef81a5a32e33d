"""Ranking: a hypothesis's score is the sum of its named terms; confidences share the scores out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mlsleuth.diagnosis._result import Hypothesis
from mlsleuth.diagnosis.signatures import Candidate

__all__ = ["SCORE_CAP", "capped_score", "rank"]

#: No score reaches certainty: the sum of the terms is capped here.
SCORE_CAP = 0.99
#: How sharply the confidences favour the higher score (a softmax's inverse temperature).
SHARPNESS = 4.0
#: Confidences stay within these bounds.
MIN_CONFIDENCE = 0.05
MAX_CONFIDENCE = 0.99


def capped_score(c: Candidate) -> float:
    """The candidate's score (the sum of its terms), capped below certainty."""
    return min(c.score, SCORE_CAP)


def rank(scored: Sequence[tuple[Candidate, Hypothesis]]) -> list[Hypothesis]:
    """The hypotheses best first, each with its confidence and score terms.

    A confidence is a softmax-like share of the candidates' scores, scaled by the top score's strength.
    """
    if not scored:
        return []
    scores = np.array([capped_score(c) for c, _ in scored])
    order = np.argsort(-scores, kind="stable")
    share = np.exp(scores * SHARPNESS) / np.exp(scores * SHARPNESS).sum()
    conf = np.clip(share * min(scores.max(), SCORE_CAP) / share.max(), MIN_CONFIDENCE, MAX_CONFIDENCE)
    return [replace(scored[i][1], confidence=round(float(conf[i]), 3), score_terms=scored[i][0].terms)
            for i in order]
