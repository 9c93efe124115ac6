"""Shape presets shared by the benchmarks.

``ADA2I_BENCH_SMOKE=1`` shrinks every preset to a tiny shape of the same name (so CI can run
``pytest benchmarks/ --benchmark-disable`` quickly); ``ADA2I_BENCH_LARGE="B,T,H,R[,M]"`` replaces the
``large`` preset.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark size: B dialogues of T (padded) utterances, hidden H, tensor rank R, M modalities."""

    name: str
    B: int
    T: int
    H: int
    R: int
    M: int

    @property
    def utterances(self) -> int:
        return self.B * self.T

    def __str__(self) -> str:
        return f"{self.name}(B={self.B},T={self.T},H={self.H},R={self.R},M={self.M})"


def _large() -> Shape:
    spec = os.environ.get("ADA2I_BENCH_LARGE")
    if not spec:
        return Shape("large", B=64, T=512, H=1024, R=16, M=3)
    fields = [int(x) for x in spec.split(",")]
    if len(fields) not in (4, 5):
        raise ValueError(f"ADA2I_BENCH_LARGE={spec!r}: expected B,T,H,R[,M]")
    return Shape("large", *fields, *([3] if len(fields) == 4 else []))


def presets() -> list[Shape]:
    """iemocap, meld (SPEC §4 presets, dialogue lengths at their corpus maxima), iemocap at the largest
    supported rank, and large; or tiny ones in smoke mode."""
    shapes = [
        Shape("iemocap", B=10, T=110, H=300, R=11, M=3),
        Shape("meld", B=10, T=24, H=200, R=6, M=3),
        Shape("iemocap_r32", B=10, T=110, H=300, R=32, M=3),
        _large(),
    ]
    if os.environ.get("ADA2I_BENCH_SMOKE") == "1":
        return [dataclasses.replace(s, B=2, T=5, H=16, R=min(s.R, 4)) for s in shapes]
    return shapes
