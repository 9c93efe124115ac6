"""The one table of modalities: letter, the field of the legacy pickles that holds it, and the order.

Every place that needs to know which modalities exist reads this table; a new modality is one row
here (plus its dim in each dataset's row of ``datasets.DATASETS`` (``DatasetSpec.dims``) and, for the synthetic corpus,
its signal strength).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    letter: str  # as in a run's modality string, e.g. "atv"
    legacy_field: str  # the per-utterance feature field of iemocap.pkl / meld.pkl / mosei_data.pkl


MODALITIES = (Modality("a", "audio"), Modality("t", "text"), Modality("v", "visual"))
ORDER = "".join(m.letter for m in MODALITIES)  # "atv": the order of SPEC §3's chain products
LEGACY_FIELDS = {m.letter: m.legacy_field for m in MODALITIES}
NAMES = LEGACY_FIELDS  # the legacy files name each modality by its full name, as every report does


def in_order(letters) -> str:
    """The given modality letters in the table's order, e.g. ``in_order({"v", "t"}) == "tv"``."""
    return "".join(m for m in ORDER if m in letters)
