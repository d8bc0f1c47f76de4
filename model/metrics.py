"""Metrics computed from stored results (numpy only: reports and exports import no torch)."""

from __future__ import annotations

import numpy as np


def accuracy_by_class(confusion: list[list[int]]) -> list[float | None]:
    """Per-class recall from a [true][predicted] confusion matrix (None where a class is absent)."""
    c = np.asarray(confusion)
    totals = c.sum(1)
    return [float(c[i, i] / totals[i]) if totals[i] else None for i in range(len(c))]
