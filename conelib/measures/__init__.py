"""Measures of the two phases and of the cone (version 3 by default; version 2 kept for comparison)."""

from conelib.measures import v2, v3
from conelib.measures.bootstrap import assess
from conelib.measures.v3 import (
    SENSITIVITY,
    THRESHOLDS,
    VERDICTS,
    Verdict,
    check_thresholds,
    measure,
    verdict,
)

__all__ = ["assess", "SENSITIVITY", "THRESHOLDS", "VERDICTS", "Verdict", "check_thresholds", "measure", "verdict", "v2", "v3"]
