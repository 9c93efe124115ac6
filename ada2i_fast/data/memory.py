"""How much memory a corpus needs, and refusing one that would not fit before it is built."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")
FALLBACK_MEMORY = 8 * 2**30  # what a corpus may take where MEMINFO does not say what is available


class CorpusTooLarge(ValueError):
    """A corpus would not fit in the memory this machine has available."""


def available_memory() -> int:
    """Bytes this machine can still allocate: MemAvailable of :data:`MEMINFO`, else :data:`FALLBACK_MEMORY`."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_MEMORY


def corpus_bytes(utterances: float, feature_dims: int) -> float:
    """About what a corpus of ``utterances`` holds: float32 features and int64 labels and speakers."""
    return utterances * (4 * feature_dims + 16)


def check_fits_in_memory(needed: float, what: str, advice: str) -> None:
    """Refuse, saying ``advice``, a corpus that needs more than the available memory."""
    available = available_memory()
    if needed > available:
        raise CorpusTooLarge(f"{what} needs about {shown_bytes(needed)}; this machine has "
                             f"{shown_bytes(available)} available; {advice}")


def shown_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
