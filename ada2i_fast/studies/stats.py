"""Numbers over seeds as every report states them: mean ± sample std, and where a paired gap stands
against its spread. With one seed there is no spread, and no verdict is claimed."""

from __future__ import annotations

import statistics


def mean_std(values) -> dict:
    """Mean, sample std (None below two values) and count."""
    values = [float(v) for v in values]
    if not values:
        return dict(mean=None, std=None, n=0)
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else None,
                n=len(values))


def pm(stat: dict, signed: bool = False, digits: int = 3) -> str:
    """``mean ± std`` (``mean (1 seed: no spread)`` without a spread, ``—`` without values)."""
    if stat["mean"] is None:
        return "—"
    mean = f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:.{digits}f}"
    return f"{mean} ± {stat['std']:.{digits}f}" if stat["std"] is not None else f"{mean} (1 seed: no spread)"


def verdict(gap: dict) -> str:
    """Where the full model stands against a variant, from the paired gap variant − full."""
    if gap["mean"] is None or gap["std"] is None:
        return "1 seed: no spread"
    if gap["mean"] + gap["std"] < 0:
        return "full model better"
    if gap["mean"] - gap["std"] > 0:
        return "variant better"
    return "within seed spread"
