"""Numbers as text for the book's prose: ranges over seeds, values with intervals, and a tolerant
container of formatted facts (a missing one reads as a dash, so the prose never breaks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conelib.measures.bootstrap import format_interval

__all__ = ["Facts", "describe_range", "format_interval", "share"]


def describe_range(values: Any, fmt: str = "{:.3g}", *, unit: str = "", none: str = "—") -> str:
    """Values over seeds as text: ``"6,550–6,750"`` (``"-400 to +350"`` when the range starts below
    zero, where a dash would read as a minus sign), or one value when all agree; ``None``/NaN
    entries are named (``"6,600 (1 of 3: none found)"``)."""
    vals = [v for v in pd.to_numeric(pd.Series(list(values)), errors="coerce")]
    ok = [float(v) for v in vals if np.isfinite(v)]
    missing = len(vals) - len(ok)
    if not ok:
        return none
    lo, hi = fmt.format(min(ok)), fmt.format(max(ok))
    text = (lo if lo == hi else f"{lo} to {hi}" if min(ok) < 0 else f"{lo}–{hi}") + unit
    if missing:
        text += f" ({missing} of {len(vals)}: {none})"
    return text


class Facts(dict):
    """Formatted numbers for a notebook's prose, read as attributes (``facts.lenet5.t_end``);
    a missing one reads as ``"—"`` (a model that was not run), so the prose never breaks."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name, Facts() if name in _FACT_GROUPS or name.startswith("group_") else "—")

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value




def share(k: int, n: int) -> str:
    """``"3 of 4"``."""
    return f"{k} of {n}"


#: facts that are groups (a model's numbers, a chapter's part): missing ones read as empty groups
_FACT_GROUPS = {"lenet5", "lenet_300_100", "resnet20", "vgg16"}
