"""The variants a balance study trains, in one table: every subset of the full model's modalities
and the changes to the full model (the paper's ablations and the alternatives studied against the
method), with their kind, flags, description, label and colour as the sweep, the analyses and every
plot show them; and the one definition of a variant's gap to the full model.

The gap is **variant − full**, per seed (same seed: same synthetic corpus and initialisation), so a
negative gap means the full model is better; :func:`~ada2i_fast.studies.stats.verdict` reads it so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..modalities import NAMES, ORDER

FULL = ORDER
# A variant's kind: its name in legends and its colour (the sweep's bars, the gaps' bars).
KINDS = {
    "full": ("full model", "tab:green"),
    "pair": ("two modalities", "tab:blue"),
    "single": ("one modality", "tab:grey"),
    "ablation": ("ablation", "tab:orange"),
}


@dataclass(frozen=True)
class Change:
    """A variant of the full model: the trainer flags that make it, what the sweep's table says it
    trains, and its label and colour in the analyses' curves (None: the analyses never draw it)."""

    flags: tuple[str, ...]
    description: str
    label: str | None = None
    colour: str | None = None


ABLATIONS = {
    "no-afw": Change(("--no-afw",), "full model without AFW (--no-afw)", "without AFW", "tab:orange"),
    "no-amw": Change(("--no-amw",), "full model, concat head instead of AMW (--no-amw)",
                     "without AMW (concat head)", "tab:purple"),
    "no-modulation": Change(("--no-modulation",), "full model without gradient modulation (--no-modulation)",
                            "without modulation", "tab:red"),
    "no-grad-noise": Change(("--no-grad-noise",), "full model, modulation without gradient noise (--no-grad-noise)",
                            "modulation without noise", "tab:blue"),
    "reference": Change(("--compat", "reference"), "full model with the public code's semantics (--compat reference)"),
}
# Not the method: changes studied against it, asked for by name with --variants.
ALTERNATIVES = {
    "continuous-k": Change(("--modulation-curve", "continuous"), "full model, k = 1 - tanh(alpha (rho - 1)) "
                           "(--modulation-curve continuous)", "continuous k (not the method)", "tab:brown"),
    "update-target": Change(("--modulation-target", "update"), "full model, k scaling each encoder's update "
                            "(--modulation-target update)", "k on the update (not the method)", "tab:olive"),
}
CHANGED = {**ABLATIONS, **ALTERNATIVES}  # variants of the full model


def subsets(full: str) -> tuple[str, ...]:
    """Every non-empty subset of ``full``, largest first, each in the modality order."""
    return tuple("".join(c) for k in range(len(full), 0, -1) for c in itertools.combinations(full, k))


SUBSETS = subsets(FULL)
VARIANTS = SUBSETS + tuple(CHANGED)


def is_subset(variant: str) -> bool:
    """Whether ``variant`` names a modality subset (else a change to the full model)."""
    return variant not in CHANGED and set(variant) <= set(ORDER)


def variant_flags(variant: str, full: str) -> list[str]:
    """The trainer flags of ``variant`` in a study whose full model has the modalities ``full``."""
    if variant in CHANGED:
        return ["--modalities", full, *CHANGED[variant].flags]
    return ["--modalities", variant]


def kind_of(variant: str, full: str) -> str:
    """One of :data:`KINDS`."""
    if variant in CHANGED:
        return "ablation"
    if variant == full:
        return "full"
    return "pair" if len(variant) == 2 else "single"


def modality_names(variant: str) -> str:
    """A modality subset by its modalities' full names ("audio + text"), a change by its name."""
    return " + ".join(NAMES[m] for m in variant) if is_subset(variant) else variant


def describe(variant: str, full: str) -> str:
    """What ``variant`` trains, as the sweep's table says it."""
    if variant in CHANGED:
        return CHANGED[variant].description
    names = modality_names(variant)
    return f"{names} (full model)" if variant == full else names


def named(variant: str, full: str) -> str:
    """``variant`` as the analyses' tables name it ("full": the full model's variant)."""
    return f"full model ({full})" if variant in ("full", full) else variant


def curve_style(variant: str) -> dict:
    """The colour and legend label of a variant's curves in the analyses ("full": the full model)."""
    if variant == "full":
        label, colour = KINDS["full"]
        return dict(color=colour, label=label)
    return dict(color=CHANGED[variant].colour, label=CHANGED[variant].label)


def paired_gaps(variant: dict[int, float], full: dict[int, float]) -> list[float]:
    """The variant's gap to the full model for every seed both have: variant − full (a score by seed
    each)."""
    return [score - full[seed] for seed, score in variant.items() if seed in full]
